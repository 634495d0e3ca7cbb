"""The goal state machine: ``apply(state, event) -> state`` and ``next_step(...) -> Step``.

Pure functions over frozen records, the turn reducer's shape one level up. The goal's events
(:mod:`nexo_trio.core.goal_events`, what the ledger stores) fold into a :class:`GoalState`;
:func:`next_step` says what to do next; the orchestrator's shell runs the step and records
the events it produces, which fold in again. Recovery after a crash is the same fold over
the ledger, so a re-run goes on exactly where the uninterrupted run was. Nothing about a
goal is counted anywhere else.

Rules of ``apply`` (the fold; config-free: every decision it applies was recorded)
---------------------------------------------------------------------------------
1. ``at`` of every event advances ``last_at``. Wall time is the sum of the goal's runs: a
   run lasts from its ``goal_started`` to its ``goal_completed``, or, for a run that
   crashed, to its last event. Time no process spent on the goal is not counted.
2. ``goal_started`` begins a run: operator controls of the previous run (cancel, pause) are
   dropped, and after an escalation its error streaks too. A turn left open by a crash
   stays open: the next step runs it again, with the same number and prompt, counted once.
3. ``goal_restarted`` starts the goal over: everything is forgotten (budget, session,
   failures, queued messages).
4. ``attempt_started`` opens a turn and takes its operator messages off the queue; its
   checkpoint (the workspace before the turn) is the turn's, unless an earlier attempt of
   the same turn number already has one, and its marker; ``turn_spawned`` adds its CLI's
   identity (what a later run stops of it after a crash: :func:`crash_leftovers`).
   ``checkpoint_failed`` escalates. ``session_bound`` sets the session. ``decision_made``
   counts an allowed or denied tool call: an allow ends the run of consecutive denials, a
   deny extends it; a call the gate refused because the turn is being stopped
   (``cancelled``) is denied but leaves the run as it is (no decider denied it).
5. ``attempt_completed`` closes the turn with what it spent (tokens, cost, the context size
   for the compaction policy, denials the CLI reports beyond the gate's) and waits for its
   judgement. ``replay_decided`` applies it: counted turns, consecutive errors, the replay
   policy's state, a dropped session (its messages go back on the queue, ahead of newer
   ones, since they never reached Claude), a compaction forced or done, acceptance due
   after a claimed completion. A turn that reached Claude has delivered its messages, its
   wake-up tick, its fresh-start and rollback notes: each goes out once. A retry of a turn
   that timed out with ``replay.rollback_on_timeout`` asks for a rollback first.
6. ``acceptance_checked``: met -> done; not met -> its failures open every work prompt
   until the next acceptance or a wake-up, and the streak of identical failures grows.
7. ``rolled_back``: the workspace is back at a checkpoint: the next work prompt says so, the
   last failures and changes no longer apply, a ``done`` goal is open again.
   ``workspace_cleaned``: its checkpoints are gone; the next work prompt says so. The
   workspace's last known commit (``workspace_commit``: where a worktree made fresh on
   another host goes on from) follows a turn's first checkpoint, a turn's end (its
   ``after``) and a rollback's target; cleaning forgets it.
8. ``sleeping`` plans a wake-up time; ``woke_up`` ends the sleep (the next prompt says so).
   ``stuck_detected`` with ``fresh_session`` drops the session and resets the streaks.
9. Operator controls set what they say (cancel, pause, resume, queue a message, raise
   ``max_turns``). ``goal_completed`` records the outcome and ends the run.

Rules of ``next_step`` (first match wins; ``now`` is seconds since the epoch)
----------------------------------------------------------------------------
* not running: :func:`begin` (report a recorded end, or begin a run);
* a finished turn not judged yet -> record the replay decision (and a sleep plan, progress);
* acceptance due (not cancelled) -> run acceptance;
* done -> finish ``done``; cancel requested -> ``cancelled``; an escalation ->
  ``escalated``; a budget axis exhausted (all six, ``max_turns`` as raised by an
  operator) -> ``budget_exhausted``;
* a turn still open (a crash interrupted it) -> run it again;
* a rollback the replay policy decided on -> restore the checkpoint;
* stuck -> record it (fresh session) or finish ``escalated`` "stuck: ...";
* paused -> wait;
* sleeping: an operator message is queued, or the time has come -> record the wake-up;
  else sleep until then (never past the wall-time budget);
* a compaction due -> a ``/compact`` turn (not counted, delivers no messages);
* otherwise a work turn: the next number, the composed prompt, the current session, a
  timeout that never outlasts the wall-time budget.

A turn that timed out as the wall-time budget ran out is judged ``proceed``, not retried
(nor given up on as an escalation): the goal ends ``budget_exhausted`` on ``wall_time``.

While a step runs, the shell folds every event it records, and passes the running turn's
live spend (``live``: tokens and cost read from its stream, counted while that turn is open
only, so never twice); when :func:`supersedes` says the step no longer stands (a cancel, a
budget run out mid-turn: denials, tokens, cost; a wake-up), it stops the step.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TypeAlias

import attrs

from nexo_trio.core.acceptance import Failure, Verdict
from nexo_trio.core.budget import (
    BudgetAxis,
    LiveSpend,
    Spent,
    axis_exhausted,
    describe_exhaustion,
    exhausted_axis,
    with_live,
)
from nexo_trio.core.checkpoints import Checkpoint, DiffStat
from nexo_trio.core.command import ClaudeCommand
from nexo_trio.core.compact import compact_prompt, should_compact
from nexo_trio.core.events import Usage
from nexo_trio.core.goal import Budget, Goal
from nexo_trio.core.goal_events import (
    AcceptanceChecked,
    AttemptCompleted,
    AttemptStarted,
    BudgetExhausted,
    CancelRequested,
    CheckpointFailed,
    CompactScheduled,
    ControlEvent,
    DecisionMade,
    Escalated,
    GoalCompleted,
    GoalEvent,
    GoalPaused,
    GoalProgress,
    GoalRestarted,
    GoalResumed,
    GoalStarted,
    InterruptDelivered,
    InterruptQueued,
    MaxTurnsRaised,
    ReplayDecided,
    RolledBack,
    SessionBound,
    Sleeping,
    StuckDetected,
    TurnSpawned,
    WokeUp,
    WorkspaceCleaned,
    WorkspaceInfo,
)
from nexo_trio.core.goal_outcome import GoalEndKind, GoalOutcome
from nexo_trio.core.outcome import Cause, TurnKind, TurnOutcome
from nexo_trio.core.permission import DecisionOutcome
from nexo_trio.core.processes import ProcessIdentity
from nexo_trio.core.prompt import SYSTEM_PROMPT, WakeUp, compose_prompt
from nexo_trio.core.replay import (
    ReplayAction,
    ReplayDecision,
    ReplayState,
    decide_replay,
    replay_after,
)
from nexo_trio.core.settings import ClaudeSettings, Config

# --------------------------------------------------------------------------- the state


@attrs.frozen
class OpenAttempt:
    """A turn that started and has not completed (yet, or ever: a crash)."""

    turn: int
    compact: bool
    prompt: str
    resume_session: str | None
    interrupts: tuple[str, ...] = ()
    gate_allowed: int = 0
    gate_denied: int = 0
    checkpoint: str | None = None
    marker: str | None = None
    """The turn's marker (in the environment of its processes)."""
    process: ProcessIdentity | None = None
    """The turn's CLI process, once it runs (``turn_spawned``)."""


@attrs.frozen
class EndedAttempt:
    """A turn that completed and waits for the replay decision."""

    completed: AttemptCompleted
    resume_session: str | None
    interrupts: tuple[str, ...]
    checkpoint: str | None = None


@attrs.frozen
class SleepPlan:
    """Claude asked to sleep: until when (seconds since the epoch), and why."""

    until: float
    duration_ms: int
    reason: str | None
    since: float


@attrs.frozen
class GoalState:
    """Everything the goal machine knows about one goal: the fold of its events."""

    goal_id: str = ""
    # runs and time
    running: bool = False
    runs: int = 0
    run_started_at: float = 0.0
    wall_closed_s: float = 0.0
    """Wall time of the runs that ended (or crashed)."""
    last_at: float = 0.0
    # spend
    turns: int = 0
    usage: Usage = attrs.field(factory=Usage)
    cost_usd: float = 0.0
    consecutive_errors: int = 0
    consecutive_denies: int = 0
    allowed: int = 0
    denied: int = 0
    # the conversation and what the next work prompt shows
    session_id: str | None = None
    final_text: str | None = None
    verdict: Verdict | None = None
    failures: tuple[Failure, ...] = ()
    wake_up: WakeUp | None = None
    fresh_start: str | None = None
    interrupts: tuple[str, ...] = ()
    last_changes: DiffStat | None = None
    """What the last work turn changed (checkpointed workspaces)."""
    rolled_back: str | None = None
    """What a rollback undid, for the next work turn's prompt."""
    # the workspace's checkpoints
    checkpoints: tuple[Checkpoint, ...] = ()
    """The checkpoint of each turn, taken before its first attempt, by turn."""
    turn_ends: tuple[Checkpoint, ...] = ()
    """The workspace right after each turn (its last attempt), by turn."""
    workspace_commit: str | None = None
    """The commit the workspace was last known at, on a ref of the goal's: the checkpoint of
    a turn's first attempt, the end of a turn, a rollback's target (``None``: none, or
    cleaned). Where a worktree made fresh on another host goes on from."""
    rollback_due: Restore | None = None
    """A rollback the replay policy decided on, not done yet."""
    # the step in progress
    attempt: OpenAttempt | None = None
    ended: EndedAttempt | None = None
    acceptance_due: int | None = None
    done: bool = False
    sleep: SleepPlan | None = None
    escalation: str | None = None
    # policies
    replay: ReplayState = attrs.field(factory=ReplayState)
    turns_since_compact: int | None = None
    force_compact: bool = False
    last_context_tokens: int = 0
    check_signature: str | None = None
    check_streak: int = 0
    tool_error: str | None = None
    tool_error_streak: int = 0
    stuck_fresh_used: bool = False
    # operators
    paused: bool = False
    cancel_reason: str | None = None
    max_turns: int | None = None
    """``max_turns`` as an operator raised it (the goal's own applies when higher)."""
    # the end
    outcome: GoalOutcome | None = None
    """How the latest run ended (``None`` while running, or before the first run)."""

    def wall_time_s(self, now: float) -> float:
        """The goal's wall time at ``now``: its ended runs plus the running one."""
        if not self.running:
            return self.wall_closed_s
        return self.wall_closed_s + max(0.0, now - self.run_started_at)

    def spent(self, now: float) -> Spent:
        """What the goal has spent on every budget axis at ``now``."""
        return Spent(
            turns=self.turns,
            wall_time_s=self.wall_time_s(now),
            usage=self.usage,
            cost_usd=self.cost_usd,
            consecutive_errors=self.consecutive_errors,
            consecutive_denies=self.consecutive_denies,
        )


def initial_state(goal_id: str) -> GoalState:
    """The state of a goal with no events."""
    return GoalState(goal_id=goal_id)


# --------------------------------------------------------------------------- the fold


def fold(events: Iterable[GoalEvent], state: GoalState) -> GoalState:
    """Apply ``events`` in order."""
    for event in events:
        state = apply(state, event)
    return state


def apply(state: GoalState, event: GoalEvent) -> GoalState:
    """Fold one event into the goal's state (pure; rules in the module docstring)."""
    after = _transition(state, event)
    if event.at > after.last_at:
        after = attrs.evolve(after, last_at=event.at)
    return after


def _transition(state: GoalState, event: GoalEvent) -> GoalState:
    match event:
        case GoalStarted():
            return _start_run(state, event)
        case GoalRestarted():
            return GoalState(goal_id=state.goal_id, last_at=state.last_at)
        case AttemptStarted():
            queue = _without(state.interrupts, event.interrupts)
            attempt = OpenAttempt(
                turn=event.turn,
                compact=event.compact,
                prompt=event.prompt,
                resume_session=event.resume_session,
                interrupts=event.interrupts,
                checkpoint=event.checkpoint,
                marker=event.marker,
            )
            checkpoints, commit = state.checkpoints, state.workspace_commit
            if event.checkpoint is not None and checkpoint_of(state, event.turn) is None:
                checkpoints = (*checkpoints, Checkpoint(turn=event.turn, sha=event.checkpoint))
                commit = event.checkpoint  # a retry's own checkpoint is on no ref
            return attrs.evolve(
                state,
                attempt=attempt,
                interrupts=queue,
                sleep=None,
                checkpoints=checkpoints,
                workspace_commit=commit,
            )
        case CheckpointFailed(turn=turn, reason=reason):
            failed = f"cannot checkpoint the workspace before turn {turn}: {reason}"
            return attrs.evolve(state, escalation=state.escalation or failed, rollback_due=None)
        case RolledBack():
            return _rolled_back(state, event)
        case WorkspaceCleaned(removed=removed, by=by):
            note = (
                f"The goal's workspace was cleaned up (by {by}: {', '.join(removed)}) and made "
                "again: files of earlier turns are gone unless they were committed on its "
                "branch. Look at the workspace as it is now and continue toward the goal."
            )
            return attrs.evolve(
                state,
                checkpoints=(),
                turn_ends=(),
                workspace_commit=None,
                rollback_due=None,
                rolled_back=note,
                last_changes=None,
            )
        case SessionBound(session_id=session_id):
            return attrs.evolve(state, session_id=session_id)
        case TurnSpawned():
            running = state.attempt
            if running is None or running.turn != event.turn or event.pid < 1 or event.start < 0:
                return state
            process = ProcessIdentity(pid=event.pid, start=event.start, boot=event.boot)
            return attrs.evolve(state, attempt=attrs.evolve(running, process=process))
        case DecisionMade():
            return _count_decision(state, event)
        case AttemptCompleted():
            return _complete(state, event)
        case ReplayDecided():
            return _judge(state, event)
        case AcceptanceChecked():
            return _accepted(state, event)
        case StuckDetected(action="fresh_session", reason=reason):
            return attrs.evolve(
                state,
                session_id=None,
                stuck_fresh_used=True,
                fresh_start=reason,
                check_signature=None,
                check_streak=0,
                tool_error=None,
                tool_error_streak=0,
            )
        case Sleeping():
            plan = SleepPlan(
                until=event.until,
                duration_ms=event.duration_ms,
                reason=event.reason,
                since=event.at,
            )
            return attrs.evolve(state, sleep=plan)
        case WokeUp(slept_ms=slept_ms, early=early):
            why = state.sleep.reason if state.sleep is not None else None
            return attrs.evolve(
                state,
                sleep=None,
                wake_up=WakeUp(slept_ms=slept_ms, reason=why, early=early),
                failures=(),
                check_signature=None,
                check_streak=0,
            )
        case CancelRequested(reason=reason):
            return attrs.evolve(state, cancel_reason=state.cancel_reason or reason)
        case GoalPaused():
            return attrs.evolve(state, paused=True)
        case GoalResumed():
            return attrs.evolve(state, paused=False)
        case InterruptQueued(message=message):
            return attrs.evolve(state, interrupts=(*state.interrupts, message))
        case InterruptDelivered(message=message):
            return attrs.evolve(state, interrupts=_without(state.interrupts, (message,)))
        case MaxTurnsRaised(max_turns=max_turns):
            return attrs.evolve(state, max_turns=max_turns)
        case GoalCompleted(outcome=outcome):
            closed = state.wall_time_s(event.at) if state.running else state.wall_closed_s
            return attrs.evolve(state, running=False, wall_closed_s=closed, outcome=outcome)
        case _:
            # Informational events (activity, compaction scheduled, progress, the end's
            # announcements, the turn's record: assistant_text, tool_called) change
            # nothing the machine decides on.
            return state


def _start_run(state: GoalState, event: GoalStarted) -> GoalState:
    closed = state.wall_time_s(state.last_at) if state.running else state.wall_closed_s
    previous = state.outcome
    state = attrs.evolve(
        state,
        running=True,
        runs=state.runs + 1,
        run_started_at=event.at,
        wall_closed_s=closed,
        paused=False,
        cancel_reason=None,
        escalation=None,
        outcome=None,
    )
    if previous is not None and previous.kind is GoalEndKind.ESCALATED:
        # Someone looked at what escalated and runs the goal again: a fresh try.
        state = attrs.evolve(
            state,
            consecutive_errors=0,
            replay=ReplayState(),
            check_signature=None,
            check_streak=0,
            tool_error=None,
            tool_error_streak=0,
            stuck_fresh_used=False,
        )
    return state


def _without(queue: tuple[str, ...], taken: tuple[str, ...]) -> tuple[str, ...]:
    """``queue`` without the messages a turn took (they were at its front when it started)."""
    if queue[: len(taken)] == taken:
        return queue[len(taken) :]
    rest = list(queue)
    for message in taken:
        if message in rest:
            rest.remove(message)
    return tuple(rest)


def _count_decision(state: GoalState, event: DecisionMade) -> GoalState:
    attempt = state.attempt
    if event.allowed:
        if attempt is not None:
            attempt = attrs.evolve(attempt, gate_allowed=attempt.gate_allowed + 1)
        return attrs.evolve(state, allowed=state.allowed + 1, consecutive_denies=0, attempt=attempt)
    if attempt is not None:
        attempt = attrs.evolve(attempt, gate_denied=attempt.gate_denied + 1)
    # A call refused because the turn is being stopped (a budget reached, a cancel) is
    # denied, but by no decider: the run of denials stays as it is (it reached its limit).
    stopping = event.outcome == DecisionOutcome.CANCELLED.value
    return attrs.evolve(
        state,
        denied=state.denied + 1,
        consecutive_denies=state.consecutive_denies + (0 if stopping else 1),
        attempt=attempt,
    )


def _complete(state: GoalState, event: AttemptCompleted) -> GoalState:
    attempt = state.attempt
    if attempt is None or attempt.turn != event.turn or attempt.compact != event.compact:
        attempt = OpenAttempt(
            turn=event.turn, compact=event.compact, prompt="", resume_session=state.session_id
        )
    # The CLI reports every denial of the turn, the gate's included; the ones beyond the
    # gate's were its own rules' (they never reached a decider).
    extra = max(0, event.permission_denials - attempt.gate_denied)
    consecutive = state.consecutive_denies
    if attempt.gate_allowed:
        pass  # the gate's decisions already told the exact run
    elif extra:
        consecutive += extra
    elif event.tool_uses and not attempt.gate_denied:
        consecutive = 0  # pre-allowed tools ran
    context = event.context_tokens
    if event.compact and event.compact_post_tokens is not None:
        context = event.compact_post_tokens
    tool_error, streak = state.tool_error, state.tool_error_streak
    if not event.compact:
        if event.tool_error is None:
            tool_error, streak = None, 0
        elif event.tool_error == tool_error and event.tool_error_run == event.tool_results:
            streak += event.tool_error_run  # the whole turn repeated the same error
        else:
            tool_error, streak = event.tool_error, event.tool_error_run
    return attrs.evolve(
        state,
        attempt=None,
        ended=EndedAttempt(
            completed=event,
            resume_session=attempt.resume_session,
            interrupts=attempt.interrupts,
            checkpoint=attempt.checkpoint,
        ),
        last_changes=state.last_changes if event.compact else event.changes,
        turn_ends=_with_end(state.turn_ends, event),
        workspace_commit=(
            event.after if event.after is not None and not event.compact else state.workspace_commit
        ),
        usage=state.usage + event.usage,
        cost_usd=state.cost_usd + event.cost_usd,
        denied=state.denied + extra,
        consecutive_denies=consecutive,
        last_context_tokens=context,
        final_text=(
            event.final_text
            if event.final_text is not None and not event.compact
            else state.final_text
        ),
        tool_error=tool_error,
        tool_error_streak=streak,
    )


def _judge(state: GoalState, event: ReplayDecided) -> GoalState:
    ended = state.ended
    if ended is None:
        return state
    completed = ended.completed
    action = ReplayAction(event.action)
    turns = state.turns + (1 if event.counted else 0)
    since = state.turns_since_compact
    if event.counted and since is not None:
        since += 1
    force = state.force_compact
    if completed.compact and action is ReplayAction.PROCEED:
        since, force = 0, False
    if action is ReplayAction.COMPACT:
        force = True
    changes: dict[str, object] = {
        "ended": None,
        "turns": turns,
        "turns_since_compact": since,
        "force_compact": force,
        "consecutive_errors": state.consecutive_errors + 1 if event.is_error else 0,
        "replay": replay_after(state.replay, action),
    }
    if event.invalid_session is not None:
        changes["session_id"] = None
    if action is ReplayAction.FRESH_SESSION:
        # The turn never reached Claude: its messages go out again, ahead of newer ones.
        changes["session_id"] = None
        changes["interrupts"] = (*ended.interrupts, *state.interrupts)
    elif not completed.compact:
        changes.update(wake_up=None, fresh_start=None, rolled_back=None)
    if event.rollback_to is not None:
        changes["rollback_due"] = Restore(
            turn=completed.turn, sha=event.rollback_to, reason=event.reason or "timed out"
        )
    if action is ReplayAction.ESCALATE:
        changes["escalation"] = event.reason or "escalated"
    elif (
        action is ReplayAction.PROCEED
        and not completed.compact
        and completed.kind == TurnKind.CLAIMED_DONE.value
    ):
        changes["acceptance_due"] = completed.turn
    return attrs.evolve(state, **changes)  # type: ignore[arg-type]


def _with_end(ends: tuple[Checkpoint, ...], event: AttemptCompleted) -> tuple[Checkpoint, ...]:
    if event.after is None or event.compact:
        return ends
    kept = tuple(c for c in ends if c.turn != event.turn)
    return tuple(sorted((*kept, Checkpoint(turn=event.turn, sha=event.after)), key=_by_turn))


def _by_turn(checkpoint: Checkpoint) -> int:
    return checkpoint.turn


def checkpoint_of(state: GoalState, turn: int) -> str | None:
    """The checkpoint taken before turn ``turn``'s first attempt, if any."""
    return next((c.sha for c in state.checkpoints if c.turn == turn), None)


def _rolled_back(state: GoalState, event: RolledBack) -> GoalState:
    where = f"before turn {event.turn}" if event.turn is not None else "at a checkpoint"
    note = (
        f"The workspace was rolled back to how it was {where} (checkpoint {event.sha[:12]}, "
        f"by {event.by}{f': {event.reason}' if event.reason else ''}): every change made "
        "since then is undone, files created since are gone and files deleted since are "
        "back. Look at the workspace as it is now and continue toward the goal from there."
    )
    return attrs.evolve(
        state,
        rollback_due=None,
        rolled_back=note,
        workspace_commit=event.sha,
        failures=(),
        last_changes=None,
        check_signature=None,
        check_streak=0,
        done=False,
    )


def _accepted(state: GoalState, event: AcceptanceChecked) -> GoalState:
    verdict = Verdict(results=event.results)
    if verdict.met:
        return attrs.evolve(state, acceptance_due=None, verdict=verdict, done=True)
    failures = verdict.failures
    signature = "\x00".join(f"{f.index}\x01{f.message}\x01{f.evidence}" for f in failures)
    streak = state.check_streak + 1 if signature == state.check_signature else 1
    return attrs.evolve(
        state,
        acceptance_due=None,
        verdict=verdict,
        failures=failures,
        wake_up=None,
        check_signature=signature,
        check_streak=streak,
    )


# --------------------------------------------------------------------------- the steps


@attrs.frozen
class Begin:
    """Begin a run: record ``goal_started`` (``resumed_after``: how the last run ended)."""

    resumed_after: str | None = None


@attrs.frozen
class RunTurn:
    """Run one CLI turn. ``compact``: a ``/compact`` turn; ``redo``: a crash interrupted
    this turn, run it again."""

    turn: int
    compact: bool
    prompt: str
    resume_session: str | None
    timeout_s: float
    interrupts: tuple[str, ...] = ()
    context_tokens: int = 0
    forced: bool = False
    redo: bool = False
    checkpoint: str | None = None
    """The turn's checkpoint when it has one already (a redo keeps its first one)."""


@attrs.frozen
class RunAcceptance:
    """Run the goal's acceptance checks after turn ``turn`` claimed completion."""

    turn: int


@attrs.frozen
class Sleep:
    """Wait until ``until`` (seconds since the epoch) for the sleep Claude asked for."""

    until: float


@attrs.frozen
class Wait:
    """Wait for an operator (the goal is paused)."""

    reason: str = "paused"


@attrs.frozen
class Restore:
    """Put the workspace back to the checkpoint ``sha`` of turn ``turn`` before the next
    turn (the replay policy's ``rollback_on_timeout``), then record ``rolled_back``."""

    turn: int
    sha: str
    reason: str


@attrs.frozen
class Record:
    """A decision that needs no I/O: record these events."""

    events: tuple[GoalEvent, ...]


@attrs.frozen
class Finish:
    """The goal ends with ``outcome``: record ``announce`` first (budget, escalation).
    ``recorded``: the outcome is the one the ledger already holds (nothing to record)."""

    outcome: GoalOutcome
    announce: tuple[GoalEvent, ...] = ()
    recorded: bool = False


Step: TypeAlias = Begin | RunTurn | RunAcceptance | Restore | Sleep | Wait | Record | Finish


def effective_budget(goal: Goal, state: GoalState) -> Budget:
    """The goal's budget with ``max_turns`` as an operator raised it."""
    raised, own = state.max_turns, goal.budget.max_turns
    if raised is None or own is None:
        return goal.budget
    return attrs.evolve(goal.budget, max_turns=max(raised, own))


def begin(state: GoalState, goal: Goal, config: Config, now: float) -> Begin | Finish:
    """What a process taking the goal up does: report how it ended, or begin a run.

    A goal that ended ``done`` reports its recorded outcome; one that ended on a budget
    reports it too, unless the goal now allows more on that axis (then it goes on, its
    spend carried); one that was cancelled, escalated or crashed goes on.
    """
    if state.running:
        return Begin(resumed_after="crashed")
    recorded = state.outcome
    if recorded is None:
        return Begin()
    match recorded.kind:
        case GoalEndKind.DONE if state.done:
            return Finish(recorded, recorded=True)
        case GoalEndKind.BUDGET_EXHAUSTED:
            axis = recorded.axis
            still = axis is not None and axis_exhausted(
                axis, effective_budget(goal, state), state.spent(now)
            )
            if still:
                return Finish(recorded, recorded=True)
    return Begin(resumed_after=recorded.kind.value)


def live_spent(state: GoalState, now: float, live: LiveSpend | None) -> Spent:
    """What the goal has spent at ``now``, with the running turn's live spend while that
    turn is open: once its ``attempt_completed`` is folded, the turn's own figures are in
    the state and the live ones no longer count (a turn is never counted twice)."""
    spent = state.spent(now)
    attempt = state.attempt
    if live is None or attempt is None:
        return spent
    if (attempt.turn, attempt.compact) != (live.turn, live.compact):
        return spent
    return with_live(spent, live)


def next_step(
    state: GoalState, goal: Goal, config: Config, now: float, live: LiveSpend | None = None
) -> Step:
    """What to do next (pure; rules in the module docstring). ``live``: what the running
    turn has spent so far (see :func:`live_spent`)."""
    if not state.running:
        return begin(state, goal, config, now)
    if state.ended is not None:
        return _judgement(state, goal, config, now)
    if state.acceptance_due is not None and state.cancel_reason is None:
        return RunAcceptance(turn=state.acceptance_due)
    if state.done:
        return _finish(state, goal, GoalEndKind.DONE, None, now)
    if state.cancel_reason is not None:
        return _finish(state, goal, GoalEndKind.CANCELLED, state.cancel_reason, now)
    if state.escalation is not None:
        reason = state.escalation
        return _finish(state, goal, GoalEndKind.ESCALATED, reason, now, Escalated(goal.id, reason))
    budget = effective_budget(goal, state)
    spent = live_spent(state, now, live)
    wall_deadline = _wall_deadline(budget, state)
    if budget.max_wall_time_s is not None and now >= wall_deadline:
        # The deadline is reached: the wall time summed back may fall short of the limit
        # by a rounding error, and a sleep until the deadline would then start again.
        spent = attrs.evolve(spent, wall_time_s=max(spent.wall_time_s, budget.max_wall_time_s))
    axis = exhausted_axis(budget, spent)
    if axis is not None:
        reason = describe_exhaustion(axis, budget, spent)
        announce = BudgetExhausted(goal.id, axis.value, reason)
        return _finish(state, goal, GoalEndKind.BUDGET_EXHAUSTED, reason, now, announce, axis=axis)
    timeout = min(config.turn_timeout_s, wall_deadline - now)
    if state.attempt is not None:
        attempt = state.attempt
        return RunTurn(
            turn=attempt.turn,
            compact=attempt.compact,
            prompt=attempt.prompt,
            resume_session=state.session_id,
            timeout_s=timeout,
            interrupts=attempt.interrupts,
            redo=True,
            checkpoint=attempt.checkpoint,
        )
    if state.rollback_due is not None:
        return state.rollback_due
    stuck = _stuck(state, config)
    if stuck is not None:
        action = config.stuck.action
        if action == "fresh_session_then_escalate" and not state.stuck_fresh_used:
            return Record((StuckDetected(goal.id, stuck, "fresh_session"),))
        reason = f"stuck: {stuck}"
        return _finish(
            state,
            goal,
            GoalEndKind.ESCALATED,
            reason,
            now,
            StuckDetected(goal.id, stuck, "escalate"),
            Escalated(goal.id, reason),
        )
    if state.paused:
        return Wait()
    if state.sleep is not None:
        plan = state.sleep
        if state.interrupts or now >= plan.until:
            early = now < plan.until
            slept = plan.duration_ms if not early else max(0, int((now - plan.since) * 1000))
            return Record((WokeUp(goal.id, slept, early=early),))
        return Sleep(until=min(plan.until, wall_deadline))
    if state.session_id is not None and should_compact(
        config.compact,
        last_context_tokens=state.last_context_tokens,
        turns_since_compact=state.turns_since_compact,
        forced=state.force_compact,
    ):
        return RunTurn(
            turn=state.turns,
            compact=True,
            prompt=compact_prompt(),
            resume_session=state.session_id,
            timeout_s=timeout,
            context_tokens=state.last_context_tokens,
            forced=state.force_compact,
        )
    prompt = compose_prompt(
        goal.description,
        interrupts=state.interrupts,
        wake_up=state.wake_up,
        failures=state.failures,
        fresh_start=state.fresh_start,
        rolled_back=state.rolled_back,
        changes=state.last_changes,
    )
    return RunTurn(
        turn=state.turns + 1,
        compact=False,
        prompt=prompt,
        resume_session=state.session_id,
        timeout_s=timeout,
        interrupts=state.interrupts,
    )


def _wall_deadline(budget: Budget, state: GoalState) -> float:
    """When the running run reaches the wall-time budget (seconds since the epoch)."""
    if budget.max_wall_time_s is None:
        return math.inf
    return state.run_started_at + (budget.max_wall_time_s - state.wall_closed_s)


def _wall_time_up(budget: Budget, state: GoalState, now: float) -> bool:
    """Whether the running run has reached the wall-time budget's deadline at ``now``."""
    return budget.max_wall_time_s is not None and now >= _wall_deadline(budget, state)


def _judgement(state: GoalState, goal: Goal, config: Config, now: float) -> Record:
    ended = state.ended
    assert ended is not None
    completed = ended.completed
    outcome = TurnOutcome(
        kind=TurnKind(completed.kind),
        cause=Cause(completed.cause),
        reason=completed.reason,
        hint=completed.hint,
        session_invalid=completed.session_invalid,
    )
    decision, _ = decide_replay(outcome, state.replay, max_retries=config.replay.max_retries)
    if (
        outcome.cause is Cause.TIMEOUT
        and decision.action is not ReplayAction.PROCEED
        and _wall_time_up(effective_budget(goal, state), state, now)
    ):
        # Its deadline was the wall-time budget's: the goal ends on that budget, the turn
        # is neither retried nor given up on (an escalation would hide the budget).
        reason = f"the wall-time budget ran out during the turn ({outcome.reason})"
        decision = ReplayDecision(ReplayAction.PROCEED, reason)
    counted = decision.counts_as_turn and not completed.compact
    # The CLI refused the session: it is dropped whatever the policy does next (retry with a
    # fresh one or escalate), so a re-run never resumes it again.
    invalid = ended.resume_session if completed.session_invalid else None
    rollback_to = None
    if (
        config.replay.rollback_on_timeout
        and decision.action is ReplayAction.RETRY
        and outcome.cause is Cause.TIMEOUT
        and not completed.compact
    ):
        rollback_to = ended.checkpoint
    judged = ReplayDecided(
        goal.id,
        completed.turn,
        decision.action.value,
        decision.reason,
        counted=counted,
        is_error=decision.is_error,
        invalid_session=invalid,
        rollback_to=rollback_to,
    )
    events: list[GoalEvent] = [judged]
    after = apply(state, judged)
    if (
        decision.action is ReplayAction.PROCEED
        and not completed.compact
        and outcome.kind is TurnKind.SLEEP
    ):
        duration_ms = completed.sleep_ms or 0
        events.append(
            Sleeping(goal.id, duration_ms, completed.reason, until=now + duration_ms / 1000)
        )
    every = config.progress_every
    if counted and after.turns % every == 0:
        events.append(
            GoalProgress(
                goal.id,
                after.turns,
                after.usage.total_tokens,
                after.cost_usd,
                after.wall_time_s(now),
            )
        )
    return Record(tuple(events))


def _stuck(state: GoalState, config: Config) -> str | None:
    if config.stuck.action == "off":
        return None
    after = config.stuck.after
    if state.failures and state.check_streak >= after:
        count = len(state.failures)
        checks = f"{count} acceptance check{'s' if count != 1 else ''}"
        return (
            f"the same {checks} failed with the same evidence after {state.check_streak} "
            "claimed completions in a row"
        )
    if state.tool_error is not None and state.tool_error_streak >= after:
        shown = state.tool_error if len(state.tool_error) <= 120 else state.tool_error[:117] + "..."
        return f"the same tool error {state.tool_error_streak} times in a row: {shown}"
    return None


def _finish(
    state: GoalState,
    goal: Goal,
    kind: GoalEndKind,
    reason: str | None,
    now: float,
    *announce: GoalEvent,
    axis: BudgetAxis | None = None,
) -> Finish:
    return Finish(end_outcome(state, goal.id, kind, reason, now, axis=axis), announce=announce)


def end_outcome(
    state: GoalState,
    goal_id: str,
    kind: GoalEndKind,
    reason: str | None,
    now: float,
    *,
    axis: BudgetAxis | None = None,
) -> GoalOutcome:
    """How the goal ends at ``now``, with what the state says it spent (the one builder of
    outcomes, also for ends the machine did not choose: a bug, a shutdown)."""
    return GoalOutcome(
        goal_id=goal_id,
        kind=kind,
        reason=reason,
        axis=axis,
        total_turns=state.turns,
        usage=state.usage,
        cost_usd=state.cost_usd,
        wall_time_s=state.wall_time_s(now),
        final_text=state.final_text,
        acceptance=state.verdict,
        allowed=state.allowed,
        denied=state.denied,
        session_id=state.session_id,
        elapsed_s=max(0.0, now - state.run_started_at) if state.running else 0.0,
    )


def supersedes(running: Step, new: Step) -> bool:
    """Whether a step that is running no longer stands, now that the state says ``new``.

    A turn stands while the machine would still run a turn (a new session bound mid-turn
    changes nothing); a sleep or a wait stands while the machine says the very same.
    """
    if isinstance(running, RunTurn):
        return not isinstance(new, RunTurn)
    if isinstance(running, RunAcceptance):
        return not isinstance(new, RunAcceptance)
    return new != running


# --------------------------------------------------------------------------- controls


def control_effect(state: GoalState, goal: Goal, control: ControlEvent) -> bool:
    """Whether an operator control changes anything (``False``: already cancelled, paused,
    not paused). Raises ``ValueError`` for a control that is not allowed: an empty
    message, or lowering ``max_turns``."""
    match control:
        case CancelRequested():
            return state.cancel_reason is None
        case GoalPaused():
            return not state.paused
        case GoalResumed():
            return state.paused
        case InterruptQueued(message=message):
            if not message.strip():
                raise ValueError("an operator interrupt needs a non-empty message")
            return True
        case MaxTurnsRaised(max_turns=max_turns):
            current = effective_budget(goal, state).max_turns
            if current is not None and max_turns < current:
                raise ValueError(
                    f"max turns can only be raised: {max_turns} is below the current {current}"
                )
            return True


# --------------------------------------------------------------------------- what steps produce


def run_started(
    goal: Goal,
    step: Begin,
    state: GoalState,
    *,
    workspace: str,
    pid: int | None,
    confined: bool = False,
    warnings: tuple[str, ...] = (),
    git: WorkspaceInfo | None = None,
    leftovers_stopped: tuple[str, ...] = (),
) -> GoalStarted:
    """The ``goal_started`` event of a :class:`Begin` step (``leftovers_stopped``: what was
    left of the turn a crash interrupted, stopped before the run began)."""
    return GoalStarted(
        goal_id=goal.id,
        description=goal.description,
        workspace=workspace,
        resumed_session=state.session_id,
        resumed_turns=state.turns,
        metadata=dict(goal.metadata),
        run=state.runs + 1,
        resumed_after=step.resumed_after,
        abandoned_turn=state.attempt.turn if state.attempt is not None else None,
        pid=pid,
        confined=confined,
        warnings=warnings,
        git=git,
        leftovers_stopped=leftovers_stopped,
    )


def crash_leftovers(state: GoalState) -> OpenAttempt | None:
    """The turn a crash left open (the state of a goal no process runs), when it recorded
    how to find its processes: its marker, or its CLI's identity. Its processes may still
    run: the next run stops them (``engine/leftovers.py``) before it begins."""
    attempt = state.attempt
    if attempt is None or (attempt.marker is None and attempt.process is None):
        return None
    return attempt


def turn_started(goal_id: str, step: RunTurn) -> tuple[GoalEvent, ...]:
    """The events recorded as a :class:`RunTurn` step starts its turn."""
    started = AttemptStarted(
        goal_id=goal_id,
        turn=step.turn,
        compact=step.compact,
        resume_session=step.resume_session,
        prompt=step.prompt,
        interrupts=step.interrupts,
        timeout_s=step.timeout_s,
        redo=step.redo,
        checkpoint=step.checkpoint,
    )
    if step.compact and not step.redo:
        return (CompactScheduled(goal_id, step.context_tokens, step.forced), started)
    return (started,)


def turn_command(
    step: RunTurn,
    claude: ClaudeSettings,
    *,
    cwd: Path,
    mcp_config: Path | None = None,
    permission_prompt_tool: str | None = None,
    env: Mapping[str, str | None] | None = None,
    stream_input: bool = False,
) -> ClaudeCommand:
    """The CLI invocation of a :class:`RunTurn` step: the config's Claude settings, our
    system prompt after the user's, the permission gate's parts, ``env`` over the
    config's; ``stream_input`` for the stdio transport (see ``ClaudeCommand``)."""
    system_prompt = SYSTEM_PROMPT
    if claude.append_system_prompt:
        system_prompt = f"{claude.append_system_prompt}\n\n{SYSTEM_PROMPT}"
    return ClaudeCommand(
        prompt=step.prompt,
        binary=claude.binary,
        cwd=cwd,
        resume=step.resume_session,
        model=claude.model,
        allowed_tools=claude.allowed_tools,
        disallowed_tools=claude.disallowed_tools,
        append_system_prompt=system_prompt,
        extra_args=claude.extra_args,
        mcp_config=mcp_config,
        permission_prompt_tool=permission_prompt_tool,
        env={**claude.env, **(env or {})},
        stream_input=stream_input,
    )


def turn_completed(
    goal_id: str,
    step: RunTurn,
    outcome: TurnOutcome,
    *,
    duration_s: float,
    stop_actions: tuple[str, ...] = (),
) -> AttemptCompleted:
    """The ``attempt_completed`` event of a turn that ended with ``outcome``."""
    return AttemptCompleted(
        goal_id=goal_id,
        turn=step.turn,
        compact=step.compact,
        kind=outcome.kind.value,
        cause=outcome.cause.value,
        reason=outcome.reason,
        session_id=outcome.session_id,
        usage=outcome.usage,
        cost_usd=outcome.cost_usd,
        duration_s=duration_s,
        exit_code=outcome.exit_code,
        stop_actions=stop_actions,
        permission_denials=len(outcome.permission_denials),
        hint=outcome.hint,
        session_invalid=outcome.session_invalid,
        sleep_ms=outcome.sleep_ms,
        final_text=outcome.final_text,
        context_tokens=outcome.context_tokens,
        compact_post_tokens=outcome.compact_post_tokens,
        tool_uses=outcome.tool_uses,
        tool_error=outcome.tool_error,
        tool_error_run=outcome.tool_error_run,
        tool_results=outcome.tool_results,
    )
