"""Command substitutions: the command texts the shell runs while it expands a word.

``$( )`` and backticks, and those nested in arithmetic and in ``${…}`` operators
(``${x:-$(cmd)}``) run before the command they are in (:func:`commands_in`); the judges
analyse them as commands. :data:`MAX_DEPTH` is how deep commands and expansions nest before
the judges give up (failing closed).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from nexo_trio.core.shell_syntax import dq_parts

__all__ = ["MAX_DEPTH", "commands_in"]

MAX_DEPTH = 16


def commands_in(parts: Iterable[tuple[str, str]], depth: int = 0) -> Iterator[str]:
    """The command texts substituted into word parts: ``$( )``/backticks, and those nested
    in arithmetic and in ``${…}`` operators (``${x:-$(cmd)}``), which the shell runs too."""
    for kind, text in parts:
        if kind == "sub":
            yield text
        elif kind in ("arith", "var") and ("$" in text or "`" in text) and depth < MAX_DEPTH:
            inner, _ = dq_parts(text, 0, closing=False)
            yield from commands_in(inner, depth + 1)
