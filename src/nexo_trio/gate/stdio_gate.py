"""The gate on the stdio transport: a ``can_use_tool`` ask of the CLI decided by the goal's
gate in this process, no server and no socket (issue 15's ``permission.transport: stdio``).

The same path as the socket server's, so both transports fail closed alike and record
alike: the goal's :class:`~nexo_trio.gate.goal_gate.GoalGate` admits the call (the current
turn's, so the token check passes by construction), :func:`~nexo_trio.gate.socket_server.
decide_within` bounds and validates the decision, and the reply the CLI gets is settled
here and recorded **before** it is written (what the CLI received is what is recorded). A
decision that cannot be put on the wire (an ``updated_input`` holding NaN) goes out as an
``unavailable`` deny, and that deny is what is recorded.
"""

from __future__ import annotations

import logging

import attrs
import trio

from nexo_trio.core.permission import (
    Decision,
    DecisionOutcome,
    PermissionRequest,
    deny,
    deny_message,
    unavailable,
)
from nexo_trio.core.stdio_control import (
    ENDING,
    Reply,
    StdioControl,
    ToolAsk,
    deny_body,
    success,
)
from nexo_trio.gate.socket_server import ABANDONED, Gate, GateCall, decide_within, record_sent
from nexo_trio.wire.stdio_frames import encode_message

log = logging.getLogger("nexo_trio.gate")


@attrs.frozen
class Answered:
    """The line to write to the CLI for an ask, and the decision it says (recorded)."""

    line: bytes
    sent: Decision


def permission_request(goal_id: str, ask: ToolAsk) -> PermissionRequest:
    """The gate's request for a stdio ask (the goal's context is added on admission),
    with what the CLI's own check said (for the deciders that show it)."""
    return PermissionRequest(
        goal_id=goal_id,
        tool_name=ask.tool_name,
        input=ask.input,
        tool_use_id=ask.tool_use_id,
        blocked_path=ask.blocked_path,
        cli_reason=ask.decision_reason,
    )


def settle(control: StdioControl, ask: ToolAsk, decision: Decision) -> Answered:
    """The line answering ``ask`` with ``decision``, or with an ``unavailable`` deny when
    ``decision`` cannot be encoded as it is (a deny always can: its message is text). The
    answer is encoded once: an input can be megabytes (a Write)."""
    message = control.answer(ask, decision)
    try:
        return Answered(encode_message(message), decision)
    except (ValueError, RecursionError) as exc:  # NaN, an infinity, too deep: not JSON
        log.warning("cannot send the decision on %s: %s", ask.tool_name, exc)
        failed = unavailable(f"gate error: the decision cannot be sent ({exc})", "gate")
        deny = success(ask.request_id, deny_body(deny_message(failed)))
        return Answered(encode_message(deny), failed)


async def answer_ask(
    call: GateCall, control: StdioControl, ask: ToolAsk, *, timeout_s: float
) -> Answered:
    """Decide ``ask`` through ``call`` (the goal gate's admission of it) within
    ``timeout_s``, settle the reply and record it; the line to write. Cancelled before
    a reply is settled (the turn is being torn down), the call is recorded as
    ``cancelled``: the CLI got no answer."""
    started = trio.current_time()
    sent = Decision(DecisionOutcome.CANCELLED, message=ABANDONED, decider="gate")
    try:
        decision = await decide_within(call, started, timeout_s)
        answered = settle(control, ask, decision)
        sent = answered.sent
    finally:
        await record_sent(call, sent)
    return answered


async def record_reply(gate: Gate, goal_id: str, reply: Reply, *, token: str | None) -> None:
    """Record a deny the protocol's rules wrote without asking the decider, as the gate
    records any decision: a malformed ask as a deny; an ask while the turn ends as
    ``cancelled`` (the CLI got a deny, but it is no denial of the goal's: the socket gate
    records a call that comes in while its turn stops the same way)."""
    request = PermissionRequest(goal_id=goal_id, tool_name=reply.tool_name or "", input={})
    call = gate.admit(request, token=token)
    if reply.ending:
        sent = Decision(DecisionOutcome.CANCELLED, message=ENDING, decider="gate")
    else:
        sent = deny(f"Permission denied: {reply.why}", "gate")
    await record_sent(call, sent)


__all__ = ["Answered", "answer_ask", "permission_request", "record_reply", "settle"]
