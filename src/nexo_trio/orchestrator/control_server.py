"""The process's control socket: other ``nexo-trio`` processes on the machine reach the goals
this one runs (``nexo-trio approve|deny|pause|resume|cancel|interrupt|max-turns GOAL``).

One request per connection, one line each way (:mod:`nexo_trio.wire.control_frames`). The
socket is mode 0600 in a 0700 directory, so only the same user gets in; and each connection's
peer is checked (``SO_PEERCRED`` where the platform has it): root, which file modes do not
stop, is refused too unless the server runs as root. A client finds the
socket of the process running a goal through the ledger: the pid in the goal's latest
``goal_started`` names it (:meth:`~nexo_trio.orchestrator.state_dir.StateDir.control_socket`).
Every wait is bounded: a client that says nothing is dropped after :data:`READ_TIMEOUT`.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Final

import trio

from nexo_trio.core.framing import Line, LineFramer
from nexo_trio.gate.socket_server import serve_unix_socket
from nexo_trio.wire.control_frames import (
    MAX_FRAME_BYTES,
    ControlFrameError,
    ControlReply,
    ControlRequest,
    decode_reply,
    decode_request,
    encode_reply,
    encode_request,
)

READ_TIMEOUT: Final = 10.0
"""How long a connection may take to send its request (and a client to get its answer)."""
READ_CHUNK: Final = 64 * 1024

Handler = Callable[[ControlRequest], Awaitable[ControlReply]]


class ControlServer:
    """Answers control requests on a Unix socket with ``handler``, from processes of the
    user ``uid`` only (default: this process's)."""

    def __init__(self, path: Path, handler: Handler, *, uid: int | None = None) -> None:
        self.path = path
        self.handler = handler
        self.uid = os.getuid() if uid is None else uid

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Bind, report ready, serve until cancelled; the socket file is removed after."""
        await serve_unix_socket(self.path, self._connection, task_status=task_status)

    async def _connection(self, stream: trio.SocketStream) -> None:
        async with stream:
            reply: ControlReply
            with trio.move_on_after(READ_TIMEOUT) as waited:
                line = await _read_line(stream)  # read even when refused: then answered
            refused = peer_problem(stream.socket, self.uid)
            if refused is not None:
                reply = ControlReply(False, refused, "invalid")
            elif waited.cancelled_caught or line is None:
                reply = ControlReply(False, "no request received", "invalid")
            else:
                try:
                    reply = await self.handler(decode_request(line))
                except ControlFrameError as exc:
                    reply = ControlReply(False, f"bad request: {exc}", "invalid")
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                with trio.move_on_after(READ_TIMEOUT):
                    await stream.send_all(encode_reply(reply))


def peer_problem(sock: trio.socket.SocketType, uid: int) -> str | None:
    """Why the peer of the connected Unix socket ``sock`` may not control this process (it
    is not a process of ``uid``), or ``None``. Where the platform cannot tell the peer
    (no ``SO_PEERCRED``), the socket's mode and directory are the only guard."""
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None:
        return None
    size = struct.calcsize("3i")
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, option, size)
    except OSError as exc:
        return f"refused: cannot tell who is asking ({exc.strerror or exc})"
    pid, peer_uid, _gid = struct.unpack("3i", raw[:size])
    if peer_uid != uid:
        return f"refused: process {pid} runs as uid {peer_uid}, not {uid}"
    return None


async def _read_line(stream: trio.abc.ReceiveStream) -> bytes | None:
    framer = LineFramer(MAX_FRAME_BYTES)
    while True:
        try:
            data = await stream.receive_some(READ_CHUNK)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return None
        for item in (*framer.feed(data), *(() if data else framer.close())):
            return item.data if isinstance(item, Line) else None
        if not data:
            return None


async def send_control(path: Path, request: ControlRequest) -> ControlReply:
    """Ask the process serving ``path``; raises ``OSError`` when nobody listens there and
    :class:`ControlFrameError` for a garbled answer."""
    with trio.fail_after(READ_TIMEOUT * 2):
        stream = await trio.open_unix_socket(str(path))
        async with stream:
            await stream.send_all(encode_request(request))
            line = await _read_line(stream)
    if line is None:
        raise ControlFrameError("the process closed the connection without answering")
    return decode_reply(line)
