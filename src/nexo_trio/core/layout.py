"""Where a goal's workspace may be, relative to the state directory: pure path rules.

The state directory holds what a turn must never write: the ledger, the gate's sockets and
each turn's MCP config (a turn that could rewrite the config would choose the permission
server of the next turn). A turn writes its workspace, its scratch directory and
``sandbox.writable``, so none of them may hold the state directory, and none may lie inside it
except below ``workspace_root``, the state directory's one area for workspaces. A goal's
workspace is also never the shared workspace root or above it: each goal has its own.

Every function takes absolute, resolved paths (symlinks followed) and returns what is wrong,
in one line, or ``None``.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import PurePath
from typing import Final

STATE_DIR_ENTRIES: Final = frozenset({"nexo.db", "run", "gate", "scratch", "streams", "locks"})
"""The state directory's own entries (and ``nexo.db-wal``, ``nexo.db-shm``), which no
workspace root may be or be inside."""


def _within(path: PurePath, area: PurePath) -> bool:
    return path == area or area in path.parents


def _own_entry(path: PurePath, state_dir: PurePath) -> bool:
    """Whether ``path`` is (inside) one of the state directory's own entries."""
    first = path.relative_to(state_dir).parts[:1]
    return bool(first) and (first[0] in STATE_DIR_ENTRIES or first[0].startswith("nexo.db"))


def layout_problem(
    *, state_dir: PurePath, workspace_root: PurePath, writable: Iterable[PurePath] = ()
) -> str | None:
    """What is wrong with where the state dir, the workspace root and ``sandbox.writable``
    are relative to each other (``None``: nothing)."""
    if state_dir == workspace_root:
        return (
            f"the state dir {state_dir} is also workspace_root: a goal's workspace would be "
            "one of its entries; give workspaces their own directory"
        )
    if _within(workspace_root, state_dir) and _own_entry(workspace_root, state_dir):
        return (
            f"workspace_root {workspace_root} is one of the state dir's own entries "
            f"({', '.join(sorted(STATE_DIR_ENTRIES))}): choose another directory"
        )
    for path in writable:
        problem = _writable_problem(path, state_dir, workspace_root)
        if problem is not None:
            return f"sandbox.writable: {problem}"
    return None


def _writable_problem(path: PurePath, state_dir: PurePath, workspace_root: PurePath) -> str | None:
    if _within(state_dir, path):
        return f"{path} holds the state dir {state_dir}: turns could write it"
    if _within(path, state_dir) and not _within(path, workspace_root):
        return f"{path} is inside the state dir {state_dir}: turns could write it"
    return None


def workspace_problem(
    workspace: PurePath, *, state_dir: PurePath, workspace_root: PurePath
) -> str | None:
    """What is wrong with a goal's workspace, given where the state dir and the shared
    workspace root are (``None``: nothing)."""
    if _within(state_dir, workspace):
        where = "is" if workspace == state_dir else "holds"
        return (
            f"the workspace {workspace} {where} the state dir {state_dir}: turns could write "
            "it (put the state dir elsewhere: --state-dir, or state_dir in the config)"
        )
    if _within(workspace_root, workspace):
        where = "is" if workspace == workspace_root else "holds"
        return (
            f"the workspace {workspace} {where} the workspace root {workspace_root}, "
            "shared by every goal: give the goal its own"
        )
    if _within(workspace, state_dir) and not _within(workspace, workspace_root):
        return (
            f"the workspace {workspace} is inside the state dir {state_dir} "
            f"(only below workspace_root {workspace_root} is for workspaces)"
        )
    return None
