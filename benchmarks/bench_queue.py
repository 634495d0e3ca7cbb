"""The PostgreSQL goal queue with 1, 4 and 16 worker *processes*, on one throwaway server
(``tests/pg_server.py``).

Rows:

- **Throughput** (goals/s): :data:`GOALS` goals are submitted (``submit``, not timed), then
  N processes each loop ``claim(owner, 30, limit=1)`` + ``finish(goal_id, owner, "done")``
  through their own nexo-trio store (``open_postgres_store`` under ``trio.run``) until all
  are finished; a claim that comes back empty waits for the queue's next change, as the
  ``nexo-trio worker`` loop does (claims do come back empty while goals remain: a
  candidate another process has just leased is passed over). The floor: the same N
  processes draining a minimal table (``q (id bigint primary key, state text)``, a partial
  index on its queued rows as the store's queue has) with the classic bare psycopg loop
  ``BEGIN; SELECT id ... ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED; UPDATE ... SET state =
  'done'; COMMIT`` until nothing is left. Timed from the start signal (every process has
  opened its store or connection and said so) to the last goal's finish; start-up and
  opening are not timed. Nexo and floor are interleaved round by round, a fresh database
  each.
- **Lease latency** (ms): N idle processes each loop ``claim`` and, when nothing is
  claimable, ``wait_changed(2.0)`` (the ``LISTEN``/``NOTIFY`` wake-up, as the ``nexo-trio
  worker`` loop); the parent submits one goal at a time, :data:`LEASE_GOALS` of them, the
  next once the last was claimed (and the workers had :data:`SETTLE_S` to go idle again).
  Latency: from ``submit`` being called in the parent to ``claim`` returning in a worker,
  both read on ``time.monotonic()`` (CLOCK_MONOTONIC: one clock for every process on
  Linux). From the call, not the return: the submit's own commit is in the figure (a few
  ms), but on a loaded machine the parent may get the CPU back after a worker already
  claimed the goal, which from the return would read as a negative latency.
  The claimer finishes its goal, which wakes every waiter again: the herd is in the figure.

One pool of 16 processes (``multiprocessing``, spawn) serves every row; the first N of it
take part. Every wait on them is bounded; at the end, or on an error, they are told to
exit, then killed, and the server is stopped. Without the server's binaries or psycopg the
group is one row saying so.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.connection
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnProcess
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Event
from typing import Any

import attrs
import trio
from tests.pg_server import (
    PgServer,
    PostgresUnavailable,
    create_database,
    drop_database,
    start_server,
    stop_server,
)

from benchmarks.suite import Row, Stat, interleave
from nexo_trio.store.base import QUEUE
from nexo_trio.store.batched import StoreError

try:
    import psycopg

    from nexo_trio.store.postgres import CHANNEL, PostgresStore, open_postgres_store
except (ImportError, StoreError):  # no psycopg: start_server says so, the group is skipped
    pass

WORKERS = (1, 4, 16)
"""How many worker processes, row by row."""
GOALS = 2000
"""Goals per throughput measurement."""
LEASE_GOALS = 50
"""Goals submitted one at a time per latency measurement."""
ROUNDS = 3
LEASE_S = 30.0
IDLE_WAIT_S = 2.0
"""The bound of an idle worker's ``wait_changed`` (what it waits without a NOTIFY)."""
SETTLE_S = 0.05
"""The pause after a claim before the next submit: the herd the finish woke goes back to
waiting, so that each latency starts from idle workers."""
THROUGHPUT_TARGET = 0.5
"""Ours at least this fraction of the floor's goals/s."""
LATENCY_TARGET_MS = 50.0

READY_TIMEOUT_S = 60.0
"""How long the processes may take to open their stores (16 at once on 2 cores)."""
RUN_TIMEOUT_S = 120.0
"""How long one measurement may take."""
POLL_S = 1.0
"""An idle process looks whether its parent still lives this often."""
EXIT_TIMEOUT_S = 10.0
"""How long the processes get to exit when told, before they are killed."""
CLAIM_TIMEOUT_S = 10.0
"""How long a latency measurement waits for its goal's claim."""
LISTENER_TIMEOUT_S = 10.0
"""How long a process may take to see its store's listener hear a NOTIFY."""
CONNECT_TIMEOUT_S = 10

_FLOOR_SCHEMA = (
    "CREATE TABLE q (id bigint PRIMARY KEY, state text)",
    "CREATE INDEX q_queued ON q (id) WHERE state = 'queued'",
)
_FLOOR_CLAIM = "SELECT id FROM q WHERE state = 'queued' ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED"
_FLOOR_DONE = "UPDATE q SET state = 'done' WHERE id = %s"


# -- in the worker processes ---------------------------------------------------------------


@attrs.frozen
class _Signals:
    """What the pool's processes share: given to each at its spawn."""

    go: Event
    """Set: the measurement starts (every process said it is ready)."""
    stop: Event
    """Set: the measurement is over (or failed): stop now."""
    finished: Synchronized[int]
    """How many goals the processes have finished so far, all together."""


def _send(conn: Connection, message: tuple[Any, ...]) -> None:
    conn.send(message)


async def _wait_go(signals: _Signals) -> None:
    if not await trio.to_thread.run_sync(signals.go.wait, READY_TIMEOUT_S):
        raise RuntimeError("no start signal")


def _count_finished(signals: _Signals) -> int:
    """One more goal finished; how many now (a lock in shared memory: microseconds)."""
    with signals.finished.get_lock():
        signals.finished.value += 1
        return signals.finished.value


async def _listening(store: PostgresStore, url: str) -> None:
    """Once the store's listener hears our notifications (it connects in the background
    at the first wait): a NOTIFY of our own wakes a wait, within LISTENER_TIMEOUT_S."""
    deadline = time.monotonic() + LISTENER_TIMEOUT_S
    while time.monotonic() < deadline:
        heard = False

        async def wait() -> None:
            nonlocal heard
            with trio.move_on_after(0.5) as scope:
                await store.wait_changed(1.0, (QUEUE,))
            heard = not scope.cancelled_caught

        async with trio.open_nursery() as nursery:
            nursery.start_soon(wait)
            await trio.sleep(0.05)  # waiting: the listener connects (the first time)
            await trio.to_thread.run_sync(_notify, url, QUEUE)
        if heard:
            return
    raise TimeoutError("the store's listener did not hear a NOTIFY")


def _nexo_drain(
    url: str, goals: int, owner: str, conn: Connection, signals: _Signals
) -> list[float]:
    """Claim and finish until all ``goals`` are finished (by any process), as the
    ``nexo-trio worker`` loop does: an empty claim waits for the store's next change
    (claims can come back empty while goals remain: a candidate just leased by another
    is passed over). [time of the last finish here (0: none), goals finished here]."""

    async def main() -> list[float]:
        async with open_postgres_store(url) as store:
            await _listening(store, url)
            await trio.to_thread.run_sync(_send, conn, ("ready",))
            await _wait_go(signals)
            done, last = 0, 0.0
            while not signals.stop.is_set() and signals.finished.value < goals:
                claimed = await store.claim(owner, LEASE_S, limit=1)
                for goal in claimed:
                    if await store.finish(goal.goal_id, owner, "done"):
                        done, last = done + 1, time.monotonic()
                        _count_finished(signals)
                if not claimed and signals.finished.value < goals:
                    await store.wait_changed(IDLE_WAIT_S, (QUEUE,))
            return [last, done]

    return trio.run(main)


def _floor_drain(
    url: str, goals: int, owner: str, conn: Connection, signals: _Signals
) -> list[float]:
    """The bare SKIP LOCKED loop until no queued row is left unlocked (the locked ones are
    being done): [time of the last commit here (0: none), rows done here]."""
    with psycopg.connect(
        url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S, application_name=owner
    ) as db:
        conn.send(("ready",))
        if not signals.go.wait(READY_TIMEOUT_S):
            raise RuntimeError("no start signal")
        done, last = 0, 0.0
        while not signals.stop.is_set():
            db.execute("BEGIN")
            row = db.execute(_FLOOR_CLAIM).fetchone()
            if row is None:
                db.execute("COMMIT")
                break
            db.execute(_FLOOR_DONE, (row[0],))
            db.execute("COMMIT")
            done, last = done + 1, time.monotonic()
        return [last, done]


def _nexo_idle(
    url: str, goals: int, owner: str, conn: Connection, signals: _Signals
) -> list[float]:
    """An idle worker until ``stop``: claim, else wait for the queue's next change; report
    each claim as ("claimed", goal_id, monotonic time) and finish it. [end time, goals
    claimed here]."""

    async def main() -> list[float]:
        async with open_postgres_store(url) as store:
            await store.claim(owner, LEASE_S, limit=1)  # nothing yet: the writer is warm
            await _listening(store, url)
            await trio.to_thread.run_sync(_send, conn, ("ready",))
            await _wait_go(signals)
            claims = 0
            while not signals.stop.is_set():
                claimed = await store.claim(owner, LEASE_S, limit=1)
                at = time.monotonic()
                for goal in claimed:
                    claims += 1
                    await trio.to_thread.run_sync(_send, conn, ("claimed", goal.goal_id, at))
                    await store.finish(goal.goal_id, owner, "done")
                if not claimed:
                    await store.wait_changed(IDLE_WAIT_S, (QUEUE,))
            return [time.monotonic(), claims]

    return trio.run(main)


_RUNNERS: dict[str, Callable[[str, int, str, Connection, _Signals], list[float]]] = {
    "nexo": _nexo_drain,
    "floor": _floor_drain,
    "idle": _nexo_idle,
}


def _worker(index: int, conn: Connection, signals: _Signals) -> None:
    """A pool process: run commands ``(kind, url, goals)`` from the parent until
    ``("exit",)`` (or the parent is gone); each ends with ``("done", figures)`` or
    ``("error", text)``."""
    owner = f"bench-{index}"
    parent = multiprocessing.parent_process()
    conn.send(("up",))  # imported: the parent measures nothing while others start
    while True:
        if not conn.poll(POLL_S):
            if parent is not None and not parent.is_alive():
                return
            continue
        try:
            command = conn.recv()
        except EOFError:
            return
        if command[0] == "exit":
            return
        kind, url, goals = command
        try:
            figures = _RUNNERS[kind](url, goals, owner, conn, signals)
        except BaseException as exc:  # told to the parent, which stops the benchmark
            conn.send(("error", f"{owner}: {type(exc).__name__}: {exc}"))
            if not isinstance(exc, Exception):
                raise
        else:
            conn.send(("done", figures))


# -- in the parent -------------------------------------------------------------------------


def _receive(conn: Connection, deadline: float) -> tuple[Any, ...]:
    """The next message of a pool process, by ``deadline`` (monotonic); an error it
    reports raises."""
    if not conn.poll(max(0.0, deadline - time.monotonic())):
        raise TimeoutError("a worker process did not answer in time")
    try:
        message: tuple[Any, ...] = conn.recv()
    except EOFError:
        raise RuntimeError("a worker process exited") from None
    if message[0] == "error":
        raise RuntimeError(message[1])
    return message


@attrs.define
class _Pool:
    """Worker processes, their pipes and the two events they share."""

    processes: list[SpawnProcess]
    conns: list[Connection]
    signals: _Signals

    def start(self, kind: str, url: str, n: int, goals: int) -> list[Connection]:
        """Have the first ``n`` processes prepare ``kind`` on ``url`` (``goals`` to do);
        once all are ready (not started yet: ``signals.go``), their pipes."""
        self.signals.go.clear()
        self.signals.stop.clear()
        self.signals.finished.value = 0
        conns = self.conns[:n]
        for conn in conns:
            conn.send((kind, url, goals))
        deadline = time.monotonic() + READY_TIMEOUT_S
        for conn in conns:
            message = _receive(conn, deadline)
            if message[0] != "ready":
                raise RuntimeError(f"a worker process said {message!r} instead of ready")
        return conns

    def end(self, conns: Sequence[Connection], deadline: float) -> list[list[float]]:
        """The figures of each of ``conns``' run, by ``deadline``; other messages (claims
        reported late) are dropped."""
        figures = []
        for conn in conns:
            while True:
                message = _receive(conn, deadline)
                if message[0] == "done":
                    figures.append(list(message[1]))
                    break
        return figures

    def close(self) -> None:
        """Tell every process to exit; kill those that have not after EXIT_TIMEOUT_S."""
        self.signals.stop.set()
        self.signals.go.set()  # none waits for a start signal that never comes
        for conn in self.conns:
            with contextlib.suppress(OSError, ValueError):
                conn.send(("exit",))
        deadline = time.monotonic() + EXIT_TIMEOUT_S
        for process in self.processes:
            process.join(max(0.0, deadline - time.monotonic()))
        for process in self.processes:
            if process.is_alive():
                process.kill()
                process.join(EXIT_TIMEOUT_S)
        for conn in self.conns:
            conn.close()


@contextlib.contextmanager
def _pool(size: int) -> Iterator[_Pool]:
    """``size`` worker processes (spawned: no state of ours inherited), all started and
    idle; closed at the end."""
    ctx = multiprocessing.get_context("spawn")
    signals = _Signals(go=ctx.Event(), stop=ctx.Event(), finished=ctx.Value("q", 0))
    pool = _Pool(processes=[], conns=[], signals=signals)
    try:
        for index in range(size):
            ours, theirs = ctx.Pipe()
            process = ctx.Process(target=_worker, args=(index, theirs, signals), daemon=True)
            process.start()
            theirs.close()
            pool.processes.append(process)
            pool.conns.append(ours)
        deadline = time.monotonic() + READY_TIMEOUT_S
        for conn in pool.conns:
            if _receive(conn, deadline) != ("up",):
                raise RuntimeError("a worker process did not start")
        yield pool
    finally:
        pool.close()


async def _submit_all(url: str, goals: int) -> None:
    """Create the store's schema on ``url`` and queue ``goals`` goals."""
    async with open_postgres_store(url) as store, trio.open_nursery() as nursery:
        for i in range(goals):
            nursery.start_soon(store.submit, f"goal-{i:05d}", {"n": i})


def _fill_floor(url: str, goals: int) -> None:
    with psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT_S) as db:
        for statement in _FLOOR_SCHEMA:
            db.execute(statement)
        with db.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO q (id, state) VALUES (%s, 'queued')", [(i,) for i in range(goals)]
            )


def _drain(pool: _Pool, server: PgServer, kind: str, n: int, goals: int) -> float:
    """Seconds for ``n`` processes to drain ``goals`` goals of a fresh database, ``kind``
    being ``nexo`` or ``floor``."""
    url = create_database(server)
    try:
        if kind == "nexo":
            trio.run(_submit_all, url, goals)
        else:
            _fill_floor(url, goals)
        conns = pool.start(kind, url, n, goals)
        started = time.monotonic()
        pool.signals.go.set()
        figures = pool.end(conns, started + RUN_TIMEOUT_S)
        done = sum(int(f[1]) for f in figures)
        if done != goals:
            raise RuntimeError(f"{kind} x{n}: {done} of {goals} goals finished")
        return max(f[0] for f in figures) - started
    finally:
        pool.signals.stop.set()
        drop_database(server, url)


def _notify(url: str, what: str = "") -> None:
    """``NOTIFY`` the store's channel (an empty payload wakes every kind of waiter)."""
    with psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S) as db:
        db.execute(f"NOTIFY {CHANNEL}, '{what}'")


async def _submit_one_by_one(url: str, conns: Sequence[Connection], goals: int) -> list[float]:
    """Submit ``goals`` goals one at a time; the latency (s) of each one's claim."""
    latencies = []
    async with open_postgres_store(url) as store:
        for i in range(goals):
            goal_id = f"lease-{i:04d}"
            submitted = time.monotonic()
            await store.submit(goal_id, {"n": i})
            deadline = submitted + CLAIM_TIMEOUT_S
            ready = await trio.to_thread.run_sync(
                multiprocessing.connection.wait, list(conns), CLAIM_TIMEOUT_S
            )
            if not ready:
                raise TimeoutError(f"goal {goal_id} was not claimed in time")
            assert isinstance(ready[0], Connection)
            message = await trio.to_thread.run_sync(_receive, ready[0], deadline)
            if message[:2] != ("claimed", goal_id):
                raise RuntimeError(f"expected the claim of {goal_id}, got {message!r}")
            latencies.append(float(message[2]) - submitted)
            await trio.sleep(SETTLE_S)
    return latencies


def _lease_latency(pool: _Pool, server: PgServer, n: int, goals: int) -> list[float]:
    """The claim latencies (s) of ``goals`` goals submitted one at a time to ``n`` idle
    processes, on a fresh database."""
    url = create_database(server)
    try:
        trio.run(_submit_all, url, 0)  # the schema, before the workers open the store
        conns = pool.start("idle", url, n, goals)
        pool.signals.go.set()
        latencies = trio.run(_submit_one_by_one, url, conns, goals)
        pool.signals.stop.set()
        _notify(url)
        pool.end(conns, time.monotonic() + RUN_TIMEOUT_S)
        return latencies
    finally:
        pool.signals.stop.set()
        drop_database(server, url)


def _p99(values: Sequence[float]) -> float:
    if len(values) < 2:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[98]


def _skipped(reason: str) -> list[Row]:
    return [Row("queue", "PostgreSQL queue: skipped", "—", Stat(0, 0, 0, 0), note=reason)]


def rows(quick: bool = False) -> list[Row]:
    """Queue throughput at 1, 4 and 16 processes beside the bare SKIP LOCKED floor, and
    the lease latency of idle processes (median, p99); medians of interleaved rounds."""
    goals, lease_goals, rounds = (100, 5, 1) if quick else (GOALS, LEASE_GOALS, ROUNDS)
    try:
        server = start_server()
    except PostgresUnavailable as exc:
        return _skipped(str(exc))
    latencies: dict[int, list[float]] = {n: [] for n in WORKERS}
    try:
        with _pool(max(WORKERS)) as pool:

            def drain(kind: str, n: int) -> Callable[[], float]:
                return lambda: _drain(pool, server, kind, n, goals)

            def latency(n: int) -> Callable[[], float]:
                def measure() -> float:
                    found = _lease_latency(pool, server, n, lease_goals)
                    latencies[n] += found
                    return statistics.median(found)

                return measure

            variants: dict[str, Callable[[], float]] = {}
            for n in WORKERS:
                variants[f"nexo{n}"] = drain("nexo", n)
                variants[f"floor{n}"] = drain("floor", n)
            for n in WORKERS:
                variants[f"lease{n}"] = latency(n)
            samples = interleave(variants, rounds)
    finally:
        stop_server(server)

    note = f"medians of {rounds} interleaved round(s), fresh database each"
    result: list[Row] = []
    for n in WORKERS:
        ours = Stat.of(samples[f"nexo{n}"]).per(goals)
        floor = Stat.of(samples[f"floor{n}"]).per(goals)
        result.append(
            Row(
                "queue",
                f"claim + finish, {n} worker process{'es' if n > 1 else ''}, {goals} goals",
                "goals/s",
                ours,
                floor=floor,
                target=f">= {THROUGHPUT_TARGET}x the floor",
                met=ours.median >= THROUGHPUT_TARGET * floor.median,
                note=f"{note}; floor: bare psycopg BEGIN/SELECT FOR UPDATE SKIP LOCKED/"
                "UPDATE/COMMIT",
            )
        )
    for n in WORKERS:
        found = latencies[n]
        median = Stat.of(found).scaled(1000)
        p99 = _p99(found) * 1000
        idle = f"{n} idle worker process{'es' if n > 1 else ''}"
        result += [
            Row(
                "queue",
                f"lease latency, {idle}: median",
                "ms",
                median,
                better="lower",
                target=f"median <= {LATENCY_TARGET_MS:g} ms",
                met=median.median <= LATENCY_TARGET_MS,
                note=f"{len(found)} goals one at a time, submit called -> claim returned; "
                f"spread: fastest-slowest",
            ),
            Row(
                "queue",
                f"lease latency, {idle}: p99",
                "ms",
                Stat(p99, p99, p99, len(found)),
                better="lower",
                note=f"without NOTIFY an idle worker waits up to {IDLE_WAIT_S:g} s",
            ),
        ]
    return result


if __name__ == "__main__":
    from benchmarks.suite import markdown

    print(markdown(rows(quick="--quick" in sys.argv)))
