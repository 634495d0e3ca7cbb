"""Composition of a work turn's prompt (pure).

Order: queued operator messages in an ``[OPERATOR INTERRUPT]`` block, then a note that this
is a fresh conversation (after the goal got stuck in the previous one), then a note that the
workspace was rolled back, then a wake-up tick after a sleep, then the failures of the last
acceptance run with what the last turn changed, then the goal description.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from nexo_trio.core.acceptance import Failure
from nexo_trio.core.checkpoints import DiffStat

INTERRUPT_OPEN = "[OPERATOR INTERRUPT]"
INTERRUPT_CLOSE = "[END OPERATOR INTERRUPT]"
FAILURES_HEADER = "You said the goal was done, but these acceptance checks fail:"
FRESH_START = "[FRESH START]"
ROLLBACK = "[ROLLBACK]"
CHANGES_SHOWN = 20
"""Paths of each kind (added, modified, deleted) a prompt names; the rest are counted."""

SYSTEM_PROMPT = """\
You are working toward a goal given by an orchestrator (nexo-trio). When you believe the goal
is complete, say so: the orchestrator then runs the goal's acceptance checks and, if any
fails, tells you which and why in its next message. If you must wait for something outside
your control before you can go on, end your reply with only this JSON and nothing else:
{"__nexo_sleep__": true, "duration_ms": <milliseconds>, "reason": "<why>"}
and you will be woken up with a new message."""


@attrs.frozen
class WakeUp:
    """The sleep that just ended."""

    slept_ms: int
    reason: str | None = None
    early: bool = False
    """An operator message ended the sleep before its time."""


def compose_prompt(
    description: str,
    *,
    interrupts: Sequence[str] = (),
    wake_up: WakeUp | None = None,
    failures: Sequence[Failure] = (),
    fresh_start: str | None = None,
    rolled_back: str | None = None,
    changes: DiffStat | None = None,
) -> str:
    """The prompt of one work turn (``fresh_start``: why the conversation starts over;
    ``rolled_back``: what a rollback undid; ``changes``: what the last turn changed, shown
    with the failures)."""
    parts: list[str] = []
    if interrupts:
        body = "\n\n".join(m.strip() for m in interrupts)
        parts.append(f"{INTERRUPT_OPEN}\n{body}\n{INTERRUPT_CLOSE}")
    if fresh_start is not None:
        parts.append(
            f"{FRESH_START} This is a new conversation: the previous one got stuck "
            f"({fresh_start.strip()}). Take a different approach."
        )
    if rolled_back is not None:
        parts.append(f"{ROLLBACK} {rolled_back.strip()}")
    if wake_up is not None:
        why = f" ({wake_up.reason})" if wake_up.reason else ""
        if wake_up.early:
            parts.append(
                f"[WAKE UP] You asked to sleep{why}; an operator message woke you after "
                f"{wake_up.slept_ms / 1000:g}s: continue toward the goal."
            )
        else:
            parts.append(
                f"[WAKE UP] You asked to sleep for {wake_up.slept_ms / 1000:g}s{why}. "
                "The time has passed: continue toward the goal."
            )
    if failures:
        parts.append(format_failures(failures))
        if changes is not None:
            parts.append(format_changes(changes))
    parts.append(f"Goal: {description.strip()}")
    return "\n\n".join(parts)


def format_failures(failures: Sequence[Failure]) -> str:
    """The failures of an acceptance run, numbered, with their evidence."""
    lines = [FAILURES_HEADER]
    for number, failure in enumerate(failures, start=1):
        lines.append(f"{number}. {failure.label}: {failure.message}")
        if failure.evidence.strip():
            lines += [f"   {line}" for line in failure.evidence.rstrip().splitlines()]
    lines.append("Fix these, then say the goal is done again.")
    return "\n".join(lines)


def format_changes(changes: DiffStat) -> str:
    """What a turn changed in the workspace, in a few lines (at most :data:`CHANGES_SHOWN`
    paths of each kind)."""
    if changes.empty:
        return "Your last turn changed no file in the workspace."
    files = f"{changes.files_changed} file{'s' if changes.files_changed != 1 else ''}"
    lines = [f"Your last turn changed {files} (+{changes.insertions} -{changes.deletions} lines):"]
    for label, paths in (
        ("added", changes.added),
        ("modified", changes.modified),
        ("deleted", changes.deleted),
    ):
        if paths:
            shown = ", ".join(paths[:CHANGES_SHOWN])
            more = len(paths) - CHANGES_SHOWN
            lines.append(f"- {label}: {shown}" + (f" and {more} more" if more > 0 else ""))
    return "\n".join(lines)
