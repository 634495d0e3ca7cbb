"""The verdicts of the judges: what a command does, as an :class:`EffectVerdict`.

An effect is one of :data:`EFFECTS`, mildest first (``read`` < ``workspace`` < ``unknown`` <
``destructive``); a compound command gets the worst of its parts (:func:`worse`, the first
part with the worst effect naming the reason). :func:`read`, :func:`workspace`,
:func:`unknown` and :func:`destructive` make a verdict of their effect, with the short stable
name of the rule that decided; :func:`clip` and :func:`cmdline` show what it decided on.

The judges that run commands of their own (``sh -c``, ``eval``, ``find -exec``…) are handed
the walk of :mod:`~nexo_trio.core.judges` as a :data:`TextJudge` or a :data:`WordsJudge`, so
that no judge imports the walk.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, TypeAlias, TypeGuard, overload

import attrs

from nexo_trio.core.invocation import Arg, Cmd, Ctx

__all__ = [
    "EFFECTS",
    "Effect",
    "EffectVerdict",
    "TextJudge",
    "WordsJudge",
    "clip",
    "cmdline",
    "destructive",
    "is_destructive",
    "read",
    "unknown",
    "workspace",
    "worse",
]

Effect: TypeAlias = Literal["read", "workspace", "unknown", "destructive"]
EFFECTS: tuple[Effect, ...] = ("read", "workspace", "unknown", "destructive")
"""The effects, mildest first."""
_RANK: dict[Effect, int] = {effect: rank for rank, effect in enumerate(EFFECTS)}


@attrs.frozen
class EffectVerdict:
    """What a tool call does: its ``effect``; ``reason``, a sentence Claude can act on;
    ``rule``, the short stable name of the rule that decided; ``subject``, the command or
    path it decided on."""

    effect: Effect
    reason: str
    rule: str
    subject: str


@overload
def worse(a: EffectVerdict | None, b: EffectVerdict) -> EffectVerdict: ...
@overload
def worse(a: EffectVerdict, b: EffectVerdict | None) -> EffectVerdict: ...
@overload
def worse(a: EffectVerdict | None, b: EffectVerdict | None) -> EffectVerdict | None: ...
def worse(a: EffectVerdict | None, b: EffectVerdict | None) -> EffectVerdict | None:
    """The worse of two verdicts (``None``: nothing happened); the first one on a tie."""
    if a is None:
        return b
    if b is None or _RANK[b.effect] <= _RANK[a.effect]:
        return a
    return b


def read(rule: str, reason: str, subject: str) -> EffectVerdict:
    return EffectVerdict("read", reason, rule, subject)


def workspace(rule: str, reason: str, subject: str) -> EffectVerdict:
    return EffectVerdict("workspace", reason, rule, subject)


def unknown(rule: str, reason: str, subject: str) -> EffectVerdict:
    return EffectVerdict("unknown", reason, rule, subject)


def destructive(rule: str, reason: str, subject: str) -> EffectVerdict:
    return EffectVerdict("destructive", reason, rule, subject)


def is_destructive(v: EffectVerdict | None) -> TypeGuard[EffectVerdict]:
    return v is not None and v.effect == "destructive"


def clip(text: str, limit: int = 120) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def cmdline(cmd: Cmd, limit: int = 120) -> str:
    return clip(" ".join([cmd.head.shown, *(a.shown for a in cmd.args)]), limit)


# --- the walk, as the judges that run commands of their own see it ----------------------------

TextJudge: TypeAlias = Callable[[str, Ctx], EffectVerdict | None]
"""The walk's judge of command text run in a context (``sh -c``'s string, ``eval``'s words, a
trap's handler); ``None``: the text runs nothing."""
WordsJudge: TypeAlias = Callable[[list[Arg], Ctx], EffectVerdict | None]
"""The walk's judge of a command given as its resolved words (what ``find -exec`` runs);
``None``: it runs nothing."""
