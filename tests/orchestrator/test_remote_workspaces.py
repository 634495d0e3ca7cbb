"""Worktrees of a remote repository, on real git: a bare repository on disk is the remote,
reached by its ``file://`` URL, and each "worker" is a workspace root of its own. A worker
clones the remote once and fetches it before every worktree it opens (a branch another
worker pushed is there; a branch checked out here is never moved); every checkpoint goes
to the remote with the goal's branch (a push that fails is a warning); a goal whose first
worker is gone goes on, on a second workspace root, from its last checkpoint's files (the
fake claude plays the turns), or from its branch when that commit never reached the
remote; a remote that cannot be cloned escalates the goal, its password in no message."""

from __future__ import annotations

import os
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import attrs
import pytest
import trio

from nexo_trio.core.checkpoints import WorkspaceProblem, git_env
from nexo_trio.core.command import ClaudeCommand
from nexo_trio.core.goal import Budget, GitWorkspace, Goal, ShellCheck
from nexo_trio.core.goal_events import (
    AttemptCompleted,
    AttemptStarted,
    GoalEvent,
    GoalStarted,
    WorkspaceRestored,
    WorkspaceWarning,
)
from nexo_trio.core.goal_outcome import GoalEndKind, GoalOutcome
from nexo_trio.core.outcome import Cause, TurnKind, TurnOutcome
from nexo_trio.core.remotes import CLONES_DIR, clone_name
from nexo_trio.core.turn import INITIAL_STATE
from nexo_trio.engine.supervisor import TurnResult
from nexo_trio.orchestrator.git_workspace import FRESH_MARKERS, push_checkpoints
from nexo_trio.orchestrator.goal_run import STOPPING_PUSH_S
from nexo_trio.orchestrator.workspace import FETCH_RETRIES_S, GoalWorkspace, open_workspace
from nexo_trio.store import MemoryStore
from nexo_trio.testing.scenario import bash, done_turn
from nexo_trio.wire.goal_json import event_from_ledger
from tests.git_repos import git

from .conftest import Harness, kinds, orchestrator

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")

T = TypeVar("T")
DONE = TurnOutcome(kind=TurnKind.CLAIMED_DONE, cause=Cause.COMPLETED, final_text="Done.")


@attrs.frozen
class Remote:
    """The remote (a bare repository), its URL, and a checkout of it to move it on with."""

    bare: Path
    seed: Path

    @property
    def url(self) -> str:
        return self.bare.as_uri()

    def ref(self, name: str) -> str:
        """The sha of ``name`` on the remote ('' when it has none)."""
        out = git(self.bare, "for-each-ref", "--format=%(objectname)", name)
        return out.strip()

    def commit_on_main(self, name: str) -> str:
        """A new commit on the remote's ``main`` (someone else pushed it)."""
        (self.seed / name).write_text(f"{name}\n")
        git(self.seed, "add", name)
        git(self.seed, "commit", "-q", "-m", name)
        git(self.seed, "push", "-q", "origin", "main")
        return git(self.seed, "rev-parse", "HEAD").strip()


@pytest.fixture
def remote(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Remote:
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    seed = tmp_path / "seed"
    seed.mkdir()
    (seed / "README").write_text("hello\n")
    git(seed, "init", "-q", "-b", "main")
    git(seed, "add", "-A")
    git(seed, "commit", "-q", "-m", "first")
    bare = tmp_path / "origin.git"
    git(tmp_path, "clone", "-q", "--bare", str(seed), str(bare))
    git(seed, "remote", "add", "origin", str(bare))
    return Remote(bare=bare, seed=seed)


def ok(value: T | WorkspaceProblem) -> T:
    assert not isinstance(value, WorkspaceProblem), value
    return value


def goal_of(url: str, goal_id: str = "g1", *, base: str | None = None, **fields: Any) -> Goal:
    return Goal(
        id=goal_id,
        description="Work on it.",
        workspace=GitWorkspace(repo=url, base=base),
        **fields,
    )


async def opened(goal: Goal, root: Path) -> GoalWorkspace | WorkspaceProblem:
    return await open_workspace(
        goal,
        resolve=lambda given: Path(given).resolve(),
        workspace_root=root,
        shadow_dir=root.parent / "shadow",
    )


def head(path: Path) -> str:
    return git(path, "rev-parse", "HEAD").strip()


def commit_in(worktree: Path, name: str) -> str:
    (worktree / name).write_text(f"{name}\n")
    git(worktree, "add", name)
    git(worktree, "commit", "-q", "-m", name)
    return head(worktree)


# --------------------------------------------------------------------------- the clone


async def test_a_worker_clones_a_remote_once_and_fetches_it_every_time(
    remote: Remote, tmp_path: Path
) -> None:
    root = tmp_path / "worker-a"
    first = ok(await opened(goal_of(remote.url, "g1"), root))
    clones = root / CLONES_DIR
    assert [p.name for p in clones.iterdir()] == [clone_name(remote.url)]
    clone = clones / clone_name(remote.url)
    assert git(clone, "rev-parse", "--is-bare-repository").strip() == "true"
    assert first.info.kind == "worktree"
    assert first.info.repo == str(clone)
    assert first.info.remote == remote.url
    assert first.info.branch == "nexo/g1"
    assert first.path == (root / "g1").resolve()
    assert (first.path / "README").read_text() == "hello\n"
    (clone / "kept-by-this-worker").write_text("a new clone would not have it\n")

    moved_on = remote.commit_on_main("later.txt")
    second = ok(await opened(goal_of(remote.url, "g2", base="main"), root))
    assert (clone / "kept-by-this-worker").exists()  # the same clone, not cloned again
    assert [p.name for p in clones.iterdir()] == [clone_name(remote.url)]  # no leftovers
    assert head(second.path) == moved_on  # fetched before the worktree was made
    assert (second.path / "later.txt").exists()
    # Reopening reuses the worktree as it is.
    again = ok(await opened(goal_of(remote.url, "g1"), root))
    assert again.path == first.path
    assert not (first.path / "later.txt").exists()


async def test_a_fetch_that_fails_for_a_moment_is_tried_again(
    remote: Remote, tmp_path: Path, nursery: trio.Nursery
) -> None:
    """A remote away for a moment (a network's blip) does not fail the workspace: the
    fetch is tried again; one away for good does, after the retries."""
    root = tmp_path / "worker-a"
    ok(await opened(goal_of(remote.url, "g1"), root))
    away = remote.bare.with_name("away.git")
    remote.bare.rename(away)

    async def back_soon() -> None:
        await trio.sleep(0.3)
        away.rename(remote.bare)

    nursery.start_soon(back_soon)
    again = ok(await opened(goal_of(remote.url, "g2", base="main"), root))
    assert (again.path / "README").exists()

    remote.bare.rename(away)
    started = trio.current_time()
    problem = await opened(goal_of(remote.url, "g3"), root)
    assert isinstance(problem, WorkspaceProblem)
    assert problem.message.startswith(f"fetching {remote.url}: ")
    assert trio.current_time() - started >= sum(FETCH_RETRIES_S)


async def test_a_fetch_brings_the_branch_another_worker_pushed_and_spares_this_ones(
    remote: Remote, tmp_path: Path
) -> None:
    a, b = tmp_path / "worker-a", tmp_path / "worker-b"
    ok(await opened(goal_of(remote.url, "g0"), b))  # b's clone is older than the push
    on_a = ok(await opened(goal_of(remote.url, "g1"), a))
    pushed = commit_in(on_a.path, "from-a.txt")
    assert on_a.info.repo is not None
    assert await push_checkpoints(on_a.info.repo, [], branch="nexo/g1", remote=remote.url) is None
    assert remote.ref("refs/heads/nexo/g1") == pushed

    on_b = ok(await opened(goal_of(remote.url, "g1"), b))
    assert head(on_b.path) == pushed  # the worktree starts from the goal's pushed branch
    assert (on_b.path / "from-a.txt").exists()

    # The branch is checked out on b now: b's, whatever the remote says of it meanwhile.
    mine = commit_in(on_b.path, "from-b.txt")
    theirs = commit_in(on_a.path, "again-from-a.txt")
    assert await push_checkpoints(on_a.info.repo, [], branch="nexo/g1", remote=remote.url) is None
    assert remote.ref("refs/heads/nexo/g1") == theirs
    ok(await opened(goal_of(remote.url, "g1"), b))
    assert head(on_b.path) == mine
    assert on_b.info.repo is not None
    assert git(Path(on_b.info.repo), "rev-parse", "refs/heads/nexo/g1").strip() == mine
    # A branch that moved on elsewhere is not forced: the push says so.
    problem = await push_checkpoints(on_b.info.repo, [], branch="nexo/g1", remote=remote.url)
    assert isinstance(problem, WorkspaceProblem)
    assert problem.message.startswith(f"pushing to {remote.url}: rejected refs/heads/nexo/g1")
    assert remote.ref("refs/heads/nexo/g1") == theirs


async def test_a_remote_that_cannot_be_cloned_is_a_problem_naming_it(tmp_path: Path) -> None:
    url = (tmp_path / "nowhere.git").as_uri()
    problem = await opened(goal_of(url), tmp_path / "worker")
    assert isinstance(problem, WorkspaceProblem)
    assert problem.message.startswith(f"cloning {url}: ")
    assert list((tmp_path / "worker" / CLONES_DIR).iterdir()) == []  # nothing half-made


# --------------------------------------------------------------------------- goals


@attrs.define
class WorkspaceRunner:
    """A turn runner standing in for Claude: each turn plays the next act in the workspace."""

    acts: list[Callable[[Path], Awaitable[TurnOutcome]]]

    async def __call__(self, command: ClaudeCommand, **options: Any) -> TurnResult:
        assert command.cwd is not None
        outcome = await self.acts.pop(0)(command.cwd)
        return TurnResult(
            outcome=outcome,
            state=INITIAL_STATE,
            argv=tuple(command.argv()),
            pid=None,
            duration_s=0.0,
        )


async def ledger(store: MemoryStore, goal_id: str = "g1") -> list[GoalEvent]:
    found = [event_from_ledger(e.kind, e.data, at=e.at) for e in await store.events(goal_id)]
    return [e for e in found if e is not None]


def of(events: list[GoalEvent], cls: type[T]) -> list[T]:
    return [e for e in events if isinstance(e, cls)]


def worker(h: Harness, name: str, **config: Any) -> Any:
    """The config of a worker with its own state dir and workspace root."""
    return h.config(
        state_dir=str(h.root / name / "state"),
        workspace_root=str(h.root / name / "workspaces"),
        **config,
    )


async def run_on(
    h: Harness, config: Any, goal: Goal, store: MemoryStore, **options: Any
) -> GoalOutcome:
    async with orchestrator(config, store=store, **options) as (orch, _):
        return await orch.run_goal(goal)


BOTH = ShellCheck(command="test -f a.txt && test -f b.txt", label="a.txt and b.txt")


async def test_a_goal_goes_on_on_another_worker_from_its_last_checkpoint(
    h: Harness, remote: Remote
) -> None:
    fake = h.fake(
        done_turn("Made a.", bash("echo one > a.txt")),
        done_turn("Made b.", bash("echo two > b.txt")),
    )
    store = MemoryStore()
    goal = goal_of(remote.url, acceptance=(BOTH,), budget=Budget(max_turns=1))
    outcome = await run_on(h, worker(h, "a", claude=h.config(fake).claude), goal, store)
    assert outcome.kind is GoalEndKind.BUDGET_EXHAUSTED, outcome.reason
    events = await ledger(store)
    (started,) = of(events, AttemptStarted)
    (completed,) = of(events, AttemptCompleted)
    assert started.checkpoint is not None
    assert completed.after is not None
    # Both checkpoints of the turn are on the remote.
    assert remote.ref("refs/nexo/g1/1") == started.checkpoint
    assert remote.ref("refs/nexo/g1/1-after") == completed.after
    assert of(events, WorkspaceWarning) == []
    (run,) = of(events, GoalStarted)
    assert run.git is not None
    assert run.git.remote == remote.url

    shutil.rmtree(h.root / "a")  # the first worker is gone, its worktree and clone too
    more = attrs.evolve(goal, budget=Budget(max_turns=3))
    outcome = await run_on(h, worker(h, "b", claude=h.config(fake).claude), more, store)
    assert outcome.kind is GoalEndKind.DONE, outcome.reason
    events = await ledger(store)
    assert [e.sha for e in of(events, WorkspaceRestored)] == [completed.after]
    second_run = [i for i, kind in enumerate(kinds(events)) if kind == "goal_started"][1]
    # Put back right as the run began, before its first turn.
    assert kinds(events)[second_run + 1 : second_run + 3] == [
        "workspace_restored",
        "attempt_started",
    ]
    here = h.root / "b" / "workspaces" / "g1"
    assert (here / "a.txt").read_text() == "one\n"  # the first worker's uncommitted file
    assert (here / "b.txt").read_text() == "two\n"
    assert [i["cwd"] for i in fake.invocations()] == [
        str((h.root / "a" / "workspaces" / "g1").resolve()),
        str(here.resolve()),
    ]
    clone = h.root / "b" / "workspaces" / CLONES_DIR / clone_name(remote.url)
    assert not (clone / FRESH_MARKERS / "g1").exists()
    assert remote.ref("refs/nexo/g1/2") != ""

    # Run again on the same worker: its worktree is kept as it is, not put back again.
    (here / "mine.txt").write_text("kept\n")
    outcome = await run_on(h, worker(h, "b", claude=h.config(fake).claude), more, store)
    assert outcome.kind is GoalEndKind.DONE
    assert len(of(await ledger(store), WorkspaceRestored)) == 1
    assert (here / "mine.txt").exists()


async def test_a_goal_back_on_a_worker_after_running_elsewhere_goes_on_from_there(
    h: Harness, remote: Remote
) -> None:
    """A, then B, then A again: A's worktree, left behind (with a file of a turn it never
    finished), is not run on as it was. Its files are set aside on a ref (on the remote
    too), its branch fast-forwarded to the commit made on B, and it is put back at the
    ledger's last commit, B's; the goal goes on from there."""

    async def makes_a(cwd: Path) -> TurnOutcome:
        (cwd / "a.txt").write_text("a\n")
        return DONE

    async def commits_b(cwd: Path) -> TurnOutcome:
        (cwd / "b.txt").write_text("b\n")
        env = git_env(os.environ)
        await trio.run_process(["git", "-C", str(cwd), "add", "b.txt"], env=env)
        await trio.run_process(
            ["git", "-c", "user.name=T", "-c", "user.email=t@e", "-C", str(cwd), "commit",
             "-q", "-m", "b"],
            env=env,
        )  # fmt: skip
        return DONE

    async def makes_c(cwd: Path) -> TurnOutcome:
        assert (cwd / "b.txt").read_text() == "b\n"  # B's work is here
        assert not (cwd / "stale.txt").exists()
        (cwd / "c.txt").write_text("c\n")
        return DONE

    store = MemoryStore()
    abc = ShellCheck(command="test -f a.txt && test -f b.txt && test -f c.txt", label="abc")
    goal = goal_of(remote.url, acceptance=(abc,), budget=Budget(max_turns=1))
    runner = WorkspaceRunner([makes_a, commits_b, makes_c])
    outcome = await run_on(h, worker(h, "a"), goal, store, turn_runner=runner)
    assert outcome.kind is GoalEndKind.BUDGET_EXHAUSTED, outcome.reason
    at_a = h.root / "a" / "workspaces" / "g1"
    (at_a / "stale.txt").write_text("a turn A never finished\n")
    a_end = of(await ledger(store), AttemptCompleted)[-1].after

    goal = attrs.evolve(goal, budget=Budget(max_turns=2))
    outcome = await run_on(h, worker(h, "b"), goal, store, turn_runner=runner)
    assert outcome.kind is GoalEndKind.BUDGET_EXHAUSTED, outcome.reason
    at_b = h.root / "b" / "workspaces" / "g1"
    b_head = head(at_b)
    b_end = of(await ledger(store), AttemptCompleted)[-1].after
    assert b_end is not None

    goal = attrs.evolve(goal, budget=Budget(max_turns=3))
    outcome = await run_on(h, worker(h, "a"), goal, store, turn_runner=runner)
    assert outcome.kind is GoalEndKind.DONE, outcome.reason
    events = await ledger(store)
    # B's worktree, made fresh, at A's end; A's, left behind, at B's end.
    assert [e.sha for e in of(events, WorkspaceRestored)] == [a_end, b_end]
    third_run = [i for i, kind in enumerate(kinds(events)) if kind == "goal_started"][2]
    assert kinds(events)[third_run + 1 : third_run + 4] == [
        "workspace_warning",
        "workspace_restored",
        "attempt_started",
    ]
    (warned,) = [w for w in of(events, WorkspaceWarning) if "ran elsewhere" in w.message]
    assert "refs/nexo/g1/2-left" in warned.message
    left = git(at_a, "rev-parse", "refs/nexo/g1/2-left").strip()
    assert git(at_a, "show", f"{left}:stale.txt") == "a turn A never finished\n"
    assert remote.ref("refs/nexo/g1/2-left") == left  # seen from every host
    assert git(at_a, "merge-base", "--is-ancestor", b_head, "HEAD") == ""  # fast-forwarded
    assert (at_a / "a.txt").exists()
    assert (at_a / "c.txt").exists()
    assert not [w for w in of(events, WorkspaceWarning) if w.message.startswith("pushing")]
    assert remote.ref("refs/heads/nexo/g1") == head(at_a)

    # Once more on A: the ledger is where A left it, so the worktree goes on as it is.
    (at_a / "mine.txt").write_text("kept\n")
    outcome = await run_on(h, worker(h, "a"), goal, store, turn_runner=runner)
    assert outcome.kind is GoalEndKind.DONE
    assert len(of(await ledger(store), WorkspaceRestored)) == 2
    assert (at_a / "mine.txt").exists()


async def test_a_push_that_fails_is_a_warning_and_a_missing_commit_leaves_the_branch(
    h: Harness, remote: Remote
) -> None:
    away = remote.bare.with_name("origin-away.git")

    async def commits_then_loses_the_remote(cwd: Path) -> TurnOutcome:
        (cwd / "committed.txt").write_text("committed\n")
        await trio.run_process(
            ["git", "-C", str(cwd), "add", "committed.txt"], env=git_env(os.environ)
        )
        await trio.run_process(
            ["git", "-c", "user.name=T", "-c", "user.email=t@e", "-C", str(cwd), "commit", "-q",
             "-m", "committed"],
            env=git_env(os.environ),
        )  # fmt: skip
        (cwd / "a.txt").write_text("uncommitted\n")
        remote.bare.rename(away)  # the push after this turn finds no remote
        return DONE

    async def makes_b(cwd: Path) -> TurnOutcome:
        (cwd / "b.txt").write_text("b\n")
        return DONE

    store = MemoryStore()
    needs_b = ShellCheck(command="test -f b.txt", label="b.txt")
    goal = goal_of(remote.url, acceptance=(needs_b,), budget=Budget(max_turns=1))
    runner = WorkspaceRunner([commits_then_loses_the_remote, makes_b])
    outcome = await run_on(h, worker(h, "a"), goal, store, turn_runner=runner)
    assert outcome.kind is GoalEndKind.BUDGET_EXHAUSTED, outcome.reason
    events = await ledger(store)
    (warned,) = of(events, WorkspaceWarning)
    assert warned.turn == 1
    assert warned.message.startswith(f"pushing to {remote.url}: "), warned.message
    assert "\n" not in warned.message
    (completed,) = of(events, AttemptCompleted)
    assert completed.after is not None

    away.rename(remote.bare)  # back, without the end of turn 1 (nor the commit of it)
    assert remote.ref("refs/nexo/g1/1") != ""
    assert remote.ref("refs/nexo/g1/1-after") == ""
    more = attrs.evolve(goal, budget=Budget(max_turns=3))
    outcome = await run_on(h, worker(h, "b"), more, store, turn_runner=runner)
    assert outcome.kind is GoalEndKind.DONE, outcome.reason
    events = await ledger(store)
    assert of(events, WorkspaceRestored) == []
    missing = of(events, WorkspaceWarning)[1]
    assert missing.message.startswith(f"the workspace's last commit {completed.after[:12]} is not")
    assert "going on from the branch nexo/g1 as fetched" in missing.message
    here = h.root / "b" / "workspaces" / "g1"
    assert not (here / "a.txt").exists()
    assert not (here / "committed.txt").exists()  # the branch was pushed before the turn
    assert (here / "b.txt").exists()


async def test_a_remote_that_cannot_be_cloned_escalates_without_its_password(
    h: Harness,
) -> None:
    url = "https://nexo:hunter2@127.0.0.1:1/nowhere.git"
    store = MemoryStore()
    outcome = await run_on(h, worker(h, "a"), goal_of(url), store)
    assert outcome.kind is GoalEndKind.ESCALATED
    assert outcome.reason is not None
    assert outcome.reason.startswith(
        "cannot use the workspace: cloning https://127.0.0.1:1/nowhere.git: "
    )
    assert "\n" not in outcome.reason
    assert "hunter2" not in outcome.reason
    assert not any("hunter2" in str(e.data) for e in await store.events("g1"))


async def test_a_worker_that_lost_the_goal_s_lease_pushes_nothing(
    h: Harness, remote: Remote, pg_url: str
) -> None:
    """A run stalled past its lease (another worker took the goal over meanwhile) would
    force its old refs over the new owner's: its push after the turn is skipped, and said.
    The push before the turn, while the lease was its own, went."""
    from nexo_trio.store.postgres import open_postgres_store

    async with open_postgres_store(pg_url) as store:
        orchestrators: list[Any] = []

        async def loses_the_lease(cwd: Path) -> TurnOutcome:
            (cwd / "a.txt").write_text("a\n")
            (orch,) = orchestrators
            await store.release_lease("g1", orch.owner)
            assert (await store.take_lease("g1", "another-worker", 600)).owner == "another-worker"
            return DONE

        goal = goal_of(remote.url, budget=Budget(max_turns=1))
        runner = WorkspaceRunner([loses_the_lease])
        config = worker(h, "a")
        async with orchestrator(config, store=store, turn_runner=runner) as (orch, rec):
            orchestrators.append(orch)
            await orch.run_goal(goal)
    # What the run emitted (its ledger rows after the theft are fenced out of the store).
    (started,) = rec.of(AttemptStarted)
    assert remote.ref("refs/nexo/g1/1") == started.checkpoint  # pushed: the lease was its own
    assert remote.ref("refs/nexo/g1/1-after") == ""  # not pushed: it was not any more
    (fenced,) = [w for w in rec.of(WorkspaceWarning) if w.message.startswith("not pushed")]
    assert fenced.message == f"not pushed to {remote.url}: its lease is not this worker's"
    assert fenced.turn == 1


async def test_a_hanging_remote_holds_a_cancelled_goal_s_push_only_briefly(
    h: Harness, remote: Remote
) -> None:
    """A goal cancelled (a worker handing it back) still pushes its last turn's end, but a
    remote that hangs (a pre-receive hook that sleeps) holds it only for
    ``STOPPING_PUSH_S``, not the push's whole timeout: the hand-back's margin holds."""
    orchestrators: list[Any] = []
    hook = remote.bare / "hooks" / "pre-receive"

    async def hangs_the_remote_then_is_cancelled(cwd: Path) -> TurnOutcome:
        (cwd / "a.txt").write_text("a\n")
        hook.write_text("#!/bin/sh\nsleep 6\n")  # past the push's 4 s
        hook.chmod(0o755)
        (orch,) = orchestrators
        await orch.cancel_goal("g1", "handed back by a worker")
        return DONE

    goal = goal_of(remote.url, budget=Budget(max_turns=2))
    runner = WorkspaceRunner([hangs_the_remote_then_is_cancelled])
    async with orchestrator(worker(h, "a"), turn_runner=runner) as (orch, rec):
        orchestrators.append(orch)
        began = trio.current_time()
        outcome = await orch.run_goal(goal)
        took = trio.current_time() - began
    assert outcome.kind is GoalEndKind.CANCELLED
    (warned,) = [w for w in rec.of(WorkspaceWarning) if w.turn == 1]
    assert f"did not finish within {STOPPING_PUSH_S - 1:g}s" in warned.message
    (completed,) = rec.of(AttemptCompleted)
    assert completed.after is not None  # recorded before the push, whatever the remote does
    assert took < STOPPING_PUSH_S + 5  # not the push's whole timeout (2 minutes)


async def test_a_remote_away_for_good_leaves_a_goal_going_on_only_where_it_last_ran(
    h: Harness, remote: Remote
) -> None:
    """The remote cannot be fetched at all: the worker that left the goal's worktree where
    the ledger last knew it goes on there (said in its run's warnings; its pushes fail,
    said too); a worker without a worktree of it escalates the goal, naming the remote."""

    async def makes(name: str) -> Callable[[Path], Awaitable[TurnOutcome]]:
        async def act(cwd: Path) -> TurnOutcome:
            (cwd / name).write_text(f"{name}\n")
            return DONE

        return act

    store = MemoryStore()
    both = ShellCheck(command="test -f a.txt && test -f b.txt", label="a.txt and b.txt")
    goal = goal_of(remote.url, acceptance=(both,), budget=Budget(max_turns=1))
    runner = WorkspaceRunner([await makes("a.txt"), await makes("b.txt")])
    outcome = await run_on(h, worker(h, "a"), goal, store, turn_runner=runner)
    assert outcome.kind is GoalEndKind.BUDGET_EXHAUSTED, outcome.reason
    remote.bare.rename(remote.bare.with_name("away.git"))

    goal = attrs.evolve(goal, budget=Budget(max_turns=2))
    elsewhere = await run_on(h, worker(h, "b"), goal, store, turn_runner=runner)
    assert elsewhere.kind is GoalEndKind.ESCALATED
    assert elsewhere.reason is not None
    assert elsewhere.reason.startswith(f"cannot use the workspace: cloning {remote.url}: ")

    outcome = await run_on(h, worker(h, "a"), goal, store, turn_runner=runner)
    assert outcome.kind is GoalEndKind.DONE, outcome.reason
    events = await ledger(store)
    last_run = of(events, GoalStarted)[-1]
    (warned,) = last_run.warnings
    assert warned.startswith(f"fetching {remote.url}: ")
    assert "going on in this worker's worktree" in warned
    pushes = [w for w in of(events, WorkspaceWarning) if w.message.startswith("pushing")]
    assert pushes  # said, turn by turn; nothing lost: the checkpoints are in this clone
