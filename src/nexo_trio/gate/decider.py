"""What a decider is: the :class:`Decider` protocol and :func:`close_decider`.

The base the deciders build on, importing nothing of the gate: the built-ins and their
composition (:mod:`nexo_trio.gate.deciders`) and the LLM decider (:mod:`nexo_trio.gate.llm`)
both import it, so the dependency points one way (deciders -> llm -> decider).
"""

from __future__ import annotations

from typing import Protocol

from nexo_trio.core.permission import Decision, PermissionRequest

__all__ = ["Decider", "close_decider"]


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
