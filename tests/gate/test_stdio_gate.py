"""The gate on the stdio transport (gate/stdio_gate.py): an ask of the CLI decided by the
goal's gate in this process, failing closed on every error path as the socket's gate does,
and what the CLI is sent is what is recorded."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import pytest
import trio

from nexo_trio.core.goal import Goal
from nexo_trio.core.goal_events import DecisionMade, GoalEvent
from nexo_trio.core.permission import Decision, PermissionRequest, allow, deny, input_digest
from nexo_trio.core.stdio_control import StdioControl, ToolAsk
from nexo_trio.gate.goal_gate import GoalGate
from nexo_trio.gate.stdio_gate import answer_ask, permission_request

GOAL_ID = "g"


class Scripted:
    """A decider doing what the test says: a decision, an exception, garbage, a hang, or
    a blocking sleep."""

    name = "scripted"

    def __init__(self, behaviour: str) -> None:
        self.behaviour = behaviour

    async def decide(self, request: PermissionRequest) -> Any:
        match self.behaviour:
            case "allow":
                return allow("scripted")
            case "deny":
                return deny("not that", "scripted")
            case "nan":
                return allow("scripted", updated_input={"x": math.nan})
            case "rewrite":
                return allow("scripted", updated_input={"command": "echo safe"})
            case "raises":
                raise RuntimeError("boom")
            case "garbage":
                return "yes please"
            case "hangs":
                await trio.sleep_forever()
            case "blocks":
                time.sleep(0.6)  # noqa: ASYNC251 - blocks the loop past the deadline
                return allow("scripted")
        raise AssertionError(self.behaviour)

    async def aclose(self) -> None:
        return None


async def ask_through_a_gate(
    tmp_path: Path, decider: Any, request: dict[str, Any]
) -> tuple[dict[str, Any], Decision, list[GoalEvent]]:
    """One ``can_use_tool`` ask (its ``request``) through a goal gate on ``decider``: the
    line answering it, the decision it says, and the goal's events."""
    events: list[GoalEvent] = []

    async def emit(event: GoalEvent) -> None:
        events.append(event)

    gate = GoalGate(
        Goal(id=GOAL_ID, description="d"),
        workspace=str(tmp_path),
        decider=decider,
        emit=emit,
        timeout_s=10.0,
        current_turn=lambda: 1,
    )
    token = gate.begin_turn()
    control = StdioControl("p")
    ask = control.on_request("r1", "can_use_tool", request)
    assert isinstance(ask, ToolAsk)
    call = gate.admit(permission_request(GOAL_ID, ask), token=token)
    answered = await answer_ask(call, control, ask, timeout_s=0.3)
    assert control.waiting == []
    return json.loads(answered.line), answered.sent, events


async def run_ask(
    tmp_path: Path, behaviour: str, tool_input: dict[str, Any] | None = None
) -> tuple[dict[str, Any], Decision, list[GoalEvent]]:
    """An ask of ``Bash`` with ``tool_input`` through a :class:`Scripted` decider."""
    request = {"tool_name": "Bash", "input": tool_input or {"command": "ls"}, "tool_use_id": "tu1"}
    return await ask_through_a_gate(tmp_path, Scripted(behaviour), request)


def decisions(events: list[GoalEvent]) -> list[DecisionMade]:
    return [e for e in events if isinstance(e, DecisionMade)]


async def test_an_allow_and_a_rewritten_input(tmp_path: Path) -> None:
    line, _, events = await run_ask(tmp_path, "allow")
    assert line["response"]["response"] == {"behavior": "allow", "updatedInput": {"command": "ls"}}
    [made] = decisions(events)
    assert (made.outcome, made.decider, made.tool_use_id, made.turn) == (
        "allow_once",
        "scripted",
        "tu1",
        1,
    )
    line, _, _ = await run_ask(tmp_path, "rewrite")
    assert line["response"]["response"]["updatedInput"] == {"command": "echo safe"}


@pytest.mark.parametrize(
    ("behaviour", "why"),
    [
        ("deny", "not that"),
        ("raises", "decider error: RuntimeError('boom')"),
        ("garbage", "returned str, not a Decision"),
        ("hangs", "no decision within 0.3s"),
        ("blocks", "the event loop was blocked"),
        ("nan", "the decision cannot be sent"),
    ],
)
async def test_every_failure_is_a_deny_and_the_deny_is_what_is_recorded(
    tmp_path: Path, behaviour: str, why: str
) -> None:
    line, sent, events = await run_ask(tmp_path, behaviour)
    body = line["response"]["response"]
    assert body["behavior"] == "deny"
    assert why in body["message"]
    assert not sent.allowed
    [made] = decisions(events)
    assert made.outcome == sent.outcome.value
    assert why in (made.reason or "")


def nested(depth: int) -> Any:
    """A list ``depth`` deep: the stream's reader takes 1,024 levels, Python's encoder fewer."""
    value: Any = "leaf"
    for _ in range(depth):
        value = [value]
    return value


async def test_an_allow_too_deep_to_encode_is_a_deny_and_recorded_so(tmp_path: Path) -> None:
    """An input the CLI could send but Python's encoder cannot write back (1,020 levels):
    the allow becomes a deny, that deny is what is recorded, and its digest matches no
    other input's (a cache can never reuse a decision for it)."""
    deep = {"command": "ls", "deep": nested(1020)}
    line, sent, events = await run_ask(tmp_path, "allow", deep)
    assert line["response"]["response"]["behavior"] == "deny"
    assert "the decision cannot be sent" in line["response"]["response"]["message"]
    [made] = decisions(events)
    assert (made.outcome, sent.outcome.value, sent.allowed) == ("unavailable",) * 2 + (False,)
    assert input_digest("Bash", deep) != input_digest("Bash", deep)


async def test_the_decider_sees_what_the_cli_s_own_check_said(tmp_path: Path) -> None:
    """The ask's ``blocked_path`` and ``decision_reason`` reach the decider's request,
    through the goal gate's admission."""
    seen: list[PermissionRequest] = []

    class Seeing:
        name = "seeing"

        async def decide(self, request: PermissionRequest) -> Decision:
            seen.append(request)
            return deny("no", self.name)

    ask = {
        "tool_name": "Write",
        "input": {"file_path": "/etc/x", "content": ""},
        "blocked_path": "/etc/x",
        "decision_reason": "outside the working directories",
    }
    await ask_through_a_gate(tmp_path, Seeing(), ask)
    [request] = seen
    assert (request.blocked_path, request.cli_reason) == (
        "/etc/x",
        "outside the working directories",
    )
    assert request.workspace == str(tmp_path)
