"""The permission MCP server's protocol, sans-IO: bytes and events in, actions out.

:class:`McpPermissionProtocol` makes every decision of the server Claude Code spawns on each
turn (:mod:`nexo_trio.gate.mcp_stdio` is its shell): the JSON-RPC 2.0 handling on stdin
(``initialize``, ``ping``, ``tools/list``, ``tools/call``, errors), the permission frames on
the orchestrator's socket (:mod:`nexo_trio.wire.gate_frames`), the deadlines, and failing
closed. It owns no file descriptor and reads no clock: the shell tells it what happened
(bytes read, a connection made or lost, the time) and does what the returned actions say,
in their order:

* :class:`WriteStdout` -- write these bytes (whole JSON-RPC lines) to stdout;
* :class:`Connect` -- connect to the orchestrator, then report the outcome
  (:meth:`~McpPermissionProtocol.connected` or :meth:`~McpPermissionProtocol.connect_failed`);
* :class:`SendSocket` -- send these bytes on the connection;
* :class:`CloseSocket` -- close the connection (what was not sent yet is dropped);
* :class:`Log` -- one line on stderr (stdout is the protocol);
* :class:`Exit` -- stop: nothing more will come.

It fails closed: whatever goes wrong (no socket, nobody listening, connection lost, no
decision before the deadline, a malformed, stale or error reply, a malformed call) the call
is answered with a valid *deny* and a reason. Never ``isError``, never silence: for Claude
Code an ``isError`` or a timed-out call is a failed tool call, not a denial, and the
orchestrator could not count it. Only an allow frame of the orchestrator for that very call
allows it.

Stdlib only, like its shell (plus :mod:`nexo_trio.core.framing` and
:mod:`nexo_trio.wire.gate_frames`, stdlib only too): it lives in ``gate/`` because it speaks
the gate's socket frames, which ``core/`` may not import.
"""

from __future__ import annotations

import json
from typing import ClassVar, Final

from nexo_trio import __version__
from nexo_trio.core.framing import Line, LineFramer, Oversized
from nexo_trio.wire import gate_frames
from nexo_trio.wire.gate_frames import ErrorFrame, JsonObject, PermissionFrame

SUPPORTED_PROTOCOL_VERSIONS: Final = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")
LATEST_PROTOCOL_VERSION: Final = SUPPORTED_PROTOCOL_VERSIONS[-1]
DEFAULT_DEADLINE_S: Final = 50.0
DEFAULT_TOOL_NAME: Final = "permission_prompt"
DEFAULT_SERVER_NAME: Final = "nexo"
TOKEN_ENV: Final = "NEXO_TRIO_GATE_TOKEN"
"""The environment variable holding the turn's token (set in the turn's MCP config)."""

PARSE_ERROR: Final = -32700
INVALID_REQUEST: Final = -32600
METHOD_NOT_FOUND: Final = -32601
INVALID_PARAMS: Final = -32602

INPUT_SCHEMA: Final[JsonObject] = {
    "type": "object",
    "properties": {
        "tool_name": {"type": "string", "description": "The tool Claude wants to use."},
        "input": {"type": "object", "description": "The tool's input."},
        "tool_use_id": {"type": "string", "description": "The id of the tool use."},
    },
    "required": ["tool_name", "input"],
}

SHUTTING_DOWN: Final = (
    "Permission denied: the permission server is shutting down before a decision arrived"
)


# --------------------------------------------------------------------------- actions


class Action:
    """Something the shell must do. Actions compare equal by type and fields."""

    __slots__ = ()
    _fields: ClassVar[tuple[str, ...]] = ()

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and all(
            getattr(self, name) == getattr(other, name) for name in self._fields
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._fields)
        return f"{type(self).__name__}({fields})"


class _BytesAction(Action):
    __slots__ = ("data",)
    _fields = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


class WriteStdout(_BytesAction):
    """Write ``data`` (whole JSON-RPC lines) to stdout."""

    __slots__ = ()


class SendSocket(_BytesAction):
    """Send ``data`` to the orchestrator (after what is still unsent)."""

    __slots__ = ()


class Connect(Action):
    """Connect to the orchestrator; report :meth:`McpPermissionProtocol.connected` or
    :meth:`McpPermissionProtocol.connect_failed`."""

    __slots__ = ()


class CloseSocket(Action):
    """Close the connection to the orchestrator, dropping what is still unsent."""

    __slots__ = ()


class Log(Action):
    """One line on stderr."""

    __slots__ = ("message",)
    _fields = ("message",)

    def __init__(self, message: str) -> None:
        self.message = message


class Exit(Action):
    """Stop serving (after the actions before this one)."""

    __slots__ = ()


# --------------------------------------------------------------------------- the protocol

_DOWN: Final = "down"
_CONNECTING: Final = "connecting"
_UP: Final = "up"


class _Call:
    """One ``tools/call`` waiting for the orchestrator."""

    __slots__ = ("deadline", "rpc_id", "tool_input", "tool_name")

    def __init__(
        self, rpc_id: str | int, tool_name: str, tool_input: JsonObject, deadline: float
    ) -> None:
        self.rpc_id = rpc_id
        self.tool_name = tool_name
        self.tool_input = tool_input
        self.deadline = deadline


class McpPermissionProtocol:
    """The server's state; every method returns the actions it calls for (see the module
    docstring). ``id_prefix`` makes the request ids unique per process, so a reply meant for
    another server (or an earlier connection of this one) never matches a call of ours.
    ``token``, the secret of the turn this server was started for, goes with every request:
    the orchestrator denies a request whose token is not the goal's current turn's.
    ``frame_cap`` bounds a socket frame (a stdin line may be twice as long)."""

    def __init__(
        self,
        *,
        goal_id: str,
        deadline_s: float = DEFAULT_DEADLINE_S,
        tool_name: str = DEFAULT_TOOL_NAME,
        server_name: str = DEFAULT_SERVER_NAME,
        id_prefix: str = "",
        token: str | None = None,
        frame_cap: int | None = None,
    ) -> None:
        self.goal_id = goal_id
        self.token = token
        self.deadline_s = deadline_s
        self.tool_name = tool_name
        self.server_name = server_name
        self.id_prefix = id_prefix
        self.frame_cap = gate_frames.MAX_FRAME_BYTES if frame_cap is None else frame_cap
        self.stdin_cap = 2 * self.frame_cap
        """A JSON-RPC line longer than this is dropped (answered with a parse error, id null)."""
        self._stdin = LineFramer(self.stdin_cap)
        self._stdin_skip_answered = False
        self._socket: LineFramer | None = None
        self._connection: str = _DOWN
        self._unsent: list[bytes] = []
        self._pending: dict[str, _Call] = {}
        self._counter = 0
        self._stdout_open = True
        self._done = False
        self._actions: list[Action] = []

    # ------------------------------------------------------------------ inputs

    @property
    def pending(self) -> int:
        """Calls waiting for the orchestrator."""
        return len(self._pending)

    @property
    def done(self) -> bool:
        """Whether :class:`Exit` was given (every input is ignored from then on)."""
        return self._done

    def receive_stdin(self, data: bytes, now: float) -> list[Action]:
        """Bytes Claude Code wrote on our stdin, read at ``now`` (for the calls' deadlines)."""
        if not self._done:
            for item in self._stdin.feed(data):
                self._on_stdin_item(item, now)
            if self._stdin.skipping and not self._stdin_skip_answered:
                # Answered as soon as it passes the cap, not when (if ever) it ends.
                self._stdin_skip_answered = True
                self._message_too_large()
        return self._take()

    def stdin_closed(self, now: float) -> list[Action]:
        """EOF on stdin: a last line without its newline still counts; then stop, denying
        what is still waiting."""
        if not self._done:
            for item in self._stdin.close():
                self._on_stdin_item(item, now)
            self._finish()
        return self._take()

    def stdout_failed(self, reason: str) -> list[Action]:
        """Stdout cannot be written any more: nobody can hear us, stop."""
        if not self._done:
            self._emit(Log(f"stdout is closed ({reason}); exiting"))
            self._stdout_open = False
            self._finish()
        return self._take()

    def shutdown(self, reason: str) -> list[Action]:
        """Stop now (a signal), logging ``reason`` and denying what is still waiting."""
        if not self._done:
            self._emit(Log(reason))
            self._finish()
        return self._take()

    def connected(self) -> list[Action]:
        """The :class:`Connect` succeeded: what waited for it is sent."""
        if self._connection == _CONNECTING and not self._done:
            self._connection = _UP
            self._socket = LineFramer(self.frame_cap)
            if self._unsent:
                self._emit(SendSocket(b"".join(self._unsent)))
                self._unsent.clear()
        return self._take()

    def connect_failed(self, reason: str) -> list[Action]:
        """The :class:`Connect` failed: every call waiting for it is denied with ``reason``.
        The next call tries again."""
        if self._connection == _CONNECTING and not self._done:
            self._connection = _DOWN
            self._unsent.clear()
            self._emit(Log(reason))
            self._deny_all(_unavailable(reason))
        return self._take()

    def receive_socket(self, data: bytes) -> list[Action]:
        """Bytes the orchestrator sent."""
        framer = self._socket
        if self._connection == _UP and framer is not None and not self._done:
            for item in framer.feed(data):
                if isinstance(item, Line):
                    self._on_reply(item.data)
                else:
                    self._drop_connection(self._reply_too_large())
                if self._connection != _UP:
                    break  # dropped: the rest of this connection's bytes mean nothing
            if self._connection == _UP and framer.skipping:
                self._drop_connection(self._reply_too_large())
        return self._take()

    def socket_closed(self) -> list[Action]:
        """EOF from the orchestrator."""
        return self.socket_failed("the orchestrator closed the connection before deciding")

    def socket_failed(self, reason: str) -> list[Action]:
        """The connection broke (a read or a send failed): every call in flight on it is
        denied with ``reason``. The next call reconnects."""
        if self._connection == _UP and not self._done:
            self._drop_connection(reason)
        return self._take()

    def expire(self, now: float) -> list[Action]:
        """Deny the calls whose deadline has come: the server's own deadline, before the
        CLI's tool timeout turns the call into an error that is not a denial."""
        for request_id, call in list(self._pending.items()):
            if call.deadline <= now:
                del self._pending[request_id]
                waited = f"no decision in {self.deadline_s:g}s"
                self._emit(Log(f"request {request_id} ({call.tool_name}): {waited}"))
                self._answer(
                    call.rpc_id,
                    gate_frames.deny_answer(
                        f"Permission denied: no decision from the orchestrator within "
                        f"{self.deadline_s:g}s"
                    ),
                )
        return self._take()

    def next_deadline(self) -> float | None:
        """When :meth:`expire` has something to do next (``None``: nothing is waiting)."""
        if not self._pending:
            return None
        return min(call.deadline for call in self._pending.values())

    # ------------------------------------------------------------------ outputs

    def _emit(self, action: Action) -> None:
        self._actions.append(action)

    def _take(self) -> list[Action]:
        actions, self._actions = self._actions, []
        return actions

    def _finish(self) -> None:
        self._deny_all(SHUTTING_DOWN)
        if self._connection != _DOWN:
            self._emit(CloseSocket())
        self._connection = _DOWN
        self._socket = None
        self._unsent.clear()
        self._done = True
        self._emit(Exit())

    def _send(self, message: JsonObject) -> None:
        if self._stdout_open:
            self._emit(WriteStdout(json.dumps(message, separators=(",", ":")).encode() + b"\n"))

    def _answer(self, rpc_id: str | int, result: JsonObject) -> None:
        self._send({"jsonrpc": "2.0", "id": rpc_id, "result": result})

    def _error(self, rpc_id: str | int | None, code: int, message: str) -> None:
        self._send({"jsonrpc": "2.0", "id": rpc_id, "error": {"code": code, "message": message}})

    def _deny(self, rpc_id: str | int, message: str) -> None:
        self._emit(Log(f"deny: {message}"))
        self._answer(rpc_id, gate_frames.deny_answer(message))

    def _deny_all(self, message: str) -> None:
        calls = list(self._pending.values())
        self._pending.clear()
        for call in calls:
            self._deny(call.rpc_id, message)

    # ------------------------------------------------------------------ stdin

    def _on_stdin_item(self, item: Line | Oversized, now: float) -> None:
        if isinstance(item, Line):
            self._on_message(item.data, now)
        elif self._stdin_skip_answered:
            self._stdin_skip_answered = False  # its parse error went out when it passed the cap
        else:
            self._message_too_large()

    def _message_too_large(self) -> None:
        # We cannot even know its id: the best answer is a parse error.
        self._emit(Log(f"dropping a message of more than {self.stdin_cap} bytes"))
        self._error(None, PARSE_ERROR, "Parse error: message too large")

    def _on_message(self, line: bytes, now: float) -> None:
        try:
            message = json.loads(line)
        except (ValueError, RecursionError) as exc:  # also UnicodeDecodeError; too deep
            self._emit(Log(f"parse error: {exc}: {_short(line)}"))
            self._error(None, PARSE_ERROR, f"Parse error: {exc}")
            return
        if not isinstance(message, dict):
            self._error(None, INVALID_REQUEST, "Invalid Request: expected a JSON object")
            return
        if "method" not in message:
            return  # a response to a request we never sent
        method = message["method"]
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
            self._tools_call(rpc_id, params, now)
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

    def _tool(self) -> JsonObject:
        return {
            "name": self.tool_name,
            "description": (
                "Decide whether a tool call may run: answers a JSON text "
                '{"behavior": "allow", "updatedInput": {...}} or '
                '{"behavior": "deny", "message": "..."}.'
            ),
            "inputSchema": INPUT_SCHEMA,
        }

    def _tools_call(self, rpc_id: str | int, params: object, now: float) -> None:
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
        self._counter += 1
        request_id = f"{self.id_prefix}{self._counter}"
        tool_name: str = arguments["tool_name"]
        tool_input: JsonObject = arguments["input"]
        request = PermissionFrame(
            request_id,
            self.goal_id,
            tool_name,
            tool_input,
            arguments.get("tool_use_id"),
            self.token,
        )
        try:
            frame = gate_frames.encode_request(request)
        except (ValueError, RecursionError) as exc:  # nested too deeply to encode again
            self._deny(rpc_id, f"Permission denied: malformed permission request ({exc})")
            return
        if len(frame) > self.frame_cap:
            self._deny(
                rpc_id,
                f"Permission denied: the tool input is too large for the permission gate "
                f"({len(frame)} bytes, at most {self.frame_cap})",
            )
            return
        self._pending[request_id] = _Call(rpc_id, tool_name, tool_input, now + self.deadline_s)
        if self._connection == _UP:
            self._emit(SendSocket(frame))
            return
        self._unsent.append(frame)
        if self._connection == _DOWN:
            self._connection = _CONNECTING
            self._emit(Connect())

    # ------------------------------------------------------------------ socket

    def _reply_too_large(self) -> str:
        return f"malformed reply from the orchestrator (a line of more than {self.frame_cap} bytes)"

    def _drop_connection(self, reason: str) -> None:
        # Every call in flight on this connection can no longer be answered by the
        # orchestrator: deny them all now. The next call reconnects.
        self._emit(Log(f"connection dropped: {reason}"))
        self._emit(CloseSocket())
        self._connection = _DOWN
        self._socket = None
        self._unsent.clear()
        self._deny_all(_unavailable(reason))

    def _on_reply(self, line: bytes) -> None:
        try:
            reply = gate_frames.decode_reply(line)
        except gate_frames.FrameError as exc:
            request_id = gate_frames.salvage_id(line)
            call = self._pending.pop(request_id, None) if request_id is not None else None
            self._emit(Log(f"malformed reply ({exc}): {_short(line)}"))
            if call is not None:
                self._deny(
                    call.rpc_id, f"Permission denied: malformed reply from the orchestrator ({exc})"
                )
            else:
                # Garbage we cannot tie to a call: the stream can't be trusted any more.
                # Deny everything in flight rather than wait for the deadlines.
                self._drop_connection(f"malformed reply from the orchestrator ({exc})")
            return
        if isinstance(reply, ErrorFrame):
            if reply.id is None:
                # The orchestrator could not tell which request it failed on: any of ours
                # may be lost, so fail them all closed now.
                self._emit(Log(f"error frame without an id: {reply.error}"))
                self._deny_all(
                    f"Permission denied: the orchestrator reported an error ({reply.error})"
                )
                return
            call = self._pending.pop(reply.id, None)
            if call is None:
                self._emit(Log(f"ignoring an error frame for unknown or stale id {reply.id!r}"))
                return
            self._deny(
                call.rpc_id, f"Permission denied: the orchestrator could not decide ({reply.error})"
            )
            return
        call = self._pending.pop(reply.id, None)
        if call is None:
            # Late (after our deadline denied it) or not ours: never applied.
            self._emit(Log(f"ignoring a reply with unknown or stale id {reply.id!r}"))
            return
        try:
            answer = gate_frames.tool_answer(reply, call.tool_input)
        except (ValueError, RecursionError) as exc:  # NaN or an infinity in the input
            self._deny(
                call.rpc_id,
                f"Permission denied: the allowed input cannot be sent to Claude Code ({exc})",
            )
            return
        self._emit(Log(f"allow: {call.tool_name}" if reply.allow else f"deny: {reply.message}"))
        self._answer(call.rpc_id, answer)


def _unavailable(reason: str) -> str:
    return f"Permission denied: the permission gate is unavailable ({reason})"


def _short(data: bytes, limit: int = 200) -> str:
    text = data.decode("utf-8", "replace").rstrip("\n")
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} chars)"


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
