"""The SQLite :class:`~nexo_trio.store.base.Store`: the stdlib ``sqlite3`` behind one writer.

A file in the state dir (WAL: readers side by side with the writer), written by the shared
machinery of :mod:`.batched` (one transaction per batch of writes, writes kept in memory
while the file cannot be written). What is SQLite's here: opening and migrating the file
(``PRAGMA user_version``), the busy timeout of a write transaction (``BEGIN IMMEDIATE``),
refusing to write to a file that was removed or replaced, and the SQL of each operation.
"""

from __future__ import annotations

import math
import sqlite3
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any, Unpack

import trio

from nexo_trio.store.base import CHANGES
from nexo_trio.store.batched import (
    BUSY_TIMEOUT_S,
    BatchedStore,
    SchemaVersionError,
    StoreClosedError,
    StoreError,
    StoreOptions,
    StoreUnwritableError,
    _Request,
    check_schema_version,
    raise_if_unwritable,
    serving,
)
from nexo_trio.store.faults import (
    replaced_error,
)
from nexo_trio.store.files import file_identity, prepare_database_file
from nexo_trio.store.ledger_sql import LedgerSql
from nexo_trio.store.shared import SHARED_TABLES_SQL, SharedSql
from nexo_trio.wire.ledger_rows import encode_data

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
    # v3: what orchestrators sharing the store coordinate with (see .shared): leases, the
    # goal queue, control requests.
    (
        *SHARED_TABLES_SQL,
        """
        CREATE TABLE controls (
            id          INTEGER PRIMARY KEY AUTOINCREMENT,
            goal_id     TEXT NOT NULL,
            request     TEXT NOT NULL,  -- JSON
            at          REAL NOT NULL,
            reply       TEXT,           -- JSON, once answered
            answered_at REAL,
            expires_at REAL NOT NULL  -- unanswered after this: never applied
        )
        """,
        "CREATE INDEX controls_waiting ON controls (id) WHERE reply IS NULL",
        """
        CREATE TABLE transcripts (
            goal_id    TEXT NOT NULL,
            session_id TEXT NOT NULL,
            data       BLOB NOT NULL,  -- the CLI's session file, gzip-compressed
            at         REAL NOT NULL,
            PRIMARY KEY (goal_id, session_id)
        )
        """,
    ),
)
"""Migration ``i`` takes the schema from version ``i`` to ``i + 1`` (``PRAGMA user_version``).
Append only: never edit a released step."""


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
    check_schema_version(path, _user_version(conn), supported)
    _enter_wal(conn, busy_timeout_s)
    conn.execute("BEGIN IMMEDIATE")
    try:
        found = _user_version(conn)  # again, under the write lock
        check_schema_version(path, found, supported)
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


class SQLiteStore(BatchedStore[sqlite3.Connection], LedgerSql, SharedSql):
    """Bindings and ledger in a SQLite file (WAL), written by one service task (see
    :class:`~nexo_trio.store.batched.BatchedStore` for the writer, the readers and the
    options).

    Start :meth:`run` in a nursery (``await nursery.start(store.run)``), or use
    :func:`open_sqlite_store`. The file's directory is created 0700, the file (and its
    ``-wal`` / ``-shm``) 0600. The store's own trouble, whose writes are kept (see
    :func:`~nexo_trio.store.faults.is_operational`): a lock held by another process past
    ``busy_timeout_s``, a full disk, an I/O error, the file removed or replaced.
    ``purge_older_than`` (an answer, not a record) fails with :class:`StoreError` like any
    read.
    """

    def __init__(self, path: Path, **options: Unpack[StoreOptions]) -> None:
        self.path = Path(path)
        super().__init__(str(self.path), **options)
        self._busy_ms = _ms(self._busy_timeout_s)
        self._identity: tuple[int, int] | None = None

    # -- hooks -----------------------------------------------------------------------------

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

    def _begin(self, conn: sqlite3.Connection, busy_ms: int) -> sqlite3.Connection:
        # Refuse to write through a connection whose file is gone from its path: nobody
        # would ever read what it writes.
        if self._identity is not None and file_identity(self.path) != self._identity:
            raise replaced_error(str(self.path))
        if conn.in_transaction:  # what a failed attempt may leave behind
            conn.execute("ROLLBACK")
        if busy_ms != self._busy_ms:
            conn.execute(f"PRAGMA busy_timeout = {busy_ms:d}")
            self._busy_ms = busy_ms
        conn.execute("BEGIN IMMEDIATE")
        return conn

    def _abort(self, conn: sqlite3.Connection) -> None:
        if conn.in_transaction:
            with suppress(sqlite3.Error):
                conn.execute("ROLLBACK")

    def _interrupt(self, conn: sqlite3.Connection) -> None:
        conn.interrupt()

    def _is_interrupted(self, exc: BaseException) -> bool:
        return isinstance(exc, sqlite3.OperationalError) and "interrupt" in str(exc)

    def _sql(self, conn: sqlite3.Connection, sql: str, params: dict[str, Any]) -> sqlite3.Cursor:
        return conn.execute(sql, params)

    def _lease_now(self, conn: sqlite3.Connection) -> float:
        return self._clock()

    def _notify(self, conn: sqlite3.Connection, what: str) -> None:
        """Nothing to do: a SQLite file has no listeners (:meth:`wait_changed` polls)."""

    def changes_seen(self) -> dict[str, int]:
        """A mark for :meth:`wait_changed` (a SQLite file hears nothing: empty)."""
        return {}

    async def wait_changed(
        self,
        timeout_s: float,
        what: Sequence[str] = CHANGES,
        *,
        since: Mapping[str, int] | None = None,
    ) -> None:
        """Return after ``timeout_s``, or :data:`POLL_S` if sooner: a file tells no one that
        it changed, so waiters look again that often."""
        await trio.sleep(max(0.0, min(timeout_s, POLL_S)))

    # -- Store -----------------------------------------------------------------------------

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


POLL_S = 0.2
"""How often those waiting for a change in a SQLite store look (``events --follow``, a
worker waiting for goals, a control request waiting for its answer)."""


def _ms(seconds: float) -> int:
    return max(0, math.ceil(seconds * 1000)) if math.isfinite(seconds) else 2**31 - 1


@asynccontextmanager
async def open_sqlite_store(
    path: Path, **options: Unpack[StoreOptions]
) -> AsyncIterator[SQLiteStore]:
    """A running :class:`SQLiteStore` on ``path`` (created 0600, with its parent directory
    0700 if missing), flushed and closed on exit (see :class:`SQLiteStore` for the options).

    Errors from opening (e.g. :class:`SchemaVersionError`) and from the body come out as
    themselves, not wrapped in an exception group: the nursery is an implementation detail.
    Writes the store could not make do not raise at exit: check :attr:`SQLiteStore.unwritable`
    (or :func:`raise_if_unwritable`) after it.
    """
    async with serving(SQLiteStore(path, **options)) as store:
        yield store


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
