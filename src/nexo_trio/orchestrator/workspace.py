"""Where a goal works, made ready: a directory, or a git worktree of the user's repository,
and how its turns are checkpointed (:class:`~nexo_trio.core.goal_events.WorkspaceInfo`).

* ``workspace: {repo, base, branch}``: a worktree at ``<workspace_root>/<goal id>`` on the
  goal's branch (created at ``base``, reused by a re-run); its checkpoints live in the
  repository (hidden refs ``refs/nexo/<goal>/<turn>``). A ``repo`` that is a URL
  (:func:`~nexo_trio.core.remotes.is_git_url`) is cloned once into
  ``<workspace_root>/.repos/`` (bare) and fetched every time a worktree of it is opened;
  the worktree is the clone's (see :mod:`nexo_trio.core.remotes`), and one made fresh
  here is marked so, for its run to put it back at the ledger's last commit.
* ``workspace: DIR``: the directory must exist. When it is a git repository's top level its
  own git dir holds the checkpoints; otherwise ``checkpoints: true`` gives it a private
  shadow repository in the state dir (the directory gets no ``.git``), and without it the
  turns are not checkpointed.
* no ``workspace``: ``<workspace_root>/<goal id>``, created, checkpointed like a directory.

Expected failures (a missing directory, a repository that is none, a base that does not
resolve, a branch checked out elsewhere) are :class:`WorkspaceProblem` outcomes, in one
line.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import attrs
import trio

from nexo_trio.core.checkpoints import WorkspaceProblem
from nexo_trio.core.goal import Goal
from nexo_trio.core.goal_events import WorkspaceInfo
from nexo_trio.core.remotes import CLONES_DIR, clone_name, is_git_url, without_userinfo
from nexo_trio.orchestrator.git_workspace import (
    ensure_clone,
    ensure_shadow,
    ensure_worktree,
    fetch_clone,
    mark_fresh,
    remembered_commit,
    repository_target,
)

log = logging.getLogger("nexo_trio.orchestrator")

__all__ = ["GoalWorkspace", "open_workspace", "remote_repo", "worktree_path"]

FETCH_RETRIES_S = (0.5, 2.0)
"""The waits before the fetch of a remote is tried again: a network's blip is no reason to
escalate a goal (a remote that stays unreachable still does, after them)."""

_CLONE_LOCKS: trio.lowlevel.RunVar[dict[str, trio.Lock]] = trio.lowlevel.RunVar("clone_locks")
"""One lock per clone, in this trio run: its fetch, its worktree made."""


@attrs.frozen
class GoalWorkspace:
    """A goal's workspace, ready: its real path and how it is checkpointed."""

    path: Path
    info: WorkspaceInfo
    warning: str | None = None
    """What the goal's run should say about it (a remote that could not be fetched)."""

    @property
    def checkpointed(self) -> bool:
        """Whether every work turn is checkpointed."""
        return self.info.target is not None


async def _fetch(clone: str, goal_id: str, shown: str) -> WorkspaceProblem | None:
    """:func:`fetch_clone`, tried again after each wait of :data:`FETCH_RETRIES_S`."""
    fetched = await fetch_clone(clone, goal_id, remote=shown)
    for wait in FETCH_RETRIES_S:
        if fetched is None:
            break
        log.info("goal %s: %s; trying again in %.1f s", goal_id, fetched.message, wait)
        await trio.sleep(wait)
        fetched = await fetch_clone(clone, goal_id, remote=shown)
    return fetched


def worktree_path(workspace_root: Path, goal_id: str) -> Path:
    """Where a goal's worktree goes: ``<workspace_root>/<goal id>``."""
    return workspace_root / goal_id


def remote_repo(goal: Goal) -> str | None:
    """The URL of the goal's remote repository, when its worktree is of one."""
    tree = goal.worktree
    return tree.repo if tree is not None and is_git_url(tree.repo) else None


def _clone_lock(path: str) -> trio.Lock:
    try:
        locks = _CLONE_LOCKS.get()
    except LookupError:
        locks = {}
        _CLONE_LOCKS.set(locks)
    return locks.setdefault(path, trio.Lock())


def _directory_state(path: Path) -> str:
    if not path.exists():
        return "missing"
    return "directory" if path.is_dir() else "other"


async def open_workspace(
    goal: Goal,
    *,
    resolve: Callable[[str], Path],
    workspace_root: Path,
    shadow_dir: Path,
    ledger_commit: str | None = None,
) -> GoalWorkspace | WorkspaceProblem:
    """Make the goal's workspace ready (created or reused; idempotent). ``resolve`` makes a
    path of the goal absolute; ``shadow_dir`` is where the goal's shadow repository goes.
    ``ledger_commit``: the ledger's commit of the workspace (a remote's worktree that this
    worker left there goes on without a fetch when the remote cannot be reached)."""
    tree = goal.worktree
    if tree is not None:
        return await _open_worktree(goal, resolve, workspace_root, ledger_commit)
    if goal.workspace is None:
        path = worktree_path(workspace_root, goal.id)
        await trio.to_thread.run_sync(lambda: path.mkdir(parents=True, exist_ok=True))
    else:
        assert isinstance(goal.workspace, str)
        path = resolve(goal.workspace)
        state = await trio.to_thread.run_sync(_directory_state, path)
        if state == "missing":
            return WorkspaceProblem(f"the workspace {path} does not exist (create it first)")
        if state == "other":
            return WorkspaceProblem(f"the workspace {path} is not a directory")
    real = await trio.to_thread.run_sync(lambda: Path(os.path.realpath(path)))
    # Only a repository's top level has a .git of its own (a subdirectory of one is
    # checkpointed only by a shadow): a directory without one costs no git call.
    has_git = await trio.to_thread.run_sync(os.path.lexists, real / ".git")
    target = await repository_target(str(real)) if has_git else None
    if isinstance(target, WorkspaceProblem):
        target = None  # not the top level of its repository
    if target is not None:
        return GoalWorkspace(path=real, info=WorkspaceInfo(kind="repository", target=target))
    if not goal.checkpoints:
        return GoalWorkspace(path=real, info=WorkspaceInfo(kind="directory"))
    shadow = await ensure_shadow(str(shadow_dir), str(real))
    if isinstance(shadow, WorkspaceProblem):
        return shadow
    return GoalWorkspace(path=real, info=WorkspaceInfo(kind="shadow", target=shadow))


async def _open_worktree(
    goal: Goal,
    resolve: Callable[[str], Path],
    workspace_root: Path,
    ledger_commit: str | None,
) -> GoalWorkspace | WorkspaceProblem:
    tree = goal.worktree
    branch = goal.branch
    assert tree is not None
    assert branch is not None
    url = remote_repo(goal)
    repo = Path(tree.repo) if url is not None else resolve(tree.repo)
    if url is None:
        state = await trio.to_thread.run_sync(_directory_state, repo)
        if state == "missing":
            return WorkspaceProblem(f"the repository {repo} does not exist")
        if state == "other":
            return WorkspaceProblem(f"the repository {repo} is not a directory")
    path = worktree_path(workspace_root, goal.id)
    root_real, path_real = await trio.to_thread.run_sync(
        lambda: (os.path.realpath(workspace_root), os.path.realpath(path))
    )
    if os.path.dirname(path_real) != root_real:
        return WorkspaceProblem(
            f"the worktree {path} resolves to {path_real}, outside the workspace root "
            f"{workspace_root}: refused"
        )
    await trio.to_thread.run_sync(lambda: Path(root_real).mkdir(parents=True, exist_ok=True))
    if url is not None:
        return await _open_remote_worktree(goal, url, Path(root_real), path_real, ledger_commit)
    made = await ensure_worktree(str(repo), tree.base, branch, path_real)
    if isinstance(made, WorkspaceProblem):
        return made
    info = WorkspaceInfo(
        kind="worktree",
        target=made.target,
        repo=str(repo),
        branch=branch,
        base=tree.base or "HEAD",
    )
    return GoalWorkspace(path=Path(made.path), info=info)


def _is_new(path: str) -> bool:
    """No worktree is at ``path`` yet: nothing there, or an empty directory."""
    return not os.path.lexists(path) or (
        os.path.isdir(path) and not os.path.islink(path) and not os.listdir(path)
    )


async def _open_remote_worktree(
    goal: Goal, url: str, root: Path, path: str, ledger_commit: str | None
) -> GoalWorkspace | WorkspaceProblem:
    """The goal's worktree of this worker's clone of ``url`` (cloned once, fetched now).
    A remote that cannot be fetched escalates the goal, unless the worktree is here, left
    by this worker where the ledger last knew it (``ledger_commit``): nothing of the goal
    is elsewhere, so it goes on here, with a warning (its pushes fail until the remote is
    back)."""
    tree, branch = goal.worktree, goal.branch
    assert tree is not None
    assert branch is not None
    shown = without_userinfo(url)
    clones = root / CLONES_DIR
    async with _clone_lock(str(clones / clone_name(url))):
        clone = await ensure_clone(url, str(clones))
        if isinstance(clone, WorkspaceProblem):
            return clone
        fetched = await _fetch(clone, goal.id, shown)
        warning = None
        if isinstance(fetched, WorkspaceProblem):
            here = ledger_commit is not None and not await trio.to_thread.run_sync(_is_new, path)
            if not here or await remembered_commit(clone, goal.id) != ledger_commit:
                return fetched
            warning = (
                f"{fetched.message}: going on in this worker's worktree, where the ledger "
                "last knew the goal (its pushes fail until the remote is back)"
            )
            log.warning("goal %s: %s", goal.id, warning)
        if await trio.to_thread.run_sync(_is_new, path):
            marked = await mark_fresh(clone, goal.id)
            if marked is not None:
                return marked
        made = await ensure_worktree(clone, tree.base, branch, path)
    if isinstance(made, WorkspaceProblem):
        return made
    info = WorkspaceInfo(
        kind="worktree",
        target=made.target,
        repo=clone,
        branch=branch,
        base=tree.base or "HEAD",
        remote=shown,
    )
    return GoalWorkspace(path=Path(made.path), info=info, warning=warning)
