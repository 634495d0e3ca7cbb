"""Ledger events per second through the SQLite store's append path, beside a bare batched
``executemany`` into the same schema, on real files, interleaved round by round.

Ours appends as the orchestrator does: one ``append_events`` call per event (a goal's
events are awaited one after another, in order), from :data:`GOALS` goals at once (the
writer batches what is queued into shared transactions) and from one goal alone. The
events are the orchestrator's own shape (``attempt_completed`` with its usage). The floor
is raw ``sqlite3`` with the store's pragmas (WAL, ``synchronous=NORMAL``) encoding the same
events with ``orjson`` and inserting them with ``executemany``, one transaction per
:data:`GOALS` rows (what the batching can reach at best with that many goals). Every
measurement starts from a fresh, migrated file; opening and closing are not timed.
"""

from __future__ import annotations

import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import trio

from benchmarks.suite import Row, Stat, interleave
from nexo_trio.store.sqlite import MIGRATIONS, SQLiteStore

GOALS = 100
EVENTS_PER_GOAL = 50
ALONE = 2000
"""Events of the one-goal variant."""
ROUNDS = 5


def _event(i: int) -> tuple[str, dict[str, Any]]:
    return (
        "attempt_completed",
        {
            "turn": i,
            "outcome": {"kind": "continue", "reason": None},
            "usage": {
                "input_tokens": 1200 + i,
                "output_tokens": 340,
                "cache_read_input_tokens": 40_000,
                "cache_creation_input_tokens": 0,
            },
            "cost_usd": 0.0123,
            "last_tool": "Bash",
        },
    )


def _store_appends(path: Path, goals: int, per_goal: int) -> float:
    """Seconds for ``goals`` tasks to append ``per_goal`` events each, one per call."""

    async def main() -> float:
        store = SQLiteStore(path)
        async with trio.open_nursery() as service:
            await service.start(store.run)

            async def goal(g: int) -> None:
                goal_id = f"goal-{g:03d}"
                for i in range(per_goal):
                    await store.append_events(goal_id, [_event(i)])

            start = time.perf_counter()
            async with trio.open_nursery() as nursery:
                for g in range(goals):
                    nursery.start_soon(goal, g)
            elapsed = time.perf_counter() - start
            service.cancel_scope.cancel()
        return elapsed

    return trio.run(main)


def _migrated(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    for step in MIGRATIONS:
        for statement in step:
            conn.execute(statement)
    conn.execute(f"PRAGMA user_version = {len(MIGRATIONS)}")
    return conn


_INSERT = "INSERT INTO ledger (goal_id, at, kind, data) VALUES (?, ?, ?, ?)"


def _floor(path: Path, goals: int, per_goal: int) -> float:
    """Seconds to encode and insert the same events with ``executemany``, ``goals`` rows
    per transaction."""
    conn = _migrated(path)
    try:
        start = time.perf_counter()
        for i in range(per_goal):
            now = time.time()
            rows = []
            for g in range(goals):
                kind, data = _event(i)
                rows.append((f"goal-{g:03d}", now, kind, orjson.dumps(data).decode()))
            conn.execute("BEGIN")
            conn.executemany(_INSERT, rows)
            conn.execute("COMMIT")
        return time.perf_counter() - start
    finally:
        conn.close()


def rows(quick: bool = False) -> list[Row]:
    """Ledger events/s: the store's append path at :data:`GOALS` goals and at one, beside
    the bare ``executemany`` floor, medians of :data:`ROUNDS` interleaved rounds."""
    goals, per_goal, alone, rounds = (
        (20, 10, 200, 2) if quick else (GOALS, EVENTS_PER_GOAL, ALONE, ROUNDS)
    )
    with tempfile.TemporaryDirectory(prefix="nxb-store-") as tmp:
        root = Path(tmp)
        files = iter(range(10**6))

        def fresh() -> Path:
            return root / f"ledger-{next(files)}.db"

        variants: dict[str, Callable[[], float]] = {
            "many": lambda: _store_appends(fresh(), goals, per_goal),
            "alone": lambda: _store_appends(fresh(), 1, alone),
            "floor_many": lambda: _floor(fresh(), goals, per_goal),
            "floor_alone": lambda: _floor(fresh(), 1, alone),
        }
        samples = interleave(variants, rounds)
    many = Stat.of(samples["many"]).per(goals * per_goal)
    floor_many = Stat.of(samples["floor_many"]).per(goals * per_goal)
    one = Stat.of(samples["alone"]).per(alone)
    floor_one = Stat.of(samples["floor_alone"]).per(alone)
    note = f"medians of {rounds} interleaved rounds, fresh file each"
    return [
        Row(
            "store",
            f"ledger appends, {goals} goals at once, one event per call",
            "events/s",
            many,
            floor=floor_many,
            note=f"{note}; floor: executemany, {goals} rows per transaction",
        ),
        Row(
            "store",
            "ledger appends, 1 goal, one event per call (a commit each)",
            "events/s",
            one,
            floor=floor_one,
            note=f"{note}; floor: executemany, 1 row per transaction",
        ),
    ]


if __name__ == "__main__":
    from benchmarks.suite import markdown

    print(markdown(rows(quick="--quick" in sys.argv)))
