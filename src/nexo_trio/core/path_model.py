"""The path model of the rules: where a path lands, judged purely, never on disk.

A path becomes normalised components (:func:`components`) taken from a current directory
(the rules keep a virtual one, see :mod:`~nexo_trio.core.invocation`); ``..`` is normalised
like :func:`posixpath.normpath`; ``~`` and ``~user`` count as outside the workspace (the home
directory is unknown, and is never the workspace). Places whose real path is unknown are
virtual anchors: the home directory (:data:`HOME`), an unknown current directory
(:data:`CWD`) and somewhere above one (climbing out of an anchor with ``..``).
:func:`classify` says what a path is relative to the workspace (its :data:`Kind`). With no
workspace (``None``) every absolute path counts as outside, and relative paths are judged
against an unknown current directory (climbing out of it with ``..`` counts as outside).

Scratch directories: paths strictly below ``/tmp``, ``/var/tmp`` or ``/dev/shm`` may be
written, truncated and deleted (``rm -rf /tmp/build-1``): nothing a user keeps lives there and
commands, test runs and build tools use them all the time. The scratch roots themselves and
their whole contents (``rm -rf /tmp``, ``rm -rf /tmp/*``) are still outside: other programs'
files live there (possibly the orchestrator's own sockets).

Known limit: symlinks cannot be resolved purely: ``rm -rf ./link`` where ``link`` points at
``/`` is not caught, nor is a workspace that is itself reached through a symlink spelled
differently.
"""

from __future__ import annotations

from typing import Literal, TypeAlias

__all__ = [
    "CWD",
    "FLAGGED_OUTSIDE",
    "HOME",
    "Comps",
    "Kind",
    "classify",
    "components",
    "hint",
    "in_scratch",
    "path_escapes",
    "show_pwd",
]

# Virtual anchors for places whose real path is unknown. They contain NUL, which no real path
# component can, so they never collide with one.
HOME = "\x00home"  # the home directory (~, $HOME)
CWD = "\x00cwd"  # an unknown current directory (no workspace, or after `cd "$X"`)
_ABOVE = "\x00above"  # somewhere above an unknown directory (`..` out of an anchor)
_ANCHOR_SHOWN = {HOME: "~", CWD: ".", _ABOVE: ".."}

_SCRATCH_ROOTS: tuple[tuple[str, ...], ...] = (("tmp",), ("var", "tmp"), ("dev", "shm"))
# Devices that are fine to write to (pseudo-devices; /dev/fd/N and /dev/pts/N too).
_SAFE_DEVICES = frozenset(
    {"null", "stdout", "stderr", "stdin", "tty", "zero", "full", "random", "urandom"}
)

Comps: TypeAlias = tuple[str, ...]
Kind: TypeAlias = Literal[
    "root",  # / itself (or all of it: /*)
    "workspace",  # the workspace itself (or all of it)
    "inside",  # strictly inside the workspace
    "scratch",  # strictly inside /tmp, /var/tmp, /dev/shm
    "outside",  # any other real absolute path
    "home",  # ~ or below
    "cwd",  # an unknown current directory itself (or all of it)
    "below_cwd",  # strictly below an unknown current directory
    "escaped",  # above an unknown directory (climbed out with ..)
    "device",  # /dev/… other than the pseudo-devices
    "safe_device",  # /dev/null and friends
]
FLAGGED_OUTSIDE: frozenset[Kind] = frozenset(
    {"root", "outside", "home", "escaped", "device", "safe_device"}
)


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


def _all_wildcard(comp: str) -> bool:
    """``*``, ``.*``, ``*.*``, ``.??*``…: a glob matching (nearly) everything in a directory."""
    return "*" in comp and not comp.strip("*?.")


def classify(comps: Comps, ws: Comps | None) -> tuple[Kind, Comps]:
    """What ``comps`` is, relative to the workspace; a trailing all-wildcard counts as its
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
    if ws is not None and comps[: len(ws)] == ws:
        return ("workspace" if comps == ws else "inside"), comps
    for root in _SCRATCH_ROOTS:
        if comps[: len(root)] == root:
            deeper = len(comps) > len(root) and not _all_wildcard(comps[len(root)])
            return ("scratch" if deeper else "outside"), comps
    if head == "dev":
        safe = (len(comps) == 2 and comps[1] in _SAFE_DEVICES) or (
            len(comps) > 2 and comps[1] in ("fd", "pts")
        )
        return ("safe_device" if safe else "device"), comps
    return "outside", comps


def _show(comps: Comps) -> str:
    """A path for humans; anchors shown as ``~``, ``.`` and ``..``."""
    if comps and comps[0] in _ANCHOR_SHOWN:
        return "/".join((_ANCHOR_SHOWN[comps[0]], *comps[1:]))
    return "/" + "/".join(comps)


def in_scratch(path: str, workspace: str) -> bool:
    """Whether a file tool's path lands strictly inside a scratch directory."""
    kind, _ = classify(components(path, components(workspace, ())), None)
    return kind == "scratch"


def path_escapes(path: str, workspace: str) -> bool:
    """Whether ``path`` (absolute, or relative to ``workspace``) lands outside ``workspace``.

    Judged purely, like :func:`posixpath.normpath` on the joined path: ``..`` is folded,
    ``~`` and ``~user`` count as outside, symlinks are not (cannot be) resolved. The
    workspace itself does not escape. A non-absolute workspace is taken from ``/``.
    """
    ws = components(workspace, ())
    return components(path, ws)[: len(ws)] != ws


def show_pwd(cwd: Comps) -> str:
    """``$PWD`` as a path string that :func:`components` turns back into ``cwd``."""
    return "/" + "/".join(cwd)


def hint(shown: str, comps: Comps) -> str:
    """`` (= /resolved/path)`` when the path as written differs from where it lands."""
    resolved = _show(comps)
    return "" if (shown.rstrip("/") or "/") == resolved else f" (= {resolved})"
