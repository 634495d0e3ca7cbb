"""Fuzzing the permission MCP server: garbage on its stdin (arbitrary bytes, arbitrary JSON,
JSON-RPC-ish messages with every field wild) and on its socket (arbitrary bytes, reply-ish
frames, valid replies to calls in flight, hang-ups), through the sans-IO protocol and
through the real server process.

Properties of :class:`McpPermissionProtocol`, whatever comes in, in whatever chunks:

* nothing raises, nothing is done after ``Exit``, and after it every input is ignored;
* every stdout line is a strict JSON-RPC 2.0 response (strict JSON: no NaN or infinities,
  which Claude Code could not read), with exactly one of ``result`` and ``error``;
* every request with an id gets exactly one response, with that id; every line that
  cannot be a request (not JSON, not an object, a bad id, over the cap) exactly one error
  with id null; notifications and responses none. A well-formed ``tools/call`` is always
  answered with an allow or a deny (never an error, never ``isError``), and there are no
  more allows than the orchestrator sent;
* nothing is unbounded: no call is left waiting at the end, every frame sent is within the
  cap, and what is written is within a constant factor of what was read.

The real process (``python -m nexo_trio.gate.mcp_stdio``, one per run, in front of a real
:class:`GateServer`) takes a few long garbage streams and must stay up and answer a valid
``initialize`` and ``tools/call`` after each, and after a line over its stdin cap.

Sizes: see ``tests/fuzz/profile.py`` (``NEXO_FUZZ_EXAMPLES``).
"""

from __future__ import annotations

import collections
import json
import math
from collections import deque
from typing import Any, Final, NamedTuple

import trio
from hypothesis import given
from hypothesis import strategies as st

from nexo_trio.core.framing import Line, LineFramer
from nexo_trio.core.permission import Decision, PermissionRequest, allow, deny
from nexo_trio.gate.mcp_protocol import (
    SUPPORTED_PROTOCOL_VERSIONS,
    Action,
    CloseSocket,
    Connect,
    Exit,
    Log,
    McpPermissionProtocol,
    SendSocket,
    WriteStdout,
)
from nexo_trio.gate.socket_server import GateServer
from nexo_trio.wire import gate_frames
from nexo_trio.wire.gate_frames import DecisionFrame
from tests.fuzz.profile import count, examples
from tests.fuzz.strategies import (
    NASTY,
    WILD_VALUES,
    cheap_json,
    encode,
    framed_lines,
    split_at,
    wild_text,
)
from tests.gate.helpers import McpServer, run_server, short_tempdir

TOOL: Final = "permission_prompt"
DEADLINE: Final = 10.0
GOAL: Final = "g-fuzz"
TOKEN: Final = "tok"
MISSING: Final = object()
"""A field left out of a message."""

# --------------------------------------------------------------------------- strategies


def _pick(valid: st.SearchStrategy[Any], wild: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly ``valid``, now and then missing or ``wild``."""
    return st.one_of(valid, valid, valid, st.just(MISSING), wild)


def _present(fields: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in fields.items() if value is not MISSING}


LAX: Final = (math.nan, math.inf, -math.inf)
KEYS: Final = ("command", "file_path", "content", "", " ", "\ud800", "\xe9", "\x00", "a\nb")
lax_values: st.SearchStrategy[Any] = st.sampled_from(WILD_VALUES) | st.sampled_from(LAX)
"""JSON values as Python writes and reads them by default: NaN and infinities too (which
Claude Code never sends, and could not read)."""
rpc_ids: st.SearchStrategy[Any] = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70), st.text(max_size=4), cheap_json
)
INPUTS: Final[tuple[dict[str, Any], ...]] = (
    *({}, {"command": "ls"}, {"file_path": "/x", "offset": 10**30}, {"": None, "\ud800": "\x00"}),
    *({"n": math.nan}, {"n": math.inf}, {"a": {"b": [1, -math.inf]}}, {"content": "\xe9" * 1000}),
    *({"content": "x" * 300}, {"content": "\\" * 400}, {"a": [[[[{"b": "\u2028"}]]]]}),
)
"""Tool inputs that have broken encoders: NaN, infinities, escapes that double the size."""
tool_inputs: st.SearchStrategy[Any] = st.one_of(
    st.sampled_from(INPUTS),
    st.dictionaries(st.sampled_from(KEYS) | wild_text, lax_values, max_size=2),
    st.integers(0, 3000).map(lambda n: {"content": "x" * n}),
)
tool_names = st.sampled_from(["Bash", "Read", "Write", "mcp__x__y", "", "\ud800"])
good_calls: st.SearchStrategy[dict[str, Any]] = st.builds(
    lambda rpc_id, tool_name, tool_input, tool_use_id: {
        "jsonrpc": "2.0",
        "id": rpc_id,
        "method": "tools/call",
        "params": {
            "name": TOOL,
            "arguments": _present(
                {"tool_name": tool_name, "input": tool_input, "tool_use_id": tool_use_id}
            ),
        },
    },
    st.integers(-5, 2**70) | st.text(max_size=4),
    tool_names,
    tool_inputs,
    st.sampled_from([MISSING, None, "toolu_1", "", 7, "\ud800"]),
)
"""Well-formed calls (most are asked of the orchestrator), their contents wild."""
arguments: st.SearchStrategy[Any] = st.builds(
    lambda tool_name, tool_input, tool_use_id, extra: _present(
        {**extra, "tool_name": tool_name, "input": tool_input, "tool_use_id": tool_use_id}
    ),
    _pick(tool_names, cheap_json),
    _pick(tool_inputs, cheap_json),
    _pick(st.none() | st.text(max_size=4), cheap_json),
    st.just({}) | st.dictionaries(st.sampled_from(KEYS), cheap_json, max_size=2),
)
call_params: st.SearchStrategy[Any] = st.builds(
    lambda name, args: _present({"name": name, "arguments": args}),
    _pick(st.just(TOOL), st.sampled_from(["other", "", TOOL.upper()]) | cheap_json),
    _pick(arguments, cheap_json),
)
init_params: st.SearchStrategy[Any] = st.fixed_dictionaries(
    {},
    optional={
        "protocolVersion": st.sampled_from(SUPPORTED_PROTOCOL_VERSIONS) | cheap_json,
        "capabilities": cheap_json,
    },
)
methods: st.SearchStrategy[Any] = st.sampled_from(
    [
        *("tools/call", "tools/call", "initialize", "ping", "tools/list"),
        *("notifications/initialized", "notifications/cancelled", "server/discover"),
        *(None, "", 5, ["ping"], {}, "tools/call\x00", "\ud800"),
    ]
)


@st.composite
def rpc_messages(draw: st.DrawFn) -> dict[str, Any]:
    """A JSON-RPC-ish message: each field mostly right, now and then missing or wild."""
    method = draw(_pick(methods, wild_text))
    if method == "tools/call":
        params = call_params
    elif method == "initialize":
        params = init_params
    else:
        params = cheap_json
    fields: dict[str, Any] = {
        "jsonrpc": draw(_pick(st.just("2.0"), st.sampled_from(["1.0", "2", 2.0, None]))),
        "id": draw(_pick(rpc_ids, st.just(MISSING))),
        "method": method,
        "params": draw(_pick(params, st.just(MISSING))),
    }
    extras: list[dict[str, Any]] = [{}, {}, {}, {"result": {}}, {"error": None}, {"id": None}]
    extra = draw(st.sampled_from(extras))
    return {**extra, **_present(fields)}


terminators = st.sampled_from([b"\n", b"\n", b"\n", b"\n", b"\r\n", b"", b"\n\n", b" \n"])


def _line(body: bytes, end: bytes) -> bytes:
    return body + end


def _json_line(value: Any, ascii_only: bool, end: bytes) -> bytes:
    return encode(value, ascii_only=ascii_only) + end


stdin_pieces: st.SearchStrategy[bytes] = st.one_of(
    st.builds(_json_line, good_calls, st.booleans(), terminators),
    st.builds(_json_line, good_calls, st.booleans(), terminators),
    st.builds(_json_line, good_calls, st.booleans(), terminators),
    st.builds(_json_line, rpc_messages(), st.booleans(), terminators),
    st.builds(_json_line, rpc_messages(), st.booleans(), terminators),
    st.builds(_json_line, cheap_json, st.just(True), terminators),
    st.builds(_line, st.binary(max_size=48), terminators),
    st.builds(_line, st.sampled_from(NASTY), terminators),
    st.builds(
        lambda n, c, e: c * n + e, st.integers(0, 13000), st.sampled_from([b"x", b" "]), terminators
    ),
)
"""What Claude Code (or something posing as it) might write on the server's stdin."""


class Reply(NamedTuple):
    """The orchestrator answers a call it was asked (the ``pick``-th of those it has not
    answered yet, else of all, a stale one then) as ``kind`` says, sent in two pieces cut
    at ``cut``. ``kind`` names the frame (allow, deny, error) and its variants: ``raw``
    (non-ASCII as raw UTF-8), ``v2`` (an unknown protocol version), ``typeless``."""

    kind: str
    pick: int
    value: Any
    cut: int


class ReplyAll(NamedTuple):
    """The orchestrator answers every call not answered yet, ``allow`` (with ``value`` as
    the rewritten input) or deny."""

    allow: bool
    value: Any


class Raw(NamedTuple):
    """Bytes from the orchestrator, in two pieces cut at ``cut``."""

    data: bytes
    cut: int


class Tick(NamedTuple):
    """Time passes; the deadlines that came are expired."""

    seconds: float


class Hangup(NamedTuple):
    """The connection ends: EOF (``failed`` False) or an error."""

    failed: bool


SocketEvent = Reply | ReplyAll | Raw | Tick | Hangup

REPLY_KINDS: Final = (
    *("allow", "allow", "allow", "deny", "deny", "error"),
    *("allow raw", "deny raw", "error raw", "allow v2", "deny typeless"),
)
updated_inputs: st.SearchStrategy[Any] = st.one_of(
    st.none(),
    st.none(),
    st.dictionaries(st.sampled_from(KEYS), lax_values, max_size=2),
    lax_values,
)
"""What an allow rewrites the input to: nothing (the call's own), any object, anything."""
reply_ish: st.SearchStrategy[bytes] = st.builds(
    lambda fields, a: encode(fields, ascii_only=a) + b"\n",
    st.fixed_dictionaries(
        {},
        optional={
            "v": st.sampled_from([1, 1, 2, "1", None]),
            "type": st.sampled_from(["decision", "error", "permission", "", 1]),
            "id": st.sampled_from(["h-1", "h-2", "nope", None, 1]),
            "behavior": st.sampled_from(["allow", "deny", "ask", None, True]),
            "updated_input": lax_values,
            "message": cheap_json,
            "error": cheap_json,
        },
    ),
    st.booleans(),
)
replies: st.SearchStrategy[SocketEvent] = st.builds(
    Reply, st.sampled_from(REPLY_KINDS), st.integers(0, 50), updated_inputs, st.integers(0, 10**6)
)
whole_replies: st.SearchStrategy[SocketEvent] = st.builds(
    Reply, st.sampled_from(REPLY_KINDS), st.integers(0, 50), updated_inputs, st.just(0)
)
replies_to_all: st.SearchStrategy[SocketEvent] = st.builds(ReplyAll, st.booleans(), updated_inputs)
socket_events: st.SearchStrategy[SocketEvent] = st.one_of(
    *(replies, whole_replies, replies_to_all, replies, whole_replies, replies_to_all),
    st.builds(
        Raw,
        st.one_of(
            reply_ish,
            st.binary(max_size=48),
            st.sampled_from(NASTY).map(lambda b: b + b"\n"),
            st.integers(0, 6000).map(lambda n: b"{" + b" " * n + b"}\n"),
            cheap_json.map(lambda v: encode(v, ascii_only=True) + b"\n"),
        ),
        st.integers(0, 10**6),
    ),
    st.builds(Tick, st.floats(0, DEADLINE * 1.5)),
    st.builds(Hangup, st.booleans()),
)
"""Mostly replies (to calls in flight, some garbled), now and then garbage, a hang-up (both
drop the connection) or time passing."""
frame_caps = st.sampled_from([300, 2500, 8000, gate_frames.MAX_FRAME_BYTES])
"""The socket frame cap (stdin's is twice it): small ones, for the paths over the cap."""


# --------------------------------------------------------------------------- the harness


def strict_json(data: bytes | str) -> Any:
    """``data`` as strict JSON (NaN and infinities refused, as JavaScript's JSON does)."""

    def refuse(constant: str) -> Any:
        raise ValueError(f"not strict JSON: {constant}")

    return json.loads(data, parse_constant=refuse)


def _valid_id(value: object) -> bool:
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


class Expected(NamedTuple):
    """What the lines on stdin call for: responses by id (its JSON), the ids of the
    well-formed ``tools/call`` requests, and how many errors with id null."""

    by_id: collections.Counter[str]
    calls: set[str]
    null: int


def expected_responses(stdin: bytes, cap: int, *, at_eof: bool) -> Expected:
    """JSON-RPC 2.0 line by line: a request (a ``method`` member and a valid id) gets one
    response with its id; what is not an object of valid JSON, or has an invalid id, or is
    over the cap, one error with id null; a notification or a response, nothing. Without
    ``at_eof`` (a shutdown) an unterminated last line is never read, unless it passed the
    cap."""
    by_id: collections.Counter[str] = collections.Counter()
    calls: set[str] = set()
    # A line is answered as soon as it passes the cap, even if it never ends.
    null = int(not at_eof and len(stdin) - (stdin.rfind(b"\n") + 1) > cap)
    for line in framed_lines(stdin, cap, at_eof=at_eof):
        if isinstance(line, int):  # over the cap
            null += 1
            continue
        try:
            message = json.loads(line)
        except (ValueError, RecursionError):
            null += 1
            continue
        if not isinstance(message, dict):
            null += 1
            continue
        if "method" not in message:
            continue  # a response
        if "id" not in message:
            continue  # a notification
        if not _valid_id(message["id"]):
            null += 1
            continue
        key = json.dumps(message["id"])
        by_id[key] += 1
        params = message.get("params")
        if (
            message.get("jsonrpc") == "2.0"
            and message["method"] == "tools/call"
            and isinstance(params, dict)
            and isinstance(params.get("name"), str)
        ):
            calls.add(key)
    return Expected(by_id, calls, null)


class Harness:
    """Plays the shell and the orchestrator around the protocol: carries out its actions
    (each Connect succeeding or failing as ``connects`` says, in turn) and plays the socket
    events it is given."""

    def __init__(self, frame_cap: int, connects: list[bool]) -> None:
        self.proto = McpPermissionProtocol(
            goal_id=GOAL, deadline_s=DEADLINE, id_prefix="h-", token=TOKEN, frame_cap=frame_cap
        )
        self.frame_cap = frame_cap
        self.connects = connects
        self.attempts = 0
        self.now = 0.0
        self.stdout = bytearray()
        self.framer: LineFramer | None = None
        self.asked: list[str] = []
        self.open: list[str] = []
        """The calls asked and not answered yet."""
        self.received: list[bytearray] = []
        """What the orchestrator sent, one entry per connection."""
        self.exited = False

    # ------------------------------------------------------------------ the shell

    def run(self, actions: list[Action]) -> None:
        queue = deque(actions)
        while queue:
            action = queue.popleft()
            assert not self.exited, f"{action} after Exit"
            more: list[Action] = []
            if isinstance(action, WriteStdout):
                assert action.data.endswith(b"\n")
                self.stdout += action.data
            elif isinstance(action, Connect):
                assert self.framer is None, "Connect while connected"
                ok = self.connects[self.attempts % len(self.connects)] if self.connects else True
                self.attempts += 1
                if ok:
                    self.framer = LineFramer(self.frame_cap)
                    self.received.append(bytearray())
                    more = self.proto.connected()
                else:
                    more = self.proto.connect_failed("refused")
            elif isinstance(action, SendSocket):
                assert self.framer is not None, "SendSocket while not connected"
                for item in self.framer.feed(action.data):
                    assert isinstance(item, Line), "a frame over the cap was sent"
                    frame = gate_frames.decode_request(item.data)
                    assert frame.id not in self.asked
                    assert (frame.goal_id, frame.token) == (GOAL, TOKEN)
                    self.asked.append(frame.id)
                    self.open.append(frame.id)
            elif isinstance(action, CloseSocket):
                self.framer = None
            elif isinstance(action, Log):
                assert isinstance(action.message, str)
            elif isinstance(action, Exit):
                self.exited = True
            queue.extendleft(reversed(more))
        assert (self.proto.next_deadline() is None) == (self.proto.pending == 0)

    # ------------------------------------------------------------------ the orchestrator

    def play(self, event: SocketEvent) -> None:
        if isinstance(event, Tick):
            self.now += event.seconds
            self.run(self.proto.expire(self.now))
        elif self.framer is None:
            return
        elif isinstance(event, Hangup):
            self.framer = None
            if event.failed:
                self.run(self.proto.socket_failed("reset"))
            else:
                self.run(self.proto.socket_closed())
        elif isinstance(event, Raw):
            self.feed(event.data, event.cut)
        elif isinstance(event, ReplyAll):
            answered, self.open = self.open, []
            kind = "allow" if event.allow else "deny"
            self.feed(
                b"".join(self.reply(kind, request_id, event.value) for request_id in answered), 0
            )
        elif self.asked:
            if self.open:
                request_id = self.open.pop(event.pick % len(self.open))
            else:
                request_id = self.asked[event.pick % len(self.asked)]
            self.feed(self.reply(event.kind, request_id, event.value), event.cut)

    @staticmethod
    def reply(kind: str, request_id: str, value: Any) -> bytes:
        """The orchestrator's reply line to ``request_id``: see :class:`Reply`."""
        frame: dict[str, Any] = {"v": 1, "type": "decision", "id": request_id}
        if kind.startswith("allow"):
            frame |= {"behavior": "allow", "updated_input": value}
        elif kind.startswith("deny"):
            frame |= {"behavior": "deny", "message": value if isinstance(value, str) else "no"}
        else:
            frame |= {"type": "error", "error": value if isinstance(value, str) else "failed"}
        if kind.endswith("v2"):
            frame["v"] = 2
        if kind.endswith("typeless"):
            del frame["type"]
        return encode(frame, ascii_only=not kind.endswith("raw")) + b"\n"

    def feed(self, data: bytes, cut: int) -> None:
        cut %= len(data) + 1
        for piece in (data[:cut], data[cut:]):
            if piece and self.framer is not None:
                self.received[-1] += piece
                self.run(self.proto.receive_socket(piece))

    def allows_sent(self) -> int:
        """The allow frames the orchestrator sent (whole lines, on any connection)."""
        allows = 0
        for data in self.received:
            for line in bytes(data).split(b"\n"):
                try:
                    reply = gate_frames.decode_reply(line)
                except gate_frames.FrameError:
                    continue
                if isinstance(reply, DecisionFrame) and reply.allow:
                    allows += 1
        return allows


def check_responses(stdout: bytes, expected: Expected, allows_sent: int) -> int:
    """Every stdout line is a strict JSON-RPC response, as many per id as ``expected``
    says; a well-formed call's is an allow or a deny. The number of responses."""
    by_id: collections.Counter[str] = collections.Counter()
    null = allows = 0
    lines = stdout.splitlines()
    for raw in lines:
        message = strict_json(raw)
        assert isinstance(message, dict), message
        assert message["jsonrpc"] == "2.0", message
        assert ("result" in message) != ("error" in message), message
        assert set(message) == {"jsonrpc", "id", "result" if "result" in message else "error"}
        if "error" in message:
            error = message["error"]
            assert isinstance(error["code"], int), message
            assert isinstance(error["message"], str), message
            assert error["message"], message
        rpc_id = message["id"]
        if rpc_id is None:
            null += 1
            assert "error" in message, message
            continue
        assert _valid_id(rpc_id), message
        key = json.dumps(rpc_id)
        by_id[key] += 1
        if key in expected.calls and expected.by_id[key] == 1:
            result = message.get("result")
            assert isinstance(result, dict), f"a call answered with an error: {message}"
            assert set(result) == {"content"}, message  # never isError
            (block,) = result["content"]
            assert block["type"] == "text", message
            answer = strict_json(block["text"])
            if answer["behavior"] == "allow":
                allows += 1
                assert set(answer) == {"behavior", "updatedInput"}, answer
                assert isinstance(answer["updatedInput"], dict), answer
            else:
                assert set(answer) == {"behavior", "message"}, answer
                assert answer["behavior"] == "deny", answer
                assert isinstance(answer["message"], str), answer
                assert answer["message"].strip(), answer  # never blank
    assert by_id == expected.by_id
    assert null == expected.null
    assert allows <= allows_sent, "an allow the orchestrator never sent"
    return len(lines)


# --------------------------------------------------------------------------- properties


@examples("mcp")
@given(
    pieces=st.lists(stdin_pieces, max_size=8),
    cuts=st.lists(st.integers(min_value=0), max_size=5),
    events=st.lists(st.tuples(st.integers(0, 6), socket_events), max_size=8),
    connects=st.lists(st.sampled_from([True, True, True, False]), max_size=3),
    frame_cap=frame_caps,
    end=st.sampled_from(["eof", "eof", "shutdown"]),
)
def test_garbage_on_stdin_and_socket_gets_one_answer_per_request(
    *,
    pieces: list[bytes],
    cuts: list[int],
    events: list[tuple[int, SocketEvent]],
    connects: list[bool],
    frame_cap: int,
    end: str,
) -> None:
    count("mcp")
    stdin = b"".join(pieces)
    h = Harness(frame_cap, connects)
    chunks = split_at(stdin, cuts)
    for n, chunk in enumerate(chunks):
        h.run(h.proto.receive_stdin(chunk, h.now))
        last = n == len(chunks) - 1
        for at, event in events:
            if at == n or (last and at > n):  # the orchestrator's events after this chunk
                h.play(event)
    if end == "eof":
        h.run(h.proto.stdin_closed(h.now))
    else:
        h.run(h.proto.shutdown("terminated by a signal"))

    assert h.exited
    assert h.proto.done
    assert h.proto.pending == 0
    # Done means done: nothing more is done, whatever comes.
    ping = b'{"jsonrpc": "2.0", "id": 1, "method": "ping"}\n'
    assert h.proto.receive_stdin(ping, h.now) == []
    assert h.proto.stdin_closed(h.now) == []
    assert h.proto.receive_socket(b"{}\n") == []
    assert h.proto.connected() == []
    assert h.proto.expire(h.now + 2 * DEADLINE) == []

    expected = expected_responses(stdin, 2 * frame_cap, at_eof=end == "eof")
    responses = check_responses(bytes(h.stdout), expected, h.allows_sent())
    # Bounded: each response is within a constant factor of what it answers.
    read = len(stdin) + sum(len(data) for data in h.received)
    assert len(h.stdout) <= 8 * read + 1024 * responses


# --------------------------------------------------------------------------- the real process

process_pieces: st.SearchStrategy[bytes] = st.one_of(
    stdin_pieces,
    st.binary(min_size=1, max_size=512),
    st.integers(0, 200_000).map(lambda n: b"y" * n + b"\n"),
)
garbage_streams: st.SearchStrategy[bytes] = st.lists(process_pieces, min_size=1, max_size=40).map(
    b"".join
)
"""Long streams: up to a few hundred kB."""


async def decide(request: PermissionRequest) -> Decision:
    """The orchestrator behind the real server: allows reads, denies the rest."""
    if request.tool_name == "Read":
        return allow("fuzz")
    return deny("not in the fuzz", "fuzz")


class Stdout:
    """The server's stdout, read as JSON-RPC lines (each checked to be a valid response)."""

    def __init__(self, server: McpServer) -> None:
        self.server = server
        self.buffer = b""

    async def until(self, wanted: set[str], timeout: float = 20.0) -> collections.Counter[str]:
        """Read until a response to each id in ``wanted`` came; the ids seen (their JSON)."""
        stream = self.server.process.stdout
        assert stream is not None
        seen: collections.Counter[str] = collections.Counter()
        with trio.fail_after(timeout):
            while not wanted <= set(seen):
                data = await stream.receive_some(1 << 16)
                assert data, f"the server closed stdout; stderr: {self.server.stderr[-2000:]}"
                *lines, self.buffer = (self.buffer + data).split(b"\n")
                for raw in lines:
                    message = strict_json(raw)
                    assert message["jsonrpc"] == "2.0", message
                    assert ("result" in message) != ("error" in message), message
                    seen[json.dumps(message["id"])] += 1
        return seen


async def send_then_check(
    server: McpServer, stdout: Stdout, garbage: bytes, n: int
) -> collections.Counter[str]:
    """``garbage`` (in chunks), then a valid ``initialize`` and ``tools/call``: both answered
    once, and the server still running. The ids answered meanwhile (their JSON)."""
    init_id, call_id = f"fuzz-init-{n}", f"fuzz-call-{n}"
    valid = b"\n" + b"".join(
        json.dumps(message).encode() + b"\n"
        for message in (
            {"jsonrpc": "2.0", "id": init_id, "method": "initialize", "params": {}},
            server.call_message(call_id, {"file_path": "/x"}, tool_name="Read"),
        )
    )
    stdin = server.process.stdin
    assert stdin is not None
    seen: collections.Counter[str] = collections.Counter()

    async def read() -> None:
        nonlocal seen
        seen = await stdout.until({json.dumps(init_id), json.dumps(call_id)})

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read)  # read while writing: a full stdout pipe would stop it
        with trio.fail_after(20):
            for start in range(0, len(garbage), 1 << 15):
                await stdin.send_all(garbage[start : start + (1 << 15)])
            await stdin.send_all(valid)
    assert seen[json.dumps(init_id)] == 1
    assert seen[json.dumps(call_id)] == 1
    assert server.process.returncode is None, server.stderr[-2000:]
    return seen


async def test_the_real_server_survives_long_garbage_streams() -> None:
    with short_tempdir() as directory:
        path = directory / "gate.sock"
        async with trio.open_nursery() as nursery:
            await nursery.start(GateServer(path, decide).serve)
            async with run_server(path, directory, goal_id=GOAL, deadline=10.0) as server:
                await server.handshake()
                stdout = Stdout(server)
                numbers = iter(range(10**9))

                @examples("mcp_process")
                @given(garbage=garbage_streams)
                def fuzz(garbage: bytes) -> None:
                    count("mcp_process")
                    trio.from_thread.run(send_then_check, server, stdout, garbage, next(numbers))

                await trio.to_thread.run_sync(fuzz)
                # A line over the stdin cap (two frame caps): skipped, answered, survived.
                huge = b"z" * (2 * gate_frames.MAX_FRAME_BYTES + 1) + b"\n"
                assert (await send_then_check(server, stdout, huge, -1))["null"] == 1
                await server.close_stdin()
                assert await server.wait() == 0
            nursery.cancel_scope.cancel()
