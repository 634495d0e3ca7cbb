"""The goal machine's checkpoints, pure: the checkpoint of each turn (its first attempt's),
the workspace after each turn (its last attempt's), a redo after a crash, a checkpoint that
fails, a rollback and what the next prompt says of it, ``replay.rollback_on_timeout``, a
restart; recovery through the ledger's JSON folding to the same state; and
:func:`format_changes` on generated diff stats."""

from __future__ import annotations

import json
import string
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nexo_trio.core.acceptance import CheckResult
from nexo_trio.core.checkpoints import Checkpoint, DiffStat, GitTarget
from nexo_trio.core.events import Usage
from nexo_trio.core.goal import Goal, ShellCheck
from nexo_trio.core.goal_events import (
    AcceptanceChecked,
    AttemptCompleted,
    AttemptStarted,
    CancelRequested,
    CheckpointFailed,
    Escalated,
    GoalCompleted,
    GoalEvent,
    GoalRestarted,
    GoalStarted,
    ReplayDecided,
    RolledBack,
    WorkspaceInfo,
)
from nexo_trio.core.goal_machine import (
    Begin,
    Finish,
    GoalState,
    Record,
    Restore,
    RunAcceptance,
    RunTurn,
    Step,
    begin,
    checkpoint_of,
    end_outcome,
    fold,
    initial_state,
    next_step,
    turn_started,
)
from nexo_trio.core.goal_outcome import GoalEndKind
from nexo_trio.core.prompt import CHANGES_SHOWN, FAILURES_HEADER, ROLLBACK, format_changes
from nexo_trio.core.settings import Config, ReplaySettings
from nexo_trio.wire.goal_json import event_from_ledger, event_to_ledger

G = "g"
GOAL = Goal(id=G, description="Fix it.", acceptance=(ShellCheck("make test"),))
CONFIG = Config()
ROLLING = Config(replay=ReplaySettings(rollback_on_timeout=True))
T0 = 1_000_000.0

A = "a" * 40  # the checkpoints of attempts, as 40-hex shas
B = "b" * 40
C = "c" * 40
X = "1" * 40  # the workspace after attempts
Y = "2" * 40
Z = "3" * 40
SHA256 = "d" * 64

STAT = DiffStat(
    files_changed=3,
    insertions=7,
    deletions=2,
    added=("new.py",),
    deleted=("old.py",),
    modified=("main.py",),
)
TARGET = GitTarget(git_dir="/repo/.git", work_tree="/repo")
WORKTREE = GitTarget(
    git_dir="/repo/.git/worktrees/g",
    work_tree="/ws/g",
    common_dir="/repo/.git",
    object_format="sha256",
)


# --------------------------------------------------------------------------- helpers


def at(t: float, *events: GoalEvent) -> list[GoalEvent]:
    """``events`` stamped with time ``T0 + t``."""
    return [attrs.evolve(e, at=T0 + t) for e in events]


def started(t: float = 0.0, **fields: Any) -> list[GoalEvent]:
    return at(t, GoalStarted(G, "Fix it.", "/repo", **fields))


def attempt(
    number: int, t: float, checkpoint: str | None, *, prompt: str = "p", **fields: Any
) -> list[GoalEvent]:
    return at(t, AttemptStarted(G, number, False, "s1", prompt, checkpoint=checkpoint, **fields))


def completed(
    number: int,
    t: float,
    *,
    kind: str = "claimed_done",
    cause: str = "completed",
    compact: bool = False,
    reason: str | None = None,
    **fields: Any,
) -> list[GoalEvent]:
    return at(
        t,
        AttemptCompleted(
            G, number, compact, kind, cause, reason, "s1", Usage(input_tokens=10), 0.01, 1.0,
            **fields,
        ),
    )  # fmt: skip


def judged(
    number: int, t: float, action: str = "proceed", *, counted: bool = True, **fields: Any
) -> list[GoalEvent]:
    return at(t, ReplayDecided(G, number, action, None, counted=counted, **fields))


def failed(number: int, t: float) -> list[GoalEvent]:
    result = CheckResult(0, "tests", passed=False, message="exit code 1", evidence="FAILED a")
    return at(t, AcceptanceChecked(G, number, False, (result,)))


def passed(number: int, t: float) -> list[GoalEvent]:
    return at(t, AcceptanceChecked(G, number, True, (CheckResult(0, "tests", passed=True),)))


def state_of(*groups: list[GoalEvent]) -> GoalState:
    return fold([e for group in groups for e in group], initial_state(G))


def step_at(state: GoalState, t: float, config: Config = CONFIG) -> Step:
    return next_step(state, GOAL, config, T0 + t)


def work_turn(state: GoalState, t: float, config: Config = CONFIG) -> RunTurn:
    step = step_at(state, t, config)
    assert isinstance(step, RunTurn), step
    assert not step.compact
    return step


def record(state: GoalState, t: float, config: Config = CONFIG) -> tuple[GoalState, Record]:
    """Take the machine's :class:`Record` step and fold its events in."""
    step = step_at(state, t, config)
    assert isinstance(step, Record), step
    return fold(at(t, *step.events), state), step


def recovered(events: list[GoalEvent]) -> GoalState:
    """The state folded from the ledger: every event as JSON text and back."""
    state = initial_state(G)
    for event in events:
        kind, data = event_to_ledger(event)
        back = event_from_ledger(kind, json.loads(json.dumps(data)))
        assert back == event
        state = fold([back], state)
    return state


# --------------------------------------------------------------------------- checkpoints


def test_a_turns_checkpoint_is_its_first_attempts_and_its_end_its_last_attempts() -> None:
    events = [
        *started(),
        *attempt(1, 1, A),
        *completed(1, 2, kind="continue", cause="session_invalid", after=X, session_invalid=True),
        *judged(1, 2, "fresh_session", counted=False),
    ]
    state = state_of(events)
    assert state.checkpoints == (Checkpoint(turn=1, sha=A),)
    assert state.turn_ends == (Checkpoint(turn=1, sha=X),)
    retry = work_turn(state, 3)
    assert retry.turn == 1  # a stale session: the same turn again, not counted
    assert retry.checkpoint is None  # the shell takes a new one (no ref moves)

    events += [*attempt(1, 3, B), *completed(1, 4, after=Y), *judged(1, 4)]
    state = state_of(events)
    assert checkpoint_of(state, 1) == A  # the first attempt's stays the turn's
    assert state.checkpoints == (Checkpoint(turn=1, sha=A),)
    assert state.turn_ends == (Checkpoint(turn=1, sha=Y),)  # the last attempt's

    events += [*failed(1, 5), *attempt(2, 6, C), *completed(2, 7, after=Z)]
    state = state_of(events)
    assert state.checkpoints == (Checkpoint(turn=1, sha=A), Checkpoint(turn=2, sha=C))
    assert state.turn_ends == (Checkpoint(turn=1, sha=Y), Checkpoint(turn=2, sha=Z))
    assert checkpoint_of(state, 2) == C
    assert checkpoint_of(state, 3) is None
    assert state.ended is not None
    assert state.ended.checkpoint == C  # the attempt's own, for a rollback before its retry


def test_an_attempt_without_a_checkpoint_or_end_changes_none() -> None:
    state = state_of(started(), attempt(1, 1, None), completed(1, 2), judged(1, 2))
    assert (state.checkpoints, state.turn_ends, state.last_changes) == ((), (), None)
    # A compaction takes no checkpoint and leaves what the last work turn changed alone.
    state = state_of(
        started(),
        attempt(1, 1, A),
        completed(1, 2, kind="continue", cause="completed", after=X, changes=STAT),
        judged(1, 2),
        at(3, AttemptStarted(G, 1, True, "s1", "/compact")),
        completed(1, 4, compact=True, after=Y, changes=None),
        judged(1, 4),
    )
    assert state.checkpoints == (Checkpoint(turn=1, sha=A),)
    assert state.turn_ends == (Checkpoint(turn=1, sha=X),)
    assert state.last_changes == STAT


def test_a_redo_after_a_crash_reuses_the_open_attempts_checkpoint() -> None:
    state = state_of(started(), attempt(1, 1, A))
    state = fold(started(100, run=2, resumed_after="crashed", abandoned_turn=1), state)
    step = work_turn(state, 100)
    assert (step.turn, step.redo, step.checkpoint) == (1, True, A)
    (again,) = turn_started(G, step)
    assert isinstance(again, AttemptStarted)
    assert (again.checkpoint, again.redo) == (A, True)
    state = fold(at(101, again), state)
    assert state.checkpoints == (Checkpoint(turn=1, sha=A),)  # once, not twice

    # A crash in a later attempt of the turn redoes that attempt, from its own checkpoint.
    state = state_of(
        started(),
        attempt(1, 1, A),
        completed(1, 2, kind="continue", cause="session_invalid", session_invalid=True),
        judged(1, 2, "fresh_session", counted=False),
        attempt(1, 3, B),
    )
    state = fold(started(100, run=2, resumed_after="crashed", abandoned_turn=1), state)
    step = work_turn(state, 100)
    assert (step.redo, step.checkpoint) == (True, B)
    assert checkpoint_of(state, 1) == A


def test_a_checkpoint_that_fails_escalates_with_its_reason() -> None:
    state = state_of(started(), at(1, CheckpointFailed(G, 1, "git add failed: disk full")))
    assert state.attempt is None
    step = step_at(state, 1)
    reason = "cannot checkpoint the workspace before turn 1: git add failed: disk full"
    assert isinstance(step, Finish)
    assert step.outcome.kind is GoalEndKind.ESCALATED
    assert step.outcome.reason == reason
    assert "\n" not in reason
    assert step.announce == (Escalated(G, reason),)
    # The first escalation stands; the next run tries again.
    state = fold(at(2, CheckpointFailed(G, 1, "another")), state)
    assert state.escalation == reason
    ended = fold(at(3, GoalCompleted(G, step.outcome)), state)
    assert begin(ended, GOAL, CONFIG, T0 + 10) == Begin(resumed_after="escalated")
    rerun = fold(started(10, run=2, resumed_after="escalated"), ended)
    assert work_turn(rerun, 10).turn == 1


# --------------------------------------------------------------------------- rollbacks


def rolled_back(
    t: float,
    *,
    turn: int | None = 1,
    sha: str = A,
    by: str = "alice",
    reason: str | None = "wrong way",
) -> list[GoalEvent]:
    return at(t, RolledBack(G, turn, sha, by, reason))


def test_a_rollback_opens_the_next_work_prompt_once() -> None:
    before = state_of(
        started(),
        attempt(1, 1, A),
        completed(1, 2, after=X, changes=STAT),
        judged(1, 2),
        failed(1, 3),
    )
    shown = work_turn(before, 3).prompt
    assert FAILURES_HEADER in shown
    assert format_changes(STAT) in shown  # the changes go with the failures

    state = fold(rolled_back(4), before)
    assert (state.failures, state.last_changes, state.check_streak) == ((), None, 0)
    step = work_turn(state, 4)
    assert step.turn == 2
    assert step.prompt.count(ROLLBACK) == 1
    assert step.prompt.startswith(f"{ROLLBACK} The workspace was rolled back")
    assert f"before turn 1 (checkpoint {A[:12]}, by alice: wrong way)" in step.prompt
    assert FAILURES_HEADER not in step.prompt
    assert format_changes(STAT) not in step.prompt
    assert step.prompt.endswith("Goal: Fix it.")

    # A turn that never reached Claude (a stale session) keeps the note for the next one;
    # so does a compaction.
    stale = fold(
        [
            *attempt(2, 5, B, prompt=step.prompt),
            *completed(2, 6, kind="continue", cause="session_invalid", session_invalid=True),
            *judged(2, 6, "fresh_session", counted=False),
        ],
        state,
    )
    assert ROLLBACK in work_turn(stale, 6).prompt
    compacted = fold(
        [
            *at(5, AttemptStarted(G, 1, True, "s1", "/compact")),
            *completed(1, 6, compact=True),
            *judged(1, 6, counted=False),
        ],
        state,
    )
    assert ROLLBACK in work_turn(compacted, 6).prompt
    # A turn that reached Claude delivered it, whatever came of the turn.
    for action in ("proceed", "retry"):
        reached = fold(
            [
                *attempt(2, 5, B, prompt=step.prompt),
                *completed(2, 6, kind="continue", cause="api_error_retryable", after=Y),
                *judged(2, 6, action),
            ],
            state,
        )
        assert reached.rolled_back is None
        assert ROLLBACK not in work_turn(reached, 7).prompt


def test_a_rollback_given_by_sha_says_so() -> None:
    state = state_of(started(), attempt(1, 1, A), completed(1, 2), judged(1, 2), failed(1, 3))
    state = fold(rolled_back(4, turn=None, sha=SHA256, by="bob", reason=None), state)
    prompt = work_turn(state, 4).prompt
    assert f"rolled back to how it was at a checkpoint (checkpoint {SHA256[:12]}, by bob)" in (
        prompt
    )


def test_a_done_goal_rolled_back_begins_a_new_run_instead_of_reporting_done() -> None:
    state = state_of(started(), attempt(1, 1, A), completed(1, 2, after=X), judged(1, 2))
    assert step_at(state, 2) == RunAcceptance(turn=1)
    state = fold(passed(1, 3), state)
    outcome = end_outcome(state, G, GoalEndKind.DONE, None, T0 + 3)
    done = fold(at(3, GoalCompleted(G, outcome)), state)
    reported = begin(done, GOAL, CONFIG, T0 + 10)
    assert isinstance(reported, Finish)
    assert reported.recorded  # without a rollback, done stays done

    undone = fold(rolled_back(5, by="nexo-trio rollback (alice)"), done)
    assert not undone.done
    assert begin(undone, GOAL, CONFIG, T0 + 10) == Begin(resumed_after="done")
    assert next_step(undone, GOAL, CONFIG, T0 + 10) == Begin(resumed_after="done")
    rerun = fold(started(10, run=2, resumed_after="done"), undone)
    step = work_turn(rerun, 10)
    assert step.turn == 2
    assert ROLLBACK in step.prompt


# --------------------------------------------------------------------------- rollback_on_timeout


def timed_out(checkpoint: str | None = A, *, compact: bool = False) -> GoalState:
    if compact:
        return state_of(
            started(),
            attempt(1, 1, A),
            completed(1, 2, after=X),
            judged(1, 2),
            failed(1, 3),
            at(4, AttemptStarted(G, 1, True, "s1", "/compact")),
            completed(1, 5, kind="continue", cause="timeout", compact=True, reason="timed out"),
        )
    return state_of(
        started(),
        attempt(1, 1, checkpoint),
        completed(1, 21, kind="continue", cause="timeout", reason="timed out after 20s", after=X),
    )


def test_a_timed_out_turn_is_rolled_back_to_its_checkpoint_before_the_retry() -> None:
    state, judgement = record(timed_out(), 21, ROLLING)
    (decided,) = judgement.events
    assert isinstance(decided, ReplayDecided)
    assert (decided.action, decided.rollback_to) == ("retry", A)
    restore = step_at(state, 21, ROLLING)
    assert restore == Restore(turn=1, sha=A, reason="timed out after 20s")
    assert state.rollback_due == restore
    # It stands until done: a step is asked again, a re-run after a crash asks it too.
    assert step_at(state, 22, ROLLING) == restore
    crashed = fold(started(30, run=2, resumed_after="crashed"), state)
    assert step_at(crashed, 30, ROLLING) == restore

    after = fold(rolled_back(22, sha=A, by="the replay policy", reason=restore.reason), state)
    assert after.rollback_due is None
    retry = work_turn(after, 22, ROLLING)
    assert retry.turn == 2  # a retry counts
    assert retry.checkpoint is None
    assert ROLLBACK in retry.prompt
    assert "by the replay policy: timed out after 20s" in retry.prompt


def test_a_rollback_that_fails_escalates() -> None:
    state, _ = record(timed_out(), 21, ROLLING)
    state = fold(at(22, CheckpointFailed(G, 1, "rollback failed: git read-tree failed")), state)
    assert state.rollback_due is None
    step = step_at(state, 22, ROLLING)
    assert isinstance(step, Finish)
    assert step.outcome.kind is GoalEndKind.ESCALATED
    assert step.outcome.reason is not None
    assert step.outcome.reason.endswith("rollback failed: git read-tree failed")


def test_a_cancel_comes_before_the_rollback() -> None:
    state, _ = record(timed_out(), 21, ROLLING)
    state = fold(at(22, CancelRequested(G, "ctrl-c")), state)
    step = step_at(state, 22, ROLLING)
    assert isinstance(step, Finish)
    assert step.outcome.kind is GoalEndKind.CANCELLED


@pytest.mark.parametrize(
    ("config", "state"),
    [
        pytest.param(CONFIG, timed_out(), id="off-by-default"),
        pytest.param(ROLLING, timed_out(None), id="no-checkpoint"),
        pytest.param(ROLLING, timed_out(compact=True), id="compaction"),
    ],
)
def test_no_rollback_without_the_setting_a_checkpoint_or_for_a_compaction(
    config: Config, state: GoalState
) -> None:
    state, judgement = record(state, 21, config)
    (decided,) = judgement.events
    assert isinstance(decided, ReplayDecided)
    assert decided.action == "retry"
    assert decided.rollback_to is None
    assert state.rollback_due is None
    step = step_at(state, 21, config)
    assert isinstance(step, RunTurn)
    assert ROLLBACK not in step.prompt


@pytest.mark.parametrize(
    "cause", ["api_error_retryable", "no_result", "exit_error", "interrupted", "execution_error"]
)
def test_a_retry_for_any_other_cause_never_rolls_back(cause: str) -> None:
    state = state_of(
        started(),
        attempt(1, 1, A),
        completed(1, 2, kind="continue", cause=cause, reason="oops", after=X),
    )
    state, judgement = record(state, 2, ROLLING)
    (decided,) = judgement.events
    assert isinstance(decided, ReplayDecided)
    assert (decided.action, decided.rollback_to) == ("retry", None)
    step = step_at(state, 2, ROLLING)
    assert isinstance(step, RunTurn)
    assert ROLLBACK not in step.prompt


def test_a_timeout_the_policy_gives_up_on_escalates_without_a_rollback() -> None:
    config = Config(replay=ReplaySettings(max_retries=0, rollback_on_timeout=True))
    state, judgement = record(timed_out(), 21, config)
    (decided,) = judgement.events
    assert isinstance(decided, ReplayDecided)
    assert (decided.action, decided.rollback_to) == ("escalate", None)
    step = step_at(state, 21, config)
    assert isinstance(step, Finish)
    assert step.outcome.kind is GoalEndKind.ESCALATED


def test_a_restart_forgets_the_checkpoints() -> None:
    state, _ = record(timed_out(), 21, ROLLING)
    state = fold(rolled_back(22, by="the replay policy"), state)
    state = fold([*attempt(2, 23, B), *completed(2, 24, after=Y, changes=STAT)], state)
    state = fold([*judged(2, 24), *failed(2, 25), *attempt(3, 26, C)], state)
    state = fold(
        completed(3, 46, kind="continue", cause="timeout", reason="timed out", changes=STAT),
        state,
    )
    state, _ = record(state, 46, ROLLING)
    assert len(state.checkpoints) == 3
    assert len(state.turn_ends) == 2
    assert state.last_changes == STAT
    assert state.rollback_due == Restore(turn=3, sha=C, reason="timed out")
    state = fold(at(50, GoalRestarted(G)), state)
    assert state == attrs.evolve(initial_state(G), last_at=T0 + 50)
    assert checkpoint_of(state, 1) is None
    assert (state.rollback_due, state.rolled_back) == (None, None)
    assert isinstance(step_at(fold(started(51), state), 51, ROLLING), RunTurn)


# --------------------------------------------------------------------------- recovery


def a_history() -> list[GoalEvent]:
    """A goal's events with every new field set: two runs, a crash, a timeout rolled back,
    a user's rollback after it was done."""
    git = WorkspaceInfo(
        kind="worktree", target=WORKTREE, repo="/repo", branch="nexo/g", base="HEAD"
    )
    events = [
        *started(git=git),
        *attempt(1, 1, A),
        *completed(1, 21, kind="continue", cause="timeout", reason="timed out", after=X,
                   changes=STAT),
        *judged(1, 21, "retry", is_error=True, rollback_to=A),
        *at(22, RolledBack(G, 1, A, "the replay policy", "timed out")),
        *attempt(2, 23, B),
        # a crash: the next run redoes turn 2 from its checkpoint
        *started(100, run=2, resumed_after="crashed", abandoned_turn=2,
                 git=WorkspaceInfo(kind="repository", target=TARGET)),
        *attempt(2, 101, B, redo=True),
        *completed(2, 102, after=Y, changes=DiffStat(0, 0, 0)),
        *judged(2, 102),
        *passed(2, 103),
    ]  # fmt: skip
    state = fold(events, initial_state(G))
    outcome = end_outcome(state, G, GoalEndKind.DONE, None, T0 + 104)
    events += at(104, GoalCompleted(G, outcome))
    events += at(200, RolledBack(G, None, SHA256, "nexo-trio rollback (alice)", None))
    events += started(300, run=3, resumed_after="done", git=WorkspaceInfo(kind="directory"))
    events += at(301, CheckpointFailed(G, 3, "no space left on device"))
    return events


def test_recovery_from_the_ledger_gives_the_live_state() -> None:
    events = a_history()
    for cut in range(len(events) + 1):
        live = fold(events[:cut], initial_state(G))
        assert recovered(events[:cut]) == live
        assert next_step(recovered(events[:cut]), GOAL, ROLLING, T0 + 400) == next_step(
            live, GOAL, ROLLING, T0 + 400
        )
    final = recovered(events)
    assert final.checkpoints == (Checkpoint(turn=1, sha=A), Checkpoint(turn=2, sha=B))
    assert final.turn_ends == (Checkpoint(turn=1, sha=X), Checkpoint(turn=2, sha=Y))
    assert final.escalation is not None
    assert "no space left on device" in final.escalation


paths = st.text(string.ascii_lowercase + string.digits + "._-/é", min_size=1, max_size=10)


@st.composite
def diff_stats(draw: st.DrawFn, *, many: int = 45) -> DiffStat:
    """Diff stats with up to ``many`` paths of each kind (often more than a prompt names)."""
    kinds = []
    for _ in range(3):
        size = draw(st.integers(0, many))
        kinds.append(
            tuple(sorted(draw(st.lists(paths, min_size=size, max_size=size, unique=True))))
        )
    added, deleted, modified = kinds
    changed = len(added) + len(deleted) + len(modified)
    return DiffStat(
        files_changed=changed,
        insertions=draw(st.integers(0, 10**6)),
        deletions=draw(st.integers(0, 10**6)),
        added=added,
        deleted=deleted,
        modified=modified,
        binary=draw(st.integers(0, changed)),
    )


shas = st.sampled_from([A, B, SHA256])
workspace_infos = st.one_of(
    st.builds(WorkspaceInfo, kind=st.just("directory")),
    st.builds(
        WorkspaceInfo,
        kind=st.sampled_from(["repository", "shadow"]),
        target=st.builds(
            GitTarget,
            git_dir=st.sampled_from(["/repo/.git", "/state/shadow/g"]),
            work_tree=st.sampled_from(["/repo", "/ws/é x"]),
            private=st.booleans(),
            object_format=st.sampled_from(["sha1", "sha256"]),
        ),
    ),
    st.builds(
        WorkspaceInfo,
        kind=st.just("worktree"),
        target=st.just(WORKTREE),
        repo=st.just("/repo"),
        branch=st.sampled_from(["nexo/g", "feature/x"]),
        base=st.sampled_from(["HEAD", "main", A]),
    ),
)
new_events: st.SearchStrategy[GoalEvent] = st.one_of(
    st.builds(GoalStarted, st.just(G), st.just("Fix it."), st.just("/repo"), git=workspace_infos),
    st.builds(
        AttemptStarted,
        st.just(G),
        st.integers(1, 3),
        st.just(False),
        st.none(),
        st.just("p"),
        checkpoint=st.none() | shas,
    ),
    st.builds(
        AttemptCompleted,
        st.just(G),
        st.integers(1, 3),
        st.booleans(),
        st.sampled_from(["claimed_done", "continue"]),
        st.sampled_from(["completed", "timeout"]),
        st.none(),
        st.none(),
        st.just(Usage()),
        st.just(0.0),
        st.just(1.0),
        changes=st.none() | diff_stats(many=3),
        after=st.none() | shas,
    ),
    st.builds(
        ReplayDecided,
        st.just(G),
        st.integers(1, 3),
        st.sampled_from(["proceed", "retry", "fresh_session"]),
        st.none(),
        rollback_to=st.none() | shas,
    ),
    st.builds(
        RolledBack,
        st.just(G),
        st.none() | st.integers(0, 3),
        shas,
        st.sampled_from(["the replay policy", "nexo-trio rollback (alice)"]),
        st.none() | st.just("timed out"),
    ),
    st.builds(CheckpointFailed, st.just(G), st.integers(1, 3), st.just("git failed")),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(new_events, max_size=12))
def test_the_new_events_round_trip_through_the_ledger_to_the_same_state(
    events: list[GoalEvent],
) -> None:
    stamped = [attrs.evolve(e, at=T0 + i) for i, e in enumerate(events)]
    assert recovered(stamped) == fold(stamped, initial_state(G))


# --------------------------------------------------------------------------- format_changes


@settings(max_examples=300, deadline=None)
@given(diff_stats())
def test_format_changes_names_a_bounded_number_of_paths_and_counts_the_rest(
    stat: DiffStat,
) -> None:
    text = format_changes(stat)
    lines = text.split("\n")
    if stat.empty:
        assert lines == ["Your last turn changed no file in the workspace."]
        return
    files = "file" if stat.files_changed == 1 else "files"
    assert lines[0] == (
        f"Your last turn changed {stat.files_changed} {files} "
        f"(+{stat.insertions} -{stat.deletions} lines):"
    )
    present = [
        (label, list(kind))
        for label, kind in (("added", stat.added), ("modified", stat.modified),
                            ("deleted", stat.deleted))
        if kind
    ]  # fmt: skip
    assert len(lines) == 1 + len(present)  # one line per kind present, in this order
    for line, (label, kind) in zip(lines[1:], present, strict=True):
        prefix = f"- {label}: "
        assert line.startswith(prefix)
        body = line.removeprefix(prefix)
        more = len(kind) - CHANGES_SHOWN
        if more > 0:
            suffix = f" and {more} more"
            assert body.endswith(suffix)
            body = body.removesuffix(suffix)
        named = body.split(", ")
        assert len(named) <= CHANGES_SHOWN
        assert named == kind[:CHANGES_SHOWN]
