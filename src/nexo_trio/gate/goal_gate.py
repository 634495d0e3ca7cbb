"""The permission gate of one goal, and the router that finds it by goal id.

A :class:`GoalGate` admits each request the socket server hands it
(:meth:`GoalGate.admit`: a :class:`GoalGateCall`), decides it with the goal's (guarded)
decider, and records the reply the server actually sent (:class:`DecisionMade`: what the CLI
got is what the goal counts).

It answers only the goal's current turn: the orchestrator calls :meth:`GoalGate.begin_turn`
before each turn (a fresh random token, which goes into that turn's MCP config and comes
back in every request of its permission server) and :meth:`GoalGate.end_turn` after it. A
request with another token (the server of an earlier turn: an orphan that outlived a
killed run) or none, or while no turn is open, is denied, and the denial recorded.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from secrets import token_urlsafe
from typing import Any, Final

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

NOT_THE_CURRENT_TURN: Final = (
    "Permission denied: this request does not come from the goal's current turn"
)
TOKEN_BYTES: Final = 32


def new_turn_token() -> str:
    """A fresh random turn token (URL-safe text, 256 bits)."""
    return token_urlsafe(TOKEN_BYTES)


class GoalGate:
    """Decides a goal's permission requests and records each reply sent (the goal machine
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
        self._token: bytes | None = None

    # ------------------------------------------------------------------ turns

    def begin_turn(self, token: str | None = None) -> str:
        """Answer only the turn with ``token`` from now on (a fresh random one when not
        given); return it, for the turn's MCP config
        (:func:`~nexo_trio.gate.mcp_config.write_mcp_config`)."""
        if token is None:
            token = new_turn_token()
        if not token:
            raise ValueError("a turn token must not be empty")
        self._token = token.encode()
        return token

    def end_turn(self) -> None:
        """No turn is running: every request is denied until the next :meth:`begin_turn`."""
        self._token = None

    @property
    def turn_open(self) -> bool:
        """Whether a turn is open (between :meth:`begin_turn` and :meth:`end_turn`)."""
        return self._token is not None

    def is_current(self, token: str | None) -> bool:
        """Whether ``token`` is the current turn's (compared in constant time)."""
        current = self._token
        if current is None or token is None:
            return False
        return hmac.compare_digest(current, token.encode("utf-8", "surrogatepass"))

    # ------------------------------------------------------------------ requests

    def admit(self, request: PermissionRequest, *, token: str | None) -> GoalGateCall:
        """The call for one request (with the goal's context added), sent with ``token``."""
        current = self.is_current(token)
        return GoalGateCall(
            self,
            # Built, not attrs.evolve'd: the same record at a fraction of the cost.
            PermissionRequest(
                goal_id=request.goal_id,
                tool_name=request.tool_name,
                input=request.input,
                tool_use_id=request.tool_use_id,
                workspace=self.workspace,
                goal_description=self.goal.description,
                scratch=self.scratch,
                confined=self.confined,
                blocked_path=request.blocked_path,
                cli_reason=request.cli_reason,
            ),
            from_current_turn=current,
            # An orphan's request was asked by none of this run's turns.
            turn=self.current_turn() if current else None,
            started=trio.current_time(),
        )

    async def _record(self, call: GoalGateCall, decision: Decision) -> None:
        request = call.request
        # A deny is recorded with its reason even when the decider gave none.
        reason = decision.message or decision.rationale
        if reason is None and not decision.allowed:
            reason = deny_message(decision)
        subject = call_subject(request.tool_name, request.input) or decision.subject
        clean_reason = self._clean(reason)
        # The reason of an allow is its rationale: cleaned once.
        rationale = (
            clean_reason if decision.rationale is reason else self._clean(decision.rationale)
        )
        await self.emit(
            DecisionMade(
                goal_id=self.goal.id,
                tool_name=request.tool_name,
                outcome=decision.outcome.value,
                reason=clean_reason,
                decider=decision.decider,
                latency_ms=(trio.current_time() - call.started) * 1000,
                input_digest=request.digest,
                rationale=rationale,
                turn=call.turn,
                subject=self._clean(subject),
                effect=decision.effect,
                rule=decision.rule,
                tool_use_id=request.tool_use_id,
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


@attrs.define(eq=False)
class GoalGateCall:
    """One request in a goal's gate (a :class:`~nexo_trio.gate.socket_server.GateCall`):
    decided once, recorded once."""

    gate: GoalGate
    request: PermissionRequest
    """With the goal's context (workspace, scratch, confinement)."""
    from_current_turn: bool
    turn: int | None
    started: float
    recorded: bool = False

    async def decide(self) -> Decision:
        """Not the current turn's: deny; the goal cancelled: cancelled; else the guarded
        decider's decision."""
        if not self.from_current_turn:
            return deny(NOT_THE_CURRENT_TURN, "gate")
        if self.gate.is_cancelled():
            return Decision(DecisionOutcome.CANCELLED, decider="gate")
        return await self.gate.decider.decide(self.request)

    async def record(self, sent: Decision) -> None:
        """Record ``sent`` (the reply the CLI got) as a :class:`DecisionMade`; once."""
        if self.recorded:
            return
        self.recorded = True
        await self.gate._record(self, sent)


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
    """Routes each request to the gate of the goal it names (a
    :class:`~nexo_trio.gate.socket_server.Gate`)."""

    def __init__(self) -> None:
        self._gates: dict[str, GoalGate] = {}

    def register(self, gate: GoalGate) -> None:
        """Route the goal's requests to ``gate``."""
        self._gates[gate.goal.id] = gate

    def unregister(self, goal_id: str) -> None:
        """Stop routing to a goal (its later requests are denied)."""
        self._gates.pop(goal_id, None)

    def gate(self, goal_id: str) -> GoalGate | None:
        """The registered gate of ``goal_id``."""
        return self._gates.get(goal_id)

    def admit(
        self, request: PermissionRequest, *, token: str | None
    ) -> GoalGateCall | UnroutedCall:
        """The call of the goal's gate; a denying, unrecorded one for a goal not running."""
        gate = self._gates.get(request.goal_id)
        if gate is None:
            return UnroutedCall(request.goal_id)
        return gate.admit(request, token=token)


@attrs.frozen
class UnroutedCall:
    """A request for a goal that is not running here: denied, recorded nowhere (there is
    no goal to record it in)."""

    goal_id: str

    async def decide(self) -> Decision:
        """A deny naming the goal."""
        return deny(f"Permission denied: no running goal named {self.goal_id!r}", "gate")

    async def record(self, sent: Decision) -> None:
        """Nothing to record."""
