"""The SQLite :class:`~nexo_trio.store.base.Store`: the stdlib ``sqlite3`` behind one writer.

Shape::

    callers ──write request──▶ memory channel ──▶ run() service task
       ▲                                            │ drains everything pending,
       └──── Event set after COMMIT ◀───────────────┘ ONE transaction per batch
                                                      (trio.to_thread.run_sync)

    callers ──read──▶ trio.Lock ──▶ trio.to_thread.run_sync on the read connection

Why batching: a commit costs far more than a row, so concurrent goals writing their events
share commits instead of queueing one commit each. Each request runs inside its own
SAVEPOINT, so a failing request is rolled back alone and the rest of the batch commits.

The only threads are ``trio.to_thread`` calls, never abandoned: a statement that started
always finishes, which is what makes shutdown and cancellation safe to reason about.
"""

from __future__ import annotations

import math
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any, Generic, NoReturn, TypeVar

import trio

from nexo_trio.store.base import Binding, GoalSummary, LedgerEntry
from nexo_trio.store.memory import GOAL_COMPLETED, GOAL_STARTED, fresh_in_order, is_fresh, rebind
from nexo_trio.wire.ledger_rows import decode_data, encode_data, outcome_kind

T = TypeVar("T")

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

BUSY_TIMEOUT_S = 5.0
"""How long SQLite waits for a lock held by another process before failing."""


class StoreError(Exception):
    """A store operation failed."""


class StoreClosedError(StoreError):
    """The store's service is not running (not started yet, or shut down)."""


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


class _Request(Generic[T]):
    """One write: an operation to run on the writer connection, and its result slot."""

    __slots__ = ("done", "error", "op", "result", "settled")

    def __init__(self, op: Callable[[sqlite3.Connection], T]) -> None:
        self.op = op
        self.done = trio.Event()
        self.result: T | None = None
        self.error: BaseException | None = None
        # Set (in the worker thread) once the request is committed or failed for good.
        self.settled = False


def _connect(path: Path) -> sqlite3.Connection:
    # check_same_thread=False: trio.to_thread may run us on any cached worker thread; the
    # store guarantees that one connection is only ever used by one thread at a time.
    # isolation_level=None: we issue BEGIN / COMMIT ourselves.
    conn = sqlite3.connect(
        path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
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


def _migrate(conn: sqlite3.Connection, path: Path) -> None:
    supported = len(MIGRATIONS)
    # Refuse a newer database before changing anything in it (even the journal mode).
    _check_version(path, _user_version(conn), supported)
    conn.execute("PRAGMA journal_mode = WAL")
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
    which shows the batching at work.

    A write returns once its transaction committed. A write whose caller is cancelled
    (or times out) while waiting may still be committed (it is already in the queue); it
    is never half-applied.

    ``timeout_s`` bounds how long a caller waits for its write to commit, or for its turn
    to read (:class:`StoreError` after that); ``None`` waits as long as it takes.
    ``flush_timeout_s`` bounds the flush of queued writes at shutdown; what is still
    queued then fails with :class:`StoreClosedError`. ``max_batch`` caps the writes in
    one transaction and ``queue_size`` the writes waiting for one (senders wait beyond
    that).
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
    ) -> None:
        self.path = Path(path)
        self.transactions = 0
        """Write transactions committed so far."""
        self._clock = clock
        self._timeout_s = timeout_s
        self._flush_timeout_s = flush_timeout_s
        self._max_batch = max_batch
        self._send, self._recv = trio.open_memory_channel[_Request[Any]](queue_size)
        self._writer: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        self._read_lock = trio.Lock()
        self._inflight: list[_Request[Any]] = []
        self._started = False
        self._accepting = False

    # -- the service -----------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The writer service: open and migrate the database, then commit write batches
        until cancelled; on the way out flush what is pending and close the file.

        Run it once, with ``await nursery.start(store.run)``.
        """
        if self._started:
            raise RuntimeError("SQLiteStore.run() can only be run once")
        self._started = True
        try:
            self._writer, self._reader = await trio.to_thread.run_sync(self._open)
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
        self.path.parent.mkdir(parents=True, exist_ok=True)
        writer = _connect(self.path)
        try:
            _migrate(writer, self.path)
            reader = _connect(self.path)
        except BaseException:
            writer.close()
            raise
        try:
            reader.execute("PRAGMA query_only = ON")
        except BaseException:
            reader.close()
            writer.close()
            raise
        return writer, reader

    async def _serve(self) -> None:
        while True:
            batch = [await self._recv.receive()]
            self._drain_into(batch)
            await self._commit(batch)

    def _drain_into(self, batch: list[_Request[Any]]) -> None:
        # No checkpoint in here: whatever is queued right now joins this batch.
        while len(batch) < self._max_batch:
            try:
                batch.append(self._recv.receive_nowait())
            except trio.WouldBlock:
                return

    async def _commit(self, batch: list[_Request[Any]]) -> None:
        self._inflight = batch
        # Not abandonable: once started, the transaction finishes and every request in it
        # is settled, even if we are cancelled meanwhile (Cancelled then comes after).
        if await trio.to_thread.run_sync(self._apply, batch):
            self.transactions += 1
        self._inflight = []
        for request in batch:
            request.done.set()

    def _apply(self, batch: list[_Request[Any]]) -> bool:
        """Run a batch in one transaction (in a worker thread); True if it committed."""
        conn = self._writer
        assert conn is not None
        committed = False
        try:
            conn.execute("BEGIN IMMEDIATE")
            for request in batch:
                # One savepoint per request: a failing request is undone alone.
                conn.execute("SAVEPOINT request")
                try:
                    request.result = request.op(conn)
                except Exception as exc:
                    conn.execute("ROLLBACK TO request")
                    conn.execute("RELEASE request")
                    request.error = exc
                else:
                    conn.execute("RELEASE request")
            conn.execute("COMMIT")
            committed = True
        except Exception as exc:
            # The transaction itself failed (disk full, I/O error, lock timeout...):
            # nothing of the batch is stored and every caller learns it.
            if conn.in_transaction:
                with suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            for request in batch:
                request.result = None
                error = StoreError(f"{self.path}: write transaction failed: {exc!r}")
                error.__cause__ = exc
                request.error = error
        for request in batch:
            request.settled = True
        return committed

    async def _shutdown(self) -> None:
        """Flush queued writes (bounded by ``flush_timeout_s``), fail the rest, close."""
        pending = self._take_inflight()
        with trio.move_on_after(self._flush_timeout_s):
            while self._writer is not None:
                self._drain_into(pending)
                if not pending:
                    break
                batch, pending = pending, []
                await self._commit(batch)
        # Past the deadline (or never opened): whatever is left fails instead of hanging.
        pending.extend(self._take_inflight())
        while True:
            try:
                pending.append(self._recv.receive_nowait())
            except trio.WouldBlock:
                break
        # Senders still blocked on a full queue get BrokenResourceError from here on.
        self._recv.close()
        for request in pending:
            request.error = StoreClosedError(f"{self.path}: store closed before commit")
            request.settled = True
            request.done.set()
        # Wait for an in-flight read to finish before closing its connection.
        async with self._read_lock:
            reader, self._reader = self._reader, None
        writer, self._writer = self._writer, None
        await trio.to_thread.run_sync(_close_all, reader, writer)

    def _take_inflight(self) -> list[_Request[Any]]:
        """Wake the callers of an interrupted batch that did settle; return the rest."""
        batch, self._inflight = self._inflight, []
        for request in batch:
            if request.settled:
                request.done.set()
        return [r for r in batch if not r.settled]

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

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` on the read connection in a worker thread, one read at a time."""
        try:
            # Bounds the wait for the lock; a read that started always runs to its end.
            with trio.fail_after(math.inf if self._timeout_s is None else self._timeout_s):
                await self._read_lock.acquire()
        except trio.TooSlowError:
            raise StoreError(f"{self.path}: read not started within {self._timeout_s} s") from None
        try:
            conn = self._reader
            if conn is None:
                raise StoreClosedError(f"{self.path}: store is not running")
            return await trio.to_thread.run_sync(fn, conn)
        finally:
            self._read_lock.release()

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

        return await self._write(op)

    async def mark_invalid(self, goal_id: str, session_id: str) -> None:
        """Flag the goal's ``session_id`` row invalid, keeping it (and its times); a no-op
        if there is no such row."""

        def op(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE bindings SET invalid = 1 WHERE goal_id = ? AND session_id = ?",
                (goal_id, session_id),
            )

        await self._write(op)

    async def touch(self, goal_id: str) -> None:
        """Set the current binding's ``last_active_at`` to now; a no-op without one."""
        now = self._clock()

        def op(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE bindings SET last_active_at = ? "
                f"WHERE rowid = ({_LATEST_ROWID}) AND invalid = 0",
                (now, goal_id),
            )

        await self._write(op)

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
        """Append ``(kind, data)`` events of a goal to the ledger, in order, atomically."""
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

        await self._write(op)

    async def events(self, goal_id: str, *, after_seq: int = 0) -> list[LedgerEntry]:
        """The goal's events with ``seq > after_seq``, in order."""

        def read(conn: sqlite3.Connection) -> list[LedgerEntry]:
            rows = conn.execute(
                "SELECT seq, at, kind, data FROM ledger WHERE goal_id = ? AND seq > ? ORDER BY seq",
                (goal_id, after_seq),
            ).fetchall()
            return [
                LedgerEntry(seq=seq, goal_id=goal_id, at=at, kind=kind, data=decode_data(data))
                for seq, at, kind, data in rows
            ]

        return await self._read(read)

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
    path: Path, *, clock: Callable[[], float] = time.time
) -> AsyncIterator[SQLiteStore]:
    """A running :class:`SQLiteStore` on ``path`` (created with its parent directory if
    missing), flushed and closed on exit.

    Errors from opening (e.g. :class:`SchemaVersionError`) and from the body come out as
    themselves, not wrapped in an exception group: the nursery is an implementation detail.
    """
    store = SQLiteStore(path, clock=clock)
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
    "MIGRATIONS",
    "SQLiteStore",
    "SchemaVersionError",
    "StoreClosedError",
    "StoreError",
    "open_sqlite_store",
]
