"""The raw copy of a turn's stdout: every byte the CLI wrote, as it wrote it.

The ledger keeps each text capped and redacted (``core/kept_text.py``); this file keeps
everything, for ``nexo-trio replay FILE`` and for a person asking what exactly Claude said.
It is written from the turn's stdout reader through a worker thread, mode 0600 in the
state directory (never writable by a turn). A copy that cannot be written (a full disk)
stops copying and says so once, in the log: it never fails the turn it records.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import trio

log = logging.getLogger("nexo_trio.engine")

FILE_MODE = 0o600


class StreamCopy:
    """An open raw copy (one use): :meth:`open`, :meth:`write` chunks, :meth:`aclose`."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd
        self.written = 0

    @classmethod
    async def open(cls, path: Path) -> StreamCopy | None:
        """Create ``path`` (and its directory, 0700); ``None`` (logged) when it cannot be."""

        def create() -> int:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW
            return os.open(path, flags, FILE_MODE)

        try:
            fd = await trio.to_thread.run_sync(create)
        except OSError as exc:
            log.warning("%s: not keeping the raw stream: %s", path, exc.strerror or exc)
            return None
        return cls(path, fd)

    async def write(self, chunk: bytes | bytearray) -> None:
        """Append ``chunk`` (whole); on a failure, stop copying (logged once)."""
        fd = self._fd
        if fd is None:
            return
        try:
            await trio.to_thread.run_sync(_write_all, fd, chunk)
        except OSError as exc:
            log.warning(
                "%s: raw stream cut after %d bytes: %s", self.path, self.written, exc.strerror
            )
            await self.aclose()
            return
        self.written += len(chunk)

    async def aclose(self) -> None:
        """Close the file (shielded: it runs in cleanup)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(os.close, fd)


def _write_all(fd: int, data: bytes | bytearray) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
