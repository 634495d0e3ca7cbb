"""The binds that let a confined turn commit in its git worktree, and nothing more of the
user's repository (:func:`worktree_mounts`; add them to the turn's
:class:`~nexo_trio.core.sandbox.SandboxPlan` as ``writable=`` and ``readable=``).

A goal's worktree (``git worktree add -b <branch> <workspace> <base>``) keeps its files in
the workspace, its own state in an admin dir ``<common>/worktrees/<id>/`` and everything
else in the user's common dir ``<common>`` (usually ``<checkout>/.git``). Tried under
bubblewrap, ``git add`` + ``git commit`` in a worktree writes only:

* new loose objects, in ``<common>/objects/<xx>/`` (a temp file beside the object, then a
  link or a rename);
* the admin dir: ``index`` (via ``index.lock``), ``COMMIT_EDITMSG``, ``ORIG_HEAD``,
  ``logs/HEAD``; ``git checkout``/``rebase`` there also write ``HEAD`` and their own state;
* the branch's loose ref: ``<branch>.lock`` created in ``refs/heads/<dirname of branch>/``
  and renamed onto ``<branch>`` (a new loose ref when the branch lived only in
  ``packed-refs``, which is not touched), so that *directory* must be writable;
* the branch's reflog, appended to in ``logs/refs/heads/<dirname of branch>/`` (without it
  the ref update fails and the commit is rolled back).

So :func:`worktree_mounts` makes exactly those writable, and binds read-only on top (binds
are made shallowest first, the most specific path wins):

* the common dir itself (it stays visible under a private ``/tmp`` and read-only even below
  a broader writable path), so its ``HEAD``, ``index``, ``config``, ``hooks/``,
  ``packed-refs``, tags, ``refs/nexo/**`` and other worktrees stay out of reach (the user's
  checkout, outside it, is read-only like the rest of the file system);
* ``objects/pack`` and ``objects/info`` (a commit writes neither: the user's packed history
  can't be deleted, no ``alternates`` can be planted), created when missing;
* the admin dir's ``commondir``, ``gitdir``, ``config.worktree`` (created empty when
  missing: git reads it only with ``extensions.worktreeConfig``, and then it stays empty),
  ``locked`` if there is one, and the checkpoints' cache index ``nexo-trio.index``;
* every other entry of the branch's ref directory and of its reflog directory (files and
  subdirectories: another branch's ref cannot be written, removed or renamed over, since
  ``rename``/``unlink`` of a mount point fail with ``EBUSY``). A branch that lives only in
  ``packed-refs`` has no loose file to protect, and a loose ref written beside it would
  override it: such a name gets an empty placeholder directory (and one in the reflog
  directory), bound read-only. Git ignores an empty directory where a ref or reflog would
  be (a read falls through to ``packed-refs``, a write removes it), so the placeholders are
  invisible to the user's git; they stay behind after the turn.

A branch without a slash (``fix-login``) has ``refs/heads/`` itself as its directory:
every other branch there, and each of its subdirectories (``nexo/``, ...), is bound the
same way.

Residual limits (what these mounts do *not* prevent):

* **Only what exists when the turn starts is protected, and only while nobody outside the
  sandbox replaces it.** When a ref file bound read-only here is renamed over or removed
  from *another* mount namespace (the user's git updating their branch, another goal's
  sandbox committing on its branch in the same directory, ``git pack-refs``), the kernel
  lazily detaches this sandbox's bind of it (verified: the turn could then rename its own
  file over that ref). With branches ``nexo/<goal>`` every goal shares ``refs/heads/nexo/``,
  and a slash-less branch shares ``refs/heads/`` with the user's branches: a sibling that
  is updated during the turn loses its protection until the turn ends. A branch in a
  directory no one else writes (``nexo/<goal>/<name>``) avoids this; so does keeping the
  turn's ``HEAD`` detached and moving the branch outside the sandbox after the turn.
* New names can be created in the branch's ref and reflog directories (a new branch
  beside ours, e.g. one a later goal would want: ``git worktree add -b`` then refuses,
  which is safe; ``-B`` would not be). That includes a lock file beside another branch
  (``main.lock``): the user's git then refuses to update that branch until it is removed.
  Entries created after this call (a branch another goal makes meanwhile) are not
  protected.
* Objects can be added, and the *loose* objects that already exist (``objects/<xx>/``)
  can be deleted or replaced; packed ones cannot. Repacking before a turn (``git repack
  -d``) leaves few loose objects at stake. Anything that writes a pack fails in the
  sandbox: ``git gc``/``repack``, and ``git add`` of a file above ``core.bigFileThreshold``
  (512 MiB), which git streams into a pack.
* The worktree's own state is the turn's: its ``HEAD`` (which may be pointed at another
  branch: that changes no branch, but git then counts it as checked out here and refuses
  to update or check it out elsewhere), index, reflog, per-worktree refs, and a new
  ``locked`` file (``git worktree remove`` then needs ``--force --force``).
* Everything else that writes the common dir fails in the sandbox: ``git stash``, tags,
  branches outside the branch's directory, ``git config`` (``--worktree`` too), notes,
  fetching into ``refs/remotes``, ``rerere``, ``git gc``.
* The workspace, with its ``.git`` file, was the turn's to write: don't run git *in* it
  outside the sandbox (its ``.git`` may now name a git dir with a hostile config); use
  ``git -C <common>`` with the branch name instead.
* Only the files ref backend: a repository with a ``reftable/`` is refused.
* Each protected entry is one more bind: a directory with thousands of branches makes for
  a long bwrap command line.
"""

from __future__ import annotations

import contextlib
import os
from typing import Final

REFS_HEADS: Final = "refs/heads"
LOCK_SUFFIX: Final = ".lock"
WORKTREE_READONLY: Final = (
    "commondir",
    "gitdir",
    "config.worktree",
    "locked",
    "nexo-trio.index",
)
"""The admin dir's files the turn must not change (the first three always exist after this
module has run; ``locked`` only if the worktree is locked; ``nexo-trio.index`` is the
checkpoints' cache index, once the first checkpoint wrote it: a turn that could rewrite its
stat data could hide a change from the next checkpoint)."""
OBJECTS_READONLY: Final = ("pack", "info")


def worktree_mounts(
    common_dir: str, admin_dir: str, branch: str
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The ``(writable, readonly)`` binds that let a confined turn ``git add``/``commit``
    (``log``, ``diff``, ``status``) in the worktree whose admin dir is ``admin_dir``
    (``<common_dir>/worktrees/<id>``), moving ``branch`` (a branch name such as
    ``nexo/g1``, without ``refs/heads/``), and change nothing else of the repository
    whose common dir is ``common_dir``; see the module docstring for what that means and
    for its limits.

    Both directories must be absolute, real (``os.path.realpath``) paths of an existing
    worktree of the files ref backend (``ValueError`` otherwise). Creates what the binds
    need and git would create anyway: the branch's ref and reflog directories,
    ``objects/pack``, ``objects/info``, an empty ``config.worktree``, and an empty
    placeholder directory for each other branch of the branch's directory that lives only
    in ``packed-refs``. The paths returned are absolute, real and sorted.

    Blocking (a few ``stat``/``mkdir``/``listdir`` calls and a read of ``packed-refs``):
    call it through ``trio.to_thread.run_sync``.
    """
    _check_real_dir(common_dir, "common_dir")
    _check_real_dir(admin_dir, "admin_dir")
    if os.path.dirname(admin_dir) != os.path.join(common_dir, "worktrees"):
        raise ValueError(f"admin_dir {admin_dir} is not a worktree of {common_dir}")
    _check_commondir(common_dir, admin_dir)
    if os.path.lexists(os.path.join(common_dir, "reftable")):
        raise ValueError(f"{common_dir} uses the reftable ref backend, which is not supported")
    parts = _branch_parts(branch)
    subdir, leaf = parts[:-1], parts[-1]

    objects = os.path.join(common_dir, "objects")
    readonly = [common_dir]
    for name in OBJECTS_READONLY:
        readonly.append(_ensure_dir(os.path.join(objects, name)))
    _ensure_file(os.path.join(admin_dir, "config.worktree"))
    readonly += [
        os.path.join(admin_dir, name)
        for name in WORKTREE_READONLY
        if os.path.lexists(os.path.join(admin_dir, name))
    ]

    ref_dir = _ensure_dir(os.path.join(common_dir, REFS_HEADS, *subdir))
    log_dir = _ensure_dir(os.path.join(common_dir, "logs", REFS_HEADS, *subdir))
    own = {leaf, leaf + LOCK_SUFFIX}
    prefix = "/".join((REFS_HEADS, *subdir)) + "/"
    packed = {
        name.removeprefix(prefix).split("/", 1)[0]
        for name in _packed_refs(common_dir)
        if name.startswith(prefix)
    }
    refs = (set(os.listdir(ref_dir)) | packed) - own
    logs = (set(os.listdir(log_dir)) | refs) - own
    readonly += [_placeholder(ref_dir, name) for name in refs]
    readonly += [_placeholder(log_dir, name) for name in logs]

    writable = (os.path.realpath(objects), admin_dir, ref_dir, log_dir)
    return tuple(sorted(writable)), tuple(sorted(dict.fromkeys(readonly)))


def _check_real_dir(path: str, what: str) -> None:
    if not os.path.isabs(path) or os.path.realpath(path) != path:
        raise ValueError(f"{what} must be an absolute real path, got {path!r}")
    if not os.path.isdir(path):
        raise ValueError(f"{what} {path} is not a directory")


def _check_commondir(common_dir: str, admin_dir: str) -> None:
    """The admin dir's ``commondir`` file names ``common_dir``."""
    try:
        with open(os.path.join(admin_dir, "commondir"), "rb") as f:
            named = os.fsdecode(f.read().rstrip(b"\r\n"))
    except FileNotFoundError:
        raise ValueError(f"{admin_dir} has no commondir file: not a worktree") from None
    if os.path.realpath(os.path.join(admin_dir, named)) != common_dir:
        raise ValueError(f"{admin_dir}/commondir names {named!r}, not {common_dir}")


def _branch_parts(branch: str) -> list[str]:
    """The components of a branch name that is safe to turn into paths."""
    parts = branch.split("/")
    bad = (
        not branch
        or "\0" in branch
        or "\\" in branch
        or any(not p or p.startswith(".") or p.endswith(LOCK_SUFFIX) for p in parts)
    )
    if bad:
        raise ValueError(f"not a valid branch name: {branch!r}")
    return parts


def _ensure_dir(path: str) -> str:
    """``path`` as a directory (created with its parents when missing), made real."""
    os.makedirs(path, exist_ok=True)
    return os.path.realpath(path)


def _ensure_file(path: str) -> None:
    """``path`` as a file, created empty when missing."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return
    os.close(fd)


def _placeholder(directory: str, name: str) -> str:
    """``directory/name``, made an empty directory when it does not exist (git ignores an
    empty directory where a ref or a reflog would be)."""
    path = os.path.join(directory, name)
    if os.path.islink(path):
        raise ValueError(f"{path} is a symbolic link: it cannot be protected")
    with contextlib.suppress(FileExistsError):
        os.mkdir(path)
    return path


def _packed_refs(common_dir: str) -> list[str]:
    """The names in ``<common_dir>/packed-refs`` (none without one)."""
    try:
        with open(os.path.join(common_dir, "packed-refs"), "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return []
    names: list[str] = []
    for line in data.splitlines():
        if not line or line.startswith((b"#", b"^")):
            continue
        _oid, sep, name = line.partition(b" ")
        if sep:
            names.append(os.fsdecode(name.strip()))
    return names
