"""Fork bombs, spotted in the raw command text (before, and independent of, parsing).

A fork bomb is a function that calls itself at least twice through a pipe or in the
background (``:(){ :|:& };:`` and renamed variants, ``function f { f|f& }``), or perl's
``fork while fork``. Quoted and escaped characters are blanked out first: they are data.
"""

from __future__ import annotations

import re

__all__ = ["fork_bomb"]

# The name must start at a token boundary: without the lookbehind the engine would retry
# `[^…]+` from every position of a long token (quadratic on a 100 kB base64 blob).
_FN_NAME = r"(?<![^\s;&|(){}])[^\s(){}|&;<>'\"`$]+"
_FUNC_DEFS = (
    re.compile(rf"(?P<name>{_FN_NAME})\s*\(\s*\)\s*(?:\{{(?P<b1>[^{{}}]*)\}}|\((?P<b2>[^()]*)\))"),
    re.compile(
        rf"\bfunction\s+(?P<name>{_FN_NAME})\s*(?:\(\s*\)\s*)?"
        r"(?:\{(?P<b1>[^{}]*)\}|\((?P<b2>[^()]*)\))"
    ),
)
_PERL_BOMB = re.compile(r"\bfork\s+while\s+fork\b")


def _blank_quoted(text: str) -> str:
    """``text`` with quoted and escaped characters blanked out (they are data)."""
    out = list(text)
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "\\":
            out[i : i + 2] = " " * len(out[i : i + 2])
            i += 2
        elif c in "'\"":
            j = text.find(c, i + 1)
            j = n - 1 if j < 0 else j
            out[i : j + 1] = " " * (j + 1 - i)
            i = j + 1
        else:
            i += 1
    return "".join(out)


def fork_bomb(text: str) -> str | None:
    """A function that calls itself twice through a pipe or in the background
    (``:(){ :|:& };:`` and renamed variants), or perl's ``fork while fork``."""
    if _PERL_BOMB.search(text):
        return "fork bomb: fork while fork"
    blanked = _blank_quoted(text)
    for pattern in _FUNC_DEFS:
        for m in pattern.finditer(blanked):
            name = m.group("name")
            body = m.group("b1") or m.group("b2") or ""
            calls = re.findall(rf"(?<![^\s|&;(){{}}]){re.escape(name)}(?![^\s|&;(){{}}])", body)
            if len(calls) >= 2 and ("|" in body or "&" in body):
                return f"fork bomb: {m.group().strip()}"
    return None
