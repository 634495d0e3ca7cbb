"""The progress display: plain lines when not on a terminal, a live table on one."""

from __future__ import annotations

import io

import pytest
import trio
import trio.testing
from rich.console import Console

from nexo_trio.cli import progress as progress_module
from nexo_trio.cli.progress import Progress
from nexo_trio.core.acceptance import CheckResult, Verdict
from nexo_trio.core.budget import BudgetAxis
from nexo_trio.core.events import Usage
from nexo_trio.core.goal_events import (
    AcceptanceChecked,
    AttemptCompleted,
    AttemptStarted,
    BudgetExhausted,
    CancelRequested,
    CompactScheduled,
    DecisionMade,
    Escalated,
    GoalCompleted,
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

G = "goal-with-a-long-id"
USAGE = Usage(input_tokens=100, output_tokens=20)


def attempt_completed(turn: int, kind: str, reason: str | None = None) -> AttemptCompleted:
    return AttemptCompleted(
        goal_id=G,
        turn=turn,
        compact=False,
        kind=kind,
        cause="completed",
        reason=reason,
        session_id="s-1",
        usage=USAGE,
        cost_usd=0.001,
        duration_s=0.5,
    )


def story() -> list[GoalEvent]:
    """A goal: a failed claim, a sleep, a compaction, a denial, then done."""
    failed = CheckResult(0, "hello.txt says hi", passed=False, message="exit code 1")
    passed = CheckResult(0, "hello.txt says hi", passed=True, message="exit code 0")
    return [
        GoalStarted(G, "Create hello.txt", "/tmp/ws"),
        AttemptStarted(G, 1, compact=False, resume_session=None, prompt="Goal: x"),
        SessionBound(G, "s-1"),
        TurnActivity(G, 1, last_tool="Bash", tool_uses=1, context_tokens=1000),
        TurnActivity(G, 1, last_tool=None, tool_uses=1, context_tokens=1000),
        attempt_completed(1, "claimed_done"),
        ReplayDecided(G, 1, "proceed", None),
        AcceptanceChecked(G, 1, met=False, results=(failed,)),
        AttemptStarted(G, 2, compact=False, resume_session="s-1", prompt="Goal: x"),
        DecisionMade(G, "Bash", "deny", "rm is not allowed", "rules", 0.3),
        attempt_completed(2, "continue", "API Error: 529"),
        ReplayDecided(G, 2, "retry", "API Error: 529"),
        Sleeping(G, 1500, "waiting for CI"),
        WokeUp(G, 1500),
        CompactScheduled(G, context_tokens=170_000, forced=False),
        AttemptStarted(G, 2, compact=True, resume_session="s-1", prompt="/compact"),
        GoalProgress(G, turns=2, tokens=240, cost_usd=0.002, elapsed_s=3.0),
        AttemptStarted(G, 3, compact=False, resume_session="s-1", prompt="Goal: x"),
        attempt_completed(3, "claimed_done"),
        AcceptanceChecked(G, 3, met=True, results=(passed,)),
        GoalCompleted(
            G,
            GoalOutcome(
                goal_id=G,
                kind=GoalEndKind.DONE,
                total_turns=3,
                usage=USAGE,
                cost_usd=0.003,
                acceptance=Verdict((passed,)),
            ),
        ),
    ]


def test_plain_lines_when_not_a_terminal() -> None:
    out = io.StringIO()
    progress = Progress(out)
    assert not progress.live  # a StringIO is not a terminal
    for event in story():
        progress.update(event)
    prefix = f"[{G[:12]}] "
    assert out.getvalue().splitlines() == [
        prefix + "goal started in /tmp/ws (unconfined)",
        prefix + "turn 1 started",
        prefix + "session s-1",
        prefix + "  tool: Bash",
        prefix + "turn 1 -> claimed_done",
        prefix + "acceptance: 0/1 not met",
        "  ✗ hello.txt says hi: exit code 1",
        prefix + "turn 2 started",
        prefix + "  permission deny: Bash (rm is not allowed)",
        prefix + "turn 2 -> continue: API Error: 529",
        prefix + "replay: retry (API Error: 529)",
        prefix + "sleeping 1.5s: waiting for CI",
        prefix + "woke up",
        prefix + "compaction scheduled at 170000 context tokens",
        prefix + "compacting the conversation",
        prefix + "progress: 2 turns, 240 tokens, $0.0020, 3s",
        prefix + "turn 3 started",
        prefix + "turn 3 -> claimed_done",
        prefix + "acceptance: 1/1 met",
        prefix + "goal done after 3 turns, 120 tokens, $0.0030",
    ]


def test_plain_lines_for_the_other_endings() -> None:
    out = io.StringIO()
    progress = Progress(out, live=False)
    reason = "max turns reached: 2 of 2"
    events: list[GoalEvent] = [
        CancelRequested("a", "cancelled by SIGINT"),
        BudgetExhausted("a", "turns", reason),
        GoalCompleted(
            "a",
            GoalOutcome(
                goal_id="a", kind=GoalEndKind.BUDGET_EXHAUSTED, reason=reason, axis=BudgetAxis.TURNS
            ),
        ),
        Escalated("b", "API Error: 401"),
    ]
    for event in events:
        progress.update(event)
    lines = out.getvalue().splitlines()
    # The ending is told once, by the goal's completion (not again by its cause).
    assert lines == [
        "[a] cancelling: cancelled by SIGINT",
        "[a] goal budget_exhausted (max turns reached: 2 of 2) after 0 turns, 0 tokens, $0.0000",
    ]


def test_markup_in_event_text_is_printed_as_is() -> None:
    out = io.StringIO()
    progress = Progress(out, live=False)
    progress.update(CancelRequested("g", "[bold]not markup[/bold] [red"))
    assert out.getvalue() == "[g] cancelling: [bold]not markup[/bold] [red\n"


async def test_the_live_table_renders_a_goal() -> None:
    out = io.StringIO()
    progress = Progress(out, live=True)
    progress.console = Console(file=out, force_terminal=True, width=120, highlight=False)
    send, receive = trio.open_memory_channel[GoalEvent](100)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(progress.run, receive)
        async with send:
            for event in story():
                await send.send(event)
                await trio.lowlevel.checkpoint()
    text = out.getvalue()
    assert "nexo-trio" in text  # the table's title
    for column in ("goal", "turn", "elapsed", "tokens", "cost", "last tool", "acceptance"):
        assert column in text
    assert G[:12] in text
    assert "3 done" in text
    assert "1/1 met" in text
    assert "$0.0030" in text
    assert "turn 1 started" not in text  # no plain lines on a terminal
    row = progress.rows[G]
    assert (row.turn, row.phase, row.tokens) == (3, "done", 360)
    assert row.ended is not None


async def test_the_live_table_survives_many_goals_and_a_cancel() -> None:
    out = io.StringIO()
    progress = Progress(out, live=True)
    progress.console = Console(file=out, force_terminal=True, width=100, highlight=False)
    send, receive = trio.open_memory_channel[GoalEvent](1000)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(progress.run, receive)
        for n in range(20):
            await send.send(GoalStarted(f"goal-{n}", "x", "/tmp"))
            await send.send(AttemptStarted(f"goal-{n}", 1, False, None, "p"))
        await trio.testing.wait_all_tasks_blocked()  # the display read them all
        nursery.cancel_scope.cancel()  # the display is torn down while running
    assert len(progress.rows) == 20
    assert "goal-19" in out.getvalue()


def last_frame(text: str) -> str:
    """The last table the live display drew."""
    return text[text.rindex("nexo-trio") :]


async def test_the_last_frame_shows_events_folded_in_after_the_display_stopped_reading() -> None:
    """``run_with_progress`` drains the last events with ``update`` and then cancels the
    display: its final frame must show them (the goal done), not the state before."""
    out = io.StringIO()
    progress = Progress(out, live=True)
    progress.console = Console(file=out, force_terminal=True, width=120, highlight=False)
    events = story()
    send, receive = trio.open_memory_channel[GoalEvent](100)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(progress.run, receive)
        for event in events[:-2]:
            await send.send(event)
        await trio.testing.wait_all_tasks_blocked()  # the display read them all
        for event in events[-2:]:
            progress.update(event)
        nursery.cancel_scope.cancel()
    frame = last_frame(out.getvalue())
    assert "3 done" in frame
    assert "360" in frame  # turn 3's tokens counted
    assert "working" not in frame


class FakeTime:
    """Stands in for the ``time`` module of the display: a monotonic clock set by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


async def test_the_elapsed_time_moves_between_events(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeTime()
    monkeypatch.setattr(progress_module, "time", clock)
    out = io.StringIO()
    progress = Progress(out, live=True)
    progress.console = Console(file=out, force_terminal=True, width=120, highlight=False)
    send, receive = trio.open_memory_channel[GoalEvent](10)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(progress.run, receive)
        await send.send(GoalStarted(G, "x", "/tmp"))
        await trio.testing.wait_all_tasks_blocked()  # the display read it
        clock.now += 42.0  # a long turn, no event
        nursery.cancel_scope.cancel()
    frame = last_frame(out.getvalue())
    assert "0.0s" not in frame
    assert "42.0s" in frame
