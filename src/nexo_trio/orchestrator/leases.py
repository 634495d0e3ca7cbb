"""The leases of the goals an orchestrator runs on a shared store, and their heartbeat.

On a store many hosts share (:class:`~nexo_trio.store.base.SharedStore`), the goal's local
lock (:mod:`.goal_lock`) only keeps out processes of this host; the *lease* keeps out
everyone. Rules:

- A goal starts only under a lease of this orchestrator (:meth:`LeaseKeeper.take`): taken
  here, or taken by a worker's claim of the goal from the queue.
- The heartbeat renews every lease each ``lease_s / 3``, in one write.
- A lease the heartbeat finds lost (it expired and someone else took it: this process
  stalled longer than ``lease_s``) stops its goal at once: another orchestrator runs it now.
- A heartbeat that cannot reach the store stops every goal before its lease could expire
  (at ``0.8 * lease_s`` since the last renewal): nobody may take a goal over while its
  turn still runs here. This is why a lease never needs fencing in the ledger.
- A goal's lease is released when its run has recorded its end, unless a worker keeps it
  to mark the queued goal finished (:meth:`LeaseKeeper.keep`).
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
from collections.abc import Awaitable, Callable

import trio

from nexo_trio.core.goal_lock import when
from nexo_trio.store.base import Lease, SharedStore

log = logging.getLogger("nexo_trio.orchestrator")

FENCE_FRACTION = 0.8
"""Goals stop once this fraction of the lease time passed without a renewal."""


def new_owner() -> str:
    """A lease owner name: ``HOST:PID:RANDOM``, unique to one orchestrator, and telling a
    person where the goal runs."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def leased_message(lease: Lease) -> str:
    """``goal X is running on HOST:PID:… (lease until T)``: what a second run says."""
    return f"goal {lease.goal_id} is running on {lease.owner} (lease until {when(lease.until)})"


class GoalLeased(ValueError):
    """Another orchestrator holds a live lease on the goal (``lease``)."""

    def __init__(self, lease: Lease) -> None:
        super().__init__(leased_message(lease))
        self.lease = lease
        self.goal_id = lease.goal_id


class LeaseKeeper:
    """The leases one orchestrator holds on ``store``, for ``lease_s`` seconds each."""

    def __init__(self, store: SharedStore, owner: str, lease_s: float) -> None:
        self.store = store
        self.owner = owner
        self.lease_s = lease_s
        self._held: set[str] = set()
        self._kept: set[str] = set()
        self.lost: set[str] = set()
        """Goals whose lease the heartbeat found taken by another orchestrator."""
        self._renewed_at = trio.current_time()

    @property
    def held(self) -> frozenset[str]:
        """The goals leased to this orchestrator."""
        return frozenset(self._held)

    async def take(self, goal_id: str) -> None:
        """Lease the goal (or renew this orchestrator's lease of it); :class:`GoalLeased`
        when another orchestrator holds it."""
        lease = await self.store.take_lease(goal_id, self.owner, self.lease_s)
        if lease.owner != self.owner:
            raise GoalLeased(lease)
        self._held.add(goal_id)

    async def check(self, goal_id: str) -> None:
        """:class:`GoalLeased` if another orchestrator holds the goal, without taking it."""
        lease = await self.store.lease_of(goal_id)
        if lease is not None and lease.owner != self.owner:
            raise GoalLeased(lease)

    def keep(self, goal_id: str) -> None:
        """Do not release the goal's lease when its run ends (its worker finishes it)."""
        self._kept.add(goal_id)

    async def release(self, goal_id: str) -> None:
        """The goal's run ended: give its lease up (unless kept), bounded and shielded;
        a store that cannot be reached lets the lease expire instead."""
        self._held.discard(goal_id)
        if goal_id in self._kept:
            self._kept.discard(goal_id)
            return
        with trio.CancelScope(shield=True, deadline=trio.current_time() + 10.0):
            try:
                await self.store.release_lease(goal_id, self.owner)
            except Exception as exc:  # the store's trouble: the lease expires by itself
                log.warning("could not release the lease of goal %s: %s", goal_id, exc)

    def forget(self, goal_id: str) -> None:
        """The goal is no longer this orchestrator's to renew (a worker finished it)."""
        self._held.discard(goal_id)
        self._kept.discard(goal_id)
        self.lost.discard(goal_id)

    async def heartbeat(
        self,
        stop_goal: Callable[[str, str], Awaitable[object]],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Renew the leases until cancelled; ``stop_goal(goal_id, reason)`` a goal whose
        lease is lost, or every goal once the store could not be reached for
        :data:`FENCE_FRACTION` of the lease time."""
        self._renewed_at = trio.current_time()
        task_status.started()
        interval = self.lease_s / 3
        while True:
            await trio.sleep(interval)
            wanted = sorted(self._held)
            if not wanted:
                self._renewed_at = trio.current_time()
                continue
            attempt_at = trio.current_time()
            try:
                with trio.fail_after(interval):
                    renewed = await self.store.renew_leases(self.owner, wanted, self.lease_s)
            except (Exception, trio.TooSlowError) as exc:
                silent_for = trio.current_time() - self._renewed_at
                log.warning(
                    "could not renew leases (%.1f s since the last renewal): %s", silent_for, exc
                )
                if silent_for >= FENCE_FRACTION * self.lease_s:
                    for goal_id in sorted(self._held):
                        await stop_goal(
                            goal_id,
                            f"its lease could not be renewed for {silent_for:.0f} s "
                            "(the store is unreachable): stopped before another worker "
                            "may take it over",
                        )
                continue
            self._renewed_at = attempt_at
            for goal_id in wanted:
                if goal_id not in renewed and goal_id in self._held:
                    self._held.discard(goal_id)
                    self._kept.add(goal_id)  # not ours to release any more
                    self.lost.add(goal_id)
                    log.error("goal %s: its lease was lost; stopping its run here", goal_id)
                    await stop_goal(goal_id, "its lease was lost to another worker")


__all__ = ["FENCE_FRACTION", "GoalLeased", "LeaseKeeper", "leased_message", "new_owner"]
