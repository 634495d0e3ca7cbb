"""Live progress of goals: a table on a terminal, plain lines otherwise (both on stderr)."""

from __future__ import annotations

import time
from typing import TextIO

import attrs
import trio
from rich.console import Console
from rich.live import Live
from rich.table import Table

from nexo_trio.core.goal_events import (
    AcceptanceChecked,
    AttemptCompleted,
    AttemptStarted,
    CancelRequested,
    CompactScheduled,
    DecisionMade,
    GoalCompleted,
    GoalEvent,
    GoalPaused,
    GoalProgress,
    GoalRestarted,
    GoalResumed,
    GoalStarted,
    InterruptDelivered,
    InterruptQueued,
    MaxTurnsRaised,
    ReplayDecided,
    SessionBound,
    Sleeping,
    StuckDetected,
    TurnActivity,
    WokeUp,
)

_SHOWN_REPLAYS = frozenset({"retry", "fresh_session", "compact"})
"""Replay decisions worth a line (a proceed is the norm; an escalation ends the goal)."""


@attrs.define
class _Row:
    goal_id: str
    started: float
    turn: int = 0
    phase: str = "starting"
    tokens: int = 0
    cost_usd: float = 0.0
    last_tool: str = ""
    acceptance: str = "-"
    ended: float | None = None


class Progress:
    """Consumes goal events and shows them."""

    def __init__(self, stream: TextIO, *, live: bool | None = None) -> None:
        self.console = Console(file=stream, highlight=False, soft_wrap=True)
        self.live = self.console.is_terminal if live is None else live
        self.rows: dict[str, _Row] = {}

    async def run(self, events: trio.MemoryReceiveChannel[GoalEvent]) -> None:
        """Show events until the channel closes (or the task is cancelled)."""
        if not self.live:
            async for event in events:
                self.update(event)
            return
        # The table is rebuilt at every refresh: the elapsed times move between events, and
        # the last frame (drawn on exit) shows events folded in by ``update`` directly.
        with Live(console=self.console, refresh_per_second=4, get_renderable=self._table) as live:
            async for event in events:
                self.update(event)
                live.refresh()

    def expect(self, goal_ids: list[str]) -> None:
        """Show these goals from now on (``queued`` until their first event): with many
        goals, the ones waiting for a slot (``max_concurrent_goals``) are in the table too."""
        for goal_id in goal_ids:
            if goal_id not in self.rows:
                self.rows[goal_id] = _Row(goal_id, time.monotonic(), phase="queued")

    def note(self, text: str) -> None:
        """Say something to the user now, live table or not."""
        self.console.print(text, markup=False)

    def update(self, event: GoalEvent) -> None:
        """Fold one event into the rows; print a line for it when not live."""
        row = self.rows.get(event.goal_id)
        if row is None:
            row = self.rows[event.goal_id] = _Row(event.goal_id, time.monotonic())
        elif row.phase == "queued":  # its time runs from its first event, as for the others
            row.started, row.phase = time.monotonic(), "starting"
        line = self._apply(row, event)
        if isinstance(event, GoalStarted) and self.live:
            for warning in event.warnings:  # shown above the table, not only in a row
                self.note(f"[{event.goal_id[:12]}] warning: {warning}")
        if not self.live and line:
            self.console.print(f"[{event.goal_id[:12]}] {line}", markup=False)

    def _apply(self, row: _Row, event: GoalEvent) -> str | None:
        match event:
            case GoalStarted(resumed_turns=resumed, workspace=workspace):
                after = event.resumed_after
                extra = ""
                if after is not None:
                    extra = f", resuming after {resumed} turns (the last run {after})"
                    if event.abandoned_turn is not None:
                        extra += f"; turn {event.abandoned_turn} runs again"
                elif resumed:
                    extra = f", resuming after {resumed} turns"
                confined = "confined" if event.confined else "unconfined"
                lines = [f"goal started in {workspace} ({confined}){extra}"]
                lines += [f"  warning: {warning}" for warning in event.warnings]
                if event.leftovers_stopped:
                    stopped = ", ".join(event.leftovers_stopped)
                    lines.append(f"  stopped what the crashed run left running: {stopped}")
                return "\n".join(lines)
            case GoalRestarted(reason=reason):
                return f"goal restarted: {reason}"
            case AttemptStarted(turn=turn, compact=compact):
                row.turn = turn
                row.phase = "compacting" if compact else "working"
                if compact:
                    return "compacting the conversation"
                return f"turn {turn} started" + (" again" if event.redo else "")
            case SessionBound(session_id=session_id):
                return f"session {session_id}"
            case TurnActivity(last_tool=tool, tool_uses=uses):
                row.last_tool = f"{tool} (#{uses})" if tool else ""
                return f"  tool: {tool}" if tool else None
            case AttemptCompleted(kind=kind, reason=reason, usage=usage, cost_usd=cost):
                row.tokens += usage.total_tokens
                row.cost_usd += cost
                row.phase = "checking" if kind == "claimed_done" else kind
                why = f": {reason}" if reason else ""
                if event.compact:
                    return "compacted" if kind == "claimed_done" else f"compaction -> {kind}{why}"
                return f"turn {event.turn} -> {kind}{why}"
            case AcceptanceChecked(met=met, results=results):
                passed = sum(1 for r in results if r.passed)
                row.acceptance = f"{passed}/{len(results)} {'met' if met else 'not met'}"
                lines = [f"acceptance: {row.acceptance}"]
                lines += [
                    f"  ✗ {r.label}: {r.message}" for r in results if not r.passed and r.required
                ]
                return "\n".join(lines)
            case ReplayDecided(action=action, reason=reason) if action not in (
                "proceed",
                "escalate",
            ):
                return f"replay: {action} ({reason})"
            case StuckDetected(reason=reason, action=action):
                then = "a fresh session" if action == "fresh_session" else "escalating"
                return f"stuck: {reason}; {then}"
            case CompactScheduled(context_tokens=tokens):
                return f"compaction scheduled at {tokens} context tokens"
            case Sleeping(duration_ms=ms, reason=reason):
                row.phase = "sleeping"
                return f"sleeping {ms / 1000:g}s: {reason}"
            case WokeUp(early=early):
                return "woken up by an operator message" if early else "woke up"
            case DecisionMade(tool_name=tool, outcome=outcome, reason=reason):
                what = f" {event.subject}" if event.subject else ""
                if len(what) > 100:
                    what = what[:97] + "..."
                effect = f" [{event.effect}]" if event.effect else ""
                why = f" ({reason})" if reason else ""
                return f"  permission {outcome}: {tool}{what}{effect}{why}"
            case CancelRequested(reason=reason):
                return f"cancelling: {reason}"
            case GoalPaused():
                row.phase = "paused"
                return "paused (after the running turn)"
            case GoalResumed():
                return "resumed"
            case InterruptQueued(message=message):
                return f"operator message queued: {message[:80]}"
            case InterruptDelivered(message=message):
                return f"operator message taken mid-turn: {message[:80]}"
            case MaxTurnsRaised(max_turns=n):
                return f"max turns raised to {n}"
            case GoalProgress(turns=turns, tokens=tokens, cost_usd=cost, elapsed_s=elapsed):
                return f"progress: {turns} turns, {tokens} tokens, ${cost:.4f}, {elapsed:.0f}s"
            case GoalCompleted(outcome=outcome):
                row.phase = outcome.kind.value
                row.ended = time.monotonic()
                why = f" ({outcome.reason})" if outcome.reason else ""
                return (
                    f"goal {outcome.kind.value}{why} after {outcome.total_turns} turns, "
                    f"{outcome.usage.total_tokens} tokens, ${outcome.cost_usd:.4f}"
                )
            case _:
                return None

    def _table(self) -> Table:
        table = Table(title="nexo-trio", expand=False)
        for column in ("goal", "turn", "elapsed", "tokens", "cost", "last tool", "acceptance"):
            table.add_column(column)
        now = time.monotonic()
        for row in list(self.rows.values()):  # a snapshot: rich refreshes from a thread
            elapsed = (row.ended or now) - row.started
            table.add_row(
                row.goal_id[:12],
                f"{row.turn} {row.phase}",
                f"{elapsed:.1f}s",
                str(row.tokens),
                f"${row.cost_usd:.4f}",
                row.last_tool,
                row.acceptance,
            )
        return table
