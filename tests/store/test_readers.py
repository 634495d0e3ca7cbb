"""The SQLite store's reads under load: a queue in call order over a few connections (an
overload waits, never fails), and the bound of a read that is really stuck."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest
import trio
import trio.testing

from nexo_trio.store.sqlite import SQLiteStore, StoreClosedError, StoreError, open_sqlite_store
from tests.store.conftest import open_fds

FOREVER = "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n) SELECT count(*) FROM n"
"""A statement that never ends by itself (SQLite can interrupt it)."""


def _count(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT count(*) FROM ledger").fetchone()[0])


async def test_many_reads_are_all_served_while_a_slow_read_runs(db_path: Path) -> None:
    """300 readers at once, one read holding a connection for longer than the bound: every
    read is served (the queue moves), none fails, and they ran beside the slow one."""
    async with open_sqlite_store(db_path, timeout_s=0.5) as store:
        await store.append_events("g", [("k", {"i": i}) for i in range(5)])
        slow_started = trio.Event()
        token = trio.lowlevel.current_trio_token()
        served_while_slow = 0
        slow_done = False

        def slow(conn: sqlite3.Connection) -> int:
            trio.from_thread.run_sync(slow_started.set, trio_token=token)
            time.sleep(0.4)  # inside its bound, longer than the queue's whole run
            return _count(conn)

        async def slow_read() -> None:
            nonlocal slow_done
            assert await store._read(slow) == 5
            slow_done = True

        async def reader() -> None:
            nonlocal served_while_slow
            entries = await store.events("g")
            assert [e.data["i"] for e in entries] == list(range(5))
            served_while_slow += not slow_done

        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(slow_read)
                await slow_started.wait()
                for _ in range(300):
                    nursery.start_soon(reader)
        assert slow_done
        assert served_while_slow > 0  # side by side, not behind it


async def test_a_queue_longer_than_the_bound_is_served_while_it_moves(db_path: Path) -> None:
    """One connection, 40 reads of 20 ms each: the last waits ~0.8 s, four times the bound,
    and is served, because reads keep finishing; they are served in call order."""
    store = SQLiteStore(db_path, timeout_s=0.2, readers=1)
    order: list[int] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)

        async def reader(i: int) -> None:
            def read(conn: sqlite3.Connection) -> int:
                time.sleep(0.02)
                return _count(conn)

            assert await store._read(read) == 0
            order.append(i)

        started = trio.current_time()
        with trio.fail_after(20):
            async with trio.open_nursery() as readers:
                for i in range(40):
                    readers.start_soon(reader, i)
                    await trio.testing.wait_all_tasks_blocked()  # queued before the next
        assert trio.current_time() - started > 0.5
        assert order == list(range(40))
        nursery.cancel_scope.cancel()


async def test_a_read_stuck_in_sqlite_is_interrupted_at_its_bound(db_path: Path) -> None:
    async with open_sqlite_store(db_path, timeout_s=0.3) as store:
        await store.append_events("g", [("k", {})])

        def forever(conn: sqlite3.Connection) -> object:
            return conn.execute(FOREVER).fetchone()

        started = trio.current_time()
        with pytest.raises(StoreError, match=r"read not finished within 0\.3 s \(interrupted\)"):
            await store._read(forever)
        assert trio.current_time() - started < 0.3 + 0.5
        # The connection was not stuck, the statement was: the store reads on.
        assert [e.kind for e in await store.events("g")] == ["k"]
        assert store._readers.abandoned == 0


async def test_a_read_that_never_returns_is_abandoned_and_the_others_go_on(
    db_path: Path,
) -> None:
    """A read blocked outside SQLite (a stuck disk, say) fails within its bound plus the
    grace; the reads behind it are served by a fresh connection; the stuck thread closes
    its connection once it returns: no descriptor is leaked."""
    async with open_sqlite_store(db_path) as store:  # warm up trio's thread cache
        await store.events("g")
    fds = open_fds()
    release = threading.Event()
    store = SQLiteStore(db_path, timeout_s=0.3, readers=1)
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        await store.append_events("g", [("k", {})])

        def blocked(conn: sqlite3.Connection) -> int:
            release.wait(30)
            return _count(conn)

        async def behind() -> None:
            assert [e.kind for e in await store.events("g")] == ["k"]

        started = trio.current_time()
        with trio.fail_after(10):
            async with trio.open_nursery() as readers:
                for _ in range(20):
                    readers.start_soon(behind)
                with pytest.raises(StoreError, match=r"abandoned to its thread"):
                    await store._read(blocked)
                assert trio.current_time() - started < 0.3 + 0.5 + 0.5
        assert store._readers.abandoned == 1
        release.set()
        nursery.cancel_scope.cancel()
    assert store._readers.abandoned == 0
    # The abandoned thread closed its connection as it returned.
    for _ in range(500):
        if open_fds() == fds:
            break
        await trio.sleep(0.01)
    assert open_fds() == fds


async def test_reads_queued_at_close_are_served_then_it_closes_without_leaks(
    db_path: Path,
) -> None:
    async with open_sqlite_store(db_path) as store:  # warm up trio's thread cache
        await store.events("g")
    fds = open_fds()
    store = SQLiteStore(db_path, timeout_s=5, readers=2)
    outcomes: list[str] = []
    service = trio.CancelScope()

    async def serve(task_status: trio.TaskStatus[None]) -> None:
        with service:
            await store.run(task_status=task_status)

    def slow(conn: sqlite3.Connection) -> int:
        time.sleep(0.1)
        return _count(conn)

    async def reader() -> None:
        try:
            await store._read(slow)
        except StoreClosedError:
            outcomes.append("closed")
        else:
            outcomes.append("read")

    async with trio.open_nursery() as nursery:
        await nursery.start(serve)
        for _ in range(6):
            nursery.start_soon(reader)
        await trio.sleep(0.05)  # two run, four wait
        service.cancel()  # the store closes: behind the reads already queued
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(reader)  # too late
    assert sorted(outcomes) == ["closed"] + ["read"] * 6
    assert open_fds() == fds
    with pytest.raises(StoreClosedError):
        await store.events("g")


async def test_a_cancelled_waiting_read_leaves_the_queue(db_path: Path) -> None:
    store = SQLiteStore(db_path, timeout_s=5, readers=1)
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        hold = threading.Event()

        def held(conn: sqlite3.Connection) -> int:
            hold.wait(10)
            return _count(conn)

        nursery.start_soon(store._read, held)
        await trio.sleep(0.05)
        with trio.move_on_after(0.1) as waited:
            await store.events("g")  # queued behind the held read
        assert waited.cancelled_caught
        hold.set()
        with trio.fail_after(5):
            assert await store.events("g") == []
        assert store._readers.lent == 0
        nursery.cancel_scope.cancel()
