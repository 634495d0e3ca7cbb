"""The permission prompt MCP server Claude Code spawns on every turn (stdlib only).

Run as::

    python -m nexo_trio.gate.mcp_stdio --socket PATH --goal-id ID [--deadline 50]
        [--tool-name permission_prompt] [--server-name nexo]

It speaks newline-delimited JSON-RPC 2.0 on stdin/stdout (MCP's stdio transport) and
offers one tool, ``permission_prompt``. Each ``tools/call`` becomes a permission request
frame (:mod:`nexo_trio.wire.gate_frames`) on one persistent Unix-socket connection to the
orchestrator, whose decision goes back to Claude Code as a text block holding
``{"behavior": "allow", "updatedInput": {...}}`` or ``{"behavior": "deny", "message": ...}``.

It fails closed: whatever goes wrong (no socket, nobody listening, connection lost, no
decision before ``--deadline``, a malformed, stale or error reply, a malformed call) the
call is answered with a valid *deny* and a reason. Never ``isError``, never silence: for
Claude Code an ``isError`` or a timed-out call is a failed tool call, not a denial, and
the orchestrator could not count it. ``--deadline`` must be shorter than the CLI's tool
timeout for the server's deny to arrive first; the orchestrator sets both.

One thread, one ``selectors`` loop over stdin, the socket and a signal wake-up pipe, so
several calls can be in flight at once, each with its own deadline. Logs go to stderr
only (stdout is the protocol). Exits 0 on stdin EOF and on SIGTERM, denying first what is
still pending.

Start-up time matters (one spawn per turn): this module imports the stdlib and
:mod:`nexo_trio.wire.gate_frames` only, never trio, attrs or the rest of the package.
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import signal
import socket
import sys
import time
from typing import Any, Final

from nexo_trio import __version__
from nexo_trio.wire import gate_frames

LOG_PREFIX: Final = "nexo-trio permission-mcp:"
SUPPORTED_PROTOCOL_VERSIONS: Final = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")
LATEST_PROTOCOL_VERSION: Final = SUPPORTED_PROTOCOL_VERSIONS[-1]
DEFAULT_DEADLINE_S: Final = 50.0
DEFAULT_TOOL_NAME: Final = "permission_prompt"
DEFAULT_SERVER_NAME: Final = "nexo"
CONNECT_TIMEOUT_S: Final = 5.0
READ_CHUNK: Final = 64 * 1024
MAX_STDIN_LINE: Final = 2 * gate_frames.MAX_FRAME_BYTES
"""A JSON-RPC line longer than this is dropped (answered with a parse error, id null)."""

PARSE_ERROR: Final = -32700
INVALID_REQUEST: Final = -32600
METHOD_NOT_FOUND: Final = -32601
INVALID_PARAMS: Final = -32602

INPUT_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "properties": {
        "tool_name": {"type": "string", "description": "The tool Claude wants to use."},
        "input": {"type": "object", "description": "The tool's input."},
        "tool_use_id": {"type": "string", "description": "The id of the tool use."},
    },
    "required": ["tool_name", "input"],
}

_STDIN: Final = "stdin"
_SOCKET: Final = "socket"
_WAKEUP: Final = "wakeup"


def log(message: str) -> None:
    """One line on stderr (stdout is the protocol)."""
    try:
        sys.stderr.write(f"{LOG_PREFIX} {message}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def _short(data: bytes | str, limit: int = 200) -> str:
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    text = text.rstrip("\n")
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} chars)"


def _deny_text(message: str) -> dict[str, Any]:
    behavior = {"behavior": "deny", "message": message}
    return {"content": [{"type": "text", "text": json.dumps(behavior)}]}


def _allow_text(updated_input: dict[str, Any]) -> dict[str, Any]:
    behavior = {"behavior": "allow", "updatedInput": updated_input}
    return {"content": [{"type": "text", "text": json.dumps(behavior)}]}


def _unavailable(reason: str) -> str:
    return f"Permission denied: the permission gate is unavailable ({reason})"


class _Call:
    """One ``tools/call`` waiting for the orchestrator."""

    __slots__ = ("deadline", "rpc_id", "tool_input", "tool_name")

    def __init__(
        self, rpc_id: str | int, tool_name: str, tool_input: dict[str, Any], deadline: float
    ) -> None:
        self.rpc_id = rpc_id
        self.tool_name = tool_name
        self.tool_input = tool_input
        self.deadline = deadline


class PermissionServer:
    """The server's state and its event loop (see the module docstring)."""

    def __init__(
        self,
        *,
        socket_path: str,
        goal_id: str,
        deadline_s: float = DEFAULT_DEADLINE_S,
        tool_name: str = DEFAULT_TOOL_NAME,
        server_name: str = DEFAULT_SERVER_NAME,
        stdin_fd: int = 0,
        stdout_fd: int = 1,
    ) -> None:
        self.socket_path = socket_path
        self.goal_id = goal_id
        self.deadline_s = deadline_s
        self.tool_name = tool_name
        self.server_name = server_name
        self.stdin_fd = stdin_fd
        self.stdout_fd = stdout_fd
        self.selector: selectors.BaseSelector = selectors.DefaultSelector()
        self.sock: socket.socket | None = None
        self.sock_in = bytearray()
        self.sock_out = bytearray()
        self.stdin_buf = bytearray()
        self.skipping_long_line = False
        self.stdin_open = True
        self.stdout_open = True
        self.terminating = False
        self.pending: dict[str, _Call] = {}
        self.counter = 0
        # Request ids are unique per process, so a reply meant for another server (or an
        # earlier connection of this one) can never match a call of ours.
        self.id_prefix = f"{os.getpid()}-"

    # ------------------------------------------------------------------ loop

    def run(self) -> int:
        """Serve until stdin closes or SIGTERM; always returns 0."""
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        old_wakeup = signal.set_wakeup_fd(wake_w)
        old_handlers = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            self.selector.register(self.stdin_fd, selectors.EVENT_READ, _STDIN)
        except PermissionError:
            # epoll refuses regular files and /dev/null; poll() takes them (always ready).
            self.selector.close()
            self.selector = selectors.PollSelector()
            self.selector.register(self.stdin_fd, selectors.EVENT_READ, _STDIN)
        self.selector.register(wake_r, selectors.EVENT_READ, _WAKEUP)
        try:
            while self.stdin_open and self.stdout_open and not self.terminating:
                for key, mask in self.selector.select(self._timeout()):
                    if key.data == _STDIN:
                        self._on_stdin()
                    elif key.data == _SOCKET and key.fileobj is self.sock:
                        if mask & selectors.EVENT_WRITE:
                            self._flush_socket()
                        if mask & selectors.EVENT_READ and key.fileobj is self.sock:
                            self._on_socket()
                    elif key.data == _WAKEUP:
                        while True:
                            try:
                                if not os.read(wake_r, 512):
                                    break
                            except OSError:
                                break
                self._expire()
            if self.terminating:
                log("terminated by a signal")
            reason = "the permission server is shutting down before a decision arrived"
            self._deny_all(f"Permission denied: {reason}")
        finally:
            self._close_socket()
            signal.set_wakeup_fd(old_wakeup)
            for sig, handler in old_handlers.items():
                signal.signal(sig, handler)
            self.selector.close()
            os.close(wake_r)
            os.close(wake_w)
        return 0

    def _on_signal(self, signum: int, frame: object) -> None:
        # Only a flag: the wake-up pipe makes select() return, and the loop winds down
        # between two whole messages (never in the middle of a write).
        self.terminating = True

    def _timeout(self) -> float | None:
        if not self.pending:
            return None
        first = min(call.deadline for call in self.pending.values())
        return max(0.0, first - time.monotonic())

    def _expire(self) -> None:
        # Fail closed on the server's own deadline, before the CLI's tool timeout turns
        # the call into an error that is not a denial.
        now = time.monotonic()
        for request_id, call in list(self.pending.items()):
            if call.deadline <= now:
                del self.pending[request_id]
                log(f"request {request_id} ({call.tool_name}): no decision in {self.deadline_s:g}s")
                self._answer(
                    call.rpc_id,
                    _deny_text(
                        f"Permission denied: no decision from the orchestrator within "
                        f"{self.deadline_s:g}s"
                    ),
                )

    # ------------------------------------------------------------------ stdout

    def _send(self, message: dict[str, Any]) -> None:
        if not self.stdout_open:
            return
        data = memoryview(json.dumps(message, separators=(",", ":")).encode() + b"\n")
        try:
            while data:
                try:
                    written = os.write(self.stdout_fd, data)
                except BlockingIOError:  # a non-blocking stdout that is full: wait a bit
                    time.sleep(0.005)
                    continue
                data = data[written:]
        except OSError as exc:
            log(f"stdout is closed ({exc}); exiting")
            self.stdout_open = False

    def _answer(self, rpc_id: str | int, result: dict[str, Any]) -> None:
        self._send({"jsonrpc": "2.0", "id": rpc_id, "result": result})

    def _error(self, rpc_id: str | int | None, code: int, message: str) -> None:
        self._send({"jsonrpc": "2.0", "id": rpc_id, "error": {"code": code, "message": message}})

    def _deny(self, rpc_id: str | int, message: str) -> None:
        log(f"deny: {message}")
        self._answer(rpc_id, _deny_text(message))

    def _deny_all(self, message: str) -> None:
        calls = list(self.pending.values())
        self.pending.clear()
        for call in calls:
            self._deny(call.rpc_id, message)

    # ------------------------------------------------------------------ stdin

    def _on_stdin(self) -> None:
        try:
            data = os.read(self.stdin_fd, READ_CHUNK)
        except BlockingIOError:
            return
        except OSError as exc:
            log(f"stdin failed ({exc}); exiting")
            data = b""
        if not data:
            # EOF: a last line without its newline still counts.
            if self.stdin_buf and not self.skipping_long_line:
                self._on_message(bytes(self.stdin_buf))
            self.stdin_buf.clear()
            self.stdin_open = False
            self.selector.unregister(self.stdin_fd)
            return
        start = 0
        while True:
            end = data.find(b"\n", start)
            if end < 0:
                break
            if self.skipping_long_line:
                self.skipping_long_line = False
            else:
                self.stdin_buf += data[start:end]
                line = bytes(self.stdin_buf)
                self.stdin_buf.clear()
                if line.strip():
                    self._on_message(line)
            start = end + 1
        if not self.skipping_long_line:
            self.stdin_buf += data[start:]
            if len(self.stdin_buf) > MAX_STDIN_LINE:
                # We cannot even know its id: the best answer is a parse error.
                log(f"dropping a message of more than {MAX_STDIN_LINE} bytes")
                self.stdin_buf.clear()
                self.skipping_long_line = True
                self._error(None, PARSE_ERROR, "Parse error: message too large")

    def _on_message(self, line: bytes) -> None:
        try:
            message = json.loads(line)
        except (ValueError, RecursionError) as exc:  # also UnicodeDecodeError; too deep
            log(f"parse error: {exc}: {_short(line)}")
            self._error(None, PARSE_ERROR, f"Parse error: {exc}")
            return
        if not isinstance(message, dict):
            self._error(None, INVALID_REQUEST, "Invalid Request: expected a JSON object")
            return
        method = message.get("method")
        if method is None:
            return  # a response to a request we never sent
        has_id = "id" in message
        rpc_id = message.get("id")
        if has_id and (isinstance(rpc_id, bool) or not isinstance(rpc_id, str | int)):
            self._error(None, INVALID_REQUEST, "Invalid Request: 'id' must be a string or integer")
            return
        if message.get("jsonrpc") != "2.0" or not isinstance(method, str):
            if has_id:
                assert isinstance(rpc_id, str | int)
                self._error(rpc_id, INVALID_REQUEST, "Invalid Request: not JSON-RPC 2.0")
            return
        if not has_id:
            return  # notifications (initialized, cancelled, ...) need no answer
        assert isinstance(rpc_id, str | int)
        params = message.get("params")
        if method == "initialize":
            self._initialize(rpc_id, params)
        elif method == "ping":
            self._answer(rpc_id, {})
        elif method == "tools/list":
            self._answer(rpc_id, {"tools": [self._tool()]})
        elif method == "tools/call":
            self._tools_call(rpc_id, params)
        else:
            # server/discover included: Claude Code then falls back to `initialize`.
            self._error(rpc_id, METHOD_NOT_FOUND, f"Method not found: {method}")

    def _initialize(self, rpc_id: str | int, params: object) -> None:
        if params is not None and not isinstance(params, dict):
            self._error(rpc_id, INVALID_PARAMS, "Invalid params: expected an object")
            return
        asked = (params or {}).get("protocolVersion")
        version = asked if asked in SUPPORTED_PROTOCOL_VERSIONS else LATEST_PROTOCOL_VERSION
        self._answer(
            rpc_id,
            {
                "protocolVersion": version,
                "capabilities": {"tools": {"listChanged": False}},
                "serverInfo": {"name": self.server_name, "version": __version__},
            },
        )

    def _tool(self) -> dict[str, Any]:
        return {
            "name": self.tool_name,
            "description": (
                "Decide whether a tool call may run: answers a JSON text "
                '{"behavior": "allow", "updatedInput": {...}} or '
                '{"behavior": "deny", "message": "..."}.'
            ),
            "inputSchema": INPUT_SCHEMA,
        }

    def _tools_call(self, rpc_id: str | int, params: object) -> None:
        if not isinstance(params, dict) or not isinstance(params.get("name"), str):
            # Not even a valid tools/call: the only case that gets a JSON-RPC error.
            self._error(rpc_id, INVALID_PARAMS, "Invalid params: tools/call needs a string 'name'")
            return
        name = params["name"]
        if name != self.tool_name:
            self._deny(
                rpc_id,
                f"Permission denied: unknown tool {name!r} "
                f"(this server only provides {self.tool_name!r})",
            )
            return
        arguments = params.get("arguments")
        problem = _arguments_problem(arguments)
        if problem is not None:
            self._deny(rpc_id, f"Permission denied: malformed permission request ({problem})")
            return
        assert isinstance(arguments, dict)
        self.counter += 1
        request_id = f"{self.id_prefix}{self.counter}"
        frame = gate_frames.permission_request(
            request_id,
            goal_id=self.goal_id,
            tool_name=arguments["tool_name"],
            tool_input=arguments["input"],
            tool_use_id=arguments.get("tool_use_id"),
        )
        if len(frame) > gate_frames.MAX_FRAME_BYTES:
            self._deny(
                rpc_id,
                f"Permission denied: the tool input is too large for the permission gate "
                f"({len(frame)} bytes, at most {gate_frames.MAX_FRAME_BYTES})",
            )
            return
        failure = self._connect()
        if failure is not None:
            self._deny(rpc_id, _unavailable(failure))
            return
        self.pending[request_id] = _Call(
            rpc_id, arguments["tool_name"], arguments["input"], time.monotonic() + self.deadline_s
        )
        self.sock_out += frame
        self._flush_socket()

    # ------------------------------------------------------------------ socket

    def _connect(self) -> str | None:
        """Connect if not connected; the reason it failed, or None."""
        if self.sock is not None:
            return None
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(min(CONNECT_TIMEOUT_S, self.deadline_s))
        try:
            sock.connect(self.socket_path)
        except FileNotFoundError:
            reason = f"no socket at {self.socket_path}; is the orchestrator running?"
        except ConnectionRefusedError:
            reason = f"nothing is listening on {self.socket_path}"
        except TimeoutError:
            reason = f"connecting to {self.socket_path} timed out"
        except OSError as exc:
            reason = f"cannot connect to {self.socket_path}: {exc.strerror or exc}"
        else:
            sock.setblocking(False)
            self.sock = sock
            self.selector.register(sock, selectors.EVENT_READ, _SOCKET)
            return None
        sock.close()
        log(reason)
        return reason

    def _close_socket(self) -> None:
        if self.sock is None:
            return
        self.selector.unregister(self.sock)
        self.sock.close()
        self.sock = None
        self.sock_in.clear()
        self.sock_out.clear()

    def _drop_connection(self, reason: str) -> None:
        # Every call in flight on this connection can no longer be answered by the
        # orchestrator: deny them all now. The next call reconnects.
        log(f"connection dropped: {reason}")
        self._close_socket()
        self._deny_all(_unavailable(reason))

    def _flush_socket(self) -> None:
        assert self.sock is not None
        while self.sock_out:
            try:
                sent = self.sock.send(self.sock_out)
            except BlockingIOError:
                break
            except OSError as exc:
                self._drop_connection(f"sending to the orchestrator failed: {exc}")
                return
            del self.sock_out[:sent]
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if self.sock_out else 0)
        self.selector.modify(self.sock, events, _SOCKET)

    def _on_socket(self) -> None:
        assert self.sock is not None
        try:
            data = self.sock.recv(READ_CHUNK)
        except BlockingIOError:
            return
        except OSError as exc:
            self._drop_connection(f"reading from the orchestrator failed: {exc}")
            return
        if not data:
            self._drop_connection("the orchestrator closed the connection before deciding")
            return
        # What is buffered holds no newline: search only the new bytes (a long reply arrives
        # in many chunks).
        scan_from = len(self.sock_in)
        self.sock_in += data
        while self.sock is not None:
            end = self.sock_in.find(b"\n", scan_from)
            if end < 0:
                break
            line = bytes(self.sock_in[:end])
            del self.sock_in[: end + 1]
            scan_from = 0
            if line.strip():
                self._on_reply(line)
        if self.sock is not None and len(self.sock_in) > gate_frames.MAX_FRAME_BYTES:
            self._drop_connection(
                f"malformed reply from the orchestrator (a line of more than "
                f"{gate_frames.MAX_FRAME_BYTES} bytes)"
            )

    def _on_reply(self, line: bytes) -> None:
        try:
            frame = gate_frames.decode(line)
            gate_frames.check_reply(frame)
        except gate_frames.FrameError as exc:
            request_id = gate_frames.salvage_id(line)
            call = self.pending.pop(request_id, None) if request_id is not None else None
            log(f"malformed reply ({exc}): {_short(line)}")
            if call is not None:
                self._deny(
                    call.rpc_id, f"Permission denied: malformed reply from the orchestrator ({exc})"
                )
            else:
                # Garbage we cannot tie to a call: the stream can't be trusted any more.
                # Deny everything in flight rather than wait for the deadlines.
                self._drop_connection(f"malformed reply from the orchestrator ({exc})")
            return
        request_id = frame.get("id")
        if frame["type"] == "error":
            if request_id is None:
                # The orchestrator could not tell which request it failed on: any of ours
                # may be lost, so fail them all closed now.
                log(f"error frame without an id: {frame['error']}")
                self._deny_all(
                    f"Permission denied: the orchestrator reported an error ({frame['error']})"
                )
                return
            call = self.pending.pop(request_id, None) if isinstance(request_id, str) else None
            if call is None:
                log(f"ignoring an error frame for unknown or stale id {request_id!r}")
                return
            self._deny(
                call.rpc_id,
                f"Permission denied: the orchestrator could not decide ({frame['error']})",
            )
            return
        assert isinstance(request_id, str)
        call = self.pending.pop(request_id, None)
        if call is None:
            # Late (after our deadline denied it) or not ours: never applied.
            log(f"ignoring a reply with unknown or stale id {request_id!r}")
            return
        if frame["behavior"] == "allow":
            updated = frame.get("updated_input")
            log(f"allow: {call.tool_name}")
            self._answer(call.rpc_id, _allow_text(call.tool_input if updated is None else updated))
        else:
            self._deny(call.rpc_id, frame["message"])


def _arguments_problem(arguments: object) -> str | None:
    if not isinstance(arguments, dict):
        return "'arguments' must be an object"
    tool_name = arguments.get("tool_name")
    if not isinstance(tool_name, str) or not tool_name:
        return "'tool_name' must be a non-empty string"
    if not isinstance(arguments.get("input"), dict):
        return "'input' must be an object"
    tool_use_id = arguments.get("tool_use_id")
    if tool_use_id is not None and not isinstance(tool_use_id, str):
        return "'tool_use_id' must be a string"
    return None


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m nexo_trio.gate.mcp_stdio",
        description="MCP stdio permission prompt server that asks the nexo-trio orchestrator.",
    )
    parser.add_argument("--socket", required=True, help="the orchestrator's Unix socket")
    parser.add_argument("--goal-id", required=True, help="the goal the requests belong to")
    parser.add_argument(
        "--deadline",
        type=float,
        default=DEFAULT_DEADLINE_S,
        help="seconds to wait for a decision before denying (keep it under the CLI's tool "
        f"timeout; default {DEFAULT_DEADLINE_S:g})",
    )
    parser.add_argument("--tool-name", default=DEFAULT_TOOL_NAME, help="the tool's name")
    parser.add_argument("--server-name", default=DEFAULT_SERVER_NAME, help="serverInfo name")
    args = parser.parse_args(argv)
    if not args.deadline > 0:
        parser.error(f"--deadline must be positive, got {args.deadline:g}")
    if not args.goal_id:
        parser.error("--goal-id must not be empty")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the server on this process's stdin/stdout; the exit code (0)."""
    args = _parse_args(argv)
    server = PermissionServer(
        socket_path=args.socket,
        goal_id=args.goal_id,
        deadline_s=args.deadline,
        tool_name=args.tool_name,
        server_name=args.server_name,
    )
    return server.run()


if __name__ == "__main__":
    sys.exit(main())
