"""Goals in real git repositories, checkpointed before every turn: a turn runner stand-in
writes (and commits) in the workspace the way Claude would. ``git_clean`` and
``no_paths_touched`` judge what the goal changed since its first checkpoint, commits
included, not the user's uncommitted work (nor miss a repository the goal cloned);
``replay.rollback_on_timeout`` puts the workspace and its index back before a timed-out
turn's retry; a workspace that cannot be checkpointed escalates before any turn runs (and a
nested repository without a commit is left out of the checkpoints, not a failure)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from nexo_trio.core.checkpoints import git_env
from nexo_trio.core.command import ClaudeCommand
from nexo_trio.core.goal import Budget, Criterion, CustomCheck, Goal
from nexo_trio.core.goal_events import (
    AcceptanceChecked,
    AttemptCompleted,
    AttemptStarted,
    CheckpointFailed,
    GoalEvent,
    GoalStarted,
    ReplayDecided,
    RolledBack,
)
from nexo_trio.core.goal_outcome import GoalEndKind, GoalOutcome
from nexo_trio.core.outcome import Cause, TurnKind, TurnOutcome
from nexo_trio.core.prompt import ROLLBACK
from nexo_trio.core.settings import ReplaySettings
from nexo_trio.core.turn import INITIAL_STATE
from nexo_trio.engine.supervisor import TurnResult
from nexo_trio.orchestrator.acceptance import evaluate
from nexo_trio.store import MemoryStore
from nexo_trio.wire.goal_json import event_from_ledger

from .conftest import Harness, kinds, orchestrator

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")

ME = ("-c", "user.name=Tester", "-c", "user.email=tester@example.com", "-c", "commit.gpgSign=false")
DONE = TurnOutcome(kind=TurnKind.CLAIMED_DONE, cause=Cause.COMPLETED, final_text="Done.")
TIMED_OUT = TurnOutcome(kind=TurnKind.CONTINUE, cause=Cause.TIMEOUT, reason="timed out after 20s")

Act = Callable[[Path], Awaitable[TurnOutcome]]
"""What one turn does in the workspace (its cwd), and how it ends."""


@attrs.define
class WorkspaceRunner:
    """A turn runner standing in for Claude: each turn plays the next act in the workspace."""

    acts: list[Act]
    commands: list[ClaudeCommand] = attrs.Factory(list)

    async def __call__(self, command: ClaudeCommand, **options: Any) -> TurnResult:
        self.commands.append(command)
        assert command.cwd is not None
        if self.acts:
            outcome = await self.acts.pop(0)(command.cwd)
        else:
            outcome = TurnOutcome(TurnKind.ESCALATE, Cause.EXIT_ERROR, "no act left")
        return TurnResult(
            outcome=outcome,
            state=INITIAL_STATE,
            argv=tuple(command.argv()),
            pid=None,
            duration_s=0.0,
        )


def git(cwd: Path, *args: str) -> str:
    """Run git for a test (an identity, no ``GIT_*`` redirect); its stdout."""
    done = subprocess.run(
        ["git", *ME, "-C", str(cwd), *args],
        capture_output=True,
        check=True,
        env=git_env(os.environ),
        timeout=30,
    )
    return done.stdout.decode()


async def agit(cwd: Path, *args: str) -> str:
    """Git as a turn runs it (asynchronously); its stdout."""
    done = await trio.run_process(
        ["git", *ME, "-C", str(cwd), *args], capture_stdout=True, env=git_env(os.environ)
    )
    return done.stdout.decode()


STATUS = ("status", "--porcelain", "--untracked-files=all")


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A repository with one commit (``a.txt``, ``other.txt``, ``protected/p.txt``) and the
    user's uncommitted work: ``a.txt`` edited, ``staged.txt`` staged, ``notes.txt``
    untracked, ``debug.log`` ignored."""
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    repo = tmp_path / "repo"
    (repo / "protected").mkdir(parents=True)
    (repo / "a.txt").write_text("a\n")
    (repo / "other.txt").write_text("other\n")
    (repo / "protected" / "p.txt").write_text("p\n")
    (repo / ".gitignore").write_text("*.log\n")
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "first")
    (repo / "a.txt").write_text("a\nthe user's edit\n")
    (repo / "staged.txt").write_text("staged\n")
    git(repo, "add", "staged.txt")
    (repo / "notes.txt").write_text("mine\n")
    (repo / "debug.log").write_text("ignored\n")
    return repo


def goal_in(repo: Path, *acceptance: Criterion, max_turns: int = 4, **fields: Any) -> Goal:
    return Goal(
        id="g1",
        description="Add the feature.",
        acceptance=acceptance,
        budget=Budget(max_turns=max_turns, max_wall_time_s=60.0),
        workspace=str(repo),
        **fields,
    )


async def run(
    h: Harness,
    goal: Goal,
    runner: WorkspaceRunner,
    *,
    store: MemoryStore | None = None,
    **config: Any,
) -> tuple[GoalOutcome, list[GoalEvent]]:
    """Run ``goal`` with ``runner`` (on ``store``, else a new one); its outcome and the
    events of its ledger."""
    store = MemoryStore() if store is None else store
    async with orchestrator(h.config(**config), store=store, turn_runner=runner) as (orch, _):
        outcome = await orch.run_goal(goal)
    ledger = [event_from_ledger(e.kind, e.data, at=e.at) for e in await store.events(goal.id)]
    return outcome, [e for e in ledger if e is not None]


def of(events: list[GoalEvent], cls: type[Any]) -> list[Any]:
    return [e for e in events if isinstance(e, cls)]


def tree(repo: Path, sha: str) -> str:
    return git(repo, "rev-parse", f"{sha}^{{tree}}").strip()


async def claims_done(_: Path) -> TurnOutcome:
    return DONE


# --------------------------------------------------------------------------- git_clean


async def test_git_clean_counts_the_goals_changes_not_the_users_uncommitted_work(
    h: Harness, repo: Path
) -> None:
    async def commits_a_feature(cwd: Path) -> TurnOutcome:
        (cwd / "feature.txt").write_text("feature\n")
        await agit(cwd, "add", "feature.txt")
        await agit(cwd, "commit", "-q", "-m", "the feature", "--", "feature.txt")
        return DONE

    head = git(repo, "rev-parse", "HEAD")
    runner = WorkspaceRunner([commits_a_feature])
    outcome, events = await run(h, goal_in(repo, CustomCheck("git_clean")), runner)

    assert outcome.kind is GoalEndKind.DONE, outcome.reason
    (started,) = of(events, GoalStarted)
    assert started.git is not None
    assert started.git.kind == "repository"
    (checked,) = of(events, AcceptanceChecked)
    assert checked.results[0].message == "working tree clean"
    # The user's work is still uncommitted, and the check saw it (and let it be).
    assert git(repo, *STATUS) == " M a.txt\nA  staged.txt\n?? notes.txt\n"
    assert git(repo, "rev-parse", "HEAD~1") == head
    (done,) = of(events, AttemptCompleted)
    assert done.changes is not None
    assert done.changes.added == ("feature.txt",)


async def test_git_clean_fails_for_the_goals_own_uncommitted_changes(
    h: Harness, repo: Path
) -> None:
    async def leaves_it_uncommitted(cwd: Path) -> TurnOutcome:
        (cwd / "feature.txt").write_text("feature\n")
        with (cwd / "notes.txt").open("a") as notes:
            notes.write("the goal's line in the user's file\n")
        return DONE

    runner = WorkspaceRunner([leaves_it_uncommitted])
    goal = goal_in(repo, CustomCheck("git_clean"), max_turns=1)
    outcome, events = await run(h, goal, runner)

    assert outcome.kind is GoalEndKind.BUDGET_EXHAUSTED
    (checked,) = of(events, AcceptanceChecked)
    (result,) = checked.results
    assert not result.passed
    assert result.message == "2 uncommitted change(s) in the workspace"
    # The user's edit of a.txt is no change of the goal's; notes.txt is, now.
    assert result.evidence == "?? feature.txt\n?? notes.txt\n"


async def test_git_clean_sees_a_repository_the_goal_cloned_into_the_workspace(
    h: Harness, repo: Path, tmp_path: Path
) -> None:
    upstream = tmp_path / "upstream"
    upstream.mkdir()
    (upstream / "lib.py").write_text("x = 1\n")
    git(upstream, "init", "-q", "-b", "main")
    git(upstream, "add", "-A")
    git(upstream, "commit", "-q", "-m", "lib")

    async def clones_a_dependency(cwd: Path) -> TurnOutcome:
        await agit(cwd, "clone", "-q", str(upstream), "vendor/lib")
        return DONE

    runner = WorkspaceRunner([clones_a_dependency])
    goal = goal_in(repo, CustomCheck("git_clean"), max_turns=1)
    outcome, events = await run(h, goal, runner)

    (checked,) = of(events, AcceptanceChecked)
    (result,) = checked.results
    # git status names the nested repository as a directory, the checkpoint as a path.
    assert not result.passed, result.message
    assert result.evidence == "?? vendor/lib/\n"
    assert outcome.kind is GoalEndKind.BUDGET_EXHAUSTED


# --------------------------------------------------------------------------- no_paths_touched


async def test_no_paths_touched_sees_a_protected_path_changed_and_committed(
    h: Harness, repo: Path
) -> None:
    async def commits_a_protected_change(cwd: Path) -> TurnOutcome:
        (cwd / "protected" / "p.txt").write_text("rewritten\n")
        await agit(cwd, "commit", "-q", "-m", "touch the protected file", "--", "protected")
        return DONE

    protected = CustomCheck("no_paths_touched", args={"paths": ["protected"]}, label="protected")
    other = CustomCheck("no_paths_touched", args={"paths": ["other.txt"]}, label="other")
    users = CustomCheck("no_paths_touched", args={"paths": ["a.txt", "*.md"]}, label="users")
    runner = WorkspaceRunner([commits_a_protected_change])
    goal = goal_in(repo, protected, other, users, max_turns=1)
    # In parallel: each check's own result is wanted, after the first one fails too.
    outcome, events = await run(h, goal, runner, acceptance_mode="parallel")

    assert outcome.kind is GoalEndKind.BUDGET_EXHAUSTED
    (checked,) = of(events, AcceptanceChecked)
    touched, untouched, dirty = checked.results
    assert not touched.passed
    assert touched.message == "1 protected path(s) touched since the goal began"
    assert touched.evidence == "protected/p.txt\n"
    assert untouched.passed, untouched.message
    assert untouched.message == "none of 1 protected path(s) touched"
    # The user's own uncommitted edit was there before the goal began: not the goal's.
    assert dirty.passed, dirty.message
    assert dirty.message == "none of 2 protected path(s) touched"
    # Without the goal's first checkpoint only git status is asked: the commit hides the
    # goal's change and the user's edit shows.
    assert git(repo, "status", "--porcelain", "--", "protected") == ""
    blind = await evaluate([protected, users], workspace=repo)
    assert [r.passed for r in blind.results] == [True, False]


# --------------------------------------------------------------------------- rollback_on_timeout


@pytest.mark.parametrize("rollback", [True, False], ids=["rollback_on_timeout", "default"])
async def test_a_timed_out_turn_is_undone_before_its_retry_only_when_asked(
    h: Harness, repo: Path, rollback: bool
) -> None:
    seen: dict[str, object] = {}

    async def writes_then_times_out(cwd: Path) -> TurnOutcome:
        (cwd / "partial.txt").write_text("half done\n")
        with (cwd / "a.txt").open("a") as a:
            a.write("half an edit\n")
        (cwd / "other.txt").unlink()
        await agit(cwd, "add", "partial.txt")
        await agit(cwd, "reset", "-q", "--", "staged.txt")  # the user's staged file unstaged
        return TIMED_OUT

    async def looks(cwd: Path) -> TurnOutcome:
        seen["status"] = await agit(cwd, *STATUS)
        seen["partial"] = (cwd / "partial.txt").exists()
        seen["a.txt"] = (cwd / "a.txt").read_text()
        seen["other"] = (cwd / "other.txt").exists()
        seen["notes"] = (cwd / "notes.txt").read_text()
        return DONE

    head, status = git(repo, "rev-parse", "HEAD"), git(repo, *STATUS)
    runner = WorkspaceRunner([writes_then_times_out, looks])
    replay = ReplaySettings(max_retries=3, rollback_on_timeout=rollback)
    outcome, events = await run(h, goal_in(repo), runner, replay=replay)

    assert outcome.kind is GoalEndKind.DONE, outcome.reason
    first, retry = of(events, AttemptStarted)
    assert (first.turn, retry.turn) == (1, 2)
    assert first.checkpoint is not None
    assert retry.checkpoint is not None
    timed_out = of(events, AttemptCompleted)[0]
    assert timed_out.changes is not None
    assert (timed_out.changes.added, timed_out.changes.modified, timed_out.changes.deleted) == (
        ("partial.txt",),
        ("a.txt",),
        ("other.txt",),
    )
    judged = of(events, ReplayDecided)[0]
    assert judged.action == "retry"
    assert git(repo, "rev-parse", "HEAD") == head
    if rollback:
        assert seen == {
            "status": status,  # the index too: staged.txt is staged again
            "partial": False,
            "a.txt": "a\nthe user's edit\n",  # as it was before turn 1, the user's edit kept
            "other": True,
            "notes": "mine\n",
        }
        assert judged.rollback_to == first.checkpoint
        (rolled,) = of(events, RolledBack)
        assert (rolled.turn, rolled.sha, rolled.by) == (1, first.checkpoint, "the replay policy")
        assert rolled.reason == TIMED_OUT.reason
        assert kinds(events).index("rolled_back") == kinds(events).index("replay_decided") + 1
        assert tree(repo, retry.checkpoint) == tree(repo, first.checkpoint)
        assert ROLLBACK in runner.commands[1].prompt
        assert ROLLBACK not in runner.commands[0].prompt
    else:
        assert seen == {
            "status": " M a.txt\n D other.txt\nA  partial.txt\n?? notes.txt\n?? staged.txt\n",
            "partial": True,
            "a.txt": "a\nthe user's edit\nhalf an edit\n",
            "other": False,
            "notes": "mine\n",
        }
        assert judged.rollback_to is None
        assert of(events, RolledBack) == []
        assert tree(repo, retry.checkpoint) != tree(repo, first.checkpoint)
        assert ROLLBACK not in runner.commands[1].prompt


# --------------------------------------------------------------------------- checkpoint failures


def break_object_store(git_dir: Path) -> Path:
    """Replace ``objects`` with a file (kept aside): root cannot write objects into a file.
    It is executable, so git still takes ``git_dir`` for a repository."""
    objects = git_dir / "objects"
    kept = git_dir / "objects.kept"
    objects.rename(kept)
    objects.write_text("not a directory\n")
    objects.chmod(0o755)
    return kept


def mend_object_store(git_dir: Path, kept: Path) -> None:
    (git_dir / "objects").unlink()
    kept.rename(git_dir / "objects")


@pytest.mark.parametrize("kind", ["repository", "shadow"])
async def test_a_workspace_that_cannot_be_checkpointed_escalates_before_any_turn(
    h: Harness, repo: Path, tmp_path: Path, kind: str
) -> None:
    if kind == "repository":
        workspace, git_dir = repo, repo / ".git"
        goal = goal_in(workspace)
    else:
        workspace = tmp_path / "plain"
        workspace.mkdir()
        (workspace / "a.txt").write_text("a\n")
        git_dir = Path(h.config().state_dir) / "git" / "g1.git"  # the goal's shadow
        git_dir.parent.mkdir(parents=True)
        git(git_dir.parent, "init", "-q", "--bare", str(git_dir))
        goal = goal_in(workspace, checkpoints=True)
    kept = break_object_store(git_dir)
    runner = WorkspaceRunner([claims_done])
    store = MemoryStore()
    outcome, events = await run(h, goal, runner, store=store)

    assert outcome.kind is GoalEndKind.ESCALATED
    reason = outcome.reason
    assert reason is not None
    assert reason.startswith("cannot checkpoint the workspace before turn 1: ")
    assert "\n" not in reason
    assert "object store" in reason
    assert runner.commands == []
    (started,) = of(events, GoalStarted)
    assert started.git is not None
    assert started.git.kind == kind
    assert kinds(events) == ["goal_started", "checkpoint_failed", "escalated", "goal_completed"]
    (failed,) = of(events, CheckpointFailed)
    assert failed.turn == 1

    # Mended, the next run gets a fresh try: turn 1 runs from its checkpoint.
    mend_object_store(git_dir, kept)
    outcome, events = await run(h, goal, runner, store=store)
    assert outcome.kind is GoalEndKind.DONE, outcome.reason
    assert len(runner.commands) == 1
    (_, again) = of(events, GoalStarted)
    assert again.resumed_after == "escalated"
    (attempt,) = of(events, AttemptStarted)
    assert attempt.turn == 1
    assert attempt.checkpoint is not None


async def test_a_turn_that_inits_a_nested_repository_does_not_stop_the_goal(
    h: Harness, repo: Path
) -> None:
    async def scaffolds(cwd: Path) -> TurnOutcome:
        await agit(cwd, "init", "-q", "app")
        (cwd / "app" / "main.py").write_text("print('hi')\n")
        return TurnOutcome(TurnKind.CONTINUE, Cause.NO_RESULT, "no result")

    runner = WorkspaceRunner([scaffolds, claims_done])
    outcome, _ = await run(h, goal_in(repo), runner)

    assert outcome.kind is GoalEndKind.DONE, outcome.reason
    assert len(runner.commands) == 2


def test_status_paths_of_odd_names_come_back_whole() -> None:
    from nexo_trio.orchestrator.acceptance import _status_paths

    assert _status_paths('?? "a\\"b\\\\c\\td"') == ['a"b\\c\td']
    assert _status_paths('?? "\\303\\251t\\303\\251.txt"') == ["été.txt"]
    assert _status_paths("R  old.txt -> new dir/") == ["old.txt", "new dir"]
    assert _status_paths('?? "\\342\\210\\222"') == ["\u2212"]
