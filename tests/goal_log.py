"""Readings of a goal's event log that several test suites share."""

from __future__ import annotations

from collections.abc import Sequence

from nexo_trio.core.goal_events import (
    AcceptanceChecked,
    AttemptCompleted,
    GoalEvent,
    ReplayDecided,
)


def judged(events: Sequence[GoalEvent]) -> list[ReplayDecided]:
    """The replay decisions that did something other than proceed."""
    return [e for e in events if isinstance(e, ReplayDecided) and e.action != "proceed"]


def counted(events: Sequence[GoalEvent]) -> list[tuple[bool, bool]]:
    """``(compact, counted)`` of every judged turn, in order."""
    compact = {e.turn: e.compact for e in events if isinstance(e, AttemptCompleted)}
    flags: list[tuple[bool, bool]] = []
    last: dict[int, bool] = {}
    for e in events:
        if isinstance(e, AttemptCompleted):
            last[e.turn] = e.compact
        elif isinstance(e, ReplayDecided):
            flags.append((last.get(e.turn, compact.get(e.turn, False)), e.counted))
    return flags


def attempt_kinds(events: Sequence[GoalEvent]) -> list[tuple[int, str]]:
    """``(turn, kind)`` of every work turn, a claimed completion told apart by its
    acceptance: ``done`` or ``needs_retry``."""
    out: list[tuple[int, str]] = []
    for e in events:
        if isinstance(e, AttemptCompleted) and not e.compact:
            out.append((e.turn, e.kind))
        elif isinstance(e, AcceptanceChecked) and out and out[-1][0] == e.turn:
            out[-1] = (e.turn, "done" if e.met else "needs_retry")
    return out
