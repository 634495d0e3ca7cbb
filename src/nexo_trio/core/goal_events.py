"""Everything that happens to a goal, as typed records.

They go to subscribers over memory channels and, except :class:`TurnActivity` (live
progress, many per turn), into the goal ledger, where each is stored under its ``kind``:
the snake_case class name (``GoalStarted`` -> ``goal_started``).
"""

from __future__ import annotations

import re
from typing import Any, TypeAlias

import attrs

from nexo_trio.core.acceptance import CheckResult
from nexo_trio.core.events import Usage
from nexo_trio.core.goal_outcome import GoalOutcome


@attrs.frozen
class GoalStarted:
    """The goal loop began (``resumed_*``: carried over from an interrupted earlier run)."""

    goal_id: str
    description: str
    workspace: str
    resumed_session: str | None = None
    resumed_turns: int = 0
    metadata: dict[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class AttemptStarted:
    """A turn is starting (``compact``: a ``/compact`` turn, not counted)."""

    goal_id: str
    turn: int
    compact: bool
    resume_session: str | None
    prompt: str


@attrs.frozen
class SessionBound:
    """The goal is now bound to this Claude Code session."""

    goal_id: str
    session_id: str


@attrs.frozen
class TurnActivity:
    """Live progress inside a turn (not stored in the ledger)."""

    goal_id: str
    turn: int
    last_tool: str | None
    tool_uses: int
    context_tokens: int


@attrs.frozen
class AttemptCompleted:
    """A turn ended; ``kind`` is the attempt outcome kind, ``cause`` the turn's cause."""

    goal_id: str
    turn: int
    compact: bool
    counted: bool
    kind: str
    cause: str
    reason: str | None
    session_id: str | None
    usage: Usage
    cost_usd: float
    duration_s: float
    exit_code: int | None = None
    stop_actions: tuple[str, ...] = ()
    permission_denials: int = 0
    allowed: int = 0
    """Tool calls the permission gate allowed during this turn."""
    denied: int = 0
    """Tool calls the permission gate denied during this turn."""


@attrs.frozen
class AcceptanceChecked:
    """The acceptance checks ran after a claimed completion."""

    goal_id: str
    turn: int
    met: bool
    results: tuple[CheckResult, ...]


@attrs.frozen
class ReplayDecided:
    """The replay policy acted on a turn that did not end well."""

    goal_id: str
    turn: int
    action: str
    reason: str | None


@attrs.frozen
class CompactScheduled:
    """The next turn is a ``/compact`` turn."""

    goal_id: str
    context_tokens: int
    forced: bool


@attrs.frozen
class Sleeping:
    """Claude asked to sleep; the goal waits."""

    goal_id: str
    duration_ms: int
    reason: str | None


@attrs.frozen
class WokeUp:
    """The sleep ended; the next prompt carries a wake-up tick."""

    goal_id: str
    slept_ms: int


@attrs.frozen
class GoalPaused:
    """An operator paused the goal (it stops between turns)."""

    goal_id: str


@attrs.frozen
class GoalResumed:
    """An operator resumed the goal."""

    goal_id: str


@attrs.frozen
class InterruptQueued:
    """An operator message waits for the next work turn."""

    goal_id: str
    message: str


@attrs.frozen
class MaxTurnsRaised:
    """An operator raised the goal's turn budget."""

    goal_id: str
    max_turns: int


@attrs.frozen
class CancelRequested:
    """An operator asked to cancel the goal."""

    goal_id: str
    reason: str


@attrs.frozen
class DecisionMade:
    """The permission gate decided a tool call."""

    goal_id: str
    tool_name: str
    outcome: str
    reason: str | None
    decider: str
    latency_ms: float
    input_digest: str = ""
    rationale: str | None = None
    """Why the decider decided so (the LLM decider's own words), when it said."""


@attrs.frozen
class BudgetExhausted:
    """A budget axis ran out."""

    goal_id: str
    axis: str
    reason: str


@attrs.frozen
class Escalated:
    """The goal stops: another turn won't help."""

    goal_id: str
    reason: str


@attrs.frozen
class GoalProgress:
    """Every N turns: what the goal has spent so far."""

    goal_id: str
    turns: int
    tokens: int
    cost_usd: float
    elapsed_s: float


@attrs.frozen
class GoalCompleted:
    """The goal ended. Exactly one per run of a goal, on every path."""

    goal_id: str
    outcome: GoalOutcome


GoalEvent: TypeAlias = (
    GoalStarted
    | AttemptStarted
    | SessionBound
    | TurnActivity
    | AttemptCompleted
    | AcceptanceChecked
    | ReplayDecided
    | CompactScheduled
    | Sleeping
    | WokeUp
    | GoalPaused
    | GoalResumed
    | InterruptQueued
    | MaxTurnsRaised
    | CancelRequested
    | DecisionMade
    | BudgetExhausted
    | Escalated
    | GoalProgress
    | GoalCompleted
)

EPHEMERAL_EVENTS: tuple[type[Any], ...] = (TurnActivity,)
"""Events sent to subscribers but not stored in the ledger."""

_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")


def event_kind(cls: type[Any]) -> str:
    """The ledger kind of an event class: ``GoalStarted`` -> ``goal_started``."""
    return _CAMEL.sub("_", cls.__name__).lower()
