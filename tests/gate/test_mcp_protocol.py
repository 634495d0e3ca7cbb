"""The permission MCP server's sans-IO protocol, without processes, fds or clocks: bytes and
events in, actions out. The subprocess tests (test_mcp_stdio.py) cover the shell."""

from __future__ import annotations

import json
import math
from collections import deque
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nexo_trio.core.framing import Line, LineFramer
from nexo_trio.gate.mcp_protocol import (
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    Action,
    CloseSocket,
    Connect,
    Exit,
    Log,
    McpPermissionProtocol,
    SendSocket,
    WriteStdout,
)
from nexo_trio.wire import gate_frames
from nexo_trio.wire.gate_frames import DecisionFrame, ErrorFrame, PermissionFrame

TOOL = "permission_prompt"
DEADLINE = 10.0
INPUT = {"command": "ls"}


def protocol(**options: Any) -> McpPermissionProtocol:
    options.setdefault("deadline_s", DEADLINE)
    return McpPermissionProtocol(goal_id="g1", id_prefix="p-", **options)


def line(message: object) -> bytes:
    return json.dumps(message).encode() + b"\n"


def rpc(rpc_id: str | int, method: str, params: object = None) -> bytes:
    message: dict[str, Any] = {"jsonrpc": "2.0", "id": rpc_id, "method": method}
    if params is not None:
        message["params"] = params
    return line(message)


def call(rpc_id: str | int, tool_input: dict[str, Any] | None = None, *, name: str = TOOL) -> bytes:
    arguments = {"tool_name": "Bash", "input": INPUT if tool_input is None else tool_input}
    return rpc(rpc_id, "tools/call", {"name": name, "arguments": arguments | {"tool_use_id": "t"}})


def written(actions: list[Action]) -> list[dict[str, Any]]:
    """The JSON-RPC messages the actions write to stdout, in order."""
    data = b"".join(a.data for a in actions if isinstance(a, WriteStdout))
    return [json.loads(chunk) for chunk in data.splitlines()]


def sent(actions: list[Action]) -> list[PermissionFrame]:
    """The permission frames the actions send to the orchestrator, in order."""
    data = b"".join(a.data for a in actions if isinstance(a, SendSocket))
    return [gate_frames.decode_request(chunk) for chunk in data.splitlines()]


def logs(actions: list[Action]) -> str:
    return "\n".join(a.message for a in actions if isinstance(a, Log))


def answer(message: dict[str, Any]) -> dict[str, Any]:
    """The behavior JSON of a tools/call result (checked to be a valid, non-error one)."""
    result = message["result"]
    assert "isError" not in result
    (block,) = result["content"]
    assert block["type"] == "text"
    decoded = json.loads(block["text"])
    assert isinstance(decoded, dict)
    return decoded


def reply(frame: DecisionFrame | ErrorFrame) -> bytes:
    return gate_frames.encode_reply(frame)


def connected_with(proto: McpPermissionProtocol, *calls: bytes) -> list[PermissionFrame]:
    """Send ``calls`` (at time 0) and connect; the frames the orchestrator receives."""
    actions = proto.receive_stdin(b"".join(calls), now=0.0)
    assert Connect() in actions
    return sent(proto.connected())


# ---------------------------------------------------------------------------- actions


def test_actions_compare_by_type_and_fields() -> None:
    assert WriteStdout(b"x") == WriteStdout(b"x")
    assert WriteStdout(b"x") != SendSocket(b"x")
    assert WriteStdout(b"x") != WriteStdout(b"y")
    assert Connect() == Connect()
    assert Connect() != CloseSocket()
    assert Connect() != ()
    assert repr(Log("hi")) == "Log(message='hi')"
    assert repr(Exit()) == "Exit()"


# ---------------------------------------------------------------------------- JSON-RPC


def test_handshake_never_bothers_the_orchestrator() -> None:
    proto = protocol()
    stream = (
        rpc("server-discover-probe-1", "server/discover")
        + rpc(0, "initialize", {"protocolVersion": "2025-11-25", "capabilities": {}})
        + line({"jsonrpc": "2.0", "method": "notifications/initialized"})
        + rpc(1, "tools/list")
        + rpc("p", "ping")
    )
    actions = proto.receive_stdin(stream, now=0.0)
    assert all(isinstance(a, WriteStdout) for a in actions)
    discover, init, listed, ping = written(actions)
    assert discover["error"]["code"] == METHOD_NOT_FOUND
    assert init["result"]["protocolVersion"] == "2025-11-25"
    assert init["result"]["serverInfo"]["name"] == "nexo"
    (tool,) = listed["result"]["tools"]
    assert tool["name"] == TOOL
    assert tool["inputSchema"]["required"] == ["tool_name", "input"]
    assert ping == {"jsonrpc": "2.0", "id": "p", "result": {}}


@pytest.mark.parametrize(
    ("asked", "answered"),
    [("2024-11-05", "2024-11-05"), ("2025-06-18", "2025-06-18"), ("2099-01-01", "2025-11-25")],
)
def test_protocol_version_negotiation(asked: str, answered: str) -> None:
    (init,) = written(protocol().receive_stdin(rpc(1, "initialize", {"protocolVersion": asked}), 0))
    assert init["result"]["protocolVersion"] == answered


def test_bad_requests() -> None:
    proto = protocol()
    stream = [
        b"{not json\n",
        b"\xff\xfe\n",
        b"[1, 2]\n",
        line({"jsonrpc": "2.0", "id": {"x": 1}, "method": "ping"}),
        line({"jsonrpc": "2.0", "id": True, "method": "ping"}),
        line({"jsonrpc": "1.0", "id": 9, "method": "ping"}),
        line({"jsonrpc": "2.0", "id": 5, "result": {}}),  # a response: no answer
        line({"jsonrpc": "2.0", "method": "notifications/cancelled"}),  # no answer
        rpc(10, "initialize", ["not", "an", "object"]),
        rpc(11, "tools/call"),
        rpc(12, "tools/call", {"name": 3}),
        b"\n  \n",
    ]
    out = written(proto.receive_stdin(b"".join(stream), now=0.0))
    assert [(m["id"], m["error"]["code"]) for m in out] == [
        (None, PARSE_ERROR),
        (None, PARSE_ERROR),
        (None, INVALID_REQUEST),
        (None, INVALID_REQUEST),
        (None, INVALID_REQUEST),
        (9, INVALID_REQUEST),
        (10, INVALID_PARAMS),
        (11, INVALID_PARAMS),
        (12, INVALID_PARAMS),
    ]


def test_a_request_whose_method_is_null_is_answered_not_taken_for_a_response() -> None:
    # Found by the fuzz (tests/fuzz/test_mcp_fuzz.py): only a message without a method
    # member is a response; a null method is an invalid request, whose id gets an answer.
    proto = protocol()
    out = written(proto.receive_stdin(line({"jsonrpc": "2.0", "id": 3, "method": None}), now=0))
    assert [(m["id"], m["error"]["code"]) for m in out] == [(3, INVALID_REQUEST)]
    notification = line({"jsonrpc": "2.0", "method": None})
    assert written(proto.receive_stdin(notification, now=0)) == []


def test_a_stdin_line_over_the_cap_is_a_parse_error_as_soon_as_it_passes_it() -> None:
    proto = protocol(frame_cap=50)  # stdin lines up to 100 bytes
    assert proto.receive_stdin(b"x" * 100, now=0) == []
    first = proto.receive_stdin(b"x", now=0)
    assert [m["error"]["code"] for m in written(first)] == [PARSE_ERROR]
    assert "more than 100 bytes" in logs(first)
    # The rest of it is skipped without a second answer, then the stream goes on.
    assert proto.receive_stdin(b"x" * 1000, now=0) == []
    (pong,) = written(proto.receive_stdin(b"xx\n" + rpc(1, "ping"), now=0))
    assert pong["result"] == {}
    # One that is whole in a single chunk is answered once too.
    out = written(proto.receive_stdin(b"y" * 150 + b"\n" + rpc(2, "ping"), now=0))
    assert [m["id"] for m in out] == [None, 2]


# ---------------------------------------------------------------------------- tools/call


def test_a_call_connects_then_forwards_and_the_allow_answers_it() -> None:
    proto = protocol()
    assert proto.receive_stdin(call(2, {"command": "echo hi"}), now=0.0) == [Connect()]
    (frame,) = sent(proto.connected())
    assert frame == PermissionFrame("p-1", "g1", "Bash", {"command": "echo hi"}, "t")
    actions = proto.receive_socket(reply(DecisionFrame("p-1", True)))
    (response,) = written(actions)
    assert response["id"] == 2
    assert answer(response) == {"behavior": "allow", "updatedInput": {"command": "echo hi"}}
    assert "allow: Bash" in logs(actions)
    assert proto.pending == 0


def test_rewritten_input_and_deny_message_pass_through() -> None:
    proto = protocol()
    first, second = connected_with(proto, call(1), call(2))
    rewritten = reply(DecisionFrame(first.id, True, {"command": "ls -a"}))
    denied = reply(DecisionFrame(second.id, False, message="Not on my watch"))
    one, two = written(proto.receive_socket(denied + rewritten))
    assert (one["id"], answer(one)) == (2, {"behavior": "deny", "message": "Not on my watch"})
    assert (two["id"], answer(two)) == (
        1,
        {"behavior": "allow", "updatedInput": {"command": "ls -a"}},
    )


def test_an_allow_that_is_not_json_for_claude_code_is_a_deny() -> None:
    # Found by the fuzz: NaN and infinities (in the call's input, or in the rewritten one)
    # went out inside the allow's text, which Claude Code's JSON cannot read.
    proto = protocol()
    calls = [
        rpc(n, "tools/call", {"name": TOOL, "arguments": {"tool_name": "Bash", "input": given}})
        for n, given in enumerate([{"n": math.nan}, {"n": 1}, {"n": 1e400}])
    ]
    first, second, third = connected_with(proto, *calls)
    replies = [
        reply(DecisionFrame(first.id, True)),
        # Not as the gate encodes it (it refuses to), but Python's JSON reads it.
        line(
            {
                "v": 1,
                "type": "decision",
                "id": second.id,
                "behavior": "allow",
                "updated_input": {"n": math.inf},
            }
        ),
        reply(DecisionFrame(third.id, True, {"n": 2})),
    ]
    out = written(proto.receive_socket(b"".join(replies)))
    assert [m["id"] for m in out] == [0, 1, 2]
    for message in out[:2]:
        decision = answer(message)
        assert decision["behavior"] == "deny"
        assert "cannot be sent to Claude Code" in decision["message"]
    assert answer(out[2]) == {"behavior": "allow", "updatedInput": {"n": 2}}
    for message in out:  # strict JSON all through, as Claude Code reads it
        json.loads(message["result"]["content"][0]["text"], parse_constant=_refuse)


def _refuse(constant: str) -> None:
    raise AssertionError(f"not JSON: {constant}")


def test_a_blank_deny_message_from_the_orchestrator_is_never_passed_on() -> None:
    # Found by the fuzz: a deny's message Claude reads is never blank.
    proto = protocol()
    first, second = connected_with(proto, call(1), call(2))
    blank = [
        DecisionFrame(first.id, False, message=""),
        DecisionFrame(second.id, False, message=" "),
    ]
    out = written(proto.receive_socket(b"".join(reply(frame) for frame in blank)))
    assert [answer(m) for m in out] == [{"behavior": "deny", "message": "Permission denied"}] * 2


def test_calls_made_while_connecting_wait_and_go_out_together() -> None:
    proto = protocol()
    assert proto.receive_stdin(call(1), now=0) == [Connect()]
    assert proto.receive_stdin(call(2), now=0) == []  # one connection attempt only
    frames = sent(proto.connected())
    assert [f.id for f in frames] == ["p-1", "p-2"]
    # Connected: the next call goes straight out.
    assert sent(proto.receive_stdin(call(3), now=0))[0].id == "p-3"


def test_a_failed_connection_denies_what_waited_for_it_and_the_next_call_retries() -> None:
    proto = protocol()
    proto.receive_stdin(call(1) + call(2), now=0)
    actions = proto.connect_failed("no socket at /x.sock")
    assert [m["id"] for m in written(actions)] == [1, 2]
    for message in written(actions):
        assert answer(message) == {
            "behavior": "deny",
            "message": (
                "Permission denied: the permission gate is unavailable (no socket at /x.sock)"
            ),
        }
    assert "no socket at /x.sock" in logs(actions)
    assert proto.receive_stdin(call(3), now=0) == [Connect()]
    assert sent(proto.connected())[0].id == "p-3"  # ids never repeat


def test_unknown_tool_and_malformed_arguments_deny_without_asking() -> None:
    proto = protocol()
    stream = call(1, name="other_tool") + rpc(2, "tools/call", {"name": TOOL, "arguments": 5})
    stream += rpc(3, "tools/call", {"name": TOOL, "arguments": {"tool_name": "", "input": {}}})
    actions = proto.receive_stdin(stream, now=0)
    assert Connect() not in actions
    unknown, no_arguments, no_name = (answer(m)["message"] for m in written(actions))
    assert "unknown tool 'other_tool'" in unknown
    assert "'arguments' must be an object" in no_arguments
    assert "'tool_name' must be a non-empty string" in no_name


def test_an_input_too_large_for_a_frame_is_denied_without_asking() -> None:
    proto = protocol(frame_cap=200)
    actions = proto.receive_stdin(call(1, {"content": "x" * 200}), now=0)
    assert Connect() not in actions
    (message,) = written(actions)
    assert "too large for the permission gate" in answer(message)["message"]


# ---------------------------------------------------------------------------- deadlines


def test_the_deadline_denies_and_a_late_reply_is_ignored() -> None:
    proto = protocol()
    assert proto.next_deadline() is None
    proto.receive_stdin(call(1), now=100.0)
    (frame,) = sent(proto.connected())
    assert proto.next_deadline() == 100.0 + DEADLINE
    assert proto.expire(100.0 + DEADLINE - 0.001) == []
    actions = proto.expire(100.0 + DEADLINE)
    (message,) = written(actions)
    assert answer(message)["message"] == (
        "Permission denied: no decision from the orchestrator within 10s"
    )
    assert proto.next_deadline() is None
    late = proto.receive_socket(reply(DecisionFrame(frame.id, True)))
    assert written(late) == []
    assert "unknown or stale id 'p-1'" in logs(late)


def test_each_call_has_its_own_deadline() -> None:
    proto = protocol()
    proto.receive_stdin(call(1), now=0.0)
    proto.connected()
    proto.receive_stdin(call(2), now=4.0)
    assert proto.next_deadline() == DEADLINE
    assert [m["id"] for m in written(proto.expire(DEADLINE))] == [1]
    assert proto.next_deadline() == 4.0 + DEADLINE


# ---------------------------------------------------------------------------- bad replies


def test_a_malformed_reply_naming_a_call_denies_only_that_call() -> None:
    proto = protocol()
    first, _ = connected_with(proto, call(1), call(2))
    bad = line({"v": 1, "type": "decision", "id": first.id, "behavior": "maybe"})
    actions = proto.receive_socket(bad)
    (message,) = written(actions)
    assert message["id"] == 1
    assert (
        "malformed reply from the orchestrator (unknown behavior 'maybe')"
        in (answer(message)["message"])
    )
    assert CloseSocket() not in actions
    assert proto.pending == 1


def test_garbage_drops_the_connection_and_what_follows_it_in_the_chunk() -> None:
    proto = protocol()
    first, _ = connected_with(proto, call(1), call(2))
    actions = proto.receive_socket(b"garbage\n" + reply(DecisionFrame(first.id, True)))
    assert CloseSocket() in actions
    out = written(actions)
    assert [m["id"] for m in out] == [1, 2]
    assert all(answer(m)["behavior"] == "deny" for m in out)
    assert "malformed reply" in answer(out[0])["message"]
    assert proto.receive_stdin(call(3), now=0) == [Connect()]


def test_error_frames() -> None:
    proto = protocol()
    first, _, _ = connected_with(proto, call(1), call(2), call(3))
    (one,) = written(proto.receive_socket(reply(ErrorFrame(first.id, "decider exploded"))))
    assert "could not decide (decider exploded)" in answer(one)["message"]
    ignored = proto.receive_socket(reply(ErrorFrame("p-99", "who?")))
    assert written(ignored) == []
    assert "unknown or stale id 'p-99'" in logs(ignored)
    actions = proto.receive_socket(reply(ErrorFrame(None, "frame 4 too large")))
    assert [m["id"] for m in written(actions)] == [2, 3]
    assert "reported an error (frame 4 too large)" in answer(written(actions)[0])["message"]
    assert CloseSocket() not in actions


def test_a_reply_may_arrive_in_pieces() -> None:
    proto = protocol()
    (frame,) = connected_with(proto, call(1))
    data = reply(DecisionFrame(frame.id, True))
    for i in range(len(data) - 1):
        assert proto.receive_socket(data[i : i + 1]) == []
    (message,) = written(proto.receive_socket(data[-1:]))
    assert answer(message)["behavior"] == "allow"


def test_a_reply_over_the_cap_drops_the_connection_as_soon_as_it_passes_it() -> None:
    proto = protocol(frame_cap=200)
    connected_with(proto, call(1))
    assert proto.receive_socket(b"{" + b" " * 199) == []
    actions = proto.receive_socket(b" ")
    assert CloseSocket() in actions
    (message,) = written(actions)
    assert "a line of more than 200 bytes" in answer(message)["message"]


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        (
            McpPermissionProtocol.socket_closed,
            "the orchestrator closed the connection before deciding",
        ),
        (lambda p: p.socket_failed("reading failed: EPIPE"), "reading failed: EPIPE"),
    ],
    ids=["closed", "failed"],
)
def test_a_lost_connection_denies_every_call_in_flight(event: Any, reason: str) -> None:
    proto = protocol()
    connected_with(proto, call(1), call(2))
    actions = event(proto)
    assert actions[:2] == [Log(f"connection dropped: {reason}"), CloseSocket()]
    out = written(actions)
    assert [m["id"] for m in out] == [1, 2]
    assert all(f"unavailable ({reason})" in answer(m)["message"] for m in out)
    assert proto.receive_stdin(call(3), now=0) == [Connect()]


# ---------------------------------------------------------------------------- stopping


def test_stdin_eof_answers_the_last_line_denies_what_waits_and_exits() -> None:
    proto = protocol()
    connected_with(proto, call(1))
    assert (
        proto.receive_stdin(json.dumps({"jsonrpc": "2.0", "id": 2, "method": "ping"}).encode(), 0)
        == []
    )
    actions = proto.stdin_closed(now=1.0)
    pong, denied = written(actions)
    assert pong == {"jsonrpc": "2.0", "id": 2, "result": {}}
    assert "shutting down before a decision arrived" in answer(denied)["message"]
    assert actions[-2:] == [CloseSocket(), Exit()]
    assert proto.done
    # Nothing more happens once done.
    assert proto.receive_stdin(rpc(3, "ping"), now=2.0) == []
    assert proto.receive_socket(b"x\n") == []
    assert proto.shutdown("again") == []


def test_shutdown_logs_denies_and_exits() -> None:
    assert protocol().shutdown("terminated by a signal") == [
        Log("terminated by a signal"),
        Exit(),
    ]
    proto = protocol()
    connected_with(proto, call(1))
    actions = proto.shutdown("terminated by a signal")
    assert actions[0] == Log("terminated by a signal")
    (denied,) = written(actions)
    assert "shutting down" in answer(denied)["message"]
    assert actions[-1] == Exit()


def test_stdout_failure_exits_without_writing() -> None:
    proto = protocol()
    connected_with(proto, call(1))
    actions = proto.stdout_failed("Broken pipe")
    assert written(actions) == []
    assert "stdout is closed (Broken pipe)" in logs(actions)
    assert actions[-1] == Exit()


# ---------------------------------------------------------------------------- properties

SMALL_CAP = 400
"""A frame cap small enough that generated calls and lines pass it now and then."""

json_scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=300)
json_inputs = st.dictionaries(st.text(max_size=5), json_scalars, max_size=3)


BAD_ARGUMENTS: list[object] = [
    None,
    5,
    {"tool_name": "Bash"},
    {"input": {}},
    {"tool_name": "B", "input": []},
]
JUNK = [
    b"{nope",
    b"[1]",
    b"null",
    b"",
    b"x" * (2 * SMALL_CAP + 100),  # over the stdin cap
    b'{"jsonrpc": "2.0", "id": {"x": 1}, "method": "ping"}',
]


@st.composite
def stdin_message(draw: st.DrawFn, n: int) -> tuple[bytes, str]:
    """One stdin line for request number ``n`` and what it is: ``call`` (a tools/call that
    must get a deny or an allow), ``request`` (any other answer), ``silent`` (no answer)
    or ``junk`` (answered with id null, if at all)."""
    rpc_id: str | int = n if draw(st.booleans()) else f"s{n}"
    kind = draw(
        st.sampled_from(
            [
                *("call", "call", "call", "big_call", "bad_call", "other_tool", "no_name"),
                *("method", "notification", "response", "old_jsonrpc", "junk", "garbage"),
            ]
        )
    )
    if kind in ("call", "big_call"):
        tool_input = draw(json_inputs) if kind == "call" else {"c": "x" * SMALL_CAP}
        arguments = {"tool_name": "Bash", "input": tool_input, "tool_use_id": json.dumps(rpc_id)}
        message = rpc(rpc_id, "tools/call", {"name": TOOL, "arguments": arguments})
        # Escaped text can take a drawn call over the stdin cap: then it is dropped as junk.
        return message, "call" if len(message) - 1 <= 2 * SMALL_CAP else "junk"
    if kind == "bad_call":
        arguments = draw(st.sampled_from(BAD_ARGUMENTS))
        return rpc(rpc_id, "tools/call", {"name": TOOL, "arguments": arguments}), "call"
    if kind == "other_tool":
        return rpc(rpc_id, "tools/call", {"name": "shell", "arguments": {}}), "call"
    if kind == "no_name":  # not even a tools/call: a JSON-RPC error
        return rpc(rpc_id, "tools/call", draw(st.sampled_from([None, {}, {"name": 1}]))), "request"
    if kind == "method":
        method = draw(st.sampled_from(["initialize", "ping", "tools/list", "server/discover", "x"]))
        params = draw(st.sampled_from([None, {"protocolVersion": "2025-06-18"}, [1]]))
        return rpc(rpc_id, method, params), "request"
    if kind == "notification":
        return line({"jsonrpc": "2.0", "method": "notifications/initialized"}), "silent"
    if kind == "response":
        return line({"jsonrpc": "2.0", "id": rpc_id, "result": {}}), "silent"
    if kind == "old_jsonrpc":
        return line({"jsonrpc": "1.0", "id": rpc_id, "method": "ping"}), "request"
    if kind == "junk":
        return draw(st.sampled_from(JUNK)) + b"\n", "junk"
    garbage = draw(st.binary(max_size=60)).replace(b"\n", b"")
    return garbage + b"\n", "junk"


class Harness:
    """Plays the shell and a scripted orchestrator around the protocol: carries out its
    actions (Connect succeeding or failing as hypothesis draws) and answers the frames it
    sends in drawn ways (allow, deny, error, garbage, stale, hang-up, or nothing)."""

    def __init__(self, data: st.DataObject) -> None:
        self.data = data
        self.proto = McpPermissionProtocol(
            goal_id="g", deadline_s=DEADLINE, id_prefix="h-", frame_cap=SMALL_CAP
        )
        self.now = 0.0
        self.stdout = bytearray()
        self.framer: LineFramer | None = None
        self.asked: dict[str, PermissionFrame] = {}
        self.allowed: set[str | None] = set()
        """tool_use_ids (the json of the call's rpc id) the orchestrator allowed."""
        self.exited = False

    def run(self, actions: list[Action]) -> None:
        queue = deque(actions)
        while queue:
            action = queue.popleft()
            assert not self.exited, f"{action} after Exit"
            more: list[Action] = []
            if isinstance(action, WriteStdout):
                self.stdout += action.data
            elif isinstance(action, Connect):
                assert self.framer is None, "Connect while connected"
                if self.data.draw(st.sampled_from([True, True, True, False]), label="connected"):
                    self.framer = LineFramer()
                    more = self.proto.connected()
                else:
                    more = self.proto.connect_failed("refused")
            elif isinstance(action, SendSocket):
                assert self.framer is not None, "SendSocket while not connected"
                for item in self.framer.feed(action.data):
                    assert isinstance(item, Line)
                    frame = gate_frames.decode_request(item.data)
                    assert frame.id not in self.asked
                    self.asked[frame.id] = frame
            elif isinstance(action, CloseSocket):
                self.framer = None
            elif isinstance(action, Exit):
                self.exited = True
            queue.extendleft(reversed(more))

    def orchestrate(self) -> None:
        for _ in range(self.data.draw(st.integers(0, 4), label="orchestrator events")):
            self.one_event()

    def one_event(self) -> None:
        event = self.data.draw(
            st.sampled_from(
                [
                    *("allow", "allow", "allow", "deny", "deny", "error", "bad_for_id", "stale"),
                    *("error_no_id", "time", "time"),
                    *("garbage", "huge", "close", "fail"),  # these drop the connection
                ]
            ),
            label="event",
        )
        if event == "time":
            self.now += self.data.draw(st.floats(0, DEADLINE * 1.5), label="seconds")
            self.run(self.proto.expire(self.now))
            return
        if self.framer is None:
            return
        if event in ("close", "fail"):
            self.framer = None
            self.run(
                self.proto.socket_closed() if event == "close" else self.proto.socket_failed("x")
            )
            return
        if event == "garbage":
            self.feed(b"garbage\n")
            return
        if event == "huge":  # a reply over the frame cap
            self.feed(b"{" + b" " * SMALL_CAP + b"}\n")
            return
        if event == "stale":
            self.feed(reply(DecisionFrame("not-ours", True)))
            return
        if event == "error_no_id":
            self.feed(reply(ErrorFrame(None, "oops")))
            return
        if not self.asked:
            return
        request_id = self.data.draw(st.sampled_from(sorted(self.asked)), label="request")
        frame = self.asked.pop(request_id)
        if event == "allow":
            self.allowed.add(frame.tool_use_id)
            updated = self.data.draw(st.none() | json_inputs, label="updated input")
            self.feed(reply(DecisionFrame(request_id, True, updated)))
        elif event == "deny":
            self.feed(reply(DecisionFrame(request_id, False, message="no")))
        elif event == "error":
            self.feed(reply(ErrorFrame(request_id, "failed")))
        else:
            self.feed(line({"v": 1, "type": "decision", "id": request_id, "behavior": "?"}))

    def feed(self, data: bytes) -> None:
        cut = self.data.draw(st.integers(0, len(data)), label="reply split")
        for piece in (data[:cut], data[cut:]):
            if piece and self.framer is not None:
                self.run(self.proto.receive_socket(piece))


@settings(max_examples=300, deadline=None)
@given(data=st.data(), count=st.integers(0, 12))
def test_every_request_is_answered_exactly_once_and_every_call_allows_or_denies(
    data: st.DataObject, count: int
) -> None:
    harness = Harness(data)
    messages = [data.draw(stdin_message(n), label=f"message {n}") for n in range(count)]
    stream = b"".join(message for message, _ in messages)
    if data.draw(st.booleans(), label="no newline at the end"):
        stream = stream.removesuffix(b"\n")  # the last line still counts, at EOF
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6), label="cuts"))
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        harness.run(harness.proto.receive_stdin(stream[start:end], harness.now))
        harness.orchestrate()
    harness.run(harness.proto.stdin_closed(harness.now))

    assert harness.exited
    assert harness.proto.pending == 0
    responses: dict[object, dict[str, Any]] = {}
    for out_line in harness.stdout.splitlines():
        message = json.loads(out_line)
        assert message["jsonrpc"] == "2.0"
        assert ("result" in message) != ("error" in message)
        if message["id"] is not None:
            key = json.dumps(message["id"])
            assert key not in responses, f"answered twice: {message}"
            responses[key] = message
    expected: dict[str, str] = {}
    for raw, kind in messages:
        if kind in ("call", "request"):
            expected[json.dumps(json.loads(raw)["id"])] = kind
    assert set(responses) == set(expected)
    for key, kind in expected.items():
        if kind != "call":
            continue
        decision = answer(responses[key])  # a result, never an error or isError
        assert decision["behavior"] in ("allow", "deny")
        if decision["behavior"] == "allow":
            assert key in harness.allowed, "an allow the orchestrator never gave"
            assert isinstance(decision["updatedInput"], dict)
        else:
            assert isinstance(decision["message"], str)
            assert decision["message"]


@settings(max_examples=200, deadline=None)
@given(chunks=st.lists(st.binary(max_size=80), max_size=10), connects=st.booleans())
def test_any_bytes_on_stdin_give_only_valid_json_rpc_lines(
    chunks: list[bytes], connects: bool
) -> None:
    proto = McpPermissionProtocol(goal_id="g", frame_cap=64)
    out: list[Action] = []
    for chunk in chunks:
        for action in proto.receive_stdin(chunk, now=0.0):
            out.append(action)
            if isinstance(action, Connect):
                out += proto.connected() if connects else proto.connect_failed("refused")
    out += proto.stdin_closed(now=0.0)
    assert out[-1] == Exit()
    for message in written(out):
        assert message["jsonrpc"] == "2.0"
        assert "error" in message or "result" in message


@settings(max_examples=200, deadline=None)
@given(
    messages=st.lists(st.integers(0, 30).flatmap(stdin_message), max_size=8),
    cuts=st.lists(st.integers(0, 5000), max_size=8),
)
def test_chunk_boundaries_do_not_change_the_answers(
    messages: list[tuple[bytes, str]], cuts: list[int]
) -> None:
    stream = b"".join(message for message, _ in messages)

    def answers(chunks: list[bytes]) -> list[bytes]:
        proto = McpPermissionProtocol(goal_id="g", frame_cap=SMALL_CAP)
        out: list[Action] = []
        for chunk in chunks:
            for action in proto.receive_stdin(chunk, now=0.0):
                out.append(action)
                if isinstance(action, Connect):
                    out += proto.connect_failed("refused")
        out += proto.stdin_closed(now=0.0)
        return sorted(b"".join(a.data for a in out if isinstance(a, WriteStdout)).splitlines())

    # The same answers; their order may differ (calls waiting for one connection attempt
    # are denied together when it fails).
    points = sorted(min(c, len(stream)) for c in cuts)
    pieces = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]
    assert answers(pieces) == answers([stream])
