"""Goal events and goal outcomes as JSON (the ledger's rows and ``nexo-trio run --json``).

GoalOutcome's shape is the public contract of DESIGN.md §3::

    {"goal_id", "outcome": {"kind", "reason"?, "axis"?}, "total_turns",
     "usage": {"input_tokens", "output_tokens", "cache_read_input_tokens",
               "cache_creation_input_tokens", "cost_usd", "wall_time_s"},
     "final_text", "acceptance", "decisions": {"allowed", "denied"}, "session_id",
     "elapsed_s"}
"""

from __future__ import annotations

from typing import Any, Final, get_args

import cattrs

from nexo_trio.core.acceptance import CheckResult, Verdict
from nexo_trio.core.budget import BudgetAxis
from nexo_trio.core.events import Usage
from nexo_trio.core.goal_events import EPHEMERAL_EVENTS, GoalEvent, event_kind
from nexo_trio.core.goal_outcome import GoalEndKind, GoalOutcome

_EVENT_TYPES: Final[dict[str, type[Any]]] = {event_kind(cls): cls for cls in get_args(GoalEvent)}


def _make_converter() -> cattrs.Converter:
    c = cattrs.Converter(unstruct_collection_overrides={tuple: list})

    def verdict_to_json(verdict: Verdict) -> dict[str, Any]:
        return {
            "met": verdict.met,
            "results": [c.unstructure(r) for r in verdict.results],
        }

    def verdict_from_json(data: dict[str, Any], _: Any) -> Verdict:
        # ``met`` is derived from the results: not read back.
        return Verdict(results=c.structure(data.get("results", []), tuple[CheckResult, ...]))

    c.register_unstructure_hook(Verdict, verdict_to_json)
    c.register_structure_hook(Verdict, verdict_from_json)

    def outcome_to_json(outcome: GoalOutcome) -> dict[str, Any]:
        kind: dict[str, Any] = {"kind": outcome.kind.value}
        if outcome.reason is not None:
            kind["reason"] = outcome.reason
        if outcome.axis is not None:
            kind["axis"] = outcome.axis.value
        return {
            "goal_id": outcome.goal_id,
            "outcome": kind,
            "total_turns": outcome.total_turns,
            "usage": {
                **c.unstructure(outcome.usage),
                "cost_usd": outcome.cost_usd,
                "wall_time_s": outcome.wall_time_s,
            },
            "final_text": outcome.final_text,
            "acceptance": None if outcome.acceptance is None else c.unstructure(outcome.acceptance),
            "decisions": {"allowed": outcome.allowed, "denied": outcome.denied},
            "session_id": outcome.session_id,
            "elapsed_s": outcome.elapsed_s,
        }

    def outcome_from_json(data: dict[str, Any], _: Any) -> GoalOutcome:
        kind = data["outcome"]
        usage = dict(data.get("usage", {}))
        cost = usage.pop("cost_usd", 0.0)
        wall = usage.pop("wall_time_s", 0.0)
        acceptance = data.get("acceptance")
        decisions = data.get("decisions", {})
        return GoalOutcome(
            goal_id=data["goal_id"],
            kind=GoalEndKind(kind["kind"]),
            reason=kind.get("reason"),
            axis=BudgetAxis(kind["axis"]) if kind.get("axis") else None,
            total_turns=data.get("total_turns", 0),
            usage=c.structure(usage, Usage),
            cost_usd=cost,
            wall_time_s=wall,
            final_text=data.get("final_text"),
            acceptance=None if acceptance is None else c.structure(acceptance, Verdict),
            allowed=decisions.get("allowed", 0),
            denied=decisions.get("denied", 0),
            session_id=data.get("session_id"),
            elapsed_s=data.get("elapsed_s", 0.0),
        )

    c.register_unstructure_hook(GoalOutcome, outcome_to_json)
    c.register_structure_hook(GoalOutcome, outcome_from_json)
    return c


converter: Final = _make_converter()
"""The converter of the goal JSON formats (ledger events, goal outcomes)."""


def goal_outcome_to_json(outcome: GoalOutcome) -> dict[str, Any]:
    """The public JSON object of a goal outcome."""
    data: dict[str, Any] = converter.unstructure(outcome, GoalOutcome)
    return data


def goal_outcome_from_json(data: dict[str, Any]) -> GoalOutcome:
    """Read back :func:`goal_outcome_to_json`'s object."""
    return converter.structure(data, GoalOutcome)


def is_ledger_event(event: GoalEvent) -> bool:
    """Whether the event is stored in the ledger (live-only events are not)."""
    return not isinstance(event, EPHEMERAL_EVENTS)


def event_to_ledger(event: GoalEvent) -> tuple[str, dict[str, Any]]:
    """``(kind, data)`` of an event, as the ledger stores it."""
    data: dict[str, Any] = converter.unstructure(event, type(event))
    return event_kind(type(event)), data


def event_from_ledger(
    kind: str, data: dict[str, Any], *, at: float | None = None
) -> GoalEvent | None:
    """The typed event of a ledger row; ``None`` for a kind this version does not know.

    ``at`` (the row's time) stands in for an event recorded without its own time."""
    cls = _EVENT_TYPES.get(kind)
    if cls is None:
        return None
    if at is not None and not data.get("at"):
        data = {**data, "at": at}
    event: GoalEvent = converter.structure(data, cls)
    return event
