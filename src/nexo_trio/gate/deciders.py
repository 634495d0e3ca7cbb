"""Deciders: ``async decide(request) -> Decision``, and the built-ins that compose.

* :class:`AllowAll`, :class:`DenyAll` — fixed answers.
* :class:`RulesDecider` — read-only tools allowed, destructive commands and paths that
  escape the workspace denied (:mod:`nexo_trio.core.rules`), the rest ``default``.
* :class:`SessionCache` — remembers ``allow_session`` answers (bounded, LRU).
* :class:`Chain` — asks each decider in turn until one does not abstain; all abstain: deny.
* :class:`GuardedDecider` — any exception or overrun of its deadline becomes
  ``unavailable`` (a deny): the gate fails closed.

:func:`build_decider` makes the one a config asks for; :func:`close_decider` releases what
it holds (a decider that has ``aclose()``; the composites close what they wrap).
:class:`Decider` and :func:`close_decider` live in :mod:`nexo_trio.gate.decider` (which the
LLM decider imports too) and are re-exported here.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Literal

import trio

from nexo_trio.core.permission import (
    Decision,
    DecisionOutcome,
    PermissionRequest,
    abstain,
    allow,
    deny,
    unavailable,
)
from nexo_trio.core.rules import evaluate_rules
from nexo_trio.core.settings import DeciderName, PermissionSettings
from nexo_trio.gate.decider import Decider, close_decider

__all__ = [
    "AllowAll",
    "Chain",
    "Decider",
    "DenyAll",
    "GuardedDecider",
    "RulesDecider",
    "SessionCache",
    "build_decider",
    "close_decider",
]


class AllowAll:
    """Allows everything (only for trusted, sandboxed work)."""

    name = "allow_all"

    async def decide(self, request: PermissionRequest) -> Decision:
        """Allow."""
        return allow(self.name)


class DenyAll:
    """Denies everything the CLI asks about (pre-allowed tools still run)."""

    name = "deny_all"

    async def decide(self, request: PermissionRequest) -> Decision:
        """Deny."""
        return deny(
            "Permission denied: this goal allows no tool calls that need approval", self.name
        )


class RulesDecider:
    """Static rules; what they don't flag gets ``default`` (allow alone, abstain in a chain)."""

    name = "rules"

    def __init__(self, default: Literal["allow", "abstain"] = "allow") -> None:
        self.default = default

    async def decide(self, request: PermissionRequest) -> Decision:
        """Apply the rules of :mod:`nexo_trio.core.rules`."""
        verdict = evaluate_rules(
            request.tool_name, request.input, request.workspace, default=self.default
        )
        if verdict.outcome == "allow":
            return Decision(DecisionOutcome.ALLOW_ONCE, decider=self.name, rationale=verdict.reason)
        if verdict.outcome == "deny":
            return deny(f"Permission denied by rule: {verdict.reason}", self.name)
        return abstain(self.name, verdict.reason)


class SessionCache:
    """Answers again what ``inner`` allowed for the session; asks ``inner`` otherwise.

    Keyed by tool and canonical input (``scope`` ``tool+input``, the default) or by tool
    alone (``scope`` ``tool``). Bounded: the least recently used entries go first.
    """

    def __init__(self, inner: Decider, *, max_entries: int = 1024) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, got {max_entries}")
        self.inner = inner
        self.max_entries = max_entries
        self._entries: OrderedDict[str, Decision] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    async def aclose(self) -> None:
        """Close the inner decider."""
        await close_decider(self.inner)

    async def decide(self, request: PermissionRequest) -> Decision:
        """A remembered session allowance, or the inner decider's answer."""
        tool_key = f"tool:{request.tool_name}"
        # request.digest hashes the whole input once (cached): skipped while nothing is cached.
        if self._entries:
            for key in (tool_key, f"input:{request.digest}"):
                cached = self._entries.get(key)
                if cached is not None:
                    self._entries.move_to_end(key)
                    return Decision(
                        DecisionOutcome.ALLOW_SESSION,
                        decider=f"{cached.decider} (session cache)",
                        scope=cached.scope,
                        rationale=cached.rationale,
                    )
        decision = await self.inner.decide(request)
        if decision.outcome is DecisionOutcome.ALLOW_SESSION and decision.updated_input is None:
            # A rewritten input is tied to this one call: never replayed from the cache.
            # Scope "tool+input" (the default) unless it is "tool".
            key = tool_key if decision.scope == "tool" else f"input:{request.digest}"
            self._entries[key] = decision
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return decision


class Chain:
    """Asks each decider in order; the first answer that is not ``abstain`` wins."""

    def __init__(self, deciders: Sequence[Decider]) -> None:
        if not deciders:
            raise ValueError("a chain needs at least one decider")
        self.deciders = list(deciders)

    async def aclose(self) -> None:
        """Close every decider of the chain."""
        for decider in self.deciders:
            await close_decider(decider)

    async def decide(self, request: PermissionRequest) -> Decision:
        """The first non-abstaining answer; a deny when every decider abstains."""
        reasons: list[str] = []
        for decider in self.deciders:
            decision = await decider.decide(request)
            if decision.outcome is not DecisionOutcome.ABSTAIN:
                return decision
            if decision.message:
                reasons.append(decision.message)
        why = f" ({'; '.join(reasons)})" if reasons else ""
        return deny(f"Permission denied: no decider allowed this tool call{why}", "chain")


class GuardedDecider:
    """Fail closed: an exception or a decision slower than ``timeout_s`` is ``unavailable``."""

    def __init__(self, inner: Decider, *, timeout_s: float, name: str = "") -> None:
        self.inner = inner
        self.timeout_s = timeout_s
        self.name = name or getattr(inner, "name", type(inner).__name__)

    async def aclose(self) -> None:
        """Close the inner decider."""
        await close_decider(self.inner)

    async def decide(self, request: PermissionRequest) -> Decision:
        """The inner decision, or ``unavailable`` with the reason it could not be had."""
        decision: Decision | None = None
        with trio.move_on_after(self.timeout_s):
            try:
                decision = await self.inner.decide(request)
            except Exception as exc:
                return unavailable(f"decider error: {exc!r}", self.name)
        if decision is None:
            return unavailable(f"decider timed out after {self.timeout_s:g}s", self.name)
        return decision.with_decider(self.name)


def build_decider(
    settings: PermissionSettings,
    *,
    environ: Mapping[str, str],
    llm: Decider | None = None,
) -> Decider:
    """The decider a config asks for (``llm`` overrides the LLM decider, e.g. in tests)."""

    def one(name: DeciderName, *, in_chain: bool) -> Decider:
        match name:
            case "allow_all":
                return AllowAll()
            case "deny_all":
                return DenyAll()
            case "rules":
                return RulesDecider(default="abstain" if in_chain else "allow")
            case "llm":
                if llm is not None:
                    return llm
                # Imported here: the LLM decider needs the optional `llm` extra.
                from nexo_trio.gate.llm import LlmDecider  # noqa: PLC0415

                return LlmDecider.from_settings(settings.llm, environ)
            case "chain":
                raise ValueError("a chain cannot contain another chain")

    if settings.decider == "chain":
        inner: Decider = Chain([one(name, in_chain=True) for name in settings.chain])
    else:
        inner = one(settings.decider, in_chain=False)
    return SessionCache(inner)
