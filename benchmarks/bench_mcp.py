"""Start-up of the permission MCP server: spawn -> ``initialize`` answered.

Claude Code spawns the server on every turn and waits for its handshake, so this is paid
once per turn. The floor: a bare interpreter that echoes one stdin line (spawn to a line
answered, the same round trip the server makes, without its imports).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.suite import Row, Stat, interleave, markdown

RUNS = 21
INITIALIZE = (
    json.dumps(
        {
            "jsonrpc": "2.0",
            "id": 0,
            "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {}},
        }
    ).encode()
    + b"\n"
)
ECHO = "import sys; sys.stdout.write(sys.stdin.readline()); sys.stdout.flush()"


def _first_line_ms(argv: list[str]) -> float:
    start = time.perf_counter()
    proc = subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    assert proc.stdin is not None
    assert proc.stdout is not None
    proc.stdin.write(INITIALIZE)
    proc.stdin.flush()
    line = proc.stdout.readline()
    elapsed = (time.perf_counter() - start) * 1000
    proc.stdin.close()
    proc.wait(timeout=10)
    proc.stdout.close()
    if not line:
        raise RuntimeError(f"{argv} answered nothing")
    return elapsed


def rows(quick: bool = False) -> list[Row]:
    """The permission MCP server's start-up (spawn to ``initialize`` answered) beside a
    Python process that echoes a line (ms)."""
    with tempfile.TemporaryDirectory(prefix="nxb", dir="/tmp") as tmp:
        server = [
            sys.executable,
            "-m",
            "nexo_trio.gate.mcp_stdio",
            "--socket",
            str(Path(tmp) / "none.sock"),
            "--goal-id",
            "bench",
        ]
        _first_line_ms(server)  # warm the page cache and the .pyc files
        echo = [sys.executable, "-c", ECHO]
        samples = interleave(
            {"server": lambda: _first_line_ms(server), "echo": lambda: _first_line_ms(echo)},
            3 if quick else RUNS,
        )
    return [
        Row(
            "turn",
            "permission MCP server: spawn to initialize answered",
            "ms",
            Stat.of(samples["server"]),
            floor=Stat.of(samples["echo"]),
            better="lower",
            note="floor: python echoes a line",
        )
    ]


if __name__ == "__main__":
    print(markdown(rows()))
