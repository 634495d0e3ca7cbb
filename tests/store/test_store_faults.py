"""The store when it cannot write: a lock another process holds, a full disk, a file gone.

Nothing is lost: writes the goals depend on never raise for the store's own trouble, they
are kept in memory in call order and written, in that order, once the store can write;
when it never can, the store says it is unwritable, closes in bounded time and reports
every event it did not write. Real faults throughout: a second *process* holding the
database's write lock, a small tmpfs filled up, the database file replaced on disk.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import logging
import os
import sqlite3
import stat
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from nexo_trio.store import (
    LedgerEntry,
    SQLiteStore,
    Store,
    StoreClosedError,
    StoreUnwritableError,
    open_sqlite_store,
    raise_if_unwritable,
)
from nexo_trio.store.faults import describe, is_operational
from tests.store.conftest import FakeClock

# -- helpers -----------------------------------------------------------------------------

HOLDER = r"""
import select, sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
# Hold the write lock until told (a line, or EOF: the test is gone) or for hold_s at most.
select.select([sys.stdin], [], [], float(sys.argv[2]))
conn.execute("ROLLBACK")
conn.close()
print("released", flush=True)
"""


class LockHolder:
    """Another process holding ``BEGIN IMMEDIATE`` on the database (its write lock)."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process

    async def release(self) -> None:
        """Tell it to let go (if it has not yet), and wait until it has."""
        assert self.process.stdin is not None
        with trio.move_on_after(10):
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await self.process.stdin.send_all(b"release\n")  # else: already gone
            await self.exited()

    async def exited(self) -> None:
        """Wait until it released the lock and exited."""
        await self.process.wait()
        assert self.process.returncode == 0


async def read_line(stream: trio.abc.ReceiveStream) -> bytes:
    line = b""
    while not line.endswith(b"\n"):
        chunk = await stream.receive_some(1)
        if not chunk:
            break
        line += chunk
    return line


@asynccontextmanager
async def lock_held(path: Path, *, hold_s: float) -> AsyncIterator[LockHolder]:
    """The database's write lock, held by another process for ``hold_s`` at most."""
    process = await trio.lowlevel.open_process(
        [sys.executable, "-c", HOLDER, str(path), str(hold_s)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    holder = LockHolder(process)
    try:
        assert process.stdout is not None
        with trio.fail_after(10):
            assert await read_line(process.stdout) == b"locked\n"
        yield holder
    finally:
        with trio.CancelScope(shield=True):
            await holder.release()
            if process.returncode is None:  # pragma: no cover - it did not let go
                process.kill()
                await process.wait()


def problem_of(store: Store) -> str | None:
    """``store.write_problem`` (a call, so that type checkers do not narrow it)."""
    return store.write_problem


def unwritable_of(store: Store) -> str | None:
    """``store.unwritable`` (a call, so that type checkers do not narrow it)."""
    return store.unwritable


def ledger(path: Path) -> list[tuple[str, str, dict[str, Any]]]:
    """``(goal, kind, data)`` of every row in the file, in seq order, by a fresh connection."""
    import orjson

    conn = sqlite3.connect(path)
    try:
        rows = conn.execute("SELECT goal_id, kind, data FROM ledger ORDER BY seq").fetchall()
    finally:
        conn.close()
    return [(goal, kind, orjson.loads(data)) for goal, kind, data in rows]


def of_goal(rows: list[tuple[str, str, dict[str, Any]]], goal: str) -> list[tuple[str, Any]]:
    return [(kind, data) for g, kind, data in rows if g == goal]


async def eventually(check: Callable[[], object], *, within_s: float, step_s: float = 0.02) -> None:
    with trio.fail_after(within_s):
        while not check():  # noqa: ASYNC110 - polls state that has no event to wait on
            await trio.sleep(step_s)


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


# -- a small file system to fill up ------------------------------------------------------


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs of our own (skipped where mounting is not allowed)."""
    mount_point = tmp_path / "fs"
    mount_point.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m,mode=0755", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}")
    try:
        yield mount_point
    finally:
        if subprocess.run(["umount", str(mount_point)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(mount_point)], check=False)  # pragma: no cover


def fill(directory: Path) -> Path:
    """Fill the file system of ``directory`` up to the last byte; the filler file."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        block = b"x" * 65536
        while True:
            try:
                os.write(fd, block)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                if len(block) == 1:
                    break
                block = block[: len(block) // 16] or b"x"
    finally:
        os.close(fd)
    return filler


BIG = "y" * 16_000
"""Event data more than a few pages long: it needs new space in the WAL."""


# -- classification ----------------------------------------------------------------------


def test_operational_failures_are_told_from_bugs(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "x.db")
    try:
        with pytest.raises(sqlite3.OperationalError) as no_table:
            conn.execute("INSERT INTO nope VALUES (1)")
        with pytest.raises(sqlite3.ProgrammingError) as bad_params:
            conn.execute("SELECT ?", (1, 2))
    finally:
        conn.close()
    with pytest.raises(sqlite3.ProgrammingError) as closed:
        conn.execute("SELECT 1")
    assert not is_operational(no_table.value)  # SQLITE_ERROR: our SQL, not the disk
    assert not is_operational(bad_params.value)
    assert not is_operational(closed.value)
    assert not is_operational(TypeError("not JSON"))
    assert is_operational(OSError(errno.ENOSPC, "No space left on device", "/x"))
    assert describe(OSError(errno.EROFS, "Read-only file system", "/x")) == (
        "Read-only file system: /x"
    )


# -- every store: the health API when all is well ----------------------------------------


async def test_a_healthy_store_reports_no_problem(store: Store) -> None:
    await store.append_events("g", [("goal_started", {}), ("attempt_started", {})])
    await store.put_binding("g", "s1")
    assert problem_of(store) is None
    assert unwritable_of(store) is None
    assert store.unwritten() == []
    assert await store.wait_flushed(1.0)
    assert [e.pending for e in await store.events("g")] == [False, False]
    raise_if_unwritable(store)  # does not raise


# -- a lock held by another process ------------------------------------------------------


async def test_a_lock_held_20_s_by_another_process_loses_nothing(
    db_path: Path, clock: FakeClock
) -> None:
    """The defect's scenario: the defaults (busy timeout 5 s, unwritable after 60 s), a goal
    accepted as done while another process holds the write lock for 20 s."""
    async with open_sqlite_store(db_path, clock=clock) as store:
        await store.append_events("done", [("goal_started", {}), ("attempt_started", {})])
        await store.put_binding("done", "s1")
        durations: list[float] = []

        async def append(goal: str, kind: str, data: dict[str, Any]) -> None:
            started = trio.current_time()
            await store.append_events(goal, [(kind, data)])  # never raises
            durations.append(trio.current_time() - started)

        async with lock_held(db_path, hold_s=20) as holder:
            locked_at = trio.current_time()
            # The goal that was accepted: its last three events, the first one waiting out
            # the busy timeout, then kept.
            await append("done", "acceptance_checked", {"passed": True})
            assert problem_of(store) is not None
            assert "database is locked" in str(problem_of(store))
            await append("done", "attempt_completed", {"n": 1})
            await store.touch("done")  # bindings do not fail either
            await append("done", "goal_completed", {"outcome": {"kind": "done"}})

            # Others keep going meanwhile, concurrently.
            async def busy_goal(goal: str) -> None:
                for i in range(12):
                    await append(goal, "tick", {"i": i})
                    await trio.sleep(0.5)

            async with trio.open_nursery() as nursery:
                for goal in ("a", "b", "c"):
                    nursery.start_soon(busy_goal, goal)
            # Still locked: everything since is in memory, readable as pending.
            assert trio.current_time() - locked_at < 19
            assert unwritable_of(store) is None  # 60 s is not over
            done = await store.events("done")
            assert [(e.kind, e.pending) for e in done] == [
                ("goal_started", False),
                ("attempt_started", False),
                ("acceptance_checked", True),
                ("attempt_completed", True),
                ("goal_completed", True),
            ]
            assert len(store.unwritten()) == 3 + 36
            assert ledger(db_path)[-1][1] == "attempt_started"  # nothing else in the file
            await holder.exited()  # it lets go after 20 s
        assert trio.current_time() - locked_at >= 19.5
        # Written within a retry (at most 5 s apart) of the release.
        assert await store.wait_flushed(10.0)
        assert problem_of(store) is None
        assert unwritable_of(store) is None
        assert store.unwritten() == []
    # Waiting out the busy timeout once (5 s), then no append waited for the lock.
    assert max(durations) < 6.5
    assert sorted(durations)[-2] < 0.5
    rows = ledger(db_path)
    assert [kind for kind, _ in of_goal(rows, "done")] == [
        "goal_started",
        "attempt_started",
        "acceptance_checked",
        "attempt_completed",
        "goal_completed",
    ]
    for goal in ("a", "b", "c"):
        assert of_goal(rows, goal) == [("tick", {"i": i}) for i in range(12)]
    assert len(rows) == 5 + 36  # once each


async def test_writes_during_a_short_lock_keep_their_order(db_path: Path) -> None:
    """Many writers, appends and bindings mixed, some kept, some waiting in the queue when
    the lock comes: every goal's events land in call order, once; bindings land too."""
    async with open_sqlite_store(db_path, busy_timeout_s=0.2, timeout_s=0.1) as store:
        await store.append_events("g0", [("goal_started", {})])
        async with lock_held(db_path, hold_s=1.5):

            async def writer(goal: str) -> None:
                for i in range(30):
                    await store.append_events(goal, [("tick", {"i": i}), ("tock", {"i": i})])
                    if i == 10:
                        binding = await store.put_binding(goal, f"s-{goal}", model="opus")
                        assert (binding.session_id, binding.model) == (f"s-{goal}", "opus")
                    await trio.sleep(0.02)

            with trio.fail_after(5):
                async with trio.open_nursery() as nursery:
                    for n in range(8):
                        nursery.start_soon(writer, f"g{n}")
            assert problem_of(store) is not None
            # While kept, a read shows the goal's whole log: the file's part, then pending.
            g0 = await store.events("g0")
            assert g0[0].kind == "goal_started"
            assert not g0[0].pending
            assert any(e.pending for e in g0)
        assert await store.wait_flushed(10.0)
        assert problem_of(store) is None
        assert sorted(b.session_id for b in await store.list_bindings()) == [
            f"s-g{n}" for n in range(8)
        ]
        for n in range(8):
            expected = [(k, {"i": i}) for i in range(30) for k in ("tick", "tock")]
            assert [(e.kind, e.data) for e in await store.events(f"g{n}")][-60:] == expected
            binding = await store.get_binding(f"g{n}")
            assert binding is not None
            assert binding.session_id == f"s-g{n}"
    rows = ledger(db_path)
    assert len(rows) == 1 + 8 * 60
    assert of_goal(rows, "g0")[0] == ("goal_started", {})
    for n in range(8):
        ticks = of_goal(rows, f"g{n}")[1:] if n == 0 else of_goal(rows, f"g{n}")
        assert ticks == [(k, {"i": i}) for i in range(30) for k in ("tick", "tock")]


async def test_bugs_still_raise_while_writes_are_kept(db_path: Path) -> None:
    async with open_sqlite_store(db_path, busy_timeout_s=0.1) as store:
        async with lock_held(db_path, hold_s=10):
            await store.append_events("g", [("kept", {})])
            assert problem_of(store) is not None
            with pytest.raises(TypeError):
                await store.append_events("g", [("bad", {"x": object()})])
        assert await store.wait_flushed(10.0)
        assert [e.kind for e in await store.events("g")] == ["kept"]
    with pytest.raises(StoreClosedError):
        await store.append_events("g", [("late", {})])


# -- a full disk -------------------------------------------------------------------------


async def test_disk_full_keeps_events_and_writes_them_once_space_is_back(
    small_fs: Path, clock: FakeClock
) -> None:
    path = small_fs / "state" / "nexo.db"
    async with open_sqlite_store(path, clock=clock) as store:
        await store.append_events("g", [("goal_started", {})])
        filler = fill(small_fs)
        for i in range(5):
            await store.append_events("g", [("turn", {"i": i, "blob": BIG})])  # no raise
            await store.append_events("h", [("tick", {"i": i})])
        assert problem_of(store) is not None
        assert "full" in str(problem_of(store))
        assert [(e.kind, e.pending) for e in await store.events("g")] == [
            ("goal_started", False),
            *[("turn", True)] * 5,
        ]
        # Retrying against a full disk for a while changes nothing.
        await trio.sleep(0.5)
        assert len(store.unwritten()) == 10
        filler.unlink()
        assert await store.wait_flushed(10.0)
        assert problem_of(store) is None
    rows = ledger(path)
    assert of_goal(rows, "g") == [
        ("goal_started", {}),
        *[("turn", {"i": i, "blob": BIG}) for i in range(5)],
    ]
    assert of_goal(rows, "h") == [("tick", {"i": i}) for i in range(5)]


# -- gone for good -----------------------------------------------------------------------


def _replace_with_a_directory(path: Path) -> None:
    path.rename(path.with_name("moved.db"))
    path.mkdir()


@pytest.mark.parametrize("cause", ["locked", "disk full", "replaced by a directory"])
async def test_a_store_gone_for_good_says_so_and_reports_what_it_kept(
    cause: str, tmp_path: Path, small_fs: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="nexo_trio.store")
    path = (small_fs if cause == "disk full" else tmp_path) / "state" / "nexo.db"
    store = SQLiteStore(path, busy_timeout_s=0.2, unwritable_after_s=1.0, flush_timeout_s=0.5)
    # The lock outlives the store (``outlives`` exits after the nursery): its last flush,
    # when it closes, fails too.
    async with AsyncExitStack() as outlives, trio.open_nursery() as nursery:
        await nursery.start(store.run)
        await store.append_events("g", [("goal_started", {})])
        if cause == "locked":
            await outlives.enter_async_context(lock_held(path, hold_s=30))
        if cause == "disk full":
            fill(small_fs)
        elif cause == "replaced by a directory":
            _replace_with_a_directory(path)
        first = trio.current_time()
        blob = BIG if cause == "disk full" else "x"
        await store.append_events("g", [("acceptance_checked", {"blob": blob})])
        await store.append_events("g", [("attempt_completed", {})])
        await store.append_events("other", [("tick", {})])
        assert problem_of(store) is not None
        assert unwritable_of(store) is None
        await eventually(lambda: unwritable_of(store) is not None, within_s=5)
        assert trio.current_time() - first >= 1.0
        # Still no exception: later events are kept behind the others.
        await store.append_events("g", [("goal_completed", {"outcome": {"kind": "done"}})])
        closing = trio.current_time()
        nursery.cancel_scope.cancel()
        # (the nursery exits once the store closed)
    assert trio.current_time() - closing < 0.5 + 1.0  # the flush bound, and a little
    reason = unwritable_of(store)
    assert reason is not None
    assert str(path) in reason
    assert "4 event(s) of 2 goal(s) not written" in reason
    unwritten = store.unwritten()
    assert [(e.goal_id, e.kind, e.pending, e.seq) for e in unwritten] == [
        ("g", "acceptance_checked", True, 0),
        ("g", "attempt_completed", True, 0),
        ("other", "tick", True, 0),
        ("g", "goal_completed", True, 0),
    ]
    assert unwritten[-1].data == {"outcome": {"kind": "done"}}
    logged = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    for entry in unwritten:
        assert any(f"event {entry.kind} of goal {entry.goal_id}" in m for m in logged)
    with pytest.raises(StoreUnwritableError) as caught:
        raise_if_unwritable(store)
    assert caught.value.reason == reason
    assert caught.value.unwritten == unwritten
    assert not await store.wait_flushed(0.1)


@pytest.fixture
def slow_autojump() -> trio.testing.MockClock:
    """Virtual time that jumps only after 50 ms of real idleness: never while a worker
    thread is in the middle of a SQLite call."""
    return trio.testing.MockClock(autojump_threshold=0.05)


async def test_unwritable_after_the_default_60_s_with_backoff_up_to_5_s(
    db_path: Path, slow_autojump: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SQLiteStore(db_path, timeout_s=None)
    attempts: list[float] = []
    apply = store._apply
    token = trio.lowlevel.current_trio_token()  # the writer's threads are not trio.to_thread's

    def counted(attempt: Any) -> None:
        attempts.append(trio.from_thread.run_sync(trio.current_time, trio_token=token))
        apply(attempt)

    monkeypatch.setattr(store, "_apply", counted)
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        _replace_with_a_directory(db_path)
        start = trio.current_time()
        await store.append_events("g", [("goal_completed", {})])
        assert problem_of(store) is not None
        assert "removed or replaced" in str(problem_of(store))
        await trio.sleep_until(start + 59)
        assert unwritable_of(store) is None
        await eventually(lambda: unwritable_of(store) is not None, within_s=3)
        assert start + 60 <= trio.current_time() < start + 62
        nursery.cancel_scope.cancel()
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    # 50 ms, 100 ms, 200 ms... then every 5 s.
    assert gaps[0] == pytest.approx(0.05, abs=0.03)
    assert gaps[1] == pytest.approx(0.1, abs=0.03)
    assert gaps[2] == pytest.approx(0.2, abs=0.03)
    assert max(gaps) <= 5.0 + 0.1
    assert 15 <= len(attempts) <= 25
    assert [e.kind for e in store.unwritten()] == ["goal_completed"]


# -- permissions -------------------------------------------------------------------------


@pytest.mark.parametrize("umask", [0o022, 0o000])
async def test_the_ledger_is_private(db_path: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        async with open_sqlite_store(db_path) as store:
            await store.append_events("g", [("goal_started", {"prompt": "secret"})])
            assert mode(db_path.parent) == 0o700
            for name in ("nexo.db", "nexo.db-wal", "nexo.db-shm"):
                assert mode(db_path.parent / name) == 0o600, name
    finally:
        os.umask(old)


async def test_loose_files_of_an_older_version_are_tightened(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    os.chmod(state, 0o755)
    path = state / "nexo.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("CREATE TABLE t (x)")
    conn.close()
    wal = Path(f"{path}-wal")
    wal.write_bytes(b"")  # noqa: ASYNC240 - a test's set-up
    os.chmod(path, 0o644)
    os.chmod(wal, 0o644)
    async with open_sqlite_store(path) as store:
        await store.append_events("g", [("goal_started", {})])
        assert mode(path) == 0o600
        assert mode(wal) == 0o600
        assert mode(Path(f"{path}-shm")) == 0o600
    # A directory that already was there is its owner's business.
    assert mode(state) == 0o755


async def test_kept_events_read_back_as_pending_entries(db_path: Path) -> None:
    async with open_sqlite_store(db_path, busy_timeout_s=0.1) as store:
        await store.append_events("g", [("goal_started", {"n": 0})])
        async with lock_held(db_path, hold_s=10):
            await store.append_events("g", [("a", {"n": 1}), ("b", {"n": 2})])
            entries = await store.events("g", after_seq=1)
            assert entries == [
                LedgerEntry(
                    seq=0, goal_id="g", at=entries[0].at, kind="a", data={"n": 1}, pending=True
                ),
                LedgerEntry(
                    seq=0, goal_id="g", at=entries[0].at, kind="b", data={"n": 2}, pending=True
                ),
            ]
            assert await store.events("other") == []
        assert await store.wait_flushed(10.0)
        after = await store.events("g")
        assert [(e.kind, e.pending) for e in after] == [
            ("goal_started", False),
            ("a", False),
            ("b", False),
        ]
        assert after[1].at == entries[0].at  # the time of the append, not of the write
