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

import hashlib
import logging
import math
import os
import tempfile
from collections.abc import Callable, Mapping
from contextlib import AsyncExitStack
from pathlib import Path
from types import TracebackType

import attrs
import trio

from nexo_trio.core.acceptance import Failure, Verdict
from nexo_trio.core.events import Usage
from nexo_trio.core.goal import Goal
from nexo_trio.core.goal_events import (
    AcceptanceChecked,
    AttemptCompleted,
    CancelRequested,
    GoalCompleted,
    GoalEvent,
    GoalPaused,
    GoalResumed,
    InterruptQueued,
    MaxTurnsRaised,
    WokeUp,
    event_kind,
)
from nexo_trio.core.goal_outcome import GoalEndKind, GoalOutcome
from nexo_trio.core.settings import Config
from nexo_trio.engine.supervisor import run_turn
from nexo_trio.gate.deciders import Decider, build_decider, close_decider
from nexo_trio.gate.goal_gate import GateRouter, GoalGate
from nexo_trio.gate.mcp_config import (
    PERMISSION_PROMPT_TOOL,
    SERVER_NAME,
    GateDeadlines,
    write_mcp_config,
)
from nexo_trio.gate.socket_server import MAX_SOCKET_PATH, GateServer
from nexo_trio.orchestrator.acceptance import VerifierRegistry, default_registry
from nexo_trio.orchestrator.control import GoalControl
from nexo_trio.orchestrator.goal_loop import GoalLoop, Resumed, TurnPlan, TurnRunner
from nexo_trio.store.base import Store
from nexo_trio.store.sqlite import open_sqlite_store
from nexo_trio.wire.goal_json import event_from_ledger, event_to_ledger, is_ledger_event

log = logging.getLogger("nexo_trio.orchestrator")

DB_NAME = "nexo.db"
COMPLETION_DEADLINE = 10.0
"""How long recording a goal's end may take when the goal is being torn down."""

DeciderFactory = Callable[[Goal], Decider]

_GOAL_COMPLETED = event_kind(GoalCompleted)


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
        decider: Decider | DeciderFactory | None = None,
        goal_env: Callable[[Goal], Mapping[str, str | None]] | None = None,
        environ: Mapping[str, str] | None = None,
        base_dir: Path | None = None,
    ) -> None:
        self.config = config or Config()
        self._store = store
        self.registry = registry or default_registry()
        self.turn_runner = turn_runner
        self._decider = decider
        self.goal_env = goal_env
        self.environ = dict(os.environ if environ is None else environ)
        self.base_dir = base_dir or Path.cwd()
        self.deadlines = GateDeadlines.from_tool_timeout(self.config.permission.tool_timeout_s)
        if decider is None:
            # Build one now so a bad permission config (an LLM decider without its API key
            # or SDK) fails here, before any goal starts; each goal gets its own later.
            build_decider(self.config.permission, environ=self.environ)
        self.router = GateRouter()
        self.gate: GateServer | None = None
        self._goals: dict[str, GoalHandle] = {}
        self._subscribers: list[trio.MemorySendChannel[GoalEvent]] = []
        self._emit_locks: dict[str, trio.Lock] = {}
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
            # Services (the permission gate's socket) live in their own nursery, cancelled
            # once the goals' nursery has finished: LIFO exit order of the stack.
            services = await stack.enter_async_context(trio.open_nursery())
            stack.callback(services.cancel_scope.cancel)
            self.gate = GateServer(
                self.socket_path, self.router, request_timeout_s=self.deadlines.gate_timeout_s
            )
            await services.start(self.gate.serve)
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

    @property
    def socket_path(self) -> Path:
        """The permission gate's Unix socket (in the state dir when the path is short enough
        for a socket address, else in a private directory under the temp dir)."""
        preferred = self.state_dir / "run" / "gate.sock"
        if len(os.fsencode(preferred)) <= MAX_SOCKET_PATH:
            return preferred
        digest = hashlib.sha256(os.fsencode(self.state_dir.resolve())).hexdigest()[:16]
        return Path(tempfile.gettempdir()) / f"nexo-trio-{os.getuid()}" / f"{digest}.sock"

    def _make_decider(self, goal: Goal) -> Decider:
        if self._decider is None:
            return build_decider(self.config.permission, environ=self.environ)
        if callable(self._decider) and not hasattr(self._decider, "decide"):
            return self._decider(goal)
        return self._decider  # type: ignore[return-value]

    async def _close_decider(self, goal: Goal, decider: Decider) -> None:
        """Release a goal's decider (the LLM decider's connections), even when cancelled."""
        with trio.CancelScope(shield=True, deadline=trio.current_time() + COMPLETION_DEADLINE):
            try:
                await close_decider(decider)
            except Exception:
                log.exception("could not close the decider of goal %s", goal.id)

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
        owned: Decider | None = None

        def end(kind: GoalEndKind, reason: str | None) -> GoalOutcome:
            # With what the loop spent, once it exists.
            if loop is not None:
                return loop._end(kind, reason)
            return GoalOutcome(goal_id=goal.id, kind=kind, reason=reason)

        try:
            token = object()
            acquired = await control.interruptible(
                lambda: self._limiter.acquire_on_behalf_of(token)
            )
            if not acquired:
                outcome = end(GoalEndKind.CANCELLED, control.cancel_reason)
                return
            mcp_config = self.state_dir / "gate" / f"{_file_safe(goal.id)}.mcp.json"
            try:
                try:
                    workspace = self._workspace(goal)
                except OSError as exc:
                    # A user's mistake (a file in the way, no permission): not a bug.
                    reason = f"cannot use the workspace: {exc.strerror or exc}: {exc.filename}"
                    outcome = end(GoalEndKind.ESCALATED, reason)
                    return
                decider = self._make_decider(goal)
                if self._decider is None:
                    owned = decider  # built from the config: ours to close
                gate = GoalGate(
                    goal,
                    workspace=str(workspace),
                    decider=decider,
                    emit=self._emit,
                    timeout_s=self.deadlines.decider_timeout_s,
                    is_cancelled=lambda: control.cancelled,
                )
                self.router.register(gate)
                write_mcp_config(
                    mcp_config,
                    socket_path=self.socket_path,
                    goal_id=goal.id,
                    deadlines=self.deadlines,
                )
                loop = GoalLoop(
                    goal,
                    config=self.config,
                    store=self.store,
                    control=control,
                    emit=self._emit,
                    workspace=workspace,
                    registry=self.registry,
                    resumed=await self._recover(goal.id),
                    plan=TurnPlan(
                        mcp_config=mcp_config,
                        permission_prompt_tool=PERMISSION_PROMPT_TOOL,
                        require_mcp_servers=(SERVER_NAME,),
                        env=dict(self.goal_env(goal)) if self.goal_env else {},
                    ),
                    gate=gate,
                    turn_runner=self.turn_runner,
                )
                outcome = await loop.run()
            finally:
                self.router.unregister(goal.id)
                mcp_config.unlink(missing_ok=True)
                self._limiter.release_on_behalf_of(token)
                if owned is not None:
                    await self._close_decider(goal, owned)
        except Exception as exc:
            # A bug (ours or a custom verifier's) ends this goal only.
            log.exception("goal %s failed with an internal error", goal.id)
            outcome = end(GoalEndKind.ESCALATED, f"internal error: {exc!r}")
        finally:
            if outcome is None:
                # Cancelled from outside (the orchestrator is shutting down).
                outcome = end(
                    GoalEndKind.CANCELLED, control.cancel_reason or "orchestrator shut down"
                )
            outcome = attrs.evolve(outcome, elapsed_s=trio.current_time() - started)
            # Shielded: a goal torn down by cancellation still records how it ended.
            with trio.CancelScope(shield=True, deadline=trio.current_time() + COMPLETION_DEADLINE):
                try:
                    await self._emit(GoalCompleted(goal.id, outcome))
                except Exception:
                    log.exception("could not record the end of goal %s", goal.id)
            del self._goals[goal.id]
            self._emit_locks.pop(goal.id, None)
            handle._finish(outcome)

    def _workspace(self, goal: Goal) -> Path:
        if goal.workspace:
            path = self._resolve(goal.workspace)
        else:
            path = self._resolve(self.config.workspace_root) / goal.id
        path.mkdir(parents=True, exist_ok=True)
        return path.resolve()

    async def _recover(self, goal_id: str) -> Resumed:
        """What an interrupted earlier run of this goal left behind: its session, what it
        spent, and the acceptance failures the next prompt still has to show."""
        binding = await self.store.get_binding(goal_id)
        entries = await self.store.events(goal_id)
        last_end = max((i for i, e in enumerate(entries) if e.kind == _GOAL_COMPLETED), default=-1)
        turns, usage, cost, wall = 0, Usage(), 0.0, 0.0
        failures: tuple[Failure, ...] = ()
        for entry in entries[last_end + 1 :]:
            event = event_from_ledger(entry.kind, entry.data)
            match event:
                case AttemptCompleted():
                    turns += 1 if event.counted else 0
                    usage = usage + event.usage
                    cost += event.cost_usd
                    wall += event.duration_s
                case AcceptanceChecked(results=results):
                    failures = Verdict(results=results).failures
                case WokeUp():
                    failures = ()
                case _:
                    pass
        return Resumed(
            session_id=binding.session_id if binding is not None else None,
            turns=turns,
            usage=usage,
            cost_usd=cost,
            wall_time_s=wall,
            failures=failures,
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
        # One goal's events reach the ledger and the subscribers in the same order, even
        # when emitted concurrently (a gate decision while the turn reports activity): the
        # store's batched commit wakes its writers in no particular order. trio.Lock is FIFO.
        lock = self._emit_locks.setdefault(event.goal_id, trio.Lock())
        async with lock:
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


def _file_safe(goal_id: str) -> str:
    """A file name for a goal id (ids are free-form strings)."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in goal_id)[:80]
    digest = hashlib.sha256(goal_id.encode()).hexdigest()[:8]
    return f"{safe}-{digest}"
