"""LineFramer: newline framing with a cap, sans-IO."""

from __future__ import annotations

import subprocess
import sys
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nexo_trio.core.framing import DEFAULT_LINE_CAP, HEAD_BYTES, Framed, Line, LineFramer, Oversized
from tests.core.strategies import split_at


def frame_all(chunks: list[bytes], cap: int = DEFAULT_LINE_CAP) -> list[Framed]:
    framer = LineFramer(cap)
    out: list[Framed] = []
    for chunk in chunks:
        out += framer.feed(chunk)
    out += framer.close()
    return out


def reference(data: bytes, cap: int) -> list[Framed]:
    """What framing ``data`` must give, computed the obvious way."""
    segments = data.split(b"\n")
    if segments[-1] == b"":
        segments.pop()  # text after the last newline is empty: not a line
    out: list[Framed] = []
    for line_no, seg in enumerate(segments, start=1):
        if len(seg) > cap:
            out.append(Oversized(line_no=line_no, size=len(seg), head=seg[:HEAD_BYTES]))
        elif seg.strip(b" \t\r\n\x0b\x0c"):
            out.append(Line(line_no=line_no, data=seg))
    return out


stream_lines: st.SearchStrategy[list[bytes]] = st.lists(
    st.one_of(
        st.binary(max_size=30).map(lambda b: b.replace(b"\n", b"")),
        st.sampled_from(
            [b"", b"  ", b"\r", b'{"type":"result"}', b"x" * 70, b"y" * 200 + b"z" * 200]
        ),
    ),
    max_size=12,
)


@settings(max_examples=300, deadline=None)
@given(
    lines=stream_lines,
    trailing_newline=st.booleans(),
    points=st.lists(st.integers(min_value=0, max_value=10_000), max_size=12),
    cap=st.sampled_from([1, 4, 16, 64, DEFAULT_LINE_CAP]),
)
def test_chunk_boundaries_do_not_matter(
    lines: list[bytes], trailing_newline: bool, points: list[int], cap: int
) -> None:
    data = b"\n".join(lines) + (b"\n" if trailing_newline else b"")
    whole = frame_all([data], cap)
    assert whole == reference(data, cap)
    assert frame_all(split_at(data, points), cap) == whole
    # One byte at a time is the worst split of all.
    assert frame_all([data[i : i + 1] for i in range(len(data))], cap) == whole


def test_line_longer_than_cap_is_one_oversized_event_and_the_stream_goes_on() -> None:
    framer = LineFramer(cap=10)
    out = framer.feed(b"short\n" + b"x" * 25 + b"\nafter\n")
    assert out == [
        Line(line_no=1, data=b"short"),
        Oversized(line_no=2, size=25, head=b"x" * 25),
        Line(line_no=3, data=b"after"),
    ]
    assert framer.close() == []


def test_oversized_line_arriving_in_pieces() -> None:
    framer = LineFramer(cap=10)
    out: list[Framed] = []
    for piece in (b"ok\nxxxxxxxx", b"xxxxxxxx", b"xxxx", b"xx\nnext", b"\n"):
        out += framer.feed(piece)
    assert out == [
        Line(line_no=1, data=b"ok"),
        Oversized(line_no=2, size=22, head=b"x" * 22),
        Line(line_no=3, data=b"next"),
    ]


def test_line_of_exactly_cap_bytes_is_a_line() -> None:
    framer = LineFramer(cap=8)
    assert framer.feed(b"12345678\n123456789\n") == [
        Line(line_no=1, data=b"12345678"),
        Oversized(line_no=2, size=9, head=b"123456789"),
    ]


def test_skipping_says_a_line_passed_the_cap_before_it_ends() -> None:
    framer = LineFramer(cap=10)
    # Exactly the cap: the line may still end here.
    assert (framer.feed(b"x" * 10), framer.skipping) == ([], False)
    assert (framer.feed(b"x"), framer.skipping) == ([], True)
    assert (framer.feed(b"xx\nok"), framer.skipping) == ([Oversized(1, 13, b"x" * 13)], False)
    assert framer.close() == [Line(line_no=2, data=b"ok")]


def test_oversized_last_line_without_newline_is_reported_at_close() -> None:
    framer = LineFramer(cap=10)
    assert framer.feed(b"ok\n" + b"y" * 50) == [Line(line_no=1, data=b"ok")]
    assert framer.close() == [Oversized(line_no=2, size=50, head=b"y" * 50)]
    assert framer.lines_seen == 2


def test_an_oversized_line_keeps_its_start_however_it_came() -> None:
    """The head is the line's first bytes, whether it crossed the cap in one chunk, byte by
    byte, or past the spooling size: a reader can still tell what the line was."""
    line = b'{"type":"control_request","request_id":"ask-1"' + b"x" * (3 * 1024 * 1024)

    def bytewise_start(size: int) -> list[bytes]:  # its first 1,000 bytes one at a time
        return [line[i : i + 1] for i in range(1000)] + [
            line[i : i + size] for i in range(1000, len(line), size)
        ]

    whole = [line]
    spooled = [line[i : i + 4096] for i in range(0, len(line), 4096)]
    for cap, chunks in ((64, bytewise_start(65536)), (64, whole), (2 * 1024 * 1024, spooled)):
        framer = LineFramer(cap)
        out: list[Framed] = []
        for chunk in chunks:
            out += framer.feed(chunk)
        out += framer.feed(b"\n")
        assert out == [Oversized(1, len(line), line[:HEAD_BYTES])], cap


def test_unterminated_last_line_is_returned_at_close() -> None:
    framer = LineFramer()
    assert framer.feed(b'{"a":1}\n{"b"') == [Line(line_no=1, data=b'{"a":1}')]
    assert framer.feed(b":2}") == []
    assert framer.close() == [Line(line_no=2, data=b'{"b":2}')]
    assert framer.close() == []


def test_blank_lines_are_skipped_but_counted() -> None:
    framer = LineFramer()
    out = framer.feed(b"a\n\n   \n\r\n\t\nb\n")
    assert out == [Line(line_no=1, data=b"a"), Line(line_no=6, data=b"b")]
    assert framer.lines_seen == 6
    assert framer.feed(b"\n") == []
    assert framer.close() == []
    assert framer.lines_seen == 7


def test_trailing_carriage_return_is_kept() -> None:
    assert LineFramer().feed(b"{}\r\n") == [Line(line_no=1, data=b"{}\r")]


def test_empty_chunks_are_harmless() -> None:
    framer = LineFramer()
    assert framer.feed(b"") == []
    assert framer.feed(bytearray(b"x\n")) == [Line(line_no=1, data=b"x")]
    assert framer.feed(b"") == []
    assert framer.close() == []


@pytest.mark.parametrize("cap", [0, -1])
def test_cap_must_be_positive(cap: int) -> None:
    with pytest.raises(ValueError, match="line cap"):
        LineFramer(cap)


@pytest.mark.parametrize("chunk_size", [1, 7, 64, 1000, 10 * 64])
def test_framer_never_buffers_more_than_cap(chunk_size: int) -> None:
    cap = 64
    framer = LineFramer(cap)
    data = b"z" * (10 * cap)
    for i in range(0, len(data), chunk_size):
        assert framer.feed(data[i : i + chunk_size]) == []
        assert framer.buffered <= cap
    assert framer.feed(b"\nok\n") == [
        Oversized(line_no=1, size=10 * cap, head=b"z" * HEAD_BYTES),
        Line(line_no=2, data=b"ok"),
    ]
    assert framer.buffered <= cap


@settings(max_examples=200, deadline=None)
@given(
    chunks=st.lists(st.binary(max_size=50), max_size=20),
    cap=st.integers(min_value=1, max_value=40),
)
def test_buffer_bounded_and_every_line_numbered_once(chunks: list[bytes], cap: int) -> None:
    framer = LineFramer(cap)
    out: list[Framed] = []
    for chunk in chunks:
        out += framer.feed(chunk)
        assert framer.buffered <= cap
    out += framer.close()
    numbers = [item.line_no for item in out]
    assert numbers == sorted(set(numbers))
    assert all(len(item.data) <= cap for item in out if isinstance(item, Line))
    data = b"".join(chunks)
    assert out == reference(data, cap)
    expected_lines = data.count(b"\n") + (0 if data.endswith(b"\n") or not data else 1)
    assert framer.lines_seen == expected_lines


def test_framing_is_stdlib_only() -> None:
    # The permission MCP server frames its stdin and socket with it, and is spawned on
    # every turn: importing the framer must not load attrs (nor the rest of the core, but
    # the stdlib-only helper of the core package's lazy exports).
    code = (
        "import sys, nexo_trio.core.framing\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'attrs'"
        " or m.startswith('nexo_trio.core.')"
        " and m not in ('nexo_trio.core.framing', 'nexo_trio.core.lazy')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True, text=True)
    assert done.stdout.strip() == "[]"


@settings(max_examples=200, deadline=None)
@given(
    lines=stream_lines,
    points=st.lists(st.integers(min_value=0, max_value=2000), max_size=12),
    cap=st.integers(min_value=1, max_value=64),
)
def test_split_gives_the_lines_feed_gives_with_their_numbers(
    lines: list[bytes], points: list[int], cap: int
) -> None:
    data = b"\n".join(lines)
    lean, framed = LineFramer(cap), LineFramer(cap)
    got: list[Framed] = []
    for chunk in split_at(data, points):
        split = lean.split(chunk)
        if split is None:  # a line over the cap may end or start in it
            got += lean.feed(chunk)
        else:
            first, pieces = split
            got += [Line(n, p) for n, p in enumerate(pieces, start=first) if p and not p.isspace()]
        framed.feed(chunk)
        assert lean.buffered == framed.buffered
    got += lean.close()
    assert got == reference(data, cap)


def test_a_long_line_is_gathered_into_one_buffer_and_handed_over_as_bytes() -> None:
    # Past the size that spools it; no newline in it.
    line = bytes(b for b in range(256) if b != ord("\n")) * (5 * 1024 * 1024 // 255)
    framer = LineFramer()
    got: list[Framed] = []
    for start in range(0, len(line), 65536):
        got += framer.feed(line[start : start + 65536])
    assert framer.buffered == len(line)
    got += framer.feed(b"\nnext\n")
    assert got == [Line(1, line), Line(2, b"next")]
    assert isinstance(got[0], Line)
    assert type(got[0].data) is bytes
    assert framer.buffered == 0


def test_a_long_line_peaks_well_under_twice_its_size() -> None:
    size = 16 * 1024 * 1024
    line = b"x" * size + b"\n"
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        framer = LineFramer()
        got: list[Framed] = []
        view = memoryview(line)
        for start in range(0, len(line), 65536):
            got += framer.feed(bytes(view[start : start + 65536]))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert got == [Line(1, line[:-1])]
    assert (peak - base) / size < 1.5
