"""The path model of the effect classifier: where a path lands, relative to a goal's scope.

A :class:`Scope` names the places a goal may write: its workspace, its scratch directory and
any extra writable directories, as real absolute paths (a relative one is ignored: nothing
is known of it). There is no global scratch place: ``/tmp`` is as outside as ``/etc``.

A path becomes normalised components (:func:`components`) taken from a current directory
(the judges keep a virtual one, see :mod:`~nexo_trio.core.invocation`); ``..`` is normalised
like :func:`posixpath.normpath`; ``~`` and ``~user`` are the home directory, a place whose
real path is unknown and which is never the workspace. Places whose real path is unknown are
virtual anchors: the home directory (:data:`HOME`), an unknown current directory
(:data:`CWD`) and somewhere above one (climbing out of an anchor with ``..``).
:func:`classify` says what a path is relative to the scope (its :data:`Kind`). With no
workspace every absolute path outside the scratch and writable directories counts as
outside, and relative paths are judged against an unknown current directory.

Symlinks: :func:`locate` hands every real (not anchored) path it judges to a
:data:`PathResolver`, the virtual current directory joined with the path as written (``..``
not folded, so a resolver on the file system resolves it as the kernel would), and judges
the answer. A path that is deleted or moved (not followed) has only its parent resolved: a
link is removed, not what it points at. The pure default resolver is the identity (no links
are known). A resolver that fails, and a pattern (``*``, ``?``, ``[``) in a part of the path
a resolver would have to follow, leave the real place unknown (:attr:`Place.unresolved`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Literal, TypeAlias

import attrs

__all__ = [
    "CWD",
    "HOME",
    "Comps",
    "Kind",
    "PathResolver",
    "Place",
    "Scope",
    "World",
    "anchored",
    "classify",
    "components",
    "hint",
    "locate",
    "show",
    "show_pwd",
]

# Virtual anchors for places whose real path is unknown. They contain NUL, which no real path
# component can, so they never collide with one.
HOME = "\x00home"  # the home directory (~, $HOME)
CWD = "\x00cwd"  # an unknown current directory (no workspace, or after `cd "$X"`)
_ABOVE = "\x00above"  # somewhere above an unknown directory (`..` out of an anchor)
_ANCHOR_SHOWN = {HOME: "~", CWD: ".", _ABOVE: ".."}

# Devices that are fine to write to (pseudo-devices; /dev/fd/N and /dev/pts/N too).
_SAFE_DEVICES = frozenset(
    {"null", "stdout", "stderr", "stdin", "tty", "zero", "full", "random", "urandom"}
)
_GLOB_CHARS = frozenset("*?[")

Comps: TypeAlias = tuple[str, ...]
PathResolver: TypeAlias = Callable[[str], str]
"""Maps an absolute path (``..`` not folded) to its real path, symlinks followed."""
Kind: TypeAlias = Literal[
    "root",  # / itself (or all of it: /*)
    "workspace",  # the workspace itself (or all of it)
    "inside",  # strictly inside the workspace
    "area",  # a scratch or writable directory itself (or all of it)
    "scratch",  # strictly inside a scratch or writable directory
    "outside",  # any other real absolute path
    "home",  # ~ or below
    "cwd",  # an unknown current directory itself (or all of it)
    "below_cwd",  # strictly below an unknown current directory
    "escaped",  # above an unknown directory (climbed out with ..)
    "device",  # /dev/… other than the pseudo-devices
    "safe_device",  # /dev/null and friends
]


def components(path: str, cwd: Comps) -> Comps:
    """Normalised path components of ``path`` taken from ``cwd`` (``()`` is ``/``).

    ``~``/``~user`` start at the home anchor; ``..`` out of an anchor lands above it.
    """
    if path.startswith("~"):
        _, _, path = path.partition("/")
        stack = [HOME]
    elif path.startswith("/"):
        stack = []
    else:
        stack = list(cwd)
    for comp in path.split("/"):
        if comp in ("", "."):
            continue
        if comp != "..":
            stack.append(comp)
        elif not stack or stack == [_ABOVE]:
            continue  # /.. is /; above an unknown directory stays unknown
        elif len(stack) == 1 and stack[0] in (HOME, CWD):
            stack = [_ABOVE]
        else:
            stack.pop()
    return tuple(stack)


def anchored(comps: Comps) -> bool:
    """Whether ``comps`` starts at a virtual anchor (its real path is unknown)."""
    return bool(comps) and comps[0] in _ANCHOR_SHOWN


def _real(path: str | None) -> Comps | None:
    return components(path, ()) if path and path.startswith("/") else None


def _str_tuple(paths: Iterable[str]) -> tuple[str, ...]:
    return tuple(paths)


@attrs.frozen
class Scope:
    """Where a goal may write: its workspace, its scratch directory (its turns' ``TMPDIR``)
    and extra writable directories, as real absolute paths. ``workspace`` ``None``: none is
    known (relative paths then land in an unknown directory)."""

    workspace: str | None
    scratch: str | None = None
    writable: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple)


@attrs.frozen
class World:
    """A scope as path components, with the resolver the judges use."""

    workspace: Comps | None
    areas: tuple[Comps, ...]
    scratch: Comps | None = None
    resolve: PathResolver | None = None

    @classmethod
    def of(cls, scope: Scope, resolve: PathResolver | None = None) -> World:
        scratch = _real(scope.scratch)
        areas = tuple(a for a in (scratch, *map(_real, scope.writable)) if a is not None)
        return cls(_real(scope.workspace), areas, scratch, resolve)


def _all_wildcard(comp: str) -> bool:
    """``*``, ``.*``, ``*.*``, ``.??*``…: a glob matching (nearly) everything in a directory."""
    return "*" in comp and not comp.strip("*?.")


def classify(comps: Comps, world: World) -> tuple[Kind, Comps]:
    """What ``comps`` is, relative to the scope; a trailing all-wildcard counts as its
    directory (``/*`` is the root). Returns the kind and the components judged."""
    while comps and _all_wildcard(comps[-1]):
        comps = comps[:-1]
    if not comps:
        return "root", comps
    head = comps[0]
    if head == HOME:
        return "home", comps
    if head == _ABOVE:
        return "escaped", comps
    if head == CWD:
        return ("cwd" if len(comps) == 1 else "below_cwd"), comps
    ws = world.workspace
    if ws is not None and comps[: len(ws)] == ws:
        return ("workspace" if comps == ws else "inside"), comps
    for area in world.areas:
        if comps[: len(area)] == area:
            return ("area" if comps == area else "scratch"), comps
    if head == "dev":
        safe = (len(comps) == 2 and comps[1] in _SAFE_DEVICES) or (
            len(comps) > 2 and comps[1] in ("fd", "pts")
        )
        return ("safe_device" if safe else "device"), comps
    return "outside", comps


@attrs.frozen
class Place:
    """Where a path lands: its kind and the components judged (the real path when it was
    resolved); ``unresolved`` says why the real place is unknown (the kind is then the
    lexical one)."""

    kind: Kind
    comps: Comps
    unresolved: str | None = None


def locate(
    value: str, cwd: Comps, world: World, *, follow: bool = True, pattern: bool = False
) -> Place:
    """Where ``value`` (taken from ``cwd``) lands. ``follow``: the last part is followed if
    it is a link (writes); else only its parent is resolved (deletes, moves). ``pattern``:
    the word holds unquoted glob characters (which only the shell can expand)."""
    lexical = components(value, cwd)
    resolve = world.resolve
    if resolve is None or anchored(lexical) or value.startswith("~") or anchored(cwd):
        kind, comps = classify(lexical, world)
        return Place(kind, comps)
    raw = value if value.startswith("/") else show_pwd(cwd) + "/" + value
    parent, _, base = raw.rpartition("/")
    keep_last = not follow and base not in ("", ".", "..")
    followed = parent if keep_last else raw
    why: str | None = None
    if pattern and any(c in _GLOB_CHARS for c in followed):
        why = "a pattern in the path cannot be resolved statically"
    else:
        try:
            real = resolve(followed or "/")
        except Exception as exc:  # any failure of the resolver: the place is unknown
            why = f"the path could not be resolved ({type(exc).__name__})"
        else:
            judged = _real(real)
            if judged is None:
                why = "the resolver gave no absolute path"
            else:
                kind, comps = classify(judged + ((base,) if keep_last else ()), world)
                return Place(kind, comps)
    kind, comps = classify(lexical, world)
    return Place(kind, comps, why)


def show(comps: Comps) -> str:
    """A path for humans; anchors shown as ``~``, ``.`` and ``..``."""
    if comps and comps[0] in _ANCHOR_SHOWN:
        return "/".join((_ANCHOR_SHOWN[comps[0]], *comps[1:]))
    return "/" + "/".join(comps)


def show_pwd(cwd: Comps) -> str:
    """``$PWD`` as a path string that :func:`components` turns back into ``cwd``."""
    return "/" + "/".join(cwd)


def hint(shown: str, comps: Comps) -> str:
    """`` (= /resolved/path)`` when the path as written differs from where it lands."""
    resolved = show(comps)
    return "" if (shown.rstrip("/") or "/") == resolved else f" (= {resolved})"
