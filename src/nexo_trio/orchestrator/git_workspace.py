"""Git workspaces and per-turn checkpoints, the shell: runs git (``trio.run_process``, every
call bounded by a timeout) and turns its failures into :class:`WorkspaceProblem` outcomes.
Names, argv, environment and parsers are :mod:`nexo_trio.core.checkpoints`'.

Every call names its git dir and work tree (``--git-dir``/``--work-tree``), or the
repository by ``-C``, in an environment without ``GIT_*`` redirects, without system config,
pager or hooks (``core.hooksPath=/dev/null``).

* :func:`ensure_worktree`: a git worktree of the user's repository for a goal, created or
  reused. The user's checkout (working tree, index, HEAD, branches other than the goal's
  new one) is never touched.
* :func:`repository_target` / :func:`ensure_shadow`: the checkpoint target of a plain
  directory, its own repository or a private shadow git dir (the directory gets no
  ``.git``).
* :func:`checkpoint`: everything in the work tree (untracked included, ignored excluded) as a
  commit on ``refs/nexo/<goal>/<turn>``, built in a temporary index: HEAD, the branch and
  the real index never change, so Claude's own commits stay as they are.
* :func:`diff_stat` / :func:`diff_text`: a checkpoint against another or the work tree now.
* :func:`restore`: **the work tree and the index are put back as they were at the
  checkpoint; HEAD and the branch stay where they are.** Tracked and untracked files are
  restored (a file created later is removed, a file deleted later is back, ignored files are
  not touched); the index gets the tree it had at the checkpoint (recorded in the
  checkpoint's second parent), so staged and untracked are told apart as they were. Commits
  made since stay on the branch: the restored state shows as uncommitted changes against
  them, and the user decides what to keep (``git reset`` is theirs to run).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress

import attrs
import trio

from nexo_trio.core.checkpoints import (
    Checkpoint,
    DiffStat,
    GitTarget,
    WorkspaceProblem,
    Worktree,
    checkpoint_message,
    checkpoint_prefix,
    checkpoint_ref,
    first_line,
    git_argv,
    git_env,
    goal_id_problem,
    parse_checkpoints,
    parse_diff_stat,
    parse_worktrees,
    ref_problem,
)

__all__ = [
    "DEFAULT_TIMEOUT",
    "checkpoint",
    "diff_stat",
    "diff_text",
    "ensure_shadow",
    "ensure_worktree",
    "list_checkpoints",
    "repository_target",
    "restore",
    "work_tree_tree",
]

DEFAULT_TIMEOUT = 120.0
"""Seconds one git call may take."""


@attrs.frozen
class _Done:
    returncode: int
    stdout: bytes
    stderr: bytes


async def _run(
    argv: Sequence[str],
    *,
    timeout: float,
    index_file: str | None = None,
    stdin: bytes = b"",
) -> _Done | WorkspaceProblem:
    """Run one git command, output captured; a timeout or a git that cannot be started is a
    problem, an exit code is the caller's to judge."""
    what = " ".join(argv[argv.index("--no-pager") + 1 :][-4:]) if "--no-pager" in argv else argv[0]
    try:
        with trio.move_on_after(timeout) as scope:
            done = await trio.run_process(
                list(argv),
                stdin=stdin,
                capture_stdout=True,
                capture_stderr=True,
                check=False,
                env=git_env(os.environ, index_file=index_file),
            )
    except OSError as exc:
        return WorkspaceProblem(f"git could not be run: {exc.strerror or exc}")
    if scope.cancelled_caught:
        return WorkspaceProblem(f"git {what} did not finish within {timeout:g}s")
    return _Done(done.returncode, done.stdout, done.stderr)


async def _ok(
    argv: Sequence[str],
    *,
    timeout: float,
    index_file: str | None = None,
    stdin: bytes = b"",
    doing: str,
) -> bytes | WorkspaceProblem:
    """stdout of a git command that must succeed; its failure is a problem saying ``doing``."""
    done = await _run(argv, timeout=timeout, index_file=index_file, stdin=stdin)
    if isinstance(done, WorkspaceProblem):
        return done
    if done.returncode != 0:
        detail = first_line(done.stderr, f"exit code {done.returncode}")
        return WorkspaceProblem(f"{doing}: {detail}")
    return done.stdout


def _line(out: bytes) -> str:
    return os.fsdecode(out.rstrip(b"\n"))


# -- worktrees ------------------------------------------------------------------------------


def _path_state(path: str) -> str:
    """``missing``, ``empty`` (an empty directory) or ``occupied``."""
    if not os.path.lexists(path):
        return "missing"
    if os.path.isdir(path) and not os.path.islink(path) and not os.listdir(path):
        return "empty"
    return "occupied"


async def _resolve_commit(repo: str, rev: str, *, timeout: float) -> str | WorkspaceProblem | None:
    done = await _run(
        git_argv(None, "rev-parse", "--verify", "-q", "--end-of-options", f"{rev}^{{commit}}",
                 cwd_repo=repo),
        timeout=timeout,
    )  # fmt: skip
    if isinstance(done, WorkspaceProblem):
        return done
    return _line(done.stdout) if done.returncode == 0 else None


async def ensure_worktree(
    repo: str,
    base: str | None,
    branch: str,
    path: str,
    *,
    timeout: float = DEFAULT_TIMEOUT,
) -> Worktree | WorkspaceProblem:
    """A worktree of ``repo`` at ``path`` on ``branch``: created (a new ``branch`` at
    ``base``, default ``HEAD``; an existing ``branch`` as it is, ``base`` then unused) or
    reused (``path`` is already a worktree of ``repo`` on ``branch``).

    Problems: ``repo`` is not a repository, ``branch`` is no valid name or is checked out in
    another worktree, ``base`` does not resolve to a commit, ``path`` is something else."""
    path = await trio.to_thread.run_sync(os.path.abspath, path)
    problem = ref_problem(f"refs/heads/{branch}")
    if problem is not None:
        return WorkspaceProblem(f"branch {branch!r} is not a valid name: {problem}")
    common = await _run(
        git_argv(None, "rev-parse", "--path-format=absolute", "--git-common-dir", cwd_repo=repo),
        timeout=timeout,
    )
    if isinstance(common, WorkspaceProblem):
        return common
    if common.returncode != 0:
        return WorkspaceProblem(f"{repo} is not a git repository")
    listing = await _ok(
        git_argv(None, "worktree", "list", "--porcelain", "-z", cwd_repo=repo),
        timeout=timeout,
        doing=f"listing the worktrees of {repo}",
    )
    if isinstance(listing, WorkspaceProblem):
        return listing
    entries = parse_worktrees(listing)
    full = f"refs/heads/{branch}"
    real, state, others = await trio.to_thread.run_sync(
        lambda: (
            os.path.realpath(path),
            _path_state(path),
            [os.path.realpath(e.path) for e in entries],
        )
    )
    mine = [e for e, where in zip(entries, others, strict=True) if where == real]
    elsewhere = [
        e for e, where in zip(entries, others, strict=True) if e.branch == full and where != real
    ]
    if elsewhere:
        return WorkspaceProblem(
            f"branch {branch} is already checked out at {elsewhere[0].path}: name another branch"
        )
    missing_but_registered = False
    if mine:
        entry = mine[0]
        if state != "missing":
            if entry.branch != full:
                on = entry.branch or "a detached HEAD"
                return WorkspaceProblem(f"{path} is a worktree of {repo} on {on}, not on {branch}")
            target = await _worktree_target(path, timeout=timeout)
            if isinstance(target, WorkspaceProblem):
                return target
            return Worktree(path=path, branch=branch, target=target, created=False)
        missing_but_registered = True
    elif state == "occupied":
        return WorkspaceProblem(f"{path} exists and is not a worktree of {repo}")
    exists = await _resolve_commit(repo, full, timeout=timeout)
    if isinstance(exists, WorkspaceProblem):
        return exists
    force = ["-f"] if missing_but_registered else []
    if exists is not None:
        args = ["worktree", "add", *force, "--", path, branch]
    else:
        start = await _resolve_commit(repo, base or "HEAD", timeout=timeout)
        if isinstance(start, WorkspaceProblem):
            return start
        if start is None:
            return WorkspaceProblem(f"base {base or 'HEAD'!r} is no commit of {repo}")
        args = ["worktree", "add", *force, "--no-track", "-b", branch, "--", path, start]
    added = await _ok(
        git_argv(None, *args, cwd_repo=repo),
        timeout=timeout,
        doing=f"creating the worktree {path}",
    )
    if isinstance(added, WorkspaceProblem):
        return added
    target = await _worktree_target(path, timeout=timeout)
    if isinstance(target, WorkspaceProblem):
        return target
    return Worktree(path=path, branch=branch, target=target, created=True)


async def _worktree_target(path: str, *, timeout: float) -> GitTarget | WorkspaceProblem:
    out = await _ok(
        git_argv(None, "rev-parse", "--absolute-git-dir", cwd_repo=path),
        timeout=timeout,
        doing=f"finding the git dir of {path}",
    )
    if isinstance(out, WorkspaceProblem):
        return out
    return GitTarget(git_dir=_line(out), work_tree=path)


# -- plain directories ----------------------------------------------------------------------


async def repository_target(
    directory: str, *, timeout: float = DEFAULT_TIMEOUT
) -> GitTarget | WorkspaceProblem | None:
    """The checkpoint target of a plain-directory workspace that is a git repository's top
    level (its own git dir and index); ``None`` when it is no repository. A directory inside a
    repository but not its top level is a problem (its checkpoints would cover files outside
    the workspace): use a worktree, or ``checkpoints: true`` for a shadow."""
    directory = await trio.to_thread.run_sync(os.path.abspath, directory)
    done = await _run(
        git_argv(None, "rev-parse", "--absolute-git-dir", "--show-toplevel", cwd_repo=directory),
        timeout=timeout,
    )
    if isinstance(done, WorkspaceProblem):
        return done
    if done.returncode != 0:
        return None
    lines = done.stdout.rstrip(b"\n").split(b"\n")
    if len(lines) != 2:
        return WorkspaceProblem(f"{directory} is a bare repository or a git dir")
    git_dir, top = (os.fsdecode(x) for x in lines)
    if await trio.to_thread.run_sync(lambda: os.path.realpath(top) != os.path.realpath(directory)):
        return WorkspaceProblem(
            f"{directory} is inside the repository {top} but not its top level: use a "
            "worktree, or checkpoints: true"
        )
    return GitTarget(git_dir=git_dir, work_tree=directory)


async def ensure_shadow(
    git_dir: str, work_tree: str, *, timeout: float = DEFAULT_TIMEOUT
) -> GitTarget | WorkspaceProblem:
    """A private shadow repository at ``git_dir`` (in the state dir) checkpointing
    ``work_tree``: created bare when missing, reused when it is one. ``work_tree`` gets no
    ``.git``; its ``.gitignore`` files apply."""
    git_dir, work_tree, is_dir, exists = await trio.to_thread.run_sync(
        lambda: (
            os.path.abspath(git_dir),
            os.path.abspath(work_tree),
            os.path.isdir(work_tree),
            os.path.lexists(git_dir),
        )
    )
    if not is_dir:
        return WorkspaceProblem(f"the workspace {work_tree} is not a directory")
    if exists:
        out = await _run(
            git_argv(None, f"--git-dir={git_dir}", "rev-parse", "--is-bare-repository"),
            timeout=timeout,
        )
        if isinstance(out, WorkspaceProblem):
            return out
        if out.returncode != 0:
            return WorkspaceProblem(f"{git_dir} exists and is not a git repository")
    else:
        made = await _ok(
            git_argv(None, "init", "-q", "--bare", "--template=", "--", git_dir),
            timeout=timeout,
            doing=f"creating the shadow repository {git_dir}",
        )
        if isinstance(made, WorkspaceProblem):
            return made
    return GitTarget(git_dir=git_dir, work_tree=work_tree, private=True)


# -- checkpoints ----------------------------------------------------------------------------


async def _keep_index(target: GitTarget, index: str) -> None:
    """A private target keeps the scratch index as its own (the next checkpoint's seed)."""
    if target.private:
        await trio.to_thread.run_sync(shutil.copyfile, index, target.index_file)


@asynccontextmanager
async def _scratch_index(target: GitTarget) -> AsyncIterator[str]:
    """A temporary index file, a copy of the target's index when it has one (so ``git add
    -A`` rehashes only what changed), removed afterwards. The target's own index is only
    read."""
    directory = await trio.to_thread.run_sync(lambda: tempfile.mkdtemp(prefix="nexo-index-"))
    index = os.path.join(directory, "index")

    def seed() -> None:
        with suppress(FileNotFoundError):
            shutil.copyfile(target.index_file, index)

    try:
        await trio.to_thread.run_sync(seed)
        yield index
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(lambda: shutil.rmtree(directory, ignore_errors=True))


def _discard(path: str) -> None:
    with suppress(FileNotFoundError):
        os.remove(path)


async def _write_tree(target: GitTarget, index: str, *, timeout: float) -> str | WorkspaceProblem:
    out = await _ok(
        git_argv(target, "write-tree"),
        timeout=timeout,
        index_file=index,
        doing=f"writing the tree of {target.work_tree}",
    )
    return out if isinstance(out, WorkspaceProblem) else _line(out)


async def _add_all(target: GitTarget, index: str, *, timeout: float) -> WorkspaceProblem | None:
    out = await _ok(
        git_argv(target, "add", "-A", "--", ":/"),
        timeout=timeout,
        index_file=index,
        doing=f"adding {target.work_tree} to a checkpoint",
    )
    return out if isinstance(out, WorkspaceProblem) else None


async def _add_everything(
    target: GitTarget, index: str, *, timeout: float
) -> WorkspaceProblem | None:
    """``git add -A`` of the work tree into the scratch ``index``; when git cannot use the
    copied index (a split or sparse index…), again from an empty one."""
    added = await _add_all(target, index, timeout=timeout)
    if added is None:
        return None
    await trio.to_thread.run_sync(_discard, index)
    return await _add_all(target, index, timeout=timeout)


async def work_tree_tree(
    target: GitTarget, *, timeout: float = DEFAULT_TIMEOUT
) -> str | WorkspaceProblem:
    """The tree object of everything in the work tree now (untracked included, ignored
    excluded), written to the object store; no ref, index or file of the target changes."""
    async with _scratch_index(target) as index:
        added = await _add_everything(target, index, timeout=timeout)
        if added is not None:
            return added
        tree = await _write_tree(target, index, timeout=timeout)
        if not isinstance(tree, WorkspaceProblem):
            await _keep_index(target, index)
        return tree


async def _index_tree(target: GitTarget, *, timeout: float) -> str | None:
    """The tree of the target's real index, read from a copy (the real one is not even
    locked); ``None`` for a private target, no index, or one with conflicts."""
    if target.private:
        return None
    async with _scratch_index(target) as index:
        if not await trio.to_thread.run_sync(os.path.exists, index):
            return None
        tree = await _write_tree(target, index, timeout=timeout)
        return None if isinstance(tree, WorkspaceProblem) else tree


async def _head(target: GitTarget, *, timeout: float) -> str | WorkspaceProblem | None:
    done = await _run(
        git_argv(target, "rev-parse", "--verify", "-q", "HEAD^{commit}"), timeout=timeout
    )
    if isinstance(done, WorkspaceProblem):
        return done
    return _line(done.stdout) if done.returncode == 0 else None


async def _commit_tree(
    target: GitTarget, tree: str, parents: Sequence[str], message: str, *, timeout: float
) -> str | WorkspaceProblem:
    args = ["commit-tree", "--no-gpg-sign"]
    for parent in parents:
        args += ["-p", parent]
    out = await _ok(
        [*git_argv(target, *args, identity=True), tree],
        timeout=timeout,
        stdin=message.encode(),
        doing="writing a checkpoint commit",
    )
    return out if isinstance(out, WorkspaceProblem) else _line(out)


async def checkpoint(
    target: GitTarget, goal_id: str, turn: int, *, timeout: float = DEFAULT_TIMEOUT
) -> str | WorkspaceProblem:
    """Checkpoint the work tree on ``refs/nexo/<goal>/<turn>`` (replacing an older one of the
    same turn); the commit's sha. Parents: HEAD (when it resolves), then a commit of the real
    index's tree (when the target has one without conflicts)."""
    problem = goal_id_problem(goal_id)
    if problem is not None:
        return WorkspaceProblem(problem)
    ref = checkpoint_ref(goal_id, turn)
    tree = await work_tree_tree(target, timeout=timeout)
    if isinstance(tree, WorkspaceProblem):
        return tree
    head = await _head(target, timeout=timeout)
    if isinstance(head, WorkspaceProblem):
        return head
    parents = [head] if head is not None else []
    index_tree = await _index_tree(target, timeout=timeout)
    if index_tree is not None:
        index_commit = await _commit_tree(
            target, index_tree, parents, f"index of {ref}\n", timeout=timeout
        )
        if isinstance(index_commit, WorkspaceProblem):
            return index_commit
        parents.append(index_commit)
    sha = await _commit_tree(
        target, tree, parents, checkpoint_message(goal_id, turn), timeout=timeout
    )
    if isinstance(sha, WorkspaceProblem):
        return sha
    updated = await _ok(
        git_argv(target, "update-ref", "-m", "nexo-trio checkpoint", ref, sha),
        timeout=timeout,
        doing=f"writing {ref}",
    )
    return updated if isinstance(updated, WorkspaceProblem) else sha


async def list_checkpoints(
    target: GitTarget, goal_id: str, *, timeout: float = DEFAULT_TIMEOUT
) -> tuple[Checkpoint, ...] | WorkspaceProblem:
    """The goal's checkpoints, by turn."""
    problem = goal_id_problem(goal_id)
    if problem is not None:
        return WorkspaceProblem(problem)
    prefix = checkpoint_prefix(goal_id)
    out = await _ok(
        git_argv(target, "for-each-ref", "--format=%(refname) %(objectname)", prefix),
        timeout=timeout,
        doing=f"listing {prefix}",
    )
    return out if isinstance(out, WorkspaceProblem) else parse_checkpoints(out, goal_id)


async def _trees(
    target: GitTarget, from_sha: str, to_sha: str | None, *, timeout: float
) -> tuple[str, str] | WorkspaceProblem:
    to = to_sha if to_sha is not None else await work_tree_tree(target, timeout=timeout)
    if isinstance(to, WorkspaceProblem):
        return to
    return f"{from_sha}^{{tree}}", (f"{to}^{{tree}}" if to_sha is not None else to)


async def diff_stat(
    target: GitTarget, from_sha: str, to_sha: str | None = None, *, timeout: float = DEFAULT_TIMEOUT
) -> DiffStat | WorkspaceProblem:
    """What changed from ``from_sha`` (a checkpoint) to ``to_sha``, or to the work tree now
    (untracked included, ignored excluded) when ``to_sha`` is ``None``."""
    trees = await _trees(target, from_sha, to_sha, timeout=timeout)
    if isinstance(trees, WorkspaceProblem):
        return trees
    base = ["diff", "--no-renames", "--no-ext-diff", "--no-textconv", "-z"]
    outputs: list[bytes] = []
    for kind in ("--numstat", "--name-status"):
        out = await _ok(
            git_argv(target, *base, kind, *trees, "--"),
            timeout=timeout,
            doing=f"diffing {from_sha[:12]}",
        )
        if isinstance(out, WorkspaceProblem):
            return out
        outputs.append(out)
    try:
        return parse_diff_stat(outputs[0], outputs[1])
    except ValueError as exc:
        return WorkspaceProblem(f"unexpected git diff output: {exc}")


async def diff_text(
    target: GitTarget, from_sha: str, to_sha: str | None = None, *, timeout: float = DEFAULT_TIMEOUT
) -> bytes | WorkspaceProblem:
    """The diff as ``git diff`` prints it (no pager, no color, no external diff), from
    ``from_sha`` to ``to_sha`` or to the work tree now (untracked files show as new)."""
    trees = await _trees(target, from_sha, to_sha, timeout=timeout)
    if isinstance(trees, WorkspaceProblem):
        return trees
    return await _ok(
        git_argv(target, "diff", "--no-color", "--no-ext-diff", "--binary", *trees, "--"),
        timeout=timeout,
        doing=f"diffing {from_sha[:12]}",
    )


async def restore(
    target: GitTarget, sha: str, *, timeout: float = DEFAULT_TIMEOUT
) -> WorkspaceProblem | None:
    """Put the work tree back exactly as it was at the checkpoint ``sha`` (tracked and
    untracked files; ignored files untouched) and the real index as it was then (when the
    checkpoint recorded it); HEAD and every branch stay where they are."""
    resolved = await _ok(
        git_argv(target, "rev-parse", "--verify", "-q", f"{sha}^{{commit}}"),
        timeout=timeout,
        doing=f"{sha} is no checkpoint",
    )
    if isinstance(resolved, WorkspaceProblem):
        return resolved
    commit = _line(resolved)
    async with _scratch_index(target) as index:
        # The scratch index holds the work tree now, so the one-way merge below removes the
        # files the checkpoint does not have and writes the ones it has.
        added = await _add_everything(target, index, timeout=timeout)
        if added is not None:
            return added
        moved = await _ok(
            git_argv(target, "read-tree", "--reset", "-u", f"{commit}^{{tree}}"),
            timeout=timeout,
            index_file=index,
            doing=f"restoring {target.work_tree} to {commit[:12]}",
        )
        if isinstance(moved, WorkspaceProblem):
            return moved
        await _keep_index(target, index)
    if target.private:
        return None
    parents = await _ok(
        git_argv(target, "rev-list", "--no-walk", "--parents", commit),
        timeout=timeout,
        doing=f"reading {commit[:12]}",
    )
    if isinstance(parents, WorkspaceProblem):
        return parents
    shas = parents.split()
    if len(shas) < 3:
        return None  # no index recorded: the index stays as it is
    index_commit = os.fsdecode(shas[2])
    read = await _ok(
        git_argv(target, "read-tree", f"{index_commit}^{{tree}}"),
        timeout=timeout,
        doing="restoring the index",
    )
    if isinstance(read, WorkspaceProblem):
        return read
    # Stat data of the fresh index; exit code 1 ("needs update") is no failure.
    refreshed = await _run(git_argv(target, "update-index", "-q", "--refresh"), timeout=timeout)
    return refreshed if isinstance(refreshed, WorkspaceProblem) else None
