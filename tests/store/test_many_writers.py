"""Several processes writing one SQLite ledger at once (many ``nexo-trio run`` processes on
one state dir): WAL, a busy timeout, one writer connection per process, ``BEGIN
IMMEDIATE`` per batch. Started together on a file that does not exist yet (so they race to
create it and to migrate it too), every process writes every event, each goal's in order,
nothing kept in memory at the end, and each reads back what the others wrote."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

WRITER = r"""
import sys, trio
from pathlib import Path
from nexo_trio.store import open_sqlite_store

async def main(path, name, count):
    async with open_sqlite_store(Path(path)) as store:
        for n in range(count):
            await store.append_events(name, [("note", {"n": n})])
            if n % 10 == 0:
                await store.put_binding(name, f"session-{n}", model=None, workspace=None)
        await trio.sleep(0)
        assert store.write_problem is None, store.write_problem
        others = [g.goal_id for g in await store.goals()]
        print(",".join(sorted(others)), flush=True)

trio.run(main, sys.argv[1], sys.argv[2], int(sys.argv[3]))
"""
PROCESSES = 4
EVENTS = 150


def test_four_processes_write_one_new_ledger_at_once_and_lose_nothing(tmp_path: Path) -> None:
    database = tmp_path / "state" / "nexo.db"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(database), f"goal-{i}", str(EVENTS)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(PROCESSES)
    ]
    outputs = [proc.communicate(timeout=60) for proc in procs]
    for proc, (stdout, stderr) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, stderr
        assert "Traceback" not in stderr
        # Each saw its own goal, and the others' committed so far (at least its own).
        assert stdout.strip().split(",")
    with sqlite3.connect(database) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        rows = conn.execute("SELECT goal_id, data FROM ledger ORDER BY seq").fetchall()
        bindings = conn.execute("SELECT COUNT(*) FROM bindings").fetchone()[0]
    by_goal: dict[str, list[int]] = {}
    for goal_id, data in rows:
        by_goal.setdefault(goal_id, []).append(json.loads(data)["n"])
    assert by_goal == {f"goal-{i}": list(range(EVENTS)) for i in range(PROCESSES)}
    assert bindings == PROCESSES * (EVENTS // 10)


def test_openers_racing_on_a_fresh_file_all_get_it_in_wal_mode(tmp_path: Path) -> None:
    """Four connections switching a brand-new file to WAL at the same instant: SQLite answers
    all but one SQLITE_BUSY at once, without its busy handler (seen in CI as a second
    ``nexo-trio run`` exiting 2 with "database is locked"). Each opener waits its turn."""
    from nexo_trio.store.files import prepare_database_file
    from nexo_trio.store.sqlite import _connect, _migrate

    for round_ in range(120):
        database = tmp_path / f"round-{round_}" / "nexo.db"
        prepare_database_file(database)
        start = threading.Barrier(4)
        failures: list[BaseException] = []

        def open_it(
            database: Path = database,
            start: threading.Barrier = start,
            failures: list[BaseException] = failures,
        ) -> None:
            conn = _connect(database)
            try:
                start.wait(timeout=10)
                _migrate(conn, database, 5.0)
            except BaseException as exc:  # collected and asserted below
                failures.append(exc)
            finally:
                conn.close()

        threads = [threading.Thread(target=open_it) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert failures == [], f"round {round_}: {failures!r}"
        with sqlite3.connect(database) as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
