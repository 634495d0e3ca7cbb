"""What only the SQLite store has: a file, a schema, one batching writer, a shutdown."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
import trio

from nexo_trio.store import (
    Binding,
    SchemaVersionError,
    SQLiteStore,
    StoreClosedError,
    StoreError,
    open_sqlite_store,
)
from nexo_trio.store import sqlite as sqlite_module
from tests.store.conftest import FakeClock, open_fds

LATEST = 3
"""The schema version this nexo-trio writes: v1 bindings and ledger, v2 a binding row per
session, v3 leases, the goal queue, control requests and session transcripts."""


def user_version(path: Path) -> int:
    """The schema version written in the file."""
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])
    finally:
        conn.close()


def query(path: Path, sql: str) -> list[Any]:
    """Rows of a query on the file, through a separate plain connection."""
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def make_db(path: Path, *statements: str) -> None:
    """A database file made by hand."""
    conn = sqlite3.connect(path)
    try:
        for statement in statements:
            conn.execute(statement)
        conn.commit()
    finally:
        conn.close()


# -- the file ------------------------------------------------------------------------------


async def test_data_survives_reopening(db_path: Path, clock: FakeClock) -> None:
    assert not await trio.Path(db_path.parent).exists()
    async with open_sqlite_store(db_path, clock=clock) as store:
        await store.put_binding("g", "s1", model="opus", workspace="/w")
        await store.put_binding("h", "s2")
        await store.mark_invalid("h", "s2")
        await store.append_events("g", [("goal_started", {"a": 1}), ("attempt_started", {})])
        before = await store.events("g")
    assert await trio.Path(db_path).is_file()
    assert query(db_path, "PRAGMA journal_mode") == [("wal",)]
    clock.advance(5)
    async with open_sqlite_store(db_path, clock=clock) as store:
        binding = await store.get_binding("g")
        assert binding is not None
        assert (binding.session_id, binding.model, binding.workspace) == ("s1", "opus", "/w")
        assert binding.created_at == 1_000_000.0
        assert await store.get_binding("h") is None
        assert [b.goal_id for b in await store.list_bindings(include_invalid=True)] == ["g", "h"]
        assert await store.events("g") == before
        await store.append_events("g", [("goal_completed", {"outcome": {"kind": "done"}})])
        after = await store.events("g")
        assert after[-1].seq > before[-1].seq  # the sequence goes on
        (summary,) = await store.goals()
        assert (summary.events, summary.outcome) == (3, "done")


async def test_empty_file_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    await trio.Path(path).write_bytes(b"")
    async with open_sqlite_store(path) as store:
        await store.put_binding("g", "s1")
        assert await store.get_binding("g") is not None
    assert user_version(path) == len(sqlite_module.MIGRATIONS) == LATEST


async def test_version_0_database_is_migrated_and_its_tables_kept(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    make_db(path, "CREATE TABLE notes (text TEXT)", "INSERT INTO notes VALUES ('keep me')")
    assert user_version(path) == 0
    async with open_sqlite_store(path) as store:
        await store.append_events("g", [("goal_started", {})])
    assert user_version(path) == LATEST
    assert query(path, "SELECT text FROM notes") == [("keep me",)]
    tables = {row[0] for row in query(path, "SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"bindings", "ledger", "notes"} <= tables
    assert "bindings_v2" not in tables
    indexes = query(path, "SELECT name FROM sqlite_master WHERE type='index'")
    assert ("ledger_goal_seq",) in indexes
    assert ("bindings_goal_current",) in indexes


async def test_older_version_is_migrated_forward(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with open_sqlite_store(db_path) as store:
        await store.put_binding("g", "s1")
        await store.append_events("g", [("goal_started", {"n": 1})])
    assert user_version(db_path) == LATEST
    # A future version, as a later release would append it.
    future = ("ALTER TABLE ledger ADD COLUMN note TEXT", "UPDATE ledger SET note = 'migrated'")
    monkeypatch.setattr(sqlite_module, "MIGRATIONS", (*sqlite_module.MIGRATIONS, future))
    async with open_sqlite_store(db_path) as store:
        assert await store.get_binding("g") is not None
        assert [e.data for e in await store.events("g")] == [{"n": 1}]
        await store.append_events("g", [("goal_completed", {})])
    assert user_version(db_path) == LATEST + 1
    assert query(db_path, "SELECT note FROM ledger ORDER BY seq") == [("migrated",), (None,)]


# The schema of a v1 database, as nexo-trio 1 wrote it: one bindings row per goal.
V1_SCHEMA = (
    """
    CREATE TABLE bindings (
        goal_id        TEXT PRIMARY KEY NOT NULL,
        session_id     TEXT NOT NULL,
        model          TEXT,
        workspace      TEXT,
        created_at     REAL NOT NULL,
        updated_at     REAL NOT NULL,
        last_active_at REAL NOT NULL,
        invalid        INTEGER NOT NULL DEFAULT 0
    )
    """,
    """
    CREATE TABLE ledger (
        seq     INTEGER PRIMARY KEY AUTOINCREMENT,
        goal_id TEXT NOT NULL,
        at      REAL NOT NULL,
        kind    TEXT NOT NULL,
        data    TEXT NOT NULL  -- JSON (orjson)
    )
    """,
    "CREATE INDEX ledger_goal_seq ON ledger (goal_id, seq)",
    "PRAGMA user_version = 1",
)

V1_ROWS = (
    "INSERT INTO bindings VALUES ('g', 's1', 'opus', '/w', 100.0, 150.0, 200.0, 0)",
    "INSERT INTO bindings VALUES ('h', 's2', NULL, NULL, 100.0, 120.0, 100.0, 1)",
    """INSERT INTO ledger (goal_id, at, kind, data) VALUES ('g', 100.0, 'goal_started', '{}')""",
)


def test_v1_schema_is_the_first_migration() -> None:
    # Append only: the first step must still build exactly what v1 files hold.
    def normal(sql: str) -> str:
        return " ".join(sql.split())

    assert [normal(s) for s in sqlite_module.MIGRATIONS[0]] == [normal(s) for s in V1_SCHEMA[:-1]]


async def test_v1_database_is_migrated_keeping_its_bindings(
    tmp_path: Path, clock: FakeClock
) -> None:
    path = tmp_path / "v1.db"
    make_db(path, *V1_SCHEMA, *V1_ROWS)
    clock.now = 300.0
    async with open_sqlite_store(path, clock=clock) as store:
        # The rows are there, as they were.
        g = Binding("g", "s1", "opus", "/w", 100.0, 150.0, 200.0, invalid=False)
        h = Binding("h", "s2", None, None, 100.0, 120.0, 100.0, invalid=True)
        assert await store.get_binding("g") == g
        assert await store.get_binding("h") is None
        assert await store.list_bindings() == [g]
        assert await store.list_bindings(include_invalid=True) == [g, h]
        assert [e.kind for e in await store.events("g")] == ["goal_started"]
        # The new semantics apply to them: re-binding keeps the earlier sessions.
        g2 = await store.put_binding("g", "s3")
        h2 = await store.put_binding("h", "s4", model="haiku")
        assert await store.get_binding("g") == g2
        assert await store.get_binding("h") == h2
        assert await store.list_bindings(include_invalid=True) == [g2, h2, g, h]
        clock.advance(1)
        again = await store.put_binding("g", "s1")
        assert (again.created_at, again.updated_at, again.model) == (100.0, 301.0, "opus")
        assert await store.get_binding("g") == again
    assert user_version(path) == LATEST
    # The new shape: keyed by (goal, session), with the index for the current binding.
    columns = query(path, "PRAGMA table_info(bindings)")
    assert [(name, pk) for _, name, _, _, _, pk in columns if pk] == [
        ("goal_id", 1),
        ("session_id", 2),
    ]
    assert [row[2] for row in query(path, "PRAGMA index_info(bindings_goal_current)")] == [
        "goal_id",
        "invalid",
        "updated_at",
    ]
    assert query(path, "SELECT count(*) FROM bindings") == [(4,)]
    assert query(path, "PRAGMA integrity_check") == [("ok",)]


async def test_v1_database_with_a_failing_v2_stays_v1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "v1.db"
    make_db(path, *V1_SCHEMA, *V1_ROWS)
    # v2 breaks after it already dropped the v1 table: all of it must be rolled back.
    v1, v2, *_ = sqlite_module.MIGRATIONS
    monkeypatch.setattr(sqlite_module, "MIGRATIONS", (v1, (*v2[:3], "THIS IS NOT SQL")))
    with pytest.raises(sqlite3.OperationalError, match="syntax error"):
        async with open_sqlite_store(path):
            pass  # pragma: no cover
    assert user_version(path) == 1
    assert query(path, "SELECT goal_id, session_id FROM bindings ORDER BY goal_id") == [
        ("g", "s1"),
        ("h", "s2"),
    ]
    assert query(path, "SELECT name FROM sqlite_master WHERE name = 'bindings_v2'") == []


async def test_failed_migration_changes_nothing(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with open_sqlite_store(db_path):
        pass
    broken = ("CREATE TABLE half_done (x)", "THIS IS NOT SQL")
    monkeypatch.setattr(sqlite_module, "MIGRATIONS", (*sqlite_module.MIGRATIONS, broken))
    fds = open_fds()
    with pytest.raises(sqlite3.OperationalError, match="syntax error"):
        async with open_sqlite_store(db_path):
            pass  # pragma: no cover
    assert open_fds() == fds
    assert user_version(db_path) == LATEST
    assert query(db_path, "SELECT name FROM sqlite_master WHERE name = 'half_done'") == []


async def test_newer_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    make_db(path, "CREATE TABLE from_the_future (x)", "PRAGMA user_version = 99")
    fds = open_fds()
    with pytest.raises(SchemaVersionError) as caught:
        async with open_sqlite_store(path):
            pass  # pragma: no cover
    message = str(caught.value)
    assert str(path) in message
    assert "99" in message
    assert f"version {LATEST}" in message
    assert (caught.value.path, caught.value.found, caught.value.supported) == (path, 99, LATEST)
    assert open_fds() == fds
    # Untouched: neither migrated nor switched to WAL.
    assert user_version(path) == 99
    assert query(path, "PRAGMA journal_mode") == [("delete",)]


# -- the writer ------------------------------------------------------------------------------


async def test_concurrent_appends_are_batched(db_path: Path) -> None:
    async with open_sqlite_store(db_path) as store:

        async def writer(i: int) -> None:
            for j in range(20):
                await store.append_events(f"goal-{i:02d}", [("tick", {"i": i, "j": j})])

        async with trio.open_nursery() as nursery:
            for i in range(50):
                nursery.start_soon(writer, i)

        seqs: list[int] = []
        for i in range(50):
            entries = await store.events(f"goal-{i:02d}")
            assert [e.data for e in entries] == [{"i": i, "j": j} for j in range(20)]
            seqs.extend(e.seq for e in entries)
            assert [e.seq for e in entries] == sorted(e.seq for e in entries)
        assert len(set(seqs)) == 1000
        assert sum(s.events for s in await store.goals()) == 1000
        # 1000 writes, but they shared commits: about one per round of the 50 writers.
        assert store.transactions < 100, store.transactions


async def test_a_failing_write_does_not_spoil_its_batch(db_path: Path) -> None:
    async with open_sqlite_store(db_path) as store:
        failed: list[BaseException] = []

        def bad_op(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO ledger (goal_id, at, kind, data) VALUES ('bad', 0, 'k', '{}')"
            )
            raise ValueError("boom")

        async def bad_writer() -> None:
            try:
                await store._write(bad_op)
            except ValueError as exc:
                failed.append(exc)

        before = store.transactions
        async with trio.open_nursery() as nursery:
            for i in range(5):
                nursery.start_soon(store.append_events, f"good-{i}", [("k", {})])
            nursery.start_soon(bad_writer)
            for i in range(5, 10):
                nursery.start_soon(store.append_events, f"good-{i}", [("k", {})])
        assert [str(e) for e in failed] == ["boom"]
        assert await store.events("bad") == []
        for i in range(10):
            assert len(await store.events(f"good-{i}")) == 1
        assert store.transactions - before <= 2  # they were batched together


async def test_closed_store_refuses_work(db_path: Path) -> None:
    unstarted = SQLiteStore(db_path)
    with pytest.raises(StoreClosedError):
        await unstarted.append_events("g", [("k", {})])
    with pytest.raises(StoreClosedError):
        await unstarted.events("g")
    async with open_sqlite_store(db_path) as store:
        await store.touch("g")
    with pytest.raises(StoreClosedError):
        await store.put_binding("g", "s")
    with pytest.raises(StoreClosedError):
        await store.list_bindings()


async def test_run_only_once(db_path: Path) -> None:
    async with open_sqlite_store(db_path) as store:
        with pytest.raises(RuntimeError, match="only be run once"):
            await store.run()


async def test_cancel_with_pending_writes(db_path: Path) -> None:
    acked: dict[str, int] = {}
    enough = trio.Event()
    pending_at_cancel: list[int] = []

    async def writer(store: SQLiteStore, goal: str) -> None:
        # Four events per call: the ledger must hold whole calls only.
        for n in range(0, 400, 4):
            await store.append_events(goal, [("tick", {"n": n + k}) for k in range(4)])
            acked[goal] = n + 4
            if sum(acked.values()) >= 200:
                enough.set()

    async def owner(task_status: trio.TaskStatus[SQLiteStore]) -> None:
        async with open_sqlite_store(db_path) as store, trio.open_nursery() as nursery:
            for i in range(30):
                nursery.start_soon(writer, store, f"goal-{i:02d}")
            task_status.started(store)
            await trio.sleep_forever()

    # Nothing but Cancelled may come out of the owner: the outer scope absorbs that.
    async with trio.open_nursery() as outer:
        store = await outer.start(owner)
        await enough.wait()
        pending_at_cancel.append(
            len(store._inflight) + store._recv.statistics().current_buffer_used
        )
        outer.cancel_scope.cancel()

    assert pending_at_cancel[0] > 0
    assert query(db_path, "PRAGMA integrity_check") == [("ok",)]
    flushed = 0
    async with open_sqlite_store(db_path) as reopened:
        for i in range(30):
            goal = f"goal-{i:02d}"
            entries = await reopened.events(goal)
            assert [e.data["n"] for e in entries] == list(range(len(entries)))
            # Every acknowledged write is there, plus at most the one that was queued
            # when the owner was cancelled (flushed on the way out).
            assert len(entries) in (acked.get(goal, 0), acked.get(goal, 0) + 4)
            flushed += len(entries) > acked.get(goal, 0)
    assert flushed > 0


async def test_no_leaked_file_descriptors(db_path: Path) -> None:
    async with open_sqlite_store(db_path) as store:  # warm up trio's thread cache
        await store.append_events("g", [("k", {})])
    fds = open_fds()
    for round_ in range(3):
        async with open_sqlite_store(db_path) as store:
            await store.put_binding("g", f"s{round_}")
            await store.append_events("g", [("k", {"round": round_})])
            assert len(await store.events("g")) == round_ + 2
            assert open_fds() > fds  # the file is open in here...
    assert open_fds() == fds  # ...and closed after


async def test_waits_are_bounded(db_path: Path) -> None:
    store = SQLiteStore(db_path, timeout_s=0.1)
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)

        def slow_op(conn: sqlite3.Connection) -> None:
            time.sleep(0.3)  # a stuck disk, say
            conn.execute("INSERT INTO ledger (goal_id, at, kind, data) VALUES ('g', 0, 'k', '{}')")

        with pytest.raises(StoreError, match=r"not committed within 0\.1 s"):
            await store._write(slow_op)
        release = trio.Event()

        async def hold_read_lock(task_status: trio.TaskStatus[None]) -> None:
            async with store._readers.exclusive():  # a stuck retry of kept writes, say
                task_status.started()
                await release.wait()

        await nursery.start(hold_read_lock)
        with pytest.raises(StoreError, match=r"read not started within 0\.1 s"):
            await store.events("g")
        release.set()
        # The write that timed out was not taken back: it commits, before any later write.
        store._timeout_s = 10.0
        await store.touch("g")
        assert [e.kind for e in await store.events("g")] == ["k"]
        nursery.cancel_scope.cancel()
