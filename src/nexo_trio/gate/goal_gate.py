"""The permission gate of one goal, and the router that finds it by goal id."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import trio

from nexo_trio.core.goal import Goal
from nexo_trio.core.goal_events import DecisionMade, GoalEvent
from nexo_trio.core.permission import (
    Decision,
    DecisionOutcome,
    PermissionRequest,
    deny,
    deny_message,
)
from nexo_trio.core.redact import redact
from nexo_trio.gate.deciders import Decider, GuardedDecider

Emit = Callable[[GoalEvent], Awaitable[None]]


class GoalGate:
    """Decides a goal's permission requests and records each decision (the goal machine
    counts them from the records)."""

    def __init__(
        self,
        goal: Goal,
        *,
        workspace: str,
        scratch: str | None = None,
        confined: bool = False,
        decider: Decider,
        emit: Emit,
        timeout_s: float,
        is_cancelled: Callable[[], bool] = lambda: False,
        current_turn: Callable[[], int | None] = lambda: None,
        secrets: tuple[str, ...] = (),
    ) -> None:
        self.goal = goal
        self.workspace = workspace
        self.scratch = scratch
        self.confined = confined
        self.secrets = secrets
        self.decider = GuardedDecider(decider, timeout_s=timeout_s)
        self.emit = emit
        self.is_cancelled = is_cancelled
        self.current_turn = current_turn

    async def decide(self, request: PermissionRequest) -> Decision:
        """Decide and record (event + ledger) one request."""
        started = trio.current_time()
        request = attrs.evolve(
            request,
            workspace=self.workspace,
            goal_description=self.goal.description,
            scratch=self.scratch,
            confined=self.confined,
        )
        if self.is_cancelled():
            decision = Decision(DecisionOutcome.CANCELLED, decider="gate")
        else:
            try:
                decision = await self.decider.decide(request)
            except trio.Cancelled:
                # Abandoned (the goal or the connection went away): the MCP server answers
                # the CLI with a deny; the ledger still gets the decision. Shielded, bounded.
                abandoned = Decision(
                    DecisionOutcome.CANCELLED, message="decision abandoned", decider="gate"
                )
                with trio.CancelScope(shield=True, deadline=trio.current_time() + 5):
                    await self._record(request, abandoned, started)
                raise
        await self._record(request, decision, started)
        return decision

    async def _record(self, request: PermissionRequest, decision: Decision, started: float) -> None:
        # A deny is recorded with its reason even when the decider gave none.
        reason = decision.message or decision.rationale
        if reason is None and not decision.allowed:
            reason = deny_message(decision)
        subject = call_subject(request.tool_name, request.input) or decision.subject
        await self.emit(
            DecisionMade(
                goal_id=self.goal.id,
                tool_name=request.tool_name,
                outcome=decision.outcome.value,
                reason=self._clean(reason),
                decider=decision.decider,
                latency_ms=(trio.current_time() - started) * 1000,
                input_digest=request.digest,
                rationale=self._clean(decision.rationale),
                turn=self.current_turn(),
                subject=self._clean(subject),
                effect=decision.effect,
                rule=decision.rule,
            )
        )

    def _clean(self, text: str | None) -> str | None:
        """``text`` as the ledger keeps it: secrets redacted, at most SUBJECT_CHARS."""
        if text is None:
            return None
        text = redact(text, self.secrets)
        if len(text) > SUBJECT_CHARS:
            return text[:SUBJECT_CHARS] + f"… ({len(text)} characters)"
        return text


SUBJECT_CHARS = 2000
"""How much of a command, path or reason a decision's record keeps."""


def call_subject(tool_name: str, tool_input: dict[str, Any]) -> str | None:
    """What a tool call is about, in one line: a Bash command, a file path, a URL, a
    pattern (``None`` for a tool whose input names none of these)."""
    for key in ("command", "file_path", "notebook_path", "path", "url", "pattern", "query"):
        value = tool_input.get(key)
        if isinstance(value, str) and value:
            return value
    return None


class GateRouter:
    """Routes each request to the gate of the goal it names."""

    def __init__(self) -> None:
        self._gates: dict[str, GoalGate] = {}

    def register(self, gate: GoalGate) -> None:
        """Route the goal's requests to ``gate``."""
        self._gates[gate.goal.id] = gate

    def unregister(self, goal_id: str) -> None:
        """Stop routing to a goal (its later requests are denied)."""
        self._gates.pop(goal_id, None)

    async def __call__(self, request: PermissionRequest) -> Decision:
        gate = self._gates.get(request.goal_id)
        if gate is None:
            return deny(f"Permission denied: no running goal named {request.goal_id!r}", "gate")
        return await gate.decide(request)
