"""A goal moves between hosts on a shared PostgreSQL store, on the real CLI (issue 14):
its session transcript is kept in the store, so the second host's CLI (another ``HOME``,
another state dir) resumes the same conversation."""

from __future__ import annotations

from pathlib import Path

import attrs
import psycopg
import pytest

from nexo_trio.core.goal import Goal, ShellCheck
from nexo_trio.core.goal_events import AttemptStarted, SessionBound
from nexo_trio.core.goal_outcome import GoalEndKind
from nexo_trio.core.prompt import FAILURES_HEADER, compose_prompt
from nexo_trio.orchestrator.transcripts import transcript_path
from nexo_trio.testing.messages_api import (
    Reply,
    last_message_has_tool_result,
    nth,
    prompt_contains,
    text,
    tool_use,
)
from tests.e2e.conftest import E2E
from tests.e2e.test_real_claude import user_texts

pytestmark = pytest.mark.real_claude


async def _first_host(e2e: E2E, pg_url: str) -> tuple[Goal, str]:
    """Host A runs the goal one turn (its budget), which fails its check; the goal and
    its session."""
    check = ShellCheck("grep -qx hi hello.txt", label="hello.txt says hi")
    first_goal = e2e.goal("Create hello.txt containing the word hi.", [check], max_turns=1)
    e2e.api.add(
        Reply(nth(0), tool_use("Bash", {"command": "echo bye > hello.txt"}, id="toolu_e2e_bye")),
        Reply(nth(1) & last_message_has_tool_result(), text("Wrote hello.txt. Done.")),
        Reply(
            nth(2) & prompt_contains(FAILURES_HEADER),
            tool_use("Bash", {"command": "echo hi > hello.txt"}, id="toolu_e2e_hi"),
        ),
        Reply(nth(3) & last_message_has_tool_result(), text("Fixed hello.txt. Done.")),
    )
    # Host A: one turn, then its budget ends the run.
    home_a = e2e.root / "home"
    (e2e.root / "home-b").mkdir()
    host_a = e2e.config(store=pg_url, state_dir=str(e2e.root / "state-a"))
    first = await e2e.run(first_goal, host_a)
    assert first.outcome.kind is GoalEndKind.BUDGET_EXHAUSTED, first.outcome
    session = first.outcome.session_id
    assert session is not None
    kept = transcript_path(home_a / ".claude", Path(e2e.workspace), session)
    assert kept is not None
    assert kept.exists()
    return first_goal, session


async def test_a_goal_moved_to_another_host_resumes_its_session_from_the_store(
    e2e: E2E, pg_url: str
) -> None:
    first_goal, session = await _first_host(e2e, pg_url)
    home_b = e2e.root / "home-b"

    # Host B: another HOME (no transcript in it) and state dir; the goal's budget raised.
    host_b = e2e.config(
        store=pg_url, state_dir=str(e2e.root / "state-b"), env={"HOME": str(home_b)}
    )
    second = await e2e.run(more_turns(first_goal, 2), host_b)
    assert second.outcome.kind is GoalEndKind.DONE, second.outcome
    restored = transcript_path(home_b / ".claude", Path(e2e.workspace), session)
    assert restored is not None
    assert restored.exists()
    [started] = second.of(AttemptStarted)
    assert (started.turn, started.resume_session) == (2, session)
    assert {b.session_id for b in second.of(SessionBound)} <= {session}
    assert second.outcome.session_id == session
    assert not any(b.invalid for b in second.bindings)
    # The CLI on host B sent turn 1's history: the conversation was resumed, not restarted.
    turn2_first = e2e.api.message_requests()[2]
    assert compose_prompt(first_goal.description) in user_texts(turn2_first)


def more_turns(goal: Goal, max_turns: int) -> Goal:
    """The goal with its turn budget raised (how its next run is allowed to go on)."""
    return attrs.evolve(goal, budget=attrs.evolve(goal.budget, max_turns=max_turns))


async def test_without_the_transcript_the_goal_goes_on_in_a_fresh_session(
    e2e: E2E, pg_url: str
) -> None:
    """Where the session cannot be resumed on the new host (nothing kept), the CLI refuses
    it, and the goal goes on in a fresh session with its failures in the prompt."""
    first_goal, session = await _first_host(e2e, pg_url)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("DELETE FROM transcripts")
    host_b = e2e.config(
        store=pg_url,
        state_dir=str(e2e.root / "state-b"),
        env={"HOME": str(e2e.root / "home-b")},
    )
    second = await e2e.run(more_turns(first_goal, 2), host_b)
    assert second.outcome.kind is GoalEndKind.DONE, second.outcome
    started = second.of(AttemptStarted)
    assert [(a.turn, a.resume_session) for a in started] == [(2, session), (2, None)]
    assert FAILURES_HEADER in started[1].prompt
    assert second.outcome.session_id not in (None, session)
    assert [b.invalid for b in second.bindings if b.session_id == session] == [True]
