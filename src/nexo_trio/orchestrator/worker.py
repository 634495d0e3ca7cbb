"""A worker: runs goals from the store's queue until stopped (``nexo-trio worker``).

::

    loop:  free slots? ──claim (leases them to this orchestrator)──▶ start each goal
             │ nothing to claim: wait for the store's wake-up (or a bound)   │
             ▼                                                               ▼
    stop ──▶ hand back: cancel the running goals (their turns stopped     each goal's end:
             within kill_grace), release their leases: they stay queued,  finish (queued
             and another worker goes on from their ledgers                row and lease)

Rules:

- A goal runs here only under this orchestrator's lease (the claim took it); the
  orchestrator's heartbeat renews it (:mod:`.leases`).
- A goal that ended on its own (done, not done, escalated, cancelled by an operator) is
  *finished*: it leaves the queue. Submitting it again runs it again from its ledger.
- A goal stopped because the worker stops is *handed back*: its end (cancelled) is in the
  ledger, its lease is released, its queue row stays queued, so the next claim continues
  it where the goal machine says it stands (a cancelled goal goes on).
- A goal whose lease was lost (another worker took it over) is left alone: it is the
  other's now.
- A queued goal that cannot be run here (its spec is not a valid goal, its workspace is
  not its own) is finished as ``escalated`` with the reason, so it does not loop between
  workers.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping

import attrs
import trio

from nexo_trio.core.goal import Goal
from nexo_trio.core.goal_outcome import GoalEndKind, GoalOutcome
from nexo_trio.orchestrator.goal_run import GoalHandle
from nexo_trio.orchestrator.orchestrator import Orchestrator
from nexo_trio.store.base import QUEUE, QueuedGoal, SharedStore

log = logging.getLogger("nexo_trio.worker")

IDLE_WAIT_S = 2.0
"""How long an idle worker waits for the store's wake-up before it looks again."""

HAND_BACK_MARGIN_S = 10.0
"""Beyond the stop's graces (``kill_grace``, twice on stdio: the interrupt's, then the
signals'): how long the hand-back waits for goals to record their end."""


@attrs.frozen
class Claimed:
    """A goal this worker took from the queue (``goal``), or could not run (``problem``)."""

    queued: QueuedGoal
    goal: Goal | None = None
    problem: str | None = None


@attrs.define
class WorkerReport:
    """What a worker did, for its caller: the outcomes of the goals it finished, the ids
    it handed back and those it lost to another worker."""

    finished: list[GoalOutcome] = attrs.field(factory=list)
    handed_back: list[str] = attrs.field(factory=list)
    lost: list[str] = attrs.field(factory=list)
    refused: list[tuple[str, str]] = attrs.field(factory=list)
    """Queued goals that could not be run here, and why."""


GoalLoader = Callable[[QueuedGoal], Goal]
"""Builds a queued goal's :class:`Goal` from its spec (raises ``ValueError`` if invalid)."""


class Worker:
    """Runs queued goals of ``store`` in ``orchestrator`` (open, on that store), at most
    ``concurrency`` at once, until :meth:`stop`."""

    def __init__(
        self,
        orchestrator: Orchestrator,
        store: SharedStore,
        *,
        concurrency: int,
        load_goal: GoalLoader,
        until_empty: bool = False,
        on_finished: Callable[[GoalOutcome], Awaitable[None]] | None = None,
        on_claimed: Callable[[QueuedGoal], Awaitable[None]] | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError("a worker runs at least one goal at a time")
        self.orchestrator = orchestrator
        self.store = store
        self.concurrency = concurrency
        self.load_goal = load_goal
        self.until_empty = until_empty
        self.on_finished = on_finished
        self.on_claimed = on_claimed
        self.report = WorkerReport()
        self._running: dict[str, GoalHandle] = {}
        self._stop = trio.Event()
        self._stop_reason = "worker stopped"
        self._wake = trio.Event()

    @property
    def running(self) -> list[str]:
        """The goals running here now."""
        return list(self._running)

    def stop(self, reason: str = "worker stopped") -> None:
        """Stop claiming and hand the running goals back (see the module docstring)."""
        if not self._stop.is_set():
            self._stop_reason = reason
            self._stop.set()
            self._wake.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Claim and run goals until :meth:`stop` (or, ``until_empty``, until nothing is
        queued or running); then hand back what still runs, bounded by ``kill_grace``."""
        leases = self.orchestrator.leases
        if leases is None:
            raise ValueError("a worker needs a store many hosts share (postgresql://...)")
        async with trio.open_nursery() as nursery:
            task_status.started()
            while not self._stop.is_set():
                # Marked before the claim: a goal submitted while it runs wakes us.
                mark = self.store.changes_seen()
                claimed = await self._claim()
                for item in claimed:
                    await self._start(nursery, item)
                if claimed and len(self._running) < self.concurrency:
                    continue  # there may be more right away
                idle = self.until_empty and not self._running and not claimed
                if idle and not await self._anything_queued():
                    break
                await self._idle(mark)
            await self._hand_back()

    async def _idle(self, mark: Mapping[str, int]) -> None:
        """Wait for something to do: the store changed (while a slot is free), a goal here
        ended, a stop; at most :data:`IDLE_WAIT_S`."""
        self._wake = trio.Event()
        with trio.move_on_after(IDLE_WAIT_S):
            async with trio.open_nursery() as waiters:
                if len(self._running) < self.concurrency:
                    waiters.start_soon(
                        self._then_cancel,
                        self.store.wait_changed(IDLE_WAIT_S, (QUEUE,), since=mark),
                        waiters.cancel_scope,
                    )
                waiters.start_soon(self._then_cancel, self._wake.wait(), waiters.cancel_scope)

    @staticmethod
    async def _then_cancel(waiting: Awaitable[object], scope: trio.CancelScope) -> None:
        await waiting
        scope.cancel()

    async def _anything_queued(self) -> bool:
        try:
            return await self.store.unfinished() > 0  # running elsewhere: it may come back
        except Exception as exc:  # the store's trouble: keep going, look again later
            log.warning("could not read the queue: %s", exc)
            return True

    async def _claim(self) -> list[Claimed]:
        free = self.concurrency - len(self._running)
        if free <= 0:
            return []
        try:
            queued = await self.store.claim(
                self.orchestrator.owner, self.orchestrator.config.lease_timeout_s, limit=free
            )
        except Exception as exc:  # the store's trouble (unreachable, a deadlock retried)
            log.warning("could not claim goals: %s", exc)
            return []
        claimed = []
        for row in queued:
            try:
                goal = self.load_goal(row)
            except ValueError as exc:
                claimed.append(Claimed(row, problem=str(exc)))
                continue
            if goal.id != row.goal_id:
                claimed.append(
                    Claimed(row, problem=f"its spec names goal {goal.id!r}, not {row.goal_id!r}")
                )
                continue
            claimed.append(Claimed(row, goal=goal))
        return claimed

    async def _start(self, nursery: trio.Nursery, item: Claimed) -> None:
        leases = self.orchestrator.leases
        assert leases is not None
        goal_id = item.queued.goal_id
        if self.on_claimed is not None:
            await self.on_claimed(item.queued)
        if item.goal is not None:
            leases.keep(goal_id)  # finished (or released) by us, not at the run's end
            try:
                handle = await self.orchestrator.start_goal(item.goal)
            except ValueError as exc:  # its workspace is not its own, a custom check...
                leases.forget(goal_id)
                await self._refuse(goal_id, str(exc))
                return
            self._running[goal_id] = handle
            nursery.start_soon(self._watch, goal_id, handle, name=f"worker goal {goal_id}")
        else:
            await self._refuse(goal_id, item.problem or "not a goal")

    async def _refuse(self, goal_id: str, problem: str) -> None:
        log.error("queued goal %s cannot run here: %s", goal_id, problem)
        self.report.refused.append((goal_id, problem))
        try:
            await self.store.finish(goal_id, self.orchestrator.owner, GoalEndKind.ESCALATED.value)
        except Exception as exc:
            log.warning("could not mark goal %s finished: %s", goal_id, exc)

    async def _watch(self, goal_id: str, handle: GoalHandle) -> None:
        leases = self.orchestrator.leases
        assert leases is not None
        try:
            outcome = await handle.wait()
        finally:
            del self._running[goal_id]
            self._wake.set()
        owner = self.orchestrator.owner
        with trio.CancelScope(shield=True, deadline=trio.current_time() + 10.0):
            try:
                if goal_id in leases.lost:
                    # The heartbeat lost its lease: another worker runs it now.
                    self.report.lost.append(goal_id)
                elif self._stop.is_set() and outcome.kind is GoalEndKind.CANCELLED:
                    await self.store.release_lease(goal_id, owner)
                    self.report.handed_back.append(goal_id)
                else:
                    await self.store.finish(goal_id, owner, outcome.kind.value)
                    self.report.finished.append(outcome)
                    if self.on_finished is not None:
                        await self.on_finished(outcome)
            except Exception as exc:  # the lease then expires and another worker goes on
                log.warning("could not settle goal %s in the queue: %s", goal_id, exc)
            finally:
                leases.forget(goal_id)

    async def _hand_back(self) -> None:
        """Cancel what still runs here and wait (bounded) until each recorded its end."""
        if not self._running:
            return
        reason = f"handed back by worker {self.orchestrator.owner}: {self._stop_reason}"
        for goal_id in list(self._running):
            await self.orchestrator.cancel_goal(goal_id, reason)
        config = self.orchestrator.config
        # On the stdio transport a stop is an interrupt first, with its own kill_grace.
        graces = 2 if config.permission.transport == "stdio" else 1
        bound = graces * config.kill_grace_s + HAND_BACK_MARGIN_S
        with trio.move_on_after(bound):
            while self._running:
                self._wake = trio.Event()
                await self._wake.wait()
        if self._running:
            log.error(
                "goals still running %g s after the hand-back: %s",
                bound,
                ", ".join(sorted(self._running)),
            )


__all__ = ["IDLE_WAIT_S", "Claimed", "GoalLoader", "Worker", "WorkerReport"]
