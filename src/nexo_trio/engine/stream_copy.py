"""The raw copy of a turn's stdout: every byte the CLI wrote, as it wrote it, up to a cap.

The ledger keeps each text capped and redacted (``core/kept_text.py``); this file keeps
everything, for ``nexo-trio transcript --raw``, ``nexo-trio replay FILE`` and for a person
asking what exactly Claude said. A path ending in ``.gz`` is written gzip-compressed (the
orchestrator's are: ``STATE/streams/GOAL/turn-N-STAMP.ndjson.gz``), flushed at every chunk
so that a copy whose writer was killed still reads up to its last chunk. At most
:data:`STREAM_CAP` bytes of the stream are kept: the chunk that would pass the cap is cut
after its last line end that fits, and the copy ends with a line of type
:data:`~nexo_trio.core.record.TRUNCATED_FRAME` saying so (``replay`` reports it).

Where the engine began stopping the turn (:meth:`StreamCopy.mark`), the copy has a line of
type :data:`~nexo_trio.core.record.STOPPED_FRAME`, between the lines the turn's reader had
read by then and the rest, so that ``replay`` reads the turn as the live run did (a line
in progress then gets its mark after it ends).

It is written from the turn's stdout reader through a worker thread (compression
included: nothing blocks the event loop), mode 0600 in the state directory (never writable
by a turn). A copy that cannot be written (a full disk) stops copying and says so once, in
the log: it never fails the turn it records.
"""

from __future__ import annotations

import logging
import os
import zlib
from pathlib import Path
from typing import Final

import trio

from nexo_trio.core.record import truncation_line

log = logging.getLogger("nexo_trio.engine")

FILE_MODE = 0o600
STREAM_CAP: Final = 256 * 1024 * 1024
"""The most bytes of one turn's stdout a copy keeps (read when a copy is opened)."""
COMPRESS_LEVEL: Final = 6
_GZIP_WBITS: Final = 16 + zlib.MAX_WBITS


class StreamCopy:
    """An open raw copy (one use): :meth:`open`, :meth:`write` chunks, :meth:`aclose`."""

    def __init__(self, path: Path, fd: int, *, cap: int = STREAM_CAP) -> None:
        self.path = path
        self._fd: int | None = fd
        self._compressor = (
            zlib.compressobj(COMPRESS_LEVEL, zlib.DEFLATED, _GZIP_WBITS)
            if path.name.endswith(".gz")
            else None
        )
        self.cap = cap
        self.written = 0
        """Bytes of the stream kept (before compression)."""
        self.dropped = 0
        """Bytes of the stream past the cap, not kept."""
        self._ends_line = True
        self._marks = b""  # lines to put after the line in progress, once it ends

    @property
    def truncated(self) -> bool:
        """The stream was longer than :attr:`cap`: its end is not kept."""
        return self.dropped > 0

    @classmethod
    async def open(cls, path: Path, *, cap: int | None = None) -> StreamCopy | None:
        """Create ``path`` (and its directory, 0700); ``None`` (logged) when it cannot be.
        ``cap``: the most bytes kept (default :data:`STREAM_CAP`)."""

        def create() -> int:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW
            return os.open(path, flags, FILE_MODE)

        try:
            fd = await trio.to_thread.run_sync(create)
        except OSError as exc:
            log.warning("%s: not keeping the raw stream: %s", path, exc.strerror or exc)
            return None
        return cls(path, fd, cap=STREAM_CAP if cap is None else cap)

    async def write(self, chunk: bytes | bytearray) -> None:
        """Append ``chunk`` (whole, or up to the cap); on a failure, stop copying (logged
        once)."""
        if self._fd is None:
            return
        if self.truncated:
            self.dropped += len(chunk)
            return
        data = bytes(chunk)
        room = self.cap - self.written
        end = b""
        if len(data) > room:
            keep = data.rfind(b"\n", 0, room) + 1  # whole lines only
            self.dropped = len(data) - keep
            data = data[:keep]
            kept = self.written + keep
            ends_line = data.endswith(b"\n") if data else self._ends_line
            end = (b"" if ends_line else b"\n") + truncation_line(kept, self.cap)
            log.warning("%s: raw stream cut at its cap, after %d bytes", self.path, kept)
        payload = data
        if self._marks and (nl := data.find(b"\n") + 1):
            payload, self._marks = data[:nl] + self._marks + data[nl:], b""
        await self._put(payload + end, len(data))

    async def mark(self, line: bytes) -> None:
        """Put ``line`` (ours, not the CLI's) after what was written so far: at once when
        that ends a line, else after the line in progress."""
        if self._fd is None or self.truncated:
            return
        if self._ends_line and not self._marks:
            await self._put(line, 0)
        else:
            self._marks += line

    async def _put(self, payload: bytes, kept: int) -> None:
        """Write ``payload``: ``kept`` bytes of the stream, and any lines of ours."""
        try:
            await trio.to_thread.run_sync(self._write, payload)
        except OSError as exc:
            log.warning(
                "%s: raw stream cut after %d bytes: %s", self.path, self.written, exc.strerror
            )
            await self.aclose()
            return
        self.written += kept
        if payload:
            self._ends_line = payload.endswith(b"\n")

    def _write(self, payload: bytes) -> None:
        """Compress (when compressing) and write, in a worker thread."""
        assert self._fd is not None
        if self._compressor is not None:
            payload = self._compressor.compress(payload) + self._compressor.flush(zlib.Z_SYNC_FLUSH)
        _write_all(self._fd, payload)

    async def aclose(self) -> None:
        """End the compressed stream and close the file (shielded: it runs in cleanup)."""
        if self._marks and self._fd is not None:  # the line in progress never ended
            marks, self._marks = self._marks, b""
            with trio.CancelScope(shield=True):
                await self._put((b"" if self._ends_line else b"\n") + marks, 0)
        fd, self._fd = self._fd, None
        if fd is None:
            return
        compressor, self._compressor = self._compressor, None

        def close() -> None:
            try:
                if compressor is not None:
                    _write_all(fd, compressor.flush(zlib.Z_FINISH))
            finally:
                os.close(fd)

        with trio.CancelScope(shield=True):
            try:
                await trio.to_thread.run_sync(close)
            except OSError as exc:
                log.warning("%s: raw stream not ended: %s", self.path, exc.strerror or exc)
        if self.truncated:
            log.warning("%s: %d bytes past the cap not kept", self.path, self.dropped)


def _write_all(fd: int, data: bytes | bytearray) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
