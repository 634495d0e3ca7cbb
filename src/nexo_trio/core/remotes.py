"""Worktrees of a remote repository, the pure half: what is a git URL, where a worker keeps its
clone, what a fetch and a push move, how their output reads, and where a goal that moved to
another host goes on from. The shell is :mod:`nexo_trio.orchestrator.git_workspace`
(:func:`~nexo_trio.orchestrator.git_workspace.ensure_clone`, ``fetch_clone``,
``push_checkpoints``).

A goal's ``workspace: {repo: URL}`` names a repository every worker can reach. Each worker
keeps **one bare clone** of it under its ``workspace_root``
(``<workspace_root>/.repos/<sha256 of the URL, 16 hex>.git``, :func:`clone_name`; no goal id
starts with ``.``, so no goal's worktree is there) and makes the goal's worktree of that
clone. Before a worktree is opened the clone is fetched (:func:`fetch_refspecs`): every
branch and tag of the remote onto the clone's own, **except the branches checked out in one
of its worktrees** (a running goal's branch is this host's to move), and the goal's hidden
refs ``refs/nexo/<goal>/*``. So the goal's branch, when another worker pushed it, is where a
fresh worktree starts, and ``base`` names the remote's branches as they are now.

After each checkpoint the worker pushes it (:func:`push_refspecs`): the checkpoint's ref
(forced: the goal's own) and the goal's branch (fast-forward only: a branch that moved
elsewhere is left to the people). A push that fails is a warning, never the goal's end.

A goal whose worktree is made fresh on a host while its ledger knows the workspace at a
commit (:attr:`~nexo_trio.core.goal_machine.GoalState.workspace_commit`: it ran elsewhere)
goes on from that commit's files (:func:`resume_point`); so does a goal that comes back to
a host whose worktree of it was left behind (A, then B, then A again): each host remembers
the ledger's commit as it last knew it, and a ledger that moved on since means the goal
ran elsewhere.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Final

import attrs

from nexo_trio.core.checkpoints import checkpoint_prefix, git_env
from nexo_trio.core.goal_machine import GoalState

__all__ = [
    "CLONES_DIR",
    "URL_SCHEMES",
    "PushedRef",
    "clone_name",
    "delete_refspecs",
    "fetch_refspecs",
    "is_git_url",
    "parse_ls_remote",
    "parse_push",
    "push_problem",
    "push_refspecs",
    "redact_userinfo",
    "remote_env",
    "resume_point",
    "without_userinfo",
]

CLONES_DIR: Final = ".repos"
"""The directory of a worker's clones, in its ``workspace_root``."""

URL_SCHEMES: Final = frozenset({"http", "https", "ssh", "git", "file", "git+ssh", "ssh+git"})
"""The schemes of ``scheme://`` repository URLs."""

_SCHEME_URL: Final = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<rest>\S+)")
_SCP_LIKE: Final = re.compile(
    r"(?:[^\s/@:\[\]]+@)?(?:\[[^\s/\[\]]+\]|[^\s/@:\[\]-][^\s/@:\[\]]*):(?P<path>[^:\s]\S*)"
)
"""``[user@]host:path`` (or ``[host:port]:path``) as git reads it: no ``/`` before the first
``:``, a host not starting with ``-``, a path (not ``::``, a remote helper's address)."""
_USERINFO: Final = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)[^/\s]*@")


def is_git_url(repo: str) -> bool:
    """Whether ``repo`` (a goal's ``workspace.repo``) is a repository URL rather than a
    path: ``https://``, ``http://``, ``ssh://``, ``git://``, ``file://`` (also ``git+ssh://``)
    followed by something, or git's scp-like ``[user@]host:path`` (no ``/`` before the
    first ``:``). Anything else (``/abs``, ``../rel``, ``~/x``, ``./a:b``) is a path."""
    if not isinstance(repo, str) or not repo or repo != repo.strip():
        return False
    scheme = _SCHEME_URL.fullmatch(repo)
    if scheme is not None:
        return scheme.group("scheme").lower() in URL_SCHEMES
    if "://" in repo:
        return False
    return _SCP_LIKE.fullmatch(repo) is not None


def without_userinfo(url: str) -> str:
    """``url`` as it may be shown: a ``scheme://user:password@host/…`` URL without its
    ``user:password@`` (an scp-like ``user@host:path`` has no password and stays)."""
    return _USERINFO.sub(lambda m: m.group("scheme"), url, count=1)


def redact_userinfo(text: str) -> str:
    """``text`` (git's message, ours) with the userinfo of every ``scheme://…@`` URL in it
    removed."""
    return _USERINFO.sub(lambda m: m.group("scheme"), text)


def clone_name(url: str) -> str:
    """The directory of a worker's clone of ``url`` in :data:`CLONES_DIR`: the first 16 hex
    digits of the URL's sha256, ``.git``."""
    digest = hashlib.sha256(url.encode("utf-8", "surrogateescape")).hexdigest()
    return f"{digest[:16]}.git"


def remote_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment of a clone, fetch or push: :func:`~nexo_trio.core.checkpoints.git_env`
    (no ``GIT_*`` redirect, no prompt on a terminal) keeping the transport settings of
    ``environ`` (``GIT_SSH_COMMAND``, ``GIT_SSH``, ``GIT_SSH_VARIANT``, ``GIT_ASKPASS``)."""
    env = git_env(environ)
    for name in ("GIT_SSH_COMMAND", "GIT_SSH", "GIT_SSH_VARIANT", "GIT_ASKPASS"):
        value = environ.get(name)
        if value:
            env[name] = value
    return env


def fetch_refspecs(goal_id: str, checked_out: Iterable[str]) -> tuple[str, ...]:
    """What a fetch of the clone moves: the remote's branches onto the clone's branches and
    its tags onto its tags (forced: the remote is what every worker shares), the goal's
    hidden refs onto its hidden refs, and none of ``checked_out`` (the full names of the
    branches checked out in the clone's worktrees, left as this host made them)."""
    prefix = checkpoint_prefix(goal_id)
    kept = sorted({ref for ref in checked_out if ref.startswith("refs/heads/")})
    return (
        "+refs/heads/*:refs/heads/*",
        "+refs/tags/*:refs/tags/*",
        f"+{prefix}*:{prefix}*",
        *(f"^{ref}" for ref in kept),
    )


def parse_ls_remote(output: bytes, prefix: str) -> tuple[str, ...]:
    """The refs below ``prefix`` of ``git ls-remote`` output (``SHA TAB REF`` lines),
    sorted and once each."""
    found = set()
    for raw in output.decode("utf-8", "replace").splitlines():
        _, tab, ref = raw.partition("\t")
        if tab and ref.startswith(prefix) and ref != prefix:
            found.add(ref)
    return tuple(sorted(found))


def delete_refspecs(refs: Iterable[str]) -> tuple[str, ...]:
    """What a push deleting ``refs`` on the remote sends (``:REF`` each)."""
    return tuple(f":{ref}" for ref in refs)


def push_refspecs(
    checkpoints: Sequence[tuple[str, str]], branch: tuple[str, str] | None = None
) -> tuple[str, ...]:
    """What a push after a checkpoint moves: each ``(sha, ref)`` of ``checkpoints`` onto
    that hidden ref (forced: the goal's own), and ``branch`` (``(sha, branch name)``), the
    goal's branch, fast-forward only."""
    specs = [f"+{sha}:{ref}" for sha, ref in checkpoints]
    if branch is not None:
        sha, name = branch
        specs.append(f"{sha}:refs/heads/{name}")
    return tuple(specs)


@attrs.frozen
class PushedRef:
    """One line of ``git push --porcelain``: ``flag`` (``' '`` fast-forward, ``'+'``
    forced, ``'*'`` new, ``'='`` up to date, ``'-'`` deleted, ``'!'`` rejected or failed),
    the remote ``ref`` and git's ``summary`` (the reason of a rejection)."""

    flag: str
    ref: str
    summary: str

    @property
    def ok(self) -> bool:
        """The remote has the ref as pushed."""
        return self.flag != "!"


def parse_push(output: bytes) -> tuple[PushedRef, ...]:
    """The ref lines of ``git push --porcelain`` output (``FLAG TAB FROM:TO TAB SUMMARY``);
    ``To …`` and ``Done`` are not refs."""
    found: list[PushedRef] = []
    for raw in output.decode("utf-8", "replace").splitlines():
        parts = raw.split("\t")
        if len(parts) < 3 or len(parts[0]) != 1:
            continue
        _, _, ref = parts[1].rpartition(":")
        found.append(PushedRef(flag=parts[0], ref=ref, summary="\t".join(parts[2:]).strip()))
    return tuple(found)


def push_problem(wanted: Sequence[str], pushed: Sequence[PushedRef]) -> str | None:
    """What went wrong with the push of the refs ``wanted`` (remote names), in one line:
    each rejected or unreported ref and why; ``None`` when the remote took them all."""
    by_ref = {p.ref: p for p in pushed}
    wrong: list[str] = []
    for ref in wanted:
        done = by_ref.get(ref)
        if done is None:
            wrong.append(f"{ref} (not reported)")
        elif not done.ok:
            wrong.append(f"{ref} ({done.summary or 'rejected'})")
    return None if not wrong else "rejected " + ", ".join(wrong)


def resume_point(state: GoalState, *, fresh: bool, remembered: str | None = None) -> str | None:
    """The commit a goal's worktree is put back to before this run's first turn, when the
    ledger knows the workspace at a commit (its last checkpoint, the end of its last turn,
    or a rollback's target) and the goal ran elsewhere since this host's worktree of it
    was: the worktree was made fresh here (``fresh``), or the ledger's commit is not the one
    this host last knew (``remembered``: the goal went to another host and came back). Else
    ``None``: a worktree this host kept, with the ledger where it left it (or from before
    hosts remembered it), goes on as it is; a goal with no checkpoint starts from its
    branch."""
    commit = state.workspace_commit
    if fresh or (remembered is not None and remembered != commit):
        return commit
    return None
