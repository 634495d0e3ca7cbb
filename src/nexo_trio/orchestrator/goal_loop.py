"""The goal loop: turn after turn until acceptance passes, a budget runs out or it escalates.

One pass of the loop::

    cancelled? -> paused? (wait) -> budget exhausted? -> compact or work turn
      -> run_turn -> replay policy
           fresh_session: drop the session, go again (not counted)
           retry / compact: go again
           escalate: stop
           proceed: claimed_done -> acceptance -> done | needs_retry (failures -> next prompt)
                    sleep -> sleep, then the next prompt carries a wake-up tick
                    cancelled -> stop

Every event goes through ``emit`` (subscribers and the ledger). The loop never raises for an
expected failure; a bug is caught by the caller, which still emits the goal-completed event.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from pathlib import Path

import attrs
import trio

from nexo_trio.core.acceptance import Failure, Verdict
from nexo_trio.core.attempt import AttemptKind, attempt_outcome
from nexo_trio.core.budget import BudgetAxis, Spent, describe_exhaustion, exhausted_axis
from nexo_trio.core.compact import compact_prompt, should_compact
from nexo_trio.core.events import Event, SystemInit, Usage
from nexo_trio.core.goal import Goal
from nexo_trio.core.goal_events import (
    AcceptanceChecked,
    AttemptCompleted,
    AttemptStarted,
    BudgetExhausted,
    CompactScheduled,
    Escalated,
    GoalEvent,
    GoalProgress,
    GoalStarted,
    ReplayDecided,
    SessionBound,
    Sleeping,
    TurnActivity,
    WokeUp,
)
from nexo_trio.core.goal_outcome import GoalEndKind, GoalOutcome
from nexo_trio.core.outcome import TurnKind, TurnOutcome
from nexo_trio.core.prompt import SYSTEM_PROMPT, WakeUp, compose_prompt
from nexo_trio.core.replay import ReplayAction, ReplayState, decide_replay
from nexo_trio.core.settings import Config
from nexo_trio.core.turn import TurnState
from nexo_trio.engine.command import ClaudeCommand
from nexo_trio.engine.supervisor import TurnResult, run_turn
from nexo_trio.gate.goal_gate import GoalGate
from nexo_trio.orchestrator.acceptance import VerifierRegistry, evaluate
from nexo_trio.orchestrator.control import GoalControl
from nexo_trio.store.base import Store

Emit = Callable[[GoalEvent], Awaitable[None]]
TurnRunner = Callable[..., Awaitable[TurnResult]]


@attrs.frozen
class Resumed:
    """What an interrupted earlier run of the same goal left: carried over."""

    session_id: str | None = None
    turns: int = 0
    usage: Usage = attrs.field(factory=Usage)
    cost_usd: float = 0.0
    wall_time_s: float = 0.0
    failures: tuple[Failure, ...] = ()


@attrs.frozen
class TurnPlan:
    """Extra command-line settings for every turn of a goal (the permission gate's)."""

    mcp_config: Path | None = None
    permission_prompt_tool: str | None = None
    require_mcp_servers: tuple[str, ...] = ()
    env: dict[str, str | None] = attrs.field(factory=dict)


class GoalLoop:
    """Runs one goal to its end (one use)."""

    def __init__(
        self,
        goal: Goal,
        *,
        config: Config,
        store: Store,
        control: GoalControl,
        emit: Emit,
        workspace: Path,
        registry: VerifierRegistry,
        resumed: Resumed,
        plan: TurnPlan,
        gate: GoalGate,
        turn_runner: TurnRunner = run_turn,
    ) -> None:
        self.goal = goal
        self.config = config
        self.store = store
        self.control = control
        self.emit = emit
        self.workspace = workspace
        self.registry = registry
        self.plan = plan
        self.gate = gate
        self.turn_runner = turn_runner
        self.session_id = resumed.session_id
        self.resumed = resumed
        self.spent = Spent(
            turns=resumed.turns,
            usage=resumed.usage,
            cost_usd=resumed.cost_usd,
            wall_time_s=resumed.wall_time_s,
        )
        self.started = trio.current_time()
        self.failures: Sequence[Failure] = resumed.failures
        self.wake_up: WakeUp | None = None
        self.replay_state = ReplayState()
        self.turns_since_compact: int | None = None
        self.force_compact = False
        self.last_context_tokens = 0
        self.final_text: str | None = None
        self.verdict: Verdict | None = None
        self.denied = 0
        self.allowed = 0

    # ------------------------------------------------------------------ the loop

    async def run(self) -> GoalOutcome:
        """Run the goal to its end and return how it ended."""
        await self.emit(
            GoalStarted(
                goal_id=self.goal.id,
                description=self.goal.description,
                workspace=str(self.workspace),
                resumed_session=self.resumed.session_id,
                resumed_turns=self.resumed.turns,
                metadata=dict(self.goal.metadata),
            )
        )
        while True:
            if self.control.cancelled:
                return self._end(GoalEndKind.CANCELLED, self.control.cancel_reason)
            if not await self.control.wait_while_paused():
                return self._end(GoalEndKind.CANCELLED, self.control.cancel_reason)
            self._tick_wall_time()
            budget = self.goal.budget
            if self.control.max_turns is not None:
                budget = attrs.evolve(budget, max_turns=self.control.max_turns)
            axis = exhausted_axis(budget, self.spent)
            if axis is not None:
                reason = describe_exhaustion(axis, budget, self.spent)
                await self.emit(BudgetExhausted(self.goal.id, axis.value, reason))
                return self._end(GoalEndKind.BUDGET_EXHAUSTED, reason, axis=axis)
            end = await self._one_turn()
            if end is not None:
                return end

    async def _one_turn(self) -> GoalOutcome | None:
        compact = self.session_id is not None and should_compact(
            self.config.compact,
            last_context_tokens=self.last_context_tokens,
            turns_since_compact=self.turns_since_compact,
            forced=self.force_compact,
        )
        interrupts: list[str] = []
        if compact:
            await self.emit(
                CompactScheduled(self.goal.id, self.last_context_tokens, self.force_compact)
            )
            prompt = compact_prompt()
        else:
            interrupts = self.control.take_interrupts()
            prompt = compose_prompt(
                self.goal.description,
                interrupts=interrupts,
                wake_up=self.wake_up,
                failures=self.failures,
            )
        number = self.spent.turns + (0 if compact else 1)
        await self.emit(
            AttemptStarted(
                goal_id=self.goal.id,
                turn=number,
                compact=compact,
                resume_session=self.session_id,
                prompt=prompt,
            )
        )
        gate_before = (self.gate.allowed, self.gate.denied)
        result = await self._run_turn(prompt, number)
        turn = result.outcome
        allowed, denied = self._account(turn, gate_before)
        decision, self.replay_state = decide_replay(
            turn, self.replay_state, max_retries=self.config.replay.max_retries
        )
        counted = decision.counts_as_turn and not compact
        if counted:
            self.spent = attrs.evolve(self.spent, turns=self.spent.turns + 1)
            if self.turns_since_compact is not None:
                self.turns_since_compact += 1
        if compact and decision.action is ReplayAction.PROCEED:
            self.turns_since_compact = 0
            self.force_compact = False
        errors = self.spent.consecutive_errors + 1 if decision.is_error else 0
        self.spent = attrs.evolve(self.spent, consecutive_errors=errors)
        self.last_context_tokens = turn.context_tokens
        if turn.final_text is not None and not compact:
            self.final_text = turn.final_text

        attempt_kind = _attempt_kind(turn)
        end: GoalOutcome | None = None
        if decision.action is not ReplayAction.PROCEED:
            await self.emit(
                ReplayDecided(self.goal.id, number, decision.action.value, decision.reason)
            )
        match decision.action:
            case ReplayAction.FRESH_SESSION:
                if self.session_id is not None:
                    await self.store.mark_invalid(self.goal.id, self.session_id)
                self.session_id = None
                # The turn never reached Claude: its operator messages go out again.
                self.control.requeue_interrupts(interrupts)
            case ReplayAction.RETRY:
                pass
            case ReplayAction.COMPACT:
                self.force_compact = True
            case ReplayAction.ESCALATE:
                reason = decision.reason or "escalated"
                await self.emit(Escalated(self.goal.id, reason))
                end = self._end(GoalEndKind.ESCALATED, reason)
            case ReplayAction.PROCEED if turn.kind is TurnKind.CANCELLED:
                end = self._end(GoalEndKind.CANCELLED, self.control.cancel_reason)
            case ReplayAction.PROCEED if compact:
                attempt_kind = AttemptKind.CONTINUE
            case ReplayAction.PROCEED if turn.kind is TurnKind.SLEEP:
                end = await self._sleep(turn)
            case ReplayAction.PROCEED if turn.kind is TurnKind.CLAIMED_DONE:
                attempt_kind, end = await self._accept(turn, number)
        await self.emit(
            AttemptCompleted(
                goal_id=self.goal.id,
                turn=number,
                compact=compact,
                counted=counted,
                kind=attempt_kind.value,
                cause=turn.cause.value,
                reason=turn.reason,
                session_id=turn.session_id,
                usage=turn.usage,
                cost_usd=turn.cost_usd,
                duration_s=result.duration_s,
                exit_code=turn.exit_code,
                stop_actions=result.stop_actions,
                permission_denials=len(turn.permission_denials),
                allowed=allowed,
                denied=denied,
            )
        )
        every = self.config.progress_every
        if counted and every > 0 and self.spent.turns % every == 0:
            await self.emit(
                GoalProgress(
                    self.goal.id,
                    self.spent.turns,
                    self.spent.tokens,
                    self.spent.cost_usd,
                    self._elapsed(),
                )
            )
        # A cancel that came during this turn ends the goal at the top of the loop.
        return end

    # ------------------------------------------------------------------ steps

    async def _run_turn(self, prompt: str, number: int) -> TurnResult:
        claude = self.config.claude
        system_prompt = SYSTEM_PROMPT
        if claude.append_system_prompt:
            system_prompt = f"{claude.append_system_prompt}\n\n{SYSTEM_PROMPT}"
        command = ClaudeCommand(
            prompt=prompt,
            binary=claude.binary,
            cwd=self.workspace,
            resume=self.session_id,
            model=claude.model,
            allowed_tools=claude.allowed_tools,
            disallowed_tools=claude.disallowed_tools,
            append_system_prompt=system_prompt,
            extra_args=claude.extra_args,
            mcp_config=self.plan.mcp_config,
            permission_prompt_tool=self.plan.permission_prompt_tool,
            env={**claude.env, **self.plan.env},
        )
        activity = _Activity(self, number)
        return await self.turn_runner(
            command,
            timeout=self.config.turn_timeout_s,
            kill_grace=self.config.kill_grace_s,
            line_cap=self.config.line_cap,
            on_events=activity,
            stop=self.control.stop_turn,
            require_mcp_servers=self.plan.require_mcp_servers,
        )

    def _account(self, turn: TurnOutcome, gate_before: tuple[int, int]) -> tuple[int, int]:
        """Add the turn's spend; return the (allowed, denied) tool calls of this turn.

        Denials are the larger of what the gate denied and what the CLI reports denied
        (its own rules deny without asking the gate). The run of consecutive denials is
        the gate's exact count once anything was allowed, else it grows by this turn's.
        """
        gate_allowed = self.gate.allowed - gate_before[0]
        gate_denied = self.gate.denied - gate_before[1]
        denied = max(len(turn.permission_denials), gate_denied)
        if gate_allowed:
            consecutive = self.gate.consecutive_denied
        elif denied:
            consecutive = self.spent.consecutive_denies + denied
        elif turn.tool_uses:
            consecutive = 0  # pre-allowed tools ran
        else:
            consecutive = self.spent.consecutive_denies
        self.allowed += gate_allowed
        self.denied += denied
        self.spent = attrs.evolve(
            self.spent,
            usage=self.spent.usage + turn.usage,
            cost_usd=self.spent.cost_usd + turn.cost_usd,
            consecutive_denies=consecutive,
        )
        return gate_allowed, denied

    async def _bind_session(self, session_id: str) -> None:
        if session_id == self.session_id:
            await self.store.touch(self.goal.id)
            return
        self.session_id = session_id
        await self.store.put_binding(
            self.goal.id,
            session_id,
            model=self.config.claude.model,
            workspace=str(self.workspace),
        )
        await self.emit(SessionBound(self.goal.id, session_id))

    async def _accept(
        self, turn: TurnOutcome, number: int
    ) -> tuple[AttemptKind, GoalOutcome | None]:
        """Run acceptance on a claimed completion: the attempt's kind, and the end if any."""
        verdict = await self._check(number)
        if verdict is None:
            return AttemptKind.CANCELLED, self._end(
                GoalEndKind.CANCELLED, self.control.cancel_reason
            )
        attempt = attempt_outcome(turn, verdict)
        if attempt.kind is AttemptKind.DONE:
            return attempt.kind, self._end(GoalEndKind.DONE, None)
        self.failures = attempt.failures
        self.wake_up = None
        return attempt.kind, None

    async def _check(self, number: int) -> Verdict | None:
        verdicts: list[Verdict] = []

        async def run_checks() -> None:
            verdicts.append(
                await evaluate(
                    self.goal.acceptance,
                    workspace=self.workspace,
                    registry=self.registry,
                    goal_id=self.goal.id,
                )
            )

        if not await self.control.interruptible(run_checks):
            return None
        verdict = verdicts[0]
        self.verdict = verdict
        await self.emit(AcceptanceChecked(self.goal.id, number, verdict.met, verdict.results))
        return verdict

    async def _sleep(self, turn: TurnOutcome) -> GoalOutcome | None:
        duration_ms = turn.sleep_ms or 0
        await self.emit(Sleeping(self.goal.id, duration_ms, turn.reason))
        # Never sleep past the wall-time budget: the budget check right after ends the goal.
        seconds = duration_ms / 1000
        limit = self.goal.budget.max_wall_time_s
        if limit is not None:
            seconds = min(seconds, max(0.0, limit - self._wall_time()))
        if not await self.control.interruptible(partial(trio.sleep, seconds)):
            return self._end(GoalEndKind.CANCELLED, self.control.cancel_reason)
        self.wake_up = WakeUp(slept_ms=duration_ms, reason=turn.reason)
        self.failures = ()
        await self.emit(WokeUp(self.goal.id, duration_ms))
        return None

    # ------------------------------------------------------------------ bookkeeping

    def _elapsed(self) -> float:
        return trio.current_time() - self.started

    def _wall_time(self) -> float:
        return self.resumed.wall_time_s + self._elapsed()

    def _tick_wall_time(self) -> None:
        # Only the budget check and _end read spent.wall_time_s: each ticks it first.
        self.spent = attrs.evolve(self.spent, wall_time_s=self._wall_time())

    def _end(
        self, kind: GoalEndKind, reason: str | None, *, axis: BudgetAxis | None = None
    ) -> GoalOutcome:
        self._tick_wall_time()
        return GoalOutcome(
            goal_id=self.goal.id,
            kind=kind,
            reason=reason,
            axis=axis,
            total_turns=self.spent.turns,
            usage=self.spent.usage,
            cost_usd=self.spent.cost_usd,
            wall_time_s=self.spent.wall_time_s,
            final_text=self.final_text,
            acceptance=self.verdict,
            allowed=self.allowed,
            denied=self.denied,
            session_id=self.session_id,
            elapsed_s=self._elapsed(),
        )


def _attempt_kind(turn: TurnOutcome) -> AttemptKind:
    return {
        TurnKind.CLAIMED_DONE: AttemptKind.NEEDS_RETRY,  # refined once acceptance ran
        TurnKind.SLEEP: AttemptKind.SLEEP,
        TurnKind.CONTINUE: AttemptKind.CONTINUE,
        TurnKind.ESCALATE: AttemptKind.ESCALATE,
        TurnKind.CANCELLED: AttemptKind.CANCELLED,
    }[turn.kind]


class _Activity:
    """The engine's per-batch callback: binds the session at once, reports live activity."""

    def __init__(self, loop: GoalLoop, number: int) -> None:
        self.loop = loop
        self.number = number
        self.reported: tuple[str | None, int] = (None, 0)

    async def __call__(self, state: TurnState, batch: Sequence[Event]) -> None:
        for event in batch:
            # Bind from the init frame only: an error result for a bad --resume names a
            # session id too (sometimes a random one) that must never be bound.
            if isinstance(event, SystemInit) and event.session_id:
                await self.loop._bind_session(event.session_id)
        activity = (state.last_tool, state.tool_uses)
        if activity != self.reported:
            self.reported = activity
            await self.loop.emit(
                TurnActivity(
                    goal_id=self.loop.goal.id,
                    turn=self.number,
                    last_tool=state.last_tool,
                    tool_uses=state.tool_uses,
                    context_tokens=state.context_tokens,
                )
            )
