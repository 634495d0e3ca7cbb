"""The turn's record (``core/record.py``): Claude's texts and tool calls from the engine's
batches, the same however the frames are batched; inputs with secret keys redacted and
nesting bounded; result sizes."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from nexo_trio.core.events import (
    AssistantMessage,
    Cancelled,
    DeadlineHit,
    Event,
    StderrTail,
    StdoutClosed,
    TextBlock,
    ToolResultBlock,
    ToolUseBlock,
    UserMessage,
)
from nexo_trio.core.goal_events import AssistantText, GoalEvent, ToolCalled
from nexo_trio.core.record import (
    INPUT_DEPTH,
    UNKNOWN_TOOL,
    Transcribing,
    kept_input,
    result_bytes,
    stop_event,
    stop_line,
    transcribe,
    truncation_line,
)
from nexo_trio.core.redact import REDACTED

G = "g1"


def use(tool_id: str, name: str = "Bash", **tool_input: Any) -> AssistantMessage:
    return AssistantMessage(content=(ToolUseBlock(tool_id, name, dict(tool_input)),))


def said(*texts: str) -> AssistantMessage:
    return AssistantMessage(content=tuple(TextBlock(t) for t in texts))


def answer(tool_id: str, content: Any, *, is_error: bool = False) -> UserMessage:
    return UserMessage(content=(ToolResultBlock(tool_id, content, is_error),))


def record(*batches: list[Event]) -> list[GoalEvent]:
    state = Transcribing(G, 3)
    found: list[GoalEvent] = []
    for batch in batches:
        state, events = transcribe(state, batch)
        found += events
    return found


def test_texts_and_calls_in_the_order_they_complete() -> None:
    events = record(
        [said("Let me look.", "Then write."), use("t1", command="ls")],
        [answer("t1", "a\nb\n")],
        [use("t2", "Write", file_path="x", content="é")],
        [answer("t2", [{"type": "text", "text": "denied"}], is_error=True), said("Done.")],
        [StdoutClosed()],
    )
    assert events == [
        AssistantText(G, 3, "Let me look."),
        AssistantText(G, 3, "Then write."),
        ToolCalled(G, 3, "t1", "Bash", {"command": "ls"}, result_bytes=4),
        ToolCalled(
            G, 3, "t2", "Write", {"file_path": "x", "content": "é"}, result_bytes=6, is_error=True
        ),
        AssistantText(G, 3, "Done."),
    ]


def test_a_call_without_a_result_is_recorded_when_stdout_ends_and_nothing_after() -> None:
    for end in (StdoutClosed(), StderrTail("")):
        events = record([use("t1", command="sleep 600")], [end], [said("late"), answer("t1", "x")])
        (call,) = events
        assert call == ToolCalled(G, 3, "t1", "Bash", {"command": "sleep 600"})
        assert isinstance(call, ToolCalled)
        assert call.result_bytes is None


def test_a_result_of_an_unseen_call_and_a_repeated_tool_use() -> None:
    events = record([use("t1", command="a"), use("t1", command="a")], [answer("t9", "xyz")])
    assert events == [ToolCalled(G, 3, "t9", UNKNOWN_TOOL, result_bytes=3)]
    assert record([use("t1"), use("t1")], [StdoutClosed()]) == [ToolCalled(G, 3, "t1", "Bash")]


def test_a_subagents_texts_and_calls_name_their_parent() -> None:
    inner = AssistantMessage(
        content=(TextBlock("sub"), ToolUseBlock("t2", "Read", {"file_path": "f"})),
        parent_tool_use_id="t1",
    )
    text, call = record([inner, answer("t2", "")])
    assert text == AssistantText(G, 3, "sub", parent_tool_use_id="t1")
    assert call == ToolCalled(G, 3, "t2", "Read", {"file_path": "f"}, 0, parent_tool_use_id="t1")


def test_batches_without_a_record_keep_the_state_as_it_is() -> None:
    state = Transcribing(G, 1)
    assert transcribe(state, [said("")]) == (state, ())
    state, _ = transcribe(state, [use("t1")])
    assert transcribe(state, [StderrTail("x")][:0])[0] is state


def test_secret_keys_are_redacted_at_any_depth_and_nesting_is_bounded() -> None:
    given_input = {
        "command": "deploy",
        "env": {"API_KEY": "abc123456", "HOME": "/root", "tokens": 5},
        "headers": [{"password": "hunter22", "x": 1}],
    }
    assert kept_input(given_input) == {
        "command": "deploy",
        "env": {"API_KEY": REDACTED, "HOME": "/root", "tokens": 5},
        "headers": [{"password": REDACTED, "x": 1}],
    }
    deep: dict[str, Any] = {"leaf": "x"}
    for _ in range(3 * INPUT_DEPTH):
        deep = {"d": deep}
    kept = kept_input(deep)
    json.dumps(kept)  # a JSON that any serialiser can write back
    depth = 0
    node_: Any = kept
    while isinstance(node_, dict):
        node_, depth = node_["d"], depth + 1
    assert depth == INPUT_DEPTH
    assert node_ == "[1 keys nested too deep to keep]"


def test_result_sizes() -> None:
    assert result_bytes(None) == 0
    assert result_bytes("héllo") == 6
    assert result_bytes([{"type": "text", "text": "ab"}, {"type": "text", "text": "c"}]) == 3
    image = {"type": "image", "source": {"type": "base64", "data": "QUJD"}}
    assert result_bytes([image]) == len(json.dumps(image))
    assert result_bytes({"odd": True}) == len(json.dumps({"odd": True}))


def test_the_truncation_line_is_one_json_line() -> None:
    line = truncation_line(10, 20)
    assert line.endswith(b"\n")
    assert line.count(b"\n") == 1
    assert json.loads(line) == {"type": "nexo_stream_truncated", "kept_bytes": 10, "cap_bytes": 20}


# --------------------------------------------------------------------------- properties

ids = st.sampled_from([f"t{i}" for i in range(6)])
frames = st.one_of(
    st.builds(lambda i, c: use(i, command=c), ids, st.text(max_size=5)),
    st.builds(lambda i, c, e: answer(i, c, is_error=e), ids, st.text(max_size=5), st.booleans()),
    st.builds(said, st.text(max_size=5)),
)


@given(st.lists(frames, max_size=30), st.data())
def test_the_record_does_not_depend_on_how_frames_are_batched(
    stream: list[Event], data: st.DataObject
) -> None:
    whole = record([*stream, StdoutClosed()])
    cuts = sorted(data.draw(st.sets(st.integers(0, len(stream)))))
    batches: list[list[Event]] = []
    start = 0
    for cut in [*cuts, len(stream)]:
        batches.append(stream[start:cut])
        start = cut
    assert record(*batches, [StdoutClosed()]) == whole
    # Every tool use is in a recorded call, every text is recorded, in order.
    uses = {
        b.id
        for f in stream
        if isinstance(f, AssistantMessage)
        for b in f.content
        if isinstance(b, ToolUseBlock)
    }
    calls = {e.tool_use_id for e in whole if isinstance(e, ToolCalled) and e.name != UNKNOWN_TOOL}
    assert calls == {u for u in uses if u}
    texts = [
        b.text
        for f in stream
        if isinstance(f, AssistantMessage)
        for b in f.content
        if isinstance(b, TextBlock) and b.text
    ]
    assert [e.text for e in whole if isinstance(e, AssistantText)] == texts


@given(
    event=st.one_of(
        st.builds(Cancelled, reason=st.text(max_size=40)),
        st.builds(DeadlineHit, timeout_s=st.floats(min_value=0, max_value=1e9)),
    )
)
def test_a_stop_line_reads_back_as_its_event(event: Cancelled | DeadlineHit) -> None:
    """The raw copy's stop mark is one JSON line that ``replay`` reads back exactly."""
    line = stop_line(event)
    assert line.endswith(b"\n")
    assert line.count(b"\n") == 1
    assert stop_event(json.loads(line)) == event


def test_a_stop_mark_of_another_shape_is_still_a_stop() -> None:
    assert stop_event({"type": "nexo_turn_stopped"}) == Cancelled()
    assert stop_event({"type": "nexo_turn_stopped", "why": "timeout"}) == Cancelled()
    assert stop_event({"type": "result"}) is None
