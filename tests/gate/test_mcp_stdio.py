"""The permission MCP server as Claude Code sees it: the protocol, and the fail-closed
matrix (every failure is a valid deny with a reason, never an allow, an isError or silence).
"""

from __future__ import annotations

import json
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import trio

from nexo_trio.wire.gate_frames import PermissionFrame
from tests.gate import helpers
from tests.gate.helpers import (
    Script,
    StubOrchestrator,
    assert_deny,
    run_server,
    text_json,
)

SHORT_DEADLINE = 0.5


async def test_handshake(stub: StubOrchestrator, sock_dir: Path) -> None:
    async with run_server(stub.path, sock_dir) as server:
        discover = await server.request("server/discover", rpc_id="server-discover-probe-1")
        assert discover["error"]["code"] == -32601
        init = await server.request(
            "initialize",
            {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t"}},
            rpc_id=0,
        )
        assert init["jsonrpc"] == "2.0"
        assert init["result"]["protocolVersion"] == "2025-11-25"
        assert init["result"]["capabilities"] == {"tools": {"listChanged": False}}
        assert init["result"]["serverInfo"]["name"] == "nexo"
        await server.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        listed = await server.request("tools/list", rpc_id=1)
        (tool,) = listed["result"]["tools"]
        assert tool["name"] == "permission_prompt"
        schema = tool["inputSchema"]
        assert schema["type"] == "object"
        assert schema["required"] == ["tool_name", "input"]
        assert schema["properties"]["tool_name"]["type"] == "string"
        assert schema["properties"]["input"]["type"] == "object"
        assert schema["properties"]["tool_use_id"]["type"] == "string"
        assert (await server.request("ping", rpc_id="p"))["result"] == {}
    assert stub.requests == []  # the handshake never bothers the orchestrator


@pytest.mark.parametrize(
    ("asked", "answered"),
    [
        ("2024-11-05", "2024-11-05"),
        ("2025-03-26", "2025-03-26"),
        ("2025-06-18", "2025-06-18"),
        ("2025-11-25", "2025-11-25"),
        ("2026-07-28", "2025-11-25"),
        ("1999-01-01", "2025-11-25"),
        (None, "2025-11-25"),
    ],
)
async def test_protocol_version_negotiation(
    sock_dir: Path, asked: str | None, answered: str
) -> None:
    params: dict[str, Any] = {"capabilities": {}}
    if asked is not None:
        params["protocolVersion"] = asked
    async with run_server(sock_dir / "none.sock", sock_dir) as server:
        init = await server.request("initialize", params)
        assert init["result"]["protocolVersion"] == answered


async def test_custom_names(stub: StubOrchestrator, sock_dir: Path) -> None:
    extra = ["--tool-name", "approve", "--server-name", "perm"]
    async with run_server(stub.path, sock_dir, extra=extra) as server:
        init = await server.request("initialize", {"protocolVersion": "2025-11-25"})
        assert init["result"]["serverInfo"]["name"] == "perm"
        (tool,) = (await server.request("tools/list"))["result"]["tools"]
        assert tool["name"] == "approve"
        await server.send(server.call_message(7, name="approve"))
        assert text_json(await server.recv())["behavior"] == "allow"


async def test_unknown_methods_and_bad_requests(sock_dir: Path) -> None:
    async with run_server(sock_dir / "none.sock", sock_dir) as server:
        for method in ("resources/list", "prompts/list", "nonsense"):
            error = (await server.request(method))["error"]
            assert error["code"] == -32601
            assert method in error["message"]
        # Notifications, known or not, and responses get no answer at all.
        await server.send({"jsonrpc": "2.0", "method": "notifications/cancelled"})
        await server.send({"jsonrpc": "2.0", "method": "whatever/notification"})
        await server.send({"jsonrpc": "2.0", "id": 5, "result": {}})
        await server.expect_silence(0.2)
        await server.send(b"[1, 2]\n")
        assert (await server.recv())["error"]["code"] == -32600
        await server.send({"jsonrpc": "2.0", "id": {"x": 1}, "method": "ping"})
        bad_id = await server.recv()
        assert bad_id["id"] is None
        assert bad_id["error"]["code"] == -32600
        await server.send({"jsonrpc": "1.0", "id": 9, "method": "ping"})
        assert (await server.recv()) == {
            "jsonrpc": "2.0",
            "id": 9,
            "error": {"code": -32600, "message": "Invalid Request: not JSON-RPC 2.0"},
        }
        # A tools/call that is not even a valid request: a JSON-RPC error, not a deny.
        bad_params: list[object] = [None, {"arguments": {}}, {"name": 3}, "x"]
        for params in bad_params:
            message: dict[str, Any] = {"jsonrpc": "2.0", "id": 11, "method": "tools/call"}
            if params is not None:
                message["params"] = params
            await server.send(message)
            assert (await server.recv())["error"]["code"] == -32602
        assert (await server.request("ping"))["result"] == {}


async def test_parse_error_then_keeps_going(sock_dir: Path) -> None:
    async with run_server(sock_dir / "none.sock", sock_dir) as server:
        await server.send(b"{not json\n")
        error = await server.recv()
        assert error["id"] is None
        assert error["error"]["code"] == -32700
        await server.send(b"\xff\xfe\n")
        assert (await server.recv())["error"]["code"] == -32700
        await server.send(b"\n   \n")  # blank lines are skipped
        assert (await server.request("ping", rpc_id="after"))["result"] == {}
        assert "parse error" in server.stderr


async def test_allow_forwards_the_request(stub: StubOrchestrator, sock_dir: Path) -> None:
    async with run_server(stub.path, sock_dir, goal_id="goal-42") as server:
        await server.handshake()
        tool_input = {"command": "echo hi > out.txt", "description": "Write a file"}
        await server.send(server.call_message(2, tool_input))
        response = await server.recv()
        assert response["id"] == 2
        assert text_json(response) == {"behavior": "allow", "updatedInput": tool_input}
    (frame,) = stub.requests
    assert frame["type"] == "permission"
    assert frame["goal_id"] == "goal-42"
    assert frame["tool_name"] == "Bash"
    assert frame["input"] == tool_input
    assert frame["tool_use_id"] == "toolu_2"


async def test_allow_with_updated_input(stub: StubOrchestrator, sock_dir: Path) -> None:
    stub.script = helpers.allow({"command": "echo rewritten"})
    async with run_server(stub.path, sock_dir) as server:
        await server.send(server.call_message("a", {"command": "rm -rf /"}))
        assert text_json(await server.recv()) == {
            "behavior": "allow",
            "updatedInput": {"command": "echo rewritten"},
        }


async def test_deny_passes_the_message(stub: StubOrchestrator, sock_dir: Path) -> None:
    stub.script = helpers.deny("Not on my watch")
    async with run_server(stub.path, sock_dir) as server:
        await server.send(server.call_message(3))
        assert text_json(await server.recv()) == {"behavior": "deny", "message": "Not on my watch"}


@pytest.mark.parametrize(
    ("script", "needle"),
    [
        (helpers.never, "no decision from the orchestrator within 0.5s"),
        (helpers.wrong_id, "no decision from the orchestrator within 0.5s"),
        (helpers.garbage, "malformed reply"),
        (helpers.bad_behavior, "malformed reply"),
        (helpers.hang_up, "closed the connection"),
        (helpers.error_frame, "could not decide (decider exploded)"),
    ],
    ids=["never", "stale-id", "garbage", "bad-behavior", "hang-up", "error-frame"],
)
async def test_fail_closed_orchestrator_side(
    stub: StubOrchestrator, sock_dir: Path, script: Script, needle: str
) -> None:
    stub.script = script
    async with run_server(stub.path, sock_dir, deadline=SHORT_DEADLINE) as server:
        await server.handshake()
        started = time.monotonic()
        await server.send(server.call_message(2))
        response = await server.recv()
        assert response["id"] == 2
        assert_deny(response, "Permission denied", needle)
        assert time.monotonic() - started < SHORT_DEADLINE + 2.0
        # The server goes on: the next call is answered too (a deny or an allow, never
        # silence), after reconnecting if the connection was dropped.
        stub.script = helpers.allow()
        await server.send(server.call_message(3))
        assert text_json(await server.recv())["behavior"] == "allow"
    if script is helpers.wrong_id:
        assert "unknown or stale id" in server.stderr


async def test_fail_closed_no_socket(sock_dir: Path) -> None:
    async with run_server(sock_dir / "missing.sock", sock_dir) as server:
        await server.handshake()
        await server.send(server.call_message(2))
        assert_deny(await server.recv(), "unavailable", "no socket at", "missing.sock")
        assert "no socket at" in server.stderr


async def test_fail_closed_nothing_listening(sock_dir: Path) -> None:
    path = sock_dir / "dead.sock"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))  # a socket file nobody listens on: ECONNREFUSED
    dead.close()
    async with run_server(path, sock_dir) as server:
        await server.send(server.call_message(2))
        assert_deny(await server.recv(), "unavailable", "nothing is listening")


async def test_fail_closed_orchestrator_starts_later(sock_dir: Path, nursery: trio.Nursery) -> None:
    path = sock_dir / "late.sock"
    async with run_server(path, sock_dir) as server:
        await server.send(server.call_message(1))
        assert_deny(await server.recv(), "no socket at")
        stub = StubOrchestrator(path)
        await nursery.start(stub.serve)
        await server.send(server.call_message(2))
        assert text_json(await server.recv())["behavior"] == "allow"


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ({"name": "other_tool", "arguments": {"tool_name": "Bash", "input": {}}}, "unknown tool"),
        ({"name": "permission_prompt"}, "'arguments' must be an object"),
        ({"name": "permission_prompt", "arguments": {"input": {}}}, "'tool_name'"),
        ({"name": "permission_prompt", "arguments": {"tool_name": "Bash"}}, "'input'"),
        (
            {"name": "permission_prompt", "arguments": {"tool_name": "Bash", "input": "ls"}},
            "'input' must be an object",
        ),
        (
            {
                "name": "permission_prompt",
                "arguments": {"tool_name": "Bash", "input": {}, "tool_use_id": 5},
            },
            "'tool_use_id'",
        ),
    ],
    ids=["unknown-tool", "no-arguments", "no-tool-name", "no-input", "bad-input", "bad-id"],
)
async def test_fail_closed_malformed_calls(
    stub: StubOrchestrator, sock_dir: Path, params: dict[str, Any], needle: str
) -> None:
    async with run_server(stub.path, sock_dir) as server:
        response = await server.request("tools/call", params, rpc_id=4)
        assert "error" not in response
        assert_deny(response, "Permission denied", needle)
    assert stub.requests == []


async def test_fail_closed_input_too_large(stub: StubOrchestrator, sock_dir: Path) -> None:
    from nexo_trio.wire.gate_frames import MAX_FRAME_BYTES

    async with run_server(stub.path, sock_dir) as server:
        await server.send(server.call_message(5, {"content": "x" * (MAX_FRAME_BYTES + 10)}))
        assert_deny(await server.recv(timeout=20), "too large")
    assert stub.requests == []


async def test_connection_drop_denies_every_call_in_flight_then_reconnects(
    stub: StubOrchestrator, sock_dir: Path
) -> None:
    hang_up_now = trio.Event()

    async def script(frame: PermissionFrame) -> helpers.Action:
        if frame.input.get("n") == 3:
            hang_up_now.set()
            return helpers.CLOSE
        await hang_up_now.wait()
        return None

    stub.script = script
    async with run_server(stub.path, sock_dir, deadline=30) as server:
        for n in (1, 2, 3):
            await server.send(server.call_message(n, {"n": n}))
        answers = {}
        for _ in range(3):
            response = await server.recv()
            answers[response["id"]] = assert_deny(response, "closed the connection")
        assert sorted(answers) == [1, 2, 3]
        stub.script = helpers.allow()
        await server.send(server.call_message(4))
        assert text_json(await server.recv())["behavior"] == "allow"
    assert stub.connections == 2


async def test_concurrent_calls_answered_out_of_order(
    stub: StubOrchestrator, sock_dir: Path
) -> None:
    decided = {marker: trio.Event() for marker in "abcd"}

    async def script(frame: PermissionFrame) -> helpers.Action:
        marker = frame.input["marker"]
        await decided[marker].wait()
        if marker == "d":
            return await helpers.deny(f"no {marker}")(frame)
        return await helpers.allow({"marker": marker, "seen": frame.tool_use_id})(frame)

    stub.script = script
    async with run_server(stub.path, sock_dir) as server:
        await server.handshake()
        for rpc_id, marker in ((10, "a"), ("eleven", "b"), (12, "c"), (13, "d")):
            await server.send(server.call_message(rpc_id, {"marker": marker}))
        # A ping is answered at once, while the calls wait.
        await server.send({"jsonrpc": "2.0", "id": "ping", "method": "ping"})
        responses = [await server.recv()]
        # Each call is answered once decided, whatever is still pending before it.
        for marker in "cbda":
            decided[marker].set()
            responses.append(await server.recv())
    order = [r["id"] for r in responses]
    assert order == ["ping", 12, "eleven", 13, 10]
    by_id = {r["id"]: r for r in responses}
    for rpc_id, marker in ((10, "a"), ("eleven", "b"), (12, "c")):
        assert text_json(by_id[rpc_id]) == {
            "behavior": "allow",
            "updatedInput": {"marker": marker, "seen": f"toolu_{rpc_id}"},
        }
    assert text_json(by_id[13]) == {"behavior": "deny", "message": "no d"}
    assert stub.connections == 1
    assert len({frame["id"] for frame in stub.requests}) == 4


async def test_stdin_eof_denies_pending_and_exits_0(stub: StubOrchestrator, sock_dir: Path) -> None:
    stub.script = helpers.never
    async with run_server(stub.path, sock_dir, deadline=30) as server:
        await server.handshake()
        await server.send(server.call_message(2))
        with trio.fail_after(5):
            await stub.wait_for_requests()
        await server.close_stdin()
        assert_deny(await server.recv(), "shutting down")
        assert await server.wait() == 0


async def test_stdin_eof_idle_exits_0(sock_dir: Path) -> None:
    async with run_server(sock_dir / "none.sock", sock_dir) as server:
        await server.close_stdin()
        assert await server.wait() == 0


async def test_last_line_without_newline_is_answered(sock_dir: Path) -> None:
    async with run_server(sock_dir / "none.sock", sock_dir) as server:
        await server.send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "ping"}).encode())
        await server.close_stdin()
        assert (await server.recv()) == {"jsonrpc": "2.0", "id": 1, "result": {}}
        assert await server.wait() == 0


async def test_sigterm_denies_pending_and_exits_0(stub: StubOrchestrator, sock_dir: Path) -> None:
    stub.script = helpers.never
    async with run_server(stub.path, sock_dir, deadline=30) as server:
        await server.handshake()
        await server.send(server.call_message(2))
        with trio.fail_after(5):
            await stub.wait_for_requests()
        server.process.send_signal(signal.SIGTERM)
        assert_deny(await server.recv(), "shutting down")
        assert await server.wait() == 0
        assert "terminated by a signal" in server.stderr


async def test_answers_initialize_quickly(sock_dir: Path) -> None:
    # Generous bound: the machine may be loaded. The benchmark has the real figure.
    started = time.monotonic()
    async with run_server(sock_dir / "none.sock", sock_dir) as server:
        await server.request("initialize", {"protocolVersion": "2025-11-25"})
        elapsed = time.monotonic() - started
        await server.close_stdin()
        assert await server.wait() == 0
    assert elapsed < 2.0


async def test_never_imports_heavy_modules(sock_dir: Path) -> None:
    probe = (
        "import sys, runpy\n"
        "sys.argv = ['x', '--socket', sys.argv[1], '--goal-id', 'g']\n"
        "try:\n"
        "    runpy.run_module('nexo_trio.gate.mcp_stdio', run_name='__main__')\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = {'trio', 'attrs', 'cattrs', 'orjson', 'click', 'yaml', 'psutil', 'rich'}\n"
        "print(sorted(heavy & {m.split('.')[0] for m in sys.modules}))\n"
    )
    done = await trio.run_process(
        [sys.executable, "-c", probe, str(sock_dir / "none.sock")],
        stdin=b"",
        capture_stdout=True,
        capture_stderr=True,
    )
    assert done.stdout.decode().strip().splitlines()[-1] == "[]"


def test_bad_command_line() -> None:
    from nexo_trio.gate import mcp_stdio

    with pytest.raises(SystemExit) as missing:
        mcp_stdio.main(["--goal-id", "g"])
    assert missing.value.code == 2
    with pytest.raises(SystemExit) as negative:
        mcp_stdio.main(["--socket", "/x", "--goal-id", "g", "--deadline", "0"])
    assert negative.value.code == 2
