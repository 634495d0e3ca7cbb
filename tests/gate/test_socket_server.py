"""The orchestrator's end of the permission bridge: :class:`GateServer` on a real Unix socket.

Set-up (modes, stale and live sockets, clean-up), the frame protocol (ids, concurrency,
malformed and oversized frames) and failing closed (a router that raises or is too slow).
"""

from __future__ import annotations

import json
import os
import socket
import stat
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from nexo_trio.core.permission import (
    Decision,
    DecisionOutcome,
    PermissionRequest,
    allow,
    deny,
    unavailable,
)
from nexo_trio.gate.socket_server import (
    MAX_SOCKET_PATH,
    GateServer,
    GateSocketError,
    prepare_socket_path,
)
from nexo_trio.wire import gate_frames
from nexo_trio.wire.gate_frames import DecisionFrame, PermissionFrame

Router = Callable[[PermissionRequest], Awaitable[Decision]]


async def allow_reads(request: PermissionRequest) -> Decision:
    """Allows ``Read``, denies everything else."""
    if request.tool_name == "Read":
        return allow("test")
    return deny(f"no {request.tool_name} here", "test")


@asynccontextmanager
async def serving(server: GateServer) -> AsyncIterator[GateServer]:
    """The server runs (bound) inside the block and is stopped at its end."""
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        yield server
        nursery.cancel_scope.cancel()


async def start_error(server: GateServer) -> GateSocketError:
    """The error the server fails to start with."""
    async with trio.open_nursery() as nursery:
        try:
            await nursery.start(server.serve)
        except GateSocketError as exc:
            return exc
        nursery.cancel_scope.cancel()
    raise AssertionError("the server started")


class Client:
    """One connection to the gate: send frames, read reply frames."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self._buffer = b""
        self._numbers = 0

    @classmethod
    @asynccontextmanager
    async def connect(cls, path: Path) -> AsyncIterator[Client]:
        """A connection, closed at the end of the block."""
        stream = await trio.open_unix_socket(str(path))
        async with stream:
            yield cls(stream)

    async def send(self, data: bytes) -> None:
        """Raw bytes."""
        await self.stream.send_all(data)

    async def ask(
        self,
        tool_name: str = "Read",
        tool_input: dict[str, Any] | None = None,
        *,
        request_id: str | None = None,
        goal_id: str = "g1",
    ) -> str:
        """Send one permission request; its id."""
        if request_id is None:
            self._numbers += 1
            request_id = f"r{self._numbers}"
        await self.send(
            request_line(
                request_id,
                goal_id=goal_id,
                tool_name=tool_name,
                tool_input=tool_input if tool_input is not None else {"file_path": "/x"},
                tool_use_id=f"toolu_{request_id}",
            )
        )
        return request_id

    async def recv(self, timeout: float = 10.0) -> dict[str, Any]:
        """The next reply frame: its JSON object (what is on the wire), once validated."""
        with trio.fail_after(timeout):
            while b"\n" not in self._buffer:
                data = await self.stream.receive_some(65536)
                if not data:
                    raise EOFError("the gate closed the connection")
                self._buffer += data
        line, self._buffer = self._buffer.split(b"\n", 1)
        gate_frames.decode_reply(line)
        frame = json.loads(line)
        assert isinstance(frame, dict)
        return frame

    async def decide(
        self, tool_name: str = "Read", tool_input: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Ask and return the reply (which must carry the request's id)."""
        request_id = await self.ask(tool_name, tool_input)
        reply = await self.recv()
        assert reply["id"] == request_id, reply
        return reply


def request_line(
    request_id: str,
    *,
    goal_id: str,
    tool_name: str,
    tool_input: dict[str, Any],
    tool_use_id: str | None,
) -> bytes:
    """A permission request frame, encoded."""
    return gate_frames.encode_request(
        PermissionFrame(request_id, goal_id, tool_name, tool_input, tool_use_id)
    )


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


# ---------------------------------------------------------------------------- set-up


async def test_start_returns_once_bound_with_private_modes(sock_dir: Path) -> None:
    path = sock_dir / "run" / "gate.sock"
    server = GateServer(path, allow_reads)
    async with serving(server):
        # Bound and listening as soon as start() returns: a plain blocking connect works.
        assert stat.S_ISSOCK(path.lstat().st_mode)
        assert mode(path) == 0o600
        assert mode(path.parent) == 0o700
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with probe:
            probe.connect(str(path))
        async with Client.connect(path) as client:
            assert (await client.decide())["behavior"] == "allow"
    assert not path.exists()


async def test_an_existing_open_directory_of_ours_is_made_private(sock_dir: Path) -> None:
    directory = sock_dir / "run"
    directory.mkdir()
    directory.chmod(0o755)
    (directory / "keep.txt").write_text("mine")
    async with serving(GateServer(directory / "gate.sock", allow_reads)):
        assert mode(directory) == 0o700
        assert mode(directory / "gate.sock") == 0o600
    assert (directory / "keep.txt").read_text() == "mine"


async def test_a_directory_of_another_user_is_refused(sock_dir: Path) -> None:
    # Someone else's directory (say a squatted /tmp/nexo-trio-UID) could have our socket
    # swapped for theirs, answering "allow" to everything: never serve from it.
    if os.getuid() != 0:
        pytest.skip("needs root to make a directory owned by another user")
    directory = sock_dir / "theirs"
    directory.mkdir()
    directory.chmod(0o777)
    os.chown(directory, 65534, 65534)
    with pytest.raises(GateSocketError, match="owned by"):
        prepare_socket_path(directory / "gate.sock")
    assert mode(directory) == 0o777
    assert not (directory / "gate.sock").exists()


async def test_a_stale_socket_is_replaced(sock_dir: Path) -> None:
    path = sock_dir / "gate.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()  # the file stays, nobody listens
    async with serving(GateServer(path, allow_reads)):
        assert mode(path) == 0o600
        async with Client.connect(path) as client:
            assert (await client.decide())["behavior"] == "allow"


async def test_a_live_socket_of_another_server_is_never_unlinked(sock_dir: Path) -> None:
    path = sock_dir / "gate.sock"
    first = GateServer(path, allow_reads)
    async with serving(first):
        inode = path.lstat().st_ino
        error = await start_error(GateServer(path, allow_reads))
        assert "another process is serving" in str(error)
        assert path.lstat().st_ino == inode
        # The first still works, on the very same socket file.
        async with Client.connect(path) as client:
            assert (await client.decide())["behavior"] == "allow"
            assert (await client.decide("Bash", {"command": "ls"}))["behavior"] == "deny"
    assert not path.exists()


async def test_a_live_plain_listener_is_never_unlinked(sock_dir: Path) -> None:
    path = sock_dir / "gate.sock"
    other = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with other:
        other.bind(str(path))
        other.listen(1)
        with pytest.raises(GateSocketError, match="another process is serving"):
            prepare_socket_path(path)
        assert stat.S_ISSOCK(path.lstat().st_mode)
        peer = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with peer:
            peer.connect(str(path))  # the other server still has its address


@pytest.mark.parametrize("kind", ["file", "directory", "symlink"])
async def test_a_path_that_is_not_a_socket_is_refused_and_kept(sock_dir: Path, kind: str) -> None:
    path = sock_dir / "gate.sock"
    if kind == "file":
        path.write_text("precious")
    elif kind == "directory":
        path.mkdir()
    else:
        target = sock_dir / "target.txt"
        target.write_text("precious")
        path.symlink_to(target)
    error = await start_error(GateServer(path, allow_reads))
    assert "not a socket" in str(error)
    if kind == "file":
        assert path.read_text() == "precious"
    elif kind == "directory":
        assert path.is_dir()
    else:
        assert path.is_symlink()
        assert path.read_text() == "precious"


def test_a_path_longer_than_a_socket_address_is_refused(sock_dir: Path) -> None:
    path = sock_dir / ("x" * (MAX_SOCKET_PATH + 10)) / "gate.sock"
    with pytest.raises(GateSocketError, match=f"longer than {MAX_SOCKET_PATH} bytes") as info:
        GateServer(path, allow_reads)
    assert str(path) in str(info.value)
    assert not path.parent.exists()


async def test_the_socket_file_is_removed_on_stop(sock_dir: Path) -> None:
    path = sock_dir / "gate.sock"
    async with serving(GateServer(path, allow_reads)):
        assert path.exists()
    assert not path.exists()
    # ... and the same path serves again.
    async with serving(GateServer(path, allow_reads)), Client.connect(path) as client:
        assert (await client.decide())["behavior"] == "allow"


async def test_a_socket_replaced_meanwhile_is_not_removed_on_stop(sock_dir: Path) -> None:
    path = sock_dir / "gate.sock"
    newcomer = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with newcomer:
        async with serving(GateServer(path, allow_reads)):
            path.unlink()
            newcomer.bind(str(path))
            newcomer.listen(1)
            inode = path.lstat().st_ino
        assert path.lstat().st_ino == inode  # the newcomer keeps its address
    path.unlink()


# ---------------------------------------------------------------------------- requests


async def test_allow_and_deny_reply_with_the_request_id(sock_dir: Path) -> None:
    path = sock_dir / "gate.sock"
    server = GateServer(path, allow_reads)
    async with serving(server), Client.connect(path) as client:
        rid = await client.ask("Read", {"file_path": "/etc/hosts"}, request_id="abc-1")
        reply = await client.recv()
        assert reply == {
            "v": 1,
            "type": "decision",
            "id": "abc-1",
            "behavior": "allow",
            "updated_input": {"file_path": "/etc/hosts"},
        }
        rid = await client.ask("Bash", {"command": "ls"}, request_id="abc-2")
        reply = await client.recv()
        assert reply == {
            "v": 1,
            "type": "decision",
            "id": rid,
            "behavior": "deny",
            "message": "no Bash here",
        }
    assert server.requests == 2


async def test_the_router_sees_the_whole_request(sock_dir: Path) -> None:
    seen: list[PermissionRequest] = []

    async def router(request: PermissionRequest) -> Decision:
        seen.append(request)
        return allow("t", updated_input={"command": "ls -la"})

    path = sock_dir / "gate.sock"
    async with serving(GateServer(path, router)), Client.connect(path) as client:
        await client.ask("Bash", {"command": "ls"}, request_id="q", goal_id="goal-7")
        reply = await client.recv()
    assert reply["updated_input"] == {"command": "ls -la"}
    assert seen == [
        PermissionRequest(
            goal_id="goal-7", tool_name="Bash", input={"command": "ls"}, tool_use_id="toolu_q"
        )
    ]


@pytest.mark.parametrize(
    ("decision", "needle"),
    [
        (unavailable("the LLM is down", "llm"), "unavailable (the LLM is down)"),
        (Decision(DecisionOutcome.CANCELLED, decider="gate"), "cancelled"),
        (Decision(DecisionOutcome.ABSTAIN, decider="x"), "no rule or decider allows"),
        (Decision(DecisionOutcome.DENY), "Permission denied"),
    ],
)
async def test_every_other_outcome_goes_out_as_a_deny(
    sock_dir: Path, decision: Decision, needle: str
) -> None:
    async def router(request: PermissionRequest) -> Decision:
        return decision

    path = sock_dir / "gate.sock"
    async with serving(GateServer(path, router)), Client.connect(path) as client:
        reply = await client.decide()
    assert reply["behavior"] == "deny"
    assert needle in reply["message"]


async def test_concurrent_requests_on_one_connection_are_answered_out_of_order(
    sock_dir: Path, autojump_clock: trio.testing.MockClock
) -> None:
    count = 64

    async def router(request: PermissionRequest) -> Decision:
        # The first asked is the last answered.
        await trio.sleep((count - request.input["n"]) * 0.01)
        return allow("t", updated_input={"n": request.input["n"], "echo": True})

    path = sock_dir / "gate.sock"
    async with serving(GateServer(path, router)), Client.connect(path) as client:
        # All requests in one write: the server must split and answer them all.
        await client.send(
            b"".join(
                request_line(
                    f"id-{n}", goal_id="g", tool_name="Bash", tool_input={"n": n}, tool_use_id=None
                )
                for n in range(count)
            )
        )
        replies = [await client.recv() for _ in range(count)]
    assert [reply["id"] for reply in replies] == [f"id-{n}" for n in reversed(range(count))]
    for reply in replies:
        n = int(reply["id"].removeprefix("id-"))
        assert reply["updated_input"] == {"n": n, "echo": True}


async def test_a_slow_decision_does_not_hold_up_another(sock_dir: Path) -> None:
    release = trio.Event()

    async def router(request: PermissionRequest) -> Decision:
        if request.tool_name == "Bash":
            await release.wait()
        return allow("t")

    path = sock_dir / "gate.sock"
    async with serving(GateServer(path, router)), Client.connect(path) as client:
        slow = await client.ask("Bash", {"command": "sleep"})
        fast = await client.ask("Read")
        assert (await client.recv())["id"] == fast
        release.set()
        assert (await client.recv())["id"] == slow


NESTED = b"[" * 100_000 + b"]" * 100_000


@pytest.mark.parametrize(
    ("line", "expected_id", "needle"),
    [
        pytest.param(b"this is not JSON", None, "not JSON", id="not-json"),
        pytest.param(b"\xff\xfe{}", None, "not JSON", id="not-utf8"),
        pytest.param(b"[1, 2]", None, "JSON object", id="array"),
        pytest.param(b'"permission"', None, "JSON object", id="string"),
        pytest.param(b"null", None, "JSON object", id="null"),
        pytest.param(NESTED, None, "", id="deeply-nested"),
        pytest.param(
            b'{"v": 2, "type": "permission", "id": "x1", "goal_id": "g", "tool_name": "Read",'
            b' "input": {}}',
            "x1",
            "version",
            id="wrong-version",
        ),
        pytest.param(
            b'{"type": "permission", "id": "x2", "goal_id": "g", "tool_name": "Read", "input": {}}',
            "x2",
            "version",
            id="no-version",
        ),
        pytest.param(
            b'{"v": 1, "id": "x3", "goal_id": "g", "tool_name": "Read", "input": {}}',
            "x3",
            "type",
            id="no-type",
        ),
        pytest.param(
            b'{"v": 1, "type": "decision", "id": "x4", "behavior": "allow"}',
            "x4",
            "unknown frame type",
            id="wrong-type",
        ),
        pytest.param(
            b'{"v": 1, "type": "permission", "goal_id": "g", "tool_name": "Read", "input": {}}',
            None,
            "'id'",
            id="no-id",
        ),
        pytest.param(
            b'{"v": 1, "type": "permission", "id": 7, "goal_id": "g", "tool_name": "Read",'
            b' "input": {}}',
            None,
            "'id'",
            id="int-id",
        ),
        pytest.param(
            b'{"v": 1, "type": "permission", "id": "x5", "tool_name": "Read", "input": {}}',
            "x5",
            "'goal_id'",
            id="no-goal-id",
        ),
        pytest.param(
            b'{"v": 1, "type": "permission", "id": "x6", "goal_id": "g", "tool_name": 3,'
            b' "input": {}}',
            "x6",
            "'tool_name'",
            id="int-tool-name",
        ),
        pytest.param(
            b'{"v": 1, "type": "permission", "id": "x7", "goal_id": "g", "tool_name": "Read",'
            b' "input": []}',
            "x7",
            "'input'",
            id="list-input",
        ),
        pytest.param(
            b'{"v": 1, "type": "permission", "id": "x8", "goal_id": "g", "tool_name": "Read"}',
            "x8",
            "'input'",
            id="no-input",
        ),
        pytest.param(
            b'{"v": 1, "type": "permission", "id": "x9", "goal_id": "g", "tool_name": "Read",'
            b' "input": {}, "tool_use_id": 5}',
            "x9",
            "tool_use_id",
            id="int-tool-use-id",
        ),
    ],
)
async def test_a_malformed_frame_gets_an_error_frame_and_the_connection_goes_on(
    sock_dir: Path, line: bytes, expected_id: str | None, needle: str
) -> None:
    asked: list[PermissionRequest] = []

    async def router(request: PermissionRequest) -> Decision:
        asked.append(request)
        return await allow_reads(request)

    path = sock_dir / "gate.sock"
    server = GateServer(path, router)
    async with serving(server), Client.connect(path) as client:
        await client.send(line + b"\n")
        error = await client.recv()
        assert error["type"] == "error", error
        assert error["id"] == expected_id
        assert needle in error["error"]
        assert (await client.decide())["behavior"] == "allow"
    assert len(asked) == 1  # the malformed frame never reached the router
    assert server.requests == 1


async def test_blank_lines_are_ignored(sock_dir: Path) -> None:
    path = sock_dir / "gate.sock"
    async with serving(GateServer(path, allow_reads)), Client.connect(path) as client:
        await client.send(b"\n\n  \n")
        assert (await client.decide())["behavior"] == "allow"


@pytest.mark.parametrize("cap", [4096, gate_frames.MAX_FRAME_BYTES])
async def test_an_oversized_frame_gets_an_error_frame_and_the_connection_goes_on(
    sock_dir: Path, monkeypatch: pytest.MonkeyPatch, cap: int
) -> None:
    monkeypatch.setattr(gate_frames, "MAX_FRAME_BYTES", cap)
    asked: list[PermissionRequest] = []

    async def router(request: PermissionRequest) -> Decision:
        asked.append(request)
        return allow("t")

    path = sock_dir / "gate.sock"
    async with serving(GateServer(path, router)), Client.connect(path) as client:
        huge = request_line(
            "big", goal_id="g", tool_name="Write", tool_input={"c": "x" * cap}, tool_use_id=None
        )
        assert len(huge) > cap
        async with trio.open_nursery() as nursery:
            # Sent from its own task: the server reads while we write.
            nursery.start_soon(client.send, huge)
            error = await client.recv()
        assert error["type"] == "error"
        assert error["id"] is None
        assert "too large" in error["error"]
        assert (await client.decide())["behavior"] == "allow"
    assert [request.tool_name for request in asked] == ["Read"]


async def test_a_frame_just_under_the_cap_is_served(
    sock_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gate_frames, "MAX_FRAME_BYTES", 4096)
    path = sock_dir / "gate.sock"
    async with serving(GateServer(path, allow_reads)), Client.connect(path) as client:
        frame = request_line(
            "fits", goal_id="g", tool_name="Read", tool_input={"c": ""}, tool_use_id=None
        )
        filler = 4096 - len(frame)  # the line without its newline is exactly the cap
        frame = request_line(
            "fits", goal_id="g", tool_name="Read", tool_input={"c": "y" * filler}, tool_use_id=None
        )
        assert len(frame) == 4096
        await client.send(frame)
        reply = await client.recv()
        assert reply["id"] == "fits"
        assert reply["behavior"] == "allow"


async def test_every_reply_stays_within_the_frame_cap(
    sock_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Found by the fuzz (tests/fuzz/test_socket_fuzz.py): an error frame echoes what it was
    # sent (the id, the bad value in its message), which JSON escapes can make several times
    # longer than the line; and a request whose id nearly fills a frame made a deny over the
    # cap. The MCP server drops a connection that sends a line over the cap.
    cap = 4096
    monkeypatch.setattr(gate_frames, "MAX_FRAME_BYTES", cap)
    path = sock_dir / "gate.sock"
    async with serving(GateServer(path, allow_reads)), Client.connect(path) as client:
        # An unknown type of 1000 non-ASCII characters: 2 bytes each in, 6 in the message.
        bad_type = {"v": 1, "type": "\xe9" * 1000, "id": "named"}
        await client.send(json.dumps(bad_type, ensure_ascii=False).encode() + b"\n")
        # An id that fits in the request, but not in any reply naming it, with an input
        # too large to send back (raw UTF-8 in, escaped out): even the deny is too large.
        request = {"v": 1, "type": "permission", "id": "\x00" * 655, "goal_id": "g"}
        request |= {"tool_name": "Read", "input": {"c": "\xe9" * 30}}
        line = json.dumps(request, ensure_ascii=False).encode()
        assert len(line) <= cap
        await client.send(line + b"\n")
        # Each line is answered from its own task: in either order.
        first, second = sorted(
            [await client.recv(), await client.recv()], key=lambda f: f["id"] is None
        )
        assert (first["type"], first["id"]) == ("error", "named")
        assert first["error"].startswith("unknown frame type")
        assert first["error"].endswith("...")
        assert (second["type"], second["id"]) == ("error", None)
        assert "the request's id is too long" in second["error"]
        assert (await client.decide())["behavior"] == "allow"  # and it goes on
    # (Client.recv checked each reply is a valid frame; the cap is checked here.)
    for frame in (first, second):
        assert len(json.dumps(frame, separators=(",", ":"))) <= cap


# ---------------------------------------------------------------------------- failing closed


async def test_a_router_that_raises_denies_with_the_reason(
    sock_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def router(request: PermissionRequest) -> Decision:
        raise RuntimeError("the decider blew up")

    path = sock_dir / "gate.sock"
    async with serving(GateServer(path, router)), Client.connect(path) as client:
        reply = await client.decide()
        assert reply["behavior"] == "deny"
        assert "the decider blew up" in reply["message"]
        assert "unavailable" in reply["message"]
        # ... and the connection (and server) goes on.
        reply = await client.decide()
        assert reply["behavior"] == "deny"
    assert "permission router failed" in caplog.text


async def test_an_unencodable_decision_denies(sock_dir: Path) -> None:
    # A decider's rewritten input that is not JSON must not take the server down.
    async def router(request: PermissionRequest) -> Decision:
        if request.tool_name == "Bash":
            return allow("t", updated_input={"command": {1, 2}})
        return allow("t")

    path = sock_dir / "gate.sock"
    async with serving(GateServer(path, router)), Client.connect(path) as client:
        reply = await client.decide("Bash", {"command": "ls"})
        assert reply["behavior"] == "deny"
        assert reply["message"]
        assert (await client.decide())["behavior"] == "allow"


async def test_a_slow_router_denies_at_the_request_timeout(
    sock_dir: Path, autojump_clock: trio.testing.MockClock
) -> None:
    cancelled = trio.Event()

    async def router(request: PermissionRequest) -> Decision:
        try:
            await trio.sleep_forever()
        finally:
            cancelled.set()

    path = sock_dir / "gate.sock"
    async with (
        serving(GateServer(path, router, request_timeout_s=7.5)),
        Client.connect(path) as client,
    ):
        started = trio.current_time()
        reply = await client.decide()
        assert trio.current_time() - started == pytest.approx(7.5, abs=0.01)
    assert reply["behavior"] == "deny"
    assert "no decision within 7.5s" in reply["message"]
    assert cancelled.is_set()  # the router's work is cancelled, not left running


async def test_a_client_hanging_up_mid_decision_does_not_crash_the_server(
    sock_dir: Path,
) -> None:
    entered = trio.Event()
    cancelled = trio.Event()

    async def router(request: PermissionRequest) -> Decision:
        if request.tool_name == "Bash":
            entered.set()
            try:
                await trio.sleep_forever()
            finally:
                cancelled.set()
        return allow("t")

    path = sock_dir / "gate.sock"
    async with serving(GateServer(path, router)):
        async with Client.connect(path) as client:
            await client.ask("Bash", {"command": "sleep 100"})
            await entered.wait()
        with trio.fail_after(5):
            await cancelled.wait()
        # Half a frame, then a hang-up.
        async with Client.connect(path) as client:
            await client.send(b'{"v": 1, "type": "perm')
        async with Client.connect(path) as client:
            assert (await client.decide())["behavior"] == "allow"


async def test_a_client_that_never_reads_does_not_hold_up_others(sock_dir: Path) -> None:
    path = sock_dir / "gate.sock"
    async with (
        serving(GateServer(path, allow_reads)),
        Client.connect(path) as lazy,
        Client.connect(path) as busy,
    ):
        # Far more replies than a socket buffer holds: the server's writes to it block.
        for _ in range(1000):
            await lazy.ask("Read", {"file_path": "x" * 2000})
        assert (await busy.decide())["behavior"] == "allow"


async def test_no_fd_is_left_behind(sock_dir: Path) -> None:
    async def router(request: PermissionRequest) -> Decision:
        if request.tool_name == "Bash":
            await trio.sleep_forever()
        return allow("t")

    path = sock_dir / "gate.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()
    await trio.lowlevel.checkpoint()
    before = open_fds()
    async with serving(GateServer(path, router)):
        for _ in range(5):
            async with Client.connect(path) as client:
                assert (await client.decide())["behavior"] == "allow"
                await client.ask("Bash", {"command": "sleep"})
                await client.send(b"garbage\n")
                assert (await client.recv())["type"] == "error"
        # Connections still open when the server stops.
        async with Client.connect(path) as one, Client.connect(path) as two:
            await one.ask("Bash", {"command": "sleep"})
            await two.ask("Read")
            await two.recv()
    assert open_fds() == before


async def test_connections_open_at_stop_are_closed(sock_dir: Path) -> None:
    entered = trio.Event()
    cancelled = trio.Event()

    async def router(request: PermissionRequest) -> Decision:
        entered.set()
        try:
            await trio.sleep_forever()
        finally:
            cancelled.set()

    path = sock_dir / "gate.sock"
    server = GateServer(path, router)
    stop = trio.CancelScope()
    stopped = trio.Event()

    async def run(*, task_status: trio.TaskStatus[None]) -> None:
        with stop:
            await server.serve(task_status=task_status)
        stopped.set()

    async with trio.open_nursery() as nursery:
        await nursery.start(run)
        async with Client.connect(path) as client:
            await client.ask()
            await entered.wait()
            stop.cancel()
            await stopped.wait()
            with pytest.raises(EOFError):
                await client.recv()
    assert cancelled.is_set()
    assert not path.exists()


def test_reply_frames_are_single_json_lines() -> None:
    reply = gate_frames.encode_reply(DecisionFrame("i", False, message="a\nb"))
    assert reply.count(b"\n") == 1
    assert json.loads(reply)["message"] == "a\nb"
