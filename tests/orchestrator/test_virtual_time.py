"""The goal loop on virtual time, with a scripted turn runner instead of a subprocess:
hour-long sleeps and wall-time budgets, and custom verifiers (including one that raises)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trio.testing

from nexo_trio.core.budget import BudgetAxis
from nexo_trio.core.command import ClaudeCommand
from nexo_trio.core.goal import Budget, CustomCheck, Goal
from nexo_trio.core.goal_events import AcceptanceChecked, SessionBound, Sleeping, WokeUp
from nexo_trio.core.goal_outcome import GoalEndKind
from nexo_trio.core.outcome import Cause, TurnKind, TurnOutcome
from nexo_trio.core.settings import Config
from nexo_trio.core.turn import INITIAL_STATE
from nexo_trio.engine.supervisor import TurnResult
from nexo_trio.orchestrator.acceptance import CheckContext, CustomResult, VerifierRegistry

from .conftest import orchestrator

DONE = TurnOutcome(kind=TurnKind.CLAIMED_DONE, cause=Cause.COMPLETED, final_text="Done.")


def sleep_for(ms: int) -> TurnOutcome:
    """A turn asking to be woken up in ``ms`` milliseconds."""
    return TurnOutcome(
        kind=TurnKind.SLEEP, cause=Cause.SLEEP_REQUESTED, sleep_ms=ms, reason="waiting"
    )


@attrs.define
class ScriptedRunner:
    """Plays one outcome per turn, each taking ``duration`` seconds (of the clock in use)."""

    outcomes: list[TurnOutcome]
    duration: float = 1.0
    commands: list[ClaudeCommand] = attrs.Factory(list)

    async def __call__(self, command: ClaudeCommand, **options: Any) -> TurnResult:
        self.commands.append(command)
        await trio.sleep(self.duration)
        outcome = self.outcomes.pop(0)
        return TurnResult(
            outcome=outcome,
            state=INITIAL_STATE,
            argv=tuple(command.argv()),
            pid=None,
            duration_s=self.duration,
        )


def config(tmp_path: Path) -> Config:
    """A config whose workspaces live under ``tmp_path`` (no binary is ever run)."""
    return Config(state_dir=str(tmp_path / "state"), workspace_root=str(tmp_path / "ws"))


def goal(**budget: Any) -> Goal:
    """A goal without acceptance checks (a claimed completion is enough)."""
    return Goal(id="g1", description="Wait for it.", budget=Budget(**budget))


async def test_an_hour_long_sleep_wakes_up(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    runner = ScriptedRunner([sleep_for(3_600_000), DONE])
    async with orchestrator(config(tmp_path), turn_runner=runner) as (orch, rec):
        started = trio.current_time()
        outcome = await orch.run_goal(goal(max_wall_time_s=2 * 3600))
        took = trio.current_time() - started

    assert outcome.kind is GoalEndKind.DONE
    assert took == pytest.approx(3600 + 2 * runner.duration)
    assert [e.duration_ms for e in rec.of(Sleeping)] == [3_600_000]
    assert [e.slept_ms for e in rec.of(WokeUp)] == [3_600_000]
    second = runner.commands[1].prompt
    assert second.startswith("[WAKE UP] You asked to sleep for 3600s (waiting).")


async def test_a_sleep_never_outlasts_the_wall_time_budget(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    runner = ScriptedRunner([sleep_for(2 * 3_600_000), DONE])
    async with orchestrator(config(tmp_path), turn_runner=runner) as (orch, _):
        outcome = await orch.run_goal(goal(max_wall_time_s=1800))

    assert outcome.kind is GoalEndKind.BUDGET_EXHAUSTED
    assert outcome.axis is BudgetAxis.WALL_TIME
    assert outcome.wall_time_s == pytest.approx(1800)
    assert len(runner.commands) == 1


async def test_wall_time_counts_every_turn(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    # Ten-minute turns that never finish the job, under a 25-minute budget.
    never = TurnOutcome(kind=TurnKind.CONTINUE, cause=Cause.NO_RESULT, reason="no result")
    runner = ScriptedRunner([never] * 5, duration=600)
    async with orchestrator(config(tmp_path), turn_runner=runner) as (orch, _):
        outcome = await orch.run_goal(
            goal(max_wall_time_s=1500, max_turns=None, max_consecutive_errors=None)
        )
    assert outcome.axis is BudgetAxis.WALL_TIME
    assert len(runner.commands) == 3  # at 0, 10 and 20 minutes; at 30 the budget is spent
    assert outcome.wall_time_s == pytest.approx(1800)


async def test_a_raising_custom_verifier_fails_its_check_not_the_goal(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    calls: list[str] = []

    async def flaky(ctx: CheckContext) -> CustomResult:
        calls.append(ctx.goal_id)
        if len(calls) == 1:
            raise RuntimeError("verifier bug")
        return CustomResult(True, "fine now")

    registry = VerifierRegistry({"flaky": flaky})
    runner = ScriptedRunner([DONE, DONE])
    checked = Goal(id="g1", description="Be checked.", acceptance=(CustomCheck(name="flaky"),))
    async with orchestrator(config(tmp_path), turn_runner=runner, registry=registry) as (
        orch,
        rec,
    ):
        outcome = await orch.run_goal(checked)

    assert outcome.kind is GoalEndKind.DONE
    assert outcome.total_turns == 2
    first, second = rec.of(AcceptanceChecked)
    assert not first.met
    assert "verifier bug" in first.results[0].message
    assert second.met
    assert "verifier bug" in runner.commands[1].prompt
    assert rec.of(SessionBound) == []  # the scripted runner never names a session
