"""Git workspaces and per-turn checkpoints, the shell: runs git (``trio.run_process``, every
call bounded by a timeout) and turns its failures into :class:`WorkspaceProblem` outcomes.
Names, argv, environment and parsers are :mod:`nexo_trio.core.checkpoints`'.

Every call names its git dir and work tree (``--git-dir``/``--work-tree``), or the
repository by ``-C``, in an environment without ``GIT_*`` redirects but ours, without system
config, pager or hooks (``core.hooksPath=/dev/null``).

**Whoever writes the workspace cannot make these calls run anything.** Every call that reads
the work tree or writes objects (``add``, ``write-tree``, ``commit-tree``, ``read-tree``,
``update-index``, ``diff``) runs in a neutral git dir made for the operation in a temporary
directory, with ``GIT_OBJECT_DIRECTORY`` naming the target's object store: the target's
``config`` (filters, textconv, fsmonitor, includes, ``core.worktree``…) is never read (the
user's global config is, as by any git; ``-c`` settings override what could run), and
``info/attributes`` there turns every conversion off (blobs are the files' bytes). Only ref
operations (``rev-parse``, ``update-ref``, ``for-each-ref``) use the repository: its common
dir as ``--git-dir`` and ``GIT_COMMON_DIR``, a worktree's HEAD as ``worktrees/<id>/HEAD``
(git's ref store would follow a rewritten ``commondir`` file of the admin dir, whatever
``GIT_COMMON_DIR`` says). A worktree's admin dir is found from the repository's side (its
``worktrees/*/gitdir``), never through the worktree's ``.git`` file.

* :func:`ensure_worktree`: a git worktree of the user's repository for a goal, created or
  reused. The user's checkout (working tree, index, HEAD, branches other than the goal's
  new one) is never touched.
* :func:`repository_target` / :func:`ensure_shadow`: the checkpoint target of a plain
  directory, its own repository or a private shadow git dir (the directory gets no
  ``.git``).
* :func:`checkpoint`: everything in the work tree (untracked included, ignored excluded) as a
  commit on ``refs/nexo/<goal>/<turn>``, built in a temporary index: HEAD, the branch and
  the real index never change, so Claude's own commits stay as they are.
* :func:`diff_stat` / :func:`diff_text` / :func:`changed_paths`: a checkpoint against
  another or the work tree now.
* :func:`delete_checkpoints`, :func:`remove_worktree`, :func:`branch_merged`,
  :func:`delete_branch`: clean-up after a goal.
* :func:`ensure_clone` / :func:`fetch_clone` / :func:`push_checkpoints`: a remote
  repository (a URL, :mod:`nexo_trio.core.remotes`) is cloned once per worker (bare, under
  its ``workspace_root``), fetched before a goal's worktree of it is opened (never into a
  branch checked out in one of its worktrees), and each checkpoint is pushed back with the
  goal's branch. Their calls run in the clone's git dir with the transport settings of
  :func:`~nexo_trio.core.remotes.remote_env`, bounded like every other (a clone generously:
  :data:`CLONE_TIMEOUT`); their messages never show a URL's userinfo. A marker in the clone
  (:func:`mark_fresh`) says a goal's worktree was made here fresh until its first run has
  put it back at the ledger's last commit (:func:`clear_fresh`); another
  (:func:`remember_commit`) keeps the ledger's commit as this host last knew it, so that a
  goal coming back after running elsewhere finds its old worktree put back there too (its
  state then is kept first: :func:`set_aside`).
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
import re
import shutil
import stat
import tempfile
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager, suppress

import attrs
import trio

from nexo_trio.core.checkpoints import (
    INDEX_MESSAGE,
    NEUTRAL_ATTRIBUTES,
    NEUTRAL_HEAD,
    OBJECT_FORMATS,
    Checkpoint,
    DiffStat,
    GitTarget,
    WorkspaceProblem,
    Worktree,
    WorktreeEntry,
    checkpoint_message,
    checkpoint_prefix,
    checkpoint_ref,
    first_line,
    git_argv,
    git_env,
    goal_id_problem,
    left_ref,
    neutral_argv,
    neutral_config_text,
    parse_checkpoints,
    parse_diff_stat,
    parse_gitdir_file,
    parse_paths,
    parse_refnames,
    parse_worktrees,
    ref_argv,
    ref_problem,
)
from nexo_trio.core.remotes import (
    clone_name,
    delete_refspecs,
    fetch_refspecs,
    parse_ls_remote,
    parse_push,
    push_problem,
    push_refspecs,
    redact_userinfo,
    remote_env,
    without_userinfo,
)

__all__ = [
    "CLONE_TIMEOUT",
    "DEFAULT_TIMEOUT",
    "FETCH_TIMEOUT",
    "PUSH_TIMEOUT",
    "branch_merged",
    "changed_paths",
    "checkpoint",
    "clear_fresh",
    "delete_branch",
    "delete_checkpoints",
    "delete_remote_checkpoints",
    "diff_stat",
    "diff_text",
    "ensure_clone",
    "ensure_shadow",
    "ensure_worktree",
    "fetch_clone",
    "forget_goal",
    "has_commit",
    "is_fresh",
    "list_checkpoints",
    "mark_fresh",
    "push_checkpoints",
    "remember_commit",
    "remembered_commit",
    "remove_worktree",
    "repository_refs",
    "repository_target",
    "restore",
    "set_aside",
    "work_tree_tree",
]

DEFAULT_TIMEOUT = 120.0
"""Seconds one git call may take."""
CLONE_TIMEOUT = 600.0
"""Seconds the clone of a remote repository may take."""
FETCH_TIMEOUT = 300.0
"""Seconds a fetch of a remote repository into its clone may take."""
PUSH_TIMEOUT = 60.0
"""Seconds the push of a checkpoint may take."""

_HEX = re.compile(rb"[0-9a-f]{40}|[0-9a-f]{64}")


@attrs.frozen
class _Done:
    returncode: int
    stdout: bytes
    stderr: bytes


async def _run(
    argv: Sequence[str],
    *,
    timeout: float,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    stdin: bytes = b"",
) -> _Done | WorkspaceProblem:
    """Run one git command, output captured; a timeout or a git that cannot be started is a
    problem, an exit code is the caller's to judge. ``env`` defaults to ``git_env``'s."""
    what = " ".join(argv[argv.index("--no-pager") + 1 :][-4:]) if "--no-pager" in argv else argv[0]
    try:
        with trio.move_on_after(timeout) as scope:
            done = await trio.run_process(
                list(argv),
                stdin=stdin,
                capture_stdout=True,
                capture_stderr=True,
                check=False,
                cwd=cwd,
                env=dict(env) if env is not None else git_env(os.environ),
            )
    except OSError as exc:
        return WorkspaceProblem(f"git could not be run: {exc.strerror or exc}")
    if scope.cancelled_caught:
        return WorkspaceProblem(f"git {what} did not finish within {timeout:g}s")
    return _Done(done.returncode, done.stdout, done.stderr)


def _judged(done: _Done | WorkspaceProblem, doing: str) -> bytes | WorkspaceProblem:
    if isinstance(done, WorkspaceProblem):
        return done
    if done.returncode != 0:
        detail = first_line(done.stderr, f"exit code {done.returncode}")
        return WorkspaceProblem(f"{doing}: {detail}")
    return done.stdout


async def _ok(
    argv: Sequence[str],
    *,
    timeout: float,
    env: Mapping[str, str] | None = None,
    stdin: bytes = b"",
    doing: str,
) -> bytes | WorkspaceProblem:
    """stdout of a git command that must succeed; its failure is a problem saying ``doing``."""
    return _judged(await _run(argv, timeout=timeout, env=env, stdin=stdin), doing)


def _line(out: bytes) -> str:
    return os.fsdecode(out.rstrip(b"\n"))


def _problem(doing: str, exc: OSError) -> WorkspaceProblem:
    return WorkspaceProblem(f"{doing}: {exc.strerror or exc}")


# -- ref operations: the target's git dir, its common dir pinned ------------------------------


def _ref_env(target: GitTarget) -> dict[str, str]:
    return git_env(os.environ, common_dir=target.common)


async def _ref_run(target: GitTarget, *args: str, timeout: float) -> _Done | WorkspaceProblem:
    return await _run(ref_argv(target, *args), timeout=timeout, env=_ref_env(target))


async def _ref_ok(
    target: GitTarget, *args: str, timeout: float, doing: str, stdin: bytes = b""
) -> bytes | WorkspaceProblem:
    return await _ok(
        ref_argv(target, *args), timeout=timeout, env=_ref_env(target), stdin=stdin, doing=doing
    )


# -- neutral git dirs ----------------------------------------------------------------------


@attrs.frozen
class _Scratch:
    """One operation's temporary directory: the neutral git dir and the scratch index."""

    target: GitTarget
    directory: str
    git_dir: str
    index: str


def _copy_regular(source: str, destination: str) -> bool:
    """Copy ``source`` when it is a regular file (a FIFO or a device, which whoever writes a
    git dir could put there, is never read), keeping its mtime (git's racy-entry check).
    ``False`` when there is none."""
    try:
        fd = os.open(source, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return False
        with (
            os.fdopen(fd, "rb", closefd=False) as reader,
            open(destination, "wb") as writer,
        ):
            shutil.copyfileobj(reader, writer, 1 << 20)
        os.utime(destination, ns=(info.st_atime_ns, info.st_mtime_ns))
    except OSError:
        with suppress(OSError):
            os.remove(destination)
        return False
    finally:
        os.close(fd)
    return True


def _make_scratch(target: GitTarget, directory: str) -> _Scratch | WorkspaceProblem:
    """The neutral git dir in ``directory`` (``HEAD``, empty ``refs/`` and ``objects/``, a
    config naming at most the object format, ``info/attributes`` turning conversions off, a
    copy of the target's ``info/exclude``) and a scratch index seeded from the target's
    cache index."""
    if not os.path.isdir(target.object_directory):
        return WorkspaceProblem(
            f"{target.common} has no object store (a worktree's git dir needs its common dir)"
        )
    git_dir = os.path.join(directory, "git")
    try:
        for sub in ("refs", "objects", "info"):
            os.makedirs(os.path.join(git_dir, sub))
        for name, text in (
            ("HEAD", NEUTRAL_HEAD),
            ("config", neutral_config_text(target.object_format)),
            (os.path.join("info", "attributes"), NEUTRAL_ATTRIBUTES),
        ):
            with open(os.path.join(git_dir, name), "w", encoding="ascii") as file:
                file.write(text)
    except OSError as exc:
        return _problem("making a neutral git dir", exc)
    _copy_regular(target.exclude_file, os.path.join(git_dir, "info", "exclude"))
    index = os.path.join(directory, "index")
    _copy_regular(target.cache_index_file, index)
    return _Scratch(target=target, directory=directory, git_dir=git_dir, index=index)


@asynccontextmanager
async def _scratch(target: GitTarget) -> AsyncIterator[_Scratch | WorkspaceProblem]:
    """A temporary directory holding a neutral git dir and a scratch index for ``target``,
    removed afterwards."""
    try:
        directory = await trio.to_thread.run_sync(lambda: tempfile.mkdtemp(prefix="nexo-git-"))
    except OSError as exc:
        yield _problem("making a temporary directory", exc)
        return
    try:
        yield await trio.to_thread.run_sync(_make_scratch, target, directory)
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(_rmtree, directory)


def _rmtree(directory: str) -> None:
    shutil.rmtree(directory, ignore_errors=True)


async def _neutral(
    scratch: _Scratch,
    *args: str,
    timeout: float,
    doing: str,
    index_file: str | None = None,
    stdin: bytes = b"",
    identity: bool = False,
    check: bool = True,
) -> bytes | WorkspaceProblem:
    """A git call in the neutral git dir (cwd: the scratch directory, outside the work tree,
    so pathspecs are relative to the work tree's top); ``index_file`` defaults to the scratch
    index. ``check=False``: any exit code is success."""
    target = scratch.target
    done = await _run(
        neutral_argv(target, scratch.git_dir, *args, identity=identity),
        timeout=timeout,
        env=git_env(
            os.environ,
            index_file=scratch.index if index_file is None else index_file,
            object_directory=target.object_directory,
        ),
        cwd=scratch.directory,
        stdin=stdin,
    )
    if not check and isinstance(done, _Done):
        return done.stdout
    return _judged(done, doing)


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


async def _repository(repo: str, *, timeout: float) -> tuple[str, str] | WorkspaceProblem:
    """The common dir and object format of the repository ``repo`` (asked of ``repo``, the
    user's repository, never of a goal's worktree)."""
    done = await _run(
        git_argv(None, "rev-parse", "--path-format=absolute", "--git-common-dir",
                 "--show-object-format", cwd_repo=repo),
        timeout=timeout,
    )  # fmt: skip
    if isinstance(done, WorkspaceProblem):
        return done
    found = _dir_and_format(done, repo, "is not a git repository")
    if isinstance(found, WorkspaceProblem):
        return found
    return os.fsdecode(found[0]), found[1]


def _dir_and_format(
    done: _Done, where: str, otherwise: str
) -> tuple[bytes, str] | WorkspaceProblem:
    """The two lines of ``rev-parse … --show-object-format``: the first answer and a known
    object format; else a problem (``where otherwise``)."""
    lines = done.stdout.rstrip(b"\n").split(b"\n")
    if done.returncode != 0 or len(lines) != 2:
        return WorkspaceProblem(f"{where} {otherwise}")
    object_format = lines[1].decode("ascii", "replace")
    if object_format not in OBJECT_FORMATS:
        return WorkspaceProblem(f"{where} uses the unknown object format {object_format!r}")
    return lines[0], object_format


async def _worktrees(repo: str, *, timeout: float) -> tuple[WorktreeEntry, ...] | WorkspaceProblem:
    listing = await _ok(
        git_argv(None, "worktree", "list", "--porcelain", "-z", cwd_repo=repo),
        timeout=timeout,
        doing=f"listing the worktrees of {repo}",
    )
    return listing if isinstance(listing, WorkspaceProblem) else parse_worktrees(listing)


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
    repository = await _repository(repo, timeout=timeout)
    if isinstance(repository, WorkspaceProblem):
        return repository
    common, object_format = repository
    entries = await _worktrees(repo, timeout=timeout)
    if isinstance(entries, WorkspaceProblem):
        return entries
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
            target = await _worktree_target(common, object_format, path)
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
    target = await _worktree_target(common, object_format, path)
    if isinstance(target, WorkspaceProblem):
        return target
    return Worktree(path=path, branch=branch, target=target, created=True)


def _admin_in(common: str, git_dir: str) -> str | None:
    """``git_dir`` spelled ``<common>/worktrees/<id>``, when it is that directory."""
    admin = os.path.join(common, "worktrees", os.path.basename(os.path.normpath(git_dir)))
    try:
        return admin if os.path.samefile(admin, git_dir) else None
    except OSError:
        return None


def _read_small(path: str, limit: int = 1 << 16) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return os.read(fd, limit)
    except OSError:
        return None
    finally:
        os.close(fd)


def _find_admin_dir(common: str, path: str) -> str | None:
    """The admin dir (``<common>/worktrees/<id>``) whose ``gitdir`` file names the worktree
    at ``path``: read on the repository's side, never through the worktree's ``.git``."""
    real = os.path.realpath(path)
    try:
        ids = sorted(os.listdir(os.path.join(common, "worktrees")))
    except OSError:
        return None
    for name in ids:
        admin = os.path.join(common, "worktrees", name)
        content = _read_small(os.path.join(admin, "gitdir"))
        where = None if content is None else parse_gitdir_file(content, admin)
        if where is not None and os.path.realpath(where) == real:
            return admin
    return None


async def _worktree_target(
    common: str, object_format: str, path: str
) -> GitTarget | WorkspaceProblem:
    admin = await trio.to_thread.run_sync(_find_admin_dir, common, path)
    if admin is None:
        return WorkspaceProblem(f"no admin dir of the worktree {path} in {common}/worktrees")
    return GitTarget(git_dir=admin, work_tree=path, common_dir=common, object_format=object_format)


def _repoint_dot_git(path: str, admin: str) -> None:
    """Make the worktree's ``.git`` a file naming its admin dir again (whatever it was
    rewritten to), so ``git worktree remove`` recognises the worktree it is removing."""
    dot_git = os.path.join(path, ".git")
    wanted = f"gitdir: {admin}\n".encode()
    content = _read_small(dot_git)
    if content is not None and content.strip() == wanted.strip():
        return
    if os.path.isdir(dot_git) and not os.path.islink(dot_git):
        shutil.rmtree(dot_git)
    elif os.path.lexists(dot_git):
        os.remove(dot_git)
    with open(dot_git, "wb") as file:
        file.write(wanted)


async def remove_worktree(
    repo: str, path: str, *, timeout: float = DEFAULT_TIMEOUT
) -> bool | WorkspaceProblem:
    """Remove the worktree of ``repo`` at ``path`` (``git worktree remove --force``, its
    uncommitted work included; then ``prune``): ``True``, or ``False`` when ``repo`` has no
    worktree there. A path that exists but is no worktree of ``repo``, or ``repo``'s main
    worktree, is a problem and is never deleted."""
    path = await trio.to_thread.run_sync(os.path.abspath, path)
    entries = await _worktrees(repo, timeout=timeout)
    if isinstance(entries, WorkspaceProblem):
        return entries
    real, exists, others = await trio.to_thread.run_sync(
        lambda: (
            os.path.realpath(path),
            os.path.lexists(path),
            [os.path.realpath(e.path) for e in entries],
        )
    )
    mine = [i for i, where in enumerate(others) if where == real]
    if not mine:
        if exists:
            return WorkspaceProblem(f"{path} is not a worktree of {repo}")
        return False
    entry = entries[mine[0]]
    if mine[0] == 0 or entry.bare:
        return WorkspaceProblem(f"{path} is the main worktree of {repo}")
    if exists:
        repository = await _repository(repo, timeout=timeout)
        if isinstance(repository, WorkspaceProblem):
            return repository
        admin = await trio.to_thread.run_sync(_find_admin_dir, repository[0], path)
        if admin is not None:
            try:
                await trio.to_thread.run_sync(_repoint_dot_git, entry.path, admin)
            except OSError as exc:
                return _problem(f"removing the worktree {path}", exc)
    removed = await _ok(
        git_argv(None, "worktree", "remove", "--force", "--", entry.path, cwd_repo=repo),
        timeout=timeout,
        doing=f"removing the worktree {path}",
    )
    if isinstance(removed, WorkspaceProblem):
        return removed
    pruned = await _ok(
        git_argv(None, "worktree", "prune", cwd_repo=repo),
        timeout=timeout,
        doing=f"pruning the worktrees of {repo}",
    )
    return pruned if isinstance(pruned, WorkspaceProblem) else True


async def branch_merged(
    repo: str, branch: str, into: str | None = None, *, timeout: float = DEFAULT_TIMEOUT
) -> bool | WorkspaceProblem:
    """Whether ``refs/heads/<branch>`` of ``repo`` is an ancestor of (or is) ``into``
    (default: ``repo``'s HEAD): ``git merge-base --is-ancestor``. A branch that does not
    exist is merged (it holds nothing to lose: a clean-up can run twice); ``into`` that
    does not resolve, or ``repo`` no repository, is a problem."""
    problem = ref_problem(f"refs/heads/{branch}")
    if problem is not None:
        return WorkspaceProblem(f"branch {branch!r} is not a valid name: {problem}")
    base = await _resolve_commit(repo, into or "HEAD", timeout=timeout)
    if base is None:
        return WorkspaceProblem(f"{into or 'HEAD'!r} is no commit of {repo}")
    if isinstance(base, WorkspaceProblem):
        return base
    tip = await _resolve_commit(repo, f"refs/heads/{branch}", timeout=timeout)
    if tip is None:
        return True
    if isinstance(tip, WorkspaceProblem):
        return tip
    done = await _run(
        git_argv(None, "merge-base", "--is-ancestor", tip, base, cwd_repo=repo), timeout=timeout
    )
    if isinstance(done, WorkspaceProblem):
        return done
    if done.returncode in (0, 1):
        return done.returncode == 0
    detail = first_line(done.stderr, f"exit code {done.returncode}")
    return WorkspaceProblem(f"checking whether {branch} is merged: {detail}")


async def delete_branch(
    repo: str, branch: str, *, timeout: float = DEFAULT_TIMEOUT
) -> bool | WorkspaceProblem:
    """Delete ``refs/heads/<branch>`` of ``repo``: ``True``, ``False`` when there is no such
    branch; a problem when it is checked out in a worktree (the main one included)."""
    full = f"refs/heads/{branch}"
    problem = ref_problem(full)
    if problem is not None:
        return WorkspaceProblem(f"branch {branch!r} is not a valid name: {problem}")
    entries = await _worktrees(repo, timeout=timeout)
    if isinstance(entries, WorkspaceProblem):
        return entries
    for entry in entries:
        if entry.branch == full:
            return WorkspaceProblem(f"branch {branch} is checked out at {entry.path}")
    done = await _run(
        git_argv(None, "rev-parse", "--verify", "-q", "--end-of-options", full, cwd_repo=repo),
        timeout=timeout,
    )
    if isinstance(done, WorkspaceProblem):
        return done
    if done.returncode != 0:
        return False
    deleted = await _ok(
        git_argv(None, "update-ref", "-d", full, _line(done.stdout), cwd_repo=repo),
        timeout=timeout,
        doing=f"deleting the branch {branch}",
    )
    return deleted if isinstance(deleted, WorkspaceProblem) else True


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
        git_argv(None, "rev-parse", "--absolute-git-dir", "--show-toplevel",
                 "--path-format=absolute", "--git-common-dir", "--show-object-format",
                 cwd_repo=directory),
        timeout=timeout,
    )  # fmt: skip
    if isinstance(done, WorkspaceProblem):
        return done
    if done.returncode != 0:
        return None
    lines = done.stdout.rstrip(b"\n").split(b"\n")
    if len(lines) != 4:
        return WorkspaceProblem(f"{directory} is a bare repository or a git dir")
    git_dir, top, common = (os.fsdecode(x) for x in lines[:3])
    object_format = lines[3].decode("ascii", "replace")
    if object_format not in OBJECT_FORMATS:
        return WorkspaceProblem(f"{directory} uses the unknown object format {object_format!r}")
    outside, own = await trio.to_thread.run_sync(
        lambda: (
            os.path.realpath(top) != os.path.realpath(directory),
            os.path.realpath(common) == os.path.realpath(git_dir),
        )
    )
    if outside:
        return WorkspaceProblem(
            f"{directory} is inside the repository {top} but not its top level: use a "
            "worktree, or checkpoints: true"
        )
    if own:
        return GitTarget(git_dir=git_dir, work_tree=directory, object_format=object_format)
    # A linked worktree of another repository: <common>/worktrees/<id>, spelled from common.
    admin = await trio.to_thread.run_sync(_admin_in, common, git_dir)
    if admin is None:
        return WorkspaceProblem(f"{directory} has its git dir {git_dir} outside {common}")
    return GitTarget(
        git_dir=admin, work_tree=directory, common_dir=common, object_format=object_format
    )


async def repository_refs(
    repo: str, *, timeout: float = DEFAULT_TIMEOUT
) -> GitTarget | WorkspaceProblem:
    """The target of the repository ``repo`` itself (its common dir; work tree ``repo``),
    for the ref operations of a goal whose worktree may be gone (:func:`list_checkpoints`,
    :func:`delete_checkpoints`): asked of ``repo``, never of a worktree."""
    repo = await trio.to_thread.run_sync(os.path.abspath, repo)
    repository = await _repository(repo, timeout=timeout)
    if isinstance(repository, WorkspaceProblem):
        return repository
    common, object_format = repository
    return GitTarget(git_dir=common, work_tree=repo, object_format=object_format)


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
    if not exists:
        made = await _ok(
            git_argv(None, "init", "-q", "--bare", "--template=", "--", git_dir),
            timeout=timeout,
            doing=f"creating the shadow repository {git_dir}",
        )
        if isinstance(made, WorkspaceProblem):
            return made
    out = await _run(
        git_argv(None, f"--git-dir={git_dir}", "rev-parse", "--is-bare-repository",
                 "--show-object-format"),
        timeout=timeout,
        env=git_env(os.environ, common_dir=git_dir),
    )  # fmt: skip
    if isinstance(out, WorkspaceProblem):
        return out
    found = _dir_and_format(out, git_dir, "exists and is not a git repository")
    if isinstance(found, WorkspaceProblem):
        return found
    return GitTarget(git_dir=git_dir, work_tree=work_tree, private=True, object_format=found[1])


# -- checkpoints ----------------------------------------------------------------------------


def _replace_with_copy(source: str, destination: str) -> None:
    """``destination`` becomes a copy of ``source`` in one rename (a reader never sees half a
    file); failures are ignored (it is a cache)."""
    temporary = f"{destination}.nexo-{os.getpid()}-{id(source):x}.tmp"
    if _copy_regular(source, temporary):
        try:
            os.replace(temporary, destination)
        except OSError:
            with suppress(OSError):
                os.remove(temporary)


async def _keep_index(scratch: _Scratch) -> None:
    """The scratch index becomes the target's cache index (the next operation's seed)."""
    await trio.to_thread.run_sync(
        _replace_with_copy, scratch.index, scratch.target.cache_index_file
    )


def _discard(path: str) -> None:
    with suppress(FileNotFoundError):
        os.remove(path)


async def _write_tree(
    scratch: _Scratch, *, timeout: float, index_file: str | None = None
) -> str | WorkspaceProblem:
    out = await _neutral(
        scratch,
        "write-tree",
        timeout=timeout,
        index_file=index_file,
        doing=f"writing the tree of {scratch.target.work_tree}",
    )
    return out if isinstance(out, WorkspaceProblem) else _line(out)


NESTED_REPOSITORIES = 64
"""How many nested repositories without a commit one checkpoint leaves out at most."""

_NO_COMMIT = re.compile(r"'(?P<path>.+)' does not have a commit checked out")


def _exclude(scratch: _Scratch, path: str) -> None:
    """Leave ``path`` (relative to the work tree) out of the scratch's ``add -A``."""
    pattern = "/" + "".join(f"\\{c}" if c in "*?[\\!#" else c for c in path.rstrip("/"))
    with open(os.path.join(scratch.git_dir, "info", "exclude"), "a", encoding="utf-8") as f:
        f.write(f"\n{pattern}/\n")


async def _add_all(scratch: _Scratch, *, timeout: float) -> WorkspaceProblem | None:
    """``git add -A``; a nested repository with no commit (``git init`` and nothing else),
    which git refuses to add, is left out of the checkpoint rather than failing it (git
    records a nested repository by its commit, and it has none)."""
    out: bytes | WorkspaceProblem = WorkspaceProblem("no add was run")
    for _ in range(NESTED_REPOSITORIES + 1):
        out = await _neutral(
            scratch,
            "add",
            "-A",
            "--",
            ":/",
            timeout=timeout,
            doing=f"adding {scratch.target.work_tree} to a checkpoint",
        )
        if not isinstance(out, WorkspaceProblem):
            return None
        nested = _NO_COMMIT.search(out.message)
        if nested is None:
            return out
        await trio.to_thread.run_sync(_exclude, scratch, nested.group("path"))
    return out if isinstance(out, WorkspaceProblem) else None


async def _add_everything(scratch: _Scratch, *, timeout: float) -> WorkspaceProblem | None:
    """``git add -A`` of the work tree into the scratch index; when git cannot use the
    seeded index (a torn cache, another git's format…), again from an empty one."""
    added = await _add_all(scratch, timeout=timeout)
    if added is None:
        return None
    await trio.to_thread.run_sync(_discard, scratch.index)
    return await _add_all(scratch, timeout=timeout)


async def _tree_now(scratch: _Scratch, *, timeout: float) -> str | WorkspaceProblem:
    added = await _add_everything(scratch, timeout=timeout)
    if added is not None:
        return added
    tree = await _write_tree(scratch, timeout=timeout)
    if not isinstance(tree, WorkspaceProblem):
        await _keep_index(scratch)
    return tree


async def work_tree_tree(
    target: GitTarget, *, timeout: float = DEFAULT_TIMEOUT
) -> str | WorkspaceProblem:
    """The tree object of everything in the work tree now (untracked included, ignored
    excluded), written to the object store; no ref, index or file of the target changes
    (but the library's cache index)."""
    async with _scratch(target) as scratch:
        if isinstance(scratch, WorkspaceProblem):
            return scratch
        return await _tree_now(scratch, timeout=timeout)


def _copy_real_index(target: GitTarget, scratch: _Scratch) -> str | None:
    """A copy of the target's real index in the scratch directory (and the shared indexes
    of a split one in the neutral git dir); ``None`` when it has none."""
    copy = os.path.join(scratch.directory, "real-index")
    if not _copy_regular(target.index_file, copy):
        return None
    with suppress(OSError):
        for name in os.listdir(target.git_dir):
            if name.startswith("sharedindex."):
                _copy_regular(
                    os.path.join(target.git_dir, name), os.path.join(scratch.git_dir, name)
                )
    return copy


async def _index_tree(scratch: _Scratch, *, timeout: float) -> str | None:
    """The tree of the target's real index, read from a copy (the real one is not even
    locked); ``None`` for a private target, no index, or one with conflicts."""
    target = scratch.target
    if target.private:
        return None
    copy = await trio.to_thread.run_sync(_copy_real_index, target, scratch)
    if copy is None:
        return None
    tree = await _write_tree(scratch, timeout=timeout, index_file=copy)
    return None if isinstance(tree, WorkspaceProblem) else tree


async def _head(target: GitTarget, *, timeout: float) -> str | WorkspaceProblem | None:
    done = await _ref_run(
        target, "rev-parse", "--verify", "-q", f"{target.head_ref}^{{commit}}", timeout=timeout
    )
    if isinstance(done, WorkspaceProblem):
        return done
    return _line(done.stdout) if done.returncode == 0 else None


async def _commit_tree(
    scratch: _Scratch, tree: str, parents: Sequence[str], message: str, *, timeout: float
) -> str | WorkspaceProblem:
    args = ["commit-tree", "--no-gpg-sign"]
    for parent in parents:
        args += ["-p", parent]
    out = await _neutral(
        scratch,
        *args,
        tree,
        timeout=timeout,
        identity=True,
        stdin=message.encode(),
        doing="writing a checkpoint commit",
    )
    return out if isinstance(out, WorkspaceProblem) else _line(out)


async def checkpoint(
    target: GitTarget,
    goal_id: str,
    turn: int,
    *,
    update_ref: bool = True,
    after: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
) -> str | WorkspaceProblem:
    """Checkpoint the work tree on ``refs/nexo/<goal>/<turn>`` (replacing an older one of the
    same turn; ``update_ref=False``: the commit is made, no ref moves; ``after``: the
    workspace at the turn's end, on ``refs/nexo/<goal>/<turn>-after``); the commit's sha.
    Parents: HEAD (when it resolves), then a commit of the real index's tree (when the
    target has one without conflicts)."""
    problem = goal_id_problem(goal_id)
    if problem is not None:
        return WorkspaceProblem(problem)
    if isinstance(turn, bool) or not isinstance(turn, int) or turn < 0:
        return WorkspaceProblem(f"a turn is an int >= 0: {turn!r}")
    ref = checkpoint_ref(goal_id, turn, after=after)
    async with _scratch(target) as scratch:
        if isinstance(scratch, WorkspaceProblem):
            return scratch
        tree = await _tree_now(scratch, timeout=timeout)
        if isinstance(tree, WorkspaceProblem):
            return tree
        head = await _head(target, timeout=timeout)
        if isinstance(head, WorkspaceProblem):
            return head
        parents = [head] if head is not None else []
        index_tree = await _index_tree(scratch, timeout=timeout)
        if index_tree is not None:
            index_commit = await _commit_tree(
                scratch, index_tree, parents, f"{INDEX_MESSAGE}{ref}\n", timeout=timeout
            )
            if isinstance(index_commit, WorkspaceProblem):
                return index_commit
            parents.append(index_commit)
        sha = await _commit_tree(
            scratch, tree, parents, checkpoint_message(goal_id, turn, after=after), timeout=timeout
        )
    if isinstance(sha, WorkspaceProblem) or not update_ref:
        return sha
    updated = await _ref_ok(
        target, "update-ref", "-m", "nexo-trio checkpoint", ref, sha,
        timeout=timeout, doing=f"writing {ref}",
    )  # fmt: skip
    return updated if isinstance(updated, WorkspaceProblem) else sha


async def list_checkpoints(
    target: GitTarget, goal_id: str, *, timeout: float = DEFAULT_TIMEOUT
) -> tuple[Checkpoint, ...] | WorkspaceProblem:
    """The goal's checkpoints, by turn."""
    out = await _goal_refs(target, goal_id, "%(refname) %(objectname)", timeout=timeout)
    return out if isinstance(out, WorkspaceProblem) else parse_checkpoints(out, goal_id)


async def _goal_refs(
    target: GitTarget, goal_id: str, fmt: str, *, timeout: float
) -> bytes | WorkspaceProblem:
    """``for-each-ref --format=FMT refs/nexo/<goal>/`` (a goal id no ref can hold: a
    problem)."""
    problem = goal_id_problem(goal_id)
    if problem is not None:
        return WorkspaceProblem(problem)
    prefix = checkpoint_prefix(goal_id)
    return await _ref_ok(
        target, "for-each-ref", f"--format={fmt}", prefix,
        timeout=timeout, doing=f"listing {prefix}",
    )  # fmt: skip


async def delete_checkpoints(
    target: GitTarget, goal_id: str, *, timeout: float = DEFAULT_TIMEOUT
) -> int | WorkspaceProblem:
    """Delete every ref below ``refs/nexo/<goal>/`` in one transaction; how many there were
    (0 when none: deleting twice is no problem)."""
    out = await _goal_refs(target, goal_id, "%(refname)", timeout=timeout)
    if isinstance(out, WorkspaceProblem):
        return out
    prefix = checkpoint_prefix(goal_id)
    refs = parse_refnames(out, prefix)
    if not refs:
        return 0
    commands = "".join(f"delete {ref}\n" for ref in refs).encode()
    deleted = await _ref_ok(
        target, "update-ref", "-m", "nexo-trio: checkpoints deleted", "--stdin",
        timeout=timeout, stdin=commands, doing=f"deleting {prefix}",
    )  # fmt: skip
    return deleted if isinstance(deleted, WorkspaceProblem) else len(refs)


async def _resolve_trees(
    target: GitTarget, revs: Sequence[str], *, timeout: float
) -> list[str] | WorkspaceProblem:
    """The tree of each revision (a sha or a ref), asked of the target's refs."""
    trees: list[str] = []
    for rev in revs:
        out = await _ref_ok(
            target, "rev-parse", "--verify", "-q", "--end-of-options", f"{rev}^{{tree}}",
            timeout=timeout, doing=f"{rev[:40]!r} names no tree of {target.work_tree}",
        )  # fmt: skip
        if isinstance(out, WorkspaceProblem):
            return out
        tree = out.strip()
        if _HEX.fullmatch(tree) is None:
            return WorkspaceProblem(f"{rev[:40]!r} names no tree of {target.work_tree}")
        trees.append(tree.decode())
    return trees


async def _trees(
    scratch: _Scratch, from_sha: str, to_sha: str | None, *, timeout: float
) -> list[str] | WorkspaceProblem:
    """The trees of ``from_sha`` and of ``to_sha`` or the work tree now."""
    revs = [from_sha] if to_sha is None else [from_sha, to_sha]
    trees = await _resolve_trees(scratch.target, revs, timeout=timeout)
    if isinstance(trees, WorkspaceProblem) or to_sha is not None:
        return trees
    now = await _tree_now(scratch, timeout=timeout)
    return now if isinstance(now, WorkspaceProblem) else [*trees, now]


_DIFF = ("diff", "--no-renames", "--no-ext-diff", "--no-textconv", "--no-color")


async def diff_stat(
    target: GitTarget, from_sha: str, to_sha: str | None = None, *, timeout: float = DEFAULT_TIMEOUT
) -> DiffStat | WorkspaceProblem:
    """What changed from ``from_sha`` (a checkpoint) to ``to_sha``, or to the work tree now
    (untracked included, ignored excluded) when ``to_sha`` is ``None``."""
    async with _scratch(target) as scratch:
        if isinstance(scratch, WorkspaceProblem):
            return scratch
        trees = await _trees(scratch, from_sha, to_sha, timeout=timeout)
        if isinstance(trees, WorkspaceProblem):
            return trees
        outputs: list[bytes] = []
        for kind in ("--numstat", "--name-status"):
            out = await _neutral(
                scratch, *_DIFF, "-z", kind, *trees, "--",
                timeout=timeout, doing=f"diffing {from_sha[:12]}",
            )  # fmt: skip
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
    """The diff as ``git diff`` prints it (no pager, no color, no external diff, no
    textconv), from ``from_sha`` to ``to_sha`` or to the work tree now (untracked files show
    as new)."""
    async with _scratch(target) as scratch:
        if isinstance(scratch, WorkspaceProblem):
            return scratch
        trees = await _trees(scratch, from_sha, to_sha, timeout=timeout)
        if isinstance(trees, WorkspaceProblem):
            return trees
        return await _neutral(
            scratch, *_DIFF, "--binary", *trees, "--",
            timeout=timeout, doing=f"diffing {from_sha[:12]}",
        )  # fmt: skip


async def changed_paths(
    target: GitTarget,
    from_sha: str,
    pathspecs: Sequence[str] = (),
    *,
    to_sha: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> tuple[str, ...] | WorkspaceProblem:
    """The paths that differ between ``from_sha`` (a checkpoint) and ``to_sha`` or the work
    tree now (untracked included, ignored excluded), sorted; only those matching
    ``pathspecs`` (git pathspecs, relative to the work tree's top) when any are given.
    Against a checkpoint, not HEAD: a path changed and committed since still shows."""
    async with _scratch(target) as scratch:
        if isinstance(scratch, WorkspaceProblem):
            return scratch
        trees = await _trees(scratch, from_sha, to_sha, timeout=timeout)
        if isinstance(trees, WorkspaceProblem):
            return trees
        out = await _neutral(
            scratch, *_DIFF, "-z", "--name-only", *trees, "--", *pathspecs,
            timeout=timeout, doing=f"diffing {from_sha[:12]}",
        )  # fmt: skip
    return out if isinstance(out, WorkspaceProblem) else parse_paths(out)


async def restore(
    target: GitTarget, sha: str, *, timeout: float = DEFAULT_TIMEOUT
) -> WorkspaceProblem | None:
    """Put the work tree back exactly as it was at the checkpoint ``sha`` (tracked and
    untracked files, byte for byte; ignored files untouched) and the real index as it was
    then (when the checkpoint recorded it); HEAD and every branch stay where they are."""
    resolved = await _ref_ok(
        target, "rev-parse", "--verify", "-q", "--end-of-options", f"{sha}^{{commit}}",
        timeout=timeout, doing=f"{sha} is no checkpoint",
    )  # fmt: skip
    if isinstance(resolved, WorkspaceProblem):
        return resolved
    commit = _line(resolved)
    async with _scratch(target) as scratch:
        if isinstance(scratch, WorkspaceProblem):
            return scratch
        # The scratch index holds the work tree now, so the one-way merge below removes the
        # files the checkpoint does not have and writes the ones it has.
        added = await _add_everything(scratch, timeout=timeout)
        if added is not None:
            return added
        moved = await _neutral(
            scratch, "read-tree", "--reset", "-u", "--no-recurse-submodules",
            f"{commit}^{{tree}}",
            timeout=timeout, doing=f"restoring {target.work_tree} to {commit[:12]}",
        )  # fmt: skip
        if isinstance(moved, WorkspaceProblem):
            return moved
        await _keep_index(scratch)
        if target.private:
            return None
        parents = await _neutral(
            scratch, "rev-list", "--no-walk", "--parents", commit,
            timeout=timeout, doing=f"reading {commit[:12]}",
        )  # fmt: skip
        if isinstance(parents, WorkspaceProblem):
            return parents
        shas = parents.split()
        if len(shas) < 3:
            return None  # no index recorded: the index stays as it is
        index_commit = os.fsdecode(shas[2])
        read = await _neutral(
            scratch, "read-tree", f"{index_commit}^{{tree}}",
            index_file=target.index_file, timeout=timeout, doing="restoring the index",
        )  # fmt: skip
        if isinstance(read, WorkspaceProblem):
            return read
        # Stat data of the fresh index; exit code 1 ("needs update") is no failure.
        refreshed = await _neutral(
            scratch, "update-index", "-q", "--refresh",
            index_file=target.index_file, timeout=timeout, doing="refreshing the index",
            check=False,
        )  # fmt: skip
        return refreshed if isinstance(refreshed, WorkspaceProblem) else None


# -- remote repositories -------------------------------------------------------------------


def _redacted(problem: WorkspaceProblem) -> WorkspaceProblem:
    return WorkspaceProblem(redact_userinfo(problem.message))


def _clone_argv(clone: str, *args: str) -> list[str]:
    """A git call in the clone's git dir (a bare repository, its own common dir: no
    ``GIT_COMMON_DIR``, with which git would not take it for bare)."""
    return git_argv(None, f"--git-dir={clone}", *args)


async def _in_clone(
    clone: str, *args: str, timeout: float, remote: bool = False
) -> _Done | WorkspaceProblem:
    env = remote_env(os.environ) if remote else git_env(os.environ)
    done = await _run(_clone_argv(clone, *args), timeout=timeout, env=env)
    return _redacted(done) if isinstance(done, WorkspaceProblem) else done


async def ensure_clone(
    url: str, directory: str, *, timeout: float = CLONE_TIMEOUT
) -> str | WorkspaceProblem:
    """The worker's bare clone of ``url`` in ``directory``: ``<directory>/<clone_name(url)>``,
    made once (``git clone --bare`` into a temporary directory then renamed into place, so
    a clone cut short never passes for one), reused after (a bare repository whose
    ``origin`` is ``url``). Problems name the URL without its userinfo."""
    path = os.path.join(directory, clone_name(url))
    if not await trio.to_thread.run_sync(os.path.lexists, path):
        made = await _clone(url, directory, path, timeout=timeout)
        if made is not None:
            return made
    return await _check_clone(url, path)


def _make_temporary(directory: str, name: str) -> str:
    os.makedirs(directory, mode=0o700, exist_ok=True)
    return tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=directory)


async def _clone(url: str, directory: str, path: str, *, timeout: float) -> WorkspaceProblem | None:
    shown = without_userinfo(url)
    try:
        temporary = await trio.to_thread.run_sync(_make_temporary, directory, clone_name(url))
    except OSError as exc:
        return _problem(f"making a clone of {shown} in {directory}", exc)
    try:
        made = os.path.join(temporary, "clone.git")
        cloned = await _ok(
            git_argv(None, "clone", "--bare", "--quiet", "--template=", "--", url, made),
            timeout=timeout,
            env=remote_env(os.environ),
            doing=f"cloning {shown}",
        )
        if isinstance(cloned, WorkspaceProblem):
            return _redacted(cloned)
        try:
            await trio.to_thread.run_sync(os.rename, made, path)
        except OSError as exc:
            if not await trio.to_thread.run_sync(os.path.isdir, path):
                return _problem(f"putting the clone of {shown} at {path}", exc)
            # Another process made it meanwhile: that one is checked and used.
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(_rmtree, temporary)
    return None


async def _check_clone(url: str, path: str) -> str | WorkspaceProblem:
    """``path`` when it is a bare repository cloned from ``url``."""
    shown = without_userinfo(url)
    wrong = WorkspaceProblem(f"{path} is not a clone of {shown}: remove it")
    bare = await _in_clone(path, "rev-parse", "--is-bare-repository", timeout=DEFAULT_TIMEOUT)
    if isinstance(bare, WorkspaceProblem):
        return bare
    if bare.returncode != 0 or bare.stdout.strip() != b"true":
        return wrong
    origin = await _in_clone(path, "config", "--get", "remote.origin.url", timeout=DEFAULT_TIMEOUT)
    if isinstance(origin, WorkspaceProblem):
        return origin
    if origin.returncode != 0 or origin.stdout.rstrip(b"\n") != os.fsencode(url):
        return wrong
    return path


async def fetch_clone(
    clone: str, goal_id: str, *, remote: str, timeout: float = FETCH_TIMEOUT
) -> WorkspaceProblem | None:
    """Fetch the remote (``origin``, shown as ``remote``) into the clone: its branches and
    tags onto the clone's, but for the branches checked out in one of the clone's worktrees
    (registrations of worktrees whose directory is gone are pruned first), and the goal's
    hidden refs (see :func:`~nexo_trio.core.remotes.fetch_refspecs`)."""
    problem = goal_id_problem(goal_id)
    if problem is not None:
        return WorkspaceProblem(problem)
    pruned = await _in_clone(clone, "worktree", "prune", timeout=DEFAULT_TIMEOUT)
    if isinstance(pruned, WorkspaceProblem):
        return pruned
    entries = await _worktrees(clone, timeout=DEFAULT_TIMEOUT)
    if isinstance(entries, WorkspaceProblem):
        return entries
    refspecs = fetch_refspecs(goal_id, [e.branch for e in entries if e.branch is not None])
    fetched = await _in_clone(
        clone, "fetch", "--quiet", "--no-write-fetch-head", "--no-recurse-submodules",
        "origin", *refspecs,
        timeout=timeout, remote=True,
    )  # fmt: skip
    if isinstance(fetched, WorkspaceProblem):
        return fetched
    if fetched.returncode != 0:
        detail = first_line(fetched.stderr, f"exit code {fetched.returncode}")
        return WorkspaceProblem(redact_userinfo(f"fetching {remote}: {detail}"))
    return None


async def push_checkpoints(
    clone: str,
    checkpoints: Sequence[tuple[str, str]],
    *,
    branch: str | None,
    remote: str,
    timeout: float = PUSH_TIMEOUT,
) -> WorkspaceProblem | None:
    """Push each ``(sha, ref)`` of ``checkpoints`` onto that hidden ref of the remote
    (forced), and the goal's ``branch`` as the clone has it (fast-forward only; not when
    the clone has no such branch); a problem saying which ref was not taken and why."""
    tip = None
    if branch is not None and ref_problem(f"refs/heads/{branch}") is None:
        found = await _in_clone(
            clone, "rev-parse", "--verify", "-q", "--end-of-options",
            f"refs/heads/{branch}^{{commit}}", timeout=DEFAULT_TIMEOUT,
        )  # fmt: skip
        if isinstance(found, WorkspaceProblem):
            return found
        if found.returncode == 0:
            tip = (_line(found.stdout), branch)
    specs = push_refspecs(checkpoints, tip)
    if not specs:
        return None
    done = await _in_clone(
        clone, "push", "--porcelain", "--no-verify", "origin", *specs,
        timeout=timeout, remote=True,
    )  # fmt: skip
    if isinstance(done, WorkspaceProblem):
        return done
    pushed = parse_push(done.stdout)
    wanted = [ref for _, ref in checkpoints] + ([f"refs/heads/{branch}"] if tip else [])
    problem = push_problem(wanted, pushed)
    if problem is not None and not pushed:
        problem = first_line(done.stderr, problem)  # nothing was sent: git says why
    elif problem is None and done.returncode != 0:
        problem = first_line(done.stderr, f"exit code {done.returncode}")
    if problem is None:
        return None
    return WorkspaceProblem(redact_userinfo(f"pushing to {remote}: {problem}"))


async def delete_remote_checkpoints(
    clone: str, goal_id: str, *, remote: str, timeout: float = PUSH_TIMEOUT
) -> int | WorkspaceProblem:
    """Delete the goal's hidden refs (``refs/nexo/<goal>/``: every worker's checkpoints)
    on the remote (``origin`` of ``clone``, shown as ``remote``); how many there were. The
    goal's branch is not touched: it is the people's."""
    problem = goal_id_problem(goal_id)
    if problem is not None:
        return WorkspaceProblem(problem)
    prefix = checkpoint_prefix(goal_id)
    listed = await _in_clone(
        clone, "ls-remote", "--refs", "origin", f"{prefix}*", timeout=timeout, remote=True
    )
    if isinstance(listed, WorkspaceProblem):
        return listed
    if listed.returncode != 0:
        detail = first_line(listed.stderr, f"exit code {listed.returncode}")
        return WorkspaceProblem(redact_userinfo(f"listing {prefix} on {remote}: {detail}"))
    refs = parse_ls_remote(listed.stdout, prefix)
    if not refs:
        return 0
    done = await _in_clone(
        clone, "push", "--porcelain", "--no-verify", "origin", *delete_refspecs(refs),
        timeout=timeout, remote=True,
    )  # fmt: skip
    if isinstance(done, WorkspaceProblem):
        return done
    wrong = push_problem(refs, parse_push(done.stdout))
    if wrong is None and done.returncode != 0:
        wrong = first_line(done.stderr, f"exit code {done.returncode}")
    if wrong is not None:
        return WorkspaceProblem(redact_userinfo(f"deleting {prefix} on {remote}: {wrong}"))
    return len(refs)


async def forget_goal(clone: str, goal_id: str) -> None:
    """Take the goal's markers out of the clone (its worktree is gone: cleaned up)."""
    for directory in (FRESH_MARKERS, LAST_MARKERS):
        try:
            path = _clone_marker(clone, directory, goal_id)
        except ValueError:
            return
        with suppress(OSError):
            await trio.to_thread.run_sync(_discard, path)


async def has_commit(
    target: GitTarget, sha: str, *, timeout: float = DEFAULT_TIMEOUT
) -> bool | WorkspaceProblem:
    """Whether the target's object store has the commit ``sha``."""
    done = await _ref_run(
        target, "rev-parse", "--verify", "-q", "--end-of-options", f"{sha}^{{commit}}",
        timeout=timeout,
    )  # fmt: skip
    return done if isinstance(done, WorkspaceProblem) else done.returncode == 0


FRESH_MARKERS = "nexo-trio-fresh"
"""The directory of the clone holding a marker per goal whose worktree was made fresh here
and not yet put back at the ledger's last commit (outside every worktree and admin dir:
a confined turn cannot write it)."""


LAST_MARKERS = "nexo-trio-last"
"""The directory of the clone holding, per goal, the ledger's workspace commit as this host
last knew it (:func:`remember_commit`; see :func:`~nexo_trio.core.remotes.resume_point`)."""


def _clone_marker(clone: str, directory: str, goal_id: str) -> str:
    problem = goal_id_problem(goal_id)
    if problem is not None:
        raise ValueError(problem)
    return os.path.join(clone, directory, goal_id)


def _fresh_marker(clone: str, goal_id: str) -> str:
    return _clone_marker(clone, FRESH_MARKERS, goal_id)


def _write_marker(path: str) -> None:
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    with open(path, "w", encoding="ascii") as file:
        file.write("made fresh here; not put back at the ledger's last commit yet\n")


async def mark_fresh(clone: str, goal_id: str) -> WorkspaceProblem | None:
    """Mark the goal's worktree of ``clone`` as made fresh here (before it is made: a crash
    in between leaves the mark)."""
    try:
        await trio.to_thread.run_sync(_write_marker, _fresh_marker(clone, goal_id))
    except (OSError, ValueError) as exc:
        return WorkspaceProblem(f"marking the worktree of goal {goal_id} as new: {exc}")
    return None


def _write_commit(path: str, sha: str) -> None:
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="ascii") as file:
        file.write(f"{sha}\n")
    os.replace(tmp, path)  # whole or not at all: a crash never leaves half a sha


def _read_commit(path: str) -> str | None:
    try:
        with open(path, encoding="ascii") as file:
            sha = file.read(200).strip()
    except (OSError, ValueError):
        return None
    return sha if _HEX.fullmatch(sha.encode()) is not None else None


async def remember_commit(clone: str, goal_id: str, sha: str) -> WorkspaceProblem | None:
    """Remember ``sha`` as the ledger's commit of the goal's workspace as this host knows it
    (each time its run records one): the goal coming back after running elsewhere is then
    told apart (:func:`remembered_commit`)."""
    try:
        path = _clone_marker(clone, LAST_MARKERS, goal_id)
        await trio.to_thread.run_sync(_write_commit, path, sha)
    except (OSError, ValueError) as exc:
        return WorkspaceProblem(f"remembering the workspace commit of goal {goal_id}: {exc}")
    return None


async def remembered_commit(clone: str, goal_id: str) -> str | None:
    """The commit :func:`remember_commit` last kept for the goal here (``None``: none, or
    a marker that does not hold a sha)."""
    try:
        path = _clone_marker(clone, LAST_MARKERS, goal_id)
    except ValueError:
        return None
    return await trio.to_thread.run_sync(_read_commit, path)


async def set_aside(
    target: GitTarget, goal_id: str, turn: int, sha: str, *, timeout: float = DEFAULT_TIMEOUT
) -> str | WorkspaceProblem | None:
    """Before a worktree this host kept is put back at ``sha`` (the goal ran elsewhere
    since): its files now, committed on ``refs/nexo/<goal>/<turn>-left`` so that nothing of
    it is lost, and HEAD's branch moved on to the commit ``sha`` was checkpointed on when
    that only adds to it (a fast-forward: the commits made elsewhere). The set-aside
    commit; ``None`` when the worktree already has ``sha``'s files (nothing to put back)."""
    now = await checkpoint(target, goal_id, turn, update_ref=False, timeout=timeout)
    if isinstance(now, WorkspaceProblem):
        return now
    trees = await _resolve_trees(target, [now, sha], timeout=timeout)
    if isinstance(trees, WorkspaceProblem):
        return trees
    if trees[0] == trees[1]:
        return None
    ref = left_ref(goal_id, turn)
    kept = await _ref_ok(
        target, "update-ref", "-m", "nexo-trio: the worktree as left here", ref, now,
        timeout=timeout, doing=f"writing {ref}",
    )  # fmt: skip
    if isinstance(kept, WorkspaceProblem):
        return kept
    moved = await _fast_forward(target, sha, timeout=timeout)
    return moved if isinstance(moved, WorkspaceProblem) else now


async def _fast_forward(target: GitTarget, sha: str, *, timeout: float) -> WorkspaceProblem | None:
    """Move HEAD's branch to the HEAD checkpoint ``sha`` was made on, when the branch is
    behind it (nothing moves otherwise: a branch that went its own way is the people's)."""
    out = await _ref_ok(
        target, "rev-list", "--parents", "-n", "1", "--end-of-options", sha,
        timeout=timeout, doing=f"reading the parents of {sha[:12]}",
    )  # fmt: skip
    if isinstance(out, WorkspaceProblem):
        return out
    parents = out.split()[1:]
    made_on = parents[0].decode() if parents else None
    if made_on is not None and len(parents) == 1:  # HEAD, or an index commit without one
        subject = await _ref_ok(
            target, "log", "-1", "--format=%s", "--end-of-options", made_on,
            timeout=timeout, doing=f"reading {made_on[:12]}",
        )  # fmt: skip
        if isinstance(subject, WorkspaceProblem):
            return subject
        if subject.startswith(INDEX_MESSAGE.encode()):
            made_on = None
    head = await _head(target, timeout=timeout)
    if isinstance(head, WorkspaceProblem):
        return head
    if made_on is None or head is None or head == made_on:
        return None
    behind = await _ref_run(target, "merge-base", "--is-ancestor", head, made_on, timeout=timeout)
    if isinstance(behind, WorkspaceProblem) or behind.returncode != 0:
        return behind if isinstance(behind, WorkspaceProblem) else None
    moved = await _ref_ok(
        target, "update-ref", "-m", "nexo-trio: fast-forward to the work done elsewhere",
        target.head_ref, made_on, head,
        timeout=timeout, doing=f"moving {target.head_ref} to {made_on[:12]}",
    )  # fmt: skip
    return moved if isinstance(moved, WorkspaceProblem) else None


async def is_fresh(clone: str, goal_id: str) -> bool:
    """Whether the goal's worktree of ``clone`` is marked as made fresh here."""
    try:
        path = _fresh_marker(clone, goal_id)
    except ValueError:
        return False
    return await trio.to_thread.run_sync(os.path.lexists, path)


async def clear_fresh(clone: str, goal_id: str) -> None:
    """Take the mark off (the worktree is where the ledger last knew it, or goes on as it
    is); no mark is no problem."""
    try:
        path = _fresh_marker(clone, goal_id)
    except ValueError:
        return
    with suppress(OSError):
        await trio.to_thread.run_sync(_discard, path)
