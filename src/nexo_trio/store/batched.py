"""One writer and a few readers over a database connection: the stores' shared machinery.

Shape::

    callers ──write request──▶ memory channel ──▶ run() service task
       ▲                                            │ drains everything pending,
       └──── Event set after COMMIT ◀───────────────┘ ONE transaction per batch
                                                      (a worker thread of trio's cache)

    callers ──read──▶ FIFO queue ──▶ one of a few read connections, side by side,
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

When the database cannot be written (a lock another process holds past the busy timeout, a
full disk, an I/O error, the file removed, the server gone), the writes the goals depend on
are not failed but *kept*::

    append / bindings ──▶ queue ──▶ transaction fails (operational) ──▶ kept, in call order
          │ (while writes are kept: straight behind them)                 │
          └──────────────────────────────────────────────────────────────▶│
                              retry: 50 ms, doubling to 5 s ◀─────────────┘
                              writes the oldest kept first, then the rest

A read sees every kept event exactly once (retries hold off reads): in the database, or
last, ``pending``. Health: :attr:`BatchedStore.write_problem`, :attr:`BatchedStore.unwritable`.

A database is plugged in by subclassing :class:`BatchedStore` with its hooks (open, connect a
reader, begin a write transaction, what counts as operational) and its operations (the
:class:`~nexo_trio.store.base.Store` methods, as SQL run through :meth:`_write`,
:meth:`_write_kept` and :meth:`_read`): :mod:`.sqlite` and :mod:`.postgres`.
"""

from __future__ import annotations

import abc
import bisect
import itertools
import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from functools import partial
from typing import TYPE_CHECKING, Any, Generic, NoReturn, Protocol, TypedDict, TypeVar

import trio

from nexo_trio.store.base import LedgerEntry, Store
from nexo_trio.store.faults import (
    RETRY_BUSY_TIMEOUT_S,
    RETRY_INITIAL_S,
    RETRY_MAX_S,
    UNWRITABLE_AFTER_S,
    describe,
    is_operational,
    next_backoff,
)
from nexo_trio.store.readers import ReaderPool, ReadersClosed, ReadOverdue, ReadStuck
from nexo_trio.wire.ledger_rows import decode_data

if TYPE_CHECKING:
    import outcome

T = TypeVar("T")
U = TypeVar("U")


class Connection(Protocol):
    """What the machinery itself does with a connection (both DB-API drivers have it)."""

    def execute(self, sql: str, /) -> Any:
        """Run one statement."""

    def close(self) -> None:
        """Close the connection."""


C = TypeVar("C", bound=Connection)

log = logging.getLogger("nexo_trio.store")

READERS = 4
"""Read connections a store opens at most (on demand): reads beyond run in turn."""

BUSY_TIMEOUT_S = 5.0
"""How long a write waits for a lock held by another process or connection before it fails
(a write the goals depend on is then kept in memory and retried)."""


class StoreError(Exception):
    """A store operation failed."""


class StoreClosedError(StoreError):
    """The store's service is not running (not started yet, or shut down)."""


class SchemaVersionError(StoreError):
    """The database was written by a newer nexo-trio than this one (``path``: the file, or
    the database's URL without its password)."""

    def __init__(self, path: object, found: int, supported: int) -> None:
        super().__init__(
            f"{path}: database schema version {found} is newer than this nexo-trio supports "
            f"(version {supported}); upgrade nexo-trio or use another store"
        )
        self.path = path
        self.found = found
        self.supported = supported


def check_schema_version(path: object, found: int, supported: int) -> None:
    """Refuse (:class:`SchemaVersionError`) a database of a newer schema than ``supported``."""
    if found > supported:
        raise SchemaVersionError(path, found, supported)


class StoreOptions(TypedDict, total=False):
    """The options every store takes (see :class:`BatchedStore`)."""

    clock: Callable[[], float]
    timeout_s: float | None
    flush_timeout_s: float
    max_batch: int
    queue_size: int
    busy_timeout_s: float
    unwritable_after_s: float
    retry_initial_s: float
    retry_max_s: float
    readers: int


class StoreUnwritableError(StoreError):
    """The store could not write for good: ``reason`` (what :attr:`SQLiteStore.unwritable`
    says) and the events it did not write, in order (``pending`` entries)."""

    def __init__(self, reason: str, unwritten: Sequence[LedgerEntry] = ()) -> None:
        super().__init__(reason)
        self.reason = reason
        self.unwritten = list(unwritten)


_Row = tuple[str, float, str, str]
"""A ledger row as inserted: ``(goal_id, at, kind, data as JSON)``."""


class _Request(Generic[T]):
    """One write: an operation to run on the writer connection, and its result slot.

    A *kept* request is one the store could not write yet: it waits in memory, in call
    order (``ticket``), and its caller no longer waits for it (it was told)."""

    __slots__ = ("done", "error", "kept", "op", "resilient", "result", "rows", "ticket", "what")

    def __init__(
        self,
        op: Callable[[Any], T],
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


def pending_entries(requests: Iterable[_Request[Any]]) -> list[LedgerEntry]:
    """The events of (kept) requests, as ``pending`` ledger entries."""
    return [
        LedgerEntry(seq=0, goal_id=goal_id, at=at, kind=kind, data=decode_data(data), pending=True)
        for request in requests
        for goal_id, at, kind, data in request.rows
    ]


def _write_failed(where: str, exc: BaseException) -> StoreError:
    error = StoreError(f"{where}: write transaction failed: {exc!r}")
    error.__cause__ = exc
    return error


class BatchedStore(abc.ABC, Generic[C]):
    """A :class:`~nexo_trio.store.base.Store`'s writer and readers over connections ``C``.

    Start :meth:`run` in a nursery (``await nursery.start(store.run)``), or use
    :func:`serving`. ``transactions`` counts the write transactions committed, which shows
    the batching at work.

    A write returns once its transaction committed. A write whose caller is cancelled
    (or times out) while waiting may still be committed (it is already in the queue); it
    is never half-applied.

    The writes the goals depend on (``append_events``, ``put_binding``, ``mark_invalid``,
    ``touch``) never fail for the store's own trouble (:meth:`_is_operational`): they are
    *kept* in memory, in call order, and return. While any write is kept, later ones go
    straight behind it. The service retries the kept writes, the oldest first, after
    ``retry_initial_s``, doubling up to ``retry_max_s``; reads show kept events last, as
    ``pending``. :attr:`write_problem` says what fails; :attr:`unwritable` is set once
    writes have stayed kept for ``unwritable_after_s`` with none written, or the store
    closed with writes kept: each is then logged at error level, and the events stay
    available from :meth:`unwritten`. Bugs raise: data that is not JSON, a closed store,
    an operation that fails by itself.

    ``timeout_s`` bounds how long a caller waits for its write to commit (a kept kind of
    write then returns, still queued); a read waits in turn as long as reads progress, and
    fails with :class:`StoreError` once none finished for ``timeout_s`` or once it ran
    ``timeout_s`` itself (interrupted; abandoned to its thread if it does not return
    within :data:`~nexo_trio.store.readers.INTERRUPT_GRACE_S`); ``None`` waits as long as
    it takes. ``readers`` is how many read connections run reads side by side.
    ``flush_timeout_s`` bounds the flush of queued and kept writes at close; queued writes
    that may fail then fail with :class:`StoreClosedError`, the others stay kept (and are
    reported). ``max_batch`` caps the writes in one transaction and ``queue_size`` the
    writes waiting for one (senders wait beyond that). ``busy_timeout_s`` is how long a
    write transaction waits for another's lock.
    """

    where: str
    """The database, as messages name it (a path, a URL without its password)."""

    def __init__(
        self,
        where: str,
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
        self.where = where
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
        self._writer: C | None = None
        self._readers = ReaderPool(
            readers, self._connect_reader, self._interrupt, self._is_interrupted
        )
        self._readable = False
        self._threads = trio.CapacityLimiter(1)
        """The writer's worker threads (one at a time): its own, not the process-wide one."""
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
        return f"{self._problem or f'{self.where}: not written'}; {counts} not written"

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
        return pending_entries(sorted([*self._lost, *self._kept], key=_ticket))

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
            raise RuntimeError(f"{type(self).__name__}.run() can only be run once")
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

    # -- the database's hooks (blocking ones run in a worker thread) ------------------------

    @abc.abstractmethod
    def _open(self) -> tuple[C, C]:
        """Open (and create or migrate) the database: the writer and a first reader."""

    @abc.abstractmethod
    def _connect_reader(self) -> C:
        """A new read connection."""

    @abc.abstractmethod
    def _begin(self, conn: C, busy_ms: int) -> C:
        """Start a write transaction on the writer ``conn`` (undoing what a failed attempt
        left), waiting at most ``busy_ms`` for another's lock; return the connection to
        run it on (a new one if ``conn`` broke)."""

    @abc.abstractmethod
    def _abort(self, conn: C) -> None:
        """Roll back whatever transaction a failed attempt left open, ignoring errors."""

    def _is_operational(self, exc: BaseException) -> bool:
        """Whether ``exc`` is the database's trouble (keep and retry), not a bug."""
        return is_operational(exc)

    def _interrupt(self, conn: C) -> None:
        """Ask ``conn`` to stop its running statement (thread-safe); by default nothing."""

    def _is_interrupted(self, exc: BaseException) -> bool:
        """Whether ``exc`` is what an interrupted read raises."""
        return False

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
            conn = self._writer = self._begin(conn, attempt.busy_ms)
            for request in attempt.batch:
                # One savepoint per request: a failing request is undone alone...
                conn.execute("SAVEPOINT request")
                try:
                    request.result = request.op(conn)
                except Exception as exc:
                    # ...unless the store failed under it: then the whole batch did.
                    if self._is_operational(exc):
                        raise
                    conn.execute("ROLLBACK TO SAVEPOINT request")
                    conn.execute("RELEASE SAVEPOINT request")
                    request.error = exc
                else:
                    conn.execute("RELEASE SAVEPOINT request")
            conn.execute("COMMIT")
        except Exception as exc:
            # The transaction itself failed (disk full, I/O error, lock timeout, the
            # server gone...): nothing of the batch is stored.
            self._abort(conn)
            for request in attempt.batch:
                request.result = None
                request.error = None
            attempt.failure = exc
        finally:
            attempt.finished = True

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
        elif attempt.flush or self._is_operational(failure):
            self._failed(failure, now, retry=attempt.flush)
            for request in [] if attempt.flush else attempt.batch:
                if request.resilient:
                    self._keep(request)
                else:
                    request.error = _write_failed(self.where, failure)
                    request.done.set()
        else:
            for request in attempt.batch:
                request.error = _write_failed(self.where, failure)
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
                log.error("%s: %s failed, not written: %r", self.where, request.what, request.error)

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
                self.where,
                f"; wrote the {late} write(s) kept in memory" if late else "",
            )
        self._problem = None
        self._kept_since = None
        self._retry_at = math.inf
        self._set_gone(False)
        self._written_late = 0

    def _failed(self, failure: BaseException, now: float, *, retry: bool) -> None:
        """A transaction failed for the store's trouble (or kept writes failed again)."""
        problem = f"{self.where}: {describe(failure)}"
        if self._problem is None:
            log.warning("%s (cannot write)", problem)
        if not self._is_operational(failure) and problem != self._problem:
            log.error("%s: kept writes fail: %r", self.where, failure)
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
            log.warning("%s: keeping writes in memory until it can write them", self.where)
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
                request.error = StoreClosedError(f"{self.where}: store closed before commit")
                request.done.set()
        if self._kept or self._lost:
            self._set_gone(True)
            if self._problem is None:
                self._problem = f"{self.where}: closed before it could write"
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
                log.error("%s: not written: %s", self.where, request.what)
            for goal_id, _, kind, _ in request.rows:
                log.error("%s: not written: event %s of goal %s", self.where, kind, goal_id)
        log.error("closed unwritable: %s", self.unwritable)

    # -- plumbing for the operations -------------------------------------------------------

    async def _write(self, op: Callable[[C], T]) -> T:
        """Queue ``op`` for the writer and wait until its batch committed."""
        # A cancelled caller sees Cancelled, not StoreClosedError, even on a closing store.
        await trio.lowlevel.checkpoint_if_cancelled()
        if not self._accepting:
            raise StoreClosedError(f"{self.where}: store is not running")
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
            raise StoreClosedError(f"{self.where}: store closed before commit") from None
        except trio.TooSlowError:
            # The request may still commit later: it is not taken back from the queue.
            raise StoreError(
                f"{self.where}: write not committed within {self._timeout_s} s"
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
            raise StoreClosedError(f"{self.where}: store is not running")
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
                    raise StoreClosedError(f"{self.where}: store closed before commit") from None
            if sending.cancelled_caught:
                # The writer took no write for that long (a stuck disk, say): keep it.
                stuck = StoreError(f"the writer took no write for {wait:g} s")
                self._failed(stuck, trio.current_time(), retry=False)
                self._keep(request)
                return False
        except trio.BrokenResourceError:
            raise StoreClosedError(f"{self.where}: store closed before commit") from None
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
        fn: Callable[[C], T],
        then: Callable[[T], U] | None = None,
    ) -> T | U:
        """Run ``fn`` on a read connection in a worker thread, in call order (several side
        by side, never while kept writes are being written); ``then`` runs on the result
        before any retry of kept writes."""
        if not self._readable:
            await trio.lowlevel.checkpoint_if_cancelled()
            raise StoreClosedError(f"{self.where}: store is not running")
        bound = math.inf if self._timeout_s is None else self._timeout_s
        try:
            return await self._readers.read(fn, then, bound=bound)
        except ReadersClosed:
            raise StoreClosedError(f"{self.where}: store is not running") from None
        except ReadStuck:
            raise StoreError(
                f"{self.where}: read not started within {self._timeout_s} s "
                "(no read finished meanwhile: the store is stuck)"
            ) from None
        except ReadOverdue as exc:
            what = "abandoned to its thread" if exc.abandoned else "interrupted"
            raise StoreError(
                f"{self.where}: read not finished within {self._timeout_s} s ({what})"
            ) from None


def _close_all(*conns: Connection | None) -> None:
    for conn in conns:
        if conn is not None:
            conn.close()


S = TypeVar("S", bound=BatchedStore[Any])


@asynccontextmanager
async def serving(store: S) -> AsyncIterator[S]:
    """``store`` running (its service in a nursery of ours), flushed and closed on exit.

    Errors from opening (e.g. a newer schema) and from the body come out as themselves,
    not wrapped in an exception group: the nursery is an implementation detail. Writes the
    store could not make do not raise at exit: check :attr:`BatchedStore.unwritable` (or
    :func:`raise_if_unwritable`) after it.
    """
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
            reraise_alone(group.exceptions[0])
        raise


def raise_if_unwritable(store: Store) -> None:
    """Raise :class:`StoreUnwritableError` if ``store`` is
    :attr:`~nexo_trio.store.base.Store.unwritable` (with the events it did not write)."""
    reason = store.unwritable
    if reason is not None:
        raise StoreUnwritableError(reason, store.unwritten())


def reraise_alone(exc: BaseException) -> NoReturn:
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
    "READERS",
    "BatchedStore",
    "SchemaVersionError",
    "StoreClosedError",
    "StoreError",
    "StoreOptions",
    "StoreUnwritableError",
    "check_schema_version",
    "pending_entries",
    "raise_if_unwritable",
    "reraise_alone",
    "serving",
]
