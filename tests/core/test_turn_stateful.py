"""A stateful hypothesis test of one turn's lifecycle through reduce/classify."""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from nexo_trio.core.events import (
    Cancelled,
    DeadlineHit,
    Event,
    Frame,
    MalformedLine,
    ProcessExited,
    Result,
    Spawned,
    SpawnFailed,
    StdoutClosed,
)
from nexo_trio.core.outcome import TurnKind, TurnOutcome
from nexo_trio.core.turn import INITIAL_STATE, Phase, TurnState, classify, reduce
from tests.core.strategies import non_result_frames, process_exits, results

PHASE_ORDER = {Phase.PENDING: 0, Phase.RUNNING: 1, Phase.FINISHED: 2}


class TurnLifecycle(RuleBasedStateMachine):
    """Feed lifecycle events in any order; the reducer must keep its promises."""

    state: TurnState
    lines: int
    spawned: bool
    spawn_failed: bool
    closed: bool
    exit: ProcessExited | None
    decided: TurnOutcome | None

    @initialize()
    def start(self) -> None:
        self.state = INITIAL_STATE
        self.lines = 0
        self.spawned = False
        self.spawn_failed = False
        self.closed = False
        self.exit = None
        self.decided = None

    def feed(self, event: Event) -> None:
        before = self.state
        self.state = reduce(self.state, event)
        assert PHASE_ORDER[self.state.phase] >= PHASE_ORDER[before.phase]

    @property
    def pending(self) -> bool:
        return not (self.spawned or self.spawn_failed or (self.closed and self.exit is not None))

    @rule(pid=st.integers(min_value=1, max_value=99999))
    def spawn(self, pid: int) -> None:
        took = self.pending
        self.feed(Spawned(pid=pid))
        if took:
            self.spawned = True
            assert self.state.phase is Phase.RUNNING
            assert self.state.pid == pid

    @rule()
    def spawn_fails(self) -> None:
        took = self.pending and self.decided is None
        self.feed(SpawnFailed("No such file or directory"))
        if took:
            self.spawn_failed = True
            assert self.state.spawn_error == "No such file or directory"

    @rule(frame=non_result_frames)
    def frame(self, frame: Frame) -> None:
        self.feed(frame)
        self.lines += 1

    @rule(frame=results)
    def result(self, frame: Result) -> None:
        self.feed(frame)
        self.lines += 1
        if self.decided is None:
            self.decided = classify(self.state)

    @rule(line_no=st.integers(min_value=1, max_value=10**6))
    def malformed_line(self, line_no: int) -> None:
        self.feed(MalformedLine(line_no=line_no, excerpt="{", error="invalid JSON"))
        self.lines += 1

    @rule()
    def stdout_closed(self) -> None:
        self.feed(StdoutClosed())
        self.closed = True

    @rule(exit_=process_exits)
    def exited(self, exit_: ProcessExited) -> None:
        self.feed(exit_)
        if self.exit is None:
            self.exit = exit_

    @rule(timeout=st.floats(min_value=0.1, max_value=600))
    def deadline(self, timeout: float) -> None:
        self.feed(DeadlineHit(timeout))

    @rule(reason=st.sampled_from(["cancelled", "operator"]))
    def cancel(self, reason: str) -> None:
        self.feed(Cancelled(reason))

    @invariant()
    def finished_iff_closed_and_exited_or_spawn_failed(self) -> None:
        expected = (self.closed and self.exit is not None) or self.spawn_failed
        assert self.state.finished is expected
        assert self.state.stdout_closed is self.closed
        assert self.state.exit == self.exit
        assert (self.state.spawn_error is not None) is self.spawn_failed

    @invariant()
    def classify_never_raises_and_counts_lines(self) -> None:
        outcome = classify(self.state)
        assert outcome.events == self.lines
        assert outcome.malformed_lines <= self.lines
        if self.spawn_failed:
            assert outcome.kind is TurnKind.ESCALATE

    @invariant()
    def once_a_result_is_in_the_kind_is_fixed(self) -> None:
        if self.decided is not None:
            now = classify(self.state)
            assert (now.kind, now.cause, now.reason) == (
                self.decided.kind,
                self.decided.cause,
                self.decided.reason,
            )
            assert now.session_id == self.decided.session_id
            assert now.usage == self.decided.usage


TurnLifecycle.TestCase.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
TestTurnLifecycle = TurnLifecycle.TestCase
