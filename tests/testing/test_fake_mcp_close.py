"""The fake claude's MCP client closes its server even when a SIGTERM comes in the middle
of a write to the server's stdin (the buffered writer then refuses a reentrant close)."""

from __future__ import annotations

import contextlib
import subprocess
import sys

from nexo_trio.testing.fake_claude import _McpClient


class _MidWrite:
    """A stdin whose buffered writer is busy: ``close`` is a reentrant call."""

    def __init__(self, real: object) -> None:
        self.real = real

    def close(self) -> None:
        raise RuntimeError("reentrant call inside <_io.BufferedWriter name=5>")

    def fileno(self) -> int:
        return self.real.fileno()  # type: ignore[attr-defined, no-any-return]


def test_a_close_during_a_write_still_ends_the_servers_input() -> None:
    server = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    real_stdin = server.stdin
    server.stdin = _MidWrite(real_stdin)  # type: ignore[assignment]
    client = _McpClient("gate", server, timeout_s=5.0)
    client.close(grace=5.0)  # no exception: the descriptor is closed instead
    assert server.returncode == 0  # the server saw the end of its input and exited
    with contextlib.suppress(OSError):  # its descriptor is closed already (EBADF)
        real_stdin.close()  # type: ignore[union-attr]
