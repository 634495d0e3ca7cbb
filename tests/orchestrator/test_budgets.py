"""Each budget axis ends a goal ``budget_exhausted``, naming the axis, before another turn."""

from __future__ import annotations

from typing import Any

import pytest

from nexo_trio.core.budget import BudgetAxis
from nexo_trio.core.goal_events import (
    AttemptCompleted,
    AttemptStarted,
    BudgetExhausted,
    DecisionMade,
)
from nexo_trio.core.goal_outcome import GoalEndKind, GoalOutcome
from nexo_trio.core.settings import Config, ReplaySettings
from nexo_trio.gate.deciders import DenyAll
from nexo_trio.testing.scenario import (
    FakeClaude,
    Step,
    Turn,
    api_error,
    frame,
    init,
    result,
    sleep,
    sleep_request,
    text,
    tool_use,
    turn,
)

from .conftest import Harness, Recorder, orchestrator

NO_LIMITS: dict[str, Any] = {
    "max_turns": None,
    "max_wall_time_s": None,
    "max_tokens": None,
    "max_cost_usd": None,
    "max_consecutive_errors": None,
    "max_consecutive_denies": None,
}


def claims_done(*steps: Step, **result_options: Any) -> Turn:
    """A turn claiming completion (the default check keeps failing: ok.txt never appears)."""
    return turn(init(), *steps, text("Done."), result("Done.", **result_options))


async def run(
    h: Harness, fake: FakeClaude, config: Config | None = None, **limits: Any
) -> tuple[GoalOutcome, Recorder]:
    """Run goal g1 with only ``limits`` set; return its outcome and events."""
    async with orchestrator(config or h.config(fake)) as (orch, rec):
        outcome = await orch.run_goal(h.goal(**{**NO_LIMITS, **limits}))
    return outcome, rec


def assert_exhausted(outcome: GoalOutcome, rec: Recorder, axis: BudgetAxis) -> None:
    """The goal ended on ``axis``, said so in one event, and started no turn after it."""
    assert outcome.kind is GoalEndKind.BUDGET_EXHAUSTED
    assert outcome.axis is axis
    (event,) = rec.of(BudgetExhausted)
    assert event.axis == axis.value
    assert event.reason == outcome.reason
    assert len(rec.of(AttemptStarted)) == len(rec.of(AttemptCompleted))


async def test_max_turns(h: Harness) -> None:
    fake = h.fake(*[claims_done() for _ in range(4)])
    outcome, rec = await run(h, fake, max_turns=2)
    assert_exhausted(outcome, rec, BudgetAxis.TURNS)
    assert outcome.reason == "max turns reached: 2 of 2"
    assert outcome.total_turns == 2
    assert len(fake.invocations()) == 2
    assert outcome.acceptance is not None
    assert not outcome.acceptance.met


async def test_max_wall_time_caps_a_long_sleep(h: Harness) -> None:
    fake = h.fake(turn(init(), sleep_request(60_000)), claims_done())
    outcome, rec = await run(h, fake, max_wall_time_s=0.8)
    assert_exhausted(outcome, rec, BudgetAxis.WALL_TIME)
    assert outcome.reason is not None
    assert outcome.reason.startswith("max wall time reached")
    assert 0.8 <= outcome.wall_time_s < 3.0
    assert outcome.elapsed_s < 3.0
    assert len(fake.invocations()) == 1


async def test_max_wall_time_counts_slow_turns(h: Harness) -> None:
    fake = h.fake(*[claims_done(sleep(0.4)) for _ in range(6)])
    outcome, rec = await run(h, fake, max_wall_time_s=0.7)
    assert_exhausted(outcome, rec, BudgetAxis.WALL_TIME)
    assert outcome.wall_time_s >= 0.7
    assert 1 <= outcome.total_turns <= 2
    # A second turn started with little wall time left may time out before the fake CLI
    # even records its start (it still counts): never more CLI runs than counted turns.
    assert 1 <= len(fake.invocations()) <= outcome.total_turns


async def test_max_tokens_counts_all_four(h: Harness) -> None:
    usage = {
        "input_tokens": 1000,
        "output_tokens": 1000,
        "cache_read_input_tokens": 1000,
        "cache_creation_input_tokens": 1000,
    }
    fake = h.fake(*[claims_done(usage=usage) for _ in range(4)])
    outcome, rec = await run(h, fake, max_tokens=7000)
    assert_exhausted(outcome, rec, BudgetAxis.TOKENS)
    assert outcome.total_turns == 2  # 4000 tokens after one turn, 8000 after two
    assert outcome.usage.total_tokens == 8000
    assert outcome.reason == "max tokens reached: 8000 of 7000"


async def test_max_cost_sums_per_run_costs(h: Harness) -> None:
    fake = h.fake(*[claims_done(cost_usd=0.6) for _ in range(4)])
    outcome, rec = await run(h, fake, max_cost_usd=1.0)
    assert_exhausted(outcome, rec, BudgetAxis.COST)
    assert outcome.total_turns == 2
    # 0.6 + 0.6, not the CLI's cumulative 0.6 + 1.2.
    assert outcome.cost_usd == pytest.approx(1.2)


async def test_max_consecutive_errors(h: Harness) -> None:
    fake = h.fake(*[turn(init(), api_error(529, "overloaded")) for _ in range(5)])
    config = h.config(fake, replay=ReplaySettings(max_retries=10))
    outcome, rec = await run(h, fake, config, max_consecutive_errors=2)
    assert_exhausted(outcome, rec, BudgetAxis.CONSECUTIVE_ERRORS)
    assert len(fake.invocations()) == 2
    assert outcome.reason == "max consecutive errors reached: 2 of 2"


def denied_result() -> Step:
    """A result frame reporting that one tool call was denied."""
    return frame(
        {
            "type": "result",
            "subtype": "success",
            "is_error": False,
            "duration_ms": 10,
            "num_turns": 2,
            "result": "I was not allowed to run that.",
            "session_id": "$SESSION_ID",
            "total_cost_usd": 0.0,
            "usage": {"input_tokens": 10, "output_tokens": 5},
            "permission_denials": [
                {
                    "tool_name": "Bash",
                    "tool_use_id": "toolu_fake0001",
                    "tool_input": {"command": "touch ok.txt"},
                }
            ],
            "terminal_reason": "completed",
        }
    )


async def test_max_consecutive_denies(h: Harness) -> None:
    # The gate denies every call (DenyAll): the fake asks it over MCP, reports the denial
    # in its result frame, and each turn adds one to the run of denials.
    steps = (init(), tool_use("Bash", {"command": "touch ok.txt"}), text("Denied."), result("No."))
    # The second turn would go on for long after its denial: it is stopped at the limit.
    slow = (init(), tool_use("Bash", {"command": "touch ok.txt"}), sleep(10), result("No."))
    fake = h.fake(turn(*steps), turn(*slow), turn(*steps))
    async with orchestrator(h.config(fake), decider=DenyAll()) as (orch, rec):
        outcome = await orch.run_goal(h.goal(**{**NO_LIMITS, "max_consecutive_denies": 2}))
    assert_exhausted(outcome, rec, BudgetAxis.CONSECUTIVE_DENIES)
    assert outcome.total_turns == 2
    assert (outcome.allowed, outcome.denied) == (0, 2)
    first, second = rec.of(AttemptCompleted)
    assert (first.kind, first.permission_denials) == ("claimed_done", 1)
    # The second denial reached the limit mid-turn: the turn was stopped right there.
    assert second.kind == "cancelled"
    assert "SIGTERM" in second.stop_actions
    assert [(d.tool_name, d.outcome) for d in rec.of(DecisionMade)] == [("Bash", "deny")] * 2
    assert outcome.reason == "max consecutive denials reached: 2 of 2"
    assert not (h.workspace() / "ok.txt").exists()


async def test_denials_reported_only_by_the_cli_count_too(h: Harness) -> None:
    # Claude Code's own rules deny without asking the gate: its permission_denials count.
    steps = (init(), denied_result())
    fake = h.fake(*[turn(*steps) for _ in range(4)])
    outcome, rec = await run(h, fake, max_consecutive_denies=2)
    assert_exhausted(outcome, rec, BudgetAxis.CONSECUTIVE_DENIES)
    assert outcome.total_turns == 2
    assert outcome.denied == 2
