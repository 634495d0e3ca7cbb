"""classify(): the classification table, session id, usage and cost."""

from __future__ import annotations

from typing import Any

import attrs
import pytest

from nexo_trio.core.events import (
    AssistantMessage,
    Cancelled,
    DeadlineHit,
    Event,
    ProcessExited,
    RateLimitEvent,
    Result,
    Spawned,
    SpawnFailed,
    StderrTail,
    StdoutClosed,
    StreamEvent,
    SystemInit,
    TextBlock,
    UnknownFrame,
    Usage,
)
from nexo_trio.core.outcome import COMPACT_HINT, Cause, TurnKind, TurnOutcome
from nexo_trio.core.pricing import DEFAULT_PRICE
from nexo_trio.core.turn import parse_sleep_request
from nexo_trio.wire.stream_json import StreamDecoder, parse_frame
from tests.conftest import FIXTURES
from tests.core.strategies import outcome_of

STREAMS = FIXTURES / "stream-json"

SLEEP = '{"__nexo_sleep__": true, "duration_ms": 90000, "reason": "waiting for CI"}'


def result(**fields: Any) -> Result:
    """A result frame, read from the object the CLI would print."""
    frame = parse_frame({"type": "result", "session_id": "s-1", **fields})
    assert isinstance(frame, Result)
    return frame


def ok(text: str | None) -> Result:
    return result(subtype="success", is_error=False, result=text)


def api_error(status: int | None, text: str, **extra: Any) -> Result:
    return result(subtype="success", is_error=True, api_error_status=status, result=text, **extra)


def execution_error(**fields: Any) -> Result:
    return result(subtype="error_during_execution", is_error=True, **fields)


def turn(*middle: Event, exit_code: int = 0) -> list[Event]:
    """A whole turn: spawned, ``middle``, stdout closed, exited."""
    return [Spawned(pid=42), *middle, StdoutClosed(), ProcessExited.from_returncode(exit_code)]


@attrs.frozen
class Case:
    events: list[Event]
    kind: TurnKind
    cause: Cause
    reason: str | None = None  # a substring the reason must contain
    checks: dict[str, Any] = attrs.field(factory=dict)  # outcome fields that must be equal


NO_CONVERSATION = "No conversation found with session ID: 0d6c0000-aaaa-4bbb-8ccc-000000000000"
NOT_A_UUID = "Error: --resume requires a valid session ID or session title when used with --print."

CASES: dict[str, Case] = {
    "success": Case(
        turn(ok("All done.")),
        TurnKind.CLAIMED_DONE,
        Cause.COMPLETED,
        checks={"final_text": "All done.", "reason": None, "session_invalid": False},
    ),
    "success, exit 1 changes nothing": Case(
        turn(ok("All done."), exit_code=1), TurnKind.CLAIMED_DONE, Cause.COMPLETED
    ),
    "sleep, bare JSON": Case(
        turn(ok(SLEEP)),
        TurnKind.SLEEP,
        Cause.SLEEP_REQUESTED,
        "waiting for CI",
        {"sleep_ms": 90000, "reason": "waiting for CI"},
    ),
    "sleep, fenced JSON": Case(
        turn(ok(f"```json\n{SLEEP}\n```")),
        TurnKind.SLEEP,
        Cause.SLEEP_REQUESTED,
        checks={"sleep_ms": 90000, "reason": "waiting for CI"},
    ),
    "sleep, fenced without a language": Case(
        turn(ok(f"  ```\n{SLEEP}\n```\n")),
        TurnKind.SLEEP,
        Cause.SLEEP_REQUESTED,
        checks={"sleep_ms": 90000},
    ),
    "sleep, no reason": Case(
        turn(ok('{"__nexo_sleep__": true, "duration_ms": 0}')),
        TurnKind.SLEEP,
        Cause.SLEEP_REQUESTED,
        checks={"sleep_ms": 0, "reason": None},
    ),
    "sleep, duration is a string": Case(
        turn(ok('{"__nexo_sleep__": true, "duration_ms": "soon"}')),
        TurnKind.CONTINUE,
        Cause.INVALID_SLEEP,
        "duration_ms",
        {"sleep_ms": None},
    ),
    "sleep, negative duration": Case(
        turn(ok('{"__nexo_sleep__": true, "duration_ms": -5, "reason": "x"}')),
        TurnKind.CONTINUE,
        Cause.INVALID_SLEEP,
        "-5",
    ),
    "sleep, missing duration": Case(
        turn(ok('{"__nexo_sleep__": true}')), TurnKind.CONTINUE, Cause.INVALID_SLEEP, "None"
    ),
    "sleep, boolean duration": Case(
        turn(ok('{"__nexo_sleep__": true, "duration_ms": true}')),
        TurnKind.CONTINUE,
        Cause.INVALID_SLEEP,
    ),
    "text mentioning the marker is not a sleep": Case(
        turn(ok("I will not print __nexo_sleep__ today.")),
        TurnKind.CLAIMED_DONE,
        Cause.COMPLETED,
    ),
    **{
        f"API error {status}": Case(
            turn(api_error(status, f"API Error: {status} boom"), exit_code=1),
            TurnKind.CONTINUE,
            Cause.API_ERROR_RETRYABLE,
            f"API Error: {status} boom",
            {"api_error_status": status, "session_invalid": False, "hint": None},
        )
        for status in (429, 500, 502, 503, 504, 529)
    },
    **{
        f"API error {status}": Case(
            turn(api_error(status, f"API Error: {status} boom"), exit_code=1),
            TurnKind.ESCALATE,
            Cause.API_ERROR,
            f"{status}",
            {"api_error_status": status},
        )
        for status in (400, 401, 403)
    },
    "prompt too long, by its text": Case(
        turn(api_error(400, "Prompt is too long: 250000 tokens > 200000 maximum"), exit_code=1),
        TurnKind.CONTINUE,
        Cause.PROMPT_TOO_LONG,
        "Prompt is too long",
        {"hint": COMPACT_HINT},
    ),
    "prompt too long, by terminal_reason": Case(
        turn(
            api_error(400, "API Error: 400 request rejected", terminal_reason="prompt_too_long"),
            exit_code=1,
        ),
        TurnKind.CONTINUE,
        Cause.PROMPT_TOO_LONG,
        checks={"hint": COMPACT_HINT},
    ),
    "overloaded without a status": Case(
        turn(api_error(None, "Overloaded"), exit_code=1),
        TurnKind.CONTINUE,
        Cause.API_ERROR_RETRYABLE,
        "Overloaded",
    ),
    "unexplained API error without a status": Case(
        turn(api_error(None, "Invalid API key"), exit_code=1),
        TurnKind.ESCALATE,
        Cause.API_ERROR,
        "Invalid API key",
    ),
    "error_max_turns": Case(
        turn(
            result(
                subtype="error_max_turns",
                is_error=True,
                errors=["Reached maximum number of turns (1)"],
            )
        ),
        TurnKind.ESCALATE,
        Cause.MAX_TURNS,
        "Reached maximum number of turns (1)",
    ),
    "error_max_budget_usd": Case(
        turn(result(subtype="error_max_budget_usd", is_error=True)),
        TurnKind.ESCALATE,
        Cause.MAX_BUDGET,
        "budget",
    ),
    "unknown session in errors[]": Case(
        turn(execution_error(errors=[NO_CONVERSATION]), exit_code=1),
        TurnKind.CONTINUE,
        Cause.SESSION_INVALID,
        NO_CONVERSATION,
        {"session_invalid": True},
    ),
    "non-UUID session in errors[]": Case(
        turn(execution_error(errors=[NOT_A_UUID]), exit_code=1),
        TurnKind.CONTINUE,
        Cause.SESSION_INVALID,
        "--resume requires a valid session ID",
        {"session_invalid": True},
    ),
    "unknown session in legacy message": Case(
        turn(execution_error(message=NO_CONVERSATION), exit_code=1),
        TurnKind.CONTINUE,
        Cause.SESSION_INVALID,
        NO_CONVERSATION,
        {"session_invalid": True},
    ),
    "non-UUID session in legacy result": Case(
        turn(execution_error(result=NOT_A_UUID), exit_code=1),
        TurnKind.CONTINUE,
        Cause.SESSION_INVALID,
        checks={"session_invalid": True},
    ),
    "unknown session next to another error": Case(
        turn(execution_error(errors=["warming up", NO_CONVERSATION])),
        TurnKind.CONTINUE,
        Cause.SESSION_INVALID,
        checks={"session_invalid": True},
    ),
    "other error_during_execution": Case(
        turn(execution_error(errors=["tool crashed", "disk full"]), exit_code=1),
        TurnKind.ESCALATE,
        Cause.EXECUTION_ERROR,
        "tool crashed; disk full",
        {"session_invalid": False},
    ),
    "error_during_execution without any text": Case(
        turn(execution_error()), TurnKind.ESCALATE, Cause.EXECUTION_ERROR, "error during execution"
    ),
    "no result: cancelled": Case(
        turn(Cancelled("operator stop"), exit_code=-15),
        TurnKind.CANCELLED,
        Cause.CANCELLED,
        "operator stop",
    ),
    "no result: cancelled wins over the deadline": Case(
        turn(DeadlineHit(5.0), Cancelled()), TurnKind.CANCELLED, Cause.CANCELLED
    ),
    "no result: deadline": Case(
        turn(DeadlineHit(30.0), exit_code=143),
        TurnKind.CONTINUE,
        Cause.TIMEOUT,
        "turn timeout",
        {"exit_code": 143},
    ),
    **{
        f"no result: exit {code}": Case(
            turn(exit_code=code),
            TurnKind.CONTINUE,
            Cause.INTERRUPTED,
            "interrupted",
        )
        for code in (143, 137, 129, 130)
    },
    **{
        f"no result: returncode {code}": Case(
            turn(exit_code=code),
            TurnKind.CONTINUE,
            Cause.INTERRUPTED,
            "interrupted",
            {"exit_signal": -code, "exit_code": None},
        )
        for code in (-15, -9, -6)
    },
    "no result: clean exit": Case(
        turn(), TurnKind.CONTINUE, Cause.NO_RESULT, "stream ended without result"
    ),
    "no result: no exit seen": Case(
        [Spawned(pid=1), StdoutClosed()],
        TurnKind.CONTINUE,
        Cause.NO_RESULT,
        "stream ended without result",
    ),
    "no result: exit 2 with stderr": Case(
        turn(StderrTail("error: unknown option '--bogus'\n"), exit_code=2),
        TurnKind.CONTINUE,
        Cause.EXIT_ERROR,
        "error: unknown option '--bogus'",
        {"exit_code": 2},
    ),
    "no result: exit 1 without stderr": Case(
        turn(exit_code=1), TurnKind.CONTINUE, Cause.EXIT_ERROR, "code 1"
    ),
    "spawn failed": Case(
        [SpawnFailed("[Errno 2] No such file or directory: 'claude'")],
        TurnKind.ESCALATE,
        Cause.SPAWN_FAILED,
        "No such file or directory",
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=list(CASES))
def test_classification_table(case: Case) -> None:
    outcome = outcome_of(case.events)
    assert (outcome.kind, outcome.cause) == (case.kind, case.cause)
    if case.reason is not None:
        assert outcome.reason is not None
        assert case.reason in outcome.reason
    for name, value in case.checks.items():
        assert getattr(outcome, name) == value, name
    if outcome.kind not in (TurnKind.CLAIMED_DONE, TurnKind.SLEEP):
        assert outcome.reason  # continue, escalate and cancelled always say why
    assert outcome.session_invalid is (outcome.cause is Cause.SESSION_INVALID)
    assert (outcome.hint == COMPACT_HINT) is (outcome.cause is Cause.PROMPT_TOO_LONG)


def test_exit_2_reason_names_the_code_and_the_tail() -> None:
    outcome = outcome_of(turn(StderrTail("  fatal: bad flag  \n"), exit_code=2))
    assert outcome.reason == "claude exited with code 2 without a result: fatal: bad flag"


def test_last_stderr_tail_wins() -> None:
    outcome = outcome_of(turn(StderrTail("old"), StderrTail("new"), exit_code=3))
    assert outcome.reason is not None
    assert outcome.reason.endswith(": new")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plain text", None),
        (SLEEP, (90000, "waiting for CI")),
        (f"```json\n{SLEEP}\n```", (90000, "waiting for CI")),
        ('{"__nexo_sleep__": false, "duration_ms": 5}', None),
        ('{"__nexo_sleep__": "yes", "duration_ms": 5}', None),
        ("__nexo_sleep__ {not json", None),
        ('["__nexo_sleep__"]', None),
        ('{"__nexo_sleep__": true, "duration_ms": 5, "reason": 7}', (5, None)),
    ],
)
def test_parse_sleep_request(text: str, expected: tuple[int, str | None] | None) -> None:
    assert parse_sleep_request(text) == expected


def test_deeply_nested_sleep_lookalike_is_not_a_crash() -> None:
    text = '{"__nexo_sleep__": true, "x": ' + "[" * 100_000 + "]" * 100_000 + "}"
    assert parse_sleep_request(text) is None
    outcome = outcome_of(turn(ok(text)))
    assert outcome.kind is TurnKind.CLAIMED_DONE


def test_long_fenced_text_is_read_in_linear_time() -> None:
    # A quadratic fence pattern takes minutes on this (the suite's timeout fails it).
    text = "```json" + " " * 300_000 + "__nexo_sleep__ " + " " * 300_000 + "x"
    assert parse_sleep_request(text) is None
    fenced = "```json" + " " * 300_000 + SLEEP + " " * 300_000 + "```"
    assert parse_sleep_request(fenced) == (90000, "waiting for CI")


@pytest.mark.parametrize("duration", ['"5"', "1.5", "-1", "null", "true"])
def test_parse_sleep_request_rejects_bad_durations(duration: str) -> None:
    answer = parse_sleep_request(f'{{"__nexo_sleep__": true, "duration_ms": {duration}}}')
    assert isinstance(answer, str)
    assert answer.startswith("invalid sleep request")


def test_session_id_is_the_last_one_seen_in_any_frame() -> None:
    events: list[Event] = [
        Spawned(pid=1),
        SystemInit(session_id="first"),
        AssistantMessage(session_id="second"),
        StreamEvent(session_id=None),
        RateLimitEvent(session_id="third"),
        UnknownFrame(session_id=""),
        StdoutClosed(),
        ProcessExited(exit_code=0),
    ]
    assert outcome_of(events).session_id == "third"
    with_result = [*events[:-2], result(subtype="success", session_id="fourth"), *events[-2:]]
    assert outcome_of(with_result).session_id == "fourth"
    anonymous_result = [*events[:-2], parse_frame({"type": "result", "subtype": "success"})]
    assert outcome_of(anonymous_result).session_id == "third"


def test_usage_and_cost_come_from_the_result_frame_else_from_the_assistant_frames() -> None:
    assistant = AssistantMessage(
        session_id="s",
        content=(TextBlock("partial"),),
        usage=Usage(input_tokens=1000, output_tokens=5, cache_read_input_tokens=7),
    )
    no_result = outcome_of(turn(assistant))
    # No result frame (killed, timed out): what the assistant frames reported, the cost
    # estimated (no model named: the price table's default, its highest rates).
    assert no_result.usage == Usage(input_tokens=1000, output_tokens=5, cache_read_input_tokens=7)
    assert no_result.cost_usd == pytest.approx(DEFAULT_PRICE.cost(no_result.usage))
    assert no_result.final_text == "partial"
    assert no_result.context_tokens == 1007

    final = result(
        subtype="success",
        result="done",
        usage={
            "input_tokens": 11,
            "output_tokens": 22,
            "cache_read_input_tokens": 33,
            "cache_creation_input_tokens": 44,
        },
        total_cost_usd=9.5,
        model_usage_since_last_result={
            "claude-sonnet-4-5": {"costUSD": 0.25},
            "claude-haiku-4-5": {"costUSD": 0.125},
        },
    )
    outcome = outcome_of(turn(assistant, final))
    assert outcome.usage == Usage(11, 22, 33, 44)
    assert outcome.cost_usd == pytest.approx(0.375)
    assert outcome.cumulative_cost_usd == 9.5
    assert outcome.final_text == "done"


def replay_file(name: str, exit_code: int = 0) -> TurnOutcome:
    decoder = StreamDecoder()
    events: list[Event] = [Spawned(pid=7)]
    events += decoder.feed((STREAMS / name).read_bytes())
    events += decoder.close()
    return outcome_of([*events, StdoutClosed(), ProcessExited.from_returncode(exit_code)])


def test_resumed_turn_costs_its_own_run_not_the_cumulative_total() -> None:
    outcome = replay_file("sess2.ndjson")
    assert outcome.kind is TurnKind.CLAIMED_DONE
    assert outcome.cost_usd == pytest.approx(0.001047)
    assert outcome.cumulative_cost_usd == pytest.approx(0.002082)
    assert outcome.usage == Usage(input_tokens=229, output_tokens=24)
    assert outcome.session_id == "11111111-2222-4333-8444-555555555555"
    assert outcome.num_turns == 2
    assert outcome.tool_uses == 1
    assert outcome.final_text == "Done: the task is complete."


def test_denials_are_reported() -> None:
    outcome = replay_file("deny.ndjson")
    assert outcome.kind is TurnKind.CLAIMED_DONE
    assert [d.tool_name for d in outcome.permission_denials] == ["Bash"]


@pytest.mark.parametrize(
    ("name", "kind", "cause"),
    [
        ("api_error_400.ndjson", TurnKind.ESCALATE, Cause.API_ERROR),
        ("api_error_529.ndjson", TurnKind.CONTINUE, Cause.API_ERROR_RETRYABLE),
        ("prompt_too_long.ndjson", TurnKind.CONTINUE, Cause.PROMPT_TOO_LONG),
        ("resume_unknown.ndjson", TurnKind.CONTINUE, Cause.SESSION_INVALID),
        ("resume_not_uuid.ndjson", TurnKind.CONTINUE, Cause.SESSION_INVALID),
        ("maxturns.ndjson", TurnKind.ESCALATE, Cause.MAX_TURNS),
    ],
)
def test_recorded_errors(name: str, kind: TurnKind, cause: Cause) -> None:
    outcome = replay_file(name, exit_code=1)
    assert (outcome.kind, outcome.cause) == (kind, cause)
