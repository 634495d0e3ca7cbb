"""Newline framing of a byte stream, sans-IO, with a cap on line length.

Feed it chunks as they arrive; it hands back complete lines (numbered from 1) and, for a
line longer than the cap, one :class:`Oversized` whose bytes were skipped without being
buffered. It never raises on data and never waits for more input than one line needs, so a
reader built on it cannot wedge.

Blank lines are counted but not returned. A trailing ``\\r`` is left in place (JSON allows
it as whitespace).

Stdlib only (no attrs): besides the turn reader (through
:class:`~nexo_trio.wire.stream_json.StreamDecoder`, which turns :class:`Oversized` into the
:class:`~nexo_trio.core.events.OversizedLine` event) and the gate's socket server, it frames
the permission MCP server's stdin and socket, and that server is spawned on every turn, so
its imports are its start-up time.
"""

# No ``from __future__ import annotations`` here: with string annotations, each NamedTuple
# field costs a compile() at import (a ForwardRef), ~1 ms for this module.
from typing import NamedTuple, TypeAlias

DEFAULT_LINE_CAP = 64 * 1024 * 1024
"""64 MiB: far above any real frame, low enough that one runaway line can't eat the host."""


class Line(NamedTuple):
    """One complete line, without its newline."""

    line_no: int
    data: bytes


class Oversized(NamedTuple):
    """A line longer than the cap, of ``size`` bytes; they were skipped, never buffered."""

    line_no: int
    size: int


Framed: TypeAlias = Line | Oversized


class LineFramer:
    """Split a byte stream into lines of at most ``cap`` bytes.

    The framer keeps at most ``cap`` bytes buffered. Scanning resumes where the last
    search for a newline stopped, so a long line arriving in many chunks costs O(n).
    """

    def __init__(self, cap: int = DEFAULT_LINE_CAP) -> None:
        if cap < 1:
            raise ValueError(f"line cap must be at least 1 byte, got {cap}")
        self._cap = cap
        self._buf = bytearray()
        self._scanned = 0  # bytes of _buf already known to hold no newline
        self._line_no = 0
        self._skipping = 0  # > 0 while discarding an oversized line: its size so far

    @property
    def lines_seen(self) -> int:
        """Lines completed so far, blank ones included."""
        return self._line_no

    @property
    def skipping(self) -> bool:
        """Whether the line being read has already passed the cap: its bytes are skipped,
        and its :class:`Oversized` comes once it ends (a reader may act on it earlier)."""
        return self._skipping > 0

    def feed(self, data: bytes | bytearray) -> list[Framed]:
        """Take one chunk; return the lines it completed, in order."""
        out: list[Framed] = []
        if not data:
            return out
        if self._skipping:
            nl = data.find(b"\n")
            if nl < 0:
                self._skipping += len(data)
                return out
            self._finish_oversized(self._skipping + nl, out)
            data = data[nl + 1 :]
        buf = self._buf
        buf += data
        start = 0
        nl = buf.find(b"\n", self._scanned)
        if nl >= 0:
            # Each line is copied once, out of a view (a slice of the bytearray would be a
            # second copy: a 64 MiB line would peak at 3x its size instead of 2x).
            with memoryview(buf) as view:
                while nl >= 0:
                    self._emit(bytes(view[start:nl]), out)
                    start = nl + 1
                    nl = buf.find(b"\n", start)
        if start:
            del buf[:start]
        self._scanned = len(buf)
        if len(buf) > self._cap:
            # No newline within the cap: drop what we hold and skip to the next newline.
            self._skipping = len(buf)
            buf.clear()
            self._scanned = 0
        return out

    def close(self) -> list[Framed]:
        """End of stream: return the unterminated last line, if any."""
        out: list[Framed] = []
        if self._skipping:
            self._finish_oversized(self._skipping, out)
        elif self._buf:
            self._emit(bytes(self._buf), out)
        self._buf.clear()
        self._scanned = 0
        return out

    def _emit(self, line: bytes, out: list[Framed]) -> None:
        self._line_no += 1
        if len(line) > self._cap:
            out.append(Oversized(self._line_no, len(line)))
        elif line and not line.isspace():
            out.append(Line(self._line_no, line))

    def _finish_oversized(self, size: int, out: list[Framed]) -> None:
        self._line_no += 1
        self._skipping = 0
        out.append(Oversized(self._line_no, size))
