"""The sandbox's end of "no network but the API": a loopback port relayed to a Unix socket.

Run inside a turn's sandbox (its own network namespace: a loopback device and nothing
else) as ``python -I -S netrelay.py --port P --socket SOCK -- COMMAND...``: it listens on
``127.0.0.1:P``, forks a relay that copies every connection to the Unix socket ``SOCK``
(bound into the sandbox; the orchestrator's allow-listing proxy listens on it, see
:mod:`nexo_trio.engine.api_gateway`), and *execs* ``COMMAND`` (the CLI, with
``HTTPS_PROXY=http://127.0.0.1:P``). So the CLI keeps its place as the sandbox's first
process (signals and exit status reach it as without the relay), and the relay, its child,
lives until the sandbox ends. The relay ignores SIGTERM (a graceful stop of the CLI must
not cut its API stream) and holds none of the CLI's pipes but stderr.

Standard library only, started with ``-I -S``: a few milliseconds of start-up per turn.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import threading
from typing import NoReturn

CHUNK = 64 * 1024


def main(argv: list[str]) -> int:
    """Parse ``--port P --socket SOCK -- COMMAND...``, start the relay, exec the command."""
    try:
        split = argv.index("--")
        options, command = argv[:split], argv[split + 1 :]
        port = int(options[options.index("--port") + 1])
        path = options[options.index("--socket") + 1]
    except (ValueError, IndexError):
        print("usage: netrelay.py --port P --socket SOCK -- COMMAND...", file=sys.stderr)
        return 2
    if not command:
        print("netrelay.py: no command to run", file=sys.stderr)
        return 2
    try:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen(64)
    except OSError as exc:
        print(f"nexo-trio API relay: cannot listen on 127.0.0.1:{port}: {exc}", file=sys.stderr)
        return 1
    if os.fork() == 0:
        _relay(listener, path)  # never returns
    listener.close()
    try:
        os.execvp(command[0], command)
    except OSError as exc:
        print(f"nexo-trio API relay: cannot run {command[0]}: {exc}", file=sys.stderr)
    return 127


def _relay(listener: socket.socket, path: str) -> NoReturn:
    """The relay process: accept on the loopback port, copy to the Unix socket."""
    try:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 0)
        os.dup2(devnull, 1)
        while True:
            client, _ = listener.accept()
            threading.Thread(target=_connect, args=(client, path), daemon=True).start()
    finally:
        os._exit(0)


def _connect(client: socket.socket, path: str) -> None:
    upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        upstream.connect(path)
    except OSError:
        client.close()
        upstream.close()
        return
    back = threading.Thread(target=_copy, args=(upstream, client), daemon=True)
    back.start()
    _copy(client, upstream)
    back.join()
    client.close()
    upstream.close()


def _copy(source: socket.socket, target: socket.socket) -> None:
    """Copy until ``source`` ends, then end ``target``'s write side."""
    with contextlib.suppress(OSError):
        while data := source.recv(CHUNK):
            target.sendall(data)
    with contextlib.suppress(OSError):
        target.shutdown(socket.SHUT_WR)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
