"""The real Claude Code CLI inside the turn's sandbox (bubblewrap), offline (issue #9).

Each test runs one turn with ``run_turn(..., sandbox=plan)`` against the scripted Messages
API, with the permission gate wired as the orchestrator wires it: a :class:`GateServer` on a
Unix socket in the state dir, the MCP config pointing the CLI at our permission server,
which the CLI spawns *inside* the sandbox and which must reach the socket through a
read-only bind.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from nexo_trio.core.command import ClaudeCommand
from nexo_trio.core.goal import Goal
from nexo_trio.core.goal_events import DecisionMade, GoalEvent
from nexo_trio.core.outcome import Cause, TurnKind
from nexo_trio.core.sandbox import CLI_FILE, ApiProxy, SandboxPlan
from nexo_trio.engine.sandbox import prepare_sandbox, probe_bwrap
from nexo_trio.engine.supervisor import TurnResult, run_turn
from nexo_trio.gate.deciders import AllowAll
from nexo_trio.gate.goal_gate import GateRouter, GoalGate
from nexo_trio.gate.mcp_config import (
    PERMISSION_PROMPT_TOOL,
    SERVER_NAME,
    GateDeadlines,
    write_mcp_config,
)
from nexo_trio.gate.socket_server import GateServer
from nexo_trio.testing.messages_api import (
    Reply,
    last_message_has_tool_result,
    nth,
    text,
    tool_use,
)
from tests.e2e.conftest import E2E

pytestmark = pytest.mark.real_claude

GOAL_ID = "g-sandbox"
DEADLINES = GateDeadlines.from_tool_timeout(20.0)
READ_ONLY = "Read-only file system"


@pytest.fixture
async def bwrap_works() -> None:
    """Skip, saying how to get it, unless bubblewrap works here."""
    reason = await probe_bwrap()
    if reason is not None:
        pytest.skip(f"needs a working bubblewrap: {reason} (apt-get install bubblewrap)")


@attrs.define
class Gate:
    """The gate's socket and MCP config, and the decisions it made."""

    socket_path: Path
    mcp_config: Path
    events: list[GoalEvent]

    @property
    def decisions(self) -> list[tuple[str, str]]:
        """(tool, outcome) of every decision, in order."""
        return [(e.tool_name, e.outcome) for e in self.events if isinstance(e, DecisionMade)]


@asynccontextmanager
async def serving_gate(e2e: E2E) -> AsyncIterator[Gate]:
    """A GateServer in the state dir routing to one goal's gate (allowing everything),
    and the MCP config that points the CLI at our permission server."""
    socket_path = e2e.state_dir / "run" / "gate.sock"
    events: list[GoalEvent] = []

    async def emit(event: GoalEvent) -> None:
        events.append(event)

    gate = GoalGate(
        Goal(id=GOAL_ID, description="confined"),
        workspace=str(e2e.workspace),
        decider=AllowAll(),
        emit=emit,
        timeout_s=DEADLINES.decider_timeout_s,
    )
    router = GateRouter()
    router.register(gate)
    server = GateServer(socket_path, router, request_timeout_s=DEADLINES.gate_timeout_s)
    config = write_mcp_config(
        e2e.state_dir / "mcp" / f"{GOAL_ID}.json",
        socket_path=socket_path,
        goal_id=GOAL_ID,
        deadlines=DEADLINES,
        token=gate.begin_turn(),
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        yield Gate(socket_path=socket_path, mcp_config=config, events=events)
        nursery.cancel_scope.cancel()


def plan_for(e2e: E2E, *, readable: tuple[Path, ...] = ()) -> SandboxPlan:
    """The turn's sandbox: the workspace, a scratch dir, the CLI's two entries in its home;
    the state dir (gate socket, MCP config) and the home visible read-only under the
    private /tmp (the test's directories all live in /tmp)."""
    return prepare_sandbox(
        e2e.workspace,
        e2e.root / "scratch",
        home=e2e.home,
        readable=[e2e.state_dir, e2e.home, *readable],
    )


def command(e2e: E2E, gate: Gate, prompt: str) -> ClaudeCommand:
    """The CLI in the workspace, asking our permission server for every tool call."""
    return ClaudeCommand(
        prompt=prompt,
        binary=str(e2e.claude_bin),
        cwd=e2e.workspace,
        mcp_config=gate.mcp_config,
        permission_prompt_tool=PERMISSION_PROMPT_TOOL,
        env=e2e.claude_env(),
    )


async def confined_turn(
    e2e: E2E, gate: Gate, plan: SandboxPlan, prompt: str, **kw: Any
) -> TurnResult:
    kw.setdefault("timeout", 45.0)
    kw.setdefault("kill_grace", 3.0)
    return await run_turn(
        command(e2e, gate, prompt),
        sandbox=plan,
        require_mcp_servers=(SERVER_NAME,),
        **kw,
    )


def digest(root: Path) -> dict[str, str]:
    """Every file under ``root`` and its bytes' digest."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def tool_result_text(block: dict[str, Any]) -> str:
    content = block.get("content")
    if isinstance(content, str):
        return content
    return "\n".join(str(part.get("text", "")) for part in content or ())


async def test_the_real_cli_writes_its_workspace_and_not_outside(
    e2e: E2E, bwrap_works: None
) -> None:
    outside = e2e.root / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("precious\n")
    before = digest(outside)
    e2e.api.add(
        Reply(nth(0), tool_use("Bash", {"command": "echo hi > hello.txt"}, id="toolu_in")),
        Reply(
            nth(1) & last_message_has_tool_result(),
            tool_use("Bash", {"command": f"echo gone > {outside}/keep.txt"}, id="toolu_out"),
        ),
        Reply(
            nth(2) & last_message_has_tool_result(),
            tool_use("Bash", {"command": "echo x > $HOME/x"}, id="toolu_home"),
        ),
        Reply(nth(3) & last_message_has_tool_result(), text("Done, partly.")),
    )
    async with serving_gate(e2e) as gate:
        plan = plan_for(e2e, readable=(outside,))
        assert (e2e.home / CLI_FILE).read_text() == "{}"
        res = await confined_turn(e2e, gate, plan, "Create hello.txt, then try outside.")

    assert res.outcome.kind is TurnKind.CLAIMED_DONE, res.outcome
    assert res.outcome.final_text == "Done, partly."
    assert res.outcome.exit_code == 0
    assert res.stop_actions == ()
    assert res.argv[0] == "bwrap"
    # The permission server ran inside the sandbox and reached the gate's socket.
    assert res.state.init is not None
    assert [(s.name, s.status) for s in res.state.init.mcp_servers] == [(SERVER_NAME, "connected")]
    assert gate.decisions == [("Bash", "allow_once")] * 3

    assert (e2e.workspace / "hello.txt").read_text() == "hi\n"
    assert digest(outside) == before
    assert not (e2e.home / "x").exists()
    requests = [r for r in e2e.api.message_requests() if r.stream]
    assert len(requests) == 4
    [inside] = requests[1].tool_results()
    assert inside.get("is_error") is not True
    for request, tool_id in ((requests[2], "toolu_out"), (requests[3], "toolu_home")):
        [refused] = request.tool_results()
        assert refused["tool_use_id"] == tool_id
        assert refused.get("is_error") is True
        assert READ_ONLY in tool_result_text(refused)

    # The CLI kept its transcript in its own directory of the home. Its state file it
    # cannot rewrite with the home read-only: it writes a temp file next to it and renames
    # it over it. It says nothing and goes on; the file stays as prepare_sandbox made it.
    assert list(e2e.home.glob(f".claude/projects/*/{res.outcome.session_id}.jsonl"))
    assert json.loads((e2e.home / CLI_FILE).read_text()) == {}
    # Its TMPDIR was the scratch dir (it keeps its per-session files there).
    assert await trio.Path(plan.scratch).iterdir()

    # The next confined turn resumes the conversation from that transcript.
    e2e.api.add(Reply(nth(4), text("Resumed.")))
    async with serving_gate(e2e) as gate:
        resumed = await run_turn(
            attrs.evolve(command(e2e, gate, "Carry on."), resume=res.outcome.session_id),
            sandbox=plan,
            require_mcp_servers=(SERVER_NAME,),
            timeout=45.0,
            kill_grace=3.0,
        )
    assert resumed.outcome.kind is TurnKind.CLAIMED_DONE, resumed.outcome
    assert resumed.outcome.session_id == res.outcome.session_id
    history = e2e.api.message_requests()[4].messages
    assert len(history) > 2  # the earlier exchange came along


async def test_a_confined_real_cli_stops_on_sigterm_with_its_mcp_server(
    e2e: E2E, bwrap_works: None
) -> None:
    # The API never answers in time: the turn times out, the SIGTERM reaches the CLI
    # inside the sandbox (not bwrap), and the CLI ends itself and its MCP server (exit
    # 143, no SIGKILL needed). The procs guard then finds nothing left.
    e2e.api.add(Reply(nth(0), text("too late"), delay=30.0))
    async with serving_gate(e2e) as gate:
        plan = plan_for(e2e)
        started = trio.current_time()
        res = await confined_turn(e2e, gate, plan, "Wait for the API.", timeout=4.0)
        elapsed = trio.current_time() - started
    assert res.outcome.kind is TurnKind.CONTINUE
    assert res.outcome.cause is Cause.TIMEOUT
    assert res.stop_actions == ("SIGTERM",)
    assert res.outcome.exit_code == 143
    assert elapsed < 4.0 + 3.0
    assert res.state.init is not None  # it had started, gate connected
    assert [(s.name, s.status) for s in res.state.init.mcp_servers] == [(SERVER_NAME, "connected")]


async def test_without_network_the_real_cli_reaches_only_the_api(
    e2e: E2E, bwrap_works: None
) -> None:
    # network=False with an ApiProxy: the CLI's requests go through the sandbox's relay and
    # the gateway to the scripted API; a Bash tool's own request elsewhere gets a 403.
    fetch = (
        "python3 -c \"import urllib.request as u; u.urlopen('http://example.com/', timeout=5)\""
        " 2>&1 | tail -1; python3 -c \"import socket; socket.create_connection(('1.1.1.1', 80),"
        ' 3)" 2>&1 | tail -1'
    )
    e2e.api.add(
        Reply(nth(0), tool_use("Bash", {"command": fetch}, id="toolu_net")),
        Reply(nth(1) & last_message_has_tool_result(), text("No network, as expected.")),
    )
    sock_dir = Path(tempfile.mkdtemp(prefix="nx-"))
    try:
        async with serving_gate(e2e) as gate:
            api = e2e.api.base_url.removeprefix("http://")
            proxy = ApiProxy(socket=str(sock_dir / "api.sock"), allow=(api,))
            plan = attrs.evolve(plan_for(e2e), network=False, api_proxy=proxy)
            res = await confined_turn(e2e, gate, plan, "Try the network.")
    finally:
        shutil.rmtree(sock_dir, ignore_errors=True)
    assert res.outcome.kind is TurnKind.CLAIMED_DONE, res.outcome
    assert res.outcome.final_text == "No network, as expected."
    assert gate.decisions == [("Bash", "allow_once")]
    requests = [r for r in e2e.api.message_requests() if r.stream]
    assert len(requests) == 2
    [tried] = requests[1].tool_results()
    output = tool_result_text(tried)
    assert "HTTP Error 403: Forbidden" in output  # the proxy said no
    assert "Network is unreachable" in output  # and there is no way around it
