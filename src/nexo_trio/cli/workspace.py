"""``nexo-trio diff``, ``rollback``, ``worktrees`` and ``cleanup``: a goal's checkpointed
workspace, seen and undone from the ledger.

Everything comes from the goal's events: the latest ``goal_started`` says where the
workspace is and what holds its checkpoints; ``attempt_started`` has each turn's checkpoint
(the workspace before the turn), ``attempt_completed`` the workspace right after it. A
rollback is recorded as ``rolled_back``: the next run of the goal is told what was undone.
Commands that change a workspace refuse while a live process runs the goal (on PostgreSQL:
while any orchestrator holds its lease).

GOAL is a goal id, or the goal file naming it.
"""

from __future__ import annotations

import getpass
import os
import shutil
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import attrs
import click
import trio

from nexo_trio.cli.common import (
    UserError,
    read_config,
    read_goal,
    state_dir_error,
    state_dir_option,
    store_location,
)
from nexo_trio.cli.stores import lease_state, with_store
from nexo_trio.core.checkpoints import GitTarget, WorkspaceProblem
from nexo_trio.core.goal_events import GoalStarted, RolledBack, WorkspaceCleaned, WorkspaceInfo
from nexo_trio.core.goal_machine import GoalState, apply, checkpoint_of, initial_state
from nexo_trio.core.remotes import without_userinfo
from nexo_trio.orchestrator import git_workspace as git
from nexo_trio.orchestrator.goal_lock import GoalLocked, acquire_goal_lock
from nexo_trio.orchestrator.leases import leased_message
from nexo_trio.orchestrator.state_dir import StateDir
from nexo_trio.store.base import SharedStore, Store
from nexo_trio.store.location import StoreLocation
from nexo_trio.wire.files import parse_duration
from nexo_trio.wire.goal_json import event_from_ledger, event_to_ledger
from nexo_trio.wire.outcome_json import dumps

T = TypeVar("T")


@attrs.frozen
class Recorded:
    """A goal as its ledger tells it: the fold, and its latest run's workspace."""

    goal_id: str
    state: GoalState
    workspace: str | None = None
    git: WorkspaceInfo | None = None
    pid: int | None = None
    """The process of a run that never recorded its end (alive or crashed)."""

    @property
    def target(self) -> GitTarget | None:
        """What holds the goal's checkpoints."""
        return self.git.target if self.git is not None else None


async def recorded(store: Store, goal_id: str) -> Recorded | None:
    """The goal's fold and workspace, from its ledger (``None``: no events)."""
    entries = await store.events(goal_id)
    if not entries:
        return None
    state = initial_state(goal_id)
    started: GoalStarted | None = None
    for entry in entries:
        event = event_from_ledger(entry.kind, entry.data, at=entry.at)
        if event is None:
            continue
        state = apply(state, event)
        if isinstance(event, GoalStarted):
            started = event
    if started is None:
        return Recorded(goal_id, state)
    pid = started.pid if state.running else None
    return Recorded(goal_id, state, started.workspace, started.git, pid)


@asynccontextmanager
async def _holding(
    layout: StateDir, goal_id: str, doing: str, *, leases: SharedStore | None = None
) -> AsyncIterator[None]:
    """Hold the goal's lock while changing its workspace: no run of it starts meanwhile on
    this host, and one that runs makes this a one-line refusal. ``leases``: a store many
    hosts share, whose live lease of the goal (a run on any host) refuses too."""
    try:
        lock = await acquire_goal_lock(layout.root, goal_id)
    except GoalLocked as exc:
        raise UserError(f"{exc}: cannot {doing} while it runs; cancel it or wait") from None
    except OSError as exc:
        raise state_dir_error(layout.root, exc) from None
    try:
        lease = None if leases is None else await leases.lease_of(goal_id)
        if lease is not None:
            raise UserError(
                f"{leased_message(lease)}: cannot {doing} while it runs; cancel it or wait"
            )
        yield
    finally:
        await lock.release()


def _alive(pid: int | None) -> bool:
    if pid is None or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _goal_id(goal: str) -> str:
    """A goal id, or the id of the goal file ``goal`` names."""
    path = Path(goal)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return read_goal(path).id
    return goal


def _layout(config_file: Path | None, state_dir: Path | None) -> StateDir:
    return StateDir(Path(read_config(config_file, state_dir=state_dir).state_dir).expanduser())


def _location(config_file: Path | None, state_dir: Path | None) -> StoreLocation:
    return store_location(read_config(config_file, state_dir=state_dir))


def _leases(location: StoreLocation, store: SharedStore) -> SharedStore | None:
    """``store`` when its leases say who runs a goal (PostgreSQL: runs on any host)."""
    return store if location.is_postgres else None


def _run(
    config_file: Path | None,
    state_dir: Path | None,
    fn: Callable[[SharedStore], Awaitable[T]],
) -> T:
    return with_store(_location(config_file, state_dir), fn)


async def _goal(store: Store, goal_id: str) -> Recorded:
    goal = await recorded(store, goal_id)
    if goal is None:
        raise UserError(f"no events recorded for goal {goal_id!r}")
    return goal


def _checkpointed(goal: Recorded) -> GitTarget:
    target = goal.target
    if target is None:
        kind = goal.git.kind if goal.git is not None else "directory"
        hint = (
            " (a plain directory: give the goal checkpoints: true, or a git worktree)"
            if kind == "directory"
            else ""
        )
        raise UserError(f"goal {goal.goal_id!r} has no checkpoints{hint}")
    return target


def _failed(problem: WorkspaceProblem) -> UserError:
    return UserError(problem.message)


# ------------------------------------------------------------------------------- diff


@click.command()
@click.argument("goal")
@click.option("--turn", type=click.IntRange(min=1), help="Only what this turn changed.")
@click.option("--stat", is_flag=True, help="Only the summary: files, insertions, deletions.")
@state_dir_option
def diff(
    goal: str, turn: int | None, stat: bool, config_file: Path | None, state_dir: Path | None
) -> None:
    """Print GOAL's diff as git prints it: everything since its first checkpoint (to the
    workspace as it is now), or what turn N changed (--turn N)."""
    goal_id = _goal_id(goal)

    async def show(store: Store) -> bytes:
        recorded_goal = await _goal(store, goal_id)
        target = _checkpointed(recorded_goal)
        state = recorded_goal.state
        start: str | None
        end: str | None
        if turn is None:
            if not state.checkpoints:
                raise UserError(f"goal {goal_id!r} has no checkpoint yet (no turn ran)")
            start, end = state.checkpoints[0].sha, None
        else:
            start = checkpoint_of(state, turn)
            if start is None:
                raise UserError(f"goal {goal_id!r} has no checkpoint of turn {turn}")
            end = next((c.sha for c in state.turn_ends if c.turn == turn), None)
            if end is None and state.attempt is not None and state.attempt.turn == turn:
                end = None  # the turn runs (or a crash interrupted it): up to now
            elif end is None:
                raise UserError(f"turn {turn} of goal {goal_id!r} has not ended")
        if stat:
            summary = await git.diff_stat(target, start, end)
            if isinstance(summary, WorkspaceProblem):
                raise _failed(summary)
            return _stat_text(summary).encode()
        text = await git.diff_text(target, start, end)
        if isinstance(text, WorkspaceProblem):
            raise _failed(text)
        return text

    out = _run(config_file, state_dir, show)
    if sys.stdout.isatty() and out:
        click.echo_via_pager(out.decode("utf-8", "replace"))
    else:
        sys.stdout.buffer.write(out)
        sys.stdout.flush()


def _stat_text(stat: Any) -> str:
    lines = [f"A {p}" for p in stat.added]
    lines += [f"M {p}" for p in stat.modified]
    lines += [f"D {p}" for p in stat.deleted]
    lines.append(
        f"{stat.files_changed} file(s) changed, {stat.insertions} insertion(s)(+), "
        f"{stat.deletions} deletion(s)(-)"
    )
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------- rollback


@click.command()
@click.argument("goal")
@click.option("--turn", type=click.IntRange(min=1), help="Back to before this turn.")
@click.option("--to", "sha", help="Back to this checkpoint (a sha, or a unique prefix of one).")
@state_dir_option
def rollback(
    goal: str,
    turn: int | None,
    sha: str | None,
    config_file: Path | None,
    state_dir: Path | None,
) -> None:
    """Put GOAL's workspace back exactly as it was before turn N (--turn N) or at a
    checkpoint (--to SHA): files created since are removed, files deleted since are back,
    ignored files are untouched. Recorded in the ledger; the goal's next run is told."""
    if (turn is None) == (sha is None):
        raise UserError("give exactly one of --turn N and --to SHA")
    goal_id = _goal_id(goal)
    layout = _layout(config_file, state_dir)
    location = _location(config_file, state_dir)

    async def undo(store: SharedStore) -> str:
        leases = _leases(location, store)
        async with _holding(layout, goal_id, "roll back its workspace", leases=leases):
            return await _undo(store)

    async def _undo(store: Store) -> str:
        recorded_goal = await _goal(store, goal_id)
        target = _checkpointed(recorded_goal)
        state = recorded_goal.state
        if turn is not None:
            chosen = checkpoint_of(state, turn)
            if chosen is None:
                known = ", ".join(str(c.turn) for c in state.checkpoints) or "none"
                raise UserError(
                    f"goal {goal_id!r} has no checkpoint of turn {turn} (turns with one: {known})"
                )
            at_turn: int | None = turn
        else:
            assert sha is not None
            chosen, at_turn = await _find_checkpoint(target, recorded_goal, sha)
        problem = await git.restore(target, chosen)
        if problem is not None:
            raise _failed(problem)
        event = RolledBack(
            goal_id,
            at_turn,
            chosen,
            by=f"nexo-trio rollback ({getpass.getuser()})",
            at=time.time(),
        )
        await store.append_events(goal_id, [event_to_ledger(event)])
        where = f"before turn {at_turn}" if at_turn is not None else "at the checkpoint"
        return f"rolled back {recorded_goal.workspace} to {where} ({chosen[:12]})"

    click.echo(_run(config_file, state_dir, undo))


async def _find_checkpoint(target: GitTarget, goal: Recorded, sha: str) -> tuple[str, int | None]:
    """The checkpoint of the goal ``sha`` names (a unique prefix of one), and its turn when
    it is the one taken before a turn."""
    wanted = sha.strip().lower()
    if len(wanted) < 4 or any(c not in "0123456789abcdef" for c in wanted):
        raise UserError(f"--to {sha!r} is not a commit sha (4 to 64 hex digits)")
    state = goal.state
    known: dict[str, int | None] = {c.sha: None for c in state.turn_ends}
    refs = await git.list_checkpoints(target, goal.goal_id)
    if not isinstance(refs, WorkspaceProblem):
        known.update({c.sha: c.turn for c in refs})
    known.update({c.sha: c.turn for c in state.checkpoints})
    matches = sorted(s for s in known if s.startswith(wanted))
    if not matches:
        raise UserError(f"{sha} is no checkpoint of goal {goal.goal_id!r}")
    if len(matches) > 1:
        raise UserError(f"{sha} names more than one checkpoint of goal {goal.goal_id!r}")
    return matches[0], known[matches[0]]


# ------------------------------------------------------------------------------- worktrees


async def _status(goal: Recorded, leases: SharedStore | None) -> str:
    """``running`` (on PostgreSQL: ``running on OWNER (lease until T)``), ``crashed``, how
    it ended, or ``open``."""
    state = goal.state
    if state.running:
        if leases is not None:
            lease = await leases.lease_of(goal.goal_id)
            return "crashed" if lease is None else lease_state(lease)
        return "running" if _alive(goal.pid) else "crashed"
    if state.outcome is not None:
        return state.outcome.kind.value
    return "open"


@click.command()
@state_dir_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object per worktree.")
def worktrees(config_file: Path | None, state_dir: Path | None, as_json: bool) -> None:
    """List every goal's worktree: path, branch, base, last checkpoint and state."""
    location = _location(config_file, state_dir)

    async def listing(store: SharedStore) -> list[tuple[Recorded, str]]:
        found = []
        for summary in await store.goals():
            goal = await recorded(store, summary.goal_id)
            if goal is not None and goal.git is not None and goal.git.kind == "worktree":
                found.append((goal, await _status(goal, _leases(location, store))))
        return found

    for goal, status in with_store(location, listing):
        info = goal.git
        assert info is not None
        last = goal.state.checkpoints[-1] if goal.state.checkpoints else None
        exists = goal.workspace is not None and os.path.isdir(goal.workspace)
        row = {
            "goal_id": goal.goal_id,
            "path": goal.workspace,
            "exists": exists,
            "repo": info.repo,
            "branch": info.branch,
            "base": info.base,
            "last_checkpoint": None if last is None else {"turn": last.turn, "sha": last.sha},
            "state": status,
        }
        if as_json:
            sys.stdout.buffer.write(dumps(row) + b"\n")
            continue
        check = f"turn {last.turn} {last.sha[:12]}" if last is not None else "no checkpoint"
        gone = "" if exists else "  (removed)"
        click.echo(
            f"{goal.goal_id}  {goal.workspace}  {info.branch}  base {info.base}  {check}  "
            f"{row['state']}{gone}"
        )
    sys.stdout.flush()


# ------------------------------------------------------------------------------- cleanup


@click.command()
@click.argument("goal", required=False)
@click.option("--keep-branch", is_flag=True, help="Keep the goal's branch.")
@click.option(
    "--finished-before",
    "finished_before",
    metavar="DURATION",
    help="Every goal that ended longer ago than this (e.g. 7d, 12h).",
)
@state_dir_option
def cleanup(
    goal: str | None,
    keep_branch: bool,
    finished_before: str | None,
    config_file: Path | None,
    state_dir: Path | None,
) -> None:
    """Remove GOAL's worktree, its hidden checkpoint refs (or shadow repository) and its
    branch when nothing would be lost (merged into the repository's HEAD; --keep-branch
    keeps it anyway). Idempotent. --finished-before DURATION: every goal that ended
    that long ago."""
    if (goal is None) == (finished_before is None):
        raise UserError("give a GOAL or --finished-before DURATION (not both)")
    age: float | None = None
    if finished_before is not None:
        try:
            age = parse_duration(finished_before)
        except ValueError as exc:
            raise UserError(f"--finished-before: {exc}") from None
    layout = _layout(config_file, state_dir)
    location = _location(config_file, state_dir)

    async def clean(store: SharedStore) -> list[str]:
        if goal is not None:
            chosen = [await _goal(store, _goal_id(goal))]
        else:
            assert age is not None
            cutoff = time.time() - age
            chosen = []
            for summary in await store.goals():
                found = await recorded(store, summary.goal_id)
                if found is None or found.state.running or found.state.outcome is None:
                    continue
                if summary.last_at <= cutoff:
                    chosen.append(found)
        lines: list[str] = []
        for each in chosen:
            try:
                leases = _leases(location, store)
                async with _holding(layout, each.goal_id, "clean up its workspace", leases=leases):
                    done = await _clean_one(each, layout, keep_branch=keep_branch)
            except UserError:
                if goal is not None:
                    raise
                lines.append(f"{each.goal_id}: skipped: it is running")
                continue
            removed = tuple(line for line in done if line.startswith(("removed", "deleted")))
            if removed:
                cleaned = WorkspaceCleaned(
                    each.goal_id,
                    removed,
                    by=f"nexo-trio cleanup ({getpass.getuser()})",
                    at=time.time(),
                )
                await store.append_events(each.goal_id, [event_to_ledger(cleaned)])
            lines += [f"{each.goal_id}: {line}" for line in done]
            if not done:
                lines.append(f"{each.goal_id}: {_nothing(each)}")
        return lines

    for line in with_store(location, clean):
        click.echo(line)


def _nothing(goal: Recorded) -> str:
    if goal.git is None or goal.git.kind == "directory":
        return "nothing to clean up (a plain directory)"
    return "nothing left to clean up"


async def _clean_one(goal: Recorded, layout: StateDir, *, keep_branch: bool) -> list[str]:
    """What was removed of the goal's workspace (nothing: an empty list)."""
    info = goal.git
    name = goal.goal_id
    if info is None or info.kind == "directory":
        return []
    done: list[str] = []
    if info.kind == "shadow":
        shadow = layout.shadow(name)
        if await trio.to_thread.run_sync(shadow.exists):
            await trio.to_thread.run_sync(lambda: shutil.rmtree(shadow))
            done.append(f"removed the shadow repository {shadow}")
        return done
    target = info.target
    if info.kind == "worktree" and info.repo is not None:
        refs_target = await git.repository_refs(info.repo)
        if isinstance(refs_target, WorkspaceProblem):
            raise _failed(refs_target)
        target = refs_target
    if target is not None:
        deleted = await git.delete_checkpoints(target, name)
        if isinstance(deleted, WorkspaceProblem):
            raise _failed(deleted)
        if deleted:
            done.append(f"deleted {deleted} checkpoint ref(s)")
    if info.kind == "worktree" and info.repo is not None and info.remote is not None:
        done += await _clean_remote(info.repo, name, info.remote)
    if info.kind == "worktree" and info.repo is not None and goal.workspace is not None:
        removed = await git.remove_worktree(info.repo, goal.workspace)
        if isinstance(removed, WorkspaceProblem):
            raise _failed(removed)
        if removed:
            done.append(f"removed the worktree {goal.workspace}")
        if info.branch is not None:
            done += await _clean_branch(info.repo, info.branch, keep_branch=keep_branch)
    return done


async def _clean_remote(clone: str, goal_id: str, remote: str) -> list[str]:
    """The goal's checkpoint refs deleted on the remote too (every worker's): a remote
    that cannot be reached keeps them, said in a line, and the local clean-up goes on."""
    shown = without_userinfo(remote)
    deleted = await git.delete_remote_checkpoints(clone, goal_id, remote=remote)
    await git.forget_goal(clone, goal_id)
    if isinstance(deleted, WorkspaceProblem):
        return [f"kept the checkpoint refs on {shown}: {deleted.message}"]
    return [f"deleted {deleted} checkpoint ref(s) on {shown}"] if deleted else []


async def _clean_branch(repo: str, branch: str, *, keep_branch: bool) -> list[str]:
    if keep_branch:
        return [f"kept the branch {branch} (--keep-branch)"]
    merged = await git.branch_merged(repo, branch, None)
    if isinstance(merged, WorkspaceProblem):
        raise _failed(merged)
    if not merged:
        return [
            f"kept the branch {branch}: it has commits not merged into HEAD "
            f"(delete it with: git -C {repo} branch -D {branch})"
        ]
    deleted = await git.delete_branch(repo, branch)
    if isinstance(deleted, WorkspaceProblem):
        raise _failed(deleted)
    return [f"deleted the branch {branch}"] if deleted else []
