"""Replies leave whole: the server's one-write fast path (the socket takes the reply at once)
and its locked path (what the socket did not take, or a reply while another is being written)
never cut or interleave two replies on one connection."""

from __future__ import annotations

from pathlib import Path

import trio

from nexo_trio.core.permission import Decision, PermissionRequest, allow
from nexo_trio.gate.socket_server import GateServer
from tests.gate.test_socket_server import Client, serving

BIG = 3 * 1024 * 1024
"""Far more than a Unix socket's buffer: such a reply goes in many writes."""


async def allow_after_a_while(request: PermissionRequest) -> Decision:
    await trio.sleep(0.01 * len(request.input.get("tag", "")))
    return allow("test")


async def test_big_and_small_replies_in_flight_at_once_arrive_whole(sock_dir: Path) -> None:
    path = sock_dir / "gate.sock"
    # A generous send deadline: the client reads only once it has sent everything.
    server = GateServer(path, allow_after_a_while, send_timeout_s=30)
    async with serving(server), Client.connect(path) as client:
        asked: dict[str, int] = {}
        for n in range(6):
            size = BIG if n % 2 else 10
            request_id = await client.ask("Write", {"content": str(n) * size, "tag": "x" * (n % 3)})
            asked[request_id] = size
        got: dict[str, int] = {}
        for _ in asked:
            reply = await client.recv(timeout=30)
            assert reply["behavior"] == "allow"
            got[reply["id"]] = len(reply["updated_input"]["content"])
        assert got == asked


async def test_a_reader_that_hung_up_is_gone_quietly(sock_dir: Path) -> None:
    path = sock_dir / "gate.sock"
    async with serving(GateServer(path, allow_after_a_while)):
        async with Client.connect(path) as gone:
            await gone.ask("Write", {"content": "x", "tag": "xxx"})  # answered after it left
        async with Client.connect(path) as client:
            assert (await client.decide("Read"))["behavior"] == "allow"
