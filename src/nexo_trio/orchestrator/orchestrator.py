"""``Orchestrator``: runs goals concurrently in a nursery it owns.

::

    async with Orchestrator(config) as orch:
        outcome = await orch.run_goal(goal)

Each goal runs in its own task, at most ``config.max_concurrent_goals`` at once; a goal's
failure (even a bug) ends that goal, never the others. Every event of a goal is recorded in
order: stamped with the time, appended to the ledger of the store (all but live activity),
folded into the goal's state (:mod:`nexo_trio.core.goal_machine`) and sent to every
subscriber. A goal's state is that fold and nothing else: a goal taken up again after a
crash continues from its ledger exactly where it was.

Every run of a goal ends with exactly one ``GoalCompleted`` event, on every path (a bug, a
shutdown). A goal that already ended ``done`` (or on a budget it still exhausts) reports
its recorded outcome without a run.

A goal runs in one process at a time, however many share the state dir: ``start_goal``
takes the goal's lock (:mod:`.goal_lock`; :class:`GoalLocked` when another process holds
it) and the goal's run lets go of it once its end is recorded. A run taking up a goal whose
last run crashed first stops what that run's open turn left running (by its recorded
marker and CLI process: ``engine/leftovers.py``), and its ``goal_started`` says so.
"""

from __future__ import annotations

import logging
import math
import os
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from contextlib import AsyncExitStack
from functools import partial
from pathlib import Path
from types import TracebackType

import attrs
import trio

from nexo_trio.core.budget import exhausted_axis
from nexo_trio.core.checkpoints import WorkspaceProblem
from nexo_trio.core.goal import Goal
from nexo_trio.core.goal_events import (
    CancelRequested,
    ControlEvent,
    DecisionMade,
    GoalCompleted,
    GoalEvent,
    GoalPaused,
    GoalRestarted,
    GoalResumed,
    InterruptQueued,
    MaxTurnsRaised,
)
from nexo_trio.core.goal_machine import (
    Finish,
    GoalState,
    apply,
    begin,
    control_effect,
    crash_leftovers,
    effective_budget,
    end_outcome,
    initial_state,
    live_spent,
)
from nexo_trio.core.goal_outcome import GoalEndKind, GoalOutcome
from nexo_trio.core.kept_text import kept_event
from nexo_trio.core.layout import layout_problem, workspace_problem
from nexo_trio.core.redact import secret_values
from nexo_trio.core.sandbox import ApiProxy
from nexo_trio.core.settings import Config
from nexo_trio.engine.git_mounts import worktree_mounts
from nexo_trio.engine.leftovers import stop_leftovers
from nexo_trio.engine.sandbox import probe_bwrap
from nexo_trio.engine.supervisor import run_turn
from nexo_trio.gate.deciders import Decider, build_decider, close_decider
from nexo_trio.gate.goal_gate import GateRouter, GoalGate
from nexo_trio.gate.human import HumanDecider
from nexo_trio.gate.mcp_config import PERMISSION_PROMPT_TOOL, SERVER_NAME, GateDeadlines
from nexo_trio.gate.socket_server import GateServer
from nexo_trio.orchestrator.acceptance import VerifierRegistry, default_registry
from nexo_trio.orchestrator.control_ops import OPERATOR_OPS, operate
from nexo_trio.orchestrator.control_server import ControlServer
from nexo_trio.orchestrator.goal_lock import (
    GoalLock,
    GoalLocked,
    acquire_goal_lock,
    find_goal_runner,
)
from nexo_trio.orchestrator.goal_run import Confinement, GoalHandle, GoalRun, TurnPlan, TurnRunner
from nexo_trio.orchestrator.leases import FENCE_FRACTION, LeaseKeeper, new_owner
from nexo_trio.orchestrator.state_dir import StateDir
from nexo_trio.orchestrator.workspace import (
    GoalWorkspace,
    open_workspace,
    remote_repo,
    worktree_path,
)
from nexo_trio.store.base import CONTROLS, SharedStore, Store, shared_store
from nexo_trio.store.location import StoreLocation
from nexo_trio.wire.control_frames import (
    ControlFrameError,
    ControlReply,
    ControlRequest,
    request_from_data,
    to_data,
)
from nexo_trio.wire.goal_json import event_from_ledger, event_to_ledger, is_ledger_event

log = logging.getLogger("nexo_trio.orchestrator")

COMPLETION_DEADLINE = 10.0
"""How long recording a goal's end may take when the goal is being torn down."""
LEASE_READ_TIMEOUT_S = 10.0
"""How long asking the store whose lease a goal is may take (before a push)."""

DeciderFactory = Callable[[Goal], Decider]


class SandboxUnavailable(RuntimeError):
    """``sandbox.mode: bwrap`` and bubblewrap does not work here (the message says why)."""


class LayoutError(ValueError):
    """A workspace, ``workspace_root`` or ``sandbox.writable`` that would let turns write the
    state directory, or a goal's workspace that is not its own (the message says which)."""


class Orchestrator:
    """Runs goals; an async context manager owning the nursery they run in.

    Every parameter is optional::

        Orchestrator(
            Config(max_concurrent_goals=8),        # everything else: see Config
            store=MemoryStore(),                   # default: the SQLite file in state_dir
            registry=VerifierRegistry({"lint_clean": lint_clean}),  # custom checks
            decider=my_decider,                    # a Decider, or a factory goal -> Decider;
                                                   # default: the one config.permission names
            goal_env=lambda goal: {"API_TOKEN": None},  # per-goal overrides of the CLI's
                                                   # environment (None removes a variable)
            environ={"PATH": "/usr/bin", "HOME": "/home/me"},  # the base environment of
                                                   # every CLI process and of the LLM decider's
                                                   # key lookup; default: os.environ
            base_dir=Path("/srv/goals"),           # what relative state_dir, workspace_root
                                                   # and goal workspaces are relative to;
                                                   # default: the current directory
            turn_runner=run_turn,                  # runs one turn (tests script outcomes)
        )
    """

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
        permission = self.config.permission
        uses_human = permission.decider == "human" or (
            permission.decider == "chain" and "human" in permission.chain
        )
        self.human: HumanDecider | None = None
        """The people's decider (questions answered on a terminal or by ``nexo-trio
        approve|deny``), shared by every goal; ``None`` when the config has none."""
        if decider is None and uses_human:
            self.human = HumanDecider.for_tool_timeout(permission.tool_timeout_s)
        if decider is None:
            # Build one now so a bad permission config (an LLM decider without its API key
            # or SDK) fails here, before any goal starts; each goal gets its own later.
            build_decider(
                permission, environ=self.environ, human=self.human, writable=self._writable()
            )
        self.confined = False
        self.sandbox_warning: str | None = None
        self.router = GateRouter()
        self.gate: GateServer | None = None
        self._goals: dict[str, GoalHandle] = {}
        self._subscribers: list[trio.MemorySendChannel[GoalEvent]] = []
        self._emit_locks: dict[str, trio.Lock] = {}
        self._goal_locks: dict[str, GoalLock] = {}
        """The lock of each goal started here (see :mod:`.goal_lock`), held until its run
        has recorded its end."""
        self._secrets: dict[str, tuple[str, ...]] = {}
        self._stack: AsyncExitStack | None = None
        self._nursery: trio.Nursery | None = None
        self._limiter = trio.CapacityLimiter(max(1, self.config.max_concurrent_goals))
        self._epoch = 0.0
        self.owner = new_owner()
        """This orchestrator's name as a lease owner (``HOST:PID:RANDOM``)."""
        self.leases: LeaseKeeper | None = None
        """The goals' leases, when the store is one many hosts share (PostgreSQL)."""

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Orchestrator:
        # The goal machine's clock: the wall clock, advanced by trio's (monotonic, or
        # virtual in tests), so the times of one run are consistent with each other.
        self._epoch = time.time() - trio.current_time()
        await self._check_layout()
        self.confined, self.sandbox_warning = await self._sandbox_status()
        stack = AsyncExitStack()
        await stack.__aenter__()
        try:
            if self._store is None:
                self._store = await stack.enter_async_context(self.store_location.open())
            # Services (the permission gate's socket) live in their own nursery, cancelled
            # once the goals' nursery has finished: LIFO exit order of the stack.
            services = await stack.enter_async_context(trio.open_nursery())
            stack.callback(services.cancel_scope.cancel)
            self.gate = GateServer(
                self.socket_path, self.router, request_timeout_s=self.deadlines.gate_timeout_s
            )
            await services.start(self.gate.serve)
            self.control = ControlServer(self.layout.control_socket(os.getpid()), self._on_control)
            await services.start(self.control.serve)
            services.start_soon(self._stop_goals_when_the_store_is_gone)
            shared = shared_store(self._store)
            if shared is not None:
                if hasattr(shared, "fence_owner"):
                    shared.fence_owner = self.owner  # appends only under our own leases
                self.leases = LeaseKeeper(shared, self.owner, self.config.lease_timeout_s)
                await services.start(self.leases.heartbeat, self._stop_leased_goal)
                services.start_soon(self._serve_store_controls, shared)
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
            # Every goal's run released its lock; this is for one whose start failed
            # half-way (a close of a regular file: it does not block).
            for lock in self._goal_locks.values():
                lock.release_sync()
            self._goal_locks.clear()

    def now(self) -> float:
        """The goal machine's clock: seconds since the epoch."""
        return self._epoch + trio.current_time()

    async def _stop_goals_when_the_store_is_gone(self) -> None:
        """Once the store is unwritable for good (:attr:`Store.unwritable`: a full disk, a
        lock held for minutes), cancel every goal: a turn that cannot be recorded would be
        paid for and lost. Their events stay kept in memory (and are written should the
        store recover before it closes); ``nexo-trio run`` then says so, with its own exit
        code."""
        wait_unwritable = getattr(self.store, "wait_unwritable", None)
        if wait_unwritable is None:  # a store that cannot become unwritable
            return
        while True:
            reason = await wait_unwritable()
            for goal_id in self.running():
                handle = self._goals.get(goal_id)
                if handle is not None and handle.state.cancel_reason is None:
                    await self.cancel_goal(goal_id, f"state dir unwritable: {reason}")
            await trio.sleep(1.0)  # only while unwritable: then for goals started since

    async def _check_layout(self) -> None:
        """Raise :class:`LayoutError` when turns could write the state directory."""
        paths = [self.config.state_dir, self.config.workspace_root, *self.config.sandbox.writable]
        state_dir, root, *writable = await trio.to_thread.run_sync(self._resolved, paths)
        problem = layout_problem(state_dir=state_dir, workspace_root=root, writable=writable)
        if problem is not None:
            raise LayoutError(problem)

    def _resolved(self, paths: Sequence[str]) -> list[Path]:
        """``paths`` made absolute (from :attr:`base_dir`) with their symlinks followed."""
        return [self._resolve(path).resolve() for path in paths]

    def _workspace_path(self, goal: Goal) -> Path:
        if isinstance(goal.workspace, str):
            return self._resolve(goal.workspace)
        return worktree_path(self._resolve(self.config.workspace_root), goal.id)

    def _workspace_problem(self, goal: Goal) -> str | None:
        """What is wrong with where the goal's workspace is (blocking: a worker thread's)."""
        workspace = self._workspace_path(goal).resolve()
        state_dir, root = self._resolved([self.config.state_dir, self.config.workspace_root])
        problem = workspace_problem(workspace, state_dir=state_dir, workspace_root=root)
        return None if problem is None else f"goal {goal.id!r}: {problem}"

    async def _sandbox_status(self) -> tuple[bool, str | None]:
        """Whether turns run confined, and the warning to give when ``auto`` cannot."""
        settings = self.config.sandbox
        if settings.mode == "none":
            return False, None
        problem = await probe_bwrap(network=settings.network)
        if problem is None:
            return True, None
        if settings.mode == "bwrap":
            raise SandboxUnavailable(f"sandbox.mode is bwrap, but {problem}")
        return False, f"turns run unconfined: {problem}"

    def _writable(self) -> tuple[str, ...]:
        """``sandbox.writable``, relative paths taken from :attr:`base_dir`."""
        return tuple(str(self._resolve(path)) for path in self.config.sandbox.writable)

    async def _git_mounts(self, opened: GoalWorkspace) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """What a confined turn must write (and must only read) of the user's repository to
        commit in its worktree: nothing for other workspaces (see ``engine/git_mounts``)."""
        info = opened.info
        target = info.target
        if not self.confined or info.kind != "worktree" or target is None or not info.branch:
            return (), ()
        common = target.common_dir or target.git_dir
        branch = info.branch
        return await trio.to_thread.run_sync(
            lambda: worktree_mounts(common, target.git_dir, branch)
        )

    def _confinement(
        self,
        goal: Goal,
        env: Mapping[str, str | None],
        git_mounts: tuple[tuple[str, ...], tuple[str, ...]] = ((), ()),
    ) -> Confinement | None:
        """What the sandbox of the goal's turns is made of (``None``: unconfined)."""
        if not self.confined:
            return None
        settings = self.config.sandbox
        environ = {**self.environ, **self.config.claude.env}
        for key, value in env.items():
            if value is None:
                environ.pop(key, None)
            else:
                environ[key] = value
        # The engine makes the interpreter, this package and the CLI's binary visible.
        readable = [str(self.layout.root), str(self.socket_path.parent), *git_mounts[1]]
        api_proxy = None
        if not settings.network:
            api_proxy = ApiProxy(
                socket=str(self.layout.api_proxy_socket(goal.id)),
                allow=(_api_address(environ.get("ANTHROPIC_BASE_URL")),),
            )
        return Confinement(
            home=environ.get("HOME"),
            writable=(*self._writable(), *git_mounts[0]),
            readable=tuple(dict.fromkeys(readable)),
            network=settings.network,
            api_proxy=api_proxy,
        )

    @property
    def layout(self) -> StateDir:
        """The state directory and where each of its files lives."""
        return StateDir(self._resolve(self.config.state_dir))

    @property
    def store_location(self) -> StoreLocation:
        """The store the config names (a relative SQLite path is taken from ``base_dir``);
        what the orchestrator opens unless given a store."""
        store = self.config.store
        location = StoreLocation.of(store, self.layout.root)
        path = location.path
        if store is not None and path is not None and not path.is_absolute():
            return StoreLocation(str(self.base_dir / path))
        return location

    @property
    def state_dir(self) -> Path:
        """Where the ledger, bindings and per-goal files live."""
        return self.layout.root

    @property
    def store(self) -> Store:
        """The store of bindings and the ledger."""
        if self._store is None:
            raise RuntimeError("the Orchestrator is not open: use `async with Orchestrator()`")
        return self._store

    @property
    def store_unwritable(self) -> str | None:
        """Why the store could not write for good (also after the orchestrator closed), with
        how much is not written; ``None`` when everything was written."""
        return getattr(self._store, "unwritable", None)

    @property
    def socket_path(self) -> Path:
        """The permission gate's Unix socket."""
        return self.layout.gate_socket(os.getpid())

    def _make_decider(self, goal: Goal) -> Decider:
        if self._decider is None:
            return build_decider(
                self.config.permission,
                environ=self.environ,
                human=self.human,
                writable=self._writable(),
            )
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

    async def run_goal(self, goal: Goal, *, restart: bool = False) -> GoalOutcome:
        """Run a goal to its end and return its outcome (see :meth:`start_goal`)."""
        handle = await self.start_goal(goal, restart=restart)
        return await handle.wait()

    async def start_goal(self, goal: Goal, *, restart: bool = False) -> GoalHandle:
        """Start a goal in the background; control it by id, await ``handle.wait()``.

        A goal the ledger already knows continues where it was (see the module
        docstring); ``restart`` starts it over instead: new session, fresh budget.
        Raises ``ValueError`` when the goal is already running here or names a custom
        check the registry does not have, :class:`GoalLocked` (a ``ValueError``: ``goal X
        is running in process N since T``) when another process runs it, and
        :class:`LayoutError` (a ``ValueError``) when its workspace is not its own (the state
        dir, the shared workspace root, or above). The goal's lock is held from here until
        its run has recorded its end.
        """
        if self._nursery is None:
            raise RuntimeError("the Orchestrator is not open: use `async with Orchestrator()`")
        await self.check_goal(goal)
        lock = await acquire_goal_lock(self.state_dir, goal.id)
        try:
            if self.leases is not None:
                await self.leases.take(goal.id)  # GoalLeased: another host runs it
            # Folded once the lock (and lease) is ours: a run that ended elsewhere just now
            # is in it.
            handle = GoalHandle(goal, await self._recover(goal.id), restart=restart)
        except BaseException:
            if self.leases is not None and goal.id in self.leases.held:
                await self.leases.release(goal.id)
            await lock.release()
            raise
        self._goal_locks[goal.id] = lock
        self._goals[goal.id] = handle
        self._nursery.start_soon(self._run_goal, handle, name=f"goal {goal.id}")
        return handle

    async def check_goal(self, goal: Goal) -> None:
        """Raise what :meth:`start_goal` would raise for ``goal``, without starting it."""
        if goal.id in self._goals:
            raise ValueError(f"goal {goal.id!r} is already running")
        holder = await find_goal_runner(self.state_dir, goal.id)
        if holder is not None:
            raise GoalLocked(goal.id, holder)
        if self.leases is not None:
            await self.leases.check(goal.id)
        unknown = [name for name in goal.custom_check_names() if name not in self.registry]
        if unknown:
            known = ", ".join(self.registry.names) or "none"
            raise ValueError(
                f"goal {goal.id!r}: unknown custom check {unknown[0]!r} (known: {known})"
            )
        problem = await trio.to_thread.run_sync(self._workspace_problem, goal)
        if problem is not None:
            raise LayoutError(problem)
        if remote_repo(goal) is not None:
            return  # cloned and fetched when it runs (under its lease); a problem escalates it
        opened = await self._open_workspace(goal)
        if isinstance(opened, WorkspaceProblem):
            raise LayoutError(f"goal {goal.id!r}: {opened.message}")

    async def _open_workspace(
        self, goal: Goal, ledger_commit: str | None = None
    ) -> GoalWorkspace | WorkspaceProblem:
        """The goal's workspace made ready (a worktree created or reused, the default
        directory created), then checked again: a symlink planted meanwhile must not make
        another directory the goal's. ``ledger_commit``: see :func:`open_workspace`."""
        opened = await open_workspace(
            goal,
            resolve=self._resolve,
            workspace_root=self._resolve(self.config.workspace_root),
            shadow_dir=self.layout.shadow(goal.id),
            ledger_commit=ledger_commit,
        )
        if isinstance(opened, WorkspaceProblem):
            return opened
        problem = await trio.to_thread.run_sync(self._workspace_problem, goal)
        if problem is not None:
            return WorkspaceProblem(problem)
        return opened

    def running(self) -> list[str]:
        """Ids of the goals started and not yet ended."""
        return list(self._goals)

    def handle(self, goal_id: str) -> GoalHandle | None:
        """The handle of a running goal."""
        return self._goals.get(goal_id)

    async def _recover(self, goal_id: str) -> GoalState:
        """The goal's state: the fold of its ledger."""
        state = initial_state(goal_id)
        for entry in await self.store.events(goal_id):
            event = event_from_ledger(entry.kind, entry.data, at=entry.at)
            if event is not None:
                state = apply(state, event)
        return state

    async def _run_goal(self, handle: GoalHandle) -> None:
        goal = handle.goal
        started = trio.current_time()
        outcome: GoalOutcome | None = None
        recorded = False
        owned: Decider | None = None

        def end(kind: GoalEndKind, reason: str | None) -> GoalOutcome:
            return end_outcome(handle.state, goal.id, kind, reason, self.now())

        try:
            # Before a restart forgets the turn a crash left open: its processes may run.
            leftovers = await self._stop_leftovers(handle)
            if handle.restart:
                await self._emit(GoalRestarted(goal.id))
            first = begin(handle.state, goal, self.config, self.now())
            if isinstance(first, Finish):
                outcome, recorded = first.outcome, True
                return
            token = object()
            if not await handle.interruptible(lambda: self._limiter.acquire_on_behalf_of(token)):
                return
            try:
                try:
                    opened = await self._open_workspace(goal, handle.state.workspace_commit)
                except OSError as exc:
                    # A user's mistake (a file in the way, no permission): not a bug.
                    opened = WorkspaceProblem(f"{exc.strerror or exc}: {exc.filename}")
                if isinstance(opened, WorkspaceProblem):
                    reason = f"cannot use the workspace: {opened.message}"
                    outcome = end(GoalEndKind.ESCALATED, reason)
                    return
                workspace = opened.path
                decider = self._make_decider(goal)
                if self._decider is None:
                    owned = decider  # built from the config: ours to close
                goal_env = dict(self.goal_env(goal)) if self.goal_env else {}
                given = {k: v for k, v in goal_env.items() if v is not None}
                # Checks run in this process's environment, turns in the goal's.
                self._secrets[goal.id] = secret_values(
                    os.environ, {**self.environ, **self.config.claude.env, **given}
                )
                try:
                    git_mounts = await self._git_mounts(opened)
                except (OSError, ValueError) as exc:
                    reason = f"cannot confine the worktree's git dir: {exc}"
                    outcome = end(GoalEndKind.ESCALATED, reason)
                    return
                confinement = self._confinement(goal, goal_env, git_mounts)
                scratch = self.layout.scratch(goal.id)
                gate = GoalGate(
                    goal,
                    workspace=str(workspace),
                    scratch=str(scratch),
                    confined=confinement is not None,
                    decider=decider,
                    emit=self._emit,
                    timeout_s=self.deadlines.decider_timeout_s,
                    is_cancelled=lambda: self._stopping(handle),
                    current_turn=lambda: (
                        handle.state.attempt.turn if handle.state.attempt is not None else None
                    ),
                    secrets=self._secrets_of(goal.id),
                )
                self.router.register(gate)
                run = GoalRun(
                    handle,
                    config=self.config,
                    store=self.store,
                    emit=self._emit,
                    clock=self.now,
                    workspace=workspace,
                    git=opened.info,
                    registry=self.registry,
                    plan=TurnPlan(
                        mcp_config=self.layout.mcp_config(goal.id),
                        gate=gate,
                        socket_path=self.socket_path,
                        deadlines=self.deadlines,
                        permission_prompt_tool=PERMISSION_PROMPT_TOOL,
                        require_mcp_servers=(SERVER_NAME,),
                        transport=self.config.permission.transport,
                        env=goal_env,
                        scratch=scratch,
                        streams=self.layout.streams(goal.id),
                        confinement=confinement,
                        warnings=tuple(w for w in (self.sandbox_warning, opened.warning) if w),
                        # A worker stopped past this cannot renew its leases either: its
                        # unconfined turns stop by themselves. (A confined turn without a
                        # network reaches the API only through its relay; one with a
                        # network of its own is not covered: bwrap is our direct child.)
                        heartbeat_s=(
                            FENCE_FRACTION * self.config.lease_timeout_s if self.leases else None
                        ),
                    ),
                    turn_runner=self.turn_runner,
                    environ=self.environ,
                    leftovers_stopped=leftovers,
                    push_fence=partial(self._lease_problem, goal.id) if self.leases else None,
                )
                outcome = await run.run()
            finally:
                self.router.unregister(goal.id)
                with trio.CancelScope(shield=True):
                    # Off the event loop, even when cancelled. (No deadline: an unlink
                    # returns, and a deadline here would be where virtual time jumps to.)
                    await trio.to_thread.run_sync(
                        partial(self.layout.mcp_config(goal.id).unlink, missing_ok=True)
                    )
                self._limiter.release_on_behalf_of(token)
                if owned is not None:
                    await self._close_decider(goal, owned)
        except Exception as exc:
            # A bug (ours or a custom verifier's) ends this goal only.
            log.exception("goal %s failed with an internal error", goal.id)
            outcome = end(GoalEndKind.ESCALATED, f"internal error: {exc!r}")
        finally:
            outcome = await self._conclude(handle, outcome, recorded=recorded, started=started)
            del self._goals[goal.id]
            self._emit_locks.pop(goal.id, None)
            self._secrets.pop(goal.id, None)
            if self.leases is not None:
                await self.leases.release(goal.id)  # shielded and bounded
            lock = self._goal_locks.pop(goal.id, None)
            if lock is not None:
                await lock.release()  # shielded: its end is recorded, another may run it
            handle.finish(outcome)

    async def _stop_leftovers(self, handle: GoalHandle) -> tuple[str, ...]:
        """Stop what still runs of the turn a crashed run left open (found by its recorded
        marker and CLI process; a reused pid is never taken): ``PID NAME`` of each."""
        attempt = crash_leftovers(handle.state)
        if attempt is None:
            return ()
        stopped = await stop_leftovers(
            attempt.process, attempt.marker, grace=self.config.kill_grace_s
        )
        if stopped:
            log.warning(
                "goal %s: stopped %d process(es) left by the crashed run's turn %d: %s",
                handle.goal_id,
                len(stopped),
                attempt.turn,
                ", ".join(stopped),
            )
        return stopped

    def _stopping(self, handle: GoalHandle) -> bool:
        """Whether the goal's running turn is being stopped: cancelled, or a budget reached
        mid-turn (the consecutive denials, the wall time, the tokens or cost the turn has
        spent so far). Its gate allows nothing more: an allow slipping in before the stop
        would run the call and undo the denials' count."""
        state = handle.state
        if state.cancel_reason is not None:
            return True
        budget = effective_budget(handle.goal, state)
        spent = live_spent(state, self.now(), handle.live_spend)
        return exhausted_axis(budget, spent) is not None

    async def _conclude(
        self, handle: GoalHandle, outcome: GoalOutcome | None, *, recorded: bool, started: float
    ) -> GoalOutcome:
        """Record the end of the goal's run (unless ``recorded``: reported from the ledger).

        Without an outcome the goal was cancelled before its run began, or from outside
        (a shutdown): it ends ``cancelled`` with what it spent."""
        goal = handle.goal
        cancels = [c for c in handle.take_pending() if isinstance(c, CancelRequested)]
        if outcome is None:
            given = cancels[0].reason if cancels else handle.state.cancel_reason
            reason = given or "orchestrator shut down"
            outcome = end_outcome(handle.state, goal.id, GoalEndKind.CANCELLED, reason, self.now())
        if recorded:
            return outcome
        # Elapsed since the goal was started here (a wait for a slot included); what the
        # caller gets is what the ledger keeps (an internal error's text redacted).
        outcome = attrs.evolve(outcome, elapsed_s=trio.current_time() - started)
        outcome = kept_event(outcome, self._secrets_of(goal.id))
        events: list[GoalEvent] = [*cancels[:1], GoalCompleted(goal.id, outcome)]
        # Shielded: a goal torn down by cancellation still records how it ended.
        with trio.CancelScope(shield=True, deadline=trio.current_time() + COMPLETION_DEADLINE):
            await self._record_quietly(goal, events)
        return outcome

    async def _record_quietly(self, goal: Goal, events: Sequence[GoalEvent]) -> None:
        for event in events:
            try:
                await self._emit(event)
            except Exception:
                log.exception("could not record %s of goal %s", type(event).__name__, goal.id)

    # ------------------------------------------------------------------ events

    def _secrets_of(self, goal_id: str) -> tuple[str, ...]:
        """The secret values to redact from the goal's texts: those of its turns' environment
        once it is known, else of the orchestrator's and ``claude.env``."""
        found = self._secrets.get(goal_id)
        if found is None:
            found = secret_values(os.environ, {**self.environ, **self.config.claude.env})
        return found

    def subscribe(self) -> trio.MemoryReceiveChannel[GoalEvent]:
        """A channel receiving every event from now on; close it to unsubscribe.

        Its buffer is unbounded so a slow subscriber never stalls the goals nor loses
        events; drain it.
        """
        send, receive = trio.open_memory_channel[GoalEvent](math.inf)
        self._subscribers.append(send)
        return receive

    async def _emit(self, event: GoalEvent) -> None:
        # One goal's events reach the ledger, its state and the subscribers in the same
        # order, even when emitted concurrently (a gate decision while the turn reports
        # activity): the store's batched commit wakes its writers in no particular order.
        # trio.Lock is FIFO.
        lock = await self._emit_turn(event)
        try:
            # What is recorded, folded and shown is redacted and bounded (see kept_text).
            # Stamped and kept in one new record.
            event = kept_event(event, self._secrets_of(event.goal_id), changes={"at": self.now()})
            handle = self._goals.get(event.goal_id)
            # Shielded: once the store has the event it writes it even if we are cancelled
            # meanwhile (a write kept while the store cannot write returns within the
            # store's own bound), so the state and the subscribers must get it too.
            with trio.CancelScope(shield=True):
                if is_ledger_event(event):
                    await self.store.append_events(event.goal_id, [event_to_ledger(event)])
                    # The live state folds exactly what the ledger holds: recovery too.
                    if handle is not None:
                        handle.applied(event)
                for channel in list(self._subscribers):
                    try:
                        channel.send_nowait(event)
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        self._subscribers.remove(channel)
        finally:
            lock.release()

    async def _emit_turn(self, event: GoalEvent) -> trio.Lock:
        """Take the goal's emit lock (the caller releases it). A gate decision waits for it
        shielded: the CLI has its answer, so the ledger and the denials' count must have it
        too, even when it waits behind another event's slow write (a ledger locked by another
        process; the store's own bounds end that wait), however short its caller's
        deadline."""
        lock = self._emit_locks.get(event.goal_id)
        if lock is None:
            lock = self._emit_locks[event.goal_id] = trio.Lock()
        decision = isinstance(event, DecisionMade)
        if not decision:
            # As lock.acquire() would: a cancelled caller records nothing.
            await trio.lowlevel.checkpoint_if_cancelled()
        try:
            # Free (the usual case): taken at once, no cancel scope, no wait. (A released
            # trio.Lock is handed to its first waiter: free means nobody waits.)
            lock.acquire_nowait()
        except trio.WouldBlock:
            if decision:
                with trio.CancelScope(shield=True):
                    await lock.acquire()
            else:  # no cancel scope for the others: one per event adds up at 100 goals
                await lock.acquire()
        return lock

    # ------------------------------------------------------------------ control

    async def _lease_problem(self, goal_id: str) -> str | None:
        """Why this orchestrator may not act for the goal on shared things (push its refs)
        now: its lease is lost, another's, or cannot be read; ``None`` while it holds it."""
        leases = self.leases
        if leases is None:
            return None
        if goal_id in leases.lost:
            return "its lease was lost to another worker"
        try:
            with trio.fail_after(LEASE_READ_TIMEOUT_S):
                lease = await leases.store.lease_of(goal_id)
        except (Exception, trio.TooSlowError) as exc:
            return f"whose lease it is cannot be read ({exc or type(exc).__name__})"
        if lease is None or lease.owner != leases.owner:
            return "its lease is not this worker's"
        return None

    async def _stop_leased_goal(self, goal_id: str, reason: str) -> None:
        """Stop a goal whose lease is lost (or cannot be renewed): see :mod:`.leases`."""
        await self.cancel_goal(goal_id, f"stopped here: {reason}")

    async def _serve_store_controls(self, store: SharedStore) -> None:
        """Answer the control requests other hosts leave in the store for the goals that
        run here (``nexo-trio pause GOAL --store URL`` anywhere), as the control socket
        answers this host's: woken by the store's notifications, looking again every
        second at the latest."""
        mark = store.changes_seen()
        while True:
            await store.wait_changed(1.0, (CONTROLS,), since=mark)
            mark = store.changes_seen()  # before the look: a request meanwhile wakes us
            running = self.running()
            if not running:
                continue
            try:
                pending = await store.pending_controls(running)
            except Exception as exc:  # the store's trouble: try again at the next wake-up
                log.warning("could not read control requests: %s", exc)
                continue
            for message in pending:
                reply = await self._store_control(message.request)
                try:
                    await store.answer_control(message.id, reply)
                except Exception as exc:
                    log.warning("could not answer control request %d: %s", message.id, exc)

    async def _store_control(self, data: dict[str, object]) -> dict[str, object]:
        """One control request from the store, as the control socket would answer it."""
        try:
            request = request_from_data(data)
        except ControlFrameError as exc:
            reply = ControlReply(ok=False, message=str(exc), problem="invalid")
        else:
            reply = await self._on_control(request)
        return to_data(reply)

    async def _on_control(self, request: ControlRequest) -> ControlReply:
        """A request of another ``nexo-trio`` process (see :mod:`.control_server`): an
        operator control (:mod:`.control_ops`), or an answer to the human decider."""
        if request.op in OPERATOR_OPS:
            return await operate(self, request)
        handle = self._goals.get(request.goal_id)
        if handle is None:
            return ControlReply(
                False, f"goal {request.goal_id!r} is not running here", "not_running"
            )
        human = self.human
        if human is None:
            return ControlReply(
                False,
                f"goal {request.goal_id!r} has no human decider to answer (permission)",
                "invalid",
            )
        waiting = human.pending(request.goal_id)
        allow = request.op == "approve"
        if not waiting or not human.answer(
            None,
            allow,
            request.reason,
            by=request.by or "another terminal",
            goal_id=request.goal_id,
        ):
            return ControlReply(False, f"no permission question of goal {request.goal_id!r} waits")
        question = waiting[0]
        verb = "approved" if allow else "denied"
        return ControlReply(True, f"{verb} {question.tool_name}: {question.summary}")

    async def _control(self, control: ControlEvent) -> bool:
        handle = self._goals.get(control.goal_id)
        if handle is None:
            return False
        if not control_effect(handle.preview(), handle.goal, control):
            return False
        if not handle.hold(control):
            await self._emit(control)
        return True

    async def cancel_goal(self, goal_id: str, reason: str = "cancelled by operator") -> bool:
        """Cancel a goal (a running turn's process tree is stopped). False if unknown or
        already cancelled."""
        return await self._control(CancelRequested(goal_id, reason))

    async def pause_goal(self, goal_id: str) -> bool:
        """Pause a goal before its next turn (a running turn finishes). False if unknown
        or already paused."""
        return await self._control(GoalPaused(goal_id))

    async def resume_goal(self, goal_id: str) -> bool:
        """Resume a paused goal. False if unknown or not paused."""
        return await self._control(GoalResumed(goal_id))

    async def interrupt_goal(self, goal_id: str, message: str, *, now: bool = False) -> bool:
        """Queue an operator message for the goal's next work turn (an empty one raises
        ValueError); a sleeping goal wakes up for it. False if unknown.

        ``now``: also write it into the running turn at once, when its transport takes
        messages (``permission.transport: stdio``; :meth:`takes_messages`). It stays
        queued until the CLI takes it (``interrupt_delivered``), so a turn that ends
        first, or a crash, leaves it for the next turn: delivered at least once."""
        if not await self._control(InterruptQueued(goal_id, message)):
            return False
        handle = self._goals.get(goal_id)
        if now and handle is not None:
            handle.say(message)
        return True

    def takes_messages(self, goal_id: str) -> bool:
        """Whether the goal has a running turn that would take a message now (``interrupt
        --now`` reaches it mid-turn instead of the next turn)."""
        handle = self._goals.get(goal_id)
        return handle is not None and handle.takes_messages()

    async def set_goal_max_turns(self, goal_id: str, max_turns: int) -> bool:
        """Raise a goal's turn budget (lowering raises ValueError). False if unknown."""
        return await self._control(MaxTurnsRaised(goal_id, max_turns))


def _api_address(base_url: str | None) -> str:
    """The ``host:port`` the CLI talks to for the API (``ANTHROPIC_BASE_URL``)."""
    url = urllib.parse.urlsplit(base_url or "https://api.anthropic.com")
    port = url.port or (80 if url.scheme == "http" else 443)
    return f"{url.hostname or 'api.anthropic.com'}:{port}"
