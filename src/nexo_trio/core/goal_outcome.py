"""How a goal ended (what ``nexo-trio run --json`` prints)."""

from __future__ import annotations

import enum

import attrs

from nexo_trio.core.acceptance import Verdict
from nexo_trio.core.budget import BudgetAxis
from nexo_trio.core.events import Usage


class GoalEndKind(enum.Enum):
    """The four ways a goal ends."""

    DONE = "done"
    BUDGET_EXHAUSTED = "budget_exhausted"
    ESCALATED = "escalated"
    CANCELLED = "cancelled"


@attrs.frozen
class GoalOutcome:
    """The end of a goal: why, and what it cost."""

    goal_id: str
    kind: GoalEndKind
    reason: str | None = None
    axis: BudgetAxis | None = None
    total_turns: int = 0
    usage: Usage = attrs.field(factory=Usage)
    cost_usd: float = 0.0
    wall_time_s: float = 0.0
    final_text: str | None = None
    acceptance: Verdict | None = None
    allowed: int = 0
    denied: int = 0
    session_id: str | None = None
    elapsed_s: float = 0.0

    @property
    def done(self) -> bool:
        """The goal was achieved (its acceptance checks passed)."""
        return self.kind is GoalEndKind.DONE
