"""Git workspaces and per-turn checkpoints, the pure half: ref names, the argv and environment
of every git call, and the parsers of git's ``-z`` outputs. The shell that runs git is
:mod:`nexo_trio.orchestrator.git_workspace`.

A checkpoint of turn ``n`` of goal ``g`` is a commit on the hidden ref ``refs/nexo/g/n``
(never on a branch, HEAD never moves): its tree is everything in the work tree, untracked
files included and ignored files excluded, built in a temporary index
(``GIT_INDEX_FILE``). Its first parent is HEAD when HEAD resolves; its second parent, when
the target has a real index, is a commit of that index's tree, so a restore can give back
the index too (the layout of ``git stash``).

Every call that reads the work tree or writes objects runs in a *neutral* git dir the library
makes per operation (:data:`NEUTRAL_HEAD`, an empty config, :data:`NEUTRAL_ATTRIBUTES`, the
target's ``info/exclude``), with ``GIT_OBJECT_DIRECTORY`` naming the target's object store
(:func:`neutral_argv`, :func:`git_env`): the target's own config, which whoever writes the
workspace may have written (filters, textconv, fsmonitor, includes, ``core.worktree``…), is
never read by those calls (the user's global config still is: its excludes apply), and no
attribute converts bytes on the way in or out. Only ref
operations use the real repository (:func:`ref_argv`): its common dir, ``GIT_COMMON_DIR``
pinned, a worktree's HEAD named ``worktrees/<id>/HEAD``, so a rewritten ``commondir`` file of
a worktree's admin dir is not followed.

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
    "INDEX_MESSAGE",
    "NEUTRAL_ATTRIBUTES",
    "NEUTRAL_CONFIG",
    "NEUTRAL_HEAD",
    "OBJECT_FORMATS",
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
    "left_ref",
    "neutral_argv",
    "neutral_config_text",
    "parse_checkpoints",
    "parse_diff_stat",
    "parse_gitdir_file",
    "parse_paths",
    "parse_refnames",
    "parse_worktrees",
    "ref_argv",
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
    "submodule.recurse=false",  # no git runs inside a nested repository
    "diff.submodule=short",  # (``diff`` would run one there)
)
"""``-c`` settings given to every git call."""

NEUTRAL_CONFIG: Final[tuple[str, ...]] = (
    "core.autocrlf=false",
    "core.safecrlf=false",
    "core.splitIndex=false",  # an index we write never depends on a file of the git dir
    "core.untrackedCache=false",
    "index.sparse=false",
    "diff.noprefix=false",  # diff_text prints a/ and b/ whatever the global config says
    "diff.mnemonicPrefix=false",
    "diff.relative=false",
)
"""``-c`` settings added to every call in a neutral git dir."""

NEUTRAL_HEAD: Final = "ref: refs/heads/neutral\n"
"""The ``HEAD`` of a neutral git dir (an unborn branch: the dir has no refs)."""

NEUTRAL_ATTRIBUTES: Final = "* -text -filter -ident !eol !working-tree-encoding\n"
"""``info/attributes`` of a neutral git dir. It overrides every ``.gitattributes`` of the work
tree: no filter driver, end-of-line or encoding conversion, no ``$Id$`` expansion, so a
blob holds the bytes of the file and a checkout writes them back."""

OBJECT_FORMATS: Final = ("sha1", "sha256")

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


def _absolute_or_none(_: object, attribute: attrs.Attribute[str | None], value: object) -> None:
    if value is not None and (not isinstance(value, str) or not os.path.isabs(value)):
        raise ValueError(f"{attribute.name} must be an absolute path or None: {value!r}")


@attrs.frozen
class GitTarget:
    """A git dir and the work tree it checkpoints, always passed explicitly to git.

    ``private`` is a shadow repository the library owns (its index is a cache of ours, and
    there is no user index to restore); otherwise ``git_dir`` is a worktree's or a
    repository's own git dir and its index is the user's or the worktree's.

    ``common_dir`` is the repository's common dir (refs, objects, ``info/exclude``) when
    ``git_dir`` is a linked worktree's admin dir; ``None``: ``git_dir`` is its own. It is
    given to git explicitly, never read from the ``commondir`` file. ``object_format`` is the
    repository's hash (``sha1``/``sha256``)."""

    git_dir: str = attrs.field(validator=_absolute)
    work_tree: str = attrs.field(validator=_absolute)
    private: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))
    common_dir: str | None = attrs.field(default=None, validator=_absolute_or_none)
    object_format: str = attrs.field(default="sha1", validator=attrs.validators.in_(OBJECT_FORMATS))

    def __attrs_post_init__(self) -> None:
        if self.common_dir is not None and os.path.dirname(
            os.path.normpath(self.git_dir)
        ) != os.path.join(os.path.normpath(self.common_dir), "worktrees"):
            raise ValueError(
                f"a worktree's git dir is <common_dir>/worktrees/<id>: {self.git_dir!r} is not "
                f"in {self.common_dir!r}"
            )

    @property
    def head_ref(self) -> str:
        """The target's HEAD as a ref of the common dir: ``HEAD``, or a linked worktree's
        ``worktrees/<id>/HEAD``."""
        if self.common_dir is None:
            return "HEAD"
        return f"worktrees/{os.path.basename(os.path.normpath(self.git_dir))}/HEAD"

    @property
    def index_file(self) -> str:
        """The target's own index file."""
        return os.path.join(self.git_dir, "index")

    @property
    def common(self) -> str:
        """The common dir: ``common_dir``, or ``git_dir`` when it is its own."""
        return self.git_dir if self.common_dir is None else self.common_dir

    @property
    def object_directory(self) -> str:
        """The object store (``GIT_OBJECT_DIRECTORY`` of calls in a neutral git dir)."""
        return os.path.join(self.common, "objects")

    @property
    def exclude_file(self) -> str:
        """The repository's ``info/exclude``."""
        return os.path.join(self.common, "info", "exclude")

    @property
    def cache_index_file(self) -> str:
        """The index the library keeps between operations so ``git add -A`` rehashes only
        what changed: a private target's own index, else ``nexo-trio.index`` in the git dir
        (never the user's index, whose blobs may have gone through the user's filters)."""
        return self.index_file if self.private else os.path.join(self.git_dir, "nexo-trio.index")


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


def checkpoint_ref(goal_id: str, turn: int, *, after: bool = False) -> str:
    """``refs/nexo/<goal>/<turn>`` (``<turn>-after`` for the workspace at the turn's end,
    which :func:`parse_checkpoints` does not list); ``ValueError`` for a goal id no ref can
    hold or a negative turn (validate ids with :func:`goal_id_problem` first)."""
    if isinstance(turn, bool) or not isinstance(turn, int) or turn < 0:
        raise ValueError(f"a turn is an int >= 0: {turn!r}")
    return f"{checkpoint_prefix(goal_id)}{turn}{'-after' if after else ''}"


INDEX_MESSAGE = "index of "
"""How the message of a checkpoint's index commit starts (its second parent, or its only
one when HEAD did not resolve): ``index of <ref>``."""


def left_ref(goal_id: str, turn: int) -> str:
    """``refs/nexo/<goal>/<turn>-left``: a worktree as this host had left it, set aside
    when the goal came back after running elsewhere (not a checkpoint: not listed)."""
    return f"{checkpoint_ref(goal_id, turn)}-left"


def checkpoint_message(goal_id: str, turn: int, *, after: bool = False) -> str:
    """The message of a checkpoint commit."""
    return f"nexo-trio checkpoint: goal {goal_id}, {'after' if after else 'before'} turn {turn}\n"


def default_branch(goal_id: str) -> str:
    """The branch of a goal's worktree when the goal names none: ``nexo/<goal id>``."""
    problem = goal_id_problem(goal_id)
    if problem is not None:
        raise ValueError(problem)
    return f"nexo/{goal_id}"


# -- argv and environment --------------------------------------------------------------------


def git_env(
    environ: Mapping[str, str],
    *,
    index_file: str | None = None,
    object_directory: str | None = None,
    common_dir: str | None = None,
) -> dict[str, str]:
    """The environment of a git call: ``environ`` without any ``GIT_*`` variable (no
    redirect of the git dir, work tree, index, object store or config reaches git), no
    system config, no pager, no prompt, no optional locks (a read never rewrites an index),
    C messages; then the ``GIT_*`` variables given: ``GIT_INDEX_FILE``,
    ``GIT_OBJECT_DIRECTORY``, ``GIT_COMMON_DIR``."""
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
    if object_directory is not None:
        env["GIT_OBJECT_DIRECTORY"] = object_directory
    if common_dir is not None:
        env["GIT_COMMON_DIR"] = common_dir
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


def neutral_argv(
    target: GitTarget, neutral_dir: str, *args: str, identity: bool = False, git: str = "git"
) -> list[str]:
    """``git … --git-dir=<neutral dir> --work-tree=<target's> ARGS``: a call that reads the
    work tree or writes objects (run it with ``git_env(…, object_directory=
    target.object_directory)``); the target's git dir is not even named."""
    argv = [git, "--no-pager"]
    for setting in (*SAFE_CONFIG, *NEUTRAL_CONFIG, *(GIT_IDENTITY if identity else ())):
        argv += ["-c", setting]
    return [*argv, f"--git-dir={neutral_dir}", f"--work-tree={target.work_tree}", *args]


def ref_argv(target: GitTarget, *args: str, git: str = "git") -> list[str]:
    """``git … --git-dir=<target's common dir> ARGS``, no work tree: a ref operation (run it
    with ``git_env(…, common_dir=target.common)``; a worktree's HEAD is
    :attr:`GitTarget.head_ref`). Never the worktree's admin dir: git's ref store reads the
    admin dir's ``commondir`` file whatever ``GIT_COMMON_DIR`` says."""
    return git_argv(None, f"--git-dir={target.common}", *args, git=git)


def neutral_config_text(object_format: str) -> str:
    """The ``config`` of a neutral git dir: empty for sha1, the object format otherwise."""
    if object_format not in OBJECT_FORMATS:
        raise ValueError(f"unknown object format {object_format!r}")
    if object_format == "sha1":
        return ""
    return (
        f"[core]\n\trepositoryformatversion = 1\n[extensions]\n\tobjectformat = {object_format}\n"
    )


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


def parse_refnames(output: bytes, prefix: str) -> tuple[str, ...]:
    """The refs below ``prefix`` of ``git for-each-ref --format='%(refname)'`` output
    (one a line: a ref name has no newline), sorted."""
    wanted = prefix.encode()
    return tuple(
        sorted({os.fsdecode(line) for line in output.splitlines() if line.startswith(wanted)})
    )


def parse_paths(output: bytes) -> tuple[str, ...]:
    """The paths of ``git diff --name-only -z`` output, sorted and without duplicates."""
    return tuple(sorted({os.fsdecode(p) for p in _fields(output)}))


def parse_gitdir_file(content: bytes, admin_dir: str) -> str | None:
    """The worktree directory named by a worktree admin dir's ``gitdir`` file (the path of
    the worktree's ``.git``; relative ones are relative to ``admin_dir``); ``None`` when
    it names none."""
    line = content.split(b"\n", 1)[0].rstrip(b"\r")
    if not line or b"\0" in line:
        return None
    dot_git = os.path.join(admin_dir, os.fsdecode(line))
    return os.path.dirname(os.path.normpath(dot_git))


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
