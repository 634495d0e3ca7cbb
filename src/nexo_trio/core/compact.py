"""Compaction policy: when to spend a turn on ``/compact``.

A compaction is scheduled when the **last** turn's context (input plus cache tokens of its
latest request) reaches ``threshold`` of the context window, and at least
``min_turns_between`` work turns have run since the previous compaction (or none has run
yet). A turn that failed with "prompt is too long" forces one regardless of the gap.
Compact turns are not counted as turns and do not consume operator interrupts.
"""

from __future__ import annotations

import attrs

from nexo_trio.core import validation as v

COMPACT_FOCUS = (
    "Keep the goal, the acceptance criteria and their latest failures, decisions taken, "
    "files changed and what remains to do."
)


@attrs.frozen
class CompactPolicy:
    """Settings of the compaction policy."""

    context_window: int = attrs.field(default=200_000, validator=v.at_least(1))
    threshold: float = attrs.field(default=0.8, validator=v.fraction)
    min_turns_between: int = attrs.field(default=3, validator=v.at_least(0))


def should_compact(
    policy: CompactPolicy,
    *,
    last_context_tokens: int,
    turns_since_compact: int | None,
    forced: bool = False,
) -> bool:
    """Whether the next turn should be a ``/compact`` turn.

    ``turns_since_compact`` is the number of work turns since the last compaction, or
    ``None`` when the goal has not compacted yet.
    """
    if forced:
        return True
    if last_context_tokens < policy.threshold * policy.context_window:
        return False
    return turns_since_compact is None or turns_since_compact >= policy.min_turns_between


def compact_prompt(focus: str = COMPACT_FOCUS) -> str:
    """The prompt of a compaction turn."""
    return f"/compact {focus}".rstrip()
