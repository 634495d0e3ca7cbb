"""Ledger appends per second through the SQLite store, beside raw ``sqlite3`` floors.

2000 goal events, one ``append_events`` call each: awaited one after another from one task
(one transaction per event), then from 50 concurrent tasks (the writer batches them into
shared transactions). The floors use the same schema and pragmas (WAL, synchronous=NORMAL)
with the rows already encoded: ``executemany`` in one transaction, and one commit per row.
"""

from __future__ import annotations

import sqlite3
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import trio

from nexo_trio.store.sqlite import MIGRATIONS, SQLiteStore, open_sqlite_store

EVENTS = 2000
TASKS = 50


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


def _goal(i: int) -> str:
    return f"goal-{i % TASKS:02d}"


def _timed(fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _store_one_task(path: Path) -> tuple[float, SQLiteStore]:
    async def main() -> tuple[float, SQLiteStore]:
        async with open_sqlite_store(path) as store:
            start = time.perf_counter()
            for i in range(EVENTS):
                await store.append_events(_goal(i), [_event(i)])
            return time.perf_counter() - start, store

    return trio.run(main)


def _store_many_tasks(path: Path, *, bounded: bool = True) -> tuple[float, SQLiteStore]:
    async def main() -> tuple[float, SQLiteStore]:
        store = SQLiteStore(path) if bounded else SQLiteStore(path, timeout_s=None)
        async with trio.open_nursery() as service:
            await service.start(store.run)

            async def writer(task: int) -> None:
                for i in range(task, EVENTS, TASKS):
                    await store.append_events(_goal(i), [_event(i)])

            start = time.perf_counter()
            async with trio.open_nursery() as nursery:
                for task in range(TASKS):
                    nursery.start_soon(writer, task)
            elapsed = time.perf_counter() - start
            service.cancel_scope.cancel()
        return elapsed, store

    return trio.run(main)


def _raw_connection(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    for step in MIGRATIONS:
        for statement in step:
            conn.execute(statement)
    return conn


_INSERT = "INSERT INTO ledger (goal_id, at, kind, data) VALUES (?, ?, ?, ?)"


def _rows() -> list[tuple[str, float, str, str]]:
    now = time.time()
    return [
        (_goal(i), now, kind, orjson.dumps(data).decode())
        for i, (kind, data) in ((i, _event(i)) for i in range(EVENTS))
    ]


def _raw_executemany(path: Path) -> float:
    conn = _raw_connection(path)
    rows = _rows()

    def work() -> None:
        conn.execute("BEGIN")
        conn.executemany(_INSERT, rows)
        conn.execute("COMMIT")

    try:
        return _timed(work)
    finally:
        conn.close()


def _raw_commit_per_row(path: Path) -> float:
    conn = _raw_connection(path)
    rows = _rows()

    def work() -> None:
        for row in rows:
            conn.execute("BEGIN")
            conn.execute(_INSERT, row)
            conn.execute("COMMIT")

    try:
        return _timed(work)
    finally:
        conn.close()


def run() -> list[tuple[str, float, str]]:
    """Rows of (name, ledger rows per second, note)."""
    with tempfile.TemporaryDirectory(prefix="nexo-bench-store-") as tmp:
        root = Path(tmp)
        one_s, one = _store_one_task(root / "one.db")
        many_s, many = _store_many_tasks(root / "many.db")
        unbounded_s, unbounded = _store_many_tasks(root / "unbounded.db", bounded=False)
        batch_s = _raw_executemany(root / "executemany.db")
        per_row_s = _raw_commit_per_row(root / "per-row.db")

    def us_per_row(seconds: float) -> str:
        return f"{seconds / EVENTS * 1e6:.1f} us/row"

    return [
        (
            "store, 1 task, awaited",
            EVENTS / one_s,
            f"{us_per_row(one_s)}, {one.transactions} transactions",
        ),
        (
            f"store, {TASKS} tasks, batched",
            EVENTS / many_s,
            f"{us_per_row(many_s)}, {many.transactions} transactions",
        ),
        (
            f"store, {TASKS} tasks, no deadline",
            EVENTS / unbounded_s,
            f"{us_per_row(unbounded_s)}, {unbounded.transactions} transactions, timeout_s=None",
        ),
        (
            "floor: executemany, 1 txn",
            EVENTS / batch_s,
            f"{us_per_row(batch_s)}, raw sqlite3, rows pre-encoded",
        ),
        (
            "floor: commit per row",
            EVENTS / per_row_s,
            f"{us_per_row(per_row_s)}, raw sqlite3, rows pre-encoded",
        ),
    ]


if __name__ == "__main__":
    for name, rate, note in run():
        print(f"  {name:<28} {rate:>12,.0f} rows/s   {note}")
