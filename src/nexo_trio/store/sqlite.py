"""The SQLite :class:`~nexo_trio.store.base.Store`: the stdlib ``sqlite3`` behind one writer.

Shape::

    callers ──write request──▶ memory channel ──▶ run() service task
       ▲                                            │ drains everything pending,
       └──── Event set after COMMIT ◀───────────────┘ ONE transaction per batch
                                                      (a worker thread of trio's cache)

    callers ──read──▶ FIFO queue ──▶ one of a few read connections (WAL: side by side),
                                     in a worker thread (:mod:`.readers`)

Why batching: a commit costs far more than a row, so concurrent goals writing their events
share commits instead of queueing one commit each. Each request runs inside its own
SAVEPOINT, so a failing request is rolled back alone and the rest of the batch commits.

Reads are served in call order by a small pool of connections; an overload of reads is a
queue: a read waiting fails only when no read finished for ``timeout_s`` (the store is
stuck, not busy), and a read running past ``timeout_s`` is interrupted (or, if it does not
return, abandoned to its thread, which closes its connection). Transactions run in worker
threads that are never abandoned: a transaction that started always finishes, which is what
makes shutdown and cancellation safe to reason about. The store's threads never wait for a
token of the process-wide ``trio.to_thread`` limiter (the rest of the program may hold them
all): the writer opens and closes with its own limiter and runs its transactions, one at a
time, in trio's thread cache directly (not renamed per job), as the readers do.

When the file cannot be written (a lock another process holds past the busy timeout, a full
disk, an I/O error, the file removed), the writes the goals depend on are not failed but
*kept*::

    append / bindings ──▶ queue ──▶ transaction fails (operational) ──▶ kept, in call order
          │ (while writes are kept: straight behind them)                 │
          └──────────────────────────────────────────────────────────────▶│
                              retry: 50 ms, doubling to 5 s ◀─────────────┘
                              writes the oldest kept first, then the rest

A read sees every kept event exactly once (retries hold off reads): in the file, or last,
``pending``. Health: :attr:`SQLiteStore.write_problem`, :attr:`SQLiteStore.unwritable`.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import math
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager, suppress
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, NoReturn, TypeVar

import trio

from nexo_trio.store.base import Binding, GoalSummary, LedgerEntry, Store
from nexo_trio.store.faults import (
    RETRY_BUSY_TIMEOUT_S,
    RETRY_INITIAL_S,
    RETRY_MAX_S,
    UNWRITABLE_AFTER_S,
    describe,
    is_operational,
    next_backoff,
    replaced_error,
)
from nexo_trio.store.files import file_identity, prepare_database_file
from nexo_trio.store.memory import GOAL_COMPLETED, GOAL_STARTED, fresh_in_order, is_fresh, rebind
from nexo_trio.store.readers import ReaderPool, ReadersClosed, ReadOverdue, ReadStuck
from nexo_trio.wire.ledger_rows import decode_data, encode_data, outcome_kind

if TYPE_CHECKING:
    import outcome

T = TypeVar("T")
U = TypeVar("U")

log = logging.getLogger("nexo_trio.store")

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # v1: session bindings and the goal ledger.
    (
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
    ),
    # v2: one binding row per (goal, session), so that a goal's earlier sessions (invalid
    # or superseded) are kept. SQLite cannot change a primary key in place: build the new
    # table, copy the rows (one per goal, all kept), swap. The rowid is the put sequence.
    (
        """
        CREATE TABLE bindings_v2 (
            goal_id        TEXT NOT NULL,
            session_id     TEXT NOT NULL,
            model          TEXT,
            workspace      TEXT,
            created_at     REAL NOT NULL,
            updated_at     REAL NOT NULL,
            last_active_at REAL NOT NULL,
            invalid        INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (goal_id, session_id)
        )
        """,
        """
        INSERT INTO bindings_v2 (goal_id, session_id, model, workspace, created_at,
                                 updated_at, last_active_at, invalid)
        SELECT goal_id, session_id, model, workspace, created_at,
               updated_at, last_active_at, invalid
        FROM bindings ORDER BY updated_at, goal_id
        """,
        "DROP TABLE bindings",
        "ALTER TABLE bindings_v2 RENAME TO bindings",
        "CREATE INDEX bindings_goal_current ON bindings (goal_id, invalid, updated_at)",
    ),
)
"""Migration ``i`` takes the schema from version ``i`` to ``i + 1`` (``PRAGMA user_version``).
Append only: never edit a released step."""

READERS = 4
"""Read connections a store opens at most (on demand): reads beyond run in turn."""

BUSY_TIMEOUT_S = 5.0
"""How long a write waits for a lock held by another process before it fails (a write the
goals depend on is then kept in memory and retried; see :class:`SQLiteStore`)."""


class StoreError(Exception):
    """A store operation failed."""


class StoreClosedError(StoreError):
    """The store's service is not running (not started yet, or shut down)."""


class StoreUnwritableError(StoreError):
    """The store could not write for good: ``reason`` (what :attr:`SQLiteStore.unwritable`
    says) and the events it did not write, in order (``pending`` entries)."""

    def __init__(self, reason: str, unwritten: Sequence[LedgerEntry] = ()) -> None:
        super().__init__(reason)
        self.reason = reason
        self.unwritten = list(unwritten)


class SchemaVersionError(StoreError):
    """The database was written by a newer nexo-trio than this one."""

    def __init__(self, path: Path, found: int, supported: int) -> None:
        super().__init__(
            f"{path}: database schema version {found} is newer than this nexo-trio supports "
            f"(version {supported}); upgrade nexo-trio or use another state dir"
        )
        self.path = path
        self.found = found
        self.supported = supported


_Row = tuple[str, float, str, str]
"""A ledger row as inserted: ``(goal_id, at, kind, data as JSON)``."""


class _Request(Generic[T]):
    """One write: an operation to run on the writer connection, and its result slot.

    A *kept* request is one the store could not write yet: it waits in memory, in call
    order (``ticket``), and its caller no longer waits for it (it was told)."""

    __slots__ = ("done", "error", "kept", "op", "resilient", "result", "rows", "ticket", "what")

    def __init__(
        self,
        op: Callable[[sqlite3.Connection], T],
        *,
        resilient: bool = False,
        what: str = "a write",
        rows: Sequence[_Row] = (),
    ) -> None:
        self.op = op
        self.done = trio.Event()
        self.result: T | None = None
        self.error: BaseException | None = None
        self.resilient = resilient
        """Kept in memory, not failed, when the store cannot write."""
        self.what = what
        self.rows = rows
        """Of an append: its ledger rows (to read back and report while not written)."""
        self.ticket = 0
        self.kept = False


def _ticket(request: _Request[Any]) -> int:
    return request.ticket


class _Attempt:
    """One write transaction, filled in by the worker thread that runs it."""

    __slots__ = ("batch", "busy_ms", "failure", "finished", "flush")

    def __init__(self, batch: list[_Request[Any]], *, flush: bool, busy_ms: int) -> None:
        self.batch = batch
        self.flush = flush
        """The batch is the oldest of the kept writes, not new requests."""
        self.busy_ms = busy_ms
        """SQLite's busy timeout for this transaction."""
        self.failure: Exception | None = None
        self.finished = False


async def _in_writer_thread(fn: Callable[[_Attempt], None], attempt: _Attempt) -> None:
    """``fn(attempt)`` in one of trio's cached worker threads; not abandoned: once started
    it runs to its end, a cancellation coming after (as ``trio.to_thread.run_sync`` without
    ``abandon_on_cancel``). The writer runs one transaction at a time, so it needs no
    limiter; and the thread is not renamed for the job (``trio.to_thread`` names it twice
    per call, a ctypes call each time: a sizeable part of a small transaction's cost)."""
    await trio.lowlevel.checkpoint_if_cancelled()  # cancelled before it started: not run
    task = trio.lowlevel.current_task()
    token = trio.lowlevel.current_trio_token()

    def deliver(result: outcome.Outcome[None]) -> None:  # in the worker thread
        token.run_sync_soon(trio.lowlevel.reschedule, task, result)

    trio.lowlevel.start_thread_soon(partial(fn, attempt), deliver)
    await trio.lowlevel.wait_task_rescheduled(lambda _: trio.lowlevel.Abort.FAILED)


def _ms(seconds: float) -> int:
    return max(0, math.ceil(seconds * 1000)) if math.isfinite(seconds) else 2**31 - 1


def _pending(requests: Iterable[_Request[Any]]) -> list[LedgerEntry]:
    """The events of (kept) requests, as ``pending`` ledger entries."""
    return [
        LedgerEntry(seq=0, goal_id=goal_id, at=at, kind=kind, data=decode_data(data), pending=True)
        for request in requests
        for goal_id, at, kind, data in request.rows
    ]


def _write_failed(path: Path, exc: BaseException) -> StoreError:
    error = StoreError(f"{path}: write transaction failed: {exc!r}")
    error.__cause__ = exc
    return error


def _connect(path: Path, busy_timeout_s: float = BUSY_TIMEOUT_S) -> sqlite3.Connection:
    # check_same_thread=False: trio.to_thread may run us on any cached worker thread; the
    # store guarantees that one connection is only ever used by one thread at a time.
    # isolation_level=None: we issue BEGIN / COMMIT ourselves.
    conn = sqlite3.connect(
        path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
    )
    try:
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA synchronous = NORMAL")
    except BaseException:
        conn.close()
        raise
    return conn


def _user_version(conn: sqlite3.Connection) -> int:
    row = conn.execute("PRAGMA user_version").fetchone()
    return int(row[0])


def _check_version(path: Path, found: int, supported: int) -> None:
    if found > supported:
        raise SchemaVersionError(path, found, supported)


def _enter_wal(conn: sqlite3.Connection, busy_timeout_s: float) -> None:
    """Put the database in WAL mode, waiting up to ``busy_timeout_s`` for other openers.

    Switching a new file to WAL takes an exclusive lock from a shared one. When two processes
    open a fresh ledger at the same moment, SQLite answers one of them SQLITE_BUSY at once,
    without calling the busy handler (waiting could deadlock), so the wait is ours. Blocking:
    this runs in a worker thread.
    """
    deadline = time.monotonic() + busy_timeout_s
    delay = 0.001
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
        except sqlite3.OperationalError as exc:
            busy = exc.sqlite_errorcode & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
            if not busy or time.monotonic() + delay > deadline:
                raise
        else:
            return
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def _migrate(conn: sqlite3.Connection, path: Path, busy_timeout_s: float) -> None:
    supported = len(MIGRATIONS)
    # Refuse a newer database before changing anything in it (even the journal mode).
    _check_version(path, _user_version(conn), supported)
    _enter_wal(conn, busy_timeout_s)
    conn.execute("BEGIN IMMEDIATE")
    try:
        found = _user_version(conn)  # again, under the write lock
        _check_version(path, found, supported)
        for version in range(found, supported):
            for statement in MIGRATIONS[version]:
                conn.execute(statement)
            # user_version lives in the file header and is part of the transaction.
            conn.execute(f"PRAGMA user_version = {version + 1:d}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _binding(row: Sequence[Any]) -> Binding:
    return Binding(
        goal_id=row[0],
        session_id=row[1],
        model=row[2],
        workspace=row[3],
        created_at=row[4],
        updated_at=row[5],
        last_active_at=row[6],
        invalid=bool(row[7]),
    )


_BINDING_COLUMNS = (
    "goal_id, session_id, model, workspace, created_at, updated_at, last_active_at, invalid"
)


def _qualified(alias: str) -> str:
    return ", ".join(f"{alias}.{column.strip()}" for column in _BINDING_COLUMNS.split(","))


_LATEST_ORDER = "ORDER BY updated_at DESC, rowid DESC LIMIT 1"
"""A goal's latest row first: the latest ``updated_at``, ties to the later put (rowid)."""

_LATEST_BINDING = f"SELECT {_BINDING_COLUMNS} FROM bindings WHERE goal_id = ? {_LATEST_ORDER}"
_LATEST_ROWID = f"SELECT rowid FROM bindings WHERE goal_id = ? {_LATEST_ORDER}"


class SQLiteStore:
    """Bindings and ledger in a SQLite file (WAL), written by one service task.

    Start :meth:`run` in a nursery (``await nursery.start(store.run)``), or use
    :func:`open_sqlite_store`. ``transactions`` counts the write transactions committed,
    which shows the batching at work. The file's directory is created 0700, the file (and
    its ``-wal`` / ``-shm``) 0600.

    A write returns once its transaction committed. A write whose caller is cancelled
    (or times out) while waiting may still be committed (it is already in the queue); it
    is never half-applied.

    The writes the goals depend on (``append_events``, ``put_binding``, ``mark_invalid``,
    ``touch``) never fail for the store's own trouble (see
    :func:`~nexo_trio.store.faults.is_operational`: a lock held by another process past
    ``busy_timeout_s``, a full disk, an I/O error, the file removed or replaced): they are
    *kept* in memory, in call order, and return. While any write is kept, later ones go
    straight behind it. The service retries the kept writes, the oldest first, after
    ``retry_initial_s``, doubling up to ``retry_max_s``; reads show kept events last, as
    ``pending``. :attr:`write_problem` says what fails; :attr:`unwritable` is set once
    writes have stayed kept for ``unwritable_after_s`` with none written, or the store
    closed with writes kept: each is then logged at error level, and the events stay
    available from :meth:`unwritten`. Bugs raise: data that is not JSON, a closed store,
    an operation that fails by itself. ``purge_older_than`` (an answer, not a record)
    fails with :class:`StoreError` like any read.

    ``timeout_s`` bounds how long a caller waits for its write to commit (a kept kind of
    write then returns, still queued); a read waits in turn as long as reads progress, and
    fails with :class:`StoreError` once none finished for ``timeout_s`` or once it ran
    ``timeout_s`` itself (interrupted; abandoned to its thread if it does not return
    within :data:`~nexo_trio.store.readers.INTERRUPT_GRACE_S`); ``None`` waits as long as
    it takes. ``readers`` is how many read connections run reads side by side.
    ``flush_timeout_s`` bounds the flush of queued and kept writes at close; queued writes
    that may fail then fail with :class:`StoreClosedError`, the others stay kept (and are
    reported). ``max_batch`` caps the writes in one transaction and ``queue_size`` the
    writes waiting for one (senders wait beyond that).
    """

    def __init__(
        self,
        path: Path,
        *,
        clock: Callable[[], float] = time.time,
        timeout_s: float | None = 30.0,
        flush_timeout_s: float = 5.0,
        max_batch: int = 1000,
        queue_size: int = 10_000,
        busy_timeout_s: float = BUSY_TIMEOUT_S,
        unwritable_after_s: float = UNWRITABLE_AFTER_S,
        retry_initial_s: float = RETRY_INITIAL_S,
        retry_max_s: float = RETRY_MAX_S,
        readers: int = READERS,
    ) -> None:
        self.path = Path(path)
        self.transactions = 0
        """Write transactions committed so far."""
        self._clock = clock
        self._timeout_s = timeout_s
        self._flush_timeout_s = flush_timeout_s
        self._max_batch = max_batch
        self._busy_timeout_s = busy_timeout_s
        self._unwritable_after_s = unwritable_after_s
        self._retry_initial_s = retry_initial_s
        self._retry_max_s = retry_max_s
        self._send, self._recv = trio.open_memory_channel[_Request[Any]](queue_size)
        self._writer: sqlite3.Connection | None = None
        self._readers = ReaderPool(readers, self._connect_reader)
        self._readable = False
        self._threads = trio.CapacityLimiter(1)
        """The writer's worker threads (one at a time): its own, not the process-wide one."""
        self._busy_ms = _ms(busy_timeout_s)
        self._identity: tuple[int, int] | None = None
        self._attempt: _Attempt | None = None
        self._inflight: list[_Request[Any]] = []
        self._started = False
        self._accepting = False
        # The writes kept in memory (in ticket order) and the health they make.
        self._tickets = itertools.count(1)
        self._kept: list[_Request[Any]] = []
        self._lost: list[_Request[Any]] = []
        self._problem: str | None = None
        self._kept_since: float | None = None
        self._retry_at = math.inf
        self._backoff = retry_initial_s
        self._gone = False
        self._gone_event = trio.Event()  # set while _gone
        self._written_late = 0
        self._progress = trio.lowlevel.ParkingLot()

    # -- health ----------------------------------------------------------------------------

    @property
    def write_problem(self) -> str | None:
        """What the latest write failure was (``PATH: database is locked``), while writes
        are kept or failing; ``None`` once the store writes again."""
        return self._problem

    @property
    def unwritable(self) -> str | None:
        """Why the store counts as unwritable and what is not written, e.g. ``PATH:
        database is locked; 3 event(s) of 1 goal(s) not written``: set once writes stayed
        kept for ``unwritable_after_s`` with none written, or the store closed with writes
        kept; ``None`` otherwise (again ``None`` if the store recovers before closing)."""
        if not self._gone:
            return None
        events = self.unwritten()
        others = sum(not request.rows for request in [*self._kept, *self._lost])
        counts = f"{len(events)} event(s) of {len({e.goal_id for e in events})} goal(s)"
        if others:
            counts += f" and {others} binding write(s)"
        return f"{self._problem or f'{self.path}: not written'}; {counts} not written"

    async def wait_unwritable(self) -> str:
        """Wait until the store is :attr:`unwritable`; why (see there)."""
        while True:
            await self._gone_event.wait()
            reason = self.unwritable
            if reason is not None:
                return reason

    def _set_gone(self, gone: bool) -> None:
        if gone and not self._gone:
            self._gone_event.set()
        elif not gone and self._gone:
            self._gone_event = trio.Event()
        self._gone = gone

    def unwritten(self) -> list[LedgerEntry]:
        """The events appended but not written (yet), in order, as ``pending`` entries:
        while the store cannot write, and after it closed without writing them."""
        return _pending(sorted([*self._lost, *self._kept], key=_ticket))

    async def wait_flushed(self, timeout_s: float) -> bool:
        """Wait (at most ``timeout_s``) until no write is queued or kept; whether every
        write so far is written."""
        with trio.move_on_after(timeout_s):
            while not self._settled():
                await self._progress.park()
        await trio.lowlevel.checkpoint()
        return self._settled() and not self._lost

    def _settled(self) -> bool:
        return not (self._kept or self._inflight or self._recv.statistics().current_buffer_used)

    # -- the service -----------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The writer service: open and migrate the database, then commit write batches
        (and retry kept writes) until cancelled; on the way out flush what is pending and
        close the file.

        Run it once, with ``await nursery.start(store.run)``.
        """
        if self._started:
            raise RuntimeError("SQLiteStore.run() can only be run once")
        self._started = True
        try:
            self._writer, reader = await trio.to_thread.run_sync(self._open, limiter=self._threads)
            self._readers.add(reader)
            self._readable = True
            self._accepting = True
            task_status.started()
            await self._serve()
        finally:
            self._accepting = False
            # Shielded: this runs because we are being cancelled, and the requests already
            # queued were promised a commit. The flush inside has its own deadline.
            with trio.CancelScope(shield=True):
                await self._shutdown()

    def _open(self) -> tuple[sqlite3.Connection, sqlite3.Connection]:
        # Runs in a worker thread: directory creation and file I/O.
        prepare_database_file(self.path)
        writer = _connect(self.path, self._busy_timeout_s)
        try:
            _migrate(writer, self.path, self._busy_timeout_s)
            reader = self._connect_reader()
        except BaseException:
            writer.close()
            raise
        try:
            self._identity = file_identity(self.path)
        except BaseException:
            reader.close()
            writer.close()
            raise
        return writer, reader

    def _connect_reader(self) -> sqlite3.Connection:
        """A read connection (blocking: in a worker thread)."""
        reader = _connect(self.path, self._busy_timeout_s)
        try:
            reader.execute("PRAGMA query_only = ON")
        except BaseException:
            reader.close()
            raise
        return reader

    async def _serve(self) -> None:
        while True:
            batch: list[_Request[Any]] = []
            with trio.move_on_at(self._wake_at()):
                batch.append(await self._recv.receive())
            self._drain_into(batch)
            await self._commit(batch)
            if self._kept and trio.current_time() >= self._retry_at:
                await self._flush_kept()
            self._check_unwritable()

    def _wake_at(self) -> float:
        """When the service must act without a request: the next retry, or the moment the
        kept writes make the store unwritable."""
        if not self._kept:
            return math.inf
        if self._gone or self._kept_since is None:
            return self._retry_at
        return min(self._retry_at, self._kept_since + self._unwritable_after_s)

    def _drain_into(self, batch: list[_Request[Any]]) -> None:
        # No checkpoint in here: whatever is queued right now joins this batch.
        while len(batch) < self._max_batch:
            try:
                batch.append(self._recv.receive_nowait())
            except trio.WouldBlock:
                return

    async def _commit(self, batch: list[_Request[Any]], *, deadline: float = math.inf) -> None:
        """Write new requests in one transaction; while writes are kept, the kinds that are
        kept join them instead (behind them: order is what the ledger means)."""
        if self._kept:
            for request in batch:
                if request.resilient:
                    self._keep(request)
            batch = [request for request in batch if not request.resilient]
        if batch:
            busy = min(self._busy_timeout_s, deadline - trio.current_time())
            await self._run_attempt(_Attempt(batch, flush=False, busy_ms=_ms(busy)))

    async def _flush_kept(self, *, deadline: float = math.inf) -> None:
        """Try to write the oldest kept writes. Reads wait meanwhile, so that a read sees
        each kept event once: in the file, or still kept (pending); the attempt waits
        briefly for a lock, which keeps that wait short."""
        busy = min(self._busy_timeout_s, RETRY_BUSY_TIMEOUT_S, deadline - trio.current_time())
        async with self._readers.exclusive(expected_s=busy):
            chunk = self._kept[: self._max_batch]
            await self._run_attempt(_Attempt(chunk, flush=True, busy_ms=_ms(busy)))

    async def _run_attempt(self, attempt: _Attempt) -> None:
        self._attempt, self._inflight = attempt, attempt.batch
        # Not abandonable: once started, the transaction finishes and every request in it
        # is settled, even if we are cancelled meanwhile (Cancelled then comes after).
        await _in_writer_thread(self._apply, attempt)
        self._settle()

    def _apply(self, attempt: _Attempt) -> None:
        """Run a batch in one transaction (in a worker thread)."""
        conn = self._writer
        assert conn is not None
        try:
            self._check_file()
            if conn.in_transaction:  # what a failed attempt may leave behind
                conn.execute("ROLLBACK")
            if attempt.busy_ms != self._busy_ms:
                conn.execute(f"PRAGMA busy_timeout = {attempt.busy_ms:d}")
                self._busy_ms = attempt.busy_ms
            conn.execute("BEGIN IMMEDIATE")
            for request in attempt.batch:
                # One savepoint per request: a failing request is undone alone...
                conn.execute("SAVEPOINT request")
                try:
                    request.result = request.op(conn)
                except Exception as exc:
                    # ...unless the store failed under it: then the whole batch did.
                    if is_operational(exc):
                        raise
                    conn.execute("ROLLBACK TO request")
                    conn.execute("RELEASE request")
                    request.error = exc
                else:
                    conn.execute("RELEASE request")
            conn.execute("COMMIT")
        except Exception as exc:
            # The transaction itself failed (disk full, I/O error, lock timeout...):
            # nothing of the batch is stored.
            if conn.in_transaction:
                with suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            for request in attempt.batch:
                request.result = None
                request.error = None
            attempt.failure = exc
        finally:
            attempt.finished = True

    def _check_file(self) -> None:
        """Refuse to write through a connection whose file is gone from its path: nobody
        would ever read what it writes."""
        if self._identity is not None and file_identity(self.path) != self._identity:
            raise replaced_error(str(self.path))

    def _settle(self) -> list[_Request[Any]]:
        """Settle the requests of the last attempt (once its thread finished, or when it
        was interrupted); return the new requests it never got to, to be tried again."""
        attempt, self._attempt, self._inflight = self._attempt, None, []
        if attempt is None:
            return []
        if not attempt.finished:  # cancelled before its thread started
            return [] if attempt.flush else attempt.batch
        now = trio.current_time()
        failure = attempt.failure
        if failure is None:
            self.transactions += 1
            if attempt.flush:
                self._written(attempt.batch)
            for request in attempt.batch:
                request.done.set()
            self._healthy(now)
        elif attempt.flush or is_operational(failure):
            self._failed(failure, now, retry=attempt.flush)
            for request in [] if attempt.flush else attempt.batch:
                if request.resilient:
                    self._keep(request)
                else:
                    request.error = _write_failed(self.path, failure)
                    request.done.set()
        else:
            for request in attempt.batch:
                request.error = _write_failed(self.path, failure)
                request.done.set()
        self._progress.unpark_all()
        return []

    def _written(self, batch: list[_Request[Any]]) -> None:
        """Kept writes were committed: they are kept no more."""
        written = {id(request) for request in batch}
        self._kept = [request for request in self._kept if id(request) not in written]
        for request in batch:
            request.kept = False
            if request.error is None:
                self._written_late += 1
            else:
                # Its operation failed by itself (a bug): nobody waits to be told.
                self._lost.append(request)
                log.error("%s: %s failed, not written: %r", self.path, request.what, request.error)

    def _healthy(self, now: float) -> None:
        """A transaction committed: the store writes."""
        if self._kept:
            # Progress: write the rest at once, and the clock of the outage starts over.
            self._kept_since = now
            self._retry_at = now
            self._backoff = self._retry_initial_s
            self._set_gone(False)
            return
        if self._problem is not None:
            late = self._written_late
            log.warning(
                "%s: writing again%s",
                self.path,
                f"; wrote the {late} write(s) kept in memory" if late else "",
            )
        self._problem = None
        self._kept_since = None
        self._retry_at = math.inf
        self._set_gone(False)
        self._written_late = 0

    def _failed(self, failure: BaseException, now: float, *, retry: bool) -> None:
        """A transaction failed for the store's trouble (or kept writes failed again)."""
        problem = f"{self.path}: {describe(failure)}"
        if self._problem is None:
            log.warning("%s (cannot write)", problem)
        if not is_operational(failure) and problem != self._problem:
            log.error("%s: kept writes fail: %r", self.path, failure)
        self._problem = problem
        if retry:
            self._retry_at = now + self._backoff
            self._backoff = next_backoff(self._backoff, maximum=self._retry_max_s)

    def _keep(self, request: _Request[Any]) -> None:
        """Keep a write in memory, in call order, and release its caller."""
        if not self._kept:
            now = trio.current_time()
            self._kept_since = now
            self._retry_at = now + self._retry_initial_s
            self._backoff = next_backoff(self._retry_initial_s, maximum=self._retry_max_s)
            log.warning("%s: keeping writes in memory until it can write them", self.path)
        bisect.insort(self._kept, request, key=_ticket)
        request.kept = True
        request.done.set()
        self._progress.unpark_all()

    def _check_unwritable(self) -> None:
        if (
            self._kept
            and not self._gone
            and self._kept_since is not None
            and trio.current_time() >= self._kept_since + self._unwritable_after_s
        ):
            self._set_gone(True)
            log.error("unwritable for %g s: %s", self._unwritable_after_s, self.unwritable)

    async def _shutdown(self) -> None:
        """Flush queued and kept writes (bounded by ``flush_timeout_s``), then close: what
        is still queued fails, unless it is of the kinds kept (then kept, and reported)."""
        pending = self._settle()
        deadline = trio.current_time() + self._flush_timeout_s
        with trio.move_on_at(deadline):
            while self._writer is not None:
                self._drain_into(pending)
                if pending:
                    batch, pending = pending, []
                    await self._commit(batch, deadline=deadline)
                elif not self._kept:
                    break
                else:
                    await trio.sleep_until(self._retry_at)
                    await self._flush_kept(deadline=deadline)
        # Past the deadline (or never opened): whatever is left fails or stays kept.
        pending.extend(self._settle())
        while True:
            try:
                pending.append(self._recv.receive_nowait())
            except trio.WouldBlock:
                break
        # Senders still blocked on a full queue get BrokenResourceError from here on.
        self._recv.close()
        for request in pending:
            if request.resilient:
                self._keep(request)
            else:
                request.error = StoreClosedError(f"{self.path}: store closed before commit")
                request.done.set()
        if self._kept or self._lost:
            self._set_gone(True)
            if self._problem is None:
                self._problem = f"{self.path}: closed before it could write"
            self._report_unwritten()
        self._progress.unpark_all()
        # Waits for the reads in flight (each bounded) before closing their connections.
        self._readable = False
        await self._readers.close(abandoned_timeout_s=self._flush_timeout_s)
        writer, self._writer = self._writer, None
        await trio.to_thread.run_sync(_close_all, writer, limiter=self._threads)

    def _report_unwritten(self) -> None:
        """Never silently: every write the store closes without, at error level."""
        for request in sorted([*self._lost, *self._kept], key=_ticket):
            if not request.rows:
                log.error("%s: not written: %s", self.path, request.what)
            for goal_id, _, kind, _ in request.rows:
                log.error("%s: not written: event %s of goal %s", self.path, kind, goal_id)
        log.error("closed unwritable: %s", self.unwritable)

    # -- plumbing for the operations -------------------------------------------------------

    async def _write(self, op: Callable[[sqlite3.Connection], T]) -> T:
        """Queue ``op`` for the writer and wait until its batch committed."""
        # A cancelled caller sees Cancelled, not StoreClosedError, even on a closing store.
        await trio.lowlevel.checkpoint_if_cancelled()
        if not self._accepting:
            raise StoreClosedError(f"{self.path}: store is not running")
        request = _Request(op)
        try:
            if self._timeout_s is None:
                await self._send.send(request)
                await request.done.wait()
            else:
                # The deadline costs about a third of the batched throughput (a cancel scope per
                # call); timeout_s=None trades it away.
                with trio.fail_after(self._timeout_s):
                    await self._send.send(request)
                    await request.done.wait()
        except trio.BrokenResourceError:
            raise StoreClosedError(f"{self.path}: store closed before commit") from None
        except trio.TooSlowError:
            # The request may still commit later: it is not taken back from the queue.
            raise StoreError(
                f"{self.path}: write not committed within {self._timeout_s} s"
            ) from None
        if request.error is not None:
            raise request.error
        return request.result  # type: ignore[return-value]  # settled without error

    async def _write_kept(self, request: _Request[Any]) -> bool:
        """Queue a write that must not be lost: True once committed, False once kept in
        memory (or still queued after ``timeout_s``); either way it will be written, in
        call order, before any later one. Bugs raise."""
        await trio.lowlevel.checkpoint_if_cancelled()
        if not self._accepting:
            raise StoreClosedError(f"{self.path}: store is not running")
        request.ticket = next(self._tickets)
        if self._kept:
            # Straight behind the kept writes, never past them.
            self._keep(request)
            await trio.lowlevel.cancel_shielded_checkpoint()
            return False
        wait = math.inf if self._timeout_s is None else self._timeout_s
        try:
            # The queue has room but for a full one: no deadline (a cancel scope) to set.
            self._send.send_nowait(request)
        except trio.WouldBlock:
            with trio.move_on_after(wait) as sending:
                try:
                    await self._send.send(request)
                except trio.BrokenResourceError:
                    raise StoreClosedError(f"{self.path}: store closed before commit") from None
            if sending.cancelled_caught:
                # The writer took no write for that long (a stuck disk, say): keep it.
                stuck = StoreError(f"the writer took no write for {wait:g} s")
                self._failed(stuck, trio.current_time(), retry=False)
                self._keep(request)
                return False
        except trio.BrokenResourceError:
            raise StoreClosedError(f"{self.path}: store closed before commit") from None
        if math.isinf(wait):
            await request.done.wait()
        else:
            with trio.move_on_after(wait):
                await request.done.wait()
        if request.error is not None:
            raise request.error
        return request.done.is_set() and not request.kept

    async def _read(
        self,
        fn: Callable[[sqlite3.Connection], T],
        then: Callable[[T], U] | None = None,
    ) -> T | U:
        """Run ``fn`` on a read connection in a worker thread, in call order (several side
        by side, never while kept writes are being written); ``then`` runs on the result
        before any retry of kept writes."""
        if not self._readable:
            await trio.lowlevel.checkpoint_if_cancelled()
            raise StoreClosedError(f"{self.path}: store is not running")
        bound = math.inf if self._timeout_s is None else self._timeout_s
        try:
            return await self._readers.read(fn, then, bound=bound)
        except ReadersClosed:
            raise StoreClosedError(f"{self.path}: store is not running") from None
        except ReadStuck:
            raise StoreError(
                f"{self.path}: read not started within {self._timeout_s} s "
                "(no read finished meanwhile: the store is stuck)"
            ) from None
        except ReadOverdue as exc:
            what = "abandoned to its thread" if exc.abandoned else "interrupted"
            raise StoreError(
                f"{self.path}: read not finished within {self._timeout_s} s ({what})"
            ) from None

    async def _stored_binding(self, goal_id: str, session_id: str) -> Binding | None:
        """The ``(goal_id, session_id)`` row in the file, ``None`` if none or unreadable."""

        def read(conn: sqlite3.Connection) -> Binding | None:
            row = conn.execute(
                f"SELECT {_BINDING_COLUMNS} FROM bindings WHERE goal_id = ? AND session_id = ?",
                (goal_id, session_id),
            ).fetchone()
            return None if row is None else _binding(row)

        try:
            return await self._read(read)
        except Exception as exc:
            if isinstance(exc, StoreError) or is_operational(exc):
                return None
            raise

    # -- Store -----------------------------------------------------------------------------

    async def get_binding(
        self,
        goal_id: str,
        *,
        idle_ttl_s: float | None = None,
        max_age_s: float | None = None,
    ) -> Binding | None:
        """The goal's current binding (see :class:`~nexo_trio.store.base.Binding`), or
        ``None`` if it has none or it is idle longer than ``idle_ttl_s`` (since
        ``last_active_at``) or older than ``max_age_s`` (since ``created_at``); exactly at a
        limit still counts."""

        def read(conn: sqlite3.Connection) -> Binding | None:
            row = conn.execute(_LATEST_BINDING, (goal_id,)).fetchone()
            return None if row is None else _binding(row)

        binding = await self._read(read)
        if binding is None or binding.invalid:
            return None
        now = self._clock()
        if not is_fresh(binding, now=now, idle_ttl_s=idle_ttl_s, max_age_s=max_age_s):
            return None
        return binding

    async def put_binding(
        self,
        goal_id: str,
        session_id: str,
        *,
        model: str | None = None,
        workspace: str | None = None,
    ) -> Binding:
        """Bind the goal to ``session_id``, which becomes its current binding; other rows
        of the goal are kept as they are. Returns the stored row (see
        :meth:`~nexo_trio.store.base.Store.put_binding`)."""
        now = self._clock()

        def op(conn: sqlite3.Connection) -> Binding:
            row = conn.execute(
                f"SELECT {_BINDING_COLUMNS} FROM bindings WHERE goal_id = ? AND session_id = ?",
                (goal_id, session_id),
            ).fetchone()
            binding = rebind(
                None if row is None else _binding(row),
                goal_id,
                session_id,
                model=model,
                workspace=workspace,
                now=now,
            )
            # REPLACE deletes the old row and inserts a new one, with a rowid above every
            # other row's: the rowid is the put sequence that breaks updated_at ties.
            conn.execute(
                f"INSERT OR REPLACE INTO bindings ({_BINDING_COLUMNS}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    binding.goal_id,
                    binding.session_id,
                    binding.model,
                    binding.workspace,
                    binding.created_at,
                    binding.updated_at,
                    binding.last_active_at,
                    int(binding.invalid),
                ),
            )
            return binding

        request = _Request(
            op, resilient=True, what=f"binding of goal {goal_id} to session {session_id}"
        )
        if await self._write_kept(request):
            assert request.result is not None
            return request.result
        # Kept (or still queued): the row it will be, as far as the file tells now.
        stored = await self._stored_binding(goal_id, session_id)
        return rebind(stored, goal_id, session_id, model=model, workspace=workspace, now=now)

    async def mark_invalid(self, goal_id: str, session_id: str) -> None:
        """Flag the goal's ``session_id`` row invalid, keeping it (and its times); a no-op
        if there is no such row."""

        def op(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE bindings SET invalid = 1 WHERE goal_id = ? AND session_id = ?",
                (goal_id, session_id),
            )

        what = f"invalid mark of goal {goal_id}'s session {session_id}"
        await self._write_kept(_Request(op, resilient=True, what=what))

    async def touch(self, goal_id: str) -> None:
        """Set the current binding's ``last_active_at`` to now; a no-op without one."""
        now = self._clock()

        def op(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE bindings SET last_active_at = ? "
                f"WHERE rowid = ({_LATEST_ROWID}) AND invalid = 0",
                (now, goal_id),
            )

        await self._write_kept(_Request(op, resilient=True, what=f"touch of goal {goal_id}"))

    async def list_bindings(
        self,
        *,
        include_invalid: bool = False,
        idle_ttl_s: float | None = None,
        max_age_s: float | None = None,
    ) -> list[Binding]:
        """The current binding of each goal that has one; with ``include_invalid``, every
        row instead (invalid and superseded ones too). Most recently active first,
        filtered like :meth:`get_binding`."""

        def read(conn: sqlite3.Connection) -> list[tuple[int, Binding]]:
            if include_invalid:
                sql = f"SELECT rowid, {_BINDING_COLUMNS} FROM bindings"
            else:
                # The latest row of each goal, if valid: no row of the goal comes after it.
                sql = f"""
                    SELECT b.rowid, {_qualified("b")} FROM bindings AS b
                    WHERE b.invalid = 0 AND NOT EXISTS (
                        SELECT 1 FROM bindings AS n
                        WHERE n.goal_id = b.goal_id
                          AND (n.updated_at > b.updated_at
                               OR (n.updated_at = b.updated_at AND n.rowid > b.rowid)))
                """
            return [(row[0], _binding(row[1:])) for row in conn.execute(sql).fetchall()]

        # Filtering and sorting in Python keeps the exact semantics of the memory store
        # (shared helpers) at no real cost.
        now = self._clock()
        rows = await self._read(read)
        return fresh_in_order(rows, now=now, idle_ttl_s=idle_ttl_s, max_age_s=max_age_s)

    async def purge_older_than(self, age_s: float) -> int:
        """Delete every row (of any goal, valid or not) not active for more than ``age_s``
        seconds; return how many."""
        cutoff = self._clock() - age_s

        def op(conn: sqlite3.Connection) -> int:
            return conn.execute("DELETE FROM bindings WHERE last_active_at < ?", (cutoff,)).rowcount

        return await self._write(op)

    async def append_events(
        self, goal_id: str, events: Sequence[tuple[str, dict[str, Any]]]
    ) -> None:
        """Append ``(kind, data)`` events of a goal to the ledger, in order, atomically.

        Returns once they are committed, or kept in memory to be written before any later
        write (the store cannot write now: see :attr:`write_problem`)."""
        # Encode here, in the caller: bad data fails its caller before anything is queued.
        now = self._clock()
        rows = [(goal_id, now, kind, encode_data(data).decode()) for kind, data in events]
        if not rows:
            await trio.lowlevel.checkpoint()
            return

        def op(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "INSERT INTO ledger (goal_id, at, kind, data) VALUES (?, ?, ?, ?)", rows
            )

        what = f"{len(rows)} event(s) of goal {goal_id}"
        await self._write_kept(_Request(op, resilient=True, what=what, rows=rows))

    async def events(self, goal_id: str, *, after_seq: int = 0) -> list[LedgerEntry]:
        """The goal's events with ``seq > after_seq``, in order; events kept in memory (not
        written yet) come last, ``pending``, with ``seq`` 0."""

        def read(conn: sqlite3.Connection) -> list[LedgerEntry]:
            rows = conn.execute(
                "SELECT seq, at, kind, data FROM ledger WHERE goal_id = ? AND seq > ? ORDER BY seq",
                (goal_id, after_seq),
            ).fetchall()
            return [
                LedgerEntry(seq=seq, goal_id=goal_id, at=at, kind=kind, data=decode_data(data))
                for seq, at, kind, data in rows
            ]

        def with_kept(entries: list[LedgerEntry]) -> list[LedgerEntry]:
            # While a read holds a connection no kept write is being written: each kept
            # event is in what was just read or still kept, never both, never neither.
            kept = [
                request
                for request in self._kept
                if request.rows[:1] and request.rows[0][0] == goal_id
            ]
            return entries + _pending(kept)

        return await self._read(read, with_kept)

    async def goals(self) -> list[GoalSummary]:
        """Every goal in the ledger, most recently active first."""

        def read(conn: sqlite3.Connection) -> list[GoalSummary]:
            # One statement, so one consistent snapshot. The outcome is the data of the
            # latest goal_completed after the latest goal_started (if any).
            rows = conn.execute(
                """
                SELECT g.goal_id, g.first_at, g.last_at, g.n, last.kind,
                    (SELECT c.data FROM ledger AS c
                     WHERE c.goal_id = g.goal_id AND c.kind = :completed
                       AND c.seq > COALESCE(
                           (SELECT MAX(s.seq) FROM ledger AS s
                            WHERE s.goal_id = g.goal_id AND s.kind = :started), 0)
                     ORDER BY c.seq DESC LIMIT 1)
                FROM (SELECT goal_id, MIN(at) AS first_at, MAX(at) AS last_at,
                             COUNT(*) AS n, MAX(seq) AS last_seq
                      FROM ledger GROUP BY goal_id) AS g
                JOIN ledger AS last ON last.seq = g.last_seq
                ORDER BY g.last_at DESC, g.last_seq DESC
                """,
                {"completed": GOAL_COMPLETED, "started": GOAL_STARTED},
            ).fetchall()
            return [
                GoalSummary(
                    goal_id=goal_id,
                    first_at=first_at,
                    last_at=last_at,
                    events=n,
                    last_kind=last_kind,
                    outcome=None if completed is None else outcome_kind(decode_data(completed)),
                )
                for goal_id, first_at, last_at, n, last_kind, completed in rows
            ]

        return await self._read(read)


def _close_all(*conns: sqlite3.Connection | None) -> None:
    for conn in conns:
        if conn is not None:
            conn.close()


@asynccontextmanager
async def open_sqlite_store(
    path: Path,
    *,
    clock: Callable[[], float] = time.time,
    timeout_s: float | None = 30.0,
    flush_timeout_s: float = 5.0,
    busy_timeout_s: float = BUSY_TIMEOUT_S,
    unwritable_after_s: float = UNWRITABLE_AFTER_S,
) -> AsyncIterator[SQLiteStore]:
    """A running :class:`SQLiteStore` on ``path`` (created 0600, with its parent directory
    0700 if missing), flushed and closed on exit (see :class:`SQLiteStore` for the options).

    Errors from opening (e.g. :class:`SchemaVersionError`) and from the body come out as
    themselves, not wrapped in an exception group: the nursery is an implementation detail.
    Writes the store could not make do not raise at exit: check :attr:`SQLiteStore.unwritable`
    (or :func:`raise_if_unwritable`) after it.
    """
    store = SQLiteStore(
        path,
        clock=clock,
        timeout_s=timeout_s,
        flush_timeout_s=flush_timeout_s,
        busy_timeout_s=busy_timeout_s,
        unwritable_after_s=unwritable_after_s,
    )
    # The writer stops when the body is over, not when an enclosing scope is cancelled:
    # code tearing down under that cancellation (in shielded scopes, say recording how a
    # goal ended) still needs it until the body exits.
    service = trio.CancelScope(shield=True)

    async def serve(*, task_status: trio.TaskStatus[None]) -> None:
        with service:
            await store.run(task_status=task_status)

    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(serve)
            try:
                yield store
            finally:
                service.cancel()
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1:
            _reraise_alone(group.exceptions[0])
        raise


def raise_if_unwritable(store: Store) -> None:
    """Raise :class:`StoreUnwritableError` if ``store`` is
    :attr:`~nexo_trio.store.base.Store.unwritable` (with the events it did not write)."""
    reason = store.unwritable
    if reason is not None:
        raise StoreUnwritableError(reason, store.unwritten())


def _reraise_alone(exc: BaseException) -> NoReturn:
    """Raise ``exc`` out of the group handler without chaining the group as its context
    (as trio's own ``nursery.start`` does)."""
    context = exc.__context__
    try:
        raise exc
    finally:
        exc.__context__ = context
        del exc, context


__all__ = [
    "BUSY_TIMEOUT_S",
    "MIGRATIONS",
    "SQLiteStore",
    "SchemaVersionError",
    "StoreClosedError",
    "StoreError",
    "StoreUnwritableError",
    "open_sqlite_store",
    "raise_if_unwritable",
]
