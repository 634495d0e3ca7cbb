"""The effect classifier's I/O side: paths resolved on the real file system.

:func:`nexo_trio.core.effects.classify_call` is pure; it judges every path through a
resolver. :class:`RealPathResolver` is the one that looks at the file system:
:func:`os.path.realpath` (symlinks followed, ``..`` taken after them, as the kernel does),
a bounded number of paths per call (past the bound it raises, and the classifier takes the
place as unknown), and a refusal to resolve a regular file that has more than one hard link
(a write to it would change the other names too, which may be outside the workspace).
:func:`classify_on_disk` makes the scope real and classifies with a fresh resolver; it
blocks on the file system, so the gate runs it in a worker thread.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from typing import Any

from nexo_trio.core.effects import EffectVerdict, Scope, classify_call

__all__ = [
    "DEFAULT_MAX_PATHS",
    "MultiplyLinked",
    "RealPathResolver",
    "TooManyPaths",
    "classify_on_disk",
    "real_scope",
]

DEFAULT_MAX_PATHS = 256
"""Paths resolved at most for one tool call."""


class TooManyPaths(Exception):
    """The call names more paths than the resolver resolves."""


class MultiplyLinked(Exception):
    """A regular file with more than one hard link: where a write lands is not one place."""


class RealPathResolver:
    """Resolves paths on the file system, at most ``max_paths`` distinct ones (cached)."""

    def __init__(self, max_paths: int = DEFAULT_MAX_PATHS) -> None:
        self.max_paths = max_paths
        self._seen: dict[str, str] = {}

    def __call__(self, path: str) -> str:
        found = self._seen.get(path)
        if found is not None:
            return found
        if len(self._seen) >= self.max_paths:
            raise TooManyPaths(f"more than {self.max_paths} paths to resolve")
        real = os.path.realpath(path)
        try:
            info = os.lstat(real)
        except OSError:
            pass  # not there (yet): the path is what it says
        else:
            if stat.S_ISREG(info.st_mode) and info.st_nlink > 1:
                raise MultiplyLinked(f"{real} has {info.st_nlink} hard links")
        self._seen[path] = real
        return real


def _real(path: str | None) -> str | None:
    return os.path.realpath(path) if path else None


def real_scope(
    workspace: str | None, scratch: str | None = None, writable: Sequence[str] = ()
) -> Scope:
    """A scope with real absolute paths (relative ones are taken from the current
    directory, as the orchestrator gives them)."""
    return Scope(_real(workspace), _real(scratch), tuple(os.path.realpath(w) for w in writable))


def classify_on_disk(
    tool_name: str,
    tool_input: dict[str, Any],
    *,
    workspace: str | None,
    scratch: str | None = None,
    writable: Sequence[str] = (),
    max_paths: int = DEFAULT_MAX_PATHS,
) -> EffectVerdict:
    """:func:`~nexo_trio.core.effects.classify_call` against the real file system (blocks:
    run it in a thread)."""
    scope = real_scope(workspace, scratch, writable)
    return classify_call(tool_name, tool_input, scope, RealPathResolver(max_paths))
