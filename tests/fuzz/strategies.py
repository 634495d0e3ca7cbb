"""What the fuzz tests share: wild text and JSON, garbage bytes, chunkings, and the line
oracle (what a newline framer with a cap must make of a byte stream, worked out without
one)."""

from __future__ import annotations

import itertools
import json
from typing import Any

from hypothesis import strategies as st

surrogates = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
wild_text: st.SearchStrategy[str] = st.text(
    st.one_of(st.characters(), surrogates, st.sampled_from('"\\\n\r\t\x00\u2028')), max_size=12
)
"""Any text, lone surrogates included (which only a JSON escape can carry)."""

wild_json: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | wild_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(wild_text, inner, max_size=4),
    max_leaves=12,
)
"""Any JSON value (strict JSON: no NaN, no infinities)."""

WILD_VALUES: tuple[Any, ...] = (
    *(None, True, False, 0, -1, 7, 2**63, -(2**63) - 1, 10**40, 1.5, -0.0, 1e308, 5e-324),
    *("", " ", "x", "Bash", "h-1", "\ud800", "\udfff\ud800", "\u2028", "\x00", "\\", '"', "\xe9"),
    *("\U0001f600", "\r\n", "null", "{}", "x" * 200),
    *([], {}, [None], [1, "a", [2, [3]]], {"a": 1}, {"": {"": []}}, {"id": "h-1"}),
    {"command": "ls", "timeout": 10},
)
"""JSON values that have broken readers and writers (lone surrogates, huge numbers...)."""

cheap_json: st.SearchStrategy[Any] = st.one_of(
    st.sampled_from(WILD_VALUES),
    wild_text,
    st.lists(st.sampled_from(WILD_VALUES), max_size=3),
    st.dictionaries(wild_text, st.sampled_from(WILD_VALUES), max_size=3),
)
"""Wild JSON, cheap to draw (no recursion): for the places a value goes where many are
drawn for each example."""

NASTY: tuple[bytes, ...] = (
    b"\xff\xfe",
    b"\xed\xa0\x80",  # a surrogate as UTF-8: not UTF-8
    b"\xc3",  # half a character
    b'"\\ud800"',
    b"{",
    b"}",
    b"[",
    b"null",
    b"NaN",
    b"-Infinity",
    b"1e400",
    b"\x00",
    b"\r",
    b"\t\x0b\x0c",
    b"\xef\xbb\xbf",  # a BOM
    b"{\x00}\x00",  # UTF-16 as json.loads would guess it
    b"9" * 5000,  # more digits than int() takes
    b"[" * 3000,  # deeper than the recursion limit
    b'{"a":' * 1500,
)
"""Byte strings that have broken parsers."""


def encode(value: Any, *, ascii_only: bool) -> bytes:
    """``value`` as one JSON line body: non-ASCII escaped, or raw UTF-8 (where a lone
    surrogate makes it invalid UTF-8, as a bad encoder would)."""
    if ascii_only:
        return json.dumps(value).encode()
    return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")


def split_at(data: bytes, points: list[int]) -> list[bytes]:
    """``data`` cut at ``points`` (taken modulo its length + 1): chunks that join back to it."""
    cuts = sorted({p % (len(data) + 1) for p in points})
    return [data[a:b] for a, b in itertools.pairwise([0, *cuts, len(data)])]


BLANK = frozenset(b" \t\n\r\x0b\x0c")


def framed_lines(data: bytes, cap: int, *, at_eof: bool) -> list[bytes | int]:
    """What a line framer with ``cap`` must hand on of ``data``: each line that is not blank
    (ASCII whitespace only) as its bytes, or as its size when it is over the cap. The last,
    unterminated line counts only ``at_eof``."""
    lines = data.split(b"\n")
    tail = lines.pop()  # b"" when the data ends with a newline
    if at_eof and tail:
        lines.append(tail)
    out: list[bytes | int] = []
    for line in lines:
        if len(line) > cap:
            out.append(len(line))
        elif not all(byte in BLANK for byte in line):
            out.append(line)
    return out
