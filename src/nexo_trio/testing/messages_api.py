"""A scripted loopback fake of the Anthropic Messages API, on trio.

It is how you test your own goals and deciders without a model and without a network: the
real Claude Code CLI (``ANTHROPIC_BASE_URL`` pointed at it) and the official ``anthropic``
SDK both talk to it as if it were the API. It answers ``POST /v1/messages`` (streaming
Server-Sent Events when the request says ``"stream": true``, the JSON message otherwise) and
``POST /v1/messages/count_tokens``, from a *script*: a list of :class:`Reply` rules, each a
matcher on the request and a response. The first matching rule that is not used up answers;
a request no rule matches gets a 500 error naming the problem (and is kept in
:attr:`ScriptedMessagesAPI.unmatched`). Every request is recorded, so a test can assert
what was sent.

Example: Claude runs one Bash command, then says it is done::

    from nexo_trio.testing.messages_api import (
        Reply, ScriptedMessagesAPI, always, last_message_has_tool_result, nth, text, tool_use,
    )

    api = ScriptedMessagesAPI([
        Reply(nth(0), tool_use("Bash", {"command": "echo hi > hello.txt"})),
        Reply(last_message_has_tool_result(), text("Created hello.txt.")),
    ])
    async with trio.open_nursery() as nursery:
        await nursery.start(api.serve)
        env = {**os.environ, **api.claude_env(home=tmp_path / "home")}
        ...  # run `claude -p ... --output-format stream-json --verbose` with env
        assert api.tool_results(1)[0]["tool_use_id"]
        nursery.cancel_scope.cancel()

An LLM decider under test is pointed at :attr:`ScriptedMessagesAPI.base_url` the same way
(``Reply(prompt_contains("rm -rf"), text('{"outcome": "deny", "message": "no"}'))``).

Matchers (combine with ``&``, ``|``, ``~``): :func:`nth`, :func:`last_message_has_tool_result`,
:func:`prompt_contains`, :func:`system_contains`, :func:`body_contains`, :func:`always`.
Responses: :func:`text`, :func:`tool_use` (add several with ``+``), :func:`error`, or a
function of the :class:`RecordedRequest` returning one. A rule answers ``times`` requests
(``None``: any number) after ``delay`` seconds. Token usage is the server's ``usage`` unless
a response carries its own (to drive token budgets).

The HTTP/1.1 is minimal but correct: Content-Length or chunked request bodies,
``Expect: 100-continue``, keep-alive, a read timeout on every connection, and every
connection closed when the server's nursery is cancelled.
"""

from __future__ import annotations

import errno
import http
import json
import secrets
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeAlias

import attrs
import trio

__all__ = [
    "ErrorResponse",
    "Matcher",
    "MessageResponse",
    "RecordedRequest",
    "Reply",
    "ScriptedMessagesAPI",
    "TextBlock",
    "ToolUseBlock",
    "Usage",
    "always",
    "body_contains",
    "error",
    "last_message_has_tool_result",
    "nth",
    "prompt_contains",
    "system_contains",
    "text",
    "tool_use",
]

MESSAGES_PATH = "/v1/messages"
COUNT_TOKENS_PATH = "/v1/messages/count_tokens"
MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 64 * 1024 * 1024
_RECEIVE_SIZE = 64 * 1024


# --- usage -------------------------------------------------------------------------------


@attrs.frozen
class Usage:
    """Token counts a reply reports (``message_start`` and ``message_delta`` carry them)."""

    input_tokens: int = 10
    output_tokens: int = 5
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0

    def as_dict(self) -> dict[str, int]:
        """The API's ``usage`` object."""
        return {
            "input_tokens": self.input_tokens,
            "cache_creation_input_tokens": self.cache_creation_input_tokens,
            "cache_read_input_tokens": self.cache_read_input_tokens,
            "output_tokens": self.output_tokens,
        }


# --- recorded requests ---------------------------------------------------------------------


def _content_blocks(message: Any) -> list[dict[str, Any]]:
    """A message's content as a list of blocks (a string content is one text block)."""
    if not isinstance(message, dict):
        return []
    content = message.get("content")
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if isinstance(content, list):
        return [block for block in content if isinstance(block, dict)]
    return []


@attrs.define(eq=False)
class RecordedRequest:
    """One HTTP request the server received, and what it answered."""

    index: int
    """Position in :attr:`ScriptedMessagesAPI.requests`."""
    method: str
    path: str
    """The path without the query string."""
    query: str
    headers: dict[str, str] = attrs.field(repr=False)
    """Lower-case names; repeated headers joined with ``", "``."""
    body: bytes = attrs.field(repr=False)
    json: Any = attrs.field(repr=False)
    """The body parsed as JSON (``None`` when empty or not JSON)."""
    time: float = attrs.field(repr=False)
    """``trio.current_time()`` when the request was complete."""
    message_index: int | None = None
    """Position among the ``POST /v1/messages`` requests (``None`` for any other)."""
    status: int = 0
    """The status answered (0 while answering)."""
    reply: Reply | None = None
    """The rule that answered, if any."""
    problem: str | None = None
    """Why no rule answered (unmatched request, bad JSON...)."""

    @property
    def stream(self) -> bool:
        """Whether the request asked for a streamed answer."""
        return isinstance(self.json, dict) and self.json.get("stream") is True

    @property
    def messages(self) -> list[dict[str, Any]]:
        """The request's ``messages`` (empty when absent)."""
        if isinstance(self.json, dict) and isinstance(self.json.get("messages"), list):
            return [m for m in self.json["messages"] if isinstance(m, dict)]
        return []

    def system_text(self) -> str:
        """The system prompt's text (string or text blocks, joined by newlines)."""
        system = self.json.get("system") if isinstance(self.json, dict) else None
        if isinstance(system, str):
            return system
        if isinstance(system, list):
            return "\n".join(
                str(block.get("text", "")) for block in system if isinstance(block, dict)
            )
        return ""

    def last_user_message(self) -> dict[str, Any] | None:
        """The last message with role ``user`` (Claude Code 2.1.332 may append a message
        with role ``system`` after it: that one is skipped)."""
        for message in self.messages[::-1]:
            if message.get("role") == "user":
                return message
        return None

    def last_user_text(self) -> str:
        """The text blocks of the last user message, joined by newlines (tool results out)."""
        return "\n".join(
            str(block.get("text", ""))
            for block in _content_blocks(self.last_user_message())
            if block.get("type") == "text"
        )

    def tool_results(self) -> list[dict[str, Any]]:
        """The ``tool_result`` blocks of the last user message (the one after a tool ran)."""
        blocks = _content_blocks(self.last_user_message())
        return [block for block in blocks if block.get("type") == "tool_result"]


# --- matchers ------------------------------------------------------------------------------


@attrs.frozen
class Matcher:
    """A predicate on a recorded request, combinable with ``&``, ``|`` and ``~``."""

    predicate: Callable[[RecordedRequest], bool]
    description: str

    def __call__(self, request: RecordedRequest) -> bool:
        return self.predicate(request)

    def __and__(self, other: Matcher) -> Matcher:
        return Matcher(
            lambda r: self(r) and other(r), f"({self.description} & {other.description})"
        )

    def __or__(self, other: Matcher) -> Matcher:
        return Matcher(lambda r: self(r) or other(r), f"({self.description} | {other.description})")

    def __invert__(self) -> Matcher:
        return Matcher(lambda r: not self(r), f"~{self.description}")

    def __str__(self) -> str:
        return self.description


def always() -> Matcher:
    """Matches every Messages request."""
    return Matcher(lambda _r: True, "always()")


def nth(n: int) -> Matcher:
    """Matches the ``n``-th Messages request, counting from 0 (``count_tokens`` and other
    paths are not counted)."""
    return Matcher(lambda r: r.message_index == n, f"nth({n})")


def last_message_has_tool_result() -> Matcher:
    """Matches a request whose last message carries a ``tool_result`` block (the request
    that follows a tool run)."""
    return Matcher(lambda r: bool(r.tool_results()), "last_message_has_tool_result()")


def prompt_contains(fragment: str) -> Matcher:
    """Matches a request whose last user message has text containing ``fragment``."""
    return Matcher(lambda r: fragment in r.last_user_text(), f"prompt_contains({fragment!r})")


def system_contains(fragment: str) -> Matcher:
    """Matches a request whose system prompt contains ``fragment``."""
    return Matcher(lambda r: fragment in r.system_text(), f"system_contains({fragment!r})")


def body_contains(fragment: str) -> Matcher:
    """Matches a request whose raw body contains ``fragment`` (anywhere in the history)."""
    raw = fragment.encode()
    return Matcher(lambda r: raw in r.body, f"body_contains({fragment!r})")


# --- responses -----------------------------------------------------------------------------


@attrs.frozen
class TextBlock:
    """An assistant text block."""

    text: str


@attrs.frozen
class ToolUseBlock:
    """An assistant ``tool_use`` block (``id`` generated when ``None``)."""

    name: str
    input: dict[str, Any] = attrs.field(factory=dict)
    id: str | None = None


Block: TypeAlias = TextBlock | ToolUseBlock


@attrs.frozen
class MessageResponse:
    """An assistant message: its blocks, and optionally its usage and stop reason
    (``tool_use`` when it has a tool_use block, ``end_turn`` otherwise)."""

    blocks: tuple[Block, ...]
    usage: Usage | None = None
    stop_reason: str | None = None

    def __add__(self, other: MessageResponse) -> MessageResponse:
        """One message with both messages' blocks (say two tool calls)."""
        return MessageResponse(
            blocks=self.blocks + other.blocks,
            usage=self.usage if self.usage is not None else other.usage,
            stop_reason=self.stop_reason if self.stop_reason is not None else other.stop_reason,
        )

    @property
    def effective_stop_reason(self) -> str:
        """The ``stop_reason`` the message ends with."""
        if self.stop_reason is not None:
            return self.stop_reason
        if any(isinstance(block, ToolUseBlock) for block in self.blocks):
            return "tool_use"
        return "end_turn"


@attrs.frozen
class ErrorResponse:
    """An API error: status and the JSON error body the real API sends."""

    status: int
    error_type: str
    message: str
    headers: tuple[tuple[str, str], ...] = ()

    def body(self) -> dict[str, Any]:
        """``{"type": "error", "error": {"type": ..., "message": ...}}``."""
        return {"type": "error", "error": {"type": self.error_type, "message": self.message}}


Response: TypeAlias = MessageResponse | ErrorResponse
ResponseSource: TypeAlias = Response | Callable[[RecordedRequest], Response]

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


def text(value: str, *, usage: Usage | None = None) -> MessageResponse:
    """An assistant message with one text block (stop reason ``end_turn``)."""
    return MessageResponse(blocks=(TextBlock(value),), usage=usage)


def tool_use(
    name: str,
    input: Mapping[str, Any] | None = None,
    *,
    text: str | None = None,
    id: str | None = None,
    usage: Usage | None = None,
) -> MessageResponse:
    """An assistant message calling tool ``name`` with ``input`` (stop reason
    ``tool_use``), after an optional text block. ``tool_use(...) + tool_use(...)`` calls
    several tools in one message."""
    blocks: tuple[Block, ...] = (ToolUseBlock(name, dict(input or {}), id),)
    if text is not None:
        blocks = (TextBlock(text), *blocks)
    return MessageResponse(blocks=blocks, usage=usage)


def error(
    status: int,
    error_type: str | None = None,
    message: str | None = None,
    *,
    retry_after: float | None = None,
    headers: Mapping[str, str] | None = None,
) -> ErrorResponse:
    """An API error answer: HTTP ``status`` with the real API's JSON error body. The type
    defaults to the API's name for the status (``overloaded_error`` for 529...);
    ``retry_after`` adds a ``retry-after`` header (clients wait that long before retrying)."""
    kind = error_type or _ERROR_TYPES.get(status, "api_error")
    extra = dict(headers or {})
    if retry_after is not None:
        extra["retry-after"] = f"{retry_after:g}"
    return ErrorResponse(
        status=status,
        error_type=kind,
        message=message if message is not None else kind.replace("_", " "),
        headers=tuple(extra.items()),
    )


@attrs.define(eq=False)
class Reply:
    """A rule of the script: when ``match`` matches (and the rule is not used up), answer
    ``response`` after ``delay`` seconds. ``times`` is how many requests it answers
    (``None``: any number)."""

    match: Matcher
    response: ResponseSource
    times: int | None = 1
    delay: float = 0.0
    used: int = attrs.field(default=0, init=False)

    @property
    def exhausted(self) -> bool:
        """Whether the rule has answered all the requests it may."""
        return self.times is not None and self.used >= self.times

    def describe(self) -> str:
        """A short description for error messages."""
        times = "unlimited" if self.times is None else f"{self.used}/{self.times} used"
        return f"Reply({self.match.description}, {times})"


# --- HTTP ----------------------------------------------------------------------------------


class _BadRequest(Exception):
    """A request we can't parse: answered 400 and the connection is closed."""


@attrs.define
class _HttpRequest:
    method: str
    target: str
    version: str
    headers: dict[str, str]
    body: bytes

    @property
    def keep_alive(self) -> bool:
        connection = self.headers.get("connection", "").lower()
        if self.version == "HTTP/1.0":
            return "keep-alive" in connection
        return "close" not in connection


class _Reader:
    """Reads HTTP/1.1 requests off a stream (a buffer and the few parsing rules we need)."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self._stream = stream
        self._buffer = bytearray()

    async def _fill(self) -> bool:
        data = await self._stream.receive_some(_RECEIVE_SIZE)
        if not data:
            return False
        self._buffer += data
        return True

    async def _read_line(self, limit: int) -> bytes:
        while True:
            end = self._buffer.find(b"\r\n")
            if end >= 0:
                line = bytes(self._buffer[:end])
                del self._buffer[: end + 2]
                return line
            if len(self._buffer) > limit:
                raise _BadRequest("line too long")
            if not await self._fill():
                raise _BadRequest("connection closed mid-request")

    async def _read_exact(self, size: int) -> bytes:
        while len(self._buffer) < size:
            if not await self._fill():
                raise _BadRequest("connection closed mid-body")
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    async def read_head(self) -> tuple[str, str, str, dict[str, str]] | None:
        """The request line and headers; ``None`` on a clean end of stream."""
        while True:
            end = self._buffer.find(b"\r\n\r\n")
            if end >= 0:
                break
            if len(self._buffer) > MAX_HEADER_BYTES:
                raise _BadRequest("request head too large")
            if not await self._fill():
                if self._buffer.strip():
                    raise _BadRequest("connection closed mid-head")
                return None
        head = bytes(self._buffer[:end]).decode("latin-1")
        del self._buffer[: end + 4]
        lines = head.lstrip("\r\n").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise _BadRequest(f"bad request line {lines[0]!r}")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep or not name or name != name.strip():
                raise _BadRequest(f"bad header line {line!r}")
            key = name.lower()
            value = value.strip()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        return parts[0], parts[1], parts[2], headers

    async def read_body(self, headers: Mapping[str, str]) -> bytes:
        """The body, by chunked transfer-encoding or Content-Length."""
        encoding = headers.get("transfer-encoding", "").lower()
        if encoding:
            if encoding.split(",")[-1].strip() != "chunked":
                raise _BadRequest(f"unsupported transfer-encoding {encoding!r}")
            return await self._read_chunked()
        length_text = headers.get("content-length", "0").strip()
        if not length_text.isdigit():
            raise _BadRequest(f"bad content-length {length_text!r}")
        length = int(length_text)
        if length > MAX_BODY_BYTES:
            raise _BadRequest("body too large")
        return await self._read_exact(length)

    async def _read_chunked(self) -> bytes:
        body = bytearray()
        while True:
            size_text = (await self._read_line(1024)).split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise _BadRequest(f"bad chunk size {size_text!r}") from None
            if size == 0:
                while await self._read_line(MAX_HEADER_BYTES):  # trailers, then a blank line
                    pass
                return bytes(body)
            if len(body) + size > MAX_BODY_BYTES:
                raise _BadRequest("body too large")
            body += await self._read_exact(size)
            if await self._read_exact(2) != b"\r\n":
                raise _BadRequest("chunk not followed by CRLF")


def _reason(status: int) -> str:
    if status == 529:
        return "Overloaded"
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def _head(status: int, headers: Iterable[tuple[str, str]]) -> bytes:
    lines = [f"HTTP/1.1 {status} {_reason(status)}"]
    lines.extend(f"{name}: {value}" for name, value in headers)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def _sse(event: str, data: dict[str, Any]) -> bytes:
    payload = f"event: {event}\ndata: ".encode() + _json_bytes(data) + b"\n\n"
    return f"{len(payload):x}\r\n".encode() + payload + b"\r\n"


def _pieces(value: str, size: int) -> list[str]:
    if not value:
        return [""]
    return [value[i : i + size] for i in range(0, len(value), size)]


def _refuse(recorded: RecordedRequest, answer: ErrorResponse) -> ErrorResponse:
    """``answer``, its message kept as the request's :attr:`~RecordedRequest.problem`."""
    recorded.problem = answer.message
    return answer


def _new_id(prefix: str) -> str:
    return f"{prefix}_01{secrets.token_hex(11)}"


# --- the server ----------------------------------------------------------------------------


class ScriptedMessagesAPI:
    """A loopback fake of the Anthropic Messages API driven by a list of :class:`Reply`.

    Start it in a nursery (``await nursery.start(api.serve)``); it serves on an ephemeral
    port of 127.0.0.1 until the nursery is cancelled.

    ``usage`` is the default token usage of every reply; ``read_timeout`` bounds every read
    of a connection (an idle keep-alive connection is closed after it); ``chunk_size`` is
    how many characters each ``text_delta`` / ``input_json_delta`` carries at most.
    """

    def __init__(
        self,
        script: Iterable[Reply] = (),
        *,
        usage: Usage | None = None,
        read_timeout: float = 30.0,
        chunk_size: int = 24,
        model: str | None = None,
    ) -> None:
        if chunk_size < 1:
            raise ValueError("chunk_size must be at least 1")
        self.script: list[Reply] = list(script)
        self.usage = usage if usage is not None else Usage()
        self.read_timeout = read_timeout
        self.chunk_size = chunk_size
        self.model = model
        self.requests: list[RecordedRequest] = []
        self.unmatched: list[RecordedRequest] = []
        self.connections_accepted = 0
        self.connections_open = 0
        self._port: int | None = None
        self._message_count = 0

    # -- script and records ---------------------------------------------------------------

    def add(self, *replies: Reply) -> None:
        """Append rules to the script (they rank after the existing ones)."""
        self.script.extend(replies)

    def unused(self) -> list[Reply]:
        """Rules that never answered."""
        return [reply for reply in self.script if reply.used == 0]

    def message_requests(self) -> list[RecordedRequest]:
        """The ``POST /v1/messages`` requests, in order."""
        return [r for r in self.requests if r.message_index is not None]

    def last_user_text(self, i: int = -1) -> str:
        """The last user message's text in the ``i``-th Messages request."""
        return self.message_requests()[i].last_user_text()

    def tool_results(self, i: int = -1) -> list[dict[str, Any]]:
        """The ``tool_result`` blocks of the last message of the ``i``-th Messages request."""
        return self.message_requests()[i].tool_results()

    # -- address --------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The bound port (once :meth:`serve` has started)."""
        if self._port is None:
            raise RuntimeError("ScriptedMessagesAPI is not serving yet: start serve() first")
        return self._port

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT`` (what ``ANTHROPIC_BASE_URL`` / ``base_url`` take)."""
        return f"http://127.0.0.1:{self.port}"

    def claude_env(self, home: str | Path | None = None) -> dict[str, str]:
        """The environment that makes the real Claude Code CLI use this server, offline."""
        env = {
            "ANTHROPIC_BASE_URL": self.base_url,
            "ANTHROPIC_API_KEY": "dummy-key-for-scripted-api",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "DISABLE_TELEMETRY": "1",
        }
        if home is not None:
            env["HOME"] = str(home)
        return env

    # -- serving --------------------------------------------------------------------------

    async def serve(
        self, *, task_status: trio.TaskStatus[ScriptedMessagesAPI] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Bind 127.0.0.1 on an ephemeral port, report ``self`` as started, serve until
        cancelled (the listener and every connection are closed on the way out)."""
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        try:
            listener = listeners[0]
            self._port = int(listener.socket.getsockname()[1])
            async with trio.open_nursery() as nursery:
                task_status.started(self)
                while True:
                    try:
                        stream = await listener.accept()
                    except OSError as exc:
                        if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS):
                            await trio.sleep(0.1)  # out of descriptors: wait for some to close
                            continue
                        raise
                    nursery.start_soon(self._connection, stream)
        finally:
            for each in listeners:
                with trio.CancelScope(shield=True):
                    await each.aclose()

    async def _connection(self, stream: trio.SocketStream) -> None:
        self.connections_accepted += 1
        self.connections_open += 1
        try:
            async with stream:
                await self._serve_connection(stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the client went away
        finally:
            self.connections_open -= 1

    async def _serve_connection(self, stream: trio.SocketStream) -> None:
        reader = _Reader(stream)
        while True:
            try:
                with trio.fail_after(self.read_timeout):
                    head = await reader.read_head()
                    if head is None:
                        return
                    method, target, version, headers = head
                    if headers.get("expect", "").lower() == "100-continue":
                        await stream.send_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                    body = await reader.read_body(headers)
            except trio.TooSlowError:
                return
            except _BadRequest as exc:
                answer = ErrorResponse(400, "invalid_request_error", f"bad HTTP request: {exc}")
                await self._send_json(stream, answer.status, answer.body(), keep_alive=False)
                return
            request = _HttpRequest(method, target, version, headers, body)
            await self._answer(stream, request)
            if not request.keep_alive:
                return

    def _record(self, request: _HttpRequest) -> RecordedRequest:
        path, _, query = request.target.partition("?")
        parsed: Any = None
        if request.body:
            try:
                parsed = json.loads(request.body)
            except ValueError:
                parsed = None
        recorded = RecordedRequest(
            index=len(self.requests),
            method=request.method,
            path=path,
            query=query,
            headers=dict(request.headers),
            body=request.body,
            json=parsed,
            time=trio.current_time(),
        )
        self.requests.append(recorded)
        return recorded

    async def _answer(self, stream: trio.SocketStream, request: _HttpRequest) -> None:
        recorded = self._record(request)
        keep_alive = request.keep_alive
        route = (recorded.method, recorded.path.rstrip("/") or "/")
        if route == ("POST", COUNT_TOKENS_PATH):
            recorded.status = 200
            tokens = max(1, len(recorded.body) // 4)
            await self._send_json(stream, 200, {"input_tokens": tokens}, keep_alive=keep_alive)
            return
        if route == ("POST", MESSAGES_PATH):
            response, delay = self._choose(recorded)
            if delay > 0:
                await trio.sleep(delay)
        else:
            response = _refuse(
                recorded,
                ErrorResponse(
                    404, "not_found_error", f"{recorded.method} {recorded.path}: not found"
                ),
            )
        if isinstance(response, ErrorResponse):
            recorded.status = response.status
            await self._send_json(
                stream,
                response.status,
                response.body(),
                keep_alive=keep_alive,
                extra=response.headers,
            )
            return
        recorded.status = 200
        message = self._message_json(recorded, response)
        if recorded.stream:
            await self._send_stream(stream, message, response, keep_alive=keep_alive)
        else:
            await self._send_json(stream, 200, message, keep_alive=keep_alive)

    def _choose(self, recorded: RecordedRequest) -> tuple[Response, float]:
        """Number a Messages request, and find its answer and the delay before it."""
        recorded.message_index = self._message_count
        self._message_count += 1
        if not isinstance(recorded.json, dict):
            answer = ErrorResponse(400, "invalid_request_error", "the body is not a JSON object")
            return _refuse(recorded, answer), 0.0
        for reply in self.script:
            if reply.exhausted or not reply.match(recorded):
                continue
            reply.used += 1
            recorded.reply = reply
            source = reply.response
            return (source(recorded) if callable(source) else source), reply.delay
        rules = ", ".join(reply.describe() for reply in self.script) or "an empty script"
        problem = (
            f"ScriptedMessagesAPI: no unused reply matches Messages request "
            f"#{recorded.message_index} (last user text ends {recorded.last_user_text()[-200:]!r}, "
            f"tool results: {len(recorded.tool_results())}); rules: {rules}"
        )
        self.unmatched.append(recorded)
        answer = ErrorResponse(500, "api_error", problem, headers=(("x-should-retry", "false"),))
        return _refuse(recorded, answer), 0.0

    def _message_json(self, recorded: RecordedRequest, response: MessageResponse) -> dict[str, Any]:
        content: list[dict[str, Any]] = []
        for block in response.blocks:
            if isinstance(block, TextBlock):
                content.append({"type": "text", "text": block.text})
            else:
                content.append(
                    {
                        "type": "tool_use",
                        "id": block.id or _new_id("toolu"),
                        "name": block.name,
                        "input": block.input,
                    }
                )
        model = self.model or str(recorded.json.get("model") or "claude-scripted")
        usage = response.usage if response.usage is not None else self.usage
        return {
            "id": _new_id("msg"),
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": content,
            "stop_reason": response.effective_stop_reason,
            "stop_sequence": None,
            "usage": usage.as_dict(),
        }

    async def _send_json(
        self,
        stream: trio.SocketStream,
        status: int,
        body: Any,
        *,
        keep_alive: bool,
        extra: Iterable[tuple[str, str]] = (),
    ) -> None:
        payload = _json_bytes(body)
        headers = [
            ("content-type", "application/json"),
            ("content-length", str(len(payload))),
            ("request-id", _new_id("req")),
            ("connection", "keep-alive" if keep_alive else "close"),
            *extra,
        ]
        await stream.send_all(_head(status, headers) + payload)

    async def _send_stream(
        self,
        stream: trio.SocketStream,
        message: dict[str, Any],
        response: MessageResponse,
        *,
        keep_alive: bool,
    ) -> None:
        headers = [
            ("content-type", "text/event-stream; charset=utf-8"),
            ("cache-control", "no-cache"),
            ("transfer-encoding", "chunked"),
            ("request-id", _new_id("req")),
            ("connection", "keep-alive" if keep_alive else "close"),
        ]
        usage = message["usage"]
        start = dict(message, content=[], stop_reason=None, stop_sequence=None)
        start["usage"] = dict(usage, output_tokens=min(1, usage["output_tokens"]))
        events = [
            _sse("message_start", {"type": "message_start", "message": start}),
            _sse("ping", {"type": "ping"}),
        ]
        for index, block in enumerate(message["content"]):
            if block["type"] == "text":
                first: dict[str, Any] = {"type": "text", "text": ""}
                deltas = [
                    {"type": "text_delta", "text": piece}
                    for piece in _pieces(block["text"], self.chunk_size)
                ]
            else:
                first = dict(block, input={})
                deltas = [
                    {"type": "input_json_delta", "partial_json": piece}
                    for piece in _pieces(json.dumps(block["input"]), self.chunk_size)
                ]
            events.append(
                _sse(
                    "content_block_start",
                    {"type": "content_block_start", "index": index, "content_block": first},
                )
            )
            events.extend(
                _sse(
                    "content_block_delta",
                    {"type": "content_block_delta", "index": index, "delta": d},
                )
                for d in deltas
            )
            events.append(
                _sse("content_block_stop", {"type": "content_block_stop", "index": index})
            )
        events.append(
            _sse(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": response.effective_stop_reason, "stop_sequence": None},
                    "usage": usage,
                },
            )
        )
        events.append(_sse("message_stop", {"type": "message_stop"}))
        await stream.send_all(_head(200, headers))
        for event in events:
            await stream.send_all(event)
        await stream.send_all(b"0\r\n\r\n")
