"""The stream-json parser: fixture lines, malformed lines, and the lenient converter."""

from __future__ import annotations

import json
import pickle
from typing import Any

import attrs
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nexo_trio.core.events import (
    ApiRetry,
    AssistantMessage,
    CompactBoundary,
    ControlRequest,
    Frame,
    LineEvent,
    MalformedLine,
    McpServerStatus,
    ModelUsage,
    OtherBlock,
    OversizedLine,
    PermissionDenial,
    PermissionDeniedFrame,
    RateLimitEvent,
    Result,
    StreamEvent,
    SystemInit,
    SystemOther,
    SystemStatus,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolUseBlock,
    UnknownFrame,
    Usage,
    UserMessage,
)
from nexo_trio.wire.stream_json import (
    EXCERPT_BYTES,
    FAST_READ_FIELDS,
    StreamDecoder,
    parse_frame,
    parse_frame_by_converter,
    parse_frame_eagerly,
    parse_line,
)
from tests.conftest import FIXTURES
from tests.core.strategies import frame_lines, frame_objects, split_at

STREAMS = FIXTURES / "stream-json"

_TURN = [SystemInit, AssistantMessage, UserMessage, AssistantMessage, Result]
EXPECTED_TYPES: dict[str, list[type[Any]]] = {
    "allow.ndjson": _TURN,
    "deny.ndjson": _TURN,
    "iserror.ndjson": _TURN,
    "sess2.ndjson": _TURN,
    "maxturns.ndjson": [SystemInit, AssistantMessage, UserMessage, Result],
    "api_error_400.ndjson": [SystemInit, AssistantMessage, Result],
    "api_error_529.ndjson": [SystemInit, ApiRetry, AssistantMessage, Result],
    "prompt_too_long.ndjson": [SystemInit, AssistantMessage, Result],
    "resume_unknown.ndjson": [Result],
    "resume_not_uuid.ndjson": [Result],
    "partial.ndjson": [
        SystemInit,
        SystemStatus,
        *[StreamEvent] * 3,
        AssistantMessage,
        *[StreamEvent] * 3,
        UserMessage,
        SystemStatus,
        *[StreamEvent] * 3,
        AssistantMessage,
        *[StreamEvent] * 3,
        Result,
    ],
}


def parsed(name: str) -> list[Any]:
    lines = (STREAMS / name).read_bytes().splitlines()
    return [parse_line(i, line) for i, line in enumerate(lines, start=1)]


def test_every_fixture_is_listed() -> None:
    assert sorted(p.name for p in STREAMS.glob("*.ndjson")) == sorted(EXPECTED_TYPES)


@pytest.mark.parametrize("name", sorted(EXPECTED_TYPES))
def test_fixture_lines_parse_to_the_expected_frames(name: str) -> None:
    lines = (STREAMS / name).read_bytes().splitlines()
    frames = parsed(name)
    assert [type(f) for f in frames] == EXPECTED_TYPES[name]
    for line, frame in zip(lines, frames, strict=True):
        obj = json.loads(line)
        # Nothing is dropped: the frame keeps the object it was read from.
        assert frame.raw == obj
        assert frame.session_id == obj["session_id"]
        assert frame.session_id  # every real frame names its session


def test_init_frame_fields() -> None:
    init = parsed("allow.ndjson")[0]
    assert isinstance(init, SystemInit)
    assert init.session_id == "ae90ce3c-9239-47f8-a3d6-27fc90d07eb7"
    assert init.model == "claude-sonnet-4-5"
    assert init.cwd == "/home/dev/project"
    assert init.permission_mode == "default"
    assert init.claude_code_version == "2.1.332"
    assert "Bash" in init.tools
    assert init.mcp_servers == (McpServerStatus(name="perm", status="connected"),)
    assert init.raw["apiKeySource"] == "ANTHROPIC_API_KEY"  # unmodelled fields are kept
    empty = parsed("api_error_400.ndjson")[0]
    assert isinstance(empty, SystemInit)
    assert empty.mcp_servers == ()


def test_assistant_and_user_frames() -> None:
    _, tool_call, tool_result, answer, _ = parsed("allow.ndjson")
    assert isinstance(tool_call, AssistantMessage)
    assert tool_call.message_id == "msg_fake0001"
    assert tool_call.model == "claude-sonnet-4-5"
    assert tool_call.content == (
        ToolUseBlock(
            id="toolu_fake0001",
            name="Bash",
            input={"command": "echo hello-from-fake > fake_out.txt", "description": "Write a file"},
        ),
    )
    assert tool_call.usage == Usage(input_tokens=101, output_tokens=1)
    assert tool_call.parent_tool_use_id is None
    assert not tool_call.is_api_error_message
    assert isinstance(tool_result, UserMessage)
    assert tool_result.content == (
        ToolResultBlock(
            tool_use_id="toolu_fake0001", content="(Bash completed with no output)", is_error=False
        ),
    )
    assert isinstance(answer, AssistantMessage)
    assert answer.content == (TextBlock(text="Done: the task is complete."),)
    denied = parsed("iserror.ndjson")[2]
    assert isinstance(denied, UserMessage)
    block = denied.content[0]
    assert isinstance(block, ToolResultBlock)
    assert block.is_error
    assert "decider crashed" in block.content


def test_result_frame_fields() -> None:
    result = parsed("allow.ndjson")[-1]
    assert isinstance(result, Result)
    assert result.subtype == "success"
    assert not result.is_error
    assert result.result == "Done: the task is complete."
    assert result.errors == ()
    assert result.api_error_status is None
    assert result.terminal_reason == "completed"
    assert result.stop_reason == "end_turn"
    assert result.usage == Usage(input_tokens=203, output_tokens=24)
    assert result.total_cost_usd == pytest.approx(0.000969)
    assert result.num_turns == 2
    assert result.permission_denials == ()
    assert result.model_usage_since_last_result == {
        "claude-sonnet-4-5": ModelUsage(
            input_tokens=203, output_tokens=24, cost_usd=0.000969, context_window=200000
        )
    }


def test_per_run_cost_versus_cumulative_cost() -> None:
    result = parsed("sess2.ndjson")[-1]
    assert isinstance(result, Result)
    assert result.total_cost_usd == pytest.approx(0.002082)
    assert result.run_cost_usd == pytest.approx(0.001047)
    assert result.usage == Usage(input_tokens=229, output_tokens=24)


def test_permission_denials() -> None:
    result = parsed("deny.ndjson")[-1]
    assert isinstance(result, Result)
    assert result.permission_denials == (
        PermissionDenial(
            tool_name="Bash",
            tool_use_id="toolu_fake0003",
            tool_input={
                "command": "echo hello-from-fake > fake_out.txt",
                "description": "Write a file",
            },
        ),
    )


def test_api_error_frames() -> None:
    _, message, result = parsed("api_error_400.ndjson")
    assert isinstance(message, AssistantMessage)
    assert message.is_api_error_message
    assert message.api_error_status == 400
    assert message.error == "unknown"
    assert message.model == "<synthetic>"
    assert isinstance(result, Result)
    assert (result.subtype, result.is_error, result.api_error_status) == ("success", True, 400)
    assert result.terminal_reason == "api_error"
    assert result.model_usage_since_last_result == {}
    assert result.run_cost_usd == 0.0
    retry = parsed("api_error_529.ndjson")[1]
    assert retry == ApiRetry(
        session_id="8918cf3b-1640-40e6-bdae-c049d4cc61c6",
        attempt=1,
        max_retries=1,
        retry_delay_ms=582,
        error_status=529,
        error="overloaded",
    )
    too_long = parsed("prompt_too_long.ndjson")[-1]
    assert isinstance(too_long, Result)
    assert too_long.terminal_reason == "prompt_too_long"


def test_error_results_carry_errors() -> None:
    maxturns = parsed("maxturns.ndjson")[-1]
    assert isinstance(maxturns, Result)
    assert maxturns.subtype == "error_max_turns"
    assert maxturns.errors == ("Reached maximum number of turns (1)",)
    unknown = parsed("resume_unknown.ndjson")[0]
    assert isinstance(unknown, Result)
    assert unknown.subtype == "error_during_execution"
    assert unknown.errors == (
        "No conversation found with session ID: 11111111-2222-4333-8444-555555555555",
    )
    assert unknown.model_usage_since_last_result is None
    assert unknown.run_cost_usd is None


def test_partial_messages_and_status() -> None:
    frames = parsed("partial.ndjson")
    status = frames[1]
    assert isinstance(status, SystemStatus)
    assert status.status == "requesting"
    events = [f.event.get("type") for f in frames if isinstance(f, StreamEvent)]
    assert events[:3] == ["message_start", "content_block_start", "content_block_delta"]
    assert events[-1] == "message_stop"


def test_compact_boundary_metadata() -> None:
    frame = parse_frame(
        {
            "type": "system",
            "subtype": "compact_boundary",
            "session_id": "s",
            "compact_metadata": {"trigger": "manual", "pre_tokens": 150000, "post_tokens": 9000},
        }
    )
    assert frame == CompactBoundary(
        session_id="s", trigger="manual", pre_tokens=150000, post_tokens=9000
    )
    assert frame.raw["compact_metadata"]["pre_tokens"] == 150000


def test_control_requests_from_the_stdio_recording() -> None:
    recording = (FIXTURES / "stdio-control" / "multiturn_allow_setmode.frames.jsonl").read_bytes()
    outgoing = [json.loads(line)["msg"] for line in recording.splitlines()]
    outgoing = [m for m in outgoing if isinstance(m, dict) and m.get("type") == "control_request"]
    frames = [parse_frame(m) for m in outgoing]
    asks = [f for f in frames if isinstance(f, ControlRequest) and f.subtype == "can_use_tool"]
    assert len(asks) == 2
    assert asks[0].request_id == "42d11948-f20c-4df2-91f2-79cbdba324a5"
    assert asks[0].request["tool_name"] == "Bash"
    assert asks[0].request["input"] == {
        "command": "echo hello-from-fake > fake_out.txt",
        "description": "Write a file",
    }
    assert all(isinstance(f, ControlRequest) for f in frames)


def test_control_request_hand_written() -> None:
    obj = {
        "type": "control_request",
        "request_id": "r1",
        "request": {"subtype": "can_use_tool", "tool_name": "Bash", "input": {"command": "ls"}},
    }
    frame = parse_frame(obj)
    assert frame == ControlRequest(
        request_id="r1",
        subtype="can_use_tool",
        request={"subtype": "can_use_tool", "tool_name": "Bash", "input": {"command": "ls"}},
    )
    assert frame.raw == obj


def test_stream_event_and_rate_limit_event() -> None:
    event = parse_line(
        1, b'{"type":"stream_event","session_id":"s","event":{"type":"message_stop"}}'
    )
    assert event == StreamEvent(session_id="s", event={"type": "message_stop"})
    limit_obj = {
        "type": "rate_limit_event",
        "session_id": "s",
        "rate_limit_info": {"status": "allowed"},
    }
    limit = parse_frame(limit_obj)
    assert limit == RateLimitEvent(session_id="s")
    assert limit.raw["rate_limit_info"] == {"status": "allowed"}


def test_system_frames_of_other_subtypes() -> None:
    denied = parse_frame(
        {"type": "system", "subtype": "permission_denied", "session_id": "s", "tool_name": "Bash"}
    )
    assert denied == PermissionDeniedFrame(session_id="s", tool_name="Bash")
    hook = parse_frame({"type": "system", "subtype": "hook_response", "session_id": "s", "x": 1})
    assert hook == SystemOther(session_id="s", subtype="hook_response")
    assert hook.raw["x"] == 1


def test_unknown_type_keeps_raw() -> None:
    obj = {"type": "brand_new", "session_id": "s", "payload": [1, {"a": None}]}
    frame = parse_line(7, orjson.dumps(obj))
    assert frame == UnknownFrame(session_id="s", type="brand_new")
    assert isinstance(frame, UnknownFrame)
    assert frame.raw == obj
    untyped = parse_frame({"no_type": True})
    assert untyped == UnknownFrame()
    assert untyped.raw == {"no_type": True}


def test_content_blocks_of_every_kind() -> None:
    frame = parse_frame(
        {
            "type": "assistant",
            "message": {
                "content": [
                    {"type": "thinking", "thinking": "hmm", "signature": "x"},
                    {"type": "text", "text": "hi"},
                    {"type": "image", "source": {}},
                    "not a block",
                ]
            },
        }
    )
    assert isinstance(frame, AssistantMessage)
    assert frame.content[:2] == (ThinkingBlock(thinking="hmm"), TextBlock(text="hi"))
    image, stray = frame.content[2:]
    assert isinstance(image, OtherBlock)
    assert image.type == "image"
    assert image.raw == {"type": "image", "source": {}}
    assert isinstance(stray, OtherBlock)
    assert stray.raw == {"value": "not a block"}


# --------------------------------------------------------------------------- malformed lines


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b'\xff\xfe{"type":"result"}', "invalid UTF-8"),
        (b'{"type":"result","subtype":"succ', "invalid JSON"),
        (b'{"type": "result"} trailing', "invalid JSON"),
        (b"[1, 2, 3]", "not a JSON object but list"),
        (b"42", "not a JSON object but int"),
        (b"4.5", "not a JSON object but float"),
        (b'"a string"', "not a JSON object but str"),
        (b"null", "not a JSON object but NoneType"),
        (b"true", "not a JSON object but bool"),
    ],
)
def test_malformed_lines(data: bytes, error: str) -> None:
    event = parse_line(12, data)
    assert isinstance(event, MalformedLine)
    assert event.line_no == 12
    assert event.error.startswith(error)
    assert event.excerpt == data.decode("utf-8", errors="replace")


@pytest.mark.parametrize(
    ("escapes", "expected"),
    [
        ("\\ud800", "\ufffd"),  # a high surrogate alone
        ("\\udfff", "\ufffd"),  # a low one alone
        ("\\udc00\\ud800", "\ufffd\ufffd"),  # a pair the wrong way round
        ("\\uD83D x", "\ufffd x"),  # upper-case hex, then no low half
        ("\\ud83d\\ude00\\ud800", "\U0001f600\ufffd"),  # a valid pair is kept
    ],
)
def test_a_lone_surrogate_escape_keeps_the_frame(escapes: str, expected: str) -> None:
    # Valid JSON (Node's JSON.stringify writes it for half a surrogate pair), refused by
    # orjson: the whole result frame used to be dropped as malformed.
    line = (
        '{"type":"result","subtype":"success","is_error":false,"session_id":"s-1",'
        f'"result":"cut {escapes}","errors":["{escapes}"],'
        f'"nested":{{"k{escapes}":[{{"deep":"{escapes}"}}]}}}}'
    ).encode()
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(line)
    frame = parse_line(7, line)
    assert isinstance(frame, Result)
    assert frame.result == f"cut {expected}"
    assert frame.errors == (expected,)
    assert frame.session_id == "s-1"
    assert frame.raw["nested"] == {f"k{expected}": [{"deep": expected}]}
    orjson.dumps(frame.raw)  # no surrogate left anywhere: the frame can be stored as is
    decoder = StreamDecoder()
    events = decoder.feed(line[:20]) + decoder.feed(line[20:] + b"\n") + decoder.close()
    assert events == [frame]


@pytest.mark.parametrize(
    ("data", "error"),
    [
        # Raw surrogate bytes are not UTF-8 at all (only the escape is valid JSON).
        (b'{"type":"result","result":"\xed\xa0\x80"}', "invalid UTF-8"),
        # The slow path is not more lenient than orjson in anything else.
        (b'{"type":"result","result":"\\ud800","n":NaN}', "invalid JSON"),
        (b'{"type":"result","result":"\\ud800","n":1e400}', "invalid JSON"),
        (b'{"type":"result","result":"\\ud800"', "invalid JSON"),
        (b'["\\ud800"]', "not a JSON object but list"),
        (b"[" * 5000 + b'"\\ud800"' + b"]" * 5000, "invalid JSON"),
    ],
)
def test_lines_with_surrogates_that_stay_malformed(data: bytes, error: str) -> None:
    event = parse_line(3, data)
    assert isinstance(event, MalformedLine)
    assert event.error.startswith(error), event.error


def test_malformed_excerpt_is_bounded() -> None:
    data = b"{" + b"x" * 10_000
    event = parse_line(3, data)
    assert isinstance(event, MalformedLine)
    assert event.excerpt == data[:EXCERPT_BYTES].decode()
    assert "invalid JSON" in event.error


# --------------------------------------------------------------------------- lenient fields


@pytest.mark.parametrize(
    "obj",
    [
        {"type": "result", "subtype": "success", "session_id": 5, "usage": "x", "errors": None},
        {
            "type": "result",
            "subtype": "success",
            "usage": {"input_tokens": None, "output_tokens": "7"},
        },
        {
            "type": "result",
            "subtype": "success",
            "model_usage_since_last_result": {"m": {"costUSD": None}},
        },
        {
            "type": "result",
            "subtype": "success",
            "model_usage_since_last_result": {"m": "x", "n": []},
        },
        {"type": "result", "subtype": "success", "permission_denials": "x", "num_turns": 1.5},
        {"type": "result", "subtype": "success", "permission_denials": [None, 3, {"tool_name": 4}]},
        {"type": "result", "subtype": "success", "errors": [1, None, "real error"]},
        {"type": "result", "subtype": "success", "api_error_status": True, "total_cost_usd": "1"},
        {"type": "result", "subtype": ["success"], "is_error": "false", "result": {"t": 1}},
    ],
)
def test_wrong_typed_result_fields_read_as_defaults(obj: dict[str, Any]) -> None:
    frame = parse_frame(obj)
    # A result frame stays a result frame, whatever its fields hold.
    assert isinstance(frame, Result)
    assert frame.raw == obj
    assert frame.session_id is None
    assert isinstance(frame.usage, Usage)
    assert all(isinstance(n, int) for n in attrs_values(frame.usage))
    assert all(isinstance(e, str) for e in frame.errors)
    assert "None" not in frame.errors
    assert frame.is_error is False
    assert frame.result is None
    assert frame.num_turns is None
    assert frame.api_error_status is None
    assert frame.total_cost_usd is None
    for denial in frame.permission_denials:
        assert isinstance(denial, PermissionDenial)
        assert denial.tool_name is None
    for usage in (frame.model_usage_since_last_result or {}).values():
        assert usage.cost_usd == 0.0
    assert frame.run_cost_usd in (None, 0.0)


def attrs_values(usage: Usage) -> list[object]:
    return [
        usage.input_tokens,
        usage.output_tokens,
        usage.cache_read_input_tokens,
        usage.cache_creation_input_tokens,
    ]


def test_wrong_typed_scalars_do_not_become_strings_or_true() -> None:
    frame = parse_frame({"type": "result", "subtype": "success", "errors": [1, None, "boom"]})
    assert isinstance(frame, Result)
    assert "boom" in frame.errors
    assert "None" not in frame.errors
    assert "1" not in frame.errors
    assert parse_frame({"type": "result", "is_error": "false"}) == Result(is_error=False)
    assert parse_frame({"type": "result", "is_error": 1}) == Result(is_error=False)
    assert parse_frame({"type": "result", "is_error": True}) == Result(is_error=True)
    text = parse_frame(
        {"type": "assistant", "message": {"content": [{"type": "text", "text": None}]}}
    )
    assert isinstance(text, AssistantMessage)
    assert text.content == (TextBlock(text=""),)


def test_statuses_reported_as_strings_are_read() -> None:
    frame = parse_frame({"type": "result", "api_error_status": "529"})
    assert isinstance(frame, Result)
    assert frame.api_error_status == 529


@pytest.mark.parametrize("status", ["\u00b2", "5x", "", "-1", " 529"])
def test_statuses_that_are_not_numbers_read_as_none(status: str) -> None:
    frame = parse_frame({"type": "result", "subtype": "success", "api_error_status": status})
    assert isinstance(frame, Result)
    assert frame.api_error_status is None


@pytest.mark.parametrize(
    "obj",
    [
        {"type": "assistant", "session_id": ["x"], "message": "not an object"},
        {"type": "assistant", "message": {"content": "hi", "usage": [1]}},
        {"type": "assistant", "message": {"content": [{"type": "tool_use", "input": "bad"}]}},
        {"type": "assistant", "message": {"content": [{"type": []}, {"type": {"a": 1}}]}},
        {"type": "user", "message": {"content": "plain string"}},
        {"type": "user", "message": {"content": 5}},
        {"type": "system", "subtype": "init", "tools": "Bash", "mcp_servers": [1, {"name": 2}]},
        {"type": "system", "subtype": "api_retry", "attempt": None, "error_status": "x"},
        {"type": "system", "subtype": "compact_boundary", "compact_metadata": "x"},
        {"type": "system", "subtype": 5},
        {"type": "control_request", "request": [1, 2]},
        {"type": "stream_event", "event": "x"},
        {"type": 7},
    ],
)
def test_wrong_typed_fields_never_raise_and_keep_raw(obj: dict[str, Any]) -> None:
    frame = parse_frame(obj)
    assert frame.raw == obj
    assert frame.session_id is None
    assert not isinstance(frame, UnknownFrame) or obj["type"] == 7
    assert getattr(frame, "note", None) is None


def test_plain_string_content_is_a_text_block() -> None:
    frame = parse_frame({"type": "user", "session_id": "s", "message": {"content": "plain string"}})
    assert frame == UserMessage(session_id="s", content=(TextBlock(text="plain string"),))


KNOWN_TYPES = {
    "assistant": AssistantMessage,
    "user": UserMessage,
    "result": Result,
    "stream_event": StreamEvent,
    "rate_limit_event": RateLimitEvent,
    "control_request": ControlRequest,
}


@settings(max_examples=200, deadline=None)
@given(obj=frame_objects())
def test_any_object_of_a_known_type_reads_as_that_type(obj: dict[str, Any]) -> None:
    frame = parse_frame(obj)
    assert frame.raw == obj
    assert frame.session_id is None or isinstance(frame.session_id, str)
    expected = KNOWN_TYPES.get(obj["type"])
    if expected is not None:
        assert type(frame) is expected
    elif obj["type"] == "system":
        assert not isinstance(frame, UnknownFrame)
    else:
        assert isinstance(frame, UnknownFrame)


@settings(max_examples=200, deadline=None)
@given(line=frame_lines(), line_no=st.integers(min_value=1, max_value=10**9))
def test_parse_line_never_raises(line: bytes, line_no: int) -> None:
    event = parse_line(line_no, line)
    if isinstance(event, MalformedLine):
        assert event.line_no == line_no
        assert event.error
    else:
        assert not isinstance(event, OversizedLine)  # parse_line has no cap
        assert isinstance(event.raw, dict)
        assert event.raw == orjson.loads(line)


# --------------------------------------------------------------------------- decoder


@settings(max_examples=100, deadline=None)
@given(
    name=st.sampled_from(sorted(EXPECTED_TYPES)),
    points=st.lists(st.integers(min_value=0, max_value=100_000), max_size=20),
)
def test_decoder_matches_line_by_line_parsing(name: str, points: list[int]) -> None:
    data = (STREAMS / name).read_bytes()
    decoder = StreamDecoder()
    events: list[LineEvent] = []
    for chunk in split_at(data, points):
        events += decoder.feed(chunk)
    events += decoder.close()
    assert events == parsed(name)
    raws = [getattr(e, "raw", None) for e in events]
    assert raws == [json.loads(line) for line in data.splitlines()]


def test_decoder_reports_oversized_and_malformed_lines_and_goes_on() -> None:
    decoder = StreamDecoder(line_cap=40)
    events = decoder.feed(b'{"type":"rate_limit_event"}\n' + b"x" * 100 + b"\nnot json\n")
    events += decoder.feed(b'{"type":"result","subtype":"success"}')
    events += decoder.close()
    assert [type(e) for e in events] == [RateLimitEvent, OversizedLine, MalformedLine, Result]
    assert events[1] == OversizedLine(line_no=2, size=100, excerpt="x" * 100)
    malformed = events[2]
    assert isinstance(malformed, MalformedLine)
    assert malformed.line_no == 3
    assert malformed.excerpt == "not json"


# --------------------------------------------------------------------------- fast readers


def _blocks_raw(frame: object) -> list[object]:
    """The ``raw`` of a frame's content blocks (not compared by ``==``)."""
    return [getattr(block, "raw", None) for block in getattr(frame, "content", ())]


@settings(max_examples=500, deadline=None)
@given(obj=frame_objects())
def test_the_fast_readers_read_as_the_converter_does(obj: dict[str, Any]) -> None:
    fast, reference = parse_frame(obj), parse_frame_by_converter(obj)
    assert type(fast) is type(reference)
    assert fast == reference
    assert fast.raw is obj
    assert _blocks_raw(fast) == _blocks_raw(reference)


@pytest.mark.parametrize("name", sorted(EXPECTED_TYPES))
def test_the_fast_readers_read_the_fixtures_as_the_converter_does(name: str) -> None:
    for line in (STREAMS / name).read_bytes().splitlines():
        obj = orjson.loads(line)
        fast, reference = parse_frame(obj), parse_frame_by_converter(obj)
        assert (type(fast), fast) == (type(reference), reference)


def test_the_fast_readers_know_every_field() -> None:
    # They set the fields positionally: a record that gains or reorders a field must be
    # read again by hand (FAST_READ_FIELDS says which they know).
    for cls, names in FAST_READ_FIELDS.items():
        assert tuple(field.name for field in attrs.fields(cls) if field.init) == names, cls


# --------------------------------------------------------------------------- lazily built frames

LAZY_TYPES = (AssistantMessage, UserMessage, StreamEvent, SystemStatus)


def _fields(frame: Frame) -> dict[str, object]:
    return {f.name: getattr(frame, f.name) for f in attrs.fields(type(frame)) if f.init}


@settings(max_examples=500, deadline=None)
@given(obj=frame_objects(), data=st.data())
def test_lazily_built_frames_equal_eagerly_structured_ones(
    obj: dict[str, Any], data: st.DataObject
) -> None:
    eager = parse_frame_eagerly(obj)
    reference = parse_frame_by_converter(obj)
    lazy = parse_frame(obj)
    assert type(lazy) is type(eager) is type(reference)
    if type(lazy) in LAZY_TYPES:
        # Its digest as the reducer reads it, before anything else is structured...
        if isinstance(lazy, AssistantMessage | UserMessage):
            assert lazy.digest == eager.digest == reference.digest  # type: ignore[union-attr]
        # ...then its fields, one at a time in any order (the first fills them all).
        names = [f.name for f in attrs.fields(type(lazy)) if f.init]
        for name in data.draw(st.permutations(names)):
            assert getattr(lazy, name) == getattr(eager, name), name
    assert lazy == eager == reference
    assert _fields(lazy) == _fields(reference)
    assert lazy.raw is obj
    assert _blocks_raw(lazy) == _blocks_raw(reference)
    assert repr(lazy) == repr(reference)


@pytest.mark.parametrize("name", sorted(EXPECTED_TYPES))
def test_lazily_built_fixture_frames_equal_eager_ones(name: str) -> None:
    for line in (STREAMS / name).read_bytes().splitlines():
        obj = orjson.loads(line)
        lazy, eager = parse_frame(obj), parse_frame_by_converter(obj)
        if isinstance(lazy, AssistantMessage | UserMessage):
            assert lazy.digest == eager.digest  # type: ignore[union-attr]
        assert (type(lazy), lazy) == (type(eager), eager)


def test_a_lazily_built_frame_is_filled_by_evolve_pickle_and_match() -> None:
    obj = {
        "type": "assistant",
        "session_id": "s",
        "message": {"id": "m", "content": [{"type": "text", "text": "hi"}], "model": "x"},
    }
    frame = parse_frame(obj)
    assert isinstance(frame, AssistantMessage)
    assert attrs.evolve(frame, model="y").content == (TextBlock("hi"),)
    assert pickle.loads(pickle.dumps(parse_frame(obj))) == frame
    match parse_frame(obj):
        case AssistantMessage(content=(TextBlock(text=text),)):
            assert text == "hi"
        case _:
            pytest.fail("no match")
    with pytest.raises(AttributeError):
        getattr(frame, "no_such_field")  # noqa: B009


def test_a_record_built_by_its_constructor_computes_its_digest() -> None:
    usage = Usage(input_tokens=3)
    message = AssistantMessage(
        session_id="s",
        message_id="m",
        model="x",
        usage=usage,
        content=(
            TextBlock("a"),
            ToolUseBlock("1", "Bash"),
            TextBlock(""),
            ToolUseBlock("2", "Read"),
        ),
    )
    assert message.digest == ("s", "m", "x", "a", ("Bash", "Read"))
    user = UserMessage(content=(ToolResultBlock("1", "boom", True), TextBlock("x")))
    assert user.digest == (None, ((True, "boom"),))


def test_decoded_frames_keep_their_line_and_read_raw_from_it_when_asked() -> None:
    lines = (STREAMS / "partial.ndjson").read_bytes().splitlines()
    events = StreamDecoder().feed(b"\n".join(lines) + b"\n")
    assert len(events) == len(lines)
    for event, line in zip(events, lines, strict=True):
        assert not isinstance(event, MalformedLine | OversizedLine)
        if isinstance(event, AssistantMessage | UserMessage | StreamEvent | SystemStatus):
            assert event.source == line
            with pytest.raises(AttributeError):
                object.__getattribute__(event, "raw")  # not decoded again until asked
        assert event.raw == orjson.loads(line)
        assert event == parse_frame_by_converter(orjson.loads(line))
    status = parse_frame(orjson.loads(lines[1]))
    assert isinstance(status, SystemStatus)
    assert status.source is None


def test_a_control_request_keeps_its_input_exact() -> None:
    """A ``can_use_tool`` input goes back to the CLI in an allow as it came: integers past
    64 bits stay integers (orjson would make them floats), on the decoder's fast path and
    on the one a chunk holding a line over the cap takes."""
    big = 123456789012345678901234567890
    line = (
        b'{"type":"control_request","request_id":"r1","request":{"subtype":"can_use_tool",'
        b'"tool_name":"Write","input":{"n":%d,"f":1.5}}}\n' % big
    )
    oversized = b'{"type":"assistant","pad":"' + b"a" * (2 * len(line)) + b'"}\n'
    for decoder, chunk in (
        (StreamDecoder(), line),
        (StreamDecoder(line_cap=len(line) + 10), line + oversized),
    ):
        frame = decoder.feed(chunk)[0]
        assert isinstance(frame, ControlRequest)
        assert frame.request["input"] == {"n": big, "f": 1.5}
        assert type(frame.request["input"]["n"]) is int
