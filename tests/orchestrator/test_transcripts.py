"""Session transcripts kept in the store and restored on another host (orchestrator/
transcripts.py), on a real SQLite store (the shared-store API; PostgreSQL passes the same
contract in tests/store/test_shared_contract.py)."""

from __future__ import annotations

import gzip
import os
import stat
import uuid
from pathlib import Path
from typing import Any, cast

from nexo_trio.orchestrator.transcripts import (
    claude_dir,
    keep_transcript,
    restore_transcript,
    transcript_path,
)
from nexo_trio.store.base import SharedStore
from nexo_trio.store.sqlite import open_sqlite_store

SESSION = str(uuid.uuid4())


def test_the_cli_s_path_of_a_session() -> None:
    cwd = Path("/tmp/e2e bt/test_x-0/ws")
    path = transcript_path(Path("/h/.claude"), cwd, SESSION)
    assert path == Path(f"/h/.claude/projects/-tmp-e2e-bt-test-x-0-ws/{SESSION}.jsonl")
    # Only a UUID is ever made into a path.
    assert transcript_path(Path("/h/.claude"), cwd, "../../etc/passwd") is None
    assert claude_dir({"HOME": "/h"}) == Path("/h/.claude")
    assert claude_dir({"HOME": "/h", "CLAUDE_CONFIG_DIR": "/c"}) == Path("/c")
    assert claude_dir({"HOME": None}) is None


async def test_a_kept_transcript_is_restored_into_another_config_dir(tmp_path: Path) -> None:
    cwd = tmp_path / "ws"
    here, there = tmp_path / "home-a" / ".claude", tmp_path / "home-b" / ".claude"
    original = transcript_path(here, cwd, SESSION)
    assert original is not None
    original.parent.mkdir(parents=True)
    content = b'{"type":"user","message":"hi"}\n' * 5000
    original.write_bytes(content)
    async with open_sqlite_store(tmp_path / "state" / "nexo.db") as store:
        await keep_transcript(store, "g", here, SESSION, cwd)
        assert await restore_transcript(store, "g", there, SESSION, cwd)
        restored = transcript_path(there, cwd, SESSION)
        assert restored is not None
        assert restored.read_bytes() == content
        assert stat.S_IMODE(restored.stat().st_mode) == 0o600
        # A file that is there already is left alone; nothing kept, nothing written.
        restored.write_bytes(b"newer\n")
        assert not await restore_transcript(store, "g", there, SESSION, cwd)
        assert restored.read_bytes() == b"newer\n"
        other = str(uuid.uuid4())
        assert not await restore_transcript(store, "g", there, other, cwd)
        assert not await restore_transcript(store, "g", there, "not-a-uuid", cwd)
        # A missing file is not an error: nothing is kept.
        await keep_transcript(store, "g", here, other, cwd)
        assert await store.get_transcript("g", other) is None


class Counting:
    """A shared store that counts what each keep sent (it forwards everything)."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.sent: list[tuple[str, int]] = []

    async def put_transcript(self, goal_id: str, session_id: str, data: bytes) -> None:
        self.sent.append(("put", len(data)))
        await self.store.put_transcript(goal_id, session_id, data)

    async def append_transcript(
        self, goal_id: str, session_id: str, data: bytes, **kw: Any
    ) -> bool:
        self.sent.append(("append", len(data)))
        appended: bool = await self.store.append_transcript(goal_id, session_id, data, **kw)
        return appended

    async def get_transcript(self, goal_id: str, session_id: str) -> bytes | None:
        found: bytes | None = await self.store.get_transcript(goal_id, session_id)
        return found


async def test_a_growing_transcript_sends_only_what_was_added(tmp_path: Path) -> None:
    """Turn after turn only the file's new end goes to the store (one gzip member more),
    and a restore reads the whole file back; a file whose start changed, or a copy another
    host replaced, is kept whole again."""
    cwd = tmp_path / "ws"
    here, there = tmp_path / "home-a" / ".claude", tmp_path / "home-b" / ".claude"
    path = transcript_path(here, cwd, SESSION)
    assert path is not None
    path.parent.mkdir(parents=True)
    lines = [
        f'{{"type":"user","n":{i},"pad":"{os.urandom(200).hex()}"}}\n'.encode() for i in range(300)
    ]
    path.write_bytes(b"".join(lines[:100]))
    async with open_sqlite_store(tmp_path / "state" / "nexo.db") as db:
        counting = Counting(db)
        store = cast(SharedStore, counting)
        kept = await keep_transcript(store, "g", here, SESSION, cwd)
        assert kept is not None
        with path.open("ab") as f:
            f.write(b"".join(lines[100:110]))
        kept = await keep_transcript(store, "g", here, SESSION, cwd, kept=kept)
        assert kept is not None
        again = await keep_transcript(store, "g", here, SESSION, cwd, kept=kept)
        assert again == kept  # nothing added: nothing sent
        (whole, first), (added, second) = counting.sent
        assert (whole, added) == ("put", "append")
        assert second * 5 < first  # a tenth of the lines, not the whole file again
        assert await restore_transcript(db, "g", there, SESSION, cwd)
        restored = transcript_path(there, cwd, SESSION)
        assert restored is not None
        assert restored.read_bytes() == b"".join(lines[:110])

        # Another host kept the session since (the goal ran there): this one's copy is
        # not appended to, it is replaced whole.
        await db.put_transcript("g", SESSION, gzip.compress(b"elsewhere\n"))
        with path.open("ab") as f:
            f.write(lines[110])
        kept = await keep_transcript(store, "g", here, SESSION, cwd, kept=kept)
        assert [kind for kind, _ in counting.sent[2:]] == ["append", "put"]
        assert gzip.decompress(await db.get_transcript("g", SESSION) or b"") == b"".join(
            lines[:111]
        )

        # A file whose start changed is kept whole.
        path.write_bytes(b"rewritten\n" + b"".join(lines[:120]))
        await keep_transcript(store, "g", here, SESSION, cwd, kept=kept)
        assert counting.sent[-1][0] == "put"
        assert gzip.decompress(await db.get_transcript("g", SESSION) or b"").startswith(
            b"rewritten"
        )
