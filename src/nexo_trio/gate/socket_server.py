"""The orchestrator's end of the permission bridge: a Unix socket server.

Runs in the orchestrator's nursery (``await nursery.start(server.serve)`` returns once the
socket is bound, before the first turn). Line-delimited JSON frames with ids
(:mod:`nexo_trio.wire.gate_frames`); one task per connection and one per request, so a
slow decision never holds up another; every request has a deadline; a malformed frame gets
an error frame and the connection goes on; frames are capped in size.

:meth:`GateServer._answer` is the one place that decides what goes back on the wire, and it
records what it sends: the :class:`Gate` it serves admits each request (a
:class:`GateCall`), the call decides, the server settles the reply (the deadline, also for
a decider that blocked the event loop past it; the validation of what the decider returned;
the encoding and the frame cap), the call records that very reply, once, and the server
sends it. A deny the CLI got is never recorded as an allow; a request whose reply is never
settled (the MCP server hung up, the server stops) is recorded as abandoned. The record
comes first, so that no tool runs on a reply the ledger does not know of.

The socket file is mode 0600 inside a 0700 directory that must be a real directory of ours
(never a symlink, never someone else's). A stale socket file (nobody listening) is
replaced; a live one of another process is never unlinked.
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
from typing import Final, Protocol, runtime_checkable

import trio

from nexo_trio.core.framing import Line, LineFramer, Oversized
from nexo_trio.core.permission import (
    Decision,
    DecisionOutcome,
    PermissionRequest,
    unavailable,
)
from nexo_trio.gate.decider import decision_problem
from nexo_trio.wire import gate_frames
from nexo_trio.wire.gate_frames import ErrorFrame, PermissionFrame

log = logging.getLogger("nexo_trio.gate")

READ_CHUNK: Final = 64 * 1024
MAX_SOCKET_PATH: Final = 100
"""sun_path holds 108 bytes on Linux (104 on macOS); stay under both."""
SEND_TIMEOUT_S: Final = 1.0
"""How long a reply may take to be written: a reader that takes longer is stuck, and its
connection is closed (a reply cut in the middle would garble the next)."""
RECORD_TIMEOUT_S: Final = 5.0
"""How long recording one decision may take (shielded from cancellation)."""
ABANDONED: Final = "decision abandoned"


class GateSocketError(RuntimeError):
    """The gate's socket cannot be set up (path taken by a live server, not a socket...)."""


class GateCall(Protocol):
    """One request admitted by a :class:`Gate`: decided once, then recorded once as the
    reply that went out (which may not be the decision: see :class:`GateServer`)."""

    async def decide(self) -> Decision:
        """The decision on the request."""
        ...

    async def record(self, sent: Decision) -> None:
        """Record ``sent``, the decision whose reply the CLI got (or ``cancelled``: none)."""
        ...


@runtime_checkable
class Gate(Protocol):
    """What a :class:`GateServer` serves (:class:`~nexo_trio.gate.goal_gate.GateRouter`)."""

    def admit(self, request: PermissionRequest, *, token: str | None) -> GateCall:
        """The call for ``request``, sent with the turn's ``token``."""
        ...


DecideFunction = Callable[[PermissionRequest], Awaitable[Decision]]
"""A bare decision function: served as a gate that records nothing (tests, tools)."""


class _Unrecorded:
    """A :class:`Gate` around a bare decision function."""

    def __init__(self, decide: DecideFunction) -> None:
        self._decide = decide

    def admit(self, request: PermissionRequest, *, token: str | None) -> GateCall:
        return _UnrecordedCall(self._decide, request)


class _UnrecordedCall:
    def __init__(self, decide: DecideFunction, request: PermissionRequest) -> None:
        self._decide = decide
        self._request = request

    async def decide(self) -> Decision:
        return await self._decide(self._request)

    async def record(self, sent: Decision) -> None:
        pass


class _FailedCall:
    """The call of a request the gate failed to admit (a bug): denied, not recorded."""

    def __init__(self, reason: str) -> None:
        self._reason = reason

    async def decide(self) -> Decision:
        return unavailable(self._reason, "gate")

    async def record(self, sent: Decision) -> None:
        pass


class GateServer:
    """Serves permission requests on a Unix socket, each admitted by ``gate`` (or decided by
    a bare function, recording nothing)."""

    def __init__(
        self,
        path: Path,
        gate: Gate | DecideFunction,
        *,
        request_timeout_s: float = 45.0,
        send_timeout_s: float = SEND_TIMEOUT_S,
    ) -> None:
        if len(os.fsencode(path)) > MAX_SOCKET_PATH:
            raise GateSocketError(
                f"socket path {path} is longer than {MAX_SOCKET_PATH} bytes "
                "(the limit of a Unix socket address)"
            )
        self.path = path
        self.gate: Gate = gate if isinstance(gate, Gate) else _Unrecorded(gate)
        self.request_timeout_s = request_timeout_s
        self.send_timeout_s = send_timeout_s
        self.requests = 0

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Bind, report ready, serve until cancelled; the socket file is removed after."""
        await serve_unix_socket(self.path, self._handle, task_status=task_status)

    async def _handle(self, stream: trio.SocketStream) -> None:
        connection = _Connection(stream)
        framer = LineFramer(gate_frames.MAX_FRAME_BYTES)
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
                        await self._send(connection, gate_frames.encode_reply(error))
                    elif isinstance(item, Line):
                        nursery.start_soon(self._answer, connection, item.data)
            # The client hung up: answers still being decided have nowhere to go.
            connection.gone = True
            nursery.cancel_scope.cancel()

    async def _answer(self, connection: _Connection, line: bytes) -> None:
        """Decide, settle the reply, record it, send it: see the module docstring."""
        try:
            frame = gate_frames.decode_request(line)
        except gate_frames.FrameError as exc:
            # The id of any JSON object with a string id: the MCP server then denies that
            # one call instead of everything it has in flight (an error frame without id).
            await self._send(connection, _error_reply(gate_frames.salvage_id(line), str(exc)))
            return
        self.requests += 1
        started = trio.current_time()
        request = PermissionRequest(
            goal_id=frame.goal_id,
            tool_name=frame.tool_name,
            input=frame.input,
            tool_use_id=frame.tool_use_id,
        )
        try:
            call = self.gate.admit(request, token=frame.token)
        except Exception as exc:
            log.exception("the permission gate failed to admit a request")
            call = _FailedCall(f"gate error: {exc!r}")
        # What the CLI gets from us, until a reply is settled: nothing (cancelled here: the
        # connection or the server went away).
        sent = Decision(DecisionOutcome.CANCELLED, message=ABANDONED, decider="gate")
        reply: bytes | None = None
        try:
            decision = await self._decide(call, started)
            settled_reply, settled = _settle(frame, decision)
            if not connection.gone:
                reply, sent = settled_reply, settled
        finally:
            # Recorded before it is sent (the ledger knows of every reply a tool could run
            # on), once, whatever happened; shielded, bounded.
            await _record(call, sent)
        if not await self._send(connection, reply):
            log.warning("a permission reply was recorded but could not be sent")

    async def _decide(self, call: GateCall, started: float) -> Decision:
        return await decide_within(call, started, self.request_timeout_s)

    async def _send(self, connection: _Connection, data: bytes | None) -> bool:
        """Write one whole reply; whether it went. A send to an MCP server that is gone
        fails quietly (its CLI has given up on the call); one that does not complete within
        ``send_timeout_s`` closes the connection, whose framing it would garble."""
        if data is None or connection.gone:
            return False
        lock = connection.lock
        if lock.locked():  # another reply is being written: after it
            async with lock:
                return await self._send_locked(connection, data)
        # Nobody is writing: the reply goes in one non-blocking write when the socket takes
        # it whole (most do), with no lock to wait for and no deadline to arm; what is left
        # of it, if anything, as any reply.
        lock.acquire_nowait()
        try:
            try:
                written = os.write(connection.stream.socket.fileno(), data)
            except BlockingIOError:
                written = 0
            except OSError:  # EPIPE, ECONNRESET, EBADF (closed): the MCP server is gone
                connection.gone = True
                return False
            if written == len(data):
                return True
            return await self._send_locked(connection, memoryview(data)[written:])
        finally:
            lock.release()

    async def _send_locked(self, connection: _Connection, data: bytes | memoryview) -> bool:
        """:meth:`_send`, the connection's lock held."""
        if connection.gone:
            return False
        with trio.move_on_after(self.send_timeout_s):
            try:
                await connection.stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                connection.gone = True
                return False
            return True
        log.warning("a permission reply was not read within %gs", self.send_timeout_s)
        connection.gone = True
        with trio.CancelScope(shield=True):
            await connection.stream.aclose()
        return False


class _Connection:
    """One MCP server's connection: its stream, the lock that keeps replies whole, and
    whether it is gone (hung up, broken, or closed for not reading)."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.lock = trio.Lock()
        self.gone = False


async def decide_within(call: GateCall, started: float, timeout_s: float) -> Decision:
    """The call's decision, if a valid one came within ``timeout_s`` of ``started``; else
    ``unavailable`` saying why (the decider raised, returned something else, or came back
    late because the event loop was blocked). Raises only ``trio.Cancelled``. Every
    transport's gate path decides through here."""
    decision: object = _NO_DECISION
    with trio.move_on_at(started + timeout_s):
        try:
            decision = await call.decide()
        except Exception as exc:
            log.exception("permission router failed")
            return unavailable(f"gate error: {exc!r}", "gate")
    elapsed = trio.current_time() - started
    if decision is _NO_DECISION:
        return unavailable(f"no decision within {timeout_s:g}s", "gate")
    if elapsed > timeout_s:
        # It came back, but late: the event loop was blocked past the deadline (a
        # decider's blocking call), and the CLI's side has given up on it by now.
        return unavailable(
            f"no decision within {timeout_s:g}s (one came after "
            f"{elapsed:.3g}s: the event loop was blocked)",
            "gate",
        )
    problem = decision_problem(decision)
    if problem is not None:
        log.error("the permission gate's decider %s", problem)
        return unavailable(f"gate error: the decider {problem}", "gate")
    assert isinstance(decision, Decision)
    return decision


async def record_sent(call: GateCall, sent: Decision) -> None:
    """Record ``sent`` (what the CLI got) for the call: once, shielded, bounded; a failure
    is logged (the reply still goes)."""
    await _record(call, sent)


async def _record(call: GateCall, sent: Decision) -> None:
    with trio.CancelScope(shield=True) as scope:
        scope.deadline = trio.current_time() + RECORD_TIMEOUT_S
        try:
            await call.record(sent)
        except Exception:
            log.exception("cannot record a permission decision")
    if scope.cancelled_caught:
        log.error("recording a permission decision took over %gs", RECORD_TIMEOUT_S)


_NO_DECISION: Final = object()


def _settle(frame: PermissionFrame, decision: Decision) -> tuple[bytes, Decision]:
    """The reply line to ``frame`` for ``decision``, and the decision it says: an
    ``unavailable`` deny when ``decision`` cannot be put on the wire as it is (an
    ``updated_input`` that is not JSON, or too large for a frame), sent as an error frame
    without id when even that deny would be too large (an id of nearly a frame's size)."""
    try:
        reply = gate_frames.encode_reply(gate_frames.decision_frame(frame, decision))
    except Exception as exc:  # e.g. an updated_input that is not JSON
        log.exception("cannot encode the decision")
        problem = f"the decision cannot be sent ({exc!r})"
    else:
        if len(reply) - 1 <= gate_frames.MAX_FRAME_BYTES:
            return reply, decision
        problem = f"the decision is too large to send ({len(reply)} bytes)"
    failed = unavailable(f"gate error: {problem}", "gate")
    reply = gate_frames.encode_reply(gate_frames.decision_frame(frame, failed))
    if len(reply) - 1 > gate_frames.MAX_FRAME_BYTES:
        # Even the deny is too large: the request's id alone nearly fills a frame. A reply
        # that cannot name it is an error frame without id (the MCP server then denies
        # every call it has in flight: none is left waiting).
        reply = _error_reply(None, f"gate error: {problem}; the request's id is too long")
    return reply, failed


def _error_reply(request_id: str | None, error: str) -> bytes:
    """An error frame within the frame cap (an error echoes what it was sent, which escaping
    can make several times longer): its message cut as much as it must be, and without the
    id only if even naming the id does not fit."""
    reply = b""
    for named in dict.fromkeys((request_id, None)):
        keep = len(error)
        while True:
            message = error if keep == len(error) else f"{error[:keep]}..."
            reply = gate_frames.encode_reply(ErrorFrame(named, message))
            if len(reply) - 1 <= gate_frames.MAX_FRAME_BYTES:
                return reply
            if keep == 0:
                break
            keep //= 2
    return reply  # a cap too small for any error frame


async def serve_unix_socket(
    path: Path,
    handler: Callable[[trio.SocketStream], Awaitable[None]],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``handler`` (one task per connection) on a Unix socket at ``path``, mode 0600 in
    a 0700 directory (:func:`prepare_socket_path`), until cancelled; reports ready once
    bound, and removes the socket file after (only if it is still ours)."""
    await trio.to_thread.run_sync(prepare_socket_path, path)
    sock = trio.socket.socket(stdlib_socket.AF_UNIX, stdlib_socket.SOCK_STREAM)
    try:
        await sock.bind(str(path))
        os.chmod(path, 0o600)
        inode = os.lstat(path).st_ino
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

    Refuses (GateSocketError) when the directory is not a real directory of this user's: a
    symlink (planted in a shared temp dir, it would point our socket, and our chmod, at
    somebody's directory: never followed), a file, or a directory of another user (who
    could swap the socket for one of theirs); when another process listens at ``path``, or
    when ``path`` is not a socket: neither of the last two is ever unlinked. Blocking
    (file system, a connect probe): call it from a worker thread.
    """
    directory = path.parent
    directory.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.mkdir(directory, 0o700)
    _check_private_directory(directory)
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


def _check_private_directory(directory: Path) -> None:
    """``directory`` is a directory (not a symlink to one) of this user's, made mode 0700
    through its own file descriptor: nothing here follows a symlink."""
    refuse = f"the socket directory {directory}"
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(directory, flags)
    except OSError as exc:
        if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
            raise
        try:
            info = directory.lstat()
        except OSError:
            raise GateSocketError(f"{refuse} cannot be opened: {exc.strerror}") from None
        kind = "a symlink" if stat.S_ISLNK(info.st_mode) else "not a directory"
        raise GateSocketError(f"{refuse} is {kind}; refusing to serve from it") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISDIR(info.st_mode):  # O_DIRECTORY makes sure, but never chmod a file
            raise GateSocketError(f"{refuse} is not a directory; refusing to serve from it")
        if info.st_uid != os.getuid():
            raise GateSocketError(
                f"{refuse} is owned by uid {info.st_uid}, not by this user "
                f"(uid {os.getuid()}); refusing to serve from it"
            )
        if stat.S_IMODE(info.st_mode) != 0o700:
            os.fchmod(fd, 0o700)
    finally:
        os.close(fd)


def _unlink_if_ours(path: Path, inode: int) -> None:
    try:
        if os.lstat(path).st_ino == inode:
            path.unlink()
    except OSError:
        pass
