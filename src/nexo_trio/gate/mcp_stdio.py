"""The permission prompt MCP server Claude Code spawns on every turn (stdlib only).

Run as::

    python -m nexo_trio.gate.mcp_stdio --socket PATH --goal-id ID [--deadline 50]
        [--tool-name permission_prompt] [--server-name nexo] [--token TOKEN]

The turn's token (``--token``, else the ``NEXO_TRIO_GATE_TOKEN`` environment variable, which
the orchestrator sets in each turn's MCP config) goes with every request: the orchestrator
denies requests that do not come from the goal's current turn.

It speaks newline-delimited JSON-RPC 2.0 on stdin/stdout (MCP's stdio transport) and
offers one tool, ``permission_prompt``. Each ``tools/call`` becomes a permission request
frame (:mod:`nexo_trio.wire.gate_frames`) on one persistent Unix-socket connection to the
orchestrator, whose decision goes back to Claude Code as a text block holding
``{"behavior": "allow", "updatedInput": {...}}`` or ``{"behavior": "deny", "message": ...}``.
It fails closed: every failure is answered with a valid *deny* and a reason. ``--deadline``
must be shorter than the CLI's tool timeout for the server's deny to arrive first; the
orchestrator sets both.

This module is the I/O shell only: every protocol decision is
:class:`~nexo_trio.gate.mcp_protocol.McpPermissionProtocol`'s, which it feeds what happens
and whose actions it carries out. One thread, one ``selectors`` loop over stdin, the socket
and a signal wake-up pipe, so several calls can be in flight at once, each with its own
deadline. Logs go to stderr only (stdout is the protocol). Exits 0 on stdin EOF and on
SIGTERM, denying first what is still pending.

Start-up time matters (one spawn per turn): this module and the protocol import the stdlib,
:mod:`nexo_trio.core.framing` and :mod:`nexo_trio.wire.gate_frames` only, never trio, attrs
or the rest of the package; :mod:`socket` waits for the first ``tools/call``.
"""

from __future__ import annotations

import argparse
import os
import selectors
import signal
import sys
import time
from collections import deque
from typing import TYPE_CHECKING, Final

from nexo_trio.gate import mcp_protocol as mcp

if TYPE_CHECKING:
    import socket

LOG_PREFIX: Final = "nexo-trio permission-mcp:"
CONNECT_TIMEOUT_S: Final = 5.0
READ_CHUNK: Final = 64 * 1024

_STDIN: Final = "stdin"
_SOCKET: Final = "socket"
_WAKEUP: Final = "wakeup"


def log(message: str) -> None:
    """One line on stderr (stdout is the protocol)."""
    try:
        sys.stderr.write(f"{LOG_PREFIX} {message}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


class PermissionServer:
    """The file descriptors and the event loop around ``protocol`` (see the module
    docstring)."""

    def __init__(
        self,
        protocol: mcp.McpPermissionProtocol,
        *,
        socket_path: str,
        stdin_fd: int = 0,
        stdout_fd: int = 1,
    ) -> None:
        self.protocol = protocol
        self.socket_path = socket_path
        self.stdin_fd = stdin_fd
        self.stdout_fd = stdout_fd
        self.selector: selectors.BaseSelector = selectors.DefaultSelector()
        self.sock: socket.socket | None = None
        self.sock_out = bytearray()
        self.stdout_open = True
        self.terminating = False

    # ------------------------------------------------------------------ loop

    def run(self) -> int:
        """Serve until stdin closes or SIGTERM; always returns 0."""
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        old_wakeup = signal.set_wakeup_fd(wake_w)
        old_handlers = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            self.selector.register(self.stdin_fd, selectors.EVENT_READ, _STDIN)
        except PermissionError:
            # epoll refuses regular files and /dev/null; poll() takes them (always ready).
            self.selector.close()
            self.selector = selectors.PollSelector()
            self.selector.register(self.stdin_fd, selectors.EVENT_READ, _STDIN)
        self.selector.register(wake_r, selectors.EVENT_READ, _WAKEUP)
        try:
            while not self.protocol.done:
                for key, mask in self.selector.select(self._timeout()):
                    if key.data == _STDIN:
                        self._on_stdin()
                    elif key.data == _SOCKET and key.fileobj is self.sock:
                        if mask & selectors.EVENT_WRITE:
                            self._flush_socket()
                        if mask & selectors.EVENT_READ and key.fileobj is self.sock:
                            self._on_socket()
                    elif key.data == _WAKEUP:
                        _drain(wake_r)
                if self.terminating:
                    # Only now, between two whole messages (never in the middle of a write).
                    self._do(self.protocol.shutdown("terminated by a signal"))
                self._do(self.protocol.expire(time.monotonic()))
        finally:
            self._close_socket()
            signal.set_wakeup_fd(old_wakeup)
            for sig, handler in old_handlers.items():
                signal.signal(sig, handler)
            self.selector.close()
            os.close(wake_r)
            os.close(wake_w)
        return 0

    def _on_signal(self, signum: int, frame: object) -> None:
        # Only a flag: the wake-up pipe makes select() return.
        self.terminating = True

    def _timeout(self) -> float | None:
        deadline = self.protocol.next_deadline()
        return None if deadline is None else max(0.0, deadline - time.monotonic())

    def _do(self, actions: list[mcp.Action]) -> None:
        """Carry out ``actions`` in order; what reporting an outcome back to the protocol
        calls for is done next, before the rest."""
        queue = deque(actions)
        while queue:
            action = queue.popleft()
            more: list[mcp.Action] = []
            match action:
                case mcp.WriteStdout():
                    more = self._write_stdout(action.data)
                case mcp.SendSocket():
                    if self.sock is not None:  # else its connection is gone, its calls denied
                        self.sock_out += action.data
                case mcp.Connect():
                    more = self._connect()
                case mcp.CloseSocket():
                    self._close_socket()
                case mcp.Log():
                    log(action.message)
                case mcp.Exit():
                    pass  # the loop sees protocol.done
            queue.extendleft(reversed(more))
        if self.sock is not None and self.sock_out:
            self._flush_socket()

    # ------------------------------------------------------------------ stdio

    def _write_stdout(self, data: bytes) -> list[mcp.Action]:
        if not self.stdout_open:
            return []  # what was queued before the protocol heard of the failure
        view = memoryview(data)
        try:
            while view:
                try:
                    written = os.write(self.stdout_fd, view)
                except BlockingIOError:  # a non-blocking stdout that is full: wait a bit
                    time.sleep(0.005)
                    continue
                view = view[written:]
        except OSError as exc:
            self.stdout_open = False
            return self.protocol.stdout_failed(str(exc))
        return []

    def _on_stdin(self) -> None:
        try:
            data = os.read(self.stdin_fd, READ_CHUNK)
        except BlockingIOError:
            return
        except OSError as exc:
            log(f"stdin failed ({exc}); exiting")
            data = b""
        if data:
            self._do(self.protocol.receive_stdin(data, time.monotonic()))
        else:
            self.selector.unregister(self.stdin_fd)
            self._do(self.protocol.stdin_closed(time.monotonic()))

    # ------------------------------------------------------------------ socket

    def _connect(self) -> list[mcp.Action]:
        # Imported on the first call, not at start-up: most turns never ask the tool, and
        # the module costs ~2.5 ms before ``initialize`` could be answered.
        import socket  # noqa: PLC0415

        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(min(CONNECT_TIMEOUT_S, self.protocol.deadline_s))
        try:
            sock.connect(self.socket_path)
        except FileNotFoundError:
            reason = f"no socket at {self.socket_path}; is the orchestrator running?"
        except ConnectionRefusedError:
            reason = f"nothing is listening on {self.socket_path}"
        except TimeoutError:
            reason = f"connecting to {self.socket_path} timed out"
        except OSError as exc:
            reason = f"cannot connect to {self.socket_path}: {exc.strerror or exc}"
        else:
            sock.setblocking(False)
            self.sock = sock
            self.selector.register(sock, selectors.EVENT_READ, _SOCKET)
            return self.protocol.connected()
        sock.close()
        return self.protocol.connect_failed(reason)

    def _close_socket(self) -> None:
        if self.sock is None:
            return
        self.selector.unregister(self.sock)
        self.sock.close()
        self.sock = None
        self.sock_out.clear()

    def _flush_socket(self) -> None:
        assert self.sock is not None
        while self.sock_out:
            try:
                sent = self.sock.send(self.sock_out)
            except BlockingIOError:
                break
            except OSError as exc:
                self._do(self.protocol.socket_failed(f"sending to the orchestrator failed: {exc}"))
                return
            del self.sock_out[:sent]
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if self.sock_out else 0)
        self.selector.modify(self.sock, events, _SOCKET)

    def _on_socket(self) -> None:
        assert self.sock is not None
        try:
            data = self.sock.recv(READ_CHUNK)
        except BlockingIOError:
            return
        except OSError as exc:
            self._do(self.protocol.socket_failed(f"reading from the orchestrator failed: {exc}"))
            return
        if data:
            self._do(self.protocol.receive_socket(data))
        else:
            self._do(self.protocol.socket_closed())


def _drain(fd: int) -> None:
    while True:
        try:
            if not os.read(fd, 512):
                return
        except OSError:
            return


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m nexo_trio.gate.mcp_stdio",
        description="MCP stdio permission prompt server that asks the nexo-trio orchestrator.",
    )
    parser.add_argument("--socket", required=True, help="the orchestrator's Unix socket")
    parser.add_argument("--goal-id", required=True, help="the goal the requests belong to")
    parser.add_argument(
        "--deadline",
        type=float,
        default=mcp.DEFAULT_DEADLINE_S,
        help="seconds to wait for a decision before denying (keep it under the CLI's tool "
        f"timeout; default {mcp.DEFAULT_DEADLINE_S:g})",
    )
    parser.add_argument("--tool-name", default=mcp.DEFAULT_TOOL_NAME, help="the tool's name")
    parser.add_argument("--server-name", default=mcp.DEFAULT_SERVER_NAME, help="serverInfo name")
    parser.add_argument(
        "--token",
        default=None,
        help=f"the turn's token (default: ${mcp.TOKEN_ENV}); requests without the goal's "
        "current one are denied",
    )
    args = parser.parse_args(argv)
    if not args.deadline > 0:
        parser.error(f"--deadline must be positive, got {args.deadline:g}")
    if not args.goal_id:
        parser.error("--goal-id must not be empty")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the server on this process's stdin/stdout; the exit code (0)."""
    args = _parse_args(argv)
    protocol = mcp.McpPermissionProtocol(
        goal_id=args.goal_id,
        deadline_s=args.deadline,
        tool_name=args.tool_name,
        server_name=args.server_name,
        # Unique per process, so a reply meant for another server never matches a call.
        id_prefix=f"{os.getpid()}-",
        token=args.token if args.token is not None else os.environ.get(mcp.TOKEN_ENV) or None,
    )
    return PermissionServer(protocol, socket_path=args.socket).run()


if __name__ == "__main__":
    sys.exit(main())
