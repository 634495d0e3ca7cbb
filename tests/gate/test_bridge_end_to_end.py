"""The whole permission bridge through its real pieces: the MCP server subprocess (spawned
with the command line the orchestrator writes into the MCP config) talking JSON-RPC on
stdio, the real :class:`GateServer` on a Unix socket, the :class:`GateRouter`, a
:class:`GoalGate` and a decider.

The fail-closed matrix: every way a decision can fail reaches Claude as a valid deny with a
reason (never ``isError``, never an allow), and every decision the goal makes is an event
with the right counters.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from nexo_trio.core.goal import Goal
from nexo_trio.core.goal_events import DecisionMade, GoalEvent
from nexo_trio.core.goal_machine import fold, initial_state
from nexo_trio.core.permission import (
    Decision,
    DecisionOutcome,
    PermissionRequest,
    allow,
    deny,
    input_digest,
)
from nexo_trio.core.settings import PermissionSettings
from nexo_trio.gate.deciders import Decider, DenyAll, RulesDecider, build_decider
from nexo_trio.gate.goal_gate import GateRouter, GoalGate
from nexo_trio.gate.mcp_config import GateDeadlines, server_command, server_env
from nexo_trio.gate.socket_server import GateServer
from tests.gate.helpers import McpServer, assert_deny, text_json

GOAL_ID = "goal-e2e"
DEADLINES = GateDeadlines.from_tool_timeout(10.0)
"""decider 7 s < gate request 7.5 s < MCP server 8.5 s < the CLI's 10 s."""


@attrs.define
class Bridge:
    """What a test sees of the running bridge."""

    socket_path: Path
    workspace: Path
    router: GateRouter
    gate: GoalGate
    mcp: McpServer
    stop_server: trio.CancelScope
    events: list[GoalEvent] = attrs.Factory(list)
    server_stopped: trio.Event = attrs.Factory(trio.Event)

    @property
    def decisions(self) -> list[DecisionMade]:
        """The DecisionMade events so far."""
        return [event for event in self.events if isinstance(event, DecisionMade)]

    def counts(self) -> tuple[int, int, int]:
        """(allowed, denied, consecutive denials): the goal machine's fold of the decisions."""
        state = fold(self.decisions, initial_state(GOAL_ID))
        return state.allowed, state.denied, state.consecutive_denies

    async def call(
        self, tool_name: str, tool_input: dict[str, Any], *, rpc_id: int | str | None = None
    ) -> dict[str, Any]:
        """One permission_prompt tools/call; the JSON-RPC response."""
        message = self.mcp.call_message(rpc_id or 0, tool_input, tool_name=tool_name)
        params = message["params"]
        response = await self.mcp.request("tools/call", params, rpc_id=rpc_id)
        assert "error" not in response, response
        return response


@asynccontextmanager
async def spawn_mcp(
    argv: list[str],
    directory: Path,
    *,
    env: Mapping[str, str] | None = None,
    name: str = "mcp-stderr.log",
) -> AsyncIterator[McpServer]:
    """The MCP server as a subprocess (``env`` added to this process's environment, as
    Claude Code adds the config's), killed and reaped at the end if still running."""
    stderr_path = directory / name
    with stderr_path.open("wb") as err:
        process = await trio.lowlevel.open_process(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
            env={**os.environ, **(env or {})},
        )
    server = McpServer(process, stderr_path)
    try:
        yield server
        await server.close_stdin()
        assert await server.wait() == 0
    finally:
        with trio.CancelScope(shield=True):
            if process.returncode is None:
                process.send_signal(signal.SIGKILL)
            await process.wait()
            for pipe in (process.stdin, process.stdout):
                if pipe is not None:
                    await pipe.aclose()


@asynccontextmanager
async def bridge(
    sock_dir: Path,
    decider: Decider,
    *,
    deadlines: GateDeadlines = DEADLINES,
    mcp_goal_id: str = GOAL_ID,
    serve: bool = True,
) -> AsyncIterator[Bridge]:
    """A GateServer (unless ``serve`` is false) routing to one goal's gate, and the MCP
    server for ``mcp_goal_id``, handshake done, started as the orchestrator starts a turn's
    (the gate's turn open, its token in the server's environment)."""
    socket_path = sock_dir / "run" / "gate.sock"
    workspace = sock_dir / "ws"
    workspace.mkdir()
    events: list[GoalEvent] = []

    async def emit(event: GoalEvent) -> None:
        events.append(event)

    gate = GoalGate(
        Goal(id=GOAL_ID, description="Make the tests pass"),
        workspace=str(workspace),
        decider=decider,
        emit=emit,
        timeout_s=deadlines.decider_timeout_s,
    )
    token = gate.begin_turn()
    router = GateRouter()
    router.register(gate)
    server = GateServer(socket_path, router, request_timeout_s=deadlines.gate_timeout_s)
    stop_server = trio.CancelScope()
    stopped = trio.Event()

    async def run_server(*, task_status: trio.TaskStatus[None]) -> None:
        with stop_server:
            await server.serve(task_status=task_status)
        stopped.set()

    async with trio.open_nursery() as nursery:
        if serve:
            await nursery.start(run_server)
        else:
            stopped.set()
        argv = server_command(socket_path, mcp_goal_id, deadlines.server_deadline_s)
        async with spawn_mcp(argv, sock_dir, env=server_env(token)) as mcp:
            listed = await mcp.handshake()
            assert [tool["name"] for tool in listed["result"]["tools"]] == ["permission_prompt"]
            yield Bridge(
                socket_path=socket_path,
                workspace=workspace,
                router=router,
                gate=gate,
                mcp=mcp,
                stop_server=stop_server,
                events=events,
                server_stopped=stopped,
            )
        stop_server.cancel()
    assert not socket_path.exists()


@attrs.define
class Recorder:
    """A decider with a scripted answer that records the requests it saw."""

    answer: Decision
    name: str = "recorder"
    seen: list[PermissionRequest] = attrs.Factory(list)

    async def decide(self, request: PermissionRequest) -> Decision:
        self.seen.append(request)
        return self.answer


class Raising:
    name = "raising"

    async def decide(self, request: PermissionRequest) -> Decision:
        raise RuntimeError("the policy file is corrupt")


class Stuck:
    name = "stuck"

    def __init__(self) -> None:
        self.entered = trio.Event()

    async def decide(self, request: PermissionRequest) -> Decision:
        self.entered.set()
        await trio.sleep_forever()
        raise AssertionError("unreachable")


def assert_decision_event(
    event: DecisionMade,
    *,
    tool_name: str,
    tool_input: dict[str, Any],
    outcome: str,
    decider: str,
    reason: str | None,
) -> None:
    assert event.goal_id == GOAL_ID
    assert event.tool_name == tool_name
    assert event.outcome == outcome
    assert event.decider == decider
    if reason is None:
        assert event.reason is None
    else:
        assert event.reason is not None
        assert reason in event.reason, (reason, event.reason)
    assert event.latency_ms >= 0
    assert event.input_digest == input_digest(tool_name, tool_input)


# ---------------------------------------------------------------------------- allow


async def test_rules_allow(sock_dir: Path) -> None:
    command = {"command": "ls -la", "description": "List files"}
    async with bridge(sock_dir, RulesDecider()) as b:
        answer = text_json(await b.call("Bash", command))
        assert answer == {"behavior": "allow", "updatedInput": command}
        (event,) = b.decisions
        assert_decision_event(
            event,
            tool_name="Bash",
            tool_input=command,
            outcome="allow_once",
            decider="rules",
            reason="ls only reads",
        )
        assert (event.effect, event.subject) == ("read", "ls -la")
        assert b.counts() == (1, 0, 0)


async def test_a_rewrite_runs_the_rewritten_input(sock_dir: Path) -> None:
    recorder = Recorder(allow("rewriter", updated_input={"command": "ls -la --color=never"}))
    async with bridge(sock_dir, recorder) as b:
        answer = text_json(await b.call("Bash", {"command": "ls -la"}))
        assert answer == {"behavior": "allow", "updatedInput": {"command": "ls -la --color=never"}}
        (event,) = b.decisions
        assert_decision_event(
            event,
            tool_name="Bash",
            tool_input={"command": "ls -la"},  # the ledger keys on what Claude asked for
            outcome="allow_once",
            decider="rewriter",
            reason=None,
        )
    # The decider saw the goal's context, added by the gate.
    (seen,) = recorder.seen
    assert seen.goal_id == GOAL_ID
    assert seen.workspace == str(sock_dir / "ws")
    assert seen.goal_description == "Make the tests pass"
    assert seen.tool_use_id == "toolu_0"


# ---------------------------------------------------------------------------- deny


async def test_rules_deny_a_destructive_command(sock_dir: Path) -> None:
    command = {"command": "rm -rf /"}
    async with bridge(sock_dir, RulesDecider()) as b:
        message = assert_deny(await b.call("Bash", command), "Permission denied by rule")
        (event,) = b.decisions
        assert_decision_event(
            event,
            tool_name="Bash",
            tool_input=command,
            outcome="deny",
            decider="rules",
            reason=message,
        )
        assert b.counts() == (0, 1, 1)


async def test_deny_all(sock_dir: Path) -> None:
    edit = {"file_path": "a.txt", "content": "x"}
    async with bridge(sock_dir, DenyAll()) as b:
        assert_deny(await b.call("Write", edit), "allows no tool calls")
        (event,) = b.decisions
        assert_decision_event(
            event,
            tool_name="Write",
            tool_input=edit,
            outcome="deny",
            decider="deny_all",
            reason="allows no tool calls",
        )


async def test_a_decider_that_raises_denies(sock_dir: Path) -> None:
    async with bridge(sock_dir, Raising()) as b:
        assert_deny(
            await b.call("Bash", {"command": "ls"}),
            "unavailable",
            "the policy file is corrupt",
        )
        (event,) = b.decisions
        assert_decision_event(
            event,
            tool_name="Bash",
            tool_input={"command": "ls"},
            outcome="unavailable",
            decider="raising",
            reason="decider error: RuntimeError('the policy file is corrupt')",
        )
        assert b.counts() == (0, 1, 1)


async def test_a_decider_slower_than_its_timeout_denies(sock_dir: Path) -> None:
    deadlines = GateDeadlines.from_tool_timeout(1.0)  # decider 0.7 s, gate 0.75 s, MCP 0.85 s
    async with bridge(sock_dir, Stuck(), deadlines=deadlines) as b:
        started = trio.current_time()
        assert_deny(await b.call("Bash", {"command": "ls"}), "unavailable", "timed out after 0.7s")
        assert 0.7 <= trio.current_time() - started < 5
        (event,) = b.decisions
        assert_decision_event(
            event,
            tool_name="Bash",
            tool_input={"command": "ls"},
            outcome="unavailable",
            decider="stuck",
            reason="timed out after 0.7s",
        )
        assert event.latency_ms >= 700


async def test_a_cancelled_goal_denies(sock_dir: Path) -> None:
    recorder = Recorder(allow("recorder"))
    async with bridge(sock_dir, recorder) as b:
        b.gate.is_cancelled = lambda: True
        assert_deny(await b.call("Bash", {"command": "ls"}), "the goal was cancelled")
        (event,) = b.decisions
        assert event.outcome == "cancelled"
        assert event.reason  # a deny is always recorded with why
    assert recorder.seen == []


async def test_an_unknown_goal_id_denies(sock_dir: Path) -> None:
    async with bridge(sock_dir, RulesDecider(), mcp_goal_id="no-such-goal") as b:
        assert_deny(
            await b.call("Read", {"file_path": "a"}), "no running goal named 'no-such-goal'"
        )
        assert b.decisions == []


async def test_an_unregistered_goal_denies(sock_dir: Path) -> None:
    async with bridge(sock_dir, RulesDecider()) as b:
        assert text_json(await b.call("Read", {"file_path": "a"}))["behavior"] == "allow"
        b.router.unregister(GOAL_ID)
        assert_deny(await b.call("Read", {"file_path": "a"}), "no running goal")
        assert len(b.decisions) == 1


async def test_no_gate_server_denies(sock_dir: Path) -> None:
    async with bridge(sock_dir, RulesDecider(), serve=False) as b:
        assert_deny(await b.call("Read", {"file_path": "a"}), "unavailable", "no socket at")
        assert b.decisions == []
        assert b.counts()[1] == 0  # the goal never heard of it


async def test_a_stale_socket_with_nobody_listening_denies(sock_dir: Path) -> None:
    async with bridge(sock_dir, RulesDecider(), serve=False) as b:
        import socket

        b.socket_path.parent.mkdir(mode=0o700)
        stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        stale.bind(str(b.socket_path))
        stale.close()
        assert_deny(await b.call("Read", {"file_path": "a"}), "nothing is listening")
        b.socket_path.unlink()


async def test_the_gate_server_stopping_mid_request_denies(sock_dir: Path) -> None:
    stuck = Stuck()
    async with bridge(sock_dir, stuck) as b:
        await b.mcp.send(b.mcp.call_message(7, {"command": "ls"}))
        await stuck.entered.wait()
        b.stop_server.cancel()
        await b.server_stopped.wait()
        response = await b.mcp.recv()
        assert response["id"] == 7
        assert_deny(response, "unavailable", "closed the connection")
        assert not b.socket_path.exists()
        # Later calls too: nobody is there any more.
        assert_deny(await b.call("Bash", {"command": "ls"}), "unavailable")
        # The abandoned decision is still recorded, as cancelled, and counted as a denial.
        (event,) = b.decisions
        assert (event.outcome, event.reason) == ("cancelled", "decision abandoned")
        assert b.counts()[:2] == (0, 1)


# ---------------------------------------------------------------------------- the goal's view


@attrs.define
class Sequence:
    """Answers from a list, in order."""

    answers: list[Decision]
    name: str = "sequence"

    async def decide(self, request: PermissionRequest) -> Decision:
        return self.answers.pop(0)


async def test_counters_follow_the_decisions(sock_dir: Path) -> None:
    answers = [
        allow("s"),
        deny("no 1", "s"),
        deny("no 2", "s"),
        Decision(DecisionOutcome.UNAVAILABLE, message="down", decider="s"),
        Decision(DecisionOutcome.ALLOW_SESSION, decider="s", scope="tool"),
        deny("no 3", "s"),
    ]
    expected = [
        ("allow", (1, 0, 0)),
        ("deny", (1, 1, 1)),
        ("deny", (1, 2, 2)),
        ("deny", (1, 3, 3)),
        ("allow", (2, 3, 0)),  # an allow resets the consecutive denials
        ("deny", (2, 4, 1)),
    ]
    async with bridge(sock_dir, Sequence(list(answers))) as b:
        for n, (behavior, counters) in enumerate(expected):
            tool_input = {"command": f"step {n}"}
            answer = text_json(await b.call("Bash", tool_input))
            assert answer["behavior"] == behavior
            assert b.counts() == counters
        outcomes = [(event.outcome, event.reason, event.decider) for event in b.decisions]
        assert outcomes == [
            ("allow_once", None, "s"),
            ("deny", "no 1", "s"),
            ("deny", "no 2", "s"),
            ("unavailable", "down", "s"),
            ("allow_session", None, "s"),
            ("deny", "no 3", "s"),
        ]
        assert [event.input_digest for event in b.decisions] == [
            input_digest("Bash", {"command": f"step {n}"}) for n in range(len(expected))
        ]


async def test_a_built_chain_with_its_session_cache(sock_dir: Path) -> None:
    llm = Recorder(Decision(DecisionOutcome.ALLOW_SESSION, decider="llm", rationale="safe"))
    decider = build_decider(
        PermissionSettings(decider="chain", chain=("rules", "llm")), environ={}, llm=llm
    )
    async with bridge(sock_dir, decider) as b:
        install = {"command": "npm install"}
        for _ in range(2):
            assert text_json(await b.call("Bash", install)) == {
                "behavior": "allow",
                "updatedInput": install,
            }
        assert len(llm.seen) == 1  # the second came from the session cache
        assert_deny(await b.call("Bash", {"command": "git push --force"}), "by rule")
        assert [(e.outcome, e.decider) for e in b.decisions] == [
            ("allow_session", "llm"),
            ("allow_session", "llm (session cache)"),
            ("deny", "rules"),
        ]


async def test_concurrent_calls_are_answered_by_id(sock_dir: Path) -> None:
    count = 16

    class Reversed:
        name = "reversed"

        async def decide(self, request: PermissionRequest) -> Decision:
            n = request.input["n"]
            await trio.sleep((count - n) * 0.02)
            if n % 2:
                return deny(f"odd {n}", self.name)
            return allow(self.name, updated_input={"n": n, "checked": True})

    async with bridge(sock_dir, Reversed()) as b:
        for n in range(count):
            await b.mcp.send(b.mcp.call_message(f"c{n}", {"n": n}))
        responses = [await b.mcp.recv() for _ in range(count)]
        assert sorted(r["id"] for r in responses) == sorted(f"c{n}" for n in range(count))
        assert [r["id"] for r in responses] != [f"c{n}" for n in range(count)]  # out of order
        for response in responses:
            n = int(response["id"].removeprefix("c"))
            answer = text_json(response)
            if n % 2:
                assert answer == {"behavior": "deny", "message": f"odd {n}"}
            else:
                assert answer == {"behavior": "allow", "updatedInput": {"n": n, "checked": True}}
        assert b.counts()[:2] == (count // 2, count // 2)


@pytest.mark.parametrize("depth", [900, 5_000, 200_000])
async def test_a_deeply_nested_input_denies(sock_dir: Path, depth: int) -> None:
    # Too deep for a JSON parser on one side or the other: still a deny, never a crash.
    async with bridge(sock_dir, RulesDecider()) as b:
        nested = b"[" * depth + b"]" * depth
        call = (
            b'{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": '
            b'"permission_prompt", "arguments": {"tool_name": "Bash", "input": {"x": '
            + nested
            + b"}}}}\n"
        )
        await b.mcp.send(call)
        response = await b.mcp.recv()
        assert response["id"] in (1, None)
        if response["id"] == 1:
            assert_deny(response)
        else:
            assert response["error"]["code"] == -32700
        # The bridge goes on.
        answer = text_json(await b.call("Read", {"file_path": "a"}, rpc_id=2))
        assert answer["behavior"] == "allow"
