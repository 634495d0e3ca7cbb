"""Laws of reduce/classify, checked with hypothesis."""

from __future__ import annotations

import itertools
from typing import get_args

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nexo_trio.core.events import (
    AssistantMessage,
    Event,
    LineEvent,
    MalformedLine,
    OversizedLine,
    ProcessExited,
    Result,
    StdoutClosed,
    StreamEvent,
    SystemStatus,
    UserMessage,
)
from nexo_trio.core.outcome import TurnOutcome
from nexo_trio.core.turn import INITIAL_STATE, Phase, classify, reduce, reduce_all
from nexo_trio.wire.stream_json import StreamDecoder, parse_frame, parse_frame_by_converter
from tests.core.strategies import (
    content_blocks,
    engine_events,
    event_lists,
    events,
    fold,
    frame_lines,
    frame_objects,
    line_events,
    noise,
    outcome_of,
    process_exits,
    results,
    split_at,
    usages,
)

CHEAP = settings(max_examples=200, deadline=None)

LINE_EVENT_TYPES = get_args(LineEvent)


def decided(outcome: TurnOutcome) -> tuple[object, ...]:
    """What a result frame decides: everything but the bookkeeping counters."""
    return (
        outcome.kind,
        outcome.cause,
        outcome.reason,
        outcome.hint,
        outcome.session_invalid,
        outcome.sleep_ms,
        outcome.session_id,
        outcome.final_text,
        outcome.usage,
        outcome.cost_usd,
        outcome.cumulative_cost_usd,
    )


def verdict(outcome: TurnOutcome) -> tuple[object, ...]:
    return (outcome.kind, outcome.cause, outcome.reason, outcome.hint, outcome.session_invalid)


@CHEAP
@given(evs=event_lists)
def test_deterministic(evs: list[Event]) -> None:
    assert fold(evs) == fold(list(evs))
    assert classify(fold(evs)) == classify(fold(evs))


@CHEAP
@given(before=event_lists, first=results, after=event_lists)
def test_events_after_the_result_change_nothing_decided(
    before: list[Event], first: Result, after: list[Event]
) -> None:
    before = [e for e in before if not isinstance(e, Result)]
    at_result = outcome_of([*before, first])
    later = outcome_of([*before, first, *after])
    assert decided(later) == decided(at_result)


@CHEAP
@given(
    evs=event_lists,
    inserts=st.lists(
        st.tuples(st.integers(min_value=0, max_value=100), noise), min_size=1, max_size=6
    ),
)
def test_noise_never_changes_the_kind(evs: list[Event], inserts: list[tuple[int, Event]]) -> None:
    noisy = list(evs)
    for position, event in inserts:
        noisy.insert(position % (len(noisy) + 1), event)
    assert verdict(outcome_of(noisy)) == verdict(outcome_of(evs))


@CHEAP
@given(
    evs=event_lists,
    exit_=process_exits,
    i=st.integers(min_value=0, max_value=100),
    j=st.integers(min_value=0, max_value=100),
)
def test_order_of_stdout_closed_and_exit_does_not_matter(
    evs: list[Event], exit_: ProcessExited, i: int, j: int
) -> None:
    base: list[Event] = [e for e in evs if not isinstance(e, StdoutClosed | ProcessExited)]
    first, second = sorted((i % (len(base) + 1), j % (len(base) + 1)))

    def with_ends(a: Event, b: Event) -> list[Event]:
        out = list(base)
        out.insert(second, b)
        out.insert(first, a)
        return out

    closed_first = fold(with_ends(StdoutClosed(), exit_))
    exited_first = fold(with_ends(exit_, StdoutClosed()))
    assert closed_first == exited_first
    assert classify(closed_first) == classify(exited_first)
    assert closed_first.stdout_closed
    assert closed_first.exit == exit_


@CHEAP
@given(evs=event_lists)
def test_counters_never_negative_and_events_counts_line_events(evs: list[Event]) -> None:
    state = INITIAL_STATE
    for n, event in enumerate(evs, start=1):
        state = reduce(state, event)
        seen = evs[:n]
        counters = (
            state.events,
            state.malformed_lines,
            state.oversized_lines,
            state.tool_uses,
            state.api_retries,
            state.compactions,
            state.context_tokens,
        )
        assert all(c >= 0 for c in counters)
        assert state.events == sum(isinstance(e, LINE_EVENT_TYPES) for e in seen)
        assert state.malformed_lines == sum(isinstance(e, MalformedLine) for e in seen)
        assert state.oversized_lines == sum(isinstance(e, OversizedLine) for e in seen)
    outcome = classify(state)
    assert outcome.events == state.events
    assert outcome.malformed_lines == state.malformed_lines
    assert outcome.cost_usd >= 0


PHASE_ORDER = {Phase.PENDING: 0, Phase.RUNNING: 1, Phase.FINISHED: 2}


@CHEAP
@given(evs=st.lists(st.one_of(engine_events, line_events), max_size=30))
def test_phase_only_moves_forward(evs: list[Event]) -> None:
    state = INITIAL_STATE
    for event in evs:
        after = reduce(state, event)
        assert PHASE_ORDER[after.phase] >= PHASE_ORDER[state.phase]
        if after.phase is Phase.FINISHED:
            assert (after.stdout_closed and after.exit is not None) or after.spawn_error
        state = after


@CHEAP
@given(evs=event_lists)
def test_the_first_result_is_kept(evs: list[Event]) -> None:
    state = fold(evs)
    first = next((e for e in evs if isinstance(e, Result)), None)
    assert state.result is first


@CHEAP
@given(
    data=st.one_of(
        st.binary(max_size=300).map(lambda b: [b]),
        st.lists(st.binary(max_size=40), max_size=12),
        st.lists(frame_lines(), max_size=8).map(lambda lines: [b"\n".join(lines)]),
        st.lists(frame_lines(), max_size=8).flatmap(
            lambda lines: st.lists(st.integers(0, 2000), max_size=6).map(
                lambda cuts: split_at(b"\n".join(lines), cuts)
            )
        ),
    ),
    cap=st.sampled_from([8, 64, 1 << 20]),
    ends=st.lists(engine_events, max_size=4),
)
def test_arbitrary_bytes_never_raise(data: list[bytes], cap: int, ends: list[Event]) -> None:
    decoder = StreamDecoder(line_cap=cap)
    state = INITIAL_STATE
    line_events_seen = 0
    for chunk in data:
        for event in decoder.feed(chunk):
            state = reduce(state, event)
            line_events_seen += 1
    for event in decoder.close():
        state = reduce(state, event)
        line_events_seen += 1
    for end in ends:
        state = reduce(state, end)
    outcome = classify(state)
    assert outcome.events == line_events_seen
    assert outcome.malformed_lines + outcome.oversized_lines <= line_events_seen


@CHEAP
@given(evs=st.lists(events, max_size=10))
def test_classify_never_raises_and_is_total(evs: list[Event]) -> None:
    outcome = classify(fold(evs))
    assert outcome.kind is not None
    assert outcome.cause is not None


# Assistant frames of a few API messages (a message's frames repeat its id, with usage that
# grows or repeats): the spend bookkeeping that a batch folds lazily.
message_frames: st.SearchStrategy[Event] = st.builds(
    AssistantMessage,
    session_id=st.sampled_from([None, "s-1"]),
    message_id=st.sampled_from([None, "msg_1", "msg_2", "msg_3"]),
    model=st.sampled_from([None, "claude-sonnet-4-5", "claude-haiku-4-5"]),
    content=st.lists(content_blocks, max_size=2).map(tuple),
    usage=st.none() | usages,
)
batched_events: st.SearchStrategy[list[Event]] = st.lists(
    st.one_of(events, message_frames, message_frames), max_size=40
)


@settings(max_examples=300, deadline=None)
@given(evs=batched_events, cuts=st.lists(st.integers(min_value=0, max_value=40), max_size=6))
def test_folding_a_batch_equals_folding_one_by_one(evs: list[Event], cuts: list[int]) -> None:
    one_by_one = fold(evs)
    assert reduce_all(INITIAL_STATE, evs) == one_by_one
    state = INITIAL_STATE
    bounds = sorted({c % (len(evs) + 1) for c in cuts})
    for start, end in itertools.pairwise([0, *bounds, len(evs)]):
        state = reduce_all(state, evs[start:end])
    assert state == one_by_one
    # Equal down to the float bits of the estimated cost (== on floats says as much) and
    # the outcome made of it.
    assert classify(state) == classify(one_by_one)


_LAZY_FIELDS = {
    AssistantMessage: "content",
    UserMessage: "content",
    StreamEvent: "event",
    SystemStatus: "status",
}
"""A field of each lazily built frame type that only a full structuring sets."""


@settings(max_examples=300, deadline=None)
@given(
    objs=st.lists(frame_objects(), max_size=12),
    engine=st.lists(st.tuples(st.integers(min_value=0, max_value=12), engine_events), max_size=3),
)
def test_lazily_built_frames_reduce_as_eagerly_structured_ones(
    objs: list[dict[str, object]], engine: list[tuple[int, Event]]
) -> None:
    lazy: list[Event] = [parse_frame(obj) for obj in objs]
    eager: list[Event] = [parse_frame_by_converter(obj) for obj in objs]
    for position, event in sorted(engine, key=lambda p: p[0], reverse=True):
        lazy.insert(position % (len(lazy) + 1), event)
        eager.insert(position % (len(eager) + 1), event)
    assert reduce_all(INITIAL_STATE, lazy) == reduce_all(INITIAL_STATE, eager) == fold(eager)
    # The reducer reads what a lazily built frame is built with: nothing more is structured.
    for frame in lazy:
        field = _LAZY_FIELDS.get(type(frame))
        if field is not None:
            with pytest.raises(AttributeError):
                object.__getattribute__(frame, field)
