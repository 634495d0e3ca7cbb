"""The scripted Messages API: the official SDK and the real Claude Code CLI talk to it."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anthropic
import attrs
import pytest
import trio
from anthropic.types import MessageParam

from nexo_trio.testing.messages_api import (
    RecordedRequest,
    Reply,
    ScriptedMessagesAPI,
    Usage,
    always,
    body_contains,
    error,
    last_message_has_tool_result,
    nth,
    prompt_contains,
    system_contains,
    text,
    tool_use,
)
from tests.e2e.conftest import claude_binary

USER_HI: list[MessageParam] = [{"role": "user", "content": "hi"}]


# --- a raw HTTP/1.1 client, to see exactly what goes over the wire -------------------------


@attrs.define
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@attrs.define
class RawConnection:
    stream: trio.SocketStream
    buffer: bytearray = attrs.Factory(bytearray)

    @classmethod
    async def open(cls, port: int) -> RawConnection:
        return cls(await trio.open_tcp_stream("127.0.0.1", port))

    async def _fill(self) -> None:
        data = await self.stream.receive_some(65536)
        if not data:
            raise EOFError("server closed the connection")
        self.buffer += data

    async def _line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            await self._fill()
        line, _, rest = bytes(self.buffer).partition(b"\r\n")
        self.buffer[:] = rest
        return line

    async def _exact(self, size: int) -> bytes:
        while len(self.buffer) < size:
            await self._fill()
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data

    async def read_response(self) -> RawResponse:
        status_line = (await self._line()).decode()
        headers: dict[str, str] = {}
        while line := (await self._line()).decode():
            name, _, value = line.partition(":")
            headers[name.lower()] = value.strip()
        status = int(status_line.split(" ")[1])
        if status == 100:
            return RawResponse(status, headers, b"")
        if headers.get("transfer-encoding") == "chunked":
            body = bytearray()
            while size := int(await self._line(), 16):
                body += await self._exact(size)
                assert await self._exact(2) == b"\r\n"
            assert await self._line() == b""
            return RawResponse(status, headers, bytes(body))
        return RawResponse(status, headers, await self._exact(int(headers["content-length"])))

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def request(
        self,
        method: str,
        target: str,
        body: Any = None,
        *,
        headers: dict[str, str] | None = None,
        version: str = "HTTP/1.1",
    ) -> RawResponse:
        payload = b"" if body is None else json.dumps(body).encode()
        head = [f"{method} {target} {version}", "Host: 127.0.0.1"]
        head += [f"{k}: {v}" for k, v in (headers or {}).items()]
        head.append(f"Content-Length: {len(payload)}")
        await self.send(("\r\n".join(head) + "\r\n\r\n").encode() + payload)
        return await self.read_response()

    async def closed_by_server(self) -> bool:
        with trio.fail_after(5):
            try:
                return await self.stream.receive_some(1024) == b""
            except trio.BrokenResourceError:
                return True

    async def aclose(self) -> None:
        await self.stream.aclose()


async def wait_for(condition: Callable[[], bool], timeout: float = 2.0) -> None:
    with trio.fail_after(timeout):
        while not condition():  # noqa: ASYNC110 - the server's counters have no event
            await trio.sleep(0.01)


def body(content: Any = "hi", **extra: Any) -> dict[str, Any]:
    return {
        "model": "claude-test",
        "max_tokens": 10,
        "messages": [{"role": "user", "content": content}],
        **extra,
    }


async def start(nursery: trio.Nursery, *replies: Reply, **kwargs: Any) -> ScriptedMessagesAPI:
    api: ScriptedMessagesAPI = await nursery.start(ScriptedMessagesAPI(replies, **kwargs).serve)
    return api


def sdk(api: ScriptedMessagesAPI) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(
        base_url=api.base_url, api_key="test-key", max_retries=0, timeout=10
    )


# --- shapes the official SDK parses --------------------------------------------------------


async def test_non_streaming_text_parsed_by_the_sdk(nursery: trio.Nursery) -> None:
    usage = Usage(input_tokens=1234, output_tokens=56, cache_read_input_tokens=7)
    api = await start(nursery, Reply(always(), text("Hello there.", usage=usage)))
    async with sdk(api) as client:
        message = await client.messages.create(model="claude-test", max_tokens=10, messages=USER_HI)
    assert [(b.type, getattr(b, "text", None)) for b in message.content] == [
        ("text", "Hello there.")
    ]
    assert message.stop_reason == "end_turn"
    assert message.model == "claude-test"
    assert message.id.startswith("msg_")
    assert (message.usage.input_tokens, message.usage.output_tokens) == (1234, 56)
    assert message.usage.cache_read_input_tokens == 7
    assert api.message_requests()[0].stream is False


async def test_non_streaming_tool_uses(nursery: trio.Nursery) -> None:
    reply = tool_use("Bash", {"command": "ls"}, text="Let me look.") + tool_use(
        "Read", {"file_path": "/x"}, id="toolu_fixed"
    )
    api = await start(nursery, Reply(always(), reply))
    async with sdk(api) as client:
        message = await client.messages.create(model="claude-test", max_tokens=10, messages=USER_HI)
    assert message.stop_reason == "tool_use"
    assert [b.type for b in message.content] == ["text", "tool_use", "tool_use"]
    first, second = message.content[1], message.content[2]
    assert first.type == "tool_use"
    assert second.type == "tool_use"
    assert (first.name, first.input) == ("Bash", {"command": "ls"})
    assert first.id.startswith("toolu_")
    assert (second.id, second.name, second.input) == ("toolu_fixed", "Read", {"file_path": "/x"})


async def test_streaming_text_and_tool_use_with_partial_json(nursery: trio.Nursery) -> None:
    command = "for i in 1 2 3; do echo line $i; done > out.txt && cat out.txt"
    reply = tool_use("Bash", {"command": command, "timeout": 5000}, text="Running it now.")
    api = await start(
        nursery, Reply(always(), reply), chunk_size=8, usage=Usage(input_tokens=99, output_tokens=9)
    )
    events: list[Any] = []
    async with (
        sdk(api) as client,
        client.messages.stream(model="claude-test", max_tokens=10, messages=USER_HI) as stream,
    ):
        async for event in stream:
            events.append(event)
        final = await stream.get_final_message()
    kinds = [e.type for e in events]
    assert kinds[0] == "message_start"
    assert kinds[-2:] == ["message_delta", "message_stop"]
    text_deltas = [
        e.delta.text
        for e in events
        if e.type == "content_block_delta" and e.delta.type == "text_delta"
    ]
    json_deltas = [
        e.delta.partial_json
        for e in events
        if e.type == "content_block_delta" and e.delta.type == "input_json_delta"
    ]
    assert len(text_deltas) > 1
    assert "".join(text_deltas) == "Running it now."
    assert len(json_deltas) > 3
    assert json.loads("".join(json_deltas)) == {"command": command, "timeout": 5000}
    starts = [e.content_block for e in events if e.type == "content_block_start"]
    assert [b.type for b in starts] == ["text", "tool_use"]
    assert final.stop_reason == "tool_use"
    tool = final.content[1]
    assert tool.type == "tool_use"
    assert tool.input == {"command": command, "timeout": 5000}
    assert (final.usage.input_tokens, final.usage.output_tokens) == (99, 9)
    recorded = api.message_requests()[0]
    assert recorded.stream is True
    assert recorded.status == 200


async def test_raw_sse_stream_shape(nursery: trio.Nursery) -> None:
    api = await start(nursery, Reply(always(), text("abc")))
    conn = await RawConnection.open(api.port)
    response = await conn.request("POST", "/v1/messages?beta=true", body(stream=True))
    await conn.aclose()
    assert response.status == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["transfer-encoding"] == "chunked"
    blocks = response.body.decode().strip().split("\n\n")
    names = [b.splitlines()[0].removeprefix("event: ") for b in blocks]
    assert names == [
        "message_start",
        "ping",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    datas = [json.loads(b.splitlines()[1].removeprefix("data: ")) for b in blocks]
    assert [d["type"] for d in datas] == names
    assert datas[5]["delta"]["stop_reason"] == "end_turn"
    assert api.requests[0].query == "beta=true"


@pytest.mark.parametrize(
    ("status", "exc_type", "error_type"),
    [
        (400, anthropic.BadRequestError, "invalid_request_error"),
        (429, anthropic.RateLimitError, "rate_limit_error"),
        (529, anthropic.OverloadedError, "overloaded_error"),
    ],
)
@pytest.mark.parametrize("streaming", [False, True])
async def test_errors_surface_as_sdk_exceptions(
    nursery: trio.Nursery,
    status: int,
    exc_type: type[anthropic.APIStatusError],
    error_type: str,
    streaming: bool,
) -> None:
    api = await start(nursery, Reply(always(), error(status, message=f"scripted {status}")))

    async def call(client: anthropic.AsyncAnthropic) -> None:
        if streaming:
            async with client.messages.stream(
                model="claude-test", max_tokens=10, messages=USER_HI
            ) as stream:
                await stream.get_final_message()
        else:
            await client.messages.create(model="claude-test", max_tokens=10, messages=USER_HI)

    async with sdk(api) as client:
        with pytest.raises(exc_type) as info:
            await call(client)
    assert info.value.status_code == status
    assert info.value.body == {
        "type": "error",
        "error": {"type": error_type, "message": f"scripted {status}"},
    }
    assert api.requests[0].status == status


async def test_error_headers(nursery: trio.Nursery) -> None:
    api = await start(
        nursery, Reply(always(), error(529, "overloaded_error", "Overloaded", retry_after=2))
    )
    conn = await RawConnection.open(api.port)
    response = await conn.request("POST", "/v1/messages", body())
    await conn.aclose()
    assert response.status == 529
    assert response.headers["retry-after"] == "2"
    assert response.json() == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
    }


# --- the script ----------------------------------------------------------------------------


def recorded(payload: Any, *, message_index: int = 0) -> RecordedRequest:
    raw = json.dumps(payload).encode()
    return RecordedRequest(
        index=0,
        method="POST",
        path="/v1/messages",
        query="",
        headers={},
        body=raw,
        json=payload,
        time=0.0,
        message_index=message_index,
    )


def test_matchers() -> None:
    after_tool = recorded(
        {
            "system": [{"type": "text", "text": "You are Claude Code."}],
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "Create hello.txt"}]},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "t1"}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1"}]},
                {"role": "system", "content": "environment details"},
            ],
        },
        message_index=1,
    )
    first = recorded({"system": "plain system", "messages": [{"role": "user", "content": "Go"}]})
    assert nth(1)(after_tool)
    assert not nth(0)(after_tool)
    assert nth(0)(first)
    assert last_message_has_tool_result()(after_tool)
    assert not last_message_has_tool_result()(first)
    assert prompt_contains("Go")(first)
    assert not prompt_contains("hello.txt")(after_tool)  # the last user message is a result
    assert system_contains("Claude Code")(after_tool)
    assert system_contains("plain")(first)
    assert body_contains("hello.txt")(after_tool)
    assert always()(first)
    both = nth(1) & last_message_has_tool_result()
    assert both(after_tool)
    assert not both(first)
    assert (nth(0) | nth(1))(after_tool)
    assert (~nth(0))(after_tool)
    assert str(both) == "(nth(1) & last_message_has_tool_result())"
    assert after_tool.tool_results() == [{"type": "tool_result", "tool_use_id": "t1"}]
    assert first.last_user_text() == "Go"
    assert after_tool.system_text() == "You are Claude Code."


async def test_first_matching_unused_rule_answers(nursery: trio.Nursery) -> None:
    special = Reply(prompt_contains("special"), text("special answer"), times=2)
    api = await start(
        nursery,
        Reply(nth(0), text("first")),
        special,
        Reply(always(), text("fallback"), times=None),
    )
    conn = await RawConnection.open(api.port)
    answers = []
    for prompt in ["special", "special", "special", "other", "other"]:
        response = await conn.request("POST", "/v1/messages", body(prompt))
        answers.append(response.json()["content"][0]["text"])
    await conn.aclose()
    assert answers == ["first", "special answer", "special answer", "fallback", "fallback"]
    assert special.used == 2
    assert special.exhausted
    assert api.unused() == []
    assert [r.reply for r in api.requests][:3] == [api.script[0], special, special]


async def test_response_computed_from_the_request(nursery: trio.Nursery) -> None:
    api = await start(
        nursery, Reply(always(), lambda r: text(r.last_user_text().upper()), times=None)
    )
    conn = await RawConnection.open(api.port)
    response = await conn.request("POST", "/v1/messages", body("shout"))
    await conn.aclose()
    assert response.json()["content"][0]["text"] == "SHOUT"


async def test_unmatched_request_is_a_recorded_500(nursery: trio.Nursery) -> None:
    api = await start(nursery, Reply(nth(0), text("only one")))
    conn = await RawConnection.open(api.port)
    assert (await conn.request("POST", "/v1/messages", body())).status == 200
    response = await conn.request("POST", "/v1/messages", body("the second prompt"))
    await conn.aclose()
    assert response.status == 500
    assert response.headers["x-should-retry"] == "false"  # the CLI gives up at once
    message = response.json()["error"]["message"]
    assert "no unused reply matches Messages request #1" in message
    assert "the second prompt" in message
    assert "Reply(nth(0), 1/1 used)" in message
    assert api.unmatched == [api.requests[1]]
    assert api.requests[1].problem == message
    assert api.requests[1].status == 500


# --- recording -----------------------------------------------------------------------------


async def test_requests_are_recorded(nursery: trio.Nursery) -> None:
    api = await start(
        nursery,
        Reply(nth(0), tool_use("Bash", {"command": "ls"}, id="toolu_a")),
        Reply(last_message_has_tool_result(), text("done")),
    )
    messages: list[MessageParam] = [{"role": "user", "content": "List files"}]
    before = trio.current_time()
    async with sdk(api) as client:
        count = await client.messages.count_tokens(model="claude-test", messages=messages)
        first = await client.messages.create(
            model="claude-test", max_tokens=10, system="be brief", messages=messages
        )
        messages += [
            {
                "role": "assistant",
                "content": [
                    {
                        "type": "tool_use",
                        "id": "toolu_a",
                        "name": "Bash",
                        "input": {"command": "ls"},
                    }
                ],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "toolu_a", "content": "a b"}],
            },
        ]
        second = await client.messages.create(model="claude-test", max_tokens=10, messages=messages)
    assert count.input_tokens > 0
    assert first.content[0].type == "tool_use"
    assert second.content[0].type == "text"
    assert [(r.method, r.path, r.message_index) for r in api.requests] == [
        ("POST", "/v1/messages/count_tokens", None),
        ("POST", "/v1/messages", 0),
        ("POST", "/v1/messages", 1),
    ]
    req = api.message_requests()[0]
    assert req.headers["content-type"] == "application/json"
    assert "anthropic-version" in req.headers
    assert req.json["system"] == "be brief"
    assert req.json["model"] == "claude-test"
    assert before <= req.time <= trio.current_time()
    assert api.last_user_text(0) == "List files"
    assert api.tool_results(0) == []
    assert api.tool_results(1) == [
        {"type": "tool_result", "tool_use_id": "toolu_a", "content": "a b"}
    ]
    assert api.last_user_text() == ""


# --- HTTP ----------------------------------------------------------------------------------


async def test_keep_alive_serves_several_requests_on_one_connection(
    nursery: trio.Nursery,
) -> None:
    api = await start(nursery, Reply(always(), text("again"), times=None))
    conn = await RawConnection.open(api.port)
    for stream in [False, True, False]:
        response = await conn.request("POST", "/v1/messages", body(stream=stream))
        assert response.status == 200
        assert response.headers["connection"] == "keep-alive"
    count = await conn.request("POST", "/v1/messages/count_tokens", body())
    assert count.json()["input_tokens"] > 0
    await conn.aclose()
    assert len(api.requests) == 4
    assert api.connections_accepted == 1


async def test_pipelined_requests_are_answered_in_order(nursery: trio.Nursery) -> None:
    api = await start(nursery, Reply(always(), lambda r: text(r.last_user_text()), times=None))
    conn = await RawConnection.open(api.port)
    wire = b""
    for prompt in ["one", "two"]:
        payload = json.dumps(body(prompt)).encode()
        wire += b"POST /v1/messages HTTP/1.1\r\nContent-Length: %d\r\n\r\n%s" % (
            len(payload),
            payload,
        )
    await conn.send(wire)
    texts = [(await conn.read_response()).json()["content"][0]["text"] for _ in range(2)]
    await conn.aclose()
    assert texts == ["one", "two"]


async def test_connection_close_and_http_1_0(nursery: trio.Nursery) -> None:
    api = await start(nursery, Reply(always(), text("bye"), times=None))
    conn = await RawConnection.open(api.port)
    response = await conn.request("POST", "/v1/messages", body(), headers={"Connection": "close"})
    assert response.headers["connection"] == "close"
    assert await conn.closed_by_server()
    await conn.aclose()
    conn = await RawConnection.open(api.port)
    response = await conn.request("POST", "/v1/messages", body(), version="HTTP/1.0")
    assert response.status == 200
    assert await conn.closed_by_server()
    await conn.aclose()


async def test_chunked_request_body(nursery: trio.Nursery) -> None:
    api = await start(nursery, Reply(prompt_contains("chunked prompt"), text("got it")))
    payload = json.dumps(body("a chunked prompt")).encode()
    pieces = [payload[:10], payload[10:25], payload[25:]]
    wire = b"POST /v1/messages?beta=true HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    wire += b"".join(b"%x;ext=1\r\n%s\r\n" % (len(p), p) for p in pieces)
    wire += b"0\r\nX-Trailer: yes\r\n\r\n"
    conn = await RawConnection.open(api.port)
    for i in range(0, len(wire), 7):  # dribbled in small writes
        await conn.send(wire[i : i + 7])
    response = await conn.read_response()
    again = await conn.request("POST", "/v1/messages/count_tokens", body())
    await conn.aclose()
    assert response.status == 200
    assert response.json()["content"][0]["text"] == "got it"
    assert api.requests[0].json == body("a chunked prompt")
    assert api.requests[0].query == "beta=true"
    assert again.status == 200


async def test_expect_100_continue(nursery: trio.Nursery) -> None:
    api = await start(nursery, Reply(always(), text("ok")))
    payload = json.dumps(body()).encode()
    conn = await RawConnection.open(api.port)
    await conn.send(
        b"POST /v1/messages HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n"
        % len(payload)
    )
    interim = await conn.read_response()
    await conn.send(payload)
    final = await conn.read_response()
    await conn.aclose()
    assert (interim.status, final.status) == (100, 200)


@pytest.mark.parametrize(
    ("method", "target"),
    [("GET", "/v1/models"), ("POST", "/v1/complete"), ("GET", "/v1/messages")],
)
async def test_unknown_routes_are_404(nursery: trio.Nursery, method: str, target: str) -> None:
    api = await start(nursery, Reply(always(), text("never")))
    conn = await RawConnection.open(api.port)
    response = await conn.request(method, target, None if method == "GET" else body())
    assert response.status == 404
    assert response.json()["type"] == "error"
    assert response.json()["error"]["type"] == "not_found_error"
    # the connection is still usable
    assert (await conn.request("POST", "/v1/messages", body())).status == 200
    await conn.aclose()
    assert api.requests[0].status == 404
    assert api.requests[0].message_index is None
    assert api.requests[1].message_index == 0


async def test_malformed_requests_get_400_and_are_closed(nursery: trio.Nursery) -> None:
    api = await start(nursery, Reply(always(), text("never"), times=None))
    for wire in [
        b"NONSENSE\r\n\r\n",
        b"POST /v1/messages HTTP/1.1\r\nContent-Length: nope\r\n\r\n",
        b"POST /v1/messages HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ]:
        conn = await RawConnection.open(api.port)
        await conn.send(wire)
        response = await conn.read_response()
        assert response.status == 400
        assert "bad HTTP request" in response.json()["error"]["message"]
        assert await conn.closed_by_server()
        await conn.aclose()
    conn = await RawConnection.open(api.port)
    await conn.send(b"POST /v1/messages HTTP/1.1\r\nContent-Length: 3\r\n\r\n{{{")
    not_json = await conn.read_response()
    a_string = await conn.request("POST", "/v1/messages", "a JSON string")
    await conn.aclose()
    for response in (not_json, a_string):
        assert response.status == 400
        assert response.json()["error"]["message"] == "the body is not a JSON object"
    assert [r.problem for r in api.requests] == ["the body is not a JSON object"] * 2


async def test_delay(nursery: trio.Nursery) -> None:
    api = await start(nursery, Reply(always(), text("slow"), delay=0.3))
    conn = await RawConnection.open(api.port)
    started = trio.current_time()
    response = await conn.request("POST", "/v1/messages", body())
    elapsed = trio.current_time() - started
    await conn.aclose()
    assert response.status == 200
    assert 0.3 <= elapsed < 2.0


async def test_idle_connections_time_out(nursery: trio.Nursery) -> None:
    api = await start(nursery, read_timeout=0.2)
    idle = await RawConnection.open(api.port)
    partial = await RawConnection.open(api.port)
    await partial.send(b"POST /v1/messages HTTP/1.1\r\nContent-Length: 100\r\n\r\n{")
    assert await idle.closed_by_server()
    assert await partial.closed_by_server()
    await idle.aclose()
    await partial.aclose()
    await wait_for(lambda: api.connections_open == 0)


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc/self/fd")
async def test_stops_on_cancel_and_closes_everything() -> None:
    before = open_fds()
    api = ScriptedMessagesAPI([Reply(always(), text("slow"), delay=30)])
    clients: list[RawConnection] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(api.serve)
        clients.append(await RawConnection.open(api.port))  # idle keep-alive
        waiting = await RawConnection.open(api.port)  # waiting for a delayed answer
        payload = json.dumps(body()).encode()
        await waiting.send(
            b"POST /v1/messages HTTP/1.1\r\nContent-Length: %d\r\n\r\n%s" % (len(payload), payload)
        )
        clients.append(waiting)
        await wait_for(lambda: api.connections_open == 2 and bool(api.requests))
        nursery.cancel_scope.cancel()
    assert api.connections_open == 0
    for client in clients:
        assert await client.closed_by_server()
        await client.aclose()
    with pytest.raises(OSError, match="connect"):  # the listener is gone
        await trio.open_tcp_stream("127.0.0.1", api.port)
    assert open_fds() == before


def test_address_before_serving() -> None:
    api = ScriptedMessagesAPI()
    with pytest.raises(RuntimeError, match="not serving yet"):
        _ = api.base_url


async def test_claude_env(nursery: trio.Nursery, tmp_path: Path) -> None:
    api = await start(nursery)
    env = api.claude_env(home=tmp_path)
    assert env["ANTHROPIC_BASE_URL"] == f"http://127.0.0.1:{api.port}"
    assert env["HOME"] == str(tmp_path)
    assert env["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"] == "1"
    assert env["DISABLE_TELEMETRY"] == "1"
    assert env["ANTHROPIC_API_KEY"]


# --- the real Claude Code CLI --------------------------------------------------------------


@pytest.fixture
def claude_bin() -> Path:
    """The real CLI's binary; the test skips, saying how to get it, when it is missing."""
    return claude_binary()


async def run_claude(
    binary: Path, api: ScriptedMessagesAPI, home: Path, *args: str
) -> tuple[int, list[dict[str, Any]]]:
    await trio.Path(home).mkdir(exist_ok=True)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **api.claude_env(home=home)}
    with trio.fail_after(45):
        done = await trio.run_process(
            [str(binary), *args, "--output-format", "stream-json", "--verbose"],
            env=env,
            cwd=home,
            stdin=b"",
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    frames = [json.loads(line) for line in done.stdout.decode().splitlines() if line.strip()]
    if done.returncode != 0:
        sys.stderr.write(done.stderr.decode())
    return done.returncode, frames


@pytest.mark.real_claude
async def test_real_claude_cli_offline(
    nursery: trio.Nursery, tmp_path: Path, claude_bin: Path
) -> None:
    binary = claude_bin

    # 1. a text reply
    usage = Usage(input_tokens=1234, output_tokens=56, cache_read_input_tokens=7)
    api = await start(
        nursery, Reply(prompt_contains("Say hello"), text("Hello from the script.", usage=usage))
    )
    code, frames = await run_claude(binary, api, tmp_path / "home1", "-p", "Say hello")
    result = frames[-1]
    assert code == 0, frames
    assert frames[0]["type"] == "system"
    assert frames[0]["subtype"] == "init"
    assert result["type"] == "result"
    assert result["subtype"] == "success"
    assert result["is_error"] is False
    assert result["result"] == "Hello from the script."
    assert result["usage"]["input_tokens"] == 1234  # the scripted usage, counted once
    assert result["usage"]["output_tokens"] == 56
    assert result["usage"]["cache_read_input_tokens"] == 7
    assert api.unmatched == []
    (req,) = api.message_requests()
    assert (req.method, req.path, req.query) == ("POST", "/v1/messages", "beta=true")
    assert req.headers["x-api-key"] == api.claude_env()["ANTHROPIC_API_KEY"]
    assert "anthropic-version" in req.headers
    assert {"model", "max_tokens", "messages", "system", "tools", "stream"} <= set(req.json)
    assert req.stream is True
    assert "Say hello" in req.last_user_text()

    # 2. one Bash tool_use round trip
    api = await start(
        nursery,
        Reply(
            prompt_contains("Run the command") & ~last_message_has_tool_result(),
            tool_use("Bash", {"command": "echo scripted-$((40 + 2))"}, id="toolu_scripted_1"),
        ),
        Reply(last_message_has_tool_result(), text("It printed scripted-42.")),
    )
    code, frames = await run_claude(
        binary, api, tmp_path / "home2", "-p", "Run the command", "--allowedTools=Bash"
    )
    assert code == 0, frames
    assert frames[-1]["subtype"] == "success"
    assert frames[-1]["result"] == "It printed scripted-42."
    assert api.unmatched == []
    assert len(api.message_requests()) == 2
    (tool_result,) = api.tool_results(1)
    assert tool_result["tool_use_id"] == "toolu_scripted_1"
    assert tool_result.get("is_error") is not True
    assert "scripted-42" in json.dumps(tool_result["content"])
    assert api.message_requests()[1].messages[-1]["content"][0]["type"] == "tool_result"
