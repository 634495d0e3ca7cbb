"""Budget policy: what a goal has spent, and which limit (if any) it has reached.

Checked before every turn, and while a turn runs (its live spend added, see
:class:`LiveSpend`): an axis is exhausted when what was spent reaches its limit.
``turns >= max_turns`` means no further turn may start; tokens or cost reached mid-turn stop
the running turn.
"""

from __future__ import annotations

import enum

import attrs

from nexo_trio.core.events import Usage
from nexo_trio.core.goal import Budget


class BudgetAxis(enum.Enum):
    """The limits a goal can run into, in the order they are checked."""

    TURNS = "turns"
    WALL_TIME = "wall_time"
    TOKENS = "tokens"
    COST = "cost"
    CONSECUTIVE_ERRORS = "consecutive_errors"
    CONSECUTIVE_DENIES = "consecutive_denies"


@attrs.frozen
class Spent:
    """What a goal has used so far."""

    turns: int = 0
    wall_time_s: float = 0.0
    usage: Usage = attrs.field(factory=Usage)
    cost_usd: float = 0.0
    consecutive_errors: int = 0
    consecutive_denies: int = 0

    @property
    def tokens(self) -> int:
        """All four token counts together."""
        return self.usage.total_tokens


@attrs.frozen
class LiveSpend:
    """What the running turn has spent so far, read from its stream as it goes (the tokens
    of its assistant frames, their cost estimated). Not recorded: the turn's
    ``attempt_completed`` records its final figures (its result frame's, when it has one)."""

    turn: int
    compact: bool
    usage: Usage = attrs.field(factory=Usage)
    cost_usd: float = 0.0


def with_live(spent: Spent, live: LiveSpend) -> Spent:
    """``spent`` with the running turn's live tokens and cost added."""
    return attrs.evolve(
        spent, usage=spent.usage + live.usage, cost_usd=spent.cost_usd + live.cost_usd
    )


def _limits(budget: Budget, spent: Spent) -> tuple[tuple[BudgetAxis, float | None, float], ...]:
    """Each axis with its limit and what was spent on it, in checking order."""
    return (
        (BudgetAxis.TURNS, budget.max_turns, spent.turns),
        (BudgetAxis.WALL_TIME, budget.max_wall_time_s, spent.wall_time_s),
        (BudgetAxis.TOKENS, budget.max_tokens, spent.tokens),
        (BudgetAxis.COST, budget.max_cost_usd, spent.cost_usd),
        (BudgetAxis.CONSECUTIVE_ERRORS, budget.max_consecutive_errors, spent.consecutive_errors),
        (BudgetAxis.CONSECUTIVE_DENIES, budget.max_consecutive_denies, spent.consecutive_denies),
    )


def exhausted_axis(budget: Budget, spent: Spent) -> BudgetAxis | None:
    """The first axis whose limit ``spent`` has reached, or ``None`` if a turn may start."""
    for axis, limit, used in _limits(budget, spent):
        if limit is not None and used >= limit:
            return axis
    return None


def axis_exhausted(axis: BudgetAxis, budget: Budget, spent: Spent) -> bool:
    """Whether ``spent`` has reached the limit of this one axis."""
    return any(
        candidate is axis and limit is not None and used >= limit
        for candidate, limit, used in _limits(budget, spent)
    )


def describe_exhaustion(axis: BudgetAxis, budget: Budget, spent: Spent) -> str:
    """A sentence naming the axis, the limit and what was spent."""
    match axis:
        case BudgetAxis.TURNS:
            return f"max turns reached: {spent.turns} of {budget.max_turns}"
        case BudgetAxis.WALL_TIME:
            return f"max wall time reached: {spent.wall_time_s:.1f}s of {budget.max_wall_time_s}s"
        case BudgetAxis.TOKENS:
            return f"max tokens reached: {spent.tokens} of {budget.max_tokens}"
        case BudgetAxis.COST:
            return f"max cost reached: ${spent.cost_usd:.4f} of ${budget.max_cost_usd}"
        case BudgetAxis.CONSECUTIVE_ERRORS:
            return (
                f"max consecutive errors reached: {spent.consecutive_errors} "
                f"of {budget.max_consecutive_errors}"
            )
        case BudgetAxis.CONSECUTIVE_DENIES:
            return (
                f"max consecutive denials reached: {spent.consecutive_denies} "
                f"of {budget.max_consecutive_denies}"
            )
