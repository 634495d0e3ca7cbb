"""Where a target lands: the effect of a command acting on a path (:func:`path_effect`).

Every path a command writes, deletes, moves away or changes the permissions of (its
:data:`Mode`) is placed with :mod:`~nexo_trio.core.path_model` (symlinks resolved by the
resolver given) and judged:

* ``read``: a write to ``/dev/null`` and its friends;
* ``workspace``: the target lands inside the workspace, the scratch directory or a writable
  directory;
* ``destructive`` (with the rule that fired): deleting ``/``, ``~``, the workspace itself or
  all of it (``rm -rf .``/``*``, also a plain ``rm *``), a recursive delete of a path that
  cannot be resolved; deleting or moving a ``.git`` directory or what is in it (a stale
  ``*.lock`` aside), or a pattern matching it (``rm -rf .[!.]*``); any write, delete, move
  away, truncation or permission change aimed outside the workspace, scratch and writable
  directories (:data:`OUTSIDE_KINDS`) or at a device;
* ``unknown``: a target that cannot be resolved statically, one in a directory the rules
  cannot place, one the resolver cannot resolve, one an earlier part of the command may have
  made a link, and writes into a ``.git`` directory (git would run what is planted there).

Hard links cannot be told from files by path; the resolver on the file system refuses to
resolve a multiply linked file (see :mod:`nexo_trio.gate.resolve`).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from typing import Literal, TypeAlias

from nexo_trio.core.invocation import Arg, Cmd, Ctx
from nexo_trio.core.path_model import HOME, Comps, Kind, hint, locate
from nexo_trio.core.verdicts import (
    EffectVerdict,
    cmdline,
    destructive,
    is_destructive,
    read,
    unknown,
    workspace,
    worse,
)

__all__ = ["OUTSIDE_KINDS", "Mode", "path_effect", "targets_effect"]

Mode: TypeAlias = Literal["write", "perm", "delete", "recursive", "prune", "take"]
"""``write``: created or changed (a link is followed); ``perm``: its permissions or owner
changed; ``delete``/``recursive``: removed (alone, or with all below it); ``prune``: some of
what is below it removed (``find -delete``); ``take``: moved away (``mv``'s sources)."""
OUTSIDE_KINDS: frozenset[Kind] = frozenset({"root", "outside", "home", "escaped"})
"""The kinds of place outside the workspace, scratch and writable directories (devices
aside)."""


def path_effect(
    ctx: Ctx, cwd: Comps, target: Arg, what: str, mode: Mode, *, follow: bool | None = None
) -> EffectVerdict:
    """The effect of ``what`` acting on ``target`` taken from ``cwd`` (see :data:`Mode`);
    ``follow``: whether a link at the end is followed (by default: for writes)."""
    shown = target.shown
    value = target.value
    if value is None:
        if mode == "recursive":
            return destructive(
                "rm-unresolvable",
                f"{what} of a path the rules cannot resolve statically: {shown}",
                shown,
            )
        return unknown(
            "unresolvable-target",
            f"{what} acts on a path that cannot be resolved statically: {shown}",
            shown,
        )
    if follow is None:
        follow = mode in ("write", "perm", "prune")
    follow = follow or value.endswith(("/", "/."))
    place = locate(value, cwd, ctx.world, follow=follow, pattern=target.pattern)
    kind, comps = place.kind, place.comps
    at = f"{shown}{hint(shown, comps)}"
    found = _place_verdict(kind, comps, what, mode, at)
    if found is not None:
        return found
    history = _git_history(comps, mode, pattern=target.pattern)
    if history is not None:
        return destructive("rm-git-history", f"{what} {history}: {at}", shown)
    if kind in ("cwd", "below_cwd"):
        return unknown(
            "unknown-directory",
            f"{what} acts on a path in a directory the rules cannot place: {at}",
            shown,
        )
    if place.unresolved is not None:
        return unknown("unresolvable-path", f"{what}: {place.unresolved}: {shown}", shown)
    if any(comps[: len(c)] == c for c in ctx.changed):
        return unknown(
            "changed-path",
            f"{what} acts on {at}, which an earlier part of the command may have made a link",
            shown,
        )
    if mode in ("write", "perm") and ".git" in comps:
        return unknown(
            "write-git-control",
            f"{what} writes into a .git directory, which can make git run programs: {at}",
            shown,
        )
    area = "workspace" if kind in ("workspace", "inside") else "scratch"
    writes = mode in ("write", "perm")
    verb = "writes" if writes else "moves" if mode == "take" else "deletes"
    return workspace(
        f"{'write' if writes else 'delete'}-inside-{area}",
        f"{what} {verb} only inside the {area if area == 'workspace' else 'scratch directory'}:"
        f" {at}",
        shown,
    )


def targets_effect(
    cmd: Cmd, ctx: Ctx, targets: Iterable[Arg], what: str, mode: Mode
) -> EffectVerdict:
    """The worst of ``targets`` (none: the command only reads)."""
    verdict: EffectVerdict | None = None
    for t in targets:
        verdict = worse(verdict, path_effect(ctx, cmd.cwd, t, what, mode))
        if is_destructive(verdict):
            break
    return verdict or read("read-only-command", f"{what} changes nothing here", cmdline(cmd))


def _git_history(comps: Comps, mode: Mode, *, pattern: bool) -> str | None:
    """Deleting or moving a ``.git`` directory, or what is inside it (but a stale ``*.lock``
    file), or a pattern that matches ``.git`` (``rm -rf .[!.]*``), loses the history."""
    if mode in ("write", "perm") or not comps:
        return None
    if ".git" in comps[:-1] or comps[-1] == ".git":
        if mode == "delete" and comps[-1].endswith(".lock") and comps[-1] != ".git":
            return None
        return "of a git repository's history"
    last = comps[-1]
    if pattern and mode != "take" and last.startswith(".") and fnmatch.fnmatchcase(".git", last):
        return "of a pattern that matches a git repository's history"
    return None


_RM_WHAT: dict[Kind, tuple[str, str]] = {
    "root": ("rm-root", "of the root directory"),
    "workspace": ("rm-workspace", "of the whole workspace"),
    "cwd": ("rm-workspace", "of the whole current directory"),
    "outside": ("rm-outside-workspace", "outside the workspace"),
    "home": ("rm-outside-workspace", "outside the workspace"),
    "device": ("rm-outside-workspace", "outside the workspace"),
    "safe_device": ("rm-outside-workspace", "outside the workspace"),
    "escaped": ("rm-outside-workspace", "outside the current directory"),
}


def _place_verdict(
    kind: Kind, comps: Comps, what: str, mode: Mode, at: str
) -> EffectVerdict | None:
    """The destructive (or harmless device) verdicts of a place; ``None``: judge further."""
    subject = at
    if mode == "write":
        if kind == "safe_device":
            return read("safe-device", f"{what} writes only to a pseudo-device: {at}", subject)
        if kind == "device":
            return destructive("write-device", f"{what} writes to a device: {at}", subject)
        if kind in OUTSIDE_KINDS:
            return destructive(
                "write-outside-workspace", f"{what} writes outside the workspace: {at}", subject
            )
        return None
    if mode == "perm":
        if kind in OUTSIDE_KINDS or kind in ("device", "safe_device"):
            where = "of the root directory" if kind == "root" else "outside the workspace"
            return destructive("perm-outside-workspace", f"{what} {where}: {at}", subject)
        return None
    if mode in ("take", "prune"):
        if kind in OUTSIDE_KINDS or kind in ("device", "safe_device"):
            where = "takes away a path" if mode == "take" else "deletes"
            return destructive(
                "move-from-outside" if mode == "take" else "find-delete-outside",
                f"{what} {where} outside the workspace: {at}",
                subject,
            )
        return None
    found = _RM_WHAT.get(kind)
    if kind == "home" and comps == (HOME,):
        found = ("rm-home", "of the home directory")
    if found is None:
        return None
    return destructive(found[0], f"{what} {found[1]}: {at}", subject)
