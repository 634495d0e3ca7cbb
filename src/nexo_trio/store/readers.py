"""The stores' readers: a few read connections, handed out in call order.

::

    read ──▶ FIFO queue ──▶ a free connection (or a new one, up to ``size``) ──▶ worker thread
                 │                                                                 │
                 └──── waits while others progress; fails only when none does ◀────┘

Readers run side by side, and beside the writer (SQLite's WAL, PostgreSQL's MVCC), so an
overload of reads is a queue, not a failure: a waiting read fails only when *no* read
finished for a whole bound (the store is stuck, not busy). A read that runs past its bound
is interrupted (``sqlite3_interrupt``; PostgreSQL ends it by its ``statement_timeout``); one
that still does not return (a stuck disk, a read blocked in the kernel) is abandoned to its
thread, which closes its connection when it returns, and a fresh connection takes its place
in the pool.

An *exclusive* hold (the writer retrying kept writes, the store closing) queues like a read
and, once at the head, waits until no connection is lent: nothing reads while it is held.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import math
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, Generic, Protocol, TypeVar

import outcome
import trio

T = TypeVar("T")
C = TypeVar("C", bound="_Closable")
U = TypeVar("U")

log = logging.getLogger("nexo_trio.store")

INTERRUPT_GRACE_S = 0.5
"""How long a read interrupted at its bound has to return before it is abandoned."""


class _Closable(Protocol):
    def close(self) -> None: ...


class ReadStuck(Exception):
    """A read waited ``bound`` seconds in the queue while no read finished."""


class ReadOverdue(Exception):
    """A read ran past its bound: interrupted, or abandoned to its thread (``abandoned``)."""

    def __init__(self, abandoned: bool) -> None:
        super().__init__("abandoned" if abandoned else "interrupted")
        self.abandoned = abandoned


class ReadersClosed(Exception):
    """The pool is closed."""


class _Turn(Generic[C]):
    """A place in the queue: a read (granted a connection, or ``None``: open a new one), or
    an exclusive hold."""

    __slots__ = ("closed", "conn", "event", "exclusive", "granted")

    def __init__(self, *, exclusive: bool) -> None:
        self.exclusive = exclusive
        self.granted = False
        self.closed = False
        self.conn: C | None = None
        self.event = trio.Event()

    def is_granted(self) -> bool:
        """Whether the turn came (a method: the queue changes it while its task waits)."""
        return self.granted


class _Call(Generic[C, T]):
    """One read running in a worker thread; its connection goes back to the pool once the
    thread returns, or is closed by the thread when the read was abandoned."""

    __slots__ = (
        "abandoned",
        "conn",
        "connect",
        "done",
        "fn",
        "give_up_at",
        "interrupter",
        "lock",
        "result",
        "running",
    )

    def __init__(
        self,
        conn: C | None,
        fn: Callable[[C], T],
        connect: Callable[[], C],
        interrupt: Callable[[C], None],
    ) -> None:
        self.conn = conn
        self.fn = fn
        self.connect = connect
        self.interrupter = interrupt
        self.done = trio.Event()
        self.result: outcome.Outcome[T] | None = None
        self.lock = threading.Lock()
        self.running = True
        self.abandoned = False
        self.give_up_at = math.inf
        """When the pool gets the connection back at the latest (returned, or abandoned)."""

    def work(self) -> T:
        """The thread's part (blocking)."""
        try:
            if self.conn is None:
                self.conn = self.connect()
            return self.fn(self.conn)
        finally:
            with self.lock:
                self.running = False
                abandoned, conn = self.abandoned, self.conn
            if abandoned and conn is not None:
                conn.close()

    def interrupt(self) -> None:
        """Ask the database to stop the running statement (thread-safe; a no-op between
        them)."""
        with self.lock:
            if self.running and self.conn is not None:
                self.interrupter(self.conn)

    def abandon(self) -> bool:
        """Leave the read to its thread (which closes the connection); False if it has
        returned meanwhile (the connection is free again)."""
        with self.lock:
            if not self.running:
                return False
            self.abandoned = True
            return True


class ReaderPool(Generic[C]):
    """Up to ``size`` read connections (opened on demand by ``connect``, in the read's
    worker thread), lent in call order. ``interrupt`` asks a connection to stop its
    running statement (from another thread); ``interrupted`` tells the error it raises.

    Blocking work runs in threads of trio's cache (``trio.lowlevel.start_thread_soon``): the
    store's reads never wait for a token of the process-wide ``trio.to_thread`` limiter,
    which the rest of the program may be using up.
    """

    def __init__(
        self,
        size: int,
        connect: Callable[[], C],
        interrupt: Callable[[C], None],
        interrupted: Callable[[BaseException], bool],
    ) -> None:
        if size < 1:
            raise ValueError("a reader pool needs at least one connection")
        self._size = size
        self._connect = connect
        self._interrupt = interrupt
        self._interrupted = interrupted
        self._idle: list[C] = []
        self._opened = 0
        """Connections open or being opened (idle, lent or about to be opened)."""
        self._lent = 0
        self._exclusive = False
        self._queue: collections.deque[_Turn[C]] = collections.deque()
        self._closed = False
        self._progress_at = -math.inf
        """When a read (or an exclusive hold) last finished."""
        self._abandoned: list[_Call[C, Any]] = []
        self._running: set[_Call[C, Any]] = set()
        self._held_until = -math.inf
        """When the exclusive hold now held expects to end (see :meth:`exclusive`)."""
        self.interrupt_grace_s = INTERRUPT_GRACE_S

    def add(self, conn: C) -> None:
        """Put an already open connection in the pool."""
        self._idle.append(conn)
        self._opened += 1

    @property
    def lent(self) -> int:
        """Connections in use by reads now."""
        return self._lent

    @property
    def idle(self) -> int:
        """Open connections no read uses now."""
        return len(self._idle)

    @property
    def abandoned(self) -> int:
        """Reads abandoned to their threads that have not returned yet."""
        self._abandoned = [call for call in self._abandoned if not call.done.is_set()]
        return len(self._abandoned)

    # -- the queue -------------------------------------------------------------------------

    def _dispatch(self) -> None:
        """Grant turns from the head of the queue while they can be granted."""
        while self._queue:
            head = self._queue[0]
            if head.exclusive:
                if self._lent:
                    return
                self._exclusive = True
            else:
                if self._exclusive:
                    return
                if self._idle:
                    head.conn = self._idle.pop()
                elif self._opened < self._size:
                    head.conn = None  # the read opens one
                    self._opened += 1
                else:
                    return
                self._lent += 1
            self._queue.popleft()
            head.granted = True
            head.event.set()

    def _progressed(self) -> None:
        self._progress_at = trio.current_time()
        self._dispatch()

    async def _wait_turn(self, turn: _Turn[C], bound: float) -> None:
        """Queue ``turn`` and wait until granted; :class:`ReadStuck` after ``bound`` seconds
        in which no read finished (``math.inf``: no bound)."""
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._closed:
            raise ReadersClosed
        self._queue.append(turn)
        self._dispatch()
        if turn.is_granted():
            await trio.lowlevel.cancel_shielded_checkpoint()
            return
        since = trio.current_time()
        try:
            while not self._waited(turn, since, bound):
                with trio.move_on_at(self._stuck_at(since, bound)):
                    await turn.event.wait()
        except BaseException:
            if turn.granted:  # granted, then cancelled before it could use it
                self._release(turn)
            elif not turn.closed:
                self._queue.remove(turn)
                self._dispatch()  # a hold behind us may be grantable now
            raise

    def _stuck_at(self, since: float, bound: float) -> float:
        """When a read waiting since ``since`` counts as stuck: no read finished for
        ``bound`` seconds, counted from when the reads running now give their connections
        back at the latest (returned, interrupted or abandoned: the queue moves again)."""
        start = max(since, self._progress_at, self._held_until)
        for call in self._running:
            start = max(start, call.give_up_at)
        return start + bound

    def _waited(self, turn: _Turn[C], since: float, bound: float) -> bool:
        """Whether the wait of ``turn`` (since ``since``) is over: True once granted; raises
        once the pool closed, or when the wait is stuck (:meth:`_stuck_at`)."""
        if turn.closed:
            raise ReadersClosed
        if turn.granted:
            return True
        if self._stuck_at(since, bound) <= trio.current_time():
            raise ReadStuck
        return False

    def _release(self, turn: _Turn[C], conn: C | None = None) -> None:
        if turn.exclusive:
            self._exclusive = False
        else:
            self._lent -= 1
            if conn is not None:
                self._idle.append(conn)
            else:  # never opened, or abandoned: its slot is free for a new one
                self._opened -= 1
        self._progressed()

    # -- reads -----------------------------------------------------------------------------

    async def read(
        self,
        fn: Callable[[C], T],
        then: Callable[[T], U] | None = None,
        *,
        bound: float = math.inf,
    ) -> T | U:
        """Run ``fn`` on a connection of the pool in a worker thread, in call order, then
        ``then`` on its result (in the caller, before the connection goes back: no
        exclusive hold comes between them).

        Raises :class:`ReadStuck` (waited ``bound`` with no read finishing),
        :class:`ReadOverdue` (ran past ``bound``), :class:`ReadersClosed`, or what ``fn``
        raised. A read that started is waited for (to its end or its bound) even when the
        caller is cancelled meanwhile; Cancelled comes after.
        """
        turn: _Turn[C] = _Turn(exclusive=False)
        await self._wait_turn(turn, bound)
        call = _Call(turn.conn, fn, self._connect, self._interrupt)
        try:
            result = await self._run(call, bound)
            return result if then is None else then(result)
        finally:
            self._release(turn, None if call.abandoned else call.conn)

    async def _run(self, call: _Call[C, T], bound: float) -> T:
        token = trio.lowlevel.current_trio_token()

        def deliver(result: outcome.Outcome[T]) -> None:
            # In the worker thread.
            def finished() -> None:
                call.result = result
                call.done.set()

            # Only an abandoned read outlives the run: it closed its connection.
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(finished)

        call.give_up_at = trio.current_time() + bound + self.interrupt_grace_s
        self._running.add(call)
        try:
            trio.lowlevel.start_thread_soon(call.work, deliver)
            return await self._wait_call(call, bound)
        finally:
            self._running.discard(call)

    async def _wait_call(self, call: _Call[C, T], bound: float) -> T:
        overdue = False
        with trio.CancelScope(shield=True):
            with trio.move_on_after(bound):
                await call.done.wait()
            if not call.done.is_set():
                overdue = True
                call.interrupt()
                with trio.move_on_after(self.interrupt_grace_s):
                    await call.done.wait()
                if not call.done.is_set() and call.abandon():
                    self._abandoned.append(call)
                    raise ReadOverdue(abandoned=True)
                await call.done.wait()  # it returned just now: a moment
        await trio.lowlevel.checkpoint_if_cancelled()
        assert call.result is not None
        if (
            overdue
            and isinstance(call.result, outcome.Error)
            and self._interrupted(call.result.error)
        ):
            raise ReadOverdue(abandoned=False)
        return call.result.unwrap()

    # -- exclusive -------------------------------------------------------------------------

    @asynccontextmanager
    async def exclusive(self, expected_s: float = 0.0) -> AsyncIterator[None]:
        """Hold every connection: queued like a read, granted once no read runs; no read
        starts until the block ends. (Unbounded wait: every read it waits for is bounded.)
        ``expected_s`` is how long the hold may take by its own bounds: the reads waiting
        behind it count their bound from then, not from when it began."""
        turn: _Turn[C] = _Turn(exclusive=True)
        await self._wait_turn(turn, math.inf)
        self._held_until = trio.current_time() + expected_s
        try:
            yield
        finally:
            self._held_until = -math.inf
            self._release(turn)

    async def close(self, *, abandoned_timeout_s: float) -> None:
        """Close the pool: wait for the reads running (and queued ahead), fail the reads
        that wait, close the connections; wait up to ``abandoned_timeout_s`` for abandoned
        reads to return (their threads close their connections)."""
        if self._closed:
            return
        async with self.exclusive():
            self._closed = True
            for turn in self._queue:
                turn.closed = True
                turn.event.set()
            self._queue.clear()
            idle, self._idle = self._idle, []
            self._opened -= len(idle)
        await trio.to_thread.run_sync(_close_all, idle)
        with trio.move_on_after(abandoned_timeout_s):
            for call in list(self._abandoned):
                await call.done.wait()
        if self.abandoned:
            log.warning(
                "%d read(s) stuck in their threads at close: each closes its connection "
                "when it returns",
                self.abandoned,
            )


def _close_all(conns: list[C]) -> None:
    for conn in conns:
        conn.close()


__all__ = ["INTERRUPT_GRACE_S", "ReadOverdue", "ReadStuck", "ReaderPool", "ReadersClosed"]
