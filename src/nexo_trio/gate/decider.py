"""What a decider is: the :class:`Decider` protocol, :func:`close_decider`, and
:func:`decision_problem` (what is wrong with a value a decider returned).

The base the deciders build on, importing nothing of the gate: the built-ins and their
composition (:mod:`nexo_trio.gate.deciders`) and the LLM decider (:mod:`nexo_trio.gate.llm`)
both import it, so the dependency points one way (deciders -> llm -> decider).
"""

from __future__ import annotations

from typing import Protocol

from nexo_trio.core.permission import Decision, DecisionOutcome, PermissionRequest

__all__ = ["Decider", "close_decider", "decision_problem"]


class Decider(Protocol):
    """Anything that decides permission requests."""

    async def decide(self, request: PermissionRequest) -> Decision:
        """Decide one request."""
        ...


async def close_decider(decider: object) -> None:
    """Release what a decider holds (the LLM decider's HTTP connections): calls its
    ``aclose()`` if it has one. The composites of :mod:`nexo_trio.gate.deciders` close the
    deciders they wrap."""
    close = getattr(decider, "aclose", None)
    if close is not None:
        await close()


_TEXT_FIELDS = ("message", "rationale", "scope", "effect", "rule", "subject")


def decision_problem(value: object) -> str | None:
    """What makes ``value`` unusable as a decision (``None``: nothing): not a
    :class:`~nexo_trio.core.permission.Decision`, or one whose fields are not of their types
    (a decider written in Python can return anything). The gate sends and records only
    decisions this accepts."""
    if not isinstance(value, Decision):
        return f"returned {type(value).__name__}, not a Decision"
    # Typed as object: the annotations of Decision's fields are not checked at run time.
    outcome: object = value.outcome
    if not isinstance(outcome, DecisionOutcome):
        return f"returned a Decision whose outcome is {type(outcome).__name__}"
    updated: object = value.updated_input
    if updated is not None and not isinstance(updated, dict):
        return f"returned a Decision whose updated_input is {type(updated).__name__}, not an object"
    decider: object = value.decider
    if not isinstance(decider, str):
        return f"returned a Decision whose decider is {type(decider).__name__}"
    for name in _TEXT_FIELDS:
        field = getattr(value, name)
        if field is not None and not isinstance(field, str):
            return f"returned a Decision whose {name} is {type(field).__name__}"
    return None
