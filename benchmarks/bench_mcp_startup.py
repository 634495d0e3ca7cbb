"""Start-up of the permission MCP server: spawn -> ``initialize`` answered.

Claude Code spawns the server on every turn and waits for its handshake, so this is paid
once per turn. Beside it, two floors: ``python -c pass`` (spawn to exit of a bare
interpreter) and a bare interpreter that echoes one stdin line (spawn to a line answered,
the same round trip the server makes, without its imports).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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


def _exit_ms(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdin=subprocess.DEVNULL)
    return (time.perf_counter() - start) * 1000


def run() -> list[tuple[str, float, str]]:
    """Rows of (name, milliseconds, note): medians of :data:`RUNS` spawns each."""
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
        server_ms = statistics.median(_first_line_ms(server) for _ in range(RUNS))
    echo_ms = statistics.median(_first_line_ms([sys.executable, "-c", ECHO]) for _ in range(RUNS))
    pass_ms = statistics.median(_exit_ms([sys.executable, "-c", "pass"]) for _ in range(RUNS))
    return [
        ("mcp_stdio: initialize answered", server_ms, f"median of {RUNS} spawns"),
        ("floor: python echoes a line", echo_ms, f"x{server_ms / echo_ms:.1f} for the server"),
        ("floor: python -c pass", pass_ms, f"x{server_ms / pass_ms:.1f} for the server"),
    ]


if __name__ == "__main__":
    for name, value, note in run():
        print(f"  {name:<34} {value:>8.1f} ms   {note}")
