"""Git workspaces and per-turn checkpoints, the pure half: ref names, the argv and environment
of every git call, and the parsers of git's ``-z`` outputs. The shell that runs git is
:mod:`nexo_trio.orchestrator.git_workspace`.

A checkpoint of turn ``n`` of goal ``g`` is a commit on the hidden ref ``refs/nexo/g/n``
(never on a branch, HEAD never moves): its tree is everything in the work tree, untracked
files included and ignored files excluded, built in a temporary index
(``GIT_INDEX_FILE``). Its first parent is HEAD when HEAD resolves; its second parent, when
the target has a real index, is a commit of that index's tree, so a restore can give back
the index too (the layout of ``git stash``).

Paths come from git as bytes (``-z`` output, never quoted) and become ``str`` with
:func:`os.fsdecode`, so a non-UTF-8 name survives the round trip (surrogate escapes).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Final

import attrs

__all__ = [
    "CHECKPOINT_NAMESPACE",
    "GIT_IDENTITY",
    "SAFE_CONFIG",
    "Checkpoint",
    "DiffStat",
    "GitTarget",
    "WorkspaceProblem",
    "Worktree",
    "WorktreeEntry",
    "checkpoint_message",
    "checkpoint_prefix",
    "checkpoint_ref",
    "default_branch",
    "first_line",
    "git_argv",
    "git_env",
    "goal_id_problem",
    "parse_checkpoints",
    "parse_diff_stat",
    "parse_worktrees",
    "ref_problem",
]

CHECKPOINT_NAMESPACE: Final = "refs/nexo"
"""Where checkpoints live: ``refs/nexo/<goal>/<turn>``, outside ``refs/heads`` and
``refs/tags``, so no branch, tag or ``git log --all``-less view shows them."""

SAFE_CONFIG: Final[tuple[str, ...]] = (
    "core.hooksPath=/dev/null",  # no hook of the user's ever runs
    "core.fsmonitor=false",  # nor an fsmonitor command
    "core.pager=cat",
    "color.ui=never",
    "gc.auto=0",  # no background gc in the user's repository
    "maintenance.auto=false",
    "advice.addEmbeddedRepo=false",
    "advice.detachedHead=false",
    "diff.renames=false",
    "diff.external=",
    "commit.gpgSign=false",
)
"""``-c`` settings given to every git call."""

GIT_IDENTITY: Final[tuple[str, ...]] = ("user.name=nexo-trio", "user.email=nexo-trio@localhost")
"""The committer of checkpoint commits."""

_GOAL_ID: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")
_SHA: Final = re.compile(rb"[0-9a-f]{40}|[0-9a-f]{64}")


@attrs.frozen
class WorkspaceProblem:
    """An expected failure of the git layer, in one line (not a repository, a base that does
    not resolve, git failing or timing out…)."""

    message: str = attrs.field(validator=attrs.validators.instance_of(str))

    @message.validator
    def _one_line(self, _: attrs.Attribute[str], value: str) -> None:
        if not value or "\n" in value:
            raise ValueError(f"a problem is one non-empty line: {value!r}")


def _absolute(_: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or not os.path.isabs(value):
        raise ValueError(f"{attribute.name} must be an absolute path: {value!r}")


@attrs.frozen
class GitTarget:
    """A git dir and the work tree it checkpoints, always passed explicitly to git.

    ``private`` is a shadow repository the library owns (its index is a cache of ours, and
    there is no user index to restore); otherwise ``git_dir`` is a worktree's or a
    repository's own git dir and its index is the user's or the worktree's."""

    git_dir: str = attrs.field(validator=_absolute)
    work_tree: str = attrs.field(validator=_absolute)
    private: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))

    @property
    def index_file(self) -> str:
        """The target's own index file."""
        return os.path.join(self.git_dir, "index")


@attrs.frozen
class Worktree:
    """A goal's worktree: where it is, its branch, and the target of its checkpoints."""

    path: str = attrs.field(validator=_absolute)
    branch: str = attrs.field(validator=attrs.validators.instance_of(str))
    target: GitTarget = attrs.field(validator=attrs.validators.instance_of(GitTarget))
    created: bool = attrs.field(validator=attrs.validators.instance_of(bool))
    """False: an existing worktree of the same branch was reused."""


@attrs.frozen
class Checkpoint:
    """One checkpoint ref of a goal."""

    turn: int = attrs.field(validator=attrs.validators.ge(0))
    sha: str = attrs.field(validator=attrs.validators.matches_re(r"[0-9a-f]{40}|[0-9a-f]{64}"))


def _paths(_: object, attribute: attrs.Attribute[tuple[str, ...]], value: object) -> None:
    if not isinstance(value, tuple) or not all(isinstance(p, str) for p in value):
        raise TypeError(f"{attribute.name} must be a tuple of str")
    if list(value) != sorted(set(value)):
        raise ValueError(f"{attribute.name} must be sorted and without duplicates")


_count = attrs.validators.and_(attrs.validators.instance_of(int), attrs.validators.ge(0))


@attrs.frozen
class DiffStat:
    """What a turn changed against its checkpoint.

    ``files_changed`` counts every path in the diff (an added, a deleted and a modified file
    are one each; a rename is a deletion and an addition); ``binary`` how many of them are
    binary (they count no lines)."""

    files_changed: int = attrs.field(validator=_count)
    insertions: int = attrs.field(validator=_count)
    deletions: int = attrs.field(validator=_count)
    added: tuple[str, ...] = attrs.field(default=(), validator=_paths)
    deleted: tuple[str, ...] = attrs.field(default=(), validator=_paths)
    modified: tuple[str, ...] = attrs.field(default=(), validator=_paths)
    binary: int = attrs.field(default=0, validator=_count)

    def __attrs_post_init__(self) -> None:
        if self.files_changed != len(self.added) + len(self.deleted) + len(self.modified):
            raise ValueError("files_changed must be the number of added, deleted and modified")
        if self.binary > self.files_changed:
            raise ValueError("more binary files than files changed")

    @property
    def empty(self) -> bool:
        return self.files_changed == 0


@attrs.frozen
class WorktreeEntry:
    """One entry of ``git worktree list --porcelain -z``."""

    path: str
    head: str | None = None
    branch: str | None = None
    """The full ref (``refs/heads/x``); ``None`` when detached or bare."""
    bare: bool = False
    prunable: bool = False


# -- names ---------------------------------------------------------------------------------


def ref_problem(name: str) -> str | None:
    """What ``git check-ref-format`` would reject in the full ref name ``name``, in one
    line, or ``None``. (Stricter than git in one point: a name must have a ``/``.)"""
    if not name:
        return "a ref name is empty"
    if "/" not in name:
        return f"ref {name!r} has no '/'"
    if name.startswith("/") or name.endswith("/") or "//" in name:
        return f"ref {name!r} has an empty component"
    if name.endswith("."):
        return f"ref {name!r} ends with '.'"
    if ".." in name:
        return f"ref {name!r} contains '..'"
    if "@{" in name or name == "@":
        return f"ref {name!r} contains '@{{'"
    bad = sorted({c for c in name if ord(c) < 0o40 or ord(c) == 0o177 or c in " ~^:?*[\\"})
    if bad:
        return f"ref {name!r} contains {''.join(bad)!r}"
    for part in name.split("/"):
        if part.startswith("."):
            return f"ref {name!r} has a component starting with '.'"
        if part.endswith(".lock"):
            return f"ref {name!r} has a component ending with '.lock'"
    return None


def goal_id_problem(goal_id: str) -> str | None:
    """Why ``goal_id`` cannot be one component of a ref (``refs/nexo/<goal>/…``,
    ``refs/heads/nexo/<goal>``), or ``None``: ids are ``[A-Za-z0-9._-]``, not starting with
    ``.`` or ``-``, and pass :func:`ref_problem` as a component and as the last one."""
    if not isinstance(goal_id, str) or _GOAL_ID.fullmatch(goal_id) is None:
        return (
            f"goal id {goal_id!r} cannot name a git ref: use letters, digits, '.', '_' and "
            "'-', not starting with '.' or '-'"
        )
    problem = ref_problem(f"{CHECKPOINT_NAMESPACE}/{goal_id}/0") or ref_problem(
        f"refs/heads/nexo/{goal_id}"
    )
    return None if problem is None else f"goal id {goal_id!r} cannot name a git ref: {problem}"


def checkpoint_prefix(goal_id: str) -> str:
    """``refs/nexo/<goal>/``: the refs of a goal's checkpoints."""
    problem = goal_id_problem(goal_id)
    if problem is not None:
        raise ValueError(problem)
    return f"{CHECKPOINT_NAMESPACE}/{goal_id}/"


def checkpoint_ref(goal_id: str, turn: int) -> str:
    """``refs/nexo/<goal>/<turn>``; ``ValueError`` for a goal id no ref can hold or a
    negative turn (validate ids with :func:`goal_id_problem` first)."""
    if isinstance(turn, bool) or not isinstance(turn, int) or turn < 0:
        raise ValueError(f"a turn is an int >= 0: {turn!r}")
    return f"{checkpoint_prefix(goal_id)}{turn}"


def checkpoint_message(goal_id: str, turn: int) -> str:
    return f"nexo-trio checkpoint: goal {goal_id}, before turn {turn}\n"


def default_branch(goal_id: str) -> str:
    """The branch of a goal's worktree when the goal names none: ``nexo/<goal id>``."""
    problem = goal_id_problem(goal_id)
    if problem is not None:
        raise ValueError(problem)
    return f"nexo/{goal_id}"


# -- argv and environment --------------------------------------------------------------------


def git_env(environ: Mapping[str, str], *, index_file: str | None = None) -> dict[str, str]:
    """The environment of a git call: ``environ`` without any ``GIT_*`` variable (no
    redirect of the git dir, work tree, index, object store or config reaches git), no
    system config, no pager, no prompt, no optional locks (a read never rewrites an index),
    C messages; ``GIT_INDEX_FILE`` when ``index_file`` is given."""
    env = {k: v for k, v in environ.items() if not k.startswith("GIT_")}
    env.pop("PAGER", None)
    env.update(
        GIT_CONFIG_NOSYSTEM="1",
        GIT_TERMINAL_PROMPT="0",
        GIT_OPTIONAL_LOCKS="0",
        GIT_PAGER="cat",
        LC_ALL="C",
        LANGUAGE="C",
    )
    if index_file is not None:
        env["GIT_INDEX_FILE"] = index_file
    return env


def git_argv(
    target: GitTarget | None,
    *args: str,
    cwd_repo: str | None = None,
    identity: bool = False,
    git: str = "git",
) -> list[str]:
    """``git --no-pager -c … [--git-dir D --work-tree W | -C REPO] ARGS``.

    With a ``target`` the git dir and work tree are explicit; with ``cwd_repo`` git finds
    the repository of that directory (``ensure_worktree``'s calls on the user's repo)."""
    argv = [git, "--no-pager"]
    for setting in (*SAFE_CONFIG, *(GIT_IDENTITY if identity else ())):
        argv += ["-c", setting]
    if target is not None:
        argv += [f"--git-dir={target.git_dir}", f"--work-tree={target.work_tree}"]
    elif cwd_repo is not None:
        argv += ["-C", cwd_repo]
    return [*argv, *args]


# -- parsers -------------------------------------------------------------------------------


def _fields(output: bytes) -> list[bytes]:
    parts = output.split(b"\0")
    if parts and parts[-1] == b"":
        parts.pop()
    return parts


def parse_diff_stat(numstat: bytes, name_status: bytes) -> DiffStat:
    """The :class:`DiffStat` of ``git diff --no-renames --numstat -z`` and ``git diff
    --no-renames --name-status -z`` of the same two trees. Renames and copies, should they
    come (``R100``/``C75``, two paths), count as a deletion and an addition (a copy: an
    addition). ``ValueError`` on output that is neither."""
    insertions = deletions = binary = 0
    fields = _fields(numstat)
    i = 0
    while i < len(fields):
        head = fields[i].split(b"\t", 2)
        if len(head) != 3:
            raise ValueError(f"not a numstat record: {fields[i]!r}")
        added, removed, path = head
        i += 1
        if path == b"":  # a rename: "a\td\t" NUL src NUL dst
            if i + 2 > len(fields):
                raise ValueError("a numstat rename without its two paths")
            i += 2
        if added == b"-" and removed == b"-":
            binary += 1
        elif added.isdigit() and removed.isdigit():
            insertions += int(added)
            deletions += int(removed)
        else:
            raise ValueError(f"not numstat counts: {added!r} {removed!r}")
    added_paths: set[str] = set()
    deleted_paths: set[str] = set()
    modified_paths: set[str] = set()
    fields = _fields(name_status)
    i = 0
    while i < len(fields):
        status = fields[i]
        kind = status[:1]
        if kind in (b"R", b"C"):
            if i + 3 > len(fields):
                raise ValueError(f"a {status!r} record without its two paths")
            src, dst = os.fsdecode(fields[i + 1]), os.fsdecode(fields[i + 2])
            if kind == b"R":
                deleted_paths.add(src)
            added_paths.add(dst)
            i += 3
            continue
        if i + 1 >= len(fields):
            raise ValueError(f"a {status!r} record without its path")
        name = os.fsdecode(fields[i + 1])
        if status == b"A":
            added_paths.add(name)
        elif status == b"D":
            deleted_paths.add(name)
        elif status in (b"M", b"T", b"U", b"X") or (kind == b"M" and status[1:].isdigit()):
            modified_paths.add(name)
        else:
            raise ValueError(f"not a name-status record: {status!r}")
        i += 2
    changed = len(added_paths) + len(deleted_paths) + len(modified_paths)
    return DiffStat(
        files_changed=changed,
        insertions=insertions,
        deletions=deletions,
        added=tuple(sorted(added_paths)),
        deleted=tuple(sorted(deleted_paths)),
        modified=tuple(sorted(modified_paths)),
        binary=min(binary, changed),
    )


def parse_checkpoints(output: bytes, goal_id: str) -> tuple[Checkpoint, ...]:
    """The checkpoints of ``git for-each-ref --format='%(refname) %(objectname)'
    refs/nexo/<goal>/`` output, by turn; refs below the prefix that are not a turn number are
    skipped."""
    prefix = checkpoint_prefix(goal_id).encode()
    found: dict[int, str] = {}
    for line in output.splitlines():
        ref, _, sha = line.rpartition(b" ")
        if not ref.startswith(prefix) or _SHA.fullmatch(sha) is None:
            continue
        turn = ref[len(prefix) :]
        if turn.isdigit() and (turn == b"0" or not turn.startswith(b"0")):
            found[int(turn)] = sha.decode()
    return tuple(Checkpoint(turn=t, sha=found[t]) for t in sorted(found))


def parse_worktrees(output: bytes) -> tuple[WorktreeEntry, ...]:
    """The entries of ``git worktree list --porcelain -z``."""
    entries: list[WorktreeEntry] = []
    current: dict[str, object] | None = None
    for field in output.split(b"\0"):
        if field == b"":
            if current is not None:
                entries.append(WorktreeEntry(**current))  # type: ignore[arg-type]
                current = None
            continue
        key, _, value = field.partition(b" ")
        if key == b"worktree":
            if current is not None:
                entries.append(WorktreeEntry(**current))  # type: ignore[arg-type]
            current = {"path": os.fsdecode(value)}
        elif current is None:
            continue
        elif key == b"HEAD":
            current["head"] = value.decode("ascii", "replace")
        elif key == b"branch":
            current["branch"] = os.fsdecode(value)
        elif key == b"bare":
            current["bare"] = True
        elif key == b"prunable":
            current["prunable"] = True
    if current is not None:
        entries.append(WorktreeEntry(**current))  # type: ignore[arg-type]
    return tuple(entries)


def first_line(output: bytes, fallback: str) -> str:
    """The first non-empty line of git's stderr (``fatal: `` dropped), or ``fallback``."""
    for raw in output.decode("utf-8", "replace").splitlines():
        line = raw.strip()
        if line and not line.startswith("hint:"):
            return line.removeprefix("fatal: ").removeprefix("error: ")
    return fallback
