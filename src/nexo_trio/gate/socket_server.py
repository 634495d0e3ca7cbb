"""The orchestrator's end of the permission bridge: a Unix socket server.

Runs in the orchestrator's nursery (``await nursery.start(server.serve)`` returns once the
socket is bound, before the first turn). Line-delimited JSON frames with ids
(:mod:`nexo_trio.wire.gate_frames`); one task per connection and one per request, so a
slow decision never holds up another; every request has a deadline; a malformed frame gets
an error frame and the connection goes on; frames are capped in size.

The socket file is mode 0600 inside a 0700 directory. A stale socket file (nobody
listening) is replaced; a live one of another process is never unlinked.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket as stdlib_socket
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Final

import trio

from nexo_trio.core.framing import Line, LineFramer, Oversized
from nexo_trio.core.permission import Decision, PermissionRequest, unavailable
from nexo_trio.wire import gate_frames
from nexo_trio.wire.gate_frames import ErrorFrame

log = logging.getLogger("nexo_trio.gate")

Router = Callable[[PermissionRequest], Awaitable[Decision]]
READ_CHUNK: Final = 64 * 1024
MAX_SOCKET_PATH: Final = 100
"""sun_path holds 108 bytes on Linux (104 on macOS); stay under both."""


class GateSocketError(RuntimeError):
    """The gate's socket cannot be set up (path taken by a live server, not a socket...)."""


class GateServer:
    """Serves permission requests on a Unix socket, routing each to ``router``."""

    def __init__(self, path: Path, router: Router, *, request_timeout_s: float = 45.0) -> None:
        if len(os.fsencode(path)) > MAX_SOCKET_PATH:
            raise GateSocketError(
                f"socket path {path} is longer than {MAX_SOCKET_PATH} bytes "
                "(the limit of a Unix socket address)"
            )
        self.path = path
        self.router = router
        self.request_timeout_s = request_timeout_s
        self.requests = 0

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Bind, report ready, serve until cancelled; the socket file is removed after."""
        await serve_unix_socket(self.path, self._handle, task_status=task_status)

    async def _handle(self, stream: trio.SocketStream) -> None:
        framer = LineFramer(gate_frames.MAX_FRAME_BYTES)
        send_lock = trio.Lock()
        async with stream, trio.open_nursery() as nursery:
            while True:
                try:
                    data = await stream.receive_some(READ_CHUNK)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    break
                if not data:
                    break
                for item in framer.feed(data):
                    if isinstance(item, Oversized):
                        error = ErrorFrame(None, f"frame {item.line_no} too large")
                        await _send(stream, send_lock, gate_frames.encode_reply(error))
                    elif isinstance(item, Line):
                        nursery.start_soon(self._answer, stream, send_lock, item.data)
            # The client hung up: answers still being decided have nowhere to go.
            nursery.cancel_scope.cancel()

    async def _answer(self, stream: trio.SocketStream, lock: trio.Lock, line: bytes) -> None:
        try:
            frame = gate_frames.decode_request(line)
        except gate_frames.FrameError as exc:
            # The id of any JSON object with a string id: the MCP server then denies that
            # one call instead of everything it has in flight (an error frame without id).
            error = ErrorFrame(gate_frames.salvage_id(line), str(exc))
            await _send(stream, lock, gate_frames.encode_reply(error))
            return
        self.requests += 1
        request = PermissionRequest(
            goal_id=frame.goal_id,
            tool_name=frame.tool_name,
            input=frame.input,
            tool_use_id=frame.tool_use_id,
        )
        decision: Decision | None = None
        with trio.move_on_after(self.request_timeout_s):
            try:
                decision = await self.router(request)
            except Exception as exc:
                log.exception("permission router failed")
                decision = unavailable(f"gate error: {exc!r}", "gate")
        if decision is None:
            decision = unavailable(f"no decision within {self.request_timeout_s:g}s", "gate")
        try:
            reply = gate_frames.encode_reply(gate_frames.decision_frame(frame, decision))
        except Exception as exc:  # e.g. an updated_input that is not JSON
            log.exception("cannot encode the decision")
            failed = unavailable(f"gate error: the decision cannot be sent ({exc!r})", "gate")
            reply = gate_frames.encode_reply(gate_frames.decision_frame(frame, failed))
        await _send(stream, lock, reply)


async def _send(stream: trio.SocketStream, lock: trio.Lock, data: bytes) -> None:
    # A send to an MCP server that is gone fails quietly: its CLI has given up on the call.
    async with lock:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await stream.send_all(data)


async def serve_unix_socket(
    path: Path,
    handler: Callable[[trio.SocketStream], Awaitable[None]],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``handler`` (one task per connection) on a Unix socket at ``path``, mode 0600 in
    a 0700 directory (:func:`prepare_socket_path`), until cancelled; reports ready once
    bound, and removes the socket file after (only if it is still ours)."""
    prepare_socket_path(path)
    sock = trio.socket.socket(stdlib_socket.AF_UNIX, stdlib_socket.SOCK_STREAM)
    try:
        await sock.bind(str(path))
        os.chmod(path, 0o600)
        inode = os.stat(path).st_ino
        sock.listen(128)
    except BaseException:
        sock.close()
        raise
    listener = trio.SocketListener(sock)
    try:
        async with trio.open_nursery() as nursery:
            task_status.started()
            await trio.serve_listeners(handler, [listener], handler_nursery=nursery)
    finally:
        with trio.CancelScope(shield=True):
            await listener.aclose()
        _unlink_if_ours(path, inode)


def prepare_socket_path(path: Path) -> None:
    """Make the socket's directory (mode 0700) and clear a stale socket file.

    Refuses (GateSocketError) when the directory belongs to another user (who could swap
    the socket for one of theirs), when another process listens there, or when the path
    is not a socket: neither of the last two is ever unlinked.
    """
    directory = path.parent
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    info = directory.stat()
    if info.st_uid != os.getuid():
        raise GateSocketError(
            f"the socket directory {directory} is owned by uid {info.st_uid}, not by this "
            f"user (uid {os.getuid()}); refusing to serve from it"
        )
    if stat.S_IMODE(info.st_mode) != 0o700:
        directory.chmod(0o700)
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise GateSocketError(f"{path} exists and is not a socket; refusing to replace it")
    probe = stdlib_socket.socket(stdlib_socket.AF_UNIX, stdlib_socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(str(path))
    except OSError as exc:
        if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
            path.unlink(missing_ok=True)  # stale: its server is gone
            return
        raise GateSocketError(f"cannot tell whether {path} is in use: {exc}") from None
    finally:
        probe.close()
    raise GateSocketError(f"another process is serving {path}; refusing to take it over")


def _unlink_if_ours(path: Path, inode: int) -> None:
    try:
        if os.stat(path).st_ino == inode:
            path.unlink()
    except OSError:
        pass
