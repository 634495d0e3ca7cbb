"""Deciders: ``async decide(request) -> Decision``, and the built-ins that compose.

* :class:`AllowAll`, :class:`DenyAll` — fixed answers.
* :class:`RulesDecider` — classifies each call's effect (:mod:`nexo_trio.core.effects`,
  paths resolved on disk in a worker thread): ``read`` and ``workspace`` allowed,
  ``destructive`` denied, ``unknown`` as its policy says (by default: allowed in a
  sandboxed turn, denied otherwise).
* :class:`SessionCache` — remembers ``allow_session`` answers (bounded, LRU).
* :class:`Chain` — asks each decider in turn until one does not abstain; all abstain: deny.
* :class:`GuardedDecider` — any exception, overrun of its deadline or return value that is
  not a valid decision becomes ``unavailable`` (a deny): the gate fails closed.

:func:`build_decider` makes the one a config asks for; :func:`close_decider` releases what
it holds (a decider that has ``aclose()``; the composites close what they wrap).
:class:`Decider` and :func:`close_decider` live in :mod:`nexo_trio.gate.decider` (which the
LLM decider imports too) and are re-exported here.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Final, Literal

import trio

from nexo_trio.core.effects import EffectVerdict
from nexo_trio.core.permission import (
    Decision,
    DecisionOutcome,
    PermissionRequest,
    abstain,
    allow,
    deny,
    unavailable,
)
from nexo_trio.core.permission_rules import format_rule, match_rules
from nexo_trio.core.settings import DeciderName, PermissionSettings, UnknownPolicy
from nexo_trio.gate.batched_thread import run_batched
from nexo_trio.gate.decider import Decider, close_decider, decision_problem
from nexo_trio.gate.human import HumanDecider
from nexo_trio.gate.resolve import DEFAULT_MAX_PATHS, classify_on_disk

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


_UNCONFINED_UNKNOWN = (
    "Permission denied: this turn is not sandboxed, so commands whose effect cannot be read"
    " ({reason}) are denied; use file tools or commands that only read or write inside the"
    " workspace"
)
_DENIED_UNKNOWN = (
    "Permission denied: calls whose effect cannot be read ({reason}) are denied by this"
    " goal's permission settings; use file tools or commands that only read or write inside"
    " the workspace"
)


class RulesDecider:
    """The effect classifier as a decider: ``read`` and ``workspace`` calls are allowed,
    ``destructive`` ones denied (the message names the rule), ``unknown`` ones follow
    ``unknown``: ``allow``, ``deny``, ``defer`` (abstain: the next decider of a chain
    decides) or ``None`` (allow when the turn is confined, deny when it is not).

    ``default`` is the older spelling of the policy: ``allow`` is ``unknown="allow"``,
    ``abstain`` is ``unknown="defer"``. ``writable``: directories the goal may write besides
    its workspace and scratch directory. Paths are resolved on disk (at most ``max_paths``
    per call) in a worker thread (:func:`~nexo_trio.gate.batched_thread.run_batched`: the
    calls waiting at the same time share one); the call is abandoned if the decision is
    cancelled (a :class:`GuardedDecider`'s deadline), so a hung file system cannot hold the
    gate.
    """

    name = "rules"

    def __init__(
        self,
        default: Literal["allow", "abstain"] | None = None,
        *,
        unknown: UnknownPolicy | None = None,
        writable: Sequence[str] = (),
        max_paths: int = DEFAULT_MAX_PATHS,
    ) -> None:
        if default is not None and unknown is not None:
            raise ValueError("give the unknown policy once: default= or unknown=")
        if default is not None:
            unknown = "allow" if default == "allow" else "defer"
        self.unknown: UnknownPolicy | None = unknown
        self.writable = tuple(writable)
        self.max_paths = max_paths

    async def decide(self, request: PermissionRequest) -> Decision:
        """Classify the call (see :mod:`nexo_trio.core.effects`) and decide on its effect."""
        classify = functools.partial(
            classify_on_disk,
            request.tool_name,
            request.input,
            workspace=request.workspace,
            scratch=request.scratch,
            writable=self.writable,
            max_paths=self.max_paths,
        )
        verdict = await run_batched(classify)
        return self.decision(verdict, confined=request.confined)

    def decision(self, verdict: EffectVerdict, *, confined: bool) -> Decision:
        """The decision for a classified call."""

        def decided(outcome: DecisionOutcome, message: str | None, why: str | None) -> Decision:
            return Decision(
                outcome,
                message=message,
                decider=self.name,
                rationale=why,
                effect=verdict.effect,
                rule=verdict.rule,
                subject=verdict.subject,
            )

        if verdict.effect in ("read", "workspace"):
            return decided(DecisionOutcome.ALLOW_ONCE, None, verdict.reason)
        if verdict.effect == "destructive":
            return decided(
                DecisionOutcome.DENY, f"Permission denied by rule: {verdict.reason}", None
            )
        policy = self.unknown
        if policy is None:
            if confined:
                why = f"the turn is sandboxed, which bounds any effect: {verdict.reason}"
                return decided(DecisionOutcome.ALLOW_ONCE, None, why)
            return decided(
                DecisionOutcome.DENY, _UNCONFINED_UNKNOWN.format(reason=verdict.reason), None
            )
        if policy == "allow":
            return decided(DecisionOutcome.ALLOW_ONCE, None, verdict.reason)
        if policy == "deny":
            return decided(
                DecisionOutcome.DENY, _DENIED_UNKNOWN.format(reason=verdict.reason), None
            )
        return decided(DecisionOutcome.ABSTAIN, verdict.reason, None)


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
    """Fail closed: an exception, a decision slower than ``timeout_s`` (also one that comes
    back late because it blocked the event loop, which no deadline can interrupt) or a
    return value that is not a valid :class:`Decision` is ``unavailable``."""

    def __init__(self, inner: Decider, *, timeout_s: float, name: str = "") -> None:
        self.inner = inner
        self.timeout_s = timeout_s
        self.name = name or getattr(inner, "name", type(inner).__name__)

    async def aclose(self) -> None:
        """Close the inner decider."""
        await close_decider(self.inner)

    async def decide(self, request: PermissionRequest) -> Decision:
        """The inner decision, or ``unavailable`` with the reason it could not be had."""
        deadline = trio.current_time() + self.timeout_s
        decision: object = _NO_DECISION
        with trio.move_on_at(deadline):
            try:
                decision = await self.inner.decide(request)
            except Exception as exc:
                return unavailable(f"decider error: {exc!r}", self.name)
        if decision is _NO_DECISION or trio.current_time() > deadline:
            return unavailable(f"decider timed out after {self.timeout_s:g}s", self.name)
        problem = decision_problem(decision)
        if problem is not None:
            return unavailable(f"decider {problem}", self.name)
        assert isinstance(decision, Decision)
        return decision.with_decider(self.name)


_NO_DECISION: Final = object()


class ConfigRules:
    """The config's Claude Code permission rules (``permission.allow`` / ``deny``): a call a
    deny rule matches is denied, one the allow rules allow is allowed (a compound command
    only when every part is), anything else is the next decider's to judge (abstain).

    See :mod:`nexo_trio.core.permission_rules` for the syntax and its matching. ``home``
    anchors ``~/`` rules (the CLI's ``HOME``)."""

    name = "config rules"

    def __init__(
        self, allow: Sequence[str], deny: Sequence[str], *, home: str | None = None
    ) -> None:
        self.allow = tuple(allow)
        self.deny = tuple(deny)
        self.home = home

    async def decide(self, request: PermissionRequest) -> Decision:
        """The decision of the first rule that matches, or abstain."""
        match = match_rules(
            self.allow,
            self.deny,
            request.tool_name,
            request.input,
            workspace=request.workspace,
            home=self.home,
        )
        if match is None:
            return abstain(self.name)
        rule = format_rule(match.rule)
        if match.allowed:
            return Decision(
                DecisionOutcome.ALLOW_ONCE,
                decider=self.name,
                rationale=f"allowed by permission.allow ({match.reason})",
                rule=rule,
                subject=match.subject,
            )
        return Decision(
            DecisionOutcome.DENY,
            message=f"Permission denied by permission.deny: {match.reason}",
            decider=self.name,
            rule=rule,
            subject=match.subject,
        )


def build_decider(
    settings: PermissionSettings,
    *,
    environ: Mapping[str, str],
    llm: Decider | None = None,
    human: HumanDecider | None = None,
    writable: Sequence[str] = (),
) -> Decider:
    """The decider a config asks for (``llm`` overrides the LLM decider, e.g. in tests;
    ``human`` is the shared human decider its prompter and control socket answer; without
    one, ``human`` gets a new one whose deadline fits ``settings.tool_timeout_s``;
    ``writable``: the sandbox's extra writable directories, which the rules count as the
    goal's). The config's ``allow`` / ``deny`` rules, when there are any, come first: a
    deny rule wins over every decider, an allow rule allows without asking them."""

    def one(name: DeciderName, *, in_chain: bool) -> Decider:
        nonlocal human
        match name:
            case "allow_all":
                return AllowAll()
            case "deny_all":
                return DenyAll()
            case "rules":
                # In a chain the unknown is the next decider's to judge; alone, a `defer`
                # denies like a chain that ends abstaining.
                unknown = settings.unknown or ("defer" if in_chain else None)
                rules = RulesDecider(unknown=unknown, writable=writable)
                return Chain([rules]) if unknown == "defer" and not in_chain else rules
            case "llm":
                if llm is not None:
                    return llm
                # Imported here: the LLM decider needs the optional `llm` extra.
                from nexo_trio.gate.llm import LlmDecider  # noqa: PLC0415

                return LlmDecider.from_settings(settings.llm, environ)
            case "human":
                if human is None:
                    human = HumanDecider.for_tool_timeout(settings.tool_timeout_s)
                return human
            case "chain":
                raise ValueError("a chain cannot contain another chain")

    if settings.decider == "chain":
        members = [one(name, in_chain=True) for name in settings.chain]
        if human is not None and human in members:
            # The person sees why the deciders before them left the call open.
            at = members.index(human)
            members = [*(human.noting(d) for d in members[:at]), *members[at:]]
        inner: Decider = Chain(members)
    else:
        inner = one(settings.decider, in_chain=False)
    if settings.allow or settings.deny:
        config_rules = ConfigRules(settings.allow, settings.deny, home=environ.get("HOME"))
        inner = Chain([config_rules, inner])
    return SessionCache(inner)
