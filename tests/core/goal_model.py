"""A pure stand-in for the orchestrator's shell: runs the goal machine's steps with outcomes
drawn by hypothesis, on a clock of its own, and keeps the whole log.

It does what ``orchestrator/goal_run.py`` does, minus the I/O: every event is stamped with
the clock and folded, every step's events come from the same core functions. So a property
of the log here is a property of what a real run records.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
from hypothesis import strategies as st

from nexo_trio.core.acceptance import CheckResult
from nexo_trio.core.compact import CompactPolicy
from nexo_trio.core.events import Usage
from nexo_trio.core.goal import Budget, Goal, ShellCheck
from nexo_trio.core.goal_events import (
    AcceptanceChecked,
    ControlEvent,
    DecisionMade,
    GoalCompleted,
    GoalEvent,
    GoalResumed,
    SessionBound,
)
from nexo_trio.core.goal_machine import (
    Begin,
    Finish,
    GoalState,
    Record,
    RunAcceptance,
    RunTurn,
    Sleep,
    Step,
    Wait,
    apply,
    begin,
    initial_state,
    next_step,
    run_started,
    turn_completed,
    turn_started,
)
from nexo_trio.core.outcome import COMPACT_HINT, Cause, TurnKind, TurnOutcome
from nexo_trio.core.settings import Config, ReplaySettings, StuckSettings

GOAL_ID = "g"
CHECKS = (ShellCheck("make test", label="tests"),)
FAILURES = (("tests", "exit code 1", "FAILED test_a"), ("tests", "exit code 2", "boom"))
TOOL_ERRORS = ("command not found: foo", "permission denied")


def goals() -> st.SearchStrategy[Goal]:
    """Goals with every budget axis sometimes set (tight enough to be reached)."""
    small = st.integers(min_value=1, max_value=8)
    budget = st.builds(
        Budget,
        max_turns=small,
        max_wall_time_s=st.none() | st.floats(min_value=50, max_value=2_000),
        max_tokens=st.none() | st.integers(min_value=500, max_value=10_000),
        max_cost_usd=st.none() | st.floats(min_value=0.01, max_value=1.0),
        max_consecutive_errors=st.none() | small,
        max_consecutive_denies=st.none() | small,
    )
    return st.builds(
        Goal,
        id=st.just(GOAL_ID),
        description=st.just("Fix it."),
        acceptance=st.just(CHECKS),
        budget=budget,
    )


def configs() -> st.SearchStrategy[Config]:
    """Configs whose policies act within a few turns."""
    return st.builds(
        Config,
        turn_timeout_s=st.sampled_from([30.0, 600.0]),
        progress_every=st.integers(min_value=1, max_value=3),
        compact=st.builds(
            CompactPolicy,
            context_window=st.just(1_000),
            threshold=st.just(0.8),
            min_turns_between=st.integers(min_value=0, max_value=2),
        ),
        replay=st.builds(ReplaySettings, max_retries=st.integers(min_value=0, max_value=3)),
        stuck=st.builds(
            StuckSettings,
            after=st.integers(min_value=2, max_value=3),
            action=st.sampled_from(["fresh_session_then_escalate", "escalate", "off"]),
        ),
    )


@st.composite
def turn_outcomes(draw: st.DrawFn, step: RunTurn) -> TurnOutcome:
    """What one CLI run could come to."""
    kind = draw(
        st.sampled_from(
            ["done"] * 10 + ["sleep"] * 2 + ["retry", "too_long", "stale", "timeout", "esc"]
        )
    )
    usage = Usage(input_tokens=draw(st.integers(0, 400)), output_tokens=draw(st.integers(0, 100)))
    common: dict[str, Any] = {
        "usage": usage,
        "cost_usd": draw(st.sampled_from([0.0, 0.001, 0.05])),
        "context_tokens": draw(st.sampled_from([100, 500, 900])),
        "session_id": step.resume_session or f"s-{step.turn}-{draw(st.integers(0, 9))}",
        "tool_uses": draw(st.integers(0, 2)),
    }
    error = draw(st.none() | st.sampled_from(TOOL_ERRORS))
    if error is not None:
        run = draw(st.integers(1, 3))
        common.update(
            tool_error=error, tool_error_run=run, tool_results=run + draw(st.integers(0, 1))
        )
    if step.compact:
        common["compact_post_tokens"] = 50
    match kind:
        case "done":
            return TurnOutcome(TurnKind.CLAIMED_DONE, Cause.COMPLETED, final_text="Done.", **common)
        case "sleep":
            ms = draw(st.sampled_from([1_000, 60_000]))
            return TurnOutcome(
                TurnKind.SLEEP, Cause.SLEEP_REQUESTED, reason="CI", sleep_ms=ms, **common
            )
        case "retry":
            return TurnOutcome(TurnKind.CONTINUE, Cause.API_ERROR_RETRYABLE, reason="529", **common)
        case "too_long":
            return TurnOutcome(
                TurnKind.CONTINUE,
                Cause.PROMPT_TOO_LONG,
                reason="too long",
                hint=COMPACT_HINT,
                **common,
            )
        case "stale":
            return TurnOutcome(
                TurnKind.CONTINUE,
                Cause.SESSION_INVALID,
                reason="No conversation found",
                session_invalid=True,
                **common,
            )
        case "timeout":
            return TurnOutcome(TurnKind.CONTINUE, Cause.TIMEOUT, reason="turn timeout", **common)
        case _:
            return TurnOutcome(TurnKind.ESCALATE, Cause.API_ERROR, reason="401", **common)


@attrs.define
class Run:
    """One goal run by the model shell: its log and the steps it took."""

    goal: Goal
    config: Config
    now: float = 1_000_000.0
    state: GoalState = attrs.Factory(lambda: initial_state(GOAL_ID))
    log: list[GoalEvent] = attrs.Factory(list)
    steps: list[tuple[int, float, Step]] = attrs.Factory(list)
    """``(events recorded so far, the clock, the step next_step gave then)``."""
    outcome: Any = None

    def record(self, event: GoalEvent) -> None:
        """Stamp, log and fold one event, as the orchestrator's emit does."""
        event = attrs.evolve(event, at=self.now)
        self.log.append(event)
        self.state = apply(self.state, event)

    def control(self, event: ControlEvent) -> None:
        """An operator's control, recorded between steps."""
        self.record(event)

    def begin(self) -> bool:
        """Take the goal up (``begin``); False when it reports a recorded outcome."""
        step = begin(self.state, self.goal, self.config, self.now)
        if isinstance(step, Finish):
            self.outcome = step.outcome
            return False
        self.record(run_started(self.goal, step, self.state, workspace="/ws", pid=1))
        return True

    def next(self) -> Step:
        """The machine's next step, noted with where the log stood."""
        step = next_step(self.state, self.goal, self.config, self.now)
        self.steps.append((len(self.log), self.now, step))
        return step

    def play(self, step: Step, data: st.DataObject, *, crash_in_turn: bool = False) -> bool:
        """Run one step; True once the goal finished. ``crash_in_turn``: stop in the middle
        of a turn (after it started and maybe bound a session), as a kill -9 would."""
        match step:
            case Begin():
                self.record(run_started(self.goal, step, self.state, workspace="/ws", pid=1))
            case Record(events=events):
                for event in events:
                    self.record(event)
            case RunTurn():
                self._turn(step, data, crash=crash_in_turn)
            case RunAcceptance(turn=turn):
                self.now += 1
                self.record(AcceptanceChecked(GOAL_ID, turn, *self._verdict(data)))
            case Sleep(until=until):
                self.now = max(self.now, until)
            case Wait():
                self.now += 5
                self.control(GoalResumed(GOAL_ID))  # the operator comes back
            case Finish(outcome=outcome, announce=announce):
                for event in announce:
                    self.record(event)
                self.record(GoalCompleted(GOAL_ID, outcome))
                self.outcome = outcome
                return True
        return False

    def _turn(self, step: RunTurn, data: st.DataObject, *, crash: bool) -> None:
        for event in turn_started(GOAL_ID, step):
            self.record(event)
        outcome = data.draw(turn_outcomes(step))
        self.now += data.draw(st.sampled_from([1.0, 10.0, 100.0]))
        if (
            outcome.session_id
            and outcome.session_id != self.state.session_id
            and not outcome.session_invalid
        ):
            self.record(SessionBound(GOAL_ID, outcome.session_id))
        for allowed in data.draw(st.lists(st.booleans(), max_size=2)):
            self.record(
                DecisionMade(
                    GOAL_ID, "Bash", "allow_once" if allowed else "deny", None, "rules", 1.0
                )
            )
        if crash:
            return
        self.record(turn_completed(GOAL_ID, step, outcome, duration_s=1.0))

    def _verdict(self, data: st.DataObject) -> tuple[bool, tuple[CheckResult, ...]]:
        if data.draw(st.integers(0, 3)) == 0:
            return True, (CheckResult(0, "tests", passed=True, message="exit code 0"),)
        label, message, evidence = data.draw(st.sampled_from(FAILURES))
        return False, (CheckResult(0, label, passed=False, message=message, evidence=evidence),)


def drive(
    goal: Goal,
    config: Config,
    data: st.DataObject,
    *,
    between: Callable[[Run], None] = lambda _: None,
    max_steps: int = 400,
) -> Run:
    """Run a goal to its end, calling ``between`` before each step (controls go there)."""
    run = Run(goal=goal, config=config)
    assert run.begin()
    for _ in range(max_steps):
        between(run)
        if run.play(run.next(), data):
            return run
    raise AssertionError(f"the goal did not finish in {max_steps} steps")
