"""Permission decisions through the gate's Unix socket, beside a JSON echo floor.

Variants, all served on Unix sockets in this process and driven by the same clients with the
same frames (a mix of a Bash ``ls``, a ``Read`` and an ``Edit`` inside the workspace):

* ``rules + ledger`` (ours): the real :class:`~nexo_trio.gate.socket_server.GateServer` in
  front of a goal's :class:`~nexo_trio.gate.goal_gate.GoalGate` with the **default** decider
  (``build_decider(PermissionSettings())``: the ``rules`` decider behind a session cache,
  each call classified and its paths resolved on disk), recording every decision the way the
  orchestrator does: through :meth:`Orchestrator._emit` (the goal's emit lock, the event
  stamped and redacted, appended to a real SQLite ledger opened with
  :func:`~nexo_trio.store.sqlite.open_sqlite_store` on a temporary file).
* ``allow_all``: the same server with ``AllowAll`` and no recording: the server alone.
* the floor: a bare trio Unix-socket server that reads a line, decodes it with orjson,
  encodes a reply of the gate's shape (an allow echoing the input) and writes it.

Clients send one frame and wait for its reply, either one client alone or 64 clients at once,
each on its own connection. A connection is a turn's MCP server, and a goal runs one turn at a
time, so the 64 clients are 64 running goals (each its own gate, turn token, emit lock and
secrets); one more ``rules + ledger`` variant sends all 64 connections' requests to one goal
(no deployment does that: it shows what one goal's emit lock, one commit per event, costs).
Variants are interleaved round by round (the order rotating), each figure the median of the
rounds. Clients and servers share one trio loop (one process, one thread), so the figures
include the client side for all variants: compare the ratios.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import trio

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.suite import Row, Stat, interleave_async
from nexo_trio.core.goal import Goal
from nexo_trio.core.goal_machine import initial_state
from nexo_trio.core.permission import Decision, PermissionRequest
from nexo_trio.core.redact import secret_values
from nexo_trio.core.settings import Config, PermissionSettings
from nexo_trio.gate.deciders import AllowAll, build_decider
from nexo_trio.gate.goal_gate import GateRouter, GoalGate
from nexo_trio.gate.socket_server import GateServer
from nexo_trio.orchestrator.goal_run import GoalHandle
from nexo_trio.orchestrator.orchestrator import Orchestrator
from nexo_trio.store.sqlite import open_sqlite_store
from nexo_trio.wire import gate_frames
from nexo_trio.wire.gate_frames import PermissionFrame

CLIENTS = (1, 64)
REQUESTS = {1: 1000, 64: 3200}
"""Requests per round, in all (64 clients: 50 each)."""
QUICK_REQUESTS = {1: 200, 64: 640}
ROUNDS = 5
QUICK_ROUNDS = 5
WARMUP = 200
TOKEN = "bench-turn-token"
"""The turn token every request carries (the gate answers only the current turn)."""
GOAL_PREFIX = "bench-"
API_KEY = (
    "sk-ant-api03-" + base64.urlsafe_b64encode(hashlib.sha512(b"bench").digest()).decode()[:95]
)
"""Not a key, but as long as one: every recorded text is redacted of the secrets in the
goal's environment, and a real run has its API key there."""

Variant = Callable[[], Awaitable[float]]


def _inputs(workspace: Path) -> list[tuple[str, dict[str, Any]]]:
    source = str(workspace / "src" / "app.py")
    return [
        ("Bash", {"command": "ls -la src/", "description": "List the sources"}),
        ("Read", {"file_path": source}),
        ("Edit", {"file_path": source, "old_string": "x = 1", "new_string": "x = 2"}),
    ]


# --------------------------------------------------------------------------- the floor


async def _echo_handler(stream: trio.SocketStream) -> None:
    """Per line: orjson-decode it, orjson-encode an allow of the gate's shape, write it."""
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
            while (end := buffer.find(b"\n")) >= 0:
                line, buffer = buffer[:end], buffer[end + 1 :]
                frame = orjson.loads(line)
                reply = {
                    "v": 1,
                    "type": "decision",
                    "id": frame["id"],
                    "behavior": "allow",
                    "updated_input": frame["input"],
                }
                try:
                    await stream.send_all(orjson.dumps(reply) + b"\n")
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


# --------------------------------------------------------------------------- the clients


async def _client(
    path: Path, frames: list[bytes], latencies: list[float], ready: trio.Event
) -> None:
    """One connection, one request at a time, each round trip timed (seconds)."""
    stream = await trio.open_unix_socket(str(path))
    async with stream:
        await ready.wait()
        buffer = b""
        for frame in frames:
            started = time.perf_counter()
            await stream.send_all(frame)
            while (end := buffer.find(b"\n")) < 0:
                data = await stream.receive_some(64 * 1024)
                if not data:
                    raise RuntimeError("the server hung up")
                buffer += data
            reply, buffer = buffer[:end], buffer[end + 1 :]
            latencies.append(time.perf_counter() - started)
            if b'"allow"' not in reply:
                raise RuntimeError(f"not allowed: {reply[:200]!r}")


def _frames(
    inputs: list[tuple[str, dict[str, Any]]], client: int, count: int, goal: int
) -> list[bytes]:
    return [
        gate_frames.encode_request(
            PermissionFrame(
                f"c{client}-{n}",
                f"{GOAL_PREFIX}{goal}",
                *inputs[(client + n) % len(inputs)],
                None,
                TOKEN,
            )
        )
        for n in range(count)
    ]


async def _round(
    path: Path,
    inputs: list[tuple[str, dict[str, Any]]],
    clients: int,
    total: int,
    *,
    one_goal: bool = False,
) -> tuple[float, float, float]:
    """(decisions/s, p50 s, p99 s) of ``total`` requests from ``clients`` clients at once,
    each for its own goal (all for the first with ``one_goal``)."""
    per_client = total // clients
    work = [
        _frames(inputs, client, per_client, 0 if one_goal else client) for client in range(clients)
    ]
    latencies: list[float] = []
    ready = trio.Event()
    async with trio.open_nursery() as nursery:
        for frames in work:
            nursery.start_soon(_client, path, frames, latencies, ready)
        await trio.sleep(0.05)  # every client connected
        started = time.perf_counter()
        ready.set()
    elapsed = time.perf_counter() - started
    cuts = statistics.quantiles(latencies, n=100, method="inclusive")
    return len(latencies) / elapsed, cuts[49], cuts[98]


# --------------------------------------------------------------------------- the run


async def _bench(directory: Path, quick: bool) -> dict[str, list[tuple[float, float, float]]]:
    workspace = directory / "ws"
    (workspace / "src").mkdir(parents=True)
    (workspace / "src" / "app.py").write_text("x = 1\n")
    inputs = _inputs(workspace)
    allow_all = AllowAll()

    async def decide_all(request: PermissionRequest) -> Decision:
        return await allow_all.decide(request)

    results: dict[str, list[tuple[float, float, float]]] = {}
    requests = QUICK_REQUESTS if quick else REQUESTS
    paths = {name: directory / f"{name}.sock" for name in ("rules", "allow_all", "echo")}
    async with (
        open_sqlite_store(directory / "state" / "ledger.sqlite") as store,
        trio.open_nursery() as nursery,
    ):
        # The orchestrator's own recording path: its goal emit lock, the event stamped and
        # kept (redacted, capped), the ledger append, the fold into the goal's live state.
        orchestrator = Orchestrator(Config(), store=store, environ={})
        router = GateRouter()
        for goal_id in _goal_ids(max(CLIENTS)):
            router.register(_goal_gate(orchestrator, goal_id, workspace, directory))
        timeout = orchestrator.deadlines.gate_timeout_s
        await nursery.start(GateServer(paths["rules"], router, request_timeout_s=timeout).serve)
        await nursery.start(GateServer(paths["allow_all"], decide_all).serve)
        await nursery.start(_serve_echo, paths["echo"])
        for path in paths.values():
            await _round(path, inputs, 8, WARMUP)

        async def measured(key: str, path: Path, clients: int, one_goal: bool) -> float:
            figures = await _round(path, inputs, clients, requests[clients], one_goal=one_goal)
            results[key].append(figures)
            return figures[0]

        variants: dict[str, Variant] = {}
        for name, path, clients, one_goal in [
            *((name, path, clients, False) for name, path in paths.items() for clients in CLIENTS),
            ("rules one goal", paths["rules"], max(CLIENTS), True),
        ]:
            key = f"{name} {clients}"
            results[key] = []
            variants[key] = functools.partial(measured, key, path, clients, one_goal)
        await interleave_async(variants, QUICK_ROUNDS if quick else ROUNDS)
        nursery.cancel_scope.cancel()
    recorded = await _count_recorded(directory / "state" / "ledger.sqlite")
    if not recorded:
        raise RuntimeError("the rules gate recorded no decision")
    return results


def _goal_ids(count: int) -> list[str]:
    return [f"{GOAL_PREFIX}{n}" for n in range(count)]


def _goal_gate(
    orchestrator: Orchestrator, goal_id: str, workspace: Path, directory: Path
) -> GoalGate:
    """A goal's gate as the orchestrator makes it for a running goal (its handle
    registered, so that its decisions are folded into its live state)."""
    goal = Goal(id=goal_id, description="Benchmark the gate.")
    orchestrator._goals[goal_id] = GoalHandle(goal, initial_state(goal_id))
    orchestrator._secrets[goal_id] = secret_values({"ANTHROPIC_API_KEY": API_KEY})
    gate = GoalGate(
        goal,
        workspace=str(workspace),
        scratch=str(directory / "scratch" / goal_id),
        decider=build_decider(PermissionSettings(), environ={}),
        emit=orchestrator._emit,
        timeout_s=orchestrator.deadlines.decider_timeout_s,
        current_turn=lambda: 1,
        secrets=orchestrator._secrets_of(goal_id),
    )
    gate.begin_turn(TOKEN)
    return gate


async def _count_recorded(path: Path) -> int:
    async with open_sqlite_store(path) as store:
        return len(await store.events(f"{GOAL_PREFIX}0"))


def measure(quick: bool = False) -> dict[str, list[tuple[float, float, float]]]:
    """Every variant's (decisions/s, p50 s, p99 s) per round."""
    with tempfile.TemporaryDirectory(prefix="nxb", dir="/tmp") as tmp:
        return trio.run(_bench, Path(tmp), quick)


def _stats(samples: list[tuple[float, float, float]]) -> tuple[Stat, Stat, Stat]:
    rate = Stat.of([s[0] for s in samples])
    p50 = Stat.of([s[1] * 1000 for s in samples])
    p99 = Stat.of([s[2] * 1000 for s in samples])
    return rate, p50, p99


def rows(quick: bool = False) -> list[Row]:
    """Decisions/s, p50 and p99 (ms) at 1 and 64 clients: the default decider with the
    ledger write, and AllowAll without it, each beside the JSON echo floor."""
    results = measure(quick)
    rounds = QUICK_ROUNDS if quick else ROUNDS
    out: list[Row] = []
    for clients in CLIENTS:
        label = f"{clients} client{'s' if clients > 1 else ''}"
        floor_rate, floor_p50, floor_p99 = _stats(results[f"echo {clients}"])
        requests = (QUICK_REQUESTS if quick else REQUESTS)[clients]
        note = f"{requests} requests a round, {rounds} rounds"
        for name, title in (("rules", "rules + ledger"), ("allow_all", "allow_all, no ledger")):
            rate, p50, p99 = _stats(results[f"{name} {clients}"])
            targeted = name == "rules" and clients == 64
            met_rate = rate.median >= 0.5 * floor_rate.median
            met_p99 = p99.median <= 2 * floor_p99.median
            out += [
                Row(
                    "gate",
                    f"{title}, {label}: decisions/s",
                    "decisions/s",
                    rate,
                    floor=floor_rate,
                    target=">= 0.5x floor" if targeted else "",
                    met=met_rate if targeted else None,
                    note=note,
                ),
                Row("gate", f"{title}, {label}: p50", "ms", p50, floor=floor_p50, better="lower"),
                Row(
                    "gate",
                    f"{title}, {label}: p99",
                    "ms",
                    p99,
                    floor=floor_p99,
                    better="lower",
                    target="<= 2x floor" if targeted else "",
                    met=met_p99 if targeted else None,
                ),
            ]
    clients = max(CLIENTS)
    floor_rate, _, floor_p99 = _stats(results[f"echo {clients}"])
    rate, _, p99 = _stats(results[f"rules one goal {clients}"])
    note = f"{clients} connections of one goal: its emit lock, one commit per decision"
    out += [
        Row(
            "gate",
            "rules + ledger, one goal: decisions/s",
            "decisions/s",
            rate,
            floor=floor_rate,
            note=note,
        ),
        Row("gate", "rules + ledger, one goal: p99", "ms", p99, floor=floor_p99, better="lower"),
    ]
    return out


if __name__ == "__main__":
    from benchmarks.suite import markdown

    print(markdown(rows(quick="--quick" in sys.argv[1:])), end="")
