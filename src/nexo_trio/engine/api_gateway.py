"""The orchestrator's end of "no network but the API": an allow-listing proxy on a Unix socket.

A turn confined with ``network=False`` and an :class:`~nexo_trio.core.sandbox.ApiProxy` has
no network but its own loopback; :mod:`nexo_trio.engine.netrelay` relays a loopback port in
there to this Unix socket, and the CLI's ``HTTPS_PROXY``/``HTTP_PROXY`` point at that port.
This end speaks just enough of an HTTP proxy for the CLI:

* ``CONNECT host:port`` (what an HTTPS base URL uses: TLS stays end to end): to an allowed
  ``host:port`` it answers ``200`` and copies bytes both ways;
* an absolute-form request (``POST http://host:port/v1/messages HTTP/1.1``, what an HTTP
  base URL uses): to an allowed ``host:port`` it forwards the request in origin form with
  ``Connection: close`` (so every request of the connection is this one, checked), and
  copies the rest;
* anything else, or any other host: ``403`` (or ``400``), and the connection is closed.

It only ever connects to the allowed addresses, whatever a client sends after its first
request. One gateway serves one turn: it is bound before the turn starts and closed with it.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
from typing import Final
from urllib.parse import urlsplit

import trio

from nexo_trio.core.sandbox import ApiProxy, parse_host_port

HEAD_LIMIT: Final = 32 * 1024
HEAD_TIMEOUT: Final = 10.0
CONNECT_TIMEOUT: Final = 10.0
CHUNK: Final = 64 * 1024
_DROPPED_HEADERS: Final = frozenset({"connection", "proxy-connection", "proxy-authorization"})


class ApiGateway:
    """The proxy of one turn, bound on construction (``OSError`` if it cannot be)."""

    def __init__(self, proxy: ApiProxy) -> None:
        self.path = proxy.socket
        self.allowed = frozenset(proxy.allowed())
        self.denied: list[str] = []
        """What was refused (``CONNECT host:port``, ``GET http://...``), in order."""
        self.forwarded: list[str] = []
        """The ``host:port`` of every connection let through, in order."""
        _remove_stale_socket(self.path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(self.path)
            os.chmod(self.path, 0o600)
            sock.listen(64)
            self._inode = os.stat(self.path).st_ino
        except BaseException:
            sock.close()
            raise
        self._socket = sock
        self._listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))

    async def serve(self) -> None:
        """Serve until cancelled (a task of the turn's nursery)."""
        await trio.serve_listeners(self._handle, [self._listener])

    def close(self) -> None:
        """Stop listening and remove the socket (if it is still ours)."""
        self._socket.close()
        with contextlib.suppress(OSError):
            if os.stat(self.path).st_ino == self._inode:
                os.unlink(self.path)

    async def _handle(self, client: trio.SocketStream) -> None:
        async with client:
            head, rest = await _read_head(client)
            if head is None:
                return
            try:
                request_line, *headers = head.decode("latin-1").split("\r\n")
                method, target, version = request_line.split(" ")
            except ValueError:
                self.denied.append(head[:80].decode("latin-1"))
                await _refuse(client, 400, "a proxy request was expected")
                return
            if method == "CONNECT":
                await self._tunnel(client, target, rest)
            elif target.startswith("http://"):
                await self._forward(client, (method, target, version), headers, rest)
            else:
                self.denied.append(f"{method} {target}")
                await _refuse(client, 400, f"{method} {target}: not a proxy request")

    async def _tunnel(self, client: trio.SocketStream, target: str, rest: bytes) -> None:
        address = parse_host_port(target, default_port=None)
        if address is None or address not in self.allowed:
            self.denied.append(f"CONNECT {target}")
            await _refuse(client, 403, _not_allowed(target))
            return
        upstream = await self._open(client, address)
        if upstream is None:
            return
        async with upstream:
            await client.send_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
            if rest:
                await upstream.send_all(rest)
            await _splice(client, upstream)

    async def _forward(
        self,
        client: trio.SocketStream,
        request: tuple[str, str, str],
        headers: list[str],
        rest: bytes,
    ) -> None:
        method, target, version = request
        parts = urlsplit(target)
        address = parse_host_port(parts.netloc, default_port=80)
        if address is None or address not in self.allowed:
            self.denied.append(f"{method} {target}")
            await _refuse(client, 403, _not_allowed(parts.netloc))
            return
        upstream = await self._open(client, address)
        if upstream is None:
            return
        path = parts.path or "/"
        if parts.query:
            path = f"{path}?{parts.query}"
        kept = [h for h in headers if h and _header_name(h) not in _DROPPED_HEADERS]
        head = "\r\n".join([f"{method} {path} {version}", *kept, "Connection: close", "", ""])
        async with upstream:
            await upstream.send_all(head.encode("latin-1") + rest)
            await _splice(client, upstream)

    async def _open(
        self, client: trio.SocketStream, address: tuple[str, int]
    ) -> trio.SocketStream | None:
        host, port = address
        try:
            with trio.fail_after(CONNECT_TIMEOUT):
                upstream = await trio.open_tcp_stream(host, port)
        except (OSError, trio.TooSlowError) as exc:
            await _refuse(client, 502, f"nexo-trio: cannot reach {host}:{port}: {exc}")
            return None
        self.forwarded.append(f"{host}:{port}")
        return upstream


def _header_name(line: str) -> str:
    return line.split(":", 1)[0].strip().lower()


async def _read_head(stream: trio.SocketStream) -> tuple[bytes | None, bytes]:
    """The request head (without its blank line) and the bytes read past it."""
    buffer = b""
    with trio.move_on_after(HEAD_TIMEOUT):
        while b"\r\n\r\n" not in buffer and len(buffer) <= HEAD_LIMIT:
            try:
                chunk = await stream.receive_some(CHUNK)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return None, b""
            if not chunk:
                return None, b""
            buffer += chunk
    head, sep, rest = buffer.partition(b"\r\n\r\n")
    if not sep:
        return None, b""
    return head, rest


async def _splice(a: trio.SocketStream, b: trio.SocketStream) -> None:
    """Copy both ways until both directions ended."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_copy, a, b)
        nursery.start_soon(_copy, b, a)


async def _copy(source: trio.SocketStream, target: trio.SocketStream) -> None:
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        while chunk := await source.receive_some(CHUNK):
            await target.send_all(chunk)
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        await target.send_eof()


async def _refuse(client: trio.SocketStream, status: int, message: str) -> None:
    reason = {400: "Bad Request", 403: "Forbidden", 502: "Bad Gateway"}[status]
    body = (message + "\n").encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        await client.send_all(head.encode() + body)


def _not_allowed(target: str) -> str:
    return f"nexo-trio: this sandbox reaches only the API; {target} is not allowed"


def _remove_stale_socket(path: str) -> None:
    """Remove a socket left at ``path`` by an earlier run (never anything else)."""
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)
