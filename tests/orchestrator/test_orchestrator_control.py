"""Operator control (pause, resume, cancel, interrupt, max turns), per-goal state cleanup on
every path, and many goals at once in one Orchestrator."""

from __future__ import annotations

from typing import Any

import attrs
import psutil
import pytest
import trio
import trio.testing

from nexo_trio.core.command import ClaudeCommand
from nexo_trio.core.goal import Goal
from nexo_trio.core.goal_events import (
    AcceptanceChecked,
    AttemptCompleted,
    AttemptStarted,
    CancelRequested,
    GoalCompleted,
    GoalPaused,
    GoalResumed,
    GoalStarted,
    InterruptQueued,
    MaxTurnsRaised,
    SessionBound,
)
from nexo_trio.core.goal_outcome import GoalEndKind
from nexo_trio.core.prompt import INTERRUPT_CLOSE, INTERRUPT_OPEN
from nexo_trio.engine.supervisor import TurnResult, run_turn
from nexo_trio.orchestrator.orchestrator import Orchestrator
from nexo_trio.testing.scenario import (
    FakeClaude,
    Turn,
    api_error,
    bash,
    hang,
    init,
    result,
    sleep,
    text,
    turn,
)

from .conftest import DONE_FILE, Harness, kinds, orchestrator, wait_gone


def claims_done(*steps: Any) -> Turn:
    """A turn that claims completion without doing the work (acceptance fails)."""
    return turn(init(), *steps, text("Done."), result("Done."))


def does_it(*steps: Any) -> Turn:
    """A turn that creates ok.txt and claims completion."""
    return turn(init(), *steps, bash(f"touch {DONE_FILE}"), text("Done."), result("Done."))


async def assert_gone(orch: Orchestrator, goal_id: str) -> None:
    """No trace of the goal is left in the orchestrator: every control says unknown."""
    assert goal_id not in orch.running()
    assert orch.handle(goal_id) is None
    assert not await orch.cancel_goal(goal_id)
    assert not await orch.pause_goal(goal_id)
    assert not await orch.resume_goal(goal_id)
    assert not await orch.interrupt_goal(goal_id, "hello?")
    assert not await orch.set_goal_max_turns(goal_id, 100)


# --------------------------------------------------------------------------- pause / resume


async def test_pause_before_start_holds_the_first_turn_until_resume(h: Harness) -> None:
    fake = h.fake(does_it())
    async with orchestrator(h.config(fake)) as (orch, rec):
        handle = await orch.start_goal(h.goal())
        assert await orch.pause_goal("g1")
        assert not await orch.pause_goal("g1")  # already paused
        await trio.testing.wait_all_tasks_blocked()  # whatever could start has started
        assert fake.invocations() == []
        assert rec.of(AttemptStarted) == []
        assert orch.running() == ["g1"]
        assert await orch.resume_goal("g1")
        assert not await orch.resume_goal("g1")  # not paused any more
        outcome = await handle.wait()

    assert outcome.kind is GoalEndKind.DONE
    assert outcome.total_turns == 1
    seen = kinds(rec.events())
    assert seen.index("goal_paused") < seen.index("goal_resumed") < seen.index("attempt_started")
    assert len(rec.of(GoalPaused)) == len(rec.of(GoalResumed)) == 1


async def test_pause_during_a_turn_lets_it_finish_and_holds_the_next(h: Harness) -> None:
    fake = h.fake(claims_done(sleep(0.4)), does_it())
    async with orchestrator(h.config(fake)) as (orch, rec):
        handle = await orch.start_goal(h.goal())
        await rec.wait_for(SessionBound)
        assert await orch.pause_goal("g1")
        first = await rec.wait_for(AttemptCompleted, lambda e: e.turn == 1)
        # The running turn was not killed: it ended on its own, and acceptance ran.
        assert (first.kind, first.exit_code, first.stop_actions) == ("claimed_done", 0, ())
        await rec.wait_for(AcceptanceChecked, lambda e: e.turn == 1 and not e.met)
        await trio.testing.wait_all_tasks_blocked()  # whatever could start has started
        assert len(fake.invocations()) == 1
        assert len(rec.of(AttemptStarted)) == 1
        assert await orch.resume_goal("g1")
        outcome = await handle.wait()

    assert outcome.kind is GoalEndKind.DONE
    assert outcome.total_turns == 2
    assert len(fake.invocations()) == 2


# --------------------------------------------------------------------------- cancel


async def test_cancel_reaches_a_hanging_turn(h: Harness) -> None:
    fake = h.fake(turn(init(), hang()))
    async with orchestrator(h.config(fake)) as (orch, rec):
        handle = await orch.start_goal(h.goal())
        await rec.wait_for(SessionBound)
        (invocation,) = fake.invocations()
        pid = int(invocation["pid"])
        assert psutil.pid_exists(pid)
        started = trio.current_time()
        assert await orch.cancel_goal("g1", "stop it")
        with trio.fail_after(5):
            outcome = await handle.wait()
        took = trio.current_time() - started
        await wait_gone(pid, timeout=1.0)
        ledger = await orch.store.events("g1")
        await assert_gone(orch, "g1")

    assert outcome.kind is GoalEndKind.CANCELLED
    assert outcome.reason == "stop it"
    assert took < 2.0  # SIGTERM is enough for the fake: no kill grace waited out
    (attempt,) = rec.of(AttemptCompleted)
    assert attempt.kind == "cancelled"
    assert "SIGTERM" in attempt.stop_actions
    recorded = [e.kind for e in ledger]
    assert recorded.count("cancel_requested") == 1
    assert recorded.count("goal_completed") == 1
    assert recorded[-1] == "goal_completed"
    assert recorded.index("cancel_requested") < recorded.index("goal_completed")
    assert ledger[-1].data["outcome"]["outcome"]["kind"] == "cancelled"
    (requested,) = rec.of(CancelRequested)
    assert requested.reason == "stop it"


async def test_cancel_before_start(h: Harness) -> None:
    fake = h.fake(does_it())
    async with orchestrator(h.config(fake)) as (orch, rec):
        handle = await orch.start_goal(h.goal())
        assert await orch.cancel_goal("g1")
        assert not await orch.cancel_goal("g1")  # already requested
        outcome = await handle.wait()
    assert outcome.kind is GoalEndKind.CANCELLED
    assert fake.invocations() == []
    assert len(rec.of(GoalCompleted)) == 1


async def test_cancel_a_goal_waiting_for_a_slot(h: Harness) -> None:
    fakes = {"busy": h.fake(does_it(sleep(0.5)), name="busy")}
    fakes["queued"] = h.fake(does_it(), name="queued")
    config = h.config(fakes["busy"], max_concurrent_goals=1)
    async with orchestrator(config, goal_env=plan_for(fakes)) as (orch, rec):
        busy = await orch.start_goal(h.goal("busy"))
        await rec.wait_for(SessionBound, lambda e: e.goal_id == "busy")
        queued = await orch.start_goal(h.goal("queued"))
        await trio.testing.wait_all_tasks_blocked()  # whatever could start has started
        assert orch.running() == ["busy", "queued"]
        assert not any(e.goal_id == "queued" for e in rec.of(GoalStarted))
        assert await orch.cancel_goal("queued")
        with trio.fail_after(1):
            cancelled = await queued.wait()
        await assert_gone(orch, "queued")
        done = await busy.wait()

    assert cancelled.kind is GoalEndKind.CANCELLED
    assert done.kind is GoalEndKind.DONE
    assert fakes["queued"].invocations() == []
    assert [e.goal_id for e in rec.of(GoalCompleted)] == ["queued", "busy"]


# --------------------------------------------------------------------------- interrupts


async def test_interrupts_reach_the_next_work_turn_in_order_and_once(h: Harness) -> None:
    fake = h.fake(claims_done(sleep(0.3)), claims_done(), does_it())
    async with orchestrator(h.config(fake)) as (orch, rec):
        handle = await orch.start_goal(h.goal())
        await rec.wait_for(AttemptStarted, lambda e: e.turn == 1)
        assert await orch.interrupt_goal("g1", "use tabs")
        assert await orch.interrupt_goal("g1", "  and write tests  ")
        with pytest.raises(ValueError, match="non-empty"):
            await orch.interrupt_goal("g1", "   ")
        outcome = await handle.wait()

    assert outcome.kind is GoalEndKind.DONE
    first, second, third = (i["prompt"] for i in fake.invocations())
    block = f"{INTERRUPT_OPEN}\nuse tabs\n\nand write tests\n{INTERRUPT_CLOSE}"
    assert INTERRUPT_OPEN not in first
    assert second.startswith(block)
    assert second.count(INTERRUPT_OPEN) == 1
    assert INTERRUPT_OPEN not in third
    assert "use tabs" not in third
    assert [e.message for e in rec.of(InterruptQueued)] == ["use tabs", "  and write tests  "]


# --------------------------------------------------------------------------- max turns


async def test_raising_max_turns_lets_the_goal_continue(h: Harness) -> None:
    fake = h.fake(claims_done(sleep(0.3)), does_it())
    async with orchestrator(h.config(fake)) as (orch, rec):
        handle = await orch.start_goal(h.goal(max_turns=1))
        await rec.wait_for(AttemptStarted, lambda e: e.turn == 1)
        with pytest.raises(ValueError, match="only be raised"):
            await orch.set_goal_max_turns("g1", 0)
        assert await orch.set_goal_max_turns("g1", 3)
        with pytest.raises(ValueError, match="only be raised"):
            await orch.set_goal_max_turns("g1", 2)
        outcome = await handle.wait()

    assert outcome.kind is GoalEndKind.DONE
    assert outcome.total_turns == 2
    assert [e.max_turns for e in rec.of(MaxTurnsRaised)] == [3]


async def test_without_the_raise_the_same_goal_ends_at_one_turn(h: Harness) -> None:
    fake = h.fake(claims_done(), does_it())
    async with orchestrator(h.config(fake)) as (orch, _):
        outcome = await orch.run_goal(h.goal(max_turns=1))
    assert outcome.kind is GoalEndKind.BUDGET_EXHAUSTED
    assert outcome.total_turns == 1


async def test_control_of_an_unknown_goal_returns_false(h: Harness) -> None:
    async with orchestrator(h.config()) as (orch, rec):
        await assert_gone(orch, "nope")
    assert rec.events() == []


# --------------------------------------------------------------------------- many goals


@attrs.define
class CountingRunner:
    """A turn runner counting the turns in flight; it raises for the goal ``fail``."""

    fail: str | None = None
    in_flight: int = 0
    peak: int = 0
    turns: int = 0

    async def __call__(self, command: ClaudeCommand, **options: Any) -> TurnResult:
        assert command.cwd is not None
        if command.cwd.name == self.fail:
            raise RuntimeError("the turn runner broke")
        self.in_flight += 1
        self.turns += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            return await run_turn(command, **options)
        finally:
            self.in_flight -= 1


def per_goal_fakes(h: Harness, goal_ids: list[str], *turns: Turn) -> dict[str, FakeClaude]:
    """One fake per goal, each with its own scenario copy and state."""
    return {goal_id: h.fake(*turns, name=goal_id) for goal_id in goal_ids}


def plan_for(fakes: dict[str, FakeClaude]) -> Any:
    """A goal_env callback pointing each goal's turns at its own fake."""

    def env(goal: Goal) -> dict[str, str | None]:
        return {**fakes[goal.id].env}

    return env


@pytest.mark.parametrize("limit", [4, 10])
async def test_ten_goals_at_once_respect_the_limit(h: Harness, limit: int) -> None:
    ids = [f"goal-{n:02d}" for n in range(10)]
    fakes = per_goal_fakes(h, ids, does_it(sleep(0.3)))
    runner = CountingRunner()
    config = h.config(fakes[ids[0]], max_concurrent_goals=limit)
    async with orchestrator(config, turn_runner=runner, goal_env=plan_for(fakes)) as (
        orch,
        rec,
    ):
        handles = [await orch.start_goal(h.goal(goal_id)) for goal_id in ids]
        assert sorted(orch.running()) == ids
        outcomes = [await handle.wait() for handle in handles]
        assert orch.running() == []

    assert [o.kind for o in outcomes] == [GoalEndKind.DONE] * 10
    assert [o.goal_id for o in outcomes] == ids
    assert runner.turns == 10
    assert runner.peak == limit
    for goal_id, fake in fakes.items():
        (invocation,) = fake.invocations()
        assert invocation["cwd"] == str(h.workspace(goal_id).resolve())
        assert (h.workspace(goal_id) / DONE_FILE).exists()
    assert sorted(e.goal_id for e in rec.of(GoalCompleted)) == ids


async def test_an_internal_error_ends_only_its_goal(h: Harness) -> None:
    ids = [f"goal-{n:02d}" for n in range(10)]
    fakes = per_goal_fakes(h, ids, does_it(sleep(0.2)))
    runner = CountingRunner(fail="goal-03")
    config = h.config(fakes[ids[0]], max_concurrent_goals=10)
    async with orchestrator(config, turn_runner=runner, goal_env=plan_for(fakes)) as (
        orch,
        rec,
    ):
        handles = [await orch.start_goal(h.goal(goal_id)) for goal_id in ids]
        outcomes = {h_.goal_id: await h_.wait() for h_ in handles}
        await assert_gone(orch, "goal-03")

    broken = outcomes.pop("goal-03")
    assert broken.kind is GoalEndKind.ESCALATED
    assert broken.reason is not None
    assert broken.reason.startswith("internal error")
    assert "the turn runner broke" in broken.reason
    assert {o.kind for o in outcomes.values()} == {GoalEndKind.DONE}
    completed = rec.of(GoalCompleted)
    assert sorted(e.goal_id for e in completed) == ids  # exactly one each
    assert fakes["goal-03"].invocations() == []


# --------------------------------------------------------------------------- cleanup


async def test_per_goal_state_is_gone_on_every_path(h: Harness) -> None:
    paths = {
        "done": does_it(),
        "cancelled": turn(init(), hang()),
        "escalated": turn(init(), api_error(401, "bad key")),
        "exhausted": claims_done(),
        "broken": does_it(),
    }
    fakes = {goal_id: h.fake(t, name=goal_id) for goal_id, t in paths.items()}
    runner = CountingRunner(fail="broken")
    config = h.config(fakes["done"], max_concurrent_goals=10)
    async with orchestrator(config, turn_runner=runner, goal_env=plan_for(fakes)) as (
        orch,
        rec,
    ):
        handles = {
            goal_id: await orch.start_goal(h.goal(goal_id, max_turns=1)) for goal_id in paths
        }
        await rec.wait_for(SessionBound, lambda e: e.goal_id == "cancelled")
        assert await orch.cancel_goal("cancelled")
        outcomes = {goal_id: await handle.wait() for goal_id, handle in handles.items()}
        assert orch.running() == []
        for goal_id in paths:
            await assert_gone(orch, goal_id)

    assert {goal_id: o.kind for goal_id, o in outcomes.items()} == {
        "done": GoalEndKind.DONE,
        "cancelled": GoalEndKind.CANCELLED,
        "escalated": GoalEndKind.ESCALATED,
        "exhausted": GoalEndKind.BUDGET_EXHAUSTED,
        "broken": GoalEndKind.ESCALATED,
    }
    completed = [e.goal_id for e in rec.of(GoalCompleted)]
    assert sorted(completed) == sorted(paths)
