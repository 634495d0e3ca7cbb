"""Many goals on one state dir: :data:`GOALS` goals x :data:`TURNS` fake turns, run by one
orchestrator process and by :data:`PROCESSES` processes sharing the state dir, interleaved
round by round.

Each goal has its own fake ``claude`` (its own scenario and records, through the
orchestrator's ``goal_env``): every turn adds one to ``n.txt`` and claims done, and the
goal's acceptance wants ``n.txt`` to say :data:`TURNS`, so each goal takes exactly that many
turns. Reported per variant: wall time, goals not done (must be 0), ledger rows written per
second (all processes), and the orchestrator's share of the CPU (its own CPU time over its
own plus its children's: the fake CLIs, their permission servers, the checks).

A driver process is this file run with ``--drive``: it runs its slice of the goals with an
:class:`~nexo_trio.Orchestrator` and prints one JSON line of figures.
"""

from __future__ import annotations

import json
import os
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import trio

from nexo_trio import Budget, Config, FileMatchCheck, Goal, Orchestrator
from nexo_trio.core.settings import ClaudeSettings, PermissionSettings, SandboxSettings
from nexo_trio.testing import bash, init, result, text, turn
from nexo_trio.testing.scenario import FakeClaude

GOALS = int(os.environ.get("NEXO_BENCH_GOALS", "100"))
TURNS = 5
PROCESSES = 4
ROUNDS = 2
CONCURRENCY = 25
"""``max_concurrent_goals`` of each process."""

ROOT = Path(__file__).resolve().parent.parent
INCREMENT = "echo $(( $(cat n.txt 2>/dev/null || echo 0) + 1 )) > n.txt"


def _prepare(root: Path) -> None:
    one = turn(init(), bash(INCREMENT), text("Done."), result("Done.", cost_usd=0.001))
    for i in range(GOALS):
        FakeClaude.create(root / "fakes" / f"g{i:03d}", [one] * (TURNS + 1))
        (root / "ws" / f"g{i:03d}").mkdir(parents=True)


def _drive(root: Path, state: Path, first: int, count: int) -> None:
    def env_of(goal: Goal) -> dict[str, str | None]:
        fake = root / "fakes" / goal.id
        return {
            "NEXO_FAKE_CLAUDE_SCENARIO": str(fake / "scenario.json"),
            "NEXO_FAKE_CLAUDE_STATE": str(fake / "state"),
            "NEXO_FAKE_CLAUDE_MAX_LIFETIME": "120",
        }

    config = Config(
        claude=ClaudeSettings(binary=str(root / "fakes" / "g000" / "claude")),
        state_dir=str(state),
        workspace_root=str(root / "roots"),
        max_concurrent_goals=CONCURRENCY,
        turn_timeout_s=120,
        kill_grace_s=2,
        permission=PermissionSettings(decider="allow_all"),
        sandbox=SandboxSettings(mode="none"),
    )
    goals = [
        Goal(
            id=f"g{i:03d}",
            description="Count to five.",
            acceptance=(FileMatchCheck(path="n.txt", pattern=f"^{TURNS}$"),),
            budget=Budget(max_turns=TURNS + 1),
            workspace=str(root / "ws" / f"g{i:03d}"),
        )
        for i in range(first, first + count)
    ]

    async def main() -> dict[str, object]:
        started = time.perf_counter()
        async with Orchestrator(config, goal_env=env_of) as orch:
            handles = [await orch.start_goal(goal) for goal in goals]
            outcomes = [await handle.wait() for handle in handles]
        return {
            "wall": time.perf_counter() - started,
            "failed": sum(1 for o in outcomes if o.kind.value != "done"),
            "turns": sum(o.total_turns for o in outcomes),
        }

    figures = trio.run(main)
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    figures["cpu_self"] = me.ru_utime + me.ru_stime
    figures["cpu_children"] = kids.ru_utime + kids.ru_stime
    print(json.dumps(figures))


def _rows(state: Path) -> int:
    with sqlite3.connect(state / "nexo.db") as conn:
        (count,) = conn.execute("SELECT count(*) FROM ledger").fetchone()
    return int(count)


def _variant(root: Path, name: str, processes: int) -> dict[str, float]:
    """Run every goal once with ``processes`` drivers on a fresh state dir."""
    for i in range(GOALS):  # fresh workspaces and fake records
        (root / "ws" / f"g{i:03d}" / "n.txt").unlink(missing_ok=True)
        used = root / "fakes" / f"g{i:03d}" / "state" / "used_turns.json"
        used.unlink(missing_ok=True)
    state = Path(tempfile.mkdtemp(prefix=f"state-{name}-", dir=root))
    share = GOALS // processes
    started = time.perf_counter()
    drive = [sys.executable, __file__, "--drive", str(root), str(state)]
    drivers = [
        subprocess.Popen(
            [*drive, str(k * share), str(share)],
            stdout=subprocess.PIPE,
            cwd=ROOT,
        )
        for k in range(processes)
    ]
    results = []
    for driver in drivers:
        out, _ = driver.communicate(timeout=900)
        results.append(json.loads(out.decode().strip().splitlines()[-1]))
    wall = time.perf_counter() - started
    cpu_self = sum(r["cpu_self"] for r in results)
    cpu_children = sum(r["cpu_children"] for r in results)
    return {
        "wall": wall,
        "failed": float(sum(r["failed"] for r in results)),
        "turns": float(sum(r["turns"] for r in results)),
        "rows_per_s": _rows(state) / wall,
        "cpu_share": cpu_self / max(1e-9, cpu_self + cpu_children),
    }


def run() -> list[tuple[str, float, str]]:
    """Rows of (name, value, note): medians over :data:`ROUNDS` interleaved rounds."""
    with tempfile.TemporaryDirectory(prefix="nxb-goals-") as tmp:
        root = Path(tmp)
        _prepare(root)
        seen: dict[str, list[dict[str, float]]] = {"one": [], "many": []}
        for _ in range(ROUNDS):
            seen["one"].append(_variant(root, "one", 1))
            seen["many"].append(_variant(root, "many", PROCESSES))
    rows: list[tuple[str, float, str]] = []
    for name, label in (("one", "1 process"), ("many", f"{PROCESSES} processes")):
        runs = seen[name]

        def med(key: str, runs: list[dict[str, float]] = runs) -> float:
            return statistics.median(r[key] for r in runs)

        failed = max(r["failed"] for r in runs)
        note = f"{GOALS} goals x {TURNS} turns, {int(failed)} not done (worst of {ROUNDS})"
        rows += [
            (f"{label}: wall", med("wall"), f"s; {note}"),
            (f"{label}: ledger rows/s", med("rows_per_s"), "all processes, rows written / wall"),
            (
                f"{label}: orchestrator CPU share",
                100 * med("cpu_share"),
                "% of the CPU of it and its children (fake CLIs, MCP servers, checks)",
            ),
        ]
    return rows


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "--drive":
        _drive(Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
    else:
        for row, value, note in run():
            print(f"  {row:<40} {value:>10.1f}   {note}")
