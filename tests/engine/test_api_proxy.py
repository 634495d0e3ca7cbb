"""No network but the API: the plan's :class:`ApiProxy`, the orchestrator's allow-listing
proxy (:class:`ApiGateway`) on its own, and confined turns that reach only the API through
the sandbox's relay (``engine/netrelay.py``) under the real bubblewrap."""

from __future__ import annotations

import functools
import shutil
import stat
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import attrs
import pytest
import trio

from nexo_trio.core.outcome import Cause, TurnKind
from nexo_trio.core.sandbox import API_PROXY_PORT, ApiProxy, Mount, SandboxPlan, parse_host_port
from nexo_trio.engine.api_gateway import ApiGateway
from nexo_trio.engine.sandbox import prepare_sandbox
from nexo_trio.testing.scenario import bash, hang, init, result, text, turn
from tests.engine.conftest import FakeClaudeFactory
from tests.engine.helpers import EventLog
from tests.engine.test_sandbox import World, playing, require_bwrap, tool_results

FETCH = (
    'python3 -c "import sys, urllib.request; '
    'print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())" '
)


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    """A short directory for Unix sockets (their paths are limited to ~107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="nx-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


# ----------------------------------------------------------------------------- the plan


def test_an_api_proxy_goes_with_no_network_and_is_bound_read_only() -> None:
    proxy = ApiProxy(socket="/run/nx/api.sock", allow="api.anthropic.com:443")
    plan = SandboxPlan("/ws", "/scratch", network=False, api_proxy=proxy)
    assert Mount("/run/nx/api.sock", False) in plan.mounts()
    assert plan.env["HTTPS_PROXY"] == plan.env["http_proxy"] == f"http://127.0.0.1:{API_PROXY_PORT}"
    assert plan.env["NO_PROXY"] == ""
    assert plan.env["TMPDIR"] == "/scratch"
    assert proxy.allowed() == [("api.anthropic.com", 443)]
    with pytest.raises(ValueError, match="only makes sense with network=False"):
        SandboxPlan("/ws", "/scratch", api_proxy=proxy)


@pytest.mark.parametrize("bad", ["api.anthropic.com", ":443", "host:0", "host:http", "h:70000"])
def test_an_api_proxy_allows_host_port_pairs_only(bad: str) -> None:
    with pytest.raises(ValueError, match="host:port"):
        ApiProxy(socket="/s", allow=(bad,))
    with pytest.raises(ValueError, match="at least one"):
        ApiProxy(socket="/s", allow=())


def test_host_port_parsing() -> None:
    assert parse_host_port("API.Example.com:8443") == ("api.example.com", 8443)
    assert parse_host_port("[::1]:443") == ("::1", 443)
    assert parse_host_port("example.com", default_port=80) == ("example.com", 80)
    assert parse_host_port("[::1]", default_port=80) == ("::1", 80)
    assert parse_host_port("example.com") is None


# ----------------------------------------------------------------------------- the gateway


async def echo_http(stream: trio.SocketStream) -> None:
    """An upstream: answers each request with its own request head, then closes."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await stream.receive_some(4096)
        if not chunk:
            return
        data += chunk
    body = data.split(b"\r\n\r\n")[0]
    await stream.send_all(
        b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
    )
    await stream.aclose()


async def echo_raw(stream: trio.SocketStream) -> None:
    """An upstream that sends back whatever it gets."""
    async with stream:
        while chunk := await stream.receive_some(4096):
            await stream.send_all(chunk)


@attrs.define
class Upstreams:
    http_port: int
    raw_port: int
    other_port: int


@pytest.fixture
async def upstreams(nursery: trio.Nursery) -> Upstreams:
    ports = []
    for handler in (echo_http, echo_raw, echo_http):
        listeners = await nursery.start(
            functools.partial(trio.serve_tcp, handler, 0, host="127.0.0.1")
        )
        ports.append(listeners[0].socket.getsockname()[1])
    return Upstreams(*ports)


@pytest.fixture
async def gateway(sock_dir: Path, upstreams: Upstreams) -> AsyncIterator[ApiGateway]:
    proxy = ApiProxy(
        socket=str(sock_dir / "api.sock"),
        allow=(f"127.0.0.1:{upstreams.http_port}", f"127.0.0.1:{upstreams.raw_port}"),
    )
    served = ApiGateway(proxy)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(served.serve)
        yield served
        nursery.cancel_scope.cancel()
    served.close()


async def exchange(gateway: ApiGateway, data: bytes) -> bytes:
    """Send ``data`` through the gateway's socket; everything it answers until it closes."""
    stream = await trio.open_unix_socket(gateway.path)
    async with stream:
        await stream.send_all(data)
        answer = b""
        with trio.fail_after(5):
            while chunk := await stream.receive_some(4096):
                answer += chunk
                if data.startswith(b"CONNECT") and b"ping" in answer:
                    break
    return answer


async def test_the_gateway_tunnels_connect_to_an_allowed_address(
    gateway: ApiGateway, upstreams: Upstreams
) -> None:
    target = f"127.0.0.1:{upstreams.raw_port}"
    answer = await exchange(
        gateway, f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\nping".encode()
    )
    assert answer == b"HTTP/1.1 200 Connection Established\r\n\r\nping"
    assert gateway.forwarded == [target]


async def test_the_gateway_forwards_an_absolute_form_request_in_origin_form(
    gateway: ApiGateway, upstreams: Upstreams
) -> None:
    target = f"127.0.0.1:{upstreams.http_port}"
    request = (
        f"POST http://{target}/v1/messages?beta=true HTTP/1.1\r\nHost: {target}\r\n"
        "Proxy-Connection: keep-alive\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\n{}"
    )
    answer = await exchange(gateway, request.encode())
    head, _, seen = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert seen.split(b"\r\n") == [
        b"POST /v1/messages?beta=true HTTP/1.1",
        f"Host: {target}".encode(),
        b"Content-Length: 2",
        b"Connection: close",
    ]


@pytest.mark.parametrize(
    ("request_head", "status"),
    [
        ("CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443", b"403"),
        ("CONNECT 127.0.0.1:{other} HTTP/1.1\r\nHost: x", b"403"),
        ("GET http://127.0.0.1:{other}/ HTTP/1.1\r\nHost: x", b"403"),
        ("GET http://example.com/ HTTP/1.1\r\nHost: example.com", b"403"),
        ("GET /v1/messages HTTP/1.1\r\nHost: x", b"400"),
        ("garbage", b"400"),
    ],
)
async def test_the_gateway_refuses_everything_else(
    gateway: ApiGateway, upstreams: Upstreams, request_head: str, status: bytes
) -> None:
    head = request_head.format(other=upstreams.other_port)
    answer = await exchange(gateway, f"{head}\r\n\r\n".encode())
    assert answer.startswith(b"HTTP/1.1 " + status)
    if status == b"403":
        assert b"this sandbox reaches only the API" in answer
    assert gateway.forwarded == []
    assert len(gateway.denied) == 1


async def test_the_gateway_replaces_a_stale_socket_and_removes_its_own(sock_dir: Path) -> None:
    path = sock_dir / "api.sock"
    stale = ApiGateway(ApiProxy(socket=str(path), allow="127.0.0.1:9"))
    stale._socket.close()  # an earlier run that died: its socket file is left
    served = ApiGateway(ApiProxy(socket=str(path), allow="127.0.0.1:9"))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    served.close()
    assert not path.exists()
    path.write_text("not a socket")
    with pytest.raises(OSError):  # noqa: PT011 - whatever bind says about a regular file
        ApiGateway(ApiProxy(socket=str(path), allow="127.0.0.1:9"))
    assert path.read_text() == "not a socket"


# ----------------------------------------------------------------------------- confined turns


@pytest.fixture
async def world(make_fake: FakeClaudeFactory, tmp_path: Path) -> World:
    await require_bwrap()
    w = World(root=tmp_path, fake=make_fake())
    for d in (w.workspace, w.home, w.outside):
        d.mkdir()
    return w


def no_network_but(world: World, sock_dir: Path, *allow: str) -> SandboxPlan:
    proxy = ApiProxy(socket=str(sock_dir / "api.sock"), allow=allow)
    return world.plan(network=False, api_proxy=proxy)


async def test_a_turn_without_network_reaches_the_api_and_nothing_else(
    world: World, sock_dir: Path, upstreams: Upstreams
) -> None:
    api = f"127.0.0.1:{upstreams.http_port}"
    w = playing(
        world,
        turn(
            init(),
            bash(FETCH + f"http://{api}/v1/messages?beta=true"),
            bash(FETCH + f"http://127.0.0.1:{upstreams.other_port}/"),
            bash(
                "python3 -c \"import socket; socket.create_connection(('127.0.0.1', "
                f'{upstreams.http_port}), 2)"'
            ),
            text("ok"),
            result("ok"),
        ),
    )
    log = EventLog()
    res = await w.run(log, plan=no_network_but(w, sock_dir, api))
    assert res.outcome.kind is TurnKind.CLAIMED_DONE, res.outcome
    reached, refused, direct = tool_results(log)
    assert not reached.is_error
    assert "GET /v1/messages?beta=true HTTP/1.1" in str(reached.content)  # via the proxy
    assert refused.is_error
    assert "403" in str(refused.content)
    assert direct.is_error
    assert "Connection refused" in str(direct.content)  # no way around the proxy
    assert not (sock_dir / "api.sock").exists()  # the turn's gateway is gone with it
    [invocation] = w.fake.invocations()  # the relay exec'd the CLI, environment and all
    assert invocation["env"]["NEXO_TRIO_TURN"]


async def test_the_relay_leaves_the_cli_its_sigterm(world: World, sock_dir: Path) -> None:
    w = playing(world, turn(init(), text("working"), hang()))
    res = await w.run(plan=no_network_but(w, sock_dir, "127.0.0.1:9"), timeout=1.0, kill_grace=5.0)
    assert res.outcome.cause is Cause.TIMEOUT
    assert res.stop_actions == ("SIGTERM",)
    assert res.outcome.exit_code == 143


async def test_a_gateway_that_cannot_listen_fails_the_turn_saying_why(
    world: World, tmp_path: Path
) -> None:
    w = playing(world, turn(init(), result("never")))
    path = tmp_path / "no-such-dir" / "api.sock"
    proxy = ApiProxy(socket=str(path), allow="127.0.0.1:9")
    res = await w.run(plan=w.plan(network=False, api_proxy=proxy))
    assert res.outcome.kind is TurnKind.ESCALATE
    assert res.outcome.cause is Cause.SPAWN_FAILED
    assert res.outcome.reason == (
        f"could not start claude: the sandbox's API proxy cannot listen on {path}: "
        "No such file or directory"
    )
    assert w.fake.invocations() == []
    assert not await trio.Path(path).exists()


def test_prepare_makes_the_proxy_socket_directory(tmp_path: Path, sock_dir: Path) -> None:
    (tmp_path / "ws").mkdir()
    proxy = ApiProxy(socket=str(sock_dir / "run" / "api.sock"), allow="api.anthropic.com:443")
    plan = prepare_sandbox(tmp_path / "ws", tmp_path / "scratch", network=False, api_proxy=proxy)
    assert plan.api_proxy == proxy
    assert stat.S_IMODE((sock_dir / "run").stat().st_mode) == 0o700
    assert not (sock_dir / "run" / "api.sock").exists()
