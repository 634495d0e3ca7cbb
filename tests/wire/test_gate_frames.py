"""The permission bridge's frames: typed records, one encoder and one validating decoder per
direction, byte-compatible with the frames the earlier dict-based code wrote (an MCP server
of one version talks to an orchestrator of another); the reply a decision makes and the
answer Claude Code reads from it."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nexo_trio.core.permission import Decision, DecisionOutcome, deny_message
from nexo_trio.wire import gate_frames
from nexo_trio.wire.gate_frames import (
    DecisionFrame,
    ErrorFrame,
    FrameError,
    PermissionFrame,
    decision_frame,
    decode_reply,
    decode_request,
    deny_answer,
    encode_reply,
    encode_request,
    tool_answer,
)

# ---------------------------------------------------------------------------- the bytes

# What the earlier encoders (permission_request, decision_reply, error_reply) wrote for
# the same frames, byte for byte.
COMPATIBLE: list[tuple[PermissionFrame | DecisionFrame | ErrorFrame, bytes]] = [
    (
        PermissionFrame("123-1", "g1", "Bash", {"command": "ls -la", "n": 1}, "toolu_1"),
        b'{"v":1,"type":"permission","id":"123-1","goal_id":"g1","tool_name":"Bash",'
        b'"input":{"command":"ls -la","n":1},"tool_use_id":"toolu_1"}\n',
    ),
    (
        PermissionFrame("123-2", "g1", "Read", {}),
        b'{"v":1,"type":"permission","id":"123-2","goal_id":"g1","tool_name":"Read",'
        b'"input":{},"tool_use_id":null}\n',
    ),
    (
        DecisionFrame("123-1", True, {"command": "ls"}),
        b'{"v":1,"type":"decision","id":"123-1","behavior":"allow",'
        b'"updated_input":{"command":"ls"}}\n',
    ),
    (
        DecisionFrame("123-1", True),
        b'{"v":1,"type":"decision","id":"123-1","behavior":"allow","updated_input":null}\n',
    ),
    (
        DecisionFrame("123-2", False, message='no "way"\n\u00e9'),
        b'{"v":1,"type":"decision","id":"123-2","behavior":"deny",'
        b'"message":"no \\"way\\"\\n\\u00e9"}\n',
    ),
    (
        ErrorFrame(None, "frame 3 too large"),
        b'{"v":1,"type":"error","id":null,"error":"frame 3 too large"}\n',
    ),
    (
        ErrorFrame("123-3", "decider exploded"),
        b'{"v":1,"type":"error","id":"123-3","error":"decider exploded"}\n',
    ),
]


@pytest.mark.parametrize(("frame", "expected"), COMPATIBLE)
def test_frames_are_byte_compatible_and_decode_back(
    frame: PermissionFrame | DecisionFrame | ErrorFrame, expected: bytes
) -> None:
    if isinstance(frame, PermissionFrame):
        assert encode_request(frame) == expected
        assert decode_request(expected.rstrip(b"\n")) == frame
    else:
        assert encode_reply(frame) == expected
        assert decode_reply(expected.rstrip(b"\n")) == frame


def test_a_deny_without_a_message_still_carries_one() -> None:
    line = encode_reply(DecisionFrame("i", False))
    assert json.loads(line)["message"] == "Permission denied"


def test_the_extra_keys_of_a_frame_are_ignored() -> None:
    # A newer peer may add keys; a deny's stray updated_input never becomes an allow.
    frame = decode_reply(
        b'{"v":1,"type":"decision","id":"a","behavior":"deny","message":"m",'
        b'"updated_input":{"x":1},"extra":true}'
    )
    assert frame == DecisionFrame("a", False, None, "m")


# ---------------------------------------------------------------------------- round trips

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=10,
)
json_objects = st.dictionaries(st.text(max_size=8), json_values, max_size=4)
ids = st.text(min_size=1, max_size=12)
requests = st.builds(PermissionFrame, ids, ids, ids, json_objects, st.none() | st.text(max_size=12))
replies = st.one_of(
    st.builds(DecisionFrame, ids, st.just(True), st.none() | json_objects, st.none()),
    st.builds(DecisionFrame, ids, st.just(False), st.none(), st.text()),
    st.builds(ErrorFrame, st.none() | ids, st.text()),
)


@settings(max_examples=200, deadline=None)
@given(frame=requests)
def test_requests_round_trip(frame: PermissionFrame) -> None:
    line = encode_request(frame)
    assert line.endswith(b"\n")
    assert line.count(b"\n") == 1  # one frame, one line, whatever the strings hold
    assert decode_request(line[:-1]) == frame


@settings(max_examples=200, deadline=None)
@given(frame=replies)
def test_replies_round_trip(frame: DecisionFrame | ErrorFrame) -> None:
    line = encode_reply(frame)
    assert line.count(b"\n") == 1
    decoded = decode_reply(line[:-1])
    assert decoded == frame
    assert type(decoded) is type(frame)


# ---------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        (b'{"v":1,"type":"error","id":"a"}', "string 'error'"),
        (b'{"v":1,"type":"error","id":7,"error":"x"}', "'id' must be a string or null"),
        (b'{"v":1,"type":"decision","behavior":"allow"}', "string 'id'"),
        (b'{"v":1,"type":"decision","id":1,"behavior":"allow"}', "string 'id'"),
        (b'{"v":1,"type":"decision","id":"a","behavior":"allow","updated_input":[]}', "object"),
        (b'{"v":1,"type":"decision","id":"a","behavior":"deny"}', "string 'message'"),
        (b'{"v":1,"type":"decision","id":"a","behavior":"maybe"}', "unknown behavior"),
        (b'{"v":1,"type":"decision","id":"a"}', "unknown behavior None"),
        (b'{"v":1,"type":"permission","id":"a"}', "unknown frame type 'permission'"),
        (b'{"v":2,"type":"decision","id":"a","behavior":"allow"}', "version 2"),
        (b'{"type":"decision","id":"a","behavior":"allow"}', "version None"),
        (b'{"v":1,"id":"a","behavior":"allow"}', "string 'type'"),
        (b"[]", "JSON object"),
        (b"\xff", "not JSON"),
        (b"[" * 100_000, "nested too deeply"),
    ],
)
def test_malformed_replies_say_what_is_wrong(line: bytes, needle: str) -> None:
    with pytest.raises(FrameError) as info:
        decode_reply(line)
    assert needle in str(info.value)


def test_a_frame_over_the_cap_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gate_frames, "MAX_FRAME_BYTES", 64)
    line = encode_request(PermissionFrame("a", "g", "Write", {"c": "x" * 64}))
    with pytest.raises(FrameError, match="exceeds the 64 byte cap"):
        decode_request(line)


def test_a_request_is_checked_field_by_field() -> None:
    good: dict[str, Any] = {
        "v": 1,
        "type": "permission",
        "id": "a",
        "goal_id": "g",
        "tool_name": "Read",
        "input": {},
    }
    assert decode_request(json.dumps(good).encode()) == PermissionFrame("a", "g", "Read", {})
    for key, value, needle in [
        ("id", "", "non-empty string 'id'"),
        ("goal_id", None, "'goal_id'"),
        ("tool_name", 3, "'tool_name'"),
        ("input", "ls", "object 'input'"),
        ("tool_use_id", 5, "'tool_use_id'"),
        ("type", "decision", "unknown frame type 'decision'"),
    ]:
        with pytest.raises(FrameError) as info:
            decode_request(json.dumps(good | {key: value}).encode())
        assert needle in str(info.value)


def test_salvage_id() -> None:
    assert gate_frames.salvage_id(b'{"id": "x", "v": 9}') == "x"
    assert gate_frames.salvage_id(b'{"id": 3}') is None
    assert gate_frames.salvage_id(b"[1]") is None
    assert gate_frames.salvage_id(b"nope") is None


# ---------------------------------------------------------------------------- the two ends

REQUEST = PermissionFrame("r", "g", "Bash", {"command": "ls"})

decisions = st.builds(
    Decision,
    outcome=st.sampled_from(DecisionOutcome),
    message=st.none() | st.text(max_size=40),
    updated_input=st.none() | json_objects,
)


@settings(max_examples=200, deadline=None)
@given(decision=decisions, tool_input=json_objects)
def test_only_an_allowing_decision_allows(decision: Decision, tool_input: dict[str, Any]) -> None:
    request = REQUEST._replace(input=tool_input)
    frame = decision_frame(request, decision)
    assert frame.id == request.id
    assert frame.allow is decision.allowed
    if decision.allowed:
        expected = tool_input if decision.updated_input is None else decision.updated_input
        assert frame == DecisionFrame("r", True, expected)
    else:
        assert frame == DecisionFrame("r", False, None, deny_message(decision))
        assert frame.message
        assert frame.message.strip()


def test_tool_answers_are_what_claude_code_reads() -> None:
    assert tool_answer(DecisionFrame("r", True), {"command": "ls"}) == {
        "content": [
            {"type": "text", "text": '{"behavior": "allow", "updatedInput": {"command": "ls"}}'}
        ]
    }
    rewritten = tool_answer(DecisionFrame("r", True, {"command": "ls -a"}), {"command": "ls"})
    assert json.loads(rewritten["content"][0]["text"])["updatedInput"] == {"command": "ls -a"}
    # An empty rewritten input is still a rewrite, not "keep the original".
    emptied = tool_answer(DecisionFrame("r", True, {}), {"command": "ls"})
    assert json.loads(emptied["content"][0]["text"])["updatedInput"] == {}
    denied = tool_answer(DecisionFrame("r", False, message="nope"), {"command": "ls"})
    assert denied == deny_answer("nope")
    assert denied == {
        "content": [{"type": "text", "text": '{"behavior": "deny", "message": "nope"}'}]
    }


def test_a_tool_answer_is_always_json_claude_code_reads_and_never_blank() -> None:
    # Found by the fuzz (tests/fuzz/test_mcp_fuzz.py): NaN and infinities, which Python's
    # JSON reads from a frame, made a text Claude Code could not read; a blank deny message
    # went through as it was.
    for tool_input in ({"n": math.nan}, {"n": [math.inf]}):
        with pytest.raises(ValueError, match="JSON compliant"):
            tool_answer(DecisionFrame("r", True), tool_input)
        with pytest.raises(ValueError, match="JSON compliant"):
            tool_answer(DecisionFrame("r", True, tool_input), {"command": "ls"})
    for blank in ("", "  \n"):
        denied = tool_answer(DecisionFrame("r", False, message=blank), {})
        assert denied == deny_answer(gate_frames.DEFAULT_DENY)
