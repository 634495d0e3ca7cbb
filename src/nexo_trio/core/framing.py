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
import io
from typing import NamedTuple, TypeAlias

DEFAULT_LINE_CAP = 64 * 1024 * 1024
"""64 MiB: far above any real frame, low enough that one runaway line can't eat the host."""


class Line(NamedTuple):
    """One complete line, without its newline."""

    line_no: int
    data: bytes


HEAD_BYTES = 256
"""How much of an oversized line's start :class:`Oversized` keeps: enough for a reader to
tell what the line was and answer it (a control request's type and id come first)."""


class Oversized(NamedTuple):
    """A line longer than the cap, of ``size`` bytes; they were skipped, never buffered, but
    its first :data:`HEAD_BYTES` (``head``)."""

    line_no: int
    size: int
    head: bytes = b""


Framed: TypeAlias = Line | Oversized

_SMALL_PIECE = 1024
"""Pieces of a line shorter than this are gathered before they are kept (see ``_hold``)..."""
_GATHERED = 64 * 1024
"""...into pieces of this size."""
_SPOOLED = 1024 * 1024
"""A line in progress held past this size is gathered into one growing buffer instead (see
``_hold``)."""


class LineFramer:
    """Split a byte stream into lines of at most ``cap`` bytes.

    The framer keeps at most ``cap`` bytes buffered: the start of the line in progress, as
    the chunks that brought it (no copy of a ``bytes`` chunk is made while it waits). A
    chunk's complete lines are split out of it at once, so a line costs one copy; a line
    that spanned chunks is joined once, when its newline comes. Past
    :data:`_SPOOLED` bytes, the line in progress is gathered into one growing buffer as its
    chunks come (a :class:`io.BytesIO`, whose value is then the line itself, not a copy): a
    64 MiB line peaks at about 1.1x its size, not 2x (its chunks and the joined line).
    """

    def __init__(self, cap: int = DEFAULT_LINE_CAP) -> None:
        if cap < 1:
            raise ValueError(f"line cap must be at least 1 byte, got {cap}")
        self._cap = cap
        self._parts: list[bytes] = []  # the line in progress, in pieces, none with a newline
        self._small = bytearray()  # small pieces after those, gathered (see _hold)
        self._spool: io.BytesIO | None = None  # instead of both, past _SPOOLED bytes
        self._held = 0  # the size of the line in progress held
        self._line_no = 0
        self._skipping = 0  # > 0 while discarding an oversized line: its size so far
        self._head = b""  # the start of the line being skipped

    @property
    def lines_seen(self) -> int:
        """Lines completed so far, blank ones included."""
        return self._line_no

    @property
    def buffered(self) -> int:
        """Bytes held of the line in progress (never more than the cap)."""
        return self._held

    @property
    def skipping(self) -> bool:
        """Whether the line being read has already passed the cap: its bytes are skipped,
        and its :class:`Oversized` comes once it ends (a reader may act on it earlier)."""
        return self._skipping > 0

    def split(self, data: bytes | bytearray) -> tuple[int, list[bytes]] | None:
        """Take one chunk; return the lines it completed, in order, blank ones included, with
        the number of the first: the lean form of :meth:`feed`, for a reader that parses
        them at once (no object per line).

        ``None``, the chunk not taken, when a line longer than the cap could end or start
        in it (or one is being skipped): :meth:`feed` then takes it, and numbers each line.
        """
        if self._skipping or self._held + len(data) > self._cap:
            return None
        line_no = self._line_no + 1
        if type(data) is not bytes:
            data = bytes(data)  # the caller may reuse its buffer: keep a copy of our own
        nl = data.find(b"\n")
        if nl < 0:
            if data:
                self._hold(data)
            return line_no, []
        first = None
        if self._held:
            with memoryview(data) as view:
                first = self._take(view[:nl])
        lines = data.split(b"\n")
        rest = lines.pop()
        if first is not None:
            lines[0] = first
        self._line_no += len(lines)
        if rest:
            self._hold(rest)
        return line_no, lines

    def feed(self, data: bytes | bytearray) -> list[Framed]:
        """Take one chunk; return the lines it completed, in order."""
        out: list[Framed] = []
        if not data:
            return out
        lines = self.split(data)
        if lines is not None:
            line_no, pieces = lines
            for piece in pieces:
                if piece and not piece.isspace():
                    out.append(Line(line_no, piece))
                line_no += 1
            return out
        if self._skipping:
            nl = data.find(b"\n")
            if len(self._head) < HEAD_BYTES:  # the start of a line under a small cap
                self._head += data[: min(len(data) if nl < 0 else nl, HEAD_BYTES - len(self._head))]
            if nl < 0:
                self._skipping += len(data)
                return out
            self._finish_oversized(self._skipping + nl, out)
            data = data[nl + 1 :]
            if not data:
                return out
        if type(data) is not bytes:
            data = bytes(data)  # the caller may reuse its buffer: keep a copy of our own
        nl = data.find(b"\n")
        if nl < 0:
            self._hold(data)
            return out
        first = None
        if self._held:
            # Joined before the split: the pieces held are gone by the time it copies.
            with memoryview(data) as view:
                first = self._take(view[:nl])
        pieces = data.split(b"\n")
        rest = pieces.pop()  # after the last newline: the start of the next line
        if first is not None:
            pieces[0] = first
        cap = self._cap
        line_no = self._line_no
        for piece in pieces:
            line_no += 1
            if len(piece) > cap:
                out.append(Oversized(line_no, len(piece), piece[:HEAD_BYTES]))
            elif piece and not piece.isspace():
                out.append(Line(line_no, piece))
        self._line_no = line_no
        if rest:
            self._hold(rest)
        return out

    def close(self) -> list[Framed]:
        """End of stream: return the unterminated last line, if any."""
        out: list[Framed] = []
        if self._skipping:
            self._finish_oversized(self._skipping, out)
        elif self._held:
            line = self._take(b"")
            self._line_no += 1
            if not line.isspace():
                out.append(Line(self._line_no, line))
        return out

    def _hold(self, piece: bytes) -> None:
        """Keep ``piece`` (no newline in it) as the next part of the line in progress, or
        start skipping that line once it is longer than the cap. Small pieces are gathered
        into one bytearray (a line fed a byte at a time must not cost an object per byte);
        past :data:`_SPOOLED` bytes, everything is gathered into one growing buffer."""
        self._held += len(piece)
        if self._held > self._cap:
            # No newline within the cap: drop what we hold (but its start) and skip to the
            # next newline.
            self._head = self._start(piece)
            self._skipping = self._held
            self._parts = []
            self._small = bytearray()
            self._spool = None
            self._held = 0
            return
        spool = self._spool
        if spool is not None:
            spool.write(piece)
            return
        if self._held > _SPOOLED:
            spool = self._spool = io.BytesIO()
            for part in self._parts:
                spool.write(part)
            spool.write(self._small)
            spool.write(piece)
            self._parts = []
            self._small = bytearray()
            return
        small = self._small
        if len(piece) < _SMALL_PIECE:
            small += piece
            if len(small) < _GATHERED:
                return
            piece = bytes(small)
            small.clear()
        elif small:
            self._parts.append(bytes(small))
            small.clear()
        self._parts.append(piece)

    def _take(self, last: bytes | memoryview) -> bytes:
        """The line in progress, ending with ``last``, joined; nothing is held after."""
        spool = self._spool
        if spool is not None:
            self._spool, self._held = None, 0
            spool.write(last)
            return spool.getvalue()  # the buffer itself, cut to size: no copy
        parts, small = self._parts, self._small
        self._parts, self._small, self._held = [], bytearray(), 0
        if small:
            parts.append(bytes(small))
            del small
        return b"".join((*parts, last))

    def _start(self, piece: bytes) -> bytes:
        """The first :data:`HEAD_BYTES` of the line in progress, ``piece`` its last part."""
        spool = self._spool
        if spool is not None:
            with spool.getbuffer() as view:
                return bytes(view[:HEAD_BYTES])
        head = bytearray()
        parts: list[bytes | bytearray] = [*self._parts, self._small, piece]
        for part in parts:
            head += part[: HEAD_BYTES - len(head)]
            if len(head) >= HEAD_BYTES:
                break
        return bytes(head)

    def _finish_oversized(self, size: int, out: list[Framed]) -> None:
        self._line_no += 1
        self._skipping = 0
        head, self._head = self._head, b""
        out.append(Oversized(self._line_no, size, head))
