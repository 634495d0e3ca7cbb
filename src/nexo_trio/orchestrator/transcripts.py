"""Session transcripts kept in a shared store, so that ``--resume`` works on another host.

Claude Code keeps a session's conversation in its config dir, as
``CLAUDE_DIR/projects/<the cwd, every character but [A-Za-z0-9] made '-'>/<session>.jsonl``
(``CLAUDE_DIR``: ``$CLAUDE_CONFIG_DIR``, else ``$HOME/.claude``; seen on 2.1.332). A goal
that moves to another worker resumes its session there only if that file is there too:

- after each turn the file of the goal's session is kept in the store (gzip-compressed,
  the latest copy per session; files past :data:`MAX_TRANSCRIPT_BYTES` are not kept). The
  CLI only appends to it, so once a host has kept it, it sends only what was added since,
  as one more gzip member at the end of the stored copy (a gzip file of many members reads
  as the whole), and only while the stored copy is still the one it kept (its length and
  last member's trailer); a file whose start changed, or a copy another host replaced, is
  kept whole again;
- before a turn that resumes a session whose file is missing here, the kept copy is
  written into this worker's config dir (0600, its directory 0700);
- where that cannot be done (nothing kept, the store unreachable), the CLI refuses the
  resume, the goal machine marks the session invalid and the goal goes on in a fresh
  session, whose prompt carries the last failures and what the last turn changed.

Session ids come from the CLI's stream: only a UUID is ever used in a path.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Final

import attrs
import trio

from nexo_trio.store.base import SharedStore

log = logging.getLogger("nexo_trio.orchestrator")

MAX_TRANSCRIPT_BYTES: Final = 64 * 1024 * 1024
"""A transcript file larger than this is not kept (the goal then starts a fresh session on
another host)."""

_SESSION_ID = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)
_NOT_ALNUM = re.compile(r"[^A-Za-z0-9]")


def claude_dir(env: Mapping[str, str | None]) -> Path | None:
    """The CLI's config dir for a turn's environment, ``None`` if it has no ``HOME``."""
    configured = env.get("CLAUDE_CONFIG_DIR")
    if configured:
        return Path(configured)
    home = env.get("HOME")
    return Path(home) / ".claude" if home else None


def transcript_path(config_dir: Path, cwd: Path, session_id: str) -> Path | None:
    """Where the CLI keeps ``session_id``'s conversation for a turn run in ``cwd``; ``None``
    for a session id that is not a UUID (never a path of its making)."""
    if _SESSION_ID.fullmatch(session_id) is None:
        return None
    return config_dir / "projects" / _NOT_ALNUM.sub("-", str(cwd)) / f"{session_id}.jsonl"


GZIP_TRAILER = 8
"""A gzip member ends with its CRC-32 and size: the stored copy's end this host knows."""


@attrs.frozen
class KeptCopy:
    """What this host last kept of a session's transcript: the file's first ``size``
    bytes (their sha256, ``digest``), stored as ``stored`` compressed bytes ending with
    ``trailer``."""

    session_id: str
    size: int
    digest: bytes
    stored: int
    trailer: bytes


@attrs.frozen
class _Prepared:
    blob: bytes
    """What to send: the whole file, or (``added``) one gzip member of its new end."""
    added: bool
    copy: KeptCopy


def _prepare(path: Path, session_id: str, kept: KeptCopy | None) -> _Prepared | None:
    """The file's bytes to send (compressed), relative to ``kept`` when the file only grew
    since; ``None`` when there is no file or it is too large to keep."""
    try:
        if path.stat().st_size > MAX_TRANSCRIPT_BYTES:
            log.warning("%s is larger than %d bytes: not kept", path, MAX_TRANSCRIPT_BYTES)
            return None
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    if kept is not None and kept.session_id == session_id and len(data) >= kept.size:
        with memoryview(data) as view:
            seen = hashlib.sha256(view[: kept.size])
            if seen.digest() == kept.digest:  # the file only grew
                if len(data) == kept.size:
                    return _Prepared(b"", True, kept)
                added = gzip.compress(view[kept.size :], compresslevel=6)
                seen.update(view[kept.size :])
                stored = kept.stored + len(added)
                copy = KeptCopy(session_id, len(data), seen.digest(), stored, added[-GZIP_TRAILER:])
                return _Prepared(added, True, copy)
    whole = gzip.compress(data, compresslevel=6)
    digest = hashlib.sha256(data).digest()
    return _Prepared(
        whole, False, KeptCopy(session_id, len(data), digest, len(whole), whole[-GZIP_TRAILER:])
    )


def _write(path: Path, data: bytes) -> bool:
    if path.exists():
        return False
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(gzip.decompress(data))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return True


async def keep_transcript(
    store: SharedStore,
    goal_id: str,
    config_dir: Path,
    session_id: str,
    cwd: Path,
    *,
    kept: KeptCopy | None = None,
) -> KeptCopy | None:
    """Keep the session's transcript file in the store: what was added since ``kept``
    (what this host kept last), else the whole file. What is kept now (``None``: nothing
    this host knows of: a failure, logged; the goal goes on, and on another host it would
    start a fresh session)."""
    path = transcript_path(config_dir, cwd, session_id)
    if path is None:
        return None
    try:
        return await _keep(store, goal_id, path, session_id, kept)
    except Exception as exc:  # the store's trouble or the file's: never the goal's end
        log.warning("goal %s: could not keep session %s's transcript: %s", goal_id, session_id, exc)
        return None


async def _keep(
    store: SharedStore, goal_id: str, path: Path, session_id: str, kept: KeptCopy | None
) -> KeptCopy | None:
    prepared = await trio.to_thread.run_sync(_prepare, path, session_id, kept)
    if prepared is None:
        return None
    if prepared.added:
        assert kept is not None
        if not prepared.blob:
            return prepared.copy
        if await store.append_transcript(
            goal_id, session_id, prepared.blob, after=kept.trailer, size=kept.stored
        ):
            return prepared.copy
        # The stored copy is another host's now (the goal ran there): keep ours whole.
        prepared = await trio.to_thread.run_sync(_prepare, path, session_id, None)
        if prepared is None:
            return None
    await store.put_transcript(goal_id, session_id, prepared.blob)
    return prepared.copy


async def restore_transcript(
    store: SharedStore, goal_id: str, config_dir: Path, session_id: str, cwd: Path
) -> bool:
    """Put the session's kept transcript where this host's CLI looks for it, if it is not
    there; whether one was written."""
    path = transcript_path(config_dir, cwd, session_id)
    if path is None or await trio.to_thread.run_sync(path.exists):
        return False
    try:
        data = await store.get_transcript(goal_id, session_id)
        if data is None:
            return False
        written: bool = await trio.to_thread.run_sync(_write, path, data)
    except Exception as exc:
        log.warning(
            "goal %s: could not restore session %s's transcript: %s", goal_id, session_id, exc
        )
        return False
    if written:
        log.info("goal %s: restored session %s's transcript into %s", goal_id, session_id, path)
    return written


__all__ = [
    "MAX_TRANSCRIPT_BYTES",
    "KeptCopy",
    "claude_dir",
    "keep_transcript",
    "restore_transcript",
    "transcript_path",
]
