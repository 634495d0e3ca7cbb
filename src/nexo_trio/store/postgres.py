"""The PostgreSQL :class:`~nexo_trio.store.base.SharedStore`: one database for many hosts.

The same machinery as the SQLite store (:mod:`.batched`: one writer connection committing
batches, a few read connections, writes the goals depend on kept in memory while the server
cannot be reached), over ``psycopg`` 3 in worker threads. What is PostgreSQL's here:

- Connections reconnect by themselves (:class:`_Link`): a server restart or a dropped
  connection fails the transaction in flight (kept and retried, like a locked SQLite file)
  and the next attempt opens a new connection.
- A write waits at most the busy timeout for another's row lock (``lock_timeout``); a read
  runs at most the store's timeout (``statement_timeout``: the server ends it).
- The schema is created and migrated under an advisory lock, so workers starting together
  do not race; a database of a newer nexo-trio is refused.
- Leases are kept on the server's clock, so hosts whose clocks differ agree on expiry.
- Every write that others may wait for (events, submits, finishes, controls, leases given
  up) ends with ``NOTIFY nexo_changed, 'WHAT'`` (``events``, ``queue``, ``controls``),
  delivered at commit. One listener connection per store, opened at the first
  :meth:`wait_changed`, wakes the waiters of each kind; every waiter looks again after its
  bound anyway, so a lost notification only delays.

``psycopg`` is an optional dependency (``pip install 'nexo-trio[postgres]'``): importing this
module without it raises :class:`PostgresMissingError` with that advice.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, Final, TypeVar, Unpack

import trio

from nexo_trio.store.base import CHANGES, EVENTS
from nexo_trio.store.batched import (
    BatchedStore,
    SchemaVersionError,
    StoreError,
    StoreOptions,
    _Request,
    check_schema_version,
    reraise_alone,
    serving,
)
from nexo_trio.store.faults import is_operational
from nexo_trio.store.ledger_sql import BINDING_COLUMNS, LedgerSql
from nexo_trio.store.shared import SHARED_TABLES_SQL, SharedSql
from nexo_trio.store.urls import redact_url
from nexo_trio.wire.ledger_rows import encode_data

log = logging.getLogger("nexo_trio.store")

T = TypeVar("T")
U = TypeVar("U")


STALLED_WRITER_MS: Final = 5_000
"""How long the server lets the writer's transaction sit idle before it ends it (a writer
process stopped mid-transaction); far above a batch's gaps between statements."""


class PostgresMissingError(StoreError):
    """A ``postgresql://`` store was asked for, and psycopg is not installed."""


try:
    import psycopg
    import psycopg.errors
    import psycopg.pq
except ImportError as exc:  # pragma: no cover - the test environment has it
    raise PostgresMissingError(
        "a postgresql:// store needs psycopg 3: pip install 'nexo-trio[postgres]'"
    ) from exc

CHANNEL = "nexo_changed"
"""The ``LISTEN`` / ``NOTIFY`` channel of the store's changes."""

CONNECT_TIMEOUT_S = 10
"""How long opening a connection may take."""

LISTEN_POLL_S = 0.5
"""How long the listener's thread waits for a notification at a time (what a shutdown may
wait for it)."""

_MIGRATION_LOCK = 0x6E65786F  # "nexo": the advisory lock migrations take

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # v1: bindings, the ledger, leases, the goal queue, control requests.
    (
        "CREATE SEQUENCE binding_puts",
        """
        CREATE TABLE bindings (
            goal_id        TEXT NOT NULL,
            session_id     TEXT NOT NULL,
            model          TEXT,
            workspace      TEXT,
            created_at     DOUBLE PRECISION NOT NULL,
            updated_at     DOUBLE PRECISION NOT NULL,
            last_active_at DOUBLE PRECISION NOT NULL,
            invalid        BOOLEAN NOT NULL DEFAULT FALSE,
            put_seq        BIGINT NOT NULL DEFAULT nextval('binding_puts'),
            PRIMARY KEY (goal_id, session_id)
        )
        """,
        "CREATE INDEX bindings_goal_latest ON bindings (goal_id, updated_at DESC, put_seq DESC)",
        """
        CREATE TABLE ledger (
            seq     BIGSERIAL PRIMARY KEY,
            goal_id TEXT NOT NULL,
            at      DOUBLE PRECISION NOT NULL,
            kind    TEXT NOT NULL,
            data    TEXT NOT NULL  -- JSON (orjson), exactly as encoded
        )
        """,
        "CREATE INDEX ledger_goal_seq ON ledger (goal_id, seq)",
        *SHARED_TABLES_SQL,
        """
        CREATE TABLE controls (
            id          BIGSERIAL PRIMARY KEY,
            goal_id     TEXT NOT NULL,
            request     TEXT NOT NULL,
            at          DOUBLE PRECISION NOT NULL,
            reply       TEXT,
            answered_at DOUBLE PRECISION,
            expires_at DOUBLE PRECISION NOT NULL  -- unanswered after this: never applied
        )
        """,
        "CREATE INDEX controls_waiting ON controls (id) WHERE reply IS NULL",
        """
        CREATE TABLE transcripts (
            goal_id    TEXT NOT NULL,
            session_id TEXT NOT NULL,
            data       BYTEA NOT NULL,
            at         DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (goal_id, session_id)
        )
        """,
    ),
)
"""Migration ``i`` takes the schema from version ``i`` to ``i + 1`` (the ``nexo_schema``
table). Append only: never edit a released step."""


def _next_notifications(link: _Link, timeout_s: float) -> set[str]:
    """The payloads of the notifications that come within ``timeout_s`` (blocking): the
    first one, and any others already there."""
    heard: set[str] = set()
    conn = link.conn
    for notify in conn.notifies(timeout=timeout_s, stop_after=1):
        heard.add(notify.payload)
    if heard:
        for notify in conn.notifies(timeout=0.0):
            heard.add(notify.payload)
    return heard


class _Link:
    """A connection that reconnects: the store's writer and each reader hold one.

    ``conn`` is the live psycopg connection (opened again after it broke); the store uses
    one link from one thread at a time."""

    def __init__(self, url: str, options: str, *, on_connect: str | None = None) -> None:
        self.url = url
        self.options = options
        self.on_connect = on_connect
        """A statement run on every new connection (the listener's ``LISTEN``)."""
        self._conn: psycopg.Connection[Any] | None = None

    @property
    def conn(self) -> psycopg.Connection[Any]:
        """The connection, opened (again) if needed (blocking)."""
        conn = self._conn
        if conn is None or conn.closed or conn.broken:
            if conn is not None:
                with contextlib.suppress(psycopg.Error):
                    conn.close()
            self._conn = None
            conn = self._conn = psycopg.connect(
                self.url,
                autocommit=True,  # the store issues BEGIN / COMMIT itself
                connect_timeout=CONNECT_TIMEOUT_S,
                options=self.options,
                application_name="nexo-trio",
            )
            if self.on_connect is not None:
                conn.execute(self.on_connect)
        return conn

    def execute(self, sql: str, params: Any = None) -> psycopg.Cursor[Any]:
        """Run one statement on the connection."""
        return self.conn.execute(sql, params)

    def in_transaction(self) -> bool:
        """Whether a transaction is open (or failed and not rolled back)."""
        conn = self._conn
        if conn is None or conn.closed or conn.broken:
            return False
        return conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE

    def close(self) -> None:
        """Close the connection, if open."""
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                conn.close()


_NAMED = re.compile(r"(?<!:):([A-Za-z_][A-Za-z0-9_]*)")


def _pyformat(sql: str) -> str:
    """``:name`` parameters as psycopg's ``%(name)s``."""
    return _NAMED.sub(r"%(\1)s", sql)


class PostgresStore(BatchedStore[_Link], LedgerSql, SharedSql):
    """Bindings, ledger, leases, the goal queue and control requests in a PostgreSQL
    database (``url``: ``postgresql://user[:password]@host[:port]/db``), shared by any
    number of processes on any number of hosts.

    Options as :class:`~nexo_trio.store.batched.BatchedStore`'s. ``clock`` is the clock of
    bindings and event times; leases use the server's clock unless ``lease_clock`` is
    given (tests). The store's own trouble, whose writes are kept: the server unreachable
    or restarting, a dropped connection, a lock held past ``busy_timeout_s``, a full disk
    (psycopg's ``OperationalError``)."""

    _SKIP_LOCKED = "FOR UPDATE OF q SKIP LOCKED"
    _PUT_SEQ = "put_seq"
    _APPENDED_BLOB = "data || :data"
    _UPSERT_BINDING = (
        f"INSERT INTO bindings ({BINDING_COLUMNS}) VALUES (:goal_id, :session_id, :model, "
        ":workspace, :created_at, :updated_at, :last_active_at, :invalid) "
        "ON CONFLICT (goal_id, session_id) DO UPDATE SET model = excluded.model, "
        "workspace = excluded.workspace, created_at = excluded.created_at, "
        "updated_at = excluded.updated_at, last_active_at = excluded.last_active_at, "
        "invalid = excluded.invalid, put_seq = nextval('binding_puts')"
    )
    """A put takes a new ``put_seq``: the sequence that breaks ``updated_at`` ties."""
    _LOCK_ROW = " FOR UPDATE"

    shared_by_hosts = True
    """Orchestrators on many hosts use it: they lease their goals and take control
    requests from it (:mod:`nexo_trio.orchestrator.leases`)."""

    def __init__(
        self,
        url: str,
        *,
        lease_clock: Callable[[], float] | None = None,
        **options: Unpack[StoreOptions],
    ) -> None:
        self.url = url
        super().__init__(redact_url(url), **options)
        self._lease_clock = lease_clock
        self._lock_ms: int | None = None
        self._lock_conn: psycopg.Connection[Any] | None = None
        """The writer connection ``lock_timeout`` was set on (a new one needs it again)."""
        self.fence_owner: str | None = None
        """The lease owner this store's appends are fenced by (set by the orchestrator that
        leases goals through it): events of a goal whose lease row is not this owner's are
        not written (kept in :attr:`fenced`), so a stalled run whose goal was taken over
        cannot write into the new run's ledger."""
        self.fenced: list[tuple[str, float, str, str]] = []
        """Ledger rows refused by the fence: ``(goal_id, at, kind, data)``."""
        self._wanted = trio.Event()
        """Set at the first :meth:`wait_changed`: the listener connects then."""
        self._generations = dict.fromkeys(CHANGES, 0)
        self._changed = trio.lowlevel.ParkingLot()

    # -- hooks -----------------------------------------------------------------------------

    def _open(self) -> tuple[_Link, _Link]:
        # A writer stopped mid-transaction (SIGSTOP, a frozen VM) would hold the lease rows
        # its appends locked (see append_events): the server ends such a transaction, so
        # another orchestrator can take the goal over; the write is then retried, fenced.
        writer = _Link(self.url, f"-c idle_in_transaction_session_timeout={STALLED_WRITER_MS:d}")
        try:
            self._migrate(writer)
            reader = self._connect_reader()
        except psycopg.OperationalError as exc:
            writer.close()
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise StoreError(f"{self.where}: cannot open: {first}") from None
        except BaseException:
            writer.close()
            raise
        return writer, reader

    def _migrate(self, link: _Link) -> None:
        supported = len(MIGRATIONS)
        link.execute("BEGIN")
        try:
            link.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            link.execute("CREATE TABLE IF NOT EXISTS nexo_schema (version INTEGER NOT NULL)")
            row = link.execute("SELECT max(version) FROM nexo_schema").fetchone()
            found = 0 if row is None or row[0] is None else int(row[0])
            check_schema_version(self.where, found, supported)
            for version in range(found, supported):
                for statement in MIGRATIONS[version]:
                    link.execute(statement)
                link.execute("INSERT INTO nexo_schema (version) VALUES (%s)", (version + 1,))
            link.execute("COMMIT")
        except BaseException:
            if link.in_transaction():
                with contextlib.suppress(psycopg.Error):
                    link.execute("ROLLBACK")
            raise

    def _connect_reader(self) -> _Link:
        options = "-c default_transaction_read_only=on"
        if self._timeout_s is not None and math.isfinite(self._timeout_s):
            options += f" -c statement_timeout={max(1, math.ceil(self._timeout_s * 1000))}"
        link = _Link(self.url, options)
        link.conn  # noqa: B018 - connect now, in this thread
        return link

    def _begin(self, conn: _Link, busy_ms: int) -> _Link:
        if conn.in_transaction():  # what a failed attempt may leave behind
            conn.execute("ROLLBACK")
        fresh = conn.conn  # reconnects if it broke
        if busy_ms != self._lock_ms or fresh is not self._lock_conn:
            conn.execute(f"SET lock_timeout = {max(1, busy_ms):d}")
            self._lock_ms, self._lock_conn = busy_ms, fresh
        conn.execute("BEGIN")
        return conn

    def _abort(self, conn: _Link) -> None:
        if conn.in_transaction():
            with contextlib.suppress(psycopg.Error):
                conn.execute("ROLLBACK")

    def _is_operational(self, exc: BaseException) -> bool:
        return isinstance(exc, psycopg.OperationalError) or is_operational(exc)

    # No _interrupt: the pool calls it on the event loop, and a cancel request is a
    # network round trip. The server ends an overdue read by itself: the readers'
    # statement_timeout is the read bound.

    def _is_interrupted(self, exc: BaseException) -> bool:
        return isinstance(exc, psycopg.errors.QueryCanceled)

    def _sql(self, conn: _Link, sql: str, params: dict[str, Any]) -> psycopg.Cursor[Any]:
        return conn.execute(_pyformat(sql), params)

    def _lease_now(self, conn: _Link) -> float:
        if self._lease_clock is not None:
            return self._lease_clock()
        row = conn.execute("SELECT extract(epoch FROM clock_timestamp())::float8").fetchone()
        assert row is not None
        return float(row[0])

    def _notify(self, conn: _Link, what: str) -> None:
        conn.execute(f"NOTIFY {CHANNEL}, '{what}'")  # what: one of CHANGES, ours

    def changes_seen(self) -> dict[str, int]:
        """A mark of the changes heard so far, for :meth:`wait_changed`'s ``since``."""
        self._wanted.set()
        return dict(self._generations)

    async def wait_changed(
        self,
        timeout_s: float,
        what: Sequence[str] = CHANGES,
        *,
        since: Mapping[str, int] | None = None,
    ) -> None:
        """Return once a ``NOTIFY`` of ``what`` comes (any process's write) after
        ``since`` (a :meth:`changes_seen` mark: a change heard in between returns at
        once; default: now), or after ``timeout_s``. The store's one listener connection
        serves every waiter of the process; it is opened at the first wait or mark. While
        it cannot connect, waiters just wait their time out (and look again anyway)."""
        self._wanted.set()
        wanted = set(what)
        seen = since if since is not None else self._generations
        marks = {name: seen.get(name, 0) for name in wanted}
        with trio.move_on_after(max(0.0, timeout_s)):
            while all(self._generations[name] == marks[name] for name in wanted):
                await self._changed.park()
        await trio.lowlevel.checkpoint()

    def _heard(self, payloads: set[str]) -> None:
        """Notifications came: wake the waiters of each (an empty payload: of all)."""
        for name in CHANGES if "" in payloads else payloads & set(CHANGES):
            self._generations[name] += 1
        self._changed.unpark_all()

    async def _listen(self) -> None:
        """The listener service: once someone waits, ``LISTEN`` on a connection of its own
        and hand each notification to the waiters; reconnect (after a second) when the
        connection breaks. Never raises: the writer beside it must not be cancelled."""
        await self._wanted.wait()
        link = _Link(self.url, "", on_connect=f"LISTEN {CHANNEL}")
        try:
            while True:
                try:
                    heard = await trio.to_thread.run_sync(_next_notifications, link, LISTEN_POLL_S)
                except psycopg.Error as exc:
                    log.warning("%s: listener: %s (waiters poll meanwhile)", self.where, exc)
                    await trio.to_thread.run_sync(link.close)
                    await trio.sleep(1.0)
                    continue
                if heard:
                    self._heard(heard)
        finally:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(link.close)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The writer service (see :meth:`BatchedStore.run`) and, beside it, the listener
        of :meth:`wait_changed`."""
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._listen)
                await super().run(task_status=task_status)
        except BaseExceptionGroup as group:
            # The listener never raises: what comes out is the writer's (an open that
            # failed, say), and it comes out as itself, as the SQLite store's does.
            if len(group.exceptions) == 1:
                reraise_alone(group.exceptions[0])
            raise

    async def _read(self, fn: Callable[[_Link], T], then: Callable[[T], U] | None = None) -> T | U:
        """A read (see :meth:`BatchedStore._read`); the server's or the connection's
        failure is a :class:`StoreError` naming the database, as a SQLite read's is."""
        try:
            return await super()._read(fn, then)
        except psycopg.Error as exc:
            text = str(exc).strip()
            first = text.splitlines()[0] if text else type(exc).__name__
            raise StoreError(f"{self.where}: read failed: {first}") from exc

    # -- Store -----------------------------------------------------------------------------

    async def append_events(
        self, goal_id: str, events: Sequence[tuple[str, dict[str, Any]]]
    ) -> None:
        """Append ``(kind, data)`` events of a goal to the ledger, in order, atomically;
        returns once committed, or kept in memory to be written before any later write."""
        now = self._clock()
        rows = [(goal_id, now, kind, encode_data(data).decode()) for kind, data in events]
        if not rows:
            await trio.lowlevel.checkpoint()
            return

        fence = self.fence_owner

        def op(conn: _Link) -> None:
            if fence is not None:
                # The lease row, live or not: ours until we release it, even if a renewal
                # came late. Gone or someone else's: another orchestrator took the goal
                # over (this one stalled past its lease), and this run's events must not
                # mix with the new run's.
                # FOR SHARE: held to the commit, so a takeover (which updates the row) waits
                # for these rows to be in or out; a check without it let a writer stalled
                # between the check and the INSERT append after the new run's end.
                row = conn.execute(
                    "SELECT owner FROM leases WHERE goal_id = %s FOR SHARE", (goal_id,)
                ).fetchone()
                if row is None or row[0] != fence:
                    self.fenced.extend(rows)
                    holder = "nobody's" if row is None else f"{row[0]}'s"
                    log.error(
                        "%s: %d event(s) of goal %s not written: its lease is %s",
                        self.where,
                        len(rows),
                        goal_id,
                        holder,
                    )
                    return
            with conn.conn.cursor() as cursor:
                cursor.executemany(
                    "INSERT INTO ledger (goal_id, at, kind, data) VALUES (%s, %s, %s, %s)", rows
                )
            self._notify(conn, EVENTS)

        what = f"{len(rows)} event(s) of goal {goal_id}"
        await self._write_kept(_Request(op, resilient=True, what=what, rows=rows))


@asynccontextmanager
async def open_postgres_store(
    url: str,
    *,
    lease_clock: Callable[[], float] | None = None,
    **options: Unpack[StoreOptions],
) -> AsyncIterator[PostgresStore]:
    """A running :class:`PostgresStore` on ``url`` (its schema created or migrated),
    flushed and closed on exit. A server that cannot be reached, or a database of a newer
    nexo-trio, raises a :class:`StoreError` naming the URL (without its password)."""
    async with serving(PostgresStore(url, lease_clock=lease_clock, **options)) as store:
        yield store


__all__ = [
    "CHANNEL",
    "MIGRATIONS",
    "PostgresMissingError",
    "PostgresStore",
    "SchemaVersionError",
    "open_postgres_store",
]
