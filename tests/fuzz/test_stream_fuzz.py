"""Fuzzing the turn's stdout path: arbitrary bytes and JSON frames through the line framer,
the stream-json parser and the pure reducer.

Properties:

* nothing raises, whatever the bytes, the chunking or the line cap;
* every line is accounted for: each non-blank line is exactly one event, in order, the one
  ``parse_line`` makes of it or an ``OversizedLine`` of its size when it is over the cap
  (so frames + malformed + oversized == lines), and the reducer counts them so;
* the same bytes in any chunking give the same events and the same state;
* any JSON object is kept whole as a frame: nothing in it makes the line malformed, lone
  surrogate escapes included (read as U+FFFD), and what is kept is storable JSON;
* ``classify`` always returns an outcome, which the ledger's JSON stores and reads back.

Sizes: see ``tests/fuzz/profile.py`` (``NEXO_FUZZ_EXAMPLES``).
"""

from __future__ import annotations

import json
from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st

from nexo_trio.core.events import (
    Event,
    LineEvent,
    MalformedLine,
    OversizedLine,
    ProcessExited,
    Spawned,
    StdoutClosed,
    UnknownFrame,
)
from nexo_trio.core.framing import DEFAULT_LINE_CAP
from nexo_trio.core.outcome import Cause, TurnKind, TurnOutcome
from nexo_trio.core.turn import INITIAL_STATE, TurnState, classify, reduce
from nexo_trio.wire.outcome_json import dumps, turn_outcome_from_json, turn_outcome_to_json
from nexo_trio.wire.stream_json import EXCERPT_BYTES, StreamDecoder, parse_line
from tests.conftest import FIXTURES
from tests.core.strategies import engine_events, frame_objects, split_at
from tests.fuzz.profile import count, examples
from tests.fuzz.strategies import wild_json, wild_text

# --------------------------------------------------------------------------- strategies

STREAMS = FIXTURES / "stream-json"


def _with_extras(obj: dict[str, Any], extras: dict[str, Any]) -> dict[str, Any]:
    return {**extras, **obj}


json_objects: st.SearchStrategy[dict[str, Any]] = st.one_of(
    # Frames of every known type, fields of every (often wrong) type, plus wild keys.
    st.builds(_with_extras, frame_objects(), st.dictionaries(wild_text, wild_json, max_size=3)),
    # A known type whose text fields are wild (a lone surrogate in a result, say).
    st.builds(
        lambda kind, fields: {**fields, "type": kind},
        st.sampled_from(["result", "assistant", "user", "system", "stream_event"]),
        st.fixed_dictionaries(
            {},
            optional={
                "subtype": st.sampled_from(["success", "init"]) | wild_text,
                "result": wild_text,
                "session_id": wild_text,
                "errors": st.lists(wild_text, max_size=3),
                "message": st.fixed_dictionaries(
                    {},
                    optional={
                        "content": st.lists(
                            st.fixed_dictionaries({"type": st.just("text"), "text": wild_text}),
                            max_size=2,
                        )
                    },
                ),
            },
        ),
    ),
    st.dictionaries(wild_text, wild_json, max_size=5),
)


def encoded(obj: dict[str, Any]) -> bytes:
    """The line the CLI would print: JSON with non-ASCII escaped (``JSON.stringify`` keeps
    it raw, but escapes are what carries a lone surrogate)."""
    return json.dumps(obj).encode()


def _fragment(line: bytes, cut: int) -> bytes:
    return line[: cut % (len(line) + 1)]


RECORDED: list[bytes] = sorted(
    {line for path in STREAMS.glob("*.ndjson") for line in path.read_bytes().splitlines()}
)
"""Every line the real CLI printed in the recordings."""

small_objects: st.SearchStrategy[dict[str, Any]] = st.dictionaries(
    st.sampled_from(["type", "subtype", "result", "session_id", "is_error"]) | wild_text,
    st.none() | st.booleans() | st.integers() | wild_text,
    max_size=4,
)

pieces: st.SearchStrategy[bytes] = st.one_of(
    st.sampled_from(RECORDED).map(lambda line: line + b"\n"),
    st.builds(_fragment, st.sampled_from(RECORDED), st.integers(min_value=0)),
    small_objects.map(lambda o: encoded(o) + b"\n"),
    st.binary(max_size=48),
    st.sampled_from([b"\n", b"\r\n", b"   \n", b"\n\n", b"\t\x0b\x0c\n", b"\r"]),
    st.sampled_from([b"\xff\xfe", b"\xed\xa0\x80", b"\xc3", b'"\\ud800"', b"{", b"}", b"null"]),
    st.integers(min_value=0, max_value=3000).map(lambda n: b"x" * n),
)
"""What a stdout stream is made of: the real CLI's lines whole and cut, small objects with
wild text, garbage, blank and long runs (cheap to draw: the rich frames are
:data:`json_objects`, fuzzed line by line)."""

streams: st.SearchStrategy[bytes] = st.lists(pieces, max_size=12).map(b"".join)
caps: st.SearchStrategy[int] = st.one_of(
    st.integers(min_value=1, max_value=400), st.just(DEFAULT_LINE_CAP)
)
cut_points: st.SearchStrategy[list[int]] = st.lists(st.integers(min_value=0), max_size=16)


def _plain(value: Any) -> bool:
    """No surrogate anywhere (orjson can encode it)."""
    try:
        orjson.dumps(value)
    except TypeError:
        return False
    return True


# --------------------------------------------------------------------------- oracles


def decode(chunks: list[bytes], cap: int) -> list[LineEvent]:
    decoder = StreamDecoder(line_cap=cap)
    events: list[LineEvent] = []
    for chunk in chunks:
        events += decoder.feed(chunk)
    return events + decoder.close()


def expected_events(data: bytes, cap: int) -> list[LineEvent]:
    """The events of ``data``, line by line: what the framer + parser must give."""
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()  # the stream ends with a newline (or is empty)
    out: list[LineEvent] = []
    for line_no, line in enumerate(lines, start=1):
        if len(line) > cap:
            start = line[:EXCERPT_BYTES].decode("utf-8", errors="replace")
            out.append(OversizedLine(line_no=line_no, size=len(line), excerpt=start))
        elif line and not line.isspace():
            out.append(parse_line(line_no, line))
    return out


def fold(events: list[Event]) -> TurnState:
    state = INITIAL_STATE
    for event in events:
        state = reduce(state, event)
    return state


def replaced(value: Any) -> Any:
    """``value`` as JSON reads it back: each valid surrogate pair joined, each lone
    surrogate U+FFFD (an oracle independent of the parser's own replacement)."""
    if isinstance(value, str):
        return value.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    if isinstance(value, list):
        return [replaced(v) for v in value]
    if isinstance(value, dict):
        return {replaced(k): replaced(v) for k, v in value.items()}
    return value


def assert_outcome(outcome: TurnOutcome, state: TurnState) -> None:
    assert isinstance(outcome, TurnOutcome)
    assert isinstance(outcome.kind, TurnKind)
    assert isinstance(outcome.cause, Cause)
    assert outcome.events == state.events
    stored = orjson.loads(dumps(turn_outcome_to_json(outcome)))
    assert turn_outcome_from_json(stored) == outcome


# --------------------------------------------------------------------------- properties


@examples("streams")
@given(data=streams, cap=caps, points=cut_points)
def test_every_line_is_accounted_for(data: bytes, cap: int, points: list[int]) -> None:
    count("streams")
    events = decode(split_at(data, points), cap)
    assert events == expected_events(data, cap)
    malformed = sum(isinstance(e, MalformedLine) for e in events)
    oversized = sum(isinstance(e, OversizedLine) for e in events)
    frames = len(events) - malformed - oversized
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    non_blank = [line for line in lines if len(line) > cap or (line and not line.isspace())]
    assert frames + malformed + oversized == len(non_blank)
    state = fold([Spawned(pid=1), *events, StdoutClosed(), ProcessExited(exit_code=0)])
    assert state.finished
    assert (state.events, state.malformed_lines, state.oversized_lines) == (
        len(events),
        malformed,
        oversized,
    )
    assert_outcome(classify(state), state)


@examples("chunkings")
@given(data=streams, cap=caps, first=cut_points, second=cut_points)
def test_any_chunking_gives_the_same_events(
    data: bytes, cap: int, first: list[int], second: list[int]
) -> None:
    count("chunkings")
    whole = decode([data], cap)
    assert decode(split_at(data, first), cap) == whole
    assert decode(split_at(data, second), cap) == whole
    if len(data) <= 4096:
        assert decode([data[i : i + 1] for i in range(len(data))], cap) == whole
    state = fold(list(whole))
    assert fold(list(decode(split_at(data, first), cap))) == state


@examples("frames")
@given(obj=json_objects, raw_utf8=st.booleans())
def test_any_json_object_is_kept_whole(obj: dict[str, Any], raw_utf8: bool) -> None:
    count("frames")
    if raw_utf8:  # non-ASCII as raw UTF-8: a lone surrogate cannot be UTF-8 at all
        line = json.dumps(obj, ensure_ascii=False).encode("utf-8", "surrogatepass")
    else:
        line = encoded(obj)
    event = parse_line(5, line)
    if raw_utf8 and not _plain(obj):
        assert isinstance(event, MalformedLine)
        assert event.error == "invalid UTF-8"
        return
    assert not isinstance(event, MalformedLine | OversizedLine), event
    assert event.raw == replaced(obj)
    assert orjson.loads(orjson.dumps(event.raw)) == event.raw  # storable as it is
    if isinstance(event, UnknownFrame):
        assert event.note is None, event.note  # the lenient reader never gave up on a frame
    state = reduce(INITIAL_STATE, event)
    assert state.events == 1
    assert_outcome(classify(state), state)


@examples("classify")
@given(
    data=streams,
    ends=st.lists(st.tuples(st.integers(min_value=0), engine_events), max_size=8),
)
def test_classify_always_returns_an_outcome(data: bytes, ends: list[tuple[int, Event]]) -> None:
    count("classify")
    events: list[Event] = list(decode([data], 64))
    for position, event in ends:  # engine events anywhere among the lines
        events.insert(position % (len(events) + 1), event)
    state = fold(events)
    assert_outcome(classify(state), state)
