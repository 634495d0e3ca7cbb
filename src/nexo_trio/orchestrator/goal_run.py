"""The shell that runs one goal: it asks the goal machine for each step, runs it, and records
the events the step produced. It decides nothing and holds no goal state of its own: the
state is the fold of the goal's events (:class:`GoalHandle.state`), kept by the orchestrator
as it records them.

::

    next_step(state, goal, config, now)
       Begin       -> record goal_started, then the operator controls that waited for it;
                      a worktree of a remote made fresh here goes back to the ledger's
                      last commit of it (workspace_restored)
       Record      -> record the machine's decision (replay judgement, sleep, wake-up, stuck)
       RunTurn     -> checkpoint the workspace (a work turn of a checkpointed workspace),
                      record attempt_started (with the turn's marker), run the CLI
                      (record turn_spawned: who it is), record attempt_completed with
                      what the turn changed; a remote's worktree pushes each checkpoint
                      (a push that fails: workspace_warning)
       RunAcceptance -> run the checks, record acceptance_checked
       Restore     -> put the workspace back to a checkpoint, record rolled_back
       Sleep, Wait -> wait until the time comes or the state changes
       Finish      -> record the announcements; the orchestrator records goal_completed

While a step runs, every recorded event (a decision of the gate, an operator's cancel) may
change what the machine says; when :func:`supersedes` says the step no longer stands, the
step is stopped: a turn gracefully (its end is still recorded), a check or a wait at once.
"""

from __future__ import annotations

import logging
import math
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import trio

from nexo_trio.core.budget import LiveSpend
from nexo_trio.core.checkpoints import (
    DiffStat,
    GitTarget,
    WorkspaceProblem,
    checkpoint_ref,
    left_ref,
)
from nexo_trio.core.events import Event, Spawned, SystemInit
from nexo_trio.core.goal import Goal
from nexo_trio.core.goal_events import (
    AcceptanceChecked,
    AttemptStarted,
    CancelRequested,
    CheckpointFailed,
    ControlEvent,
    GoalEvent,
    InterruptDelivered,
    ReplayDecided,
    RolledBack,
    SessionBound,
    TurnActivity,
    TurnSpawned,
    WorkspaceInfo,
    WorkspaceRestored,
    WorkspaceWarning,
)
from nexo_trio.core.goal_machine import (
    Begin,
    Finish,
    GoalState,
    Record,
    Restore,
    RunAcceptance,
    RunTurn,
    Sleep,
    Step,
    Wait,
    apply,
    begin,
    checkpoint_of,
    fold,
    next_step,
    run_started,
    supersedes,
    turn_command,
    turn_completed,
    turn_started,
)
from nexo_trio.core.goal_outcome import GoalOutcome
from nexo_trio.core.permission import unavailable
from nexo_trio.core.record import Transcribing, transcribe
from nexo_trio.core.remotes import resume_point, without_userinfo
from nexo_trio.core.sandbox import ApiProxy, SandboxPlan
from nexo_trio.core.settings import Config, PermissionTransport
from nexo_trio.core.stdio_control import Reply, StdioControl, ToolAsk
from nexo_trio.core.turn import TurnState, turn_spend
from nexo_trio.engine.conversation import Conversation
from nexo_trio.engine.leftovers import process_identity
from nexo_trio.engine.sandbox import prepare_sandbox
from nexo_trio.engine.supervisor import TURN_MARKER_VAR, TurnResult, run_turn
from nexo_trio.gate.goal_gate import GoalGate, new_turn_token
from nexo_trio.gate.mcp_config import GateDeadlines, write_mcp_config
from nexo_trio.gate.stdio_gate import answer_ask, permission_request, record_reply, settle
from nexo_trio.orchestrator.acceptance import Baseline, VerifierRegistry, evaluate
from nexo_trio.orchestrator.git_workspace import (
    PUSH_TIMEOUT,
    checkpoint,
    clear_fresh,
    diff_stat,
    has_commit,
    is_fresh,
    push_checkpoints,
    remember_commit,
    remembered_commit,
    restore,
    set_aside,
)
from nexo_trio.orchestrator.transcripts import (
    KeptCopy,
    claude_dir,
    keep_transcript,
    restore_transcript,
)
from nexo_trio.store.base import SharedStore, Store, shared_store

STOPPING_PUSH_S = 5.0
"""How long the push of a cancelled run's last turn may take (a worker handing its goals
back waits ``kill_grace`` and 10 s for them: see ``orchestrator/worker.py``)."""

Emit = Callable[[GoalEvent], Awaitable[None]]
TurnRunner = Callable[..., Awaitable[TurnResult]]
"""``run_turn`` or a stand-in with its signature (tests script outcomes with one)."""
Clock = Callable[[], float]
"""Seconds since the epoch."""
CHANGES_DEADLINE = 120.0
"""How long the diff stat after a turn may take (shielded: the turn's end must be recorded)."""

log = logging.getLogger("nexo_trio.orchestrator")


class GoalHandle:
    """A started goal: its live state (the fold of its events), its outcome once it ended.

    Operator controls given before the goal's run has begun (while it waits for a slot)
    wait here and are recorded right after its ``goal_started``: a new run drops the
    controls of the run before it, not the ones meant for it.
    """

    def __init__(self, goal: Goal, state: GoalState, *, restart: bool = False) -> None:
        self.goal = goal
        self.restart = restart
        self._state = state
        self._changed = trio.Event()
        self._done = trio.Event()
        self._outcome: GoalOutcome | None = None
        self._pending: list[ControlEvent] = []
        self._live = False
        self._waits: set[trio.CancelScope] = set()
        self.live_spend: LiveSpend | None = None
        """What the running turn has spent so far (read from its stream, not recorded)."""
        self.conversation: Conversation | None = None
        """The running turn's stdin on the stdio transport (``None``: no such turn)."""

    @property
    def goal_id(self) -> str:
        """The goal's id."""
        return self.goal.id

    @property
    def state(self) -> GoalState:
        """What the goal machine knows about the goal now."""
        return self._state

    @property
    def outcome(self) -> GoalOutcome | None:
        """The outcome once the goal ended."""
        return self._outcome

    async def wait(self) -> GoalOutcome:
        """Wait until the goal ends; return its outcome."""
        await self._done.wait()
        assert self._outcome is not None
        return self._outcome

    # ------------------------------------------------------------------ for the shell

    def preview(self) -> GoalState:
        """The state operator controls are judged against: once the run began, the live
        state; before, the state the run will begin with, controls given so far applied."""
        if self._live:
            return self._state
        began = apply(
            self._state, run_started(self.goal, Begin(), self._state, workspace="", pid=None)
        )
        return fold(self._pending, began)

    def hold(self, control: ControlEvent) -> bool:
        """Keep a control for the run about to begin; ``False`` once it is live (record the
        control at once instead)."""
        if self._live:
            return False
        self._pending.append(control)
        if isinstance(control, CancelRequested):
            for scope in self._waits:
                scope.cancel()
        return True

    async def go_live(self, emit: Emit) -> None:
        """The run has begun: record the controls that waited for it, in order."""
        while self._pending:
            await emit(self._pending.pop(0))
        self._live = True

    def take_pending(self) -> list[ControlEvent]:
        """The controls still waiting (the run never began)."""
        pending, self._pending = self._pending, []
        return pending

    async def interruptible(self, fn: Callable[[], Awaitable[object]]) -> bool:
        """Run ``fn`` (a wait before the run begins) unless a cancel comes; True if it ran
        to its end."""
        with trio.CancelScope() as scope:
            if any(isinstance(c, CancelRequested) for c in self._pending):
                scope.cancel()
            self._waits.add(scope)
            try:
                await fn()
            finally:
                self._waits.discard(scope)
        return not scope.cancelled_caught

    def say(self, message: str) -> bool:
        """Write an operator's message into the running turn at once; whether it was
        written (a running turn on the stdio transport, not ending). It counts as
        delivered only once the CLI takes it (``interrupt_delivered``)."""
        conversation = self.conversation
        return conversation is not None and conversation.say(message)

    def takes_messages(self) -> bool:
        """Whether a running turn would take a message now (see :meth:`say`)."""
        conversation = self.conversation
        return conversation is not None and conversation.takes_messages

    def set_live_spend(self, live: LiveSpend | None) -> None:
        """The running turn's spend so far (``None``: no turn running); wakes whoever
        waits for a change, as a budget may now be reached mid-turn."""
        self.live_spend = live
        self._changed.set()
        self._changed = trio.Event()

    def applied(self, event: GoalEvent) -> None:
        """Fold a recorded event into the state and wake whoever waits for a change."""
        self._state = apply(self._state, event)
        self._changed.set()
        self._changed = trio.Event()

    async def changed(self) -> None:
        """Wait for the next recorded event."""
        await self._changed.wait()

    def finish(self, outcome: GoalOutcome) -> None:
        """The goal ended with ``outcome``."""
        self._outcome = outcome
        self._done.set()


@attrs.frozen
class Confinement:
    """How a goal's turns are confined: what the sandbox of each turn is made of."""

    home: str | None = None
    """The CLI's ``HOME`` (its ``.claude`` dir and ``.claude.json`` are writable)."""
    writable: tuple[str, ...] = ()
    readable: tuple[str, ...] = ()
    """Paths the turn needs to see under the (private) /tmp: the state dir, the binaries."""
    network: bool = True
    api_proxy: ApiProxy | None = None


@attrs.frozen
class TurnPlan:
    """What every turn of a goal is started with besides the config: the gate's parts, the
    goal's scratch dir (its turns' ``TMPDIR``) and the sandbox (``None``: unconfined)."""

    mcp_config: Path | None = None
    gate: GoalGate | None = None
    """The goal's gate: each turn gets a fresh token from it, which goes into the turn's MCP
    config; it answers no other turn's permission server."""
    socket_path: Path | None = None
    deadlines: GateDeadlines | None = None
    permission_prompt_tool: str | None = None
    require_mcp_servers: tuple[str, ...] = ()
    transport: PermissionTransport = "mcp"
    """``stdio``: the turns ask through the CLI's control protocol, answered by ``gate``
    in this process (no MCP config, server or socket)."""
    env: dict[str, str | None] = attrs.field(factory=dict)
    scratch: Path | None = None
    streams: Path | None = None
    """Where each turn's raw stdout is kept, whole (``None``: nowhere)."""
    confinement: Confinement | None = None
    warnings: tuple[str, ...] = ()
    heartbeat_s: float | None = None
    """An unconfined turn stops by itself when this process is silent that long (see
    ``run_turn``): set where leases are, to what a worker waits before it stops its goals."""


class GoalRun:
    """Runs one goal's steps until the machine says it is finished (one use)."""

    def __init__(
        self,
        handle: GoalHandle,
        *,
        config: Config,
        store: Store,
        emit: Emit,
        clock: Clock,
        workspace: Path,
        registry: VerifierRegistry,
        git: WorkspaceInfo | None = None,
        plan: TurnPlan,
        turn_runner: TurnRunner = run_turn,
        environ: Mapping[str, str] | None = None,
        leftovers_stopped: tuple[str, ...] = (),
        push_fence: Callable[[], Awaitable[str | None]] | None = None,
    ) -> None:
        self.handle = handle
        self.goal = handle.goal
        self.config = config
        self.store = store
        self.emit = emit
        self.clock = clock
        self.workspace = workspace
        self.git = git
        self.registry = registry
        self.plan = plan
        self.turn_runner = turn_runner
        self.environ = environ
        self.leftovers_stopped = leftovers_stopped
        """What was left of the turn a crash interrupted, stopped before this run (said in
        its ``goal_started``)."""
        self.push_fence = push_fence
        """Why this worker may not push the goal's refs now (its lease is another's), or
        ``None``: asked before every push (``None``: no leases, always pushes)."""
        self._kept_transcript: KeptCopy | None = None
        """What this run last kept of its session's transcript (only what the CLI added
        since is sent next)."""
        self._remembered: str | None = None
        """The workspace commit last remembered in a remote's clone (see
        :meth:`_remember_workspace`)."""

    def _next(self) -> Step:
        state, live = self.handle.state, self.handle.live_spend
        return next_step(state, self.goal, self.config, self.clock(), live)

    async def run(self) -> GoalOutcome:
        """Run the goal's steps; return how it ended."""
        # A process taking the goal up always begins a run of its own (a run the ledger
        # shows as running is one that crashed), or reports how the goal ended.
        step: Step = begin(self.handle.state, self.goal, self.config, self.clock())
        while True:
            match step:
                case Begin():
                    started = run_started(
                        self.goal,
                        step,
                        self.handle.state,
                        workspace=str(self.workspace),
                        pid=os.getpid(),
                        confined=self.plan.confinement is not None,
                        warnings=self.plan.warnings,
                        git=self.git,
                        leftovers_stopped=self.leftovers_stopped,
                    )
                    await self.emit(started)
                    await self.handle.go_live(self.emit)
                    await self._resume_here()
                case Record(events=events):
                    for event in events:
                        await self._record(event)
                case RunTurn():
                    await self._turn(step)
                case RunAcceptance():
                    await self._acceptance(step)
                case Restore():
                    await self._restore(step)
                case Sleep() | Wait():
                    await self._hold(step)
                case Finish(outcome=outcome, announce=announce):
                    for event in announce:
                        await self.emit(event)
                    return outcome
            step = self._next()

    async def _record(self, event: GoalEvent) -> None:
        if isinstance(event, ReplayDecided) and event.invalid_session is not None:
            # The bindings table is an index for people (`nexo-trio bindings`): it shows
            # the session the CLI refused as invalid. The goal's session is the ledger's.
            await self.store.mark_invalid(self.goal.id, event.invalid_session)
        await self.emit(event)

    # ------------------------------------------------------------------ steps

    @property
    def target(self) -> GitTarget | None:
        """What the goal's turns are checkpointed in (``None``: not checkpointed)."""
        return self.git.target if self.git is not None else None

    async def _checkpoint(self, step: RunTurn) -> RunTurn | None:
        """The step with its checkpoint taken (a work turn of a checkpointed workspace that
        has none yet); ``None`` when it could not be (recorded: the goal escalates)."""
        target = self.target
        if target is None or step.compact or step.checkpoint is not None:
            return step
        # The ref of a turn is its first attempt's: a retry keeps it.
        first = checkpoint_of(self.handle.state, step.turn) is None
        sha = await checkpoint(target, self.goal.id, step.turn, update_ref=first)
        if isinstance(sha, WorkspaceProblem):
            await self.emit(CheckpointFailed(self.goal.id, step.turn, sha.message))
            return None
        # A retry's checkpoint is on no ref: only the branch goes.
        await self._push(
            step.turn, [(sha, checkpoint_ref(self.goal.id, step.turn))] if first else []
        )
        return attrs.evolve(step, checkpoint=sha)

    @property
    def remote(self) -> WorkspaceInfo | None:
        """The workspace's info when it is a worktree of a remote repository's clone."""
        info = self.git
        if info is None or info.remote is None or info.repo is None or info.target is None:
            return None
        return info

    async def _push(self, turn: int, refs: list[tuple[str, str]]) -> None:
        """Push the checkpoints ``refs`` (``(sha, ref)``) and the goal's branch to the remote
        (a worktree of a remote's clone); a push that fails is logged and recorded as a
        warning. Shielded and bounded: a turn's end is pushed when the goal is cancelled
        too (a worker handing its goals back), then within :data:`STOPPING_PUSH_S`, so that
        a hanging remote does not hold the hand-back past its margin."""
        info = self.remote
        if info is None:
            return
        assert info.repo is not None
        assert info.remote is not None
        # The goal is being cancelled (a worker handing it back) or its task is.
        stopping = (
            self.handle.state.cancel_reason is not None
            or trio.current_effective_deadline() == -math.inf
        )
        budget = STOPPING_PUSH_S if stopping else 2 * PUSH_TIMEOUT
        timeout = STOPPING_PUSH_S - 1.0 if stopping else PUSH_TIMEOUT  # a second to say so
        with trio.CancelScope(shield=True, deadline=trio.current_time() + budget):
            # Only while the goal is this worker's: a run stalled past its lease (SIGSTOP)
            # would force its old refs over those of the worker that took the goal over.
            fenced = await self.push_fence() if self.push_fence is not None else None
            if fenced is not None:
                message = f"not pushed to {without_userinfo(info.remote)}: {fenced}"
                log.warning("goal %s, turn %d: %s", self.goal.id, turn, message)
                await self.emit(WorkspaceWarning(self.goal.id, message, turn=turn))
                return
            problem = await push_checkpoints(
                info.repo, refs, branch=info.branch, remote=info.remote, timeout=timeout
            )
            if problem is not None:
                log.warning("goal %s, turn %d: %s", self.goal.id, turn, problem.message)
                await self.emit(WorkspaceWarning(self.goal.id, problem.message, turn=turn))

    async def _resume_here(self) -> None:
        """A remote's worktree for a goal that ran elsewhere since this host's worktree of
        it was (made fresh here, or left here before the goal went to another host and came
        back) is put back at the ledger's commit (files and index), before this run's first
        turn. A worktree left here is first set aside on a ref, and its branch fast-forwarded
        to the work done elsewhere; a fresh one's branch is as fetched. A commit the clone
        does not have (never pushed) is a warning, and the worktree goes on from its branch.
        A restore that fails escalates (the mark stays: the next run tries again)."""
        info = self.remote
        if info is None:
            return
        assert info.repo is not None
        assert info.target is not None
        fresh = await is_fresh(info.repo, self.goal.id)
        remembered = None if fresh else await remembered_commit(info.repo, self.goal.id)
        sha = resume_point(self.handle.state, fresh=fresh, remembered=remembered)
        if sha is not None:
            present = await has_commit(info.target, sha)
            if isinstance(present, WorkspaceProblem) or not present:
                why = present.message if isinstance(present, WorkspaceProblem) else "missing"
                message = (
                    f"the workspace's last commit {sha[:12]} is not in the clone of "
                    f"{info.remote} ({why}): going on from the branch {info.branch} as fetched"
                )
                log.warning("goal %s: %s", self.goal.id, message)
                await self.emit(WorkspaceWarning(self.goal.id, message))
            # A worktree left here that has that commit's files already, or cannot be set
            # aside, goes on as it is.
            elif fresh or await self._set_aside(sha):
                problem = await restore(info.target, sha)
                if problem is not None:
                    turn = self.handle.state.turns + 1
                    reason = f"putting the new worktree back at {sha[:12]}: {problem.message}"
                    await self.emit(CheckpointFailed(self.goal.id, turn, reason))
                    return
                await self.emit(WorkspaceRestored(self.goal.id, sha))
        if fresh:
            await clear_fresh(info.repo, self.goal.id)
        await self._remember_workspace()

    async def _set_aside(self, sha: str) -> bool:
        """Before the worktree left here is put back at ``sha``: keep its files on a ref
        (pushed with the checkpoints) and say so. ``False`` when there is nothing to put
        back, or it could not be kept (a warning: the worktree then goes on as it is)."""
        info = self.remote
        assert info is not None
        assert info.target is not None
        turn = self.handle.state.turns
        aside = await set_aside(info.target, self.goal.id, turn, sha)
        if aside is None:
            return False
        if isinstance(aside, WorkspaceProblem):
            message = (
                f"the goal ran elsewhere since this host's worktree of it, which cannot be "
                f"set aside ({aside.message}): it goes on as it is"
            )
            log.warning("goal %s: %s", self.goal.id, message)
            await self.emit(WorkspaceWarning(self.goal.id, message))
            return False
        ref = left_ref(self.goal.id, turn)
        message = (
            f"the goal ran elsewhere since this host's worktree of it: the worktree as it "
            f"was here is kept on {ref} ({aside[:12]}), and put back at {sha[:12]}"
        )
        log.info("goal %s: %s", self.goal.id, message)
        await self.emit(WorkspaceWarning(self.goal.id, message))
        await self._push(turn, [(aside, ref)])
        return True

    async def _remember_workspace(self) -> None:
        """Remember, in a remote's clone, the ledger's commit of the workspace as this run
        records it (see :func:`~nexo_trio.core.remotes.resume_point`)."""
        info = self.remote
        commit = self.handle.state.workspace_commit
        if info is None or commit is None or commit == self._remembered:
            return
        assert info.repo is not None
        problem = await remember_commit(info.repo, self.goal.id, commit)
        if problem is not None:
            log.warning("goal %s: %s", self.goal.id, problem.message)
            return
        self._remembered = commit

    async def _changes(self, step: RunTurn) -> tuple[DiffStat | None, str | None]:
        """The workspace right after the turn (a commit on ``refs/nexo/<goal>/<turn>-after``)
        and what the turn changed against its checkpoint; ``None`` for either when not
        checkpointed or git could not tell (the turn's end is recorded either way)."""
        target = self.target
        if target is None or step.checkpoint is None:
            return None, None
        found: tuple[DiffStat | None, str | None] = (None, None)
        # Shielded and bounded: a turn that was cancelled still records what it changed.
        with trio.CancelScope(shield=True, deadline=trio.current_time() + CHANGES_DEADLINE):
            after = await checkpoint(
                target, self.goal.id, step.turn, after=True, timeout=CHANGES_DEADLINE
            )
            if not isinstance(after, WorkspaceProblem):
                found = (None, after)
                stat = await diff_stat(target, step.checkpoint, after, timeout=CHANGES_DEADLINE)
                if not isinstance(stat, WorkspaceProblem):
                    found = (stat, after)
        return found

    async def _restore(self, step: Restore) -> None:
        target = self.target
        problem = (
            WorkspaceProblem("the workspace is not checkpointed")
            if target is None
            else await restore(target, step.sha)
        )
        if problem is not None:
            await self.emit(
                CheckpointFailed(self.goal.id, step.turn, f"rollback failed: {problem.message}")
            )
            return
        await self.emit(
            RolledBack(
                self.goal.id, step.turn, step.sha, by="the replay policy", reason=step.reason
            )
        )
        await self._remember_workspace()

    async def _turn(self, step: RunTurn) -> None:
        checked = await self._checkpoint(step)
        if checked is None:
            return
        step = checked
        stream = self._stream_file(step)
        marker = uuid.uuid4().hex  # recorded before the CLI starts: a crash may come first
        for event in turn_started(self.goal.id, step):
            if isinstance(event, AttemptStarted):
                event = attrs.evolve(event, marker=marker)  # noqa: PLW2901
            if isinstance(event, AttemptStarted) and stream is not None:
                event = attrs.evolve(event, stream=stream.name)  # noqa: PLW2901
            await self.emit(event)
        await self._remember_workspace()
        plan = self.plan
        try:
            await self._run_turn(step, stream, marker)
        finally:
            if plan.gate is not None:
                plan.gate.end_turn()  # a straggler of this turn is denied from now on

    async def _run_turn(
        self, step: RunTurn, stream: Path | None = None, marker: str | None = None
    ) -> None:
        plan = self.plan
        stdio = plan.transport == "stdio"
        token = None
        if stdio and plan.gate is not None:
            token = plan.gate.begin_turn()
        elif plan.mcp_config is not None and plan.socket_path is not None and plan.deadlines:
            # Fresh for every turn: nothing a turn wrote there survives to the next, and
            # the token is this turn's alone.
            token = plan.gate.begin_turn() if plan.gate is not None else None
            await trio.to_thread.run_sync(
                lambda: write_mcp_config(
                    plan.mcp_config,  # type: ignore[arg-type]
                    socket_path=plan.socket_path,  # type: ignore[arg-type]
                    goal_id=self.goal.id,
                    deadlines=plan.deadlines,  # type: ignore[arg-type]
                    token=token or new_turn_token(),
                )
            )
        env = dict(plan.env)
        if plan.scratch is not None:
            env["TMPDIR"] = str(plan.scratch)
        if marker is not None:
            env[TURN_MARKER_VAR] = marker
        command = turn_command(
            step,
            self.config.claude,
            cwd=self.workspace,
            mcp_config=None if stdio else plan.mcp_config,
            permission_prompt_tool=None if stdio else plan.permission_prompt_tool,
            env=env,
            stream_input=stdio,
        )
        extra: dict[str, Any] = {}
        if plan.heartbeat_s is not None:
            extra["heartbeat_s"] = plan.heartbeat_s
        if stdio:
            conversation = self._conversation(command.prompt, step, token)
            extra["conversation"] = conversation
            self.handle.conversation = conversation
        sandbox = await self._sandbox()
        transcripts = self._transcripts(command.env)
        if transcripts is not None and step.resume_session is not None:
            await restore_transcript(*transcripts, step.resume_session, self.workspace)
        stop = trio.Event()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._stop_when_superseded, step, stop)
                result = await self.turn_runner(
                    command,
                    timeout=step.timeout_s,
                    kill_grace=self.config.kill_grace_s,
                    line_cap=self.config.line_cap,
                    on_events=_Activity(self, step.turn, compact=step.compact),
                    stop=stop,
                    require_mcp_servers=() if stdio else plan.require_mcp_servers,
                    environ=self.environ,
                    sandbox=sandbox,
                    stdout_copy=stream,
                    **extra,
                )
                nursery.cancel_scope.cancel()
        finally:
            self.handle.conversation = None
            # The turn's own figures are recorded next: its live ones are done.
            self.handle.set_live_spend(None)
        completed = turn_completed(
            self.goal.id,
            step,
            result.outcome,
            duration_s=result.duration_s,
            stop_actions=result.stop_actions,
        )
        changes, after = await self._changes(step)
        await self.emit(attrs.evolve(completed, changes=changes, after=after))
        if after is not None:
            await self._push(
                step.turn, [(after, checkpoint_ref(self.goal.id, step.turn, after=True))]
            )
        await self._remember_workspace()
        session = self.handle.state.session_id
        if transcripts is not None and session is not None:
            self._kept_transcript = await keep_transcript(
                *transcripts, session, self.workspace, kept=self._kept_transcript
            )

    def _conversation(self, prompt: str, step: RunTurn, token: str | None) -> Conversation:
        """The stdio transport's conversation for one turn: its asks go to the goal's gate
        (admitted with the turn's ``token``) and are recorded as the socket path records
        them; replies made without the decider (a malformed ask, one while the turn ends)
        are recorded as denies; a message the CLI took mid-turn is recorded as
        delivered."""
        gate = self.plan.gate
        deadlines = self.plan.deadlines or GateDeadlines.from_tool_timeout(
            self.config.permission.tool_timeout_s
        )
        goal_id = self.goal.id

        async def answer(control: StdioControl, ask: ToolAsk) -> bytes:
            if gate is None:
                failed = unavailable("no permission gate for this goal", "gate")
                return settle(control, ask, failed).line
            call = gate.admit(permission_request(goal_id, ask), token=token)
            answered = await answer_ask(call, control, ask, timeout_s=deadlines.gate_timeout_s)
            return answered.line

        async def on_reply(reply: Reply) -> None:
            if gate is None or reply.tool_name is None:
                return
            await record_reply(gate, goal_id, reply, token=token)

        async def on_delivered(message: str) -> None:
            await self.emit(InterruptDelivered(goal_id, message, turn=step.turn))

        return Conversation(prompt, answer, on_reply=on_reply, on_delivered=on_delivered)

    def _transcripts(self, env: Mapping[str, str | None]) -> tuple[SharedStore, str, Path] | None:
        """Where this goal's session transcripts are kept and where the CLI keeps them,
        when the store is one hosts share (see :mod:`.transcripts`)."""
        shared = shared_store(self.store)
        if shared is None:
            return None
        base = os.environ if self.environ is None else self.environ
        config_dir = claude_dir({**base, **env})
        return None if config_dir is None else (shared, self.goal.id, config_dir)

    def _stream_file(self, step: RunTurn) -> Path | None:
        """The file keeping this turn's raw stdout, compressed:
        ``turn-N[-compact][-redo]-STAMP.ndjson.gz`` (each attempt its own, named in its
        ``attempt_started``; ``nexo-trio transcript --raw`` and ``replay`` read it)."""
        if self.plan.streams is None:
            return None
        kind = "-compact" if step.compact else ""
        kind += "-redo" if step.redo else ""
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(self.clock()))
        millis = int(self.clock() * 1000) % 1000
        return self.plan.streams / f"turn-{step.turn}{kind}-{stamp}.{millis:03d}Z.ndjson.gz"

    async def _sandbox(self) -> SandboxPlan | None:
        """The sandbox of the next turn (its directories made ready), or ``None``."""
        confinement, scratch = self.plan.confinement, self.plan.scratch
        if confinement is None:
            if scratch is not None:
                await trio.to_thread.run_sync(partial(scratch.mkdir, 0o700, True, True))
            return None
        assert scratch is not None
        return await trio.to_thread.run_sync(
            partial(
                prepare_sandbox,
                self.workspace,
                scratch,
                home=confinement.home,
                writable=confinement.writable,
                readable=confinement.readable,
                network=confinement.network,
                api_proxy=confinement.api_proxy,
            )
        )

    async def _stop_when_superseded(self, step: Step, stop: trio.Event) -> None:
        """Stop the turn once it no longer stands; on the stdio transport also once the
        goal is paused (the CLI is interrupted, its session kept, and the goal waits)."""
        interruptible = self.plan.transport == "stdio"
        while not supersedes(step, self._next()):
            if interruptible and self.handle.state.paused:
                break
            await self.handle.changed()
        stop.set()

    async def _until_superseded(self, step: Step) -> None:
        while not supersedes(step, self._next()):
            await self.handle.changed()

    async def _acceptance(self, step: RunAcceptance) -> None:
        verdicts = []
        async with trio.open_nursery() as nursery:

            async def watch() -> None:
                await self._until_superseded(step)
                nursery.cancel_scope.cancel()

            nursery.start_soon(watch)
            verdicts.append(
                await evaluate(
                    self.goal.acceptance,
                    workspace=self.workspace,
                    registry=self.registry,
                    goal_id=self.goal.id,
                    baseline=self._baseline(),
                    mode=self.config.acceptance_mode,
                    llm=self.config.permission.llm,
                    environ=self.environ,
                )
            )
            nursery.cancel_scope.cancel()
        if verdicts:
            verdict = verdicts[0]
            await self.emit(
                AcceptanceChecked(self.goal.id, step.turn, verdict.met, verdict.results)
            )

    def _baseline(self) -> Baseline | None:
        """The goal's first checkpoint, for the checks that judge what the goal changed."""
        target, checkpoints = self.target, self.handle.state.checkpoints
        if target is None or not checkpoints:
            return None
        return Baseline(target=target, sha=checkpoints[0].sha)

    async def _hold(self, step: Sleep | Wait) -> None:
        deadline = math.inf
        if isinstance(step, Sleep):
            deadline = trio.current_time() + max(0.0, step.until - self.clock())
        with trio.move_on_at(deadline):
            await self._until_superseded(step)

    async def spawned(self, turn: int, pid: int) -> None:
        """The turn's CLI runs as ``pid``: record who it is (``turn_spawned``), for the run
        after a crash to stop it should it outlive this one."""
        # The caller awaits this before it reads on: recorded ahead of anything the CLI does
        # next, with the /proc reads off the event loop like every other file access.
        identity = await trio.to_thread.run_sync(process_identity, pid)
        if identity is not None:
            await self.emit(
                TurnSpawned(self.goal.id, turn, identity.pid, identity.start, identity.boot)
            )

    # ------------------------------------------------------------------ sessions

    async def bind_session(self, session_id: str) -> None:
        """The CLI named its session in its init frame: bind the goal to it."""
        if session_id == self.handle.state.session_id:
            await self.store.touch(self.goal.id)
            return
        await self.store.put_binding(
            self.goal.id,
            session_id,
            model=self.config.claude.model,
            workspace=str(self.workspace),
        )
        await self.emit(SessionBound(self.goal.id, session_id))


class _Activity:
    """The engine's per-batch callback: binds the session at once, reports live activity,
    passes on what the turn has spent so far (:attr:`GoalHandle.live_spend`)."""

    def __init__(self, run: GoalRun, turn: int, *, compact: bool = False) -> None:
        self.run = run
        self.turn = turn
        self.compact = compact
        self.spent = turn_spend(TurnState())
        self.reported: tuple[str | None, int] = (None, 0)
        self.record = Transcribing(run.goal.id, turn)
        """The turn's record: Claude's texts and tool calls (see ``core/record.py``)."""

    async def __call__(self, state: TurnState, batch: Sequence[Event]) -> None:
        for event in batch:
            # Bind from the init frame only: an error result for a bad --resume names a
            # session id too (sometimes a random one) that must never be bound.
            if isinstance(event, SystemInit) and event.session_id:
                await self.run.bind_session(event.session_id)
            elif isinstance(event, Spawned):
                await self.run.spawned(self.turn, event.pid)
        # Tokens or cost may reach a budget mid-turn (first: a stop is due at once). Once
        # the result frame is in, the turn is ending: its figures are recorded with its end.
        spent = turn_spend(state)
        if spent != self.spent and state.result is None:
            self.spent = spent
            self.run.handle.set_live_spend(LiveSpend(self.turn, self.compact, *spent))
        self.record, kept = transcribe(self.record, batch)
        for recorded in kept:  # texts and tool calls: most batches have none
            await self.run.emit(recorded)
        activity = (state.last_tool, state.tool_uses)
        if activity != self.reported:
            self.reported = activity
            await self.run.emit(
                TurnActivity(
                    goal_id=self.run.goal.id,
                    turn=self.turn,
                    last_tool=state.last_tool,
                    tool_uses=state.tool_uses,
                    context_tokens=state.context_tokens,
                )
            )
