"""Hypothesis strategies for the turn reducer's events."""

from __future__ import annotations

import itertools
import json

from hypothesis import strategies as st

from nexo_trio.core.events import (
    ApiRetry,
    AssistantMessage,
    Cancelled,
    CompactBoundary,
    ContentBlock,
    ControlRequest,
    DeadlineHit,
    EngineEvent,
    Event,
    Frame,
    LineEvent,
    MalformedLine,
    McpServerStatus,
    ModelUsage,
    OtherBlock,
    OversizedLine,
    PermissionDenial,
    PermissionDeniedFrame,
    ProcessExited,
    RateLimitEvent,
    Result,
    Spawned,
    SpawnFailed,
    StderrTail,
    StdoutClosed,
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
from nexo_trio.core.outcome import TurnOutcome
from nexo_trio.core.turn import INITIAL_STATE, TurnState, classify, reduce

session_ids: st.SearchStrategy[str | None] = st.sampled_from(
    [None, "", "s-1", "s-2", "11111111-2222-4333-8444-555555555555"]
)
small_ints: st.SearchStrategy[int] = st.integers(min_value=0, max_value=10**6)
short_text: st.SearchStrategy[str] = st.text(max_size=12)

usages: st.SearchStrategy[Usage] = st.builds(
    Usage,
    input_tokens=small_ints,
    output_tokens=small_ints,
    cache_read_input_tokens=small_ints,
    cache_creation_input_tokens=small_ints,
)

json_values: st.SearchStrategy[object] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53), max_value=2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
json_objects: st.SearchStrategy[dict[str, object]] = st.dictionaries(
    st.text(max_size=6), json_values, max_size=4
)

content_blocks: st.SearchStrategy[ContentBlock] = st.one_of(
    st.builds(TextBlock, text=short_text),
    st.builds(ThinkingBlock, thinking=short_text),
    st.builds(ToolUseBlock, id=short_text, name=st.sampled_from(["Bash", "Read", "Edit"])),
    st.builds(ToolResultBlock, tool_use_id=short_text, content=short_text, is_error=st.booleans()),
    st.builds(OtherBlock, type=st.sampled_from([None, "image", "server_tool_use"])),
)

# Texts a result frame may carry: each one exercises a classification rule.
SLEEP_TEXT = '{"__nexo_sleep__": true, "duration_ms": 1500, "reason": "wait for CI"}'
RESULT_TEXTS = [
    None,
    "",
    "Done: the task is complete.",
    SLEEP_TEXT,
    "```json\n" + SLEEP_TEXT + "\n```",
    '{"__nexo_sleep__": true, "duration_ms": "soon"}',
    "API Error: 529 Overloaded",
    "API Error: 400 boom",
    "Prompt is too long",
    "No conversation found with session ID: abc",
    "Error: --resume requires a valid session ID",
    "request timed out",
]
ERRORS = [
    (),
    ("boom",),
    ("No conversation found with session ID: abc",),
    ("Reached maximum number of turns (1)",),
    ("first", "second"),
]
SUBTYPES = [
    None,
    "success",
    "error_max_turns",
    "error_max_budget_usd",
    "error_during_execution",
    "error_something_new",
    "success_with_flair",
]

model_usages: st.SearchStrategy[dict[str, ModelUsage] | None] = st.none() | st.dictionaries(
    st.sampled_from(["claude-sonnet-4-5", "claude-haiku-4-5"]),
    st.builds(ModelUsage, cost_usd=st.floats(min_value=0, max_value=10)),
    max_size=2,
)

results: st.SearchStrategy[Result] = st.builds(
    Result,
    session_id=session_ids,
    subtype=st.sampled_from(SUBTYPES),
    is_error=st.booleans(),
    result=st.sampled_from(RESULT_TEXTS),
    errors=st.sampled_from(ERRORS),
    api_error_status=st.sampled_from([None, 400, 401, 403, 429, 500, 502, 503, 504, 529]),
    terminal_reason=st.sampled_from([None, "completed", "prompt_too_long", "api_error"]),
    usage=usages,
    total_cost_usd=st.none() | st.floats(min_value=0, max_value=100),
    model_usage_since_last_result=model_usages,
    num_turns=st.none() | st.integers(min_value=0, max_value=50),
    permission_denials=st.lists(
        st.builds(PermissionDenial, tool_name=st.sampled_from(["Bash", None])), max_size=2
    ).map(tuple),
    raw=st.sampled_from([{}, {"message": "No conversation found with session ID: x"}]),
)

noise_frames: st.SearchStrategy[Frame] = st.one_of(
    st.builds(UnknownFrame, session_id=session_ids, type=st.sampled_from([None, "new_kind"])),
    st.builds(StreamEvent, session_id=session_ids, event=json_objects),
    st.builds(RateLimitEvent, session_id=session_ids),
)

other_frames: st.SearchStrategy[Frame] = st.one_of(
    st.builds(
        SystemInit,
        session_id=session_ids,
        model=st.sampled_from([None, "claude-sonnet-4-5"]),
        tools=st.lists(st.sampled_from(["Bash", "Read"]), max_size=2).map(tuple),
        mcp_servers=st.lists(
            st.builds(McpServerStatus, name=short_text, status=st.sampled_from(["connected"])),
            max_size=2,
        ).map(tuple),
    ),
    st.builds(SystemStatus, session_id=session_ids, status=st.sampled_from([None, "compacting"])),
    st.builds(
        CompactBoundary,
        session_id=session_ids,
        pre_tokens=st.none() | small_ints,
        post_tokens=st.none() | small_ints,
    ),
    st.builds(
        ApiRetry, session_id=session_ids, attempt=small_ints, error_status=st.none() | small_ints
    ),
    st.builds(
        PermissionDeniedFrame, session_id=session_ids, tool_name=st.sampled_from([None, "Bash"])
    ),
    st.builds(SystemOther, session_id=session_ids, subtype=st.sampled_from([None, "hook"])),
    st.builds(
        AssistantMessage,
        session_id=session_ids,
        content=st.lists(content_blocks, max_size=3).map(tuple),
        usage=st.none() | usages,
        is_api_error_message=st.booleans(),
        api_error_status=st.none() | st.sampled_from([400, 529]),
    ),
    st.builds(
        UserMessage, session_id=session_ids, content=st.lists(content_blocks, max_size=2).map(tuple)
    ),
    st.builds(
        ControlRequest,
        session_id=session_ids,
        request_id=st.none() | short_text,
        subtype=st.sampled_from([None, "can_use_tool"]),
    ),
)

non_result_frames: st.SearchStrategy[Frame] = st.one_of(other_frames, noise_frames)
frames: st.SearchStrategy[Frame] = st.one_of(non_result_frames, results)

bad_lines: st.SearchStrategy[LineEvent] = st.one_of(
    st.builds(MalformedLine, line_no=small_ints, excerpt=short_text, error=short_text),
    st.builds(OversizedLine, line_no=small_ints, size=small_ints),
)
noise: st.SearchStrategy[Event] = st.one_of(noise_frames, bad_lines)
line_events: st.SearchStrategy[LineEvent] = st.one_of(frames, bad_lines)

process_exits: st.SearchStrategy[ProcessExited] = st.one_of(
    st.builds(ProcessExited, exit_code=st.sampled_from([0, 1, 2, 137, 143]), signal=st.none()),
    st.builds(ProcessExited, exit_code=st.none(), signal=st.sampled_from([9, 15])),
    st.integers(min_value=-15, max_value=255).map(ProcessExited.from_returncode),
)

engine_events: st.SearchStrategy[EngineEvent] = st.one_of(
    st.builds(Spawned, pid=st.integers(min_value=1, max_value=2**22)),
    st.builds(SpawnFailed, reason=st.sampled_from(["No such file or directory", "EACCES"])),
    st.just(StdoutClosed()),
    process_exits,
    st.builds(DeadlineHit, timeout_s=st.floats(min_value=0.001, max_value=600)),
    st.builds(Cancelled, reason=st.sampled_from(["cancelled", "operator"])),
    st.builds(StderrTail, text=short_text),
)

events: st.SearchStrategy[Event] = st.one_of(line_events, engine_events)
event_lists: st.SearchStrategy[list[Event]] = st.lists(events, max_size=25)


scalars: st.SearchStrategy[object] = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**53), max_value=2**53),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=6),
    st.sampled_from(["529", "false", "success"]),
)


def _optional(keys: dict[str, st.SearchStrategy[object]]) -> st.SearchStrategy[dict[str, object]]:
    return st.fixed_dictionaries({}, optional=keys)


def _or_scalar(strategy: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
    return st.one_of(strategy, scalars)


def frame_objects() -> st.SearchStrategy[dict[str, object]]:
    """Decoded stream-json objects of every known type, each field of any (often wrong) type."""
    usage = _optional(
        dict.fromkeys(
            (
                "input_tokens",
                "output_tokens",
                "cache_read_input_tokens",
                "cache_creation_input_tokens",
            ),
            scalars,
        )
    )
    model_usage = st.dictionaries(
        st.sampled_from(["claude-sonnet-4-5", "claude-haiku-4-5"]),
        _or_scalar(
            _optional(
                dict.fromkeys(("costUSD", "inputTokens", "outputTokens", "contextWindow"), scalars)
            )
        ),
        max_size=2,
    )
    block = _optional(
        {
            "type": _or_scalar(
                st.sampled_from(["text", "thinking", "tool_use", "tool_result", "image"])
            )
            | st.just([]),
            "text": scalars,
            "thinking": scalars,
            "id": scalars,
            "name": scalars,
            "input": json_values,
            "tool_use_id": scalars,
            "content": json_values,
            "is_error": scalars,
        }
    )
    message = _optional(
        {
            "content": _or_scalar(st.lists(_or_scalar(block), max_size=3)),
            "usage": _or_scalar(usage),
            "id": scalars,
            "model": scalars,
            "stop_reason": scalars,
        }
    )
    keyed: dict[str, st.SearchStrategy[object]] = dict.fromkeys(
        (
            "session_id",
            "is_error",
            "result",
            "api_error_status",
            "terminal_reason",
            "total_cost_usd",
            "num_turns",
            "duration_ms",
            "request_id",
            "attempt",
            "max_retries",
            "retry_delay_ms",
            "error_status",
            "error",
            "status",
            "model",
            "cwd",
            "permissionMode",
            "parent_tool_use_id",
            "is_api_error_message",
            "tool_name",
        ),
        scalars,
    )
    keyed |= {
        "errors": _or_scalar(st.lists(scalars, max_size=3)),
        "tools": _or_scalar(st.lists(scalars, max_size=3)),
        "usage": _or_scalar(usage),
        "model_usage_since_last_result": _or_scalar(model_usage),
        "permission_denials": _or_scalar(
            st.lists(
                _or_scalar(
                    _optional(
                        {"tool_name": scalars, "tool_use_id": scalars, "tool_input": json_values}
                    )
                ),
                max_size=2,
            )
        ),
        "mcp_servers": _or_scalar(
            st.lists(_or_scalar(_optional({"name": scalars, "status": scalars})), max_size=2)
        ),
        "message": _or_scalar(message),
        "request": _or_scalar(
            _optional({"subtype": scalars, "tool_name": scalars, "input": json_values})
        ),
        "event": _or_scalar(json_objects),
        "compact_metadata": _or_scalar(
            _optional({"trigger": scalars, "pre_tokens": scalars, "post_tokens": scalars})
        ),
    }
    kind = st.sampled_from(
        [
            "system",
            "assistant",
            "user",
            "result",
            "stream_event",
            "rate_limit_event",
            "control_request",
            "something_else",
        ]
    )
    subtype = st.sampled_from(
        ["init", "status", "compact_boundary", "api_retry", "permission_denied", "hook", "success"]
    )
    return st.builds(
        lambda body, k, sub: (
            {**body, "type": k, "subtype": sub}
            if k in ("system", "result")
            else {**body, "type": k}
        ),
        _optional(keyed),
        kind,
        subtype,
    )


def frame_lines() -> st.SearchStrategy[bytes]:
    """Lines of a stdout stream: JSON frames, fragments of them, and garbage."""
    encoded = frame_objects().map(lambda o: json.dumps(o).encode())
    return st.one_of(
        encoded,
        encoded.flatmap(lambda b: st.integers(0, len(b)).map(lambda n: b[:n])),
        st.binary(max_size=40),
        st.sampled_from([b"[1, 2]", b"5", b'"str"', b"null", b"\xff\xfe{", b"   ", b""]),
    )


def fold(evs: list[Event]) -> TurnState:
    """The state after feeding ``evs`` to the reducer from the initial state."""
    state = INITIAL_STATE
    for event in evs:
        state = reduce(state, event)
    return state


def outcome_of(evs: list[Event]) -> TurnOutcome:
    """``classify`` of the folded events."""
    return classify(fold(evs))


def split_at(data: bytes, points: list[int]) -> list[bytes]:
    """``data`` cut at ``points`` (taken modulo its length + 1): chunks that join back to it."""
    cuts = sorted({p % (len(data) + 1) for p in points})
    return [data[a:b] for a, b in itertools.pairwise([0, *cuts, len(data)])]
