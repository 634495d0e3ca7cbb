"""``Orchestrator``: runs goals concurrently in a nursery it owns.

::

    async with Orchestrator(config) as orch:
        outcome = await orch.run_goal(goal)

Each goal runs in its own task, at most ``config.max_concurrent_goals`` at once; a goal's
failure (even a bug) ends that goal, never the others. Every goal ends with exactly one
``GoalCompleted`` event, on every path. Events go to every subscriber and (all but live
activity) to the ledger of the store, which by default is the SQLite file in
``config.state_dir``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from contextlib import AsyncExitStack
from pathlib import Path
from types import TracebackType
from typing import Any

import attrs
import trio

from nexo_trio.core.events import Usage
from nexo_trio.core.goal import Goal
from nexo_trio.core.goal_events import (
    CancelRequested,
    GoalCompleted,
    GoalEvent,
    GoalPaused,
    GoalResumed,
    InterruptQueued,
    MaxTurnsRaised,
)
from nexo_trio.core.goal_outcome import GoalEndKind, GoalOutcome
from nexo_trio.core.settings import Config
from nexo_trio.engine.supervisor import run_turn
from nexo_trio.orchestrator.acceptance import VerifierRegistry, default_registry
from nexo_trio.orchestrator.control import GoalControl
from nexo_trio.orchestrator.goal_loop import GoalLoop, Resumed, TurnPlan, TurnRunner
from nexo_trio.store.base import Store
from nexo_trio.store.sqlite import open_sqlite_store
from nexo_trio.wire.goal_json import event_to_ledger, is_ledger_event

log = logging.getLogger("nexo_trio.orchestrator")

DB_NAME = "nexo.db"
COMPLETION_DEADLINE = 10.0
"""How long recording a goal's end may take when the goal is being torn down."""

PlanFactory = Callable[[Goal, Path], TurnPlan]


class GoalHandle:
    """A started goal: wait for its outcome."""

    def __init__(self, goal: Goal, control: GoalControl) -> None:
        self.goal = goal
        self.control = control
        self._done = trio.Event()
        self._outcome: GoalOutcome | None = None

    @property
    def goal_id(self) -> str:
        """The goal's id."""
        return self.goal.id

    @property
    def outcome(self) -> GoalOutcome | None:
        """The outcome once the goal ended."""
        return self._outcome

    async def wait(self) -> GoalOutcome:
        """Wait until the goal ends; return its outcome."""
        await self._done.wait()
        assert self._outcome is not None
        return self._outcome

    def _finish(self, outcome: GoalOutcome) -> None:
        self._outcome = outcome
        self._done.set()


class Orchestrator:
    """Runs goals; an async context manager owning the nursery they run in."""

    def __init__(
        self,
        config: Config | None = None,
        *,
        store: Store | None = None,
        registry: VerifierRegistry | None = None,
        turn_runner: TurnRunner = run_turn,
        plan_factory: PlanFactory | None = None,
        base_dir: Path | None = None,
    ) -> None:
        self.config = config or Config()
        self._store = store
        self.registry = registry or default_registry()
        self.turn_runner = turn_runner
        self.plan_factory = plan_factory
        self.base_dir = base_dir or Path.cwd()
        self._goals: dict[str, GoalHandle] = {}
        self._subscribers: list[trio.MemorySendChannel[GoalEvent]] = []
        self._stack: AsyncExitStack | None = None
        self._nursery: trio.Nursery | None = None
        self._limiter = trio.CapacityLimiter(max(1, self.config.max_concurrent_goals))

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Orchestrator:
        stack = AsyncExitStack()
        await stack.__aenter__()
        try:
            if self._store is None:
                db = self.state_dir / DB_NAME
                self._store = await stack.enter_async_context(open_sqlite_store(db))
            self._nursery = await stack.enter_async_context(trio.open_nursery())
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        assert self._stack is not None
        stack, self._stack = self._stack, None
        try:
            return bool(await stack.__aexit__(exc_type, exc, tb))
        finally:
            self._nursery = None
            for channel in self._subscribers:
                channel.close()
            self._subscribers.clear()

    @property
    def state_dir(self) -> Path:
        """Where the ledger, bindings and per-goal files live."""
        return self._resolve(self.config.state_dir)

    @property
    def store(self) -> Store:
        """The store of bindings and the ledger."""
        if self._store is None:
            raise RuntimeError("the Orchestrator is not open: use `async with Orchestrator()`")
        return self._store

    def _resolve(self, path: str) -> Path:
        p = Path(path).expanduser()
        return p if p.is_absolute() else self.base_dir / p

    # ------------------------------------------------------------------ goals

    async def run_goal(self, goal: Goal) -> GoalOutcome:
        """Run a goal to its end and return its outcome."""
        handle = await self.start_goal(goal)
        return await handle.wait()

    async def start_goal(self, goal: Goal) -> GoalHandle:
        """Start a goal in the background; control it by id, await ``handle.wait()``."""
        if self._nursery is None:
            raise RuntimeError("the Orchestrator is not open: use `async with Orchestrator()`")
        if goal.id in self._goals:
            raise ValueError(f"goal {goal.id!r} is already running")
        handle = GoalHandle(goal, GoalControl(goal.id))
        self._goals[goal.id] = handle
        self._nursery.start_soon(self._run_goal, handle, name=f"goal {goal.id}")
        return handle

    def running(self) -> list[str]:
        """Ids of the goals started and not yet ended."""
        return list(self._goals)

    def handle(self, goal_id: str) -> GoalHandle | None:
        """The handle of a running goal."""
        return self._goals.get(goal_id)

    async def _run_goal(self, handle: GoalHandle) -> None:
        goal, control = handle.goal, handle.control
        started = trio.current_time()
        outcome: GoalOutcome | None = None
        loop: GoalLoop | None = None
        try:
            token = object()
            acquired = await control.interruptible(
                lambda: self._limiter.acquire_on_behalf_of(token)
            )
            if not acquired:
                outcome = _bare_outcome(goal, GoalEndKind.CANCELLED, control.cancel_reason)
                return
            try:
                workspace = self._workspace(goal)
                loop = GoalLoop(
                    goal,
                    config=self.config,
                    store=self.store,
                    control=control,
                    emit=self._emit,
                    workspace=workspace,
                    registry=self.registry,
                    resumed=await self._recover(goal.id),
                    plan=self.plan_factory(goal, workspace) if self.plan_factory else None,
                    turn_runner=self.turn_runner,
                )
                outcome = await loop.run()
            finally:
                self._limiter.release_on_behalf_of(token)
        except Exception as exc:
            # A bug (ours or a custom verifier's) ends this goal only.
            log.exception("goal %s failed with an internal error", goal.id)
            reason = f"internal error: {exc!r}"
            outcome = (
                loop._end(GoalEndKind.ESCALATED, reason)
                if loop is not None
                else _bare_outcome(goal, GoalEndKind.ESCALATED, reason)
            )
        finally:
            if outcome is None:
                # Cancelled from outside (the orchestrator is shutting down).
                reason = control.cancel_reason or "orchestrator shut down"
                outcome = (
                    loop._end(GoalEndKind.CANCELLED, reason)
                    if loop is not None
                    else _bare_outcome(goal, GoalEndKind.CANCELLED, reason)
                )
            outcome = attrs.evolve(outcome, elapsed_s=trio.current_time() - started)
            # Shielded: a goal torn down by cancellation still records how it ended.
            with trio.CancelScope(shield=True, deadline=trio.current_time() + COMPLETION_DEADLINE):
                try:
                    await self._emit(GoalCompleted(goal.id, outcome))
                except Exception:
                    log.exception("could not record the end of goal %s", goal.id)
            del self._goals[goal.id]
            handle._finish(outcome)

    def _workspace(self, goal: Goal) -> Path:
        if goal.workspace:
            path = self._resolve(goal.workspace)
        else:
            path = self._resolve(self.config.workspace_root) / goal.id
        path.mkdir(parents=True, exist_ok=True)
        return path.resolve()

    async def _recover(self, goal_id: str) -> Resumed:
        """What an interrupted earlier run of this goal left behind (session, spend)."""
        binding = await self.store.get_binding(goal_id)
        entries = await self.store.events(goal_id)
        last_end = max((i for i, e in enumerate(entries) if e.kind == "goal_completed"), default=-1)
        turns, usage, cost, wall = 0, Usage(), 0.0, 0.0
        for entry in entries[last_end + 1 :]:
            if entry.kind != "attempt_completed":
                continue
            data = entry.data
            turns += 1 if data.get("counted") else 0
            raw_usage: dict[str, Any] = data.get("usage") or {}
            usage = usage + Usage(**{k: int(v) for k, v in raw_usage.items()})
            cost += float(data.get("cost_usd") or 0.0)
            wall += float(data.get("duration_s") or 0.0)
        return Resumed(
            session_id=binding.session_id if binding is not None else None,
            turns=turns,
            usage=usage,
            cost_usd=cost,
            wall_time_s=wall,
        )

    # ------------------------------------------------------------------ events

    def subscribe(self) -> trio.MemoryReceiveChannel[GoalEvent]:
        """A channel receiving every event from now on; close it to unsubscribe.

        Its buffer is unbounded so a slow subscriber never stalls the goals nor loses
        events; drain it.
        """
        send, receive = trio.open_memory_channel[GoalEvent](math.inf)
        self._subscribers.append(send)
        return receive

    async def _emit(self, event: GoalEvent) -> None:
        if is_ledger_event(event):
            await self.store.append_events(event.goal_id, [event_to_ledger(event)])
        for channel in list(self._subscribers):
            try:
                channel.send_nowait(event)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._subscribers.remove(channel)

    # ------------------------------------------------------------------ control

    async def cancel_goal(self, goal_id: str, reason: str = "cancelled by operator") -> bool:
        """Cancel a goal (a running turn's process tree is stopped). False if unknown."""
        handle = self._goals.get(goal_id)
        if handle is None or not handle.control.cancel(reason):
            return False
        await self._emit(CancelRequested(goal_id, reason))
        return True

    async def pause_goal(self, goal_id: str) -> bool:
        """Pause a goal before its next turn (a running turn finishes). False if unknown."""
        handle = self._goals.get(goal_id)
        if handle is None or not handle.control.pause():
            return False
        await self._emit(GoalPaused(goal_id))
        return True

    async def resume_goal(self, goal_id: str) -> bool:
        """Resume a paused goal. False if unknown or not paused."""
        handle = self._goals.get(goal_id)
        if handle is None or not handle.control.resume():
            return False
        await self._emit(GoalResumed(goal_id))
        return True

    async def interrupt_goal(self, goal_id: str, message: str) -> bool:
        """Queue an operator message for the goal's next work turn. False if unknown."""
        handle = self._goals.get(goal_id)
        if handle is None:
            return False
        handle.control.interrupt(message)
        await self._emit(InterruptQueued(goal_id, message))
        return True

    async def set_goal_max_turns(self, goal_id: str, max_turns: int) -> bool:
        """Raise a goal's turn budget (lowering raises ValueError). False if unknown."""
        handle = self._goals.get(goal_id)
        if handle is None:
            return False
        handle.control.raise_max_turns(max_turns, handle.goal.budget.max_turns)
        await self._emit(MaxTurnsRaised(goal_id, max_turns))
        return True


def _bare_outcome(goal: Goal, kind: GoalEndKind, reason: str | None) -> GoalOutcome:
    return GoalOutcome(goal_id=goal.id, kind=kind, reason=reason)
