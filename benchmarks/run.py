"""Run every benchmark and print each figure beside the floor it is measured against.

Numbers, not pass/fail: the machines are shared and noisy, so compare ratios.
``python benchmarks/run.py [NAME ...]`` runs only the named ones.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import (
    bench_checkpoint,
    bench_gate,
    bench_goals,
    bench_mcp_startup,
    bench_memory,
    bench_startup,
    bench_store,
    bench_stream,
)

Rows = list[tuple[str, float, str]]
BENCHMARKS: dict[str, tuple[str, str, Callable[[], Rows]]] = {
    "stream": (
        "events/s through framer + parser + reducer (100k generated lines)",
        "events/s",
        bench_stream.run,
    ),
    "store": ("goal-ledger appends, one per call", "rows/s", bench_store.run),
    "mcp": (
        "permission MCP server start-up: spawn -> initialize answered",
        "ms",
        bench_mcp_startup.run,
    ),
    "gate": (
        "permission decisions through the gate's Unix socket (AllowAll; the default rules "
        "decider, classifying and resolving paths) vs a line echo floor",
        "",
        bench_gate.run,
    ),
    "checkpoint": (
        "per-turn checkpoint of a 10k-file workspace vs `git add -A && git write-tree`",
        "ms",
        bench_checkpoint.run,
    ),
    "memory": ("peak memory of one 64 MiB line through the framer", "", bench_memory.run),
    "startup": (
        "nexo-trio --help and import nexo_trio vs python -c pass, whole processes",
        "ms",
        bench_startup.run,
    ),
    "goals": (
        f"{bench_goals.GOALS} goals x {bench_goals.TURNS} fake turns, one state dir: 1 process "
        f"vs {bench_goals.PROCESSES}",
        "",
        bench_goals.run,
    ),
}


def main(names: list[str]) -> None:
    """Print one table per benchmark."""
    for name in names or list(BENCHMARKS):
        title, unit, fn = BENCHMARKS[name]
        print(f"== {name}: {title}")
        for row, value, note in fn():
            print(f"  {row:<44} {value:>14,.1f} {unit:<9} {note}")


if __name__ == "__main__":
    main(sys.argv[1:])
