"""Test doubles of the permission bridge: a scripted orchestrator on a Unix socket, and the
MCP server run as a real subprocess with a line-oriented JSON-RPC driver; and
:func:`behavior`, what Claude Code reads for a decision."""

from __future__ import annotations

import itertools
import json
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, Final

import attrs
import trio

from nexo_trio.core.framing import Line, LineFramer
from nexo_trio.core.permission import Decision
from nexo_trio.wire import gate_frames
from nexo_trio.wire.gate_frames import DecisionFrame, ErrorFrame, PermissionFrame

MCP_MODULE: Final = "nexo_trio.gate.mcp_stdio"
TOOL: Final = "permission_prompt"


class Close:
    """The stub hangs up instead of answering."""


_server_numbers = itertools.count()
CLOSE: Final = Close()
Action = bytes | Close | None
"""What the stub does with one request: send these bytes, hang up, or nothing (None)."""
Script = Callable[[PermissionFrame], Awaitable[Action]]


def allow(updated_input: dict[str, Any] | None = None) -> Script:
    """Allow (with ``updated_input`` if given, else the server keeps the request's input)."""

    async def script(frame: PermissionFrame) -> Action:
        return gate_frames.encode_reply(DecisionFrame(frame.id, True, updated_input))

    return script


def deny(message: str = "Denied by the stub") -> Script:
    """Deny with ``message``."""

    async def script(frame: PermissionFrame) -> Action:
        return gate_frames.encode_reply(DecisionFrame(frame.id, False, message=message))

    return script


async def never(frame: PermissionFrame) -> Action:
    """Never answer."""
    return None


async def wrong_id(frame: PermissionFrame) -> Action:
    """An allow for an id that is not the request's (a stale reply)."""
    return gate_frames.encode_reply(DecisionFrame(f"not-{frame.id}", True))


async def garbage(frame: PermissionFrame) -> Action:
    """A line that is not JSON."""
    return b"this is not a frame\n"


async def bad_behavior(frame: PermissionFrame) -> Action:
    """A frame for the right id with a behavior nobody knows."""
    bad = {"v": 1, "type": "decision", "id": frame.id, "behavior": "maybe"}
    return json.dumps(bad).encode() + b"\n"


async def hang_up(frame: PermissionFrame) -> Action:
    """Close the connection."""
    return CLOSE


async def error_frame(frame: PermissionFrame) -> Action:
    """An error frame for the request's id."""
    return gate_frames.encode_reply(ErrorFrame(frame.id, "decider exploded"))


def behavior(decision: Decision, request_input: dict[str, Any]) -> dict[str, Any]:
    """What Claude Code reads for ``decision`` on a call with ``request_input``: the JSON in
    the text block, after the decision went through the socket frame (encoded, decoded) and
    the MCP answer, as it does between the gate and the CLI."""
    request = PermissionFrame("r1", "g1", "Tool", request_input)
    line = gate_frames.encode_reply(gate_frames.decision_frame(request, decision))
    reply = gate_frames.decode_reply(line.removesuffix(b"\n"))
    assert isinstance(reply, DecisionFrame)
    assert reply.id == "r1"
    (block,) = gate_frames.tool_answer(reply, request_input)["content"]
    assert block["type"] == "text"
    answer = json.loads(block["text"])
    assert isinstance(answer, dict)
    return answer


@attrs.define
class StubOrchestrator:
    """A trio Unix-socket server that answers permission frames as ``script`` says.

    Each request is handled in its own task (so a slow answer never holds up another);
    ``requests`` keeps every frame received (its JSON object, validated) and
    ``connections`` counts the connections.
    """

    path: Path
    script: Script = allow()
    requests: list[dict[str, Any]] = attrs.Factory(list)
    connections: int = 0
    _arrived: trio.Event = attrs.Factory(trio.Event)

    async def wait_for_requests(self, count: int = 1) -> None:
        """Until ``count`` requests have arrived."""
        while len(self.requests) < count:
            await self._arrived.wait()

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Bind and listen, then serve until cancelled."""
        sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
        await sock.bind(str(self.path))
        sock.listen(16)
        listener = trio.SocketListener(sock)
        async with listener, trio.open_nursery() as nursery:
            task_status.started()
            await trio.serve_listeners(self._handle, [listener], handler_nursery=nursery)

    async def _handle(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        lock = trio.Lock()
        framer = LineFramer()
        async with stream, trio.open_nursery() as nursery:
            while True:
                try:
                    data = await stream.receive_some(65536)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    break
                if not data:
                    break
                for item in framer.feed(data):
                    assert isinstance(item, Line), item
                    frame = gate_frames.decode_request(item.data)
                    self.requests.append(json.loads(item.data))
                    self._arrived.set()
                    self._arrived = trio.Event()
                    nursery.start_soon(self._answer, stream, lock, frame)
            nursery.cancel_scope.cancel()

    async def _answer(
        self, stream: trio.SocketStream, lock: trio.Lock, frame: PermissionFrame
    ) -> None:
        action = await self.script(frame)
        async with lock:
            try:
                if isinstance(action, Close):
                    await stream.aclose()
                elif action is not None:
                    await stream.send_all(action)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass


@contextmanager
def short_tempdir() -> Iterator[Path]:
    """A directory with a short path (a Unix socket path must stay under ~100 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="nxg", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def server_argv(
    socket_path: Path | str,
    *,
    goal_id: str = "g1",
    deadline: float = 5.0,
    extra: Sequence[str] = (),
) -> list[str]:
    """The command line of the MCP server under test."""
    return [
        sys.executable,
        "-m",
        MCP_MODULE,
        "--socket",
        str(socket_path),
        "--goal-id",
        goal_id,
        "--deadline",
        str(deadline),
        *extra,
    ]


class McpServer:
    """The MCP server as a subprocess: send JSON-RPC lines, read JSON-RPC lines."""

    def __init__(self, process: trio.Process, stderr_path: Path) -> None:
        self.process = process
        self.stderr_path = stderr_path
        self._buffer = b""
        self._next_id = 100

    @property
    def stderr(self) -> str:
        """What the server logged so far."""
        return self.stderr_path.read_text()

    async def send(self, message: dict[str, Any] | bytes) -> None:
        """One message (a dict is encoded as a JSON line; bytes go as they are)."""
        data = message if isinstance(message, bytes) else json.dumps(message).encode() + b"\n"
        assert self.process.stdin is not None
        await self.process.stdin.send_all(data)

    async def recv(self, timeout: float = 10.0) -> dict[str, Any]:
        """The next message from the server (fails the test after ``timeout``)."""
        assert self.process.stdout is not None
        with trio.fail_after(timeout):
            while b"\n" not in self._buffer:
                data = await self.process.stdout.receive_some(65536)
                if not data:
                    raise EOFError(f"the server closed stdout; stderr: {self.stderr}")
                self._buffer += data
        line, self._buffer = self._buffer.split(b"\n", 1)
        message = json.loads(line)
        assert isinstance(message, dict)
        return message

    async def expect_silence(self, seconds: float) -> None:
        """Nothing arrives on stdout for ``seconds``."""
        assert self.process.stdout is not None
        with trio.move_on_after(seconds):
            data = await self.process.stdout.receive_some(65536)
            raise AssertionError(f"unexpected output: {data!r}")

    async def request(
        self, method: str, params: dict[str, Any] | None = None, *, rpc_id: str | int | None = None
    ) -> dict[str, Any]:
        """Send a request and return the response to it (the next message)."""
        if rpc_id is None:
            self._next_id += 1
            rpc_id = self._next_id
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": rpc_id, "method": method}
        if params is not None:
            message["params"] = params
        await self.send(message)
        response = await self.recv()
        assert response["id"] == rpc_id, response
        return response

    async def handshake(self) -> dict[str, Any]:
        """server/discover, initialize, notifications/initialized, tools/list; the list."""
        await self.request("server/discover", rpc_id="server-discover-probe-1")
        await self.request("initialize", {"protocolVersion": "2025-11-25", "capabilities": {}})
        await self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        return await self.request("tools/list")

    def call_message(
        self,
        rpc_id: int | str,
        tool_input: dict[str, Any] | None = None,
        *,
        tool_name: str = "Bash",
        name: str = TOOL,
    ) -> dict[str, Any]:
        """A tools/call request for the permission tool."""
        return {
            "jsonrpc": "2.0",
            "id": rpc_id,
            "method": "tools/call",
            "params": {
                "name": name,
                "arguments": {
                    "tool_name": tool_name,
                    "input": tool_input if tool_input is not None else {"command": "ls"},
                    "tool_use_id": f"toolu_{rpc_id}",
                },
            },
        }

    async def close_stdin(self) -> None:
        """EOF on the server's stdin."""
        assert self.process.stdin is not None
        await self.process.stdin.aclose()

    async def wait(self, timeout: float = 10.0) -> int:
        """The exit code (fails the test after ``timeout``)."""
        with trio.fail_after(timeout):
            return await self.process.wait()


@asynccontextmanager
async def run_server(
    socket_path: Path | str, directory: Path, **options: Any
) -> AsyncIterator[McpServer]:
    """Start the MCP server; it is killed (and reaped) at exit if still running."""
    stderr_path = directory / f"mcp-stderr-{next(_server_numbers)}.log"
    with stderr_path.open("wb") as err:
        process = await trio.lowlevel.open_process(
            server_argv(socket_path, **options),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
        )
    server = McpServer(process, stderr_path)
    try:
        yield server
    finally:
        with trio.CancelScope(shield=True):
            if process.returncode is None:
                process.send_signal(signal.SIGKILL)
            await process.wait()
            for pipe in (process.stdin, process.stdout):
                if pipe is not None:
                    await pipe.aclose()


def text_json(response: dict[str, Any]) -> dict[str, Any]:
    """The JSON in a tools/call result's text block (checking it is a valid, non-error one)."""
    result = response["result"]
    assert not result.get("isError"), response
    content = result["content"]
    assert len(content) == 1, response
    assert content[0]["type"] == "text", response
    decoded = json.loads(content[0]["text"])
    assert isinstance(decoded, dict)
    return decoded


def assert_deny(response: dict[str, Any], *needles: str) -> str:
    """A valid deny whose message contains every needle; the message."""
    answer = text_json(response)
    assert answer["behavior"] == "deny", answer
    message = answer["message"]
    assert isinstance(message, str)
    assert message
    for needle in needles:
        assert needle in message, (needle, message)
    return message
