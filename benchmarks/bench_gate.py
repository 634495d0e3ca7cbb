"""Decisions through the permission gate's Unix socket, beside a bare echo floor.

The real :class:`~nexo_trio.gate.socket_server.GateServer` (no MCP server) answers
permission request frames, with two deciders: ``AllowAll`` (the cost of the gate alone) and
the default one (the ``rules`` decider behind a goal's gate: each call classified, its paths
resolved on disk in a worker thread, the decision recorded as an event, here into a list).
Clients send one frame and wait for its reply,
either one client alone (sequential) or 64 clients at once, each on its own connection.
The floor is a bare trio Unix-socket server that echoes each line back, driven by the same
clients with the same frames: what the gate costs beyond moving a line through a socket.

Clients and servers share one trio loop (one process, one thread), so the figures include
the client side for both; compare the ratios, not the absolute numbers.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import trio

from nexo_trio.core.goal import Goal
from nexo_trio.core.goal_events import GoalEvent
from nexo_trio.core.permission import Decision, PermissionRequest
from nexo_trio.core.settings import PermissionSettings
from nexo_trio.gate.deciders import AllowAll, build_decider
from nexo_trio.gate.goal_gate import GateRouter, GoalGate
from nexo_trio.gate.socket_server import GateServer
from nexo_trio.wire import gate_frames
from nexo_trio.wire.gate_frames import PermissionFrame

SEQUENTIAL_REQUESTS = 5000
CONCURRENT_CLIENTS = 64
REQUESTS_PER_CLIENT = 150
REPEATS = 3
"""Each figure is from the fastest of this many runs (the machines are shared and noisy)."""
WARMUP_REQUESTS = 500
INPUT = {"command": "ls -la src/", "description": "List the sources"}
TOKEN = "bench-turn-token"
"""The turn token every request carries (the gate answers only the current turn)."""


async def _echo_handler(stream: trio.SocketStream) -> None:
    async with stream:
        buffer = b""
        while True:
            try:
                data = await stream.receive_some(64 * 1024)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
            if not data:
                return
            buffer += data
            end = buffer.rfind(b"\n")
            if end >= 0:
                lines, buffer = buffer[: end + 1], buffer[end + 1 :]
                try:
                    await stream.send_all(lines)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return


async def _serve_echo(
    path: Path, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    await sock.bind(str(path))
    sock.listen(128)
    listener = trio.SocketListener(sock)
    async with listener, trio.open_nursery() as nursery:
        task_status.started()
        await trio.serve_listeners(_echo_handler, [listener], handler_nursery=nursery)


async def _client(path: Path, client: int, count: int, latencies: list[float]) -> None:
    """``count`` request/reply round trips on one connection, each timed (µs)."""
    frames = [
        gate_frames.encode_request(
            PermissionFrame(f"c{client}-{n}", "bench", "Bash", INPUT, None, TOKEN)
        )
        for n in range(count)
    ]
    stream = await trio.open_unix_socket(str(path))
    async with stream:
        buffer = b""
        for frame in frames:
            started = time.perf_counter_ns()
            await stream.send_all(frame)
            while b"\n" not in buffer:
                data = await stream.receive_some(64 * 1024)
                if not data:
                    raise RuntimeError("the server hung up")
                buffer += data
            _, buffer = buffer.split(b"\n", 1)
            latencies.append((time.perf_counter_ns() - started) / 1000)


async def _measure(path: Path, clients: int, per_client: int) -> tuple[float, float, float]:
    """(round trips per second, p50 µs, p99 µs) of ``clients`` clients at once: the run
    with the best throughput of :data:`REPEATS`."""
    await _client(path, -1, WARMUP_REQUESTS, [])
    runs: list[tuple[float, float, float]] = []
    for _ in range(REPEATS):
        latencies: list[float] = []
        started = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for client in range(clients):
                nursery.start_soon(_client, path, client, per_client, latencies)
        elapsed = time.perf_counter() - started
        quantiles = statistics.quantiles(latencies, n=100)
        runs.append((len(latencies) / elapsed, quantiles[49], quantiles[98]))
    return max(runs)


async def _bench(directory: Path) -> dict[str, tuple[float, float, float]]:
    allow_all = AllowAll()

    async def router(request: PermissionRequest) -> Decision:
        return await allow_all.decide(request)

    recorded: list[GoalEvent] = []

    async def record(event: GoalEvent) -> None:
        recorded.append(event)

    workspace = directory / "ws"
    (workspace / "src").mkdir(parents=True)
    rules = GoalGate(
        Goal(id="bench", description="Benchmark the gate."),
        workspace=str(workspace),
        scratch=str(directory / "scratch"),
        decider=build_decider(PermissionSettings(), environ={}),
        emit=record,
        timeout_s=30.0,
    )
    rules.begin_turn(TOKEN)  # the requests carry the turn's token, as a turn's server does
    gates = GateRouter()
    gates.register(rules)
    results: dict[str, tuple[float, float, float]] = {}
    paths = {name: directory / f"{name}.sock" for name in ("gate", "rules", "echo")}
    async with trio.open_nursery() as nursery:
        await nursery.start(GateServer(paths["gate"], router).serve)
        await nursery.start(GateServer(paths["rules"], gates).serve)
        await nursery.start(_serve_echo, paths["echo"])
        for name, path in paths.items():
            results[f"{name} 1"] = await _measure(path, 1, SEQUENTIAL_REQUESTS)
            results[f"{name} 64"] = await _measure(path, CONCURRENT_CLIENTS, REQUESTS_PER_CLIENT)
        nursery.cancel_scope.cancel()
    assert recorded, "the rules gate recorded no decision"
    return results


def run() -> list[tuple[str, float, str]]:
    """Rows of (name, value, note): throughput and latency percentiles, gate and floor."""
    with tempfile.TemporaryDirectory(prefix="nxb", dir="/tmp") as tmp:
        results = trio.run(_bench, Path(tmp) / "run")
    rows: list[tuple[str, float, str]] = []
    for clients, label in (("1", "1 client"), ("64", f"{CONCURRENT_CLIENTS} clients")):
        echo_rate, echo_p50, echo_p99 = results[f"echo {clients}"]
        count = SEQUENTIAL_REQUESTS if clients == "1" else CONCURRENT_CLIENTS * REQUESTS_PER_CLIENT
        for name, title in (("gate", "gate (AllowAll)"), ("rules", "gate (rules, default)")):
            rate, p50, p99 = results[f"{name} {clients}"]
            rows += [
                (f"{title}, {label}: decisions/s", rate, f"{count} requests, best of {REPEATS}"),
                (f"{title}, {label}: p50 µs", p50, f"x{p50 / echo_p50:.1f} the floor's"),
                (f"{title}, {label}: p99 µs", p99, f"x{p99 / echo_p99:.1f} the floor's"),
            ]
        rows += [
            (f"floor echo, {label}: lines/s", echo_rate, ""),
            (f"floor echo, {label}: p50 µs", echo_p50, ""),
            (f"floor echo, {label}: p99 µs", echo_p99, ""),
        ]
    return rows


if __name__ == "__main__":
    for name, value, note in run():
        print(f"  {name:<36} {value:>12,.1f}   {note}")
