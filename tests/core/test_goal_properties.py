"""Properties of the goal machine over whole runs (hypothesis), through the model shell.

For any sequence of turn outcomes, acceptance verdicts, decisions and operator controls:
counted turns never exceed the budget; a compaction or a stale-session retry is never
counted; the failures of the last failed acceptance open the very next work prompt; an
operator message is delivered exactly once; and cutting the log anywhere and folding it
again gives the same next step as the uninterrupted machine (crash anywhere, same future).
"""

from __future__ import annotations

import os

import attrs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from nexo_trio.core.budget import BudgetAxis
from nexo_trio.core.goal import Budget, Goal
from nexo_trio.core.goal_events import (
    AcceptanceChecked,
    AttemptCompleted,
    AttemptStarted,
    CancelRequested,
    GoalEvent,
    GoalPaused,
    InterruptQueued,
    MaxTurnsRaised,
    ReplayDecided,
)
from nexo_trio.core.goal_machine import (
    Finish,
    GoalState,
    Record,
    RunTurn,
    Sleep,
    Step,
    begin,
    effective_budget,
    fold,
    initial_state,
    next_step,
    run_started,
    turn_completed,
    turn_started,
)
from nexo_trio.core.goal_outcome import GoalEndKind
from nexo_trio.core.outcome import Cause, TurnKind, TurnOutcome
from nexo_trio.core.prompt import format_failures
from nexo_trio.core.settings import Config
from tests.core.goal_model import GOAL_ID, Run, configs, drive, goals

EXAMPLES = int(os.environ.get("NEXO_GOAL_EXAMPLES", "150"))
"""Runs per property: a small profile in the default suite, ``nox -s deep`` runs many more."""
RUNS = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def comparable(step: Step) -> Step:
    """A step as a recovered run must reproduce it: a finish's elapsed time is the run's
    own (the new run's clock starts again); everything else must be equal."""
    if isinstance(step, Finish):
        return attrs.evolve(step, outcome=attrs.evolve(step.outcome, elapsed_s=0.0))
    return step


def controls(run: Run, data: st.DataObject) -> None:
    """Now and then an operator: a message, a pause, a raise of max turns, rarely a cancel."""
    choice = data.draw(st.sampled_from(["none"] * 6 + ["message", "pause", "raise", "cancel"]))
    match choice:
        case "message":
            run.control(InterruptQueued(GOAL_ID, f"note {len(run.log)}"))
        case "pause" if not run.state.paused:
            run.control(GoalPaused(GOAL_ID))
        case "raise":
            current = effective_budget(run.goal, run.state).max_turns
            if current is not None:
                run.control(MaxTurnsRaised(GOAL_ID, current + 1))
        case "cancel" if data.draw(st.integers(0, 9)) == 0:
            run.control(CancelRequested(GOAL_ID, "enough"))
        case _:
            pass


@RUNS
@given(goals(), configs(), st.data())
def test_whole_runs_keep_the_machines_promises(
    goal: Goal, config: Config, data: st.DataObject
) -> None:
    run = drive(goal, config, data, between=lambda r: controls(r, data))
    log = run.log
    assert run.outcome is not None

    # Counted turns never exceed max_turns (as raised by an operator), at any point.
    raised = goal.budget.max_turns
    state = initial_state(GOAL_ID)
    for event in log:
        state = fold([event], state)
        if isinstance(event, MaxTurnsRaised):
            raised = max(raised or 0, event.max_turns)
        if raised is not None:
            assert state.turns <= raised
    assert run.outcome.total_turns == state.turns

    # A compaction or a stale-session retry is never counted.
    completed: dict[int, AttemptCompleted] = {}
    for event in log:
        if isinstance(event, AttemptCompleted):
            completed[event.turn] = event
        elif isinstance(event, ReplayDecided):
            turn = completed[event.turn]
            if turn.compact or event.action == "fresh_session":
                assert not event.counted

    # The failures of the last failed acceptance open the very next work prompt.
    pending = None
    for event in log:
        if isinstance(event, AcceptanceChecked) and not event.met:
            pending = [r for r in event.results if not r.passed]
        elif isinstance(event, AttemptStarted) and not event.compact and pending is not None:
            shown = [f"1. {r.label}: {r.message}" for r in pending]
            assert all(line in event.prompt for line in shown)
            assert (
                format_failures(fold(log[: log.index(event)], initial_state(GOAL_ID)).failures)
                in event.prompt
            )
            pending = None

    # An operator message is delivered exactly once: by the first work turn after it that
    # reached Claude (one refused for a stale session delivers nothing; it goes out again).
    delivered: dict[str, int] = {}
    started: dict[int, AttemptStarted] = {}
    for event in log:
        if isinstance(event, AttemptStarted):
            started[event.turn] = event
        elif isinstance(event, ReplayDecided) and event.action != "fresh_session":
            for message in started[event.turn].interrupts:
                delivered[message] = delivered.get(message, 0) + 1
    assert all(count == 1 for count in delivered.values()), delivered
    queued = [e.message for e in log if isinstance(e, InterruptQueued)]
    assert len(set(queued)) == len(queued)
    # One never delivered is still queued: the goal ended before a work turn took it.
    assert set(queued) - set(delivered) == set(state.interrupts)


@RUNS
@given(goals(), configs(), st.data())
def test_cutting_the_log_anywhere_and_folding_it_again_gives_the_same_next_step(
    goal: Goal, config: Config, data: st.DataObject
) -> None:
    run = drive(goal, config, data, between=lambda r: controls(r, data))
    for cut, now, step in run.steps:
        recovered = fold(run.log[:cut], initial_state(GOAL_ID))
        assert next_step(recovered, goal, config, now) == step


def recover(log: list[GoalEvent], goal: Goal, config: Config, now: float) -> GoalState:
    """What a new process makes of the log: the fold, then a run of its own begins."""
    state = fold(log, initial_state(GOAL_ID))
    start = begin(state, goal, config, now)
    assert not isinstance(start, Finish)
    started = run_started(goal, start, state, workspace="/ws", pid=2)
    return fold([attrs.evolve(started, at=now)], state)


@RUNS
@given(goals(), configs(), st.data())
def test_a_crash_between_steps_resumes_with_the_same_step(
    goal: Goal, config: Config, data: st.DataObject
) -> None:
    # No operator controls: they belong to the run they were given to, and a new run drops
    # them (a cancel or pause of a crashed process does not outlive it).
    run = drive(goal, config, data)
    for cut, now, step in run.steps:
        before = fold(run.log[:cut], initial_state(GOAL_ID))
        if before.escalation is not None or not before.running:
            continue  # an escalated run that crashed before its end is tried again
        if now > before.last_at:
            # Time passed with nothing recorded (a sleep ran out): the ledger cannot know
            # how much of it a crashed process lived, and a re-run does not count it.
            continue
        after = next_step(recover(run.log[:cut], goal, config, now), goal, config, now)
        assert comparable(after) == comparable(step)


@RUNS
@given(goals(), configs(), st.data())
def test_a_crash_inside_a_turn_runs_that_turn_again_counted_once(
    goal: Goal, config: Config, data: st.DataObject
) -> None:
    run = drive(goal, config, data)
    turn_steps = [(cut, now, s) for cut, now, s in run.steps if isinstance(s, RunTurn)]
    if not turn_steps:
        return
    cut, now, step = data.draw(st.sampled_from(turn_steps))
    assert isinstance(step, RunTurn)
    # The run dies in the middle of that turn (a kill -9): its start and maybe a session
    # binding and some decisions are in the log, its end is not.
    crashed = Run(goal=goal, config=config, now=now, log=list(run.log[:cut]))
    crashed.state = fold(crashed.log, initial_state(GOAL_ID))
    crashed.play(step, data, crash_in_turn=True)
    state = recover(crashed.log, goal, config, crashed.now + 50)
    again = next_step(state, goal, config, crashed.now + 50)
    if isinstance(again, Finish):
        return  # a budget (say, its denials) ran out in the crashed part: it ends there
    assert isinstance(again, RunTurn)
    assert (again.turn, again.compact, again.prompt, again.interrupts, again.redo) == (
        step.turn,
        step.compact,
        step.prompt,
        step.interrupts,
        True,
    )
    assert state.turns == fold(run.log[:cut], initial_state(GOAL_ID)).turns
    assert state.runs == 2


class GoalLifecycle(RuleBasedStateMachine):
    """Operator controls, crashes and steps in any order; the machine keeps its promises."""

    def __init__(self) -> None:
        super().__init__()
        self.run: Run | None = None

    @initialize(goal=goals(), config=configs())
    def start(self, goal: Goal, config: Config) -> None:
        self.run = Run(goal=goal, config=config)
        assert self.run.begin()

    @property
    def live(self) -> bool:
        return self.run is not None and self.run.outcome is None

    @precondition(lambda self: self.live)
    @rule(data=st.data())
    def step(self, data: st.DataObject) -> None:
        assert self.run is not None
        self.run.play(self.run.next(), data)

    @precondition(lambda self: self.live)
    @rule(message=st.sampled_from(["use tabs", "add a test", "stop"]))
    def message(self, message: str) -> None:
        assert self.run is not None
        self.run.control(InterruptQueued(GOAL_ID, f"{message} #{len(self.run.log)}"))

    @precondition(lambda self: self.live)
    @rule()
    def pause(self) -> None:
        assert self.run is not None
        if not self.run.state.paused:
            self.run.control(GoalPaused(GOAL_ID))

    @precondition(lambda self: self.live)
    @rule()
    def crash(self) -> None:
        # kill -9 between two steps, and a new process takes the goal up.
        assert self.run is not None
        before = self.run.state
        self.run.now += 30
        start = begin(before, self.run.goal, self.run.config, self.run.now)
        if isinstance(start, Finish):
            self.run.outcome = start.outcome
            return
        self.run.record(run_started(self.run.goal, start, before, workspace="/ws", pid=3))
        after = self.run.state
        assert (after.turns, after.usage, after.cost_usd, after.session_id) == (
            before.turns,
            before.usage,
            before.cost_usd,
            before.session_id,
        )
        assert after.interrupts == before.interrupts
        assert after.failures == before.failures
        # The wall time spent is kept; the time the goal was down is not counted.
        assert after.wall_time_s(self.run.now) == before.wall_time_s(before.last_at)

    @precondition(lambda self: self.run is not None and not self.live)
    @rule()
    def take_it_up_again(self) -> None:
        # Another `nexo-trio run` of the same goal after it ended.
        assert self.run is not None
        ended = self.run.outcome
        assert ended is not None
        self.run.now += 60
        start = begin(self.run.state, self.run.goal, self.run.config, self.run.now)
        if isinstance(start, Finish):
            # Done, or out of a budget it still exhausts: the recorded outcome, no turn.
            assert start.recorded
            assert start.outcome == ended
            assert ended.kind in (GoalEndKind.DONE, GoalEndKind.BUDGET_EXHAUSTED)
            return
        assert ended.kind is not GoalEndKind.DONE
        assert start.resumed_after == ended.kind.value
        self.run.record(run_started(self.run.goal, start, self.run.state, workspace="/ws", pid=4))
        self.run.outcome = None
        assert self.run.state.turns == ended.total_turns

    @invariant()
    def turns_within_the_budget(self) -> None:
        if self.run is None:
            return
        limit = effective_budget(self.run.goal, self.run.state).max_turns
        if limit is not None:
            assert self.run.state.turns <= limit

    @invariant()
    def the_state_is_the_fold_of_the_log(self) -> None:
        if self.run is None:
            return
        assert fold(self.run.log, initial_state(GOAL_ID)) == self.run.state

    @invariant()
    def an_ended_goal_says_how(self) -> None:
        if self.run is None or self.run.outcome is None:
            return
        assert isinstance(self.run.outcome.kind, GoalEndKind)


TestGoalLifecycle = GoalLifecycle.TestCase
TestGoalLifecycle.settings = settings(
    max_examples=max(60, EXAMPLES // 3),
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def test_a_sleep_clamped_to_the_wall_time_deadline_ends_the_goal_there() -> None:
    # Found by the crash property above in CI: a wall-time budget whose deadline, summed
    # back at the moment the clamped sleep ends, falls short by a rounding error woke the
    # goal into the same sleep again, forever.
    budget = Budget(max_turns=2, max_wall_time_s=50.00000000000001)
    goal = Goal(id=GOAL_ID, description="Fix it.", budget=budget)
    run = Run(goal=goal, config=Config(turn_timeout_s=30.0))
    assert run.begin()
    step = run.next()
    assert isinstance(step, RunTurn)
    for event in turn_started(GOAL_ID, step):
        run.record(event)
    run.now += 1.0
    outcome = TurnOutcome(
        TurnKind.SLEEP, Cause.SLEEP_REQUESTED, reason="CI", sleep_ms=60_000, session_id="s-1"
    )
    run.record(turn_completed(GOAL_ID, step, outcome, duration_s=1.0))
    for _ in range(10):
        step = run.next()
        match step:
            case Finish(outcome=ended):
                assert ended.kind is GoalEndKind.BUDGET_EXHAUSTED
                assert ended.axis is BudgetAxis.WALL_TIME
                return
            case Record(events=events):
                for event in events:
                    run.record(event)
            case Sleep(until=until):
                assert until > run.now, "a sleep that lets no time pass"
                run.now = until
            case _:
                raise AssertionError(f"unexpected step {step}")
    raise AssertionError("the goal never ended at its wall-time deadline")
