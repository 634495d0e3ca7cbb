"""Fork bombs, spotted in the raw command text (before, and independent of, parsing).

A fork bomb is a function that calls itself at least twice through a pipe or in the
background (``:(){ :|:& };:``, renamed variants, ``function f { f|f& }``, bodies nested in
further braces or parentheses: ``:(){ { :|:& }; };:``), or perl's ``fork while fork``. Quoted
and escaped characters are blanked out first: they are data. The brackets are matched once
for the whole text; bodies nested in bodies are searched once per enclosing definition, up
to a budget past which the text is reported (fails closed).
"""

from __future__ import annotations

import re

__all__ = ["fork_bomb"]

# The name must start at a token boundary: without the lookbehind the engine would retry
# `[^…]+` from every position of a long token (quadratic on a 100 kB base64 blob).
_FN_NAME = r"(?<![^\s;&|(){}])[^\s(){}|&;<>'\"`$]+"
_FUNC_HEADS = (
    re.compile(rf"(?P<name>{_FN_NAME})\s*\(\s*\)\s*(?P<open>[{{(])"),
    re.compile(rf"\bfunction\s+(?P<name>{_FN_NAME})\s*(?:\(\s*\)\s*)?(?P<open>[{{(])"),
)
_PERL_BOMB = re.compile(r"\bfork\s+while\s+fork\b")
_PAIRS = {"{": "}", "(": ")"}
_SCAN_BUDGET = 2_000_000
"""Characters of function bodies searched at most (nested bodies are searched once per
enclosing definition); past it the text is reported, failing closed."""


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


def _closers(text: str) -> dict[int, int]:
    """For each ``{``/``(`` the index of the bracket closing it (unbalanced: the end)."""
    found: dict[int, int] = {}
    stack: list[int] = []
    for i, c in enumerate(text):
        if c in _PAIRS:
            stack.append(i)
        elif c in "})":
            # Pop to the nearest opener of the same kind (a stray closer of the other kind
            # is skipped over, like the shell's own error recovery would not bother to).
            for k in range(len(stack) - 1, -1, -1):
                if _PAIRS[text[stack[k]]] == c:
                    found[stack[k]] = i
                    del stack[k:]
                    break
    for i in stack:
        found[i] = len(text)
    return found


def fork_bomb(text: str) -> str | None:
    """A function that calls itself twice through a pipe or in the background
    (``:(){ :|:& };:`` and renamed or nested variants), or perl's ``fork while fork``."""
    if _PERL_BOMB.search(text):
        return "fork bomb: fork while fork"
    blanked = _blank_quoted(text)
    if "(" not in blanked and "{" not in blanked:
        return None
    closers: dict[int, int] | None = None
    scanned = 0
    for pattern in _FUNC_HEADS:
        for m in pattern.finditer(blanked):
            if closers is None:
                closers = _closers(blanked)
            start = m.start("open")
            body = blanked[start + 1 : closers.get(start, len(blanked))]
            scanned += len(body)
            if scanned > _SCAN_BUDGET:
                return "fork bomb check: function definitions nested too deeply to check"
            name = m.group("name")
            calls = re.findall(rf"(?<![^\s|&;(){{}}]){re.escape(name)}(?![^\s|&;(){{}}])", body)
            if len(calls) >= 2 and ("|" in body or "&" in body):
                shown = text[m.start() : min(len(text), start + 2 + len(body))].strip()
                return f"fork bomb: {shown}"
    return None
