"""Blocking calls of the gate in worker threads, the calls that wait at the same time sharing
one thread hop.

:func:`run_batched` is ``trio.to_thread.run_sync(fn, abandon_on_cancel=True)`` for the gate's
short blocking calls (resolving a tool call's paths on disk, for the ``rules`` decider), made
cheap under load: a call starts a worker thread at once when fewer than
:data:`MAX_THREADS` are at work; otherwise it waits for the next free thread, which then runs
every call waiting by then, one after the other, and reports them back to trio in one go. One
thread hop per batch instead of one per call: a hop costs the event loop more than the call
itself under concurrent requests.

Like ``abandon_on_cancel=True``: a caller cancelled while its call waits or runs returns at
once (``trio.Cancelled``), and its result, when it comes, is dropped; a call that has not
started when its caller gives up is skipped. A call that hangs (a file system that does not
answer) holds its thread and the calls batched behind it (their deadlines deny them: the gate
fails closed), not the later ones: a batch running for longer than :data:`STUCK_S` no longer
counts as at work, so the calls waiting get another thread (a watchdog looks again every
:data:`STUCK_S` while calls wait), up to :data:`MAX_STUCK_THREADS` hung ones (past that, calls
wait, and their deadlines deny them).

One set of threads per trio run (a :class:`trio.lowlevel.RunVar`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Final, Generic, TypeVar

import trio

__all__ = ["MAX_STUCK_THREADS", "MAX_THREADS", "STUCK_S", "run_batched"]

T = TypeVar("T")

MAX_THREADS: Final = 2
"""Worker threads at work at once (the calls are short and hold the GIL: more buy nothing)."""
STUCK_S: Final = 1.0
"""A batch running longer than this is taken for hung: it no longer holds up the others."""
MAX_STUCK_THREADS: Final = 32
"""Hung batches tolerated at once before new calls wait for one of them to finish."""


class _Call(Generic[T]):
    __slots__ = ("abandoned", "done", "error", "fn", "ran", "value")

    def __init__(self, fn: Callable[[], T]) -> None:
        self.fn = fn
        self.done = trio.Event()
        self.ran = False
        self.value: T | None = None
        self.error: BaseException | None = None
        self.abandoned = False

    def run(self) -> None:
        """Call ``fn`` (in a worker thread), keeping what it returned or raised."""
        try:
            self.value = self.fn()
        except BaseException as exc:  # re-raised in the caller, as to_thread does
            self.error = exc
        self.ran = True


class _Batches:
    """One trio run's worker threads and the calls waiting for one."""

    def __init__(self) -> None:
        self.waiting: list[_Call[object]] = []
        self.running: dict[int, float] = {}
        """Batches in a thread: their start time, by batch number."""
        self.numbers = 0
        self.token = trio.lowlevel.current_trio_token()
        self.watching = False

    def dispatch(self) -> None:
        """Start a thread for the waiting calls if one is free (in the trio thread)."""
        if not self.waiting:
            return
        now = trio.current_time()
        working = sum(1 for started in self.running.values() if now - started < STUCK_S)
        if working >= MAX_THREADS or len(self.running) - working >= MAX_STUCK_THREADS:
            # The calls wait for a batch to finish; should every batch hang, the watchdog
            # gets them a thread once the running ones count as hung.
            if not self.watching:
                self.watching = True
                trio.lowlevel.spawn_system_task(self.watch, name="nexo-trio gate watchdog")
            return
        batch = [call for call in self.waiting if not call.abandoned]
        self.waiting = []
        if not batch:
            return
        self.numbers += 1
        number = self.numbers
        self.running[number] = now

        def work() -> None:
            for call in batch:
                if not call.abandoned:
                    call.run()

        def report(_: object) -> None:  # in the worker thread, once the batch is done
            # The run may be over: then nobody waits any more.
            with contextlib.suppress(trio.RunFinishedError):
                self.token.run_sync_soon(self.finished, number, batch)

        trio.lowlevel.start_thread_soon(work, report, name="nexo-trio gate worker")

    def finished(self, number: int, batch: list[_Call[object]]) -> None:
        """A batch is done (in the trio thread): wake its callers, start the next batch."""
        del self.running[number]
        for call in batch:
            call.done.set()
        self.dispatch()

    async def watch(self) -> None:
        """While calls wait, look again every STUCK_S (a batch may have hung meanwhile)."""
        try:
            while self.waiting:
                await trio.sleep(STUCK_S)
                self.dispatch()
        finally:
            self.watching = False


_BATCHES: trio.lowlevel.RunVar[_Batches] = trio.lowlevel.RunVar("nexo_trio_gate_batches")


def _batches() -> _Batches:
    try:
        return _BATCHES.get()
    except LookupError:
        batches = _Batches()
        _BATCHES.set(batches)
        return batches


async def run_batched(fn: Callable[[], T]) -> T:
    """``fn()`` in a worker thread, batched with the calls waiting at the same time (see the
    module docstring); its exception re-raised here. Cancellable at any point: the call is
    then abandoned."""
    batches = _batches()
    call = _Call(fn)
    batches.waiting.append(call)  # type: ignore[arg-type]  # invariant list, one type per call
    batches.dispatch()
    try:
        await call.done.wait()
    except BaseException:
        call.abandoned = True
        raise
    if call.error is not None:
        try:
            raise call.error
        finally:
            call.error = None  # no reference cycle through the traceback
    if not call.ran:  # skipped as abandoned: cannot happen to a caller still waiting
        raise RuntimeError("a batched call finished without running")
    return call.value  # type: ignore[return-value]  # ran without error: fn's value
