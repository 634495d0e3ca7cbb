"""The goal machine's rules, one by one: the fold, the next step, re-runs, stuck detection."""

from __future__ import annotations

from typing import Any

import attrs
import pytest

from nexo_trio.core.acceptance import CheckResult
from nexo_trio.core.budget import BudgetAxis
from nexo_trio.core.events import Usage
from nexo_trio.core.goal import Budget, Goal, ShellCheck
from nexo_trio.core.goal_events import (
    AcceptanceChecked,
    AttemptCompleted,
    AttemptStarted,
    CancelRequested,
    DecisionMade,
    GoalCompleted,
    GoalEvent,
    GoalPaused,
    GoalRestarted,
    GoalResumed,
    GoalStarted,
    InterruptQueued,
    MaxTurnsRaised,
    ReplayDecided,
    SessionBound,
    Sleeping,
    StuckDetected,
    WokeUp,
)
from nexo_trio.core.goal_machine import (
    Begin,
    Finish,
    GoalState,
    Record,
    RunAcceptance,
    RunTurn,
    Sleep,
    Wait,
    begin,
    control_effect,
    end_outcome,
    fold,
    initial_state,
    next_step,
    supersedes,
)
from nexo_trio.core.goal_outcome import GoalEndKind
from nexo_trio.core.prompt import FAILURES_HEADER, FRESH_START, INTERRUPT_OPEN
from nexo_trio.core.settings import Config, StuckSettings

G = "g"
GOAL = Goal(id=G, description="Fix it.", acceptance=(ShellCheck("make test"),))
CONFIG = Config()
T0 = 1_000_000.0


def at(t: float, *events: GoalEvent) -> list[GoalEvent]:
    """``events`` stamped with time ``T0 + t``."""
    return [attrs.evolve(e, at=T0 + t) for e in events]


def started(t: float = 0.0, **fields: Any) -> list[GoalEvent]:
    return at(t, GoalStarted(G, "Fix it.", "/ws", **fields))


def turn(
    number: int,
    t: float,
    *,
    kind: str = "claimed_done",
    cause: str = "completed",
    compact: bool = False,
    session: str | None = "s1",
    resume: str | None = "s1",
    counted: bool = True,
    action: str = "proceed",
    is_error: bool = False,
    interrupts: tuple[str, ...] = (),
    **completed: Any,
) -> list[GoalEvent]:
    """A whole turn's events: started, bound, completed, judged."""
    events: list[GoalEvent] = [
        AttemptStarted(G, number, compact, resume, "p", interrupts=interrupts)
    ]
    if session is not None and session != resume:
        events.append(SessionBound(G, session))
    events.append(
        AttemptCompleted(
            G,
            number,
            compact,
            kind,
            cause,
            None,
            session,
            Usage(input_tokens=10),
            0.01,
            1.0,
            **completed,
        )
    )
    events.append(ReplayDecided(G, number, action, None, counted=counted, is_error=is_error))
    return at(t, *events)


def failed(number: int, t: float, evidence: str = "FAILED a") -> list[GoalEvent]:
    result = CheckResult(0, "tests", passed=False, message="exit code 1", evidence=evidence)
    return at(t, AcceptanceChecked(G, number, False, (result,)))


def passed(number: int, t: float) -> list[GoalEvent]:
    return at(t, AcceptanceChecked(G, number, True, (CheckResult(0, "tests", passed=True),)))


def state_of(*groups: list[GoalEvent]) -> GoalState:
    return fold([e for group in groups for e in group], initial_state(G))


def step_at(state: GoalState, t: float, goal: Goal = GOAL, config: Config = CONFIG) -> Any:
    return next_step(state, goal, config, T0 + t)


# --------------------------------------------------------------------------- a run


def test_a_goal_begins_works_checks_and_ends_done() -> None:
    state = initial_state(G)
    assert begin(state, GOAL, CONFIG, T0) == Begin()
    state = state_of(started())
    first = step_at(state, 1)
    assert isinstance(first, RunTurn)
    assert (first.turn, first.compact, first.resume_session) == (1, False, None)
    assert first.prompt == "Goal: Fix it."
    state = state_of(started(), turn(1, 5, resume=None))
    assert step_at(state, 5) == RunAcceptance(turn=1)
    state = state_of(started(), turn(1, 5, resume=None), passed(1, 6))
    end = step_at(state, 6)
    assert isinstance(end, Finish)
    assert (end.outcome.kind, end.outcome.total_turns, end.outcome.session_id) == (
        GoalEndKind.DONE,
        1,
        "s1",
    )
    assert end.outcome.wall_time_s == pytest.approx(6.0)


def test_an_undecided_turn_is_judged_first_and_the_judgement_is_recorded() -> None:
    events = started() + turn(1, 5, resume=None)[:-1]  # completed, not judged yet
    step = step_at(fold(events, initial_state(G)), 5)
    assert isinstance(step, Record)
    (judged,) = step.events
    assert isinstance(judged, ReplayDecided)
    assert (judged.turn, judged.action, judged.counted) == (1, "proceed", True)


def test_failures_open_the_next_prompt_until_the_next_acceptance() -> None:
    state = state_of(started(), turn(1, 5, resume=None), failed(1, 6))
    step = step_at(state, 6)
    assert isinstance(step, RunTurn)
    assert step.prompt.startswith(FAILURES_HEADER)
    assert "1. tests: exit code 1" in step.prompt
    assert step.resume_session == "s1"
    # A retry of a failed turn (a 529) still shows them.
    state = state_of(
        started(),
        turn(1, 5, resume=None),
        failed(1, 6),
        turn(2, 7, kind="continue", cause="api_error_retryable", action="retry", is_error=True),
    )
    assert FAILURES_HEADER in step_at(state, 7).prompt


# --------------------------------------------------------------------------- counting


def test_decisions_count_and_an_allow_ends_the_run_of_denials() -> None:
    deny = DecisionMade(G, "Bash", "deny", "no", "rules", 1.0)
    allow = DecisionMade(G, "Bash", "allow_once", None, "rules", 1.0)
    state = state_of(started(), at(1, AttemptStarted(G, 1, False, None, "p"), deny, deny))
    assert (state.denied, state.consecutive_denies) == (2, 2)
    state = fold(at(2, allow, deny), state)
    assert (state.allowed, state.denied, state.consecutive_denies) == (1, 3, 1)


def test_denials_only_the_cli_reports_count_too() -> None:
    deny = DecisionMade(G, "Bash", "deny", "no", "rules", 1.0)
    state = state_of(started(), at(1, AttemptStarted(G, 1, False, None, "p"), deny))
    # The CLI reports 3 denials: the gate's one and two of its own rules'.
    state = fold(
        at(
            2,
            AttemptCompleted(
                G,
                1,
                False,
                "claimed_done",
                "completed",
                None,
                "s",
                Usage(),
                0,
                1,
                permission_denials=3,
            ),
        ),
        state,
    )
    assert (state.denied, state.consecutive_denies) == (3, 3)


def test_a_denial_that_reaches_the_limit_stops_the_running_turn() -> None:
    goal = attrs.evolve(GOAL, budget=Budget(max_consecutive_denies=1))
    running = state_of(started(), at(1, AttemptStarted(G, 1, False, None, "p")))
    turn_step = step_at(running, 1, goal)
    assert isinstance(turn_step, RunTurn)
    assert not supersedes(turn_step, step_at(running, 1, goal))
    denied = fold(at(2, DecisionMade(G, "Bash", "deny", "no", "rules", 1.0)), running)
    end = step_at(denied, 2, goal)
    assert isinstance(end, Finish)
    assert end.outcome.axis is not None
    assert end.outcome.axis.value == "consecutive_denies"
    assert supersedes(turn_step, end)


def test_compactions_and_stale_sessions_are_not_counted() -> None:
    state = state_of(
        started(),
        turn(1, 1, resume=None),
        failed(1, 2),
        turn(1, 3, compact=True, counted=False, compact_post_tokens=500),
        turn(
            2,
            4,
            kind="continue",
            cause="session_invalid",
            session=None,
            counted=False,
            action="fresh_session",
            session_invalid=True,
        ),
    )
    assert state.turns == 1
    assert state.session_id is None
    assert state.last_context_tokens == 0  # the refused turn read no context
    assert state.turns_since_compact == 0


def test_a_compaction_is_due_when_the_context_fills_up_and_delivers_no_message() -> None:
    config = attrs.evolve(CONFIG, compact=attrs.evolve(CONFIG.compact, context_window=1000))
    state = state_of(
        started(),
        turn(1, 1, resume=None, context_tokens=900),
        failed(1, 2),
        at(3, InterruptQueued(G, "hello")),
    )
    step = step_at(state, 3, config=config)
    assert isinstance(step, RunTurn)
    assert (step.compact, step.turn, step.interrupts, step.context_tokens) == (True, 1, (), 900)
    assert step.prompt.startswith("/compact")
    after = fold(turn(1, 4, compact=True, counted=False, compact_post_tokens=50), state)
    assert after.last_context_tokens == 50
    work = step_at(after, 4, config=config)
    assert isinstance(work, RunTurn)
    assert not work.compact
    assert work.interrupts == ("hello",)
    assert work.prompt.startswith(INTERRUPT_OPEN)


# --------------------------------------------------------------------------- messages


def test_a_stale_session_puts_its_messages_back_in_front() -> None:
    state = state_of(
        started(),
        at(1, InterruptQueued(G, "a"), InterruptQueued(G, "b")),
        at(2, AttemptStarted(G, 1, False, "old", "p", interrupts=("a", "b"))),
        at(3, InterruptQueued(G, "c")),
    )
    assert state.interrupts == ("c",)
    state = fold(
        at(
            4,
            AttemptCompleted(
                G,
                1,
                False,
                "continue",
                "session_invalid",
                None,
                None,
                Usage(),
                0,
                1,
                session_invalid=True,
            ),
            ReplayDecided(G, 1, "fresh_session", None, counted=False, invalid_session="old"),
        ),
        state,
    )
    assert state.interrupts == ("a", "b", "c")
    step = step_at(state, 4)
    assert isinstance(step, RunTurn)
    assert step.interrupts == ("a", "b", "c")
    assert step.resume_session is None


def test_a_message_wakes_a_sleeping_goal() -> None:
    state = state_of(
        started(),
        turn(1, 1, resume=None, kind="sleep", cause="sleep_requested", sleep_ms=600_000),
        at(1, Sleeping(G, 600_000, "CI", until=T0 + 601)),
    )
    assert step_at(state, 2) == Sleep(until=T0 + 601)
    woken = fold(at(30, InterruptQueued(G, "CI is green")), state)
    record = step_at(woken, 30)
    assert isinstance(record, Record)
    (woke,) = record.events
    assert isinstance(woke, WokeUp)
    assert woke.early
    assert woke.slept_ms == 29_000
    awake = fold(at(30, woke), woken)
    step = step_at(awake, 30)
    assert isinstance(step, RunTurn)
    assert step.prompt.startswith(INTERRUPT_OPEN)
    assert "an operator message woke you after 29s" in step.prompt


def test_a_sleep_never_outlasts_the_wall_time_budget() -> None:
    goal = attrs.evolve(GOAL, budget=Budget(max_wall_time_s=100))
    state = state_of(
        started(),
        turn(1, 10, resume=None, kind="sleep", cause="sleep_requested", sleep_ms=3_600_000),
        at(10, Sleeping(G, 3_600_000, None, until=T0 + 3610)),
    )
    assert step_at(state, 10, goal) == Sleep(until=T0 + 100)
    end = step_at(state, 100, goal)
    assert isinstance(end, Finish)
    assert end.outcome.axis is not None
    assert end.outcome.axis.value == "wall_time"


def test_a_turn_never_outlasts_the_wall_time_budget() -> None:
    goal = attrs.evolve(GOAL, budget=Budget(max_wall_time_s=100))
    step = step_at(state_of(started()), 70, goal)
    assert isinstance(step, RunTurn)
    assert step.timeout_s == pytest.approx(30)


# --------------------------------------------------------------------------- operators


def test_controls_and_what_they_change() -> None:
    state = state_of(started())
    assert control_effect(state, GOAL, GoalPaused(G))
    paused = fold(at(1, GoalPaused(G)), state)
    assert not control_effect(paused, GOAL, GoalPaused(G))
    assert step_at(paused, 1) == Wait()
    assert control_effect(paused, GOAL, GoalResumed(G))
    assert not control_effect(state, GOAL, GoalResumed(G))
    with pytest.raises(ValueError, match="non-empty"):
        control_effect(state, GOAL, InterruptQueued(G, "  "))
    with pytest.raises(ValueError, match="only be raised: 3 is below the current 8"):
        control_effect(state, GOAL, MaxTurnsRaised(G, 3))
    raised = fold(at(2, MaxTurnsRaised(G, 12)), state)
    with pytest.raises(ValueError, match="below the current 12"):
        control_effect(raised, GOAL, MaxTurnsRaised(G, 10))
    cancelled = fold(at(3, CancelRequested(G, "enough")), state)
    assert not control_effect(cancelled, GOAL, CancelRequested(G, "again"))
    end = step_at(cancelled, 3)
    assert isinstance(end, Finish)
    assert (end.outcome.kind, end.outcome.reason) == (GoalEndKind.CANCELLED, "enough")


def test_a_raised_max_turns_lets_the_goal_go_on() -> None:
    goal = attrs.evolve(GOAL, budget=Budget(max_turns=1))
    state = state_of(started(), turn(1, 1, resume=None), failed(1, 2))
    assert isinstance(step_at(state, 2, goal), Finish)
    state = fold(at(3, MaxTurnsRaised(G, 2)), state)
    step = step_at(state, 3, goal)
    assert isinstance(step, RunTurn)
    assert step.turn == 2


# --------------------------------------------------------------------------- re-runs


def test_wall_time_adds_up_over_runs_without_the_time_no_process_ran() -> None:
    state = state_of(started(0), turn(1, 40, resume=None), failed(1, 50))
    # kill -9 at about t=50; the next run starts at t=500.
    assert begin(state, GOAL, CONFIG, T0 + 500) == Begin(resumed_after="crashed")
    state = fold(started(500, run=2, resumed_after="crashed"), state)
    assert state.wall_time_s(T0 + 510) == pytest.approx(60.0)
    assert (state.turns, state.session_id, state.failures) == (1, "s1", state.failures)
    assert len(state.failures) == 1


def test_a_crashed_turn_runs_again_with_its_number_and_prompt() -> None:
    state = state_of(
        started(),
        at(1, InterruptQueued(G, "note")),
        at(2, AttemptStarted(G, 1, False, None, "the prompt", interrupts=("note",))),
        at(3, SessionBound(G, "s9")),
    )
    state = fold(started(100, run=2, resumed_after="crashed", abandoned_turn=1), state)
    step = step_at(state, 100)
    assert isinstance(step, RunTurn)
    assert (step.turn, step.prompt, step.interrupts, step.redo) == (
        1,
        "the prompt",
        ("note",),
        True,
    )
    assert step.resume_session == "s9"
    assert state.turns == 0


def end(kind: GoalEndKind, t: float, state: GoalState, **fields: Any) -> list[GoalEvent]:
    outcome = end_outcome(state, G, kind, None, T0 + t, **fields)
    return at(t, GoalCompleted(G, outcome))


def test_a_done_goal_reports_its_recorded_outcome() -> None:
    state = state_of(started(), turn(1, 1, resume=None), passed(1, 2))
    state = fold(end(GoalEndKind.DONE, 2, state), state)
    step = begin(state, GOAL, CONFIG, T0 + 100)
    assert isinstance(step, Finish)
    assert step.recorded
    assert step.outcome == state.outcome


def test_a_goal_out_of_turns_reports_it_unless_it_now_has_more() -> None:
    goal = attrs.evolve(GOAL, budget=Budget(max_turns=1))
    state = state_of(started(), turn(1, 1, resume=None), failed(1, 2))
    state = fold(end(GoalEndKind.BUDGET_EXHAUSTED, 2, state, axis=BudgetAxis.TURNS), state)
    again = begin(state, goal, CONFIG, T0 + 100)
    assert isinstance(again, Finish)
    assert again.recorded
    more = attrs.evolve(goal, budget=Budget(max_turns=3))
    assert begin(state, more, CONFIG, T0 + 100) == Begin(resumed_after="budget_exhausted")
    state = fold(started(100, run=2, resumed_after="budget_exhausted"), state)
    step = step_at(state, 100, more)
    assert isinstance(step, RunTurn)
    assert step.turn == 2
    assert FAILURES_HEADER in step.prompt  # the failures still to show


def test_cancelled_and_escalated_goals_go_on_and_an_escalation_gets_a_fresh_try() -> None:
    state = state_of(
        started(),
        turn(1, 1, resume=None, kind="continue", cause="api_error", action="retry", is_error=True),
        at(2, CancelRequested(G, "ctrl-c")),
    )
    cancelled = fold(end(GoalEndKind.CANCELLED, 2, state), state)
    assert begin(cancelled, GOAL, CONFIG, T0 + 10) == Begin(resumed_after="cancelled")
    rerun = fold(started(10, run=2, resumed_after="cancelled"), cancelled)
    assert rerun.cancel_reason is None
    assert rerun.consecutive_errors == 1
    escalated = fold(end(GoalEndKind.ESCALATED, 2, state), state)
    rerun = fold(started(10, run=2, resumed_after="escalated"), escalated)
    assert (rerun.consecutive_errors, rerun.turns) == (0, 1)


def test_a_restart_forgets_everything() -> None:
    state = state_of(
        started(), turn(1, 1, resume=None), failed(1, 2), at(3, InterruptQueued(G, "x"))
    )
    state = fold(at(10, GoalRestarted(G)), state)
    assert state == attrs.evolve(initial_state(G), last_at=T0 + 10)
    assert begin(state, GOAL, CONFIG, T0 + 10) == Begin()


# --------------------------------------------------------------------------- stuck


def test_the_same_failures_three_times_get_one_fresh_session_then_escalate() -> None:
    state = state_of(started(), turn(1, 1, resume=None), failed(1, 2))
    for number in (2, 3):
        state = fold(turn(number, number * 2) + failed(number, number * 2 + 1), state)
    step = step_at(state, 10)
    assert isinstance(step, Record)
    (stuck,) = step.events
    assert isinstance(stuck, StuckDetected)
    assert stuck.action == "fresh_session"
    assert "after 3 claimed completions in a row" in stuck.reason
    state = fold(at(10, stuck), state)
    fresh = step_at(state, 10)
    assert isinstance(fresh, RunTurn)
    assert fresh.resume_session is None
    assert fresh.prompt.startswith(FRESH_START)
    assert FAILURES_HEADER in fresh.prompt
    # The fresh session gets stuck on the same failures too: escalate.
    for number in (4, 5, 6):
        state = fold(
            turn(number, number * 2, session="s2", resume=None if number == 4 else "s2")
            + failed(number, number * 2 + 1),
            state,
        )
    end_step = step_at(state, 20)
    assert isinstance(end_step, Finish)
    assert end_step.outcome.kind is GoalEndKind.ESCALATED
    assert end_step.outcome.reason is not None
    assert end_step.outcome.reason.startswith("stuck: the same 1 acceptance check failed")


def test_different_evidence_is_progress_not_stuck() -> None:
    state = state_of(started(), turn(1, 1, resume=None), failed(1, 2, "a"))
    state = fold(turn(2, 3) + failed(2, 4, "b") + turn(3, 5) + failed(3, 6, "a"), state)
    step = step_at(state, 6)
    assert isinstance(step, RunTurn)


def test_the_same_tool_error_in_a_row_is_stuck_and_stuck_can_be_turned_off() -> None:
    error: dict[str, Any] = {"tool_error": "command not found: foo", "tool_error_run": 2}
    error["tool_results"] = 2
    state = state_of(started(), turn(1, 1, resume=None, **error), failed(1, 2, "x"))
    state = fold(turn(2, 3, **{**error, "tool_error_run": 1, "tool_results": 1}), state)
    state = fold(failed(2, 4, "y"), state)
    assert state.tool_error_streak == 3
    step = step_at(state, 4)
    assert isinstance(step, Record)
    (stuck,) = step.events
    assert isinstance(stuck, StuckDetected)
    assert "the same tool error 3 times in a row: command not found: foo" in stuck.reason
    off = attrs.evolve(CONFIG, stuck=StuckSettings(action="off"))
    assert isinstance(step_at(state, 4, config=off), RunTurn)
    escalate = attrs.evolve(CONFIG, stuck=StuckSettings(action="escalate"))
    assert isinstance(step_at(state, 4, config=escalate), Finish)
