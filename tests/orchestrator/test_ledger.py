"""The SQLite goal ledger: every durable event, in order; exactly one ``goal_completed`` per
run on every path, including an Orchestrator torn down by cancellation mid-turn."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

from nexo_trio.core.command import ClaudeCommand
from nexo_trio.core.goal_events import GoalStarted, SessionBound, TurnActivity
from nexo_trio.core.goal_outcome import GoalEndKind
from nexo_trio.core.settings import ClaudeSettings
from nexo_trio.engine.supervisor import TurnResult
from nexo_trio.orchestrator.orchestrator import Orchestrator
from nexo_trio.orchestrator.state_dir import DB_NAME
from nexo_trio.store import GoalSummary, LedgerEntry, open_sqlite_store
from nexo_trio.testing.scenario import Turn, api_error, bash, hang, init, result, text, turn
from nexo_trio.wire.goal_json import event_to_ledger

from .conftest import DONE_FILE, Harness, Recorder, orchestrator, wait_gone


async def read_ledger(h: Harness, goal_id: str = "g1") -> list[LedgerEntry]:
    """The goal's events as a fresh reader of the state dir's database sees them."""
    async with open_sqlite_store(h.root / "state" / DB_NAME) as store:
        return await store.events(goal_id)


async def read_status(h: Harness) -> list[GoalSummary]:
    """What ``nexo-trio status`` shows of the state dir."""
    async with open_sqlite_store(h.root / "state" / DB_NAME) as store:
        return await store.goals()


def outcome_kind(entry: LedgerEntry) -> str:
    """The outcome kind of a ``goal_completed`` entry."""
    assert entry.kind == "goal_completed"
    kind: str = entry.data["outcome"]["outcome"]["kind"]
    return kind


async def test_every_durable_event_is_in_the_ledger_in_order(h: Harness) -> None:
    fake = h.fake(
        turn(init(), bash("echo working"), text("Done."), result("Done.")),
        turn(init(), bash(f"touch {DONE_FILE}"), text("Done."), result("Done.")),
    )
    async with orchestrator(h.config(fake), sqlite=True) as (orch, rec):
        outcome = await orch.run_goal(h.goal())
        events = rec.events()

    assert outcome.kind is GoalEndKind.DONE
    ledger = await read_ledger(h)
    durable = [e for e in events if not isinstance(e, TurnActivity)]
    assert len(durable) < len(events)  # the tools did produce live activity
    assert [(e.kind, e.data) for e in ledger] == [event_to_ledger(e) for e in durable]
    assert "turn_activity" not in {e.kind for e in ledger}
    seqs = [e.seq for e in ledger]
    assert seqs == sorted(seqs)
    assert len(set(seqs)) == len(seqs)
    assert [e.kind for e in ledger].count("goal_completed") == 1
    assert outcome_kind(ledger[-1]) == "done"


class BrokenRunner:
    """A turn runner with a bug."""

    async def __call__(self, command: ClaudeCommand, **options: Any) -> TurnResult:
        await trio.lowlevel.checkpoint()
        raise RuntimeError("bug")


PATHS: dict[str, tuple[list[Turn], dict[str, Any], str]] = {
    "done": (
        [turn(init(), bash(f"touch {DONE_FILE}"), text("Done."), result("Done."))],
        {},
        "done",
    ),
    "escalated": ([turn(init(), api_error(401))], {}, "escalated"),
    "exhausted": ([turn(init(), text("Done."), result("Done."))], {}, "budget_exhausted"),
    "spawn_failed": ([], {"missing_binary": True}, "escalated"),
    "internal_error": ([], {"turn_runner": BrokenRunner()}, "escalated"),
    "cancelled": ([turn(init(), hang())], {"cancel": True}, "cancelled"),
}


@pytest.mark.parametrize("path", list(PATHS))
async def test_exactly_one_goal_completed_on_every_path(h: Harness, path: str) -> None:
    turns, how, expected = PATHS[path]
    fake = h.fake(*turns)
    config = h.config(fake)
    if how.get("missing_binary"):
        config = h.config(claude=ClaudeSettings(binary=str(h.root / "missing")))
    options = {"turn_runner": how["turn_runner"]} if "turn_runner" in how else {}
    async with orchestrator(config, sqlite=True, **options) as (orch, rec):
        handle = await orch.start_goal(h.goal(max_turns=1))
        if how.get("cancel"):
            await rec.wait_for(SessionBound)
            assert await orch.cancel_goal("g1")
        outcome = await handle.wait()

    assert outcome.kind.value == expected
    ledger = await read_ledger(h)
    kinds = [e.kind for e in ledger]
    assert kinds[0] == "goal_started"
    assert kinds.count("goal_completed") == 1
    assert outcome_kind(ledger[-1]) == expected
    (summary,) = await read_status(h)
    assert (summary.goal_id, summary.outcome) == ("g1", expected)


async def test_a_cancelled_orchestrator_still_records_the_end_and_stops_the_turn(
    h: Harness,
) -> None:
    fake = h.fake(
        turn(init(), hang()),
        turn(init(), bash(f"touch {DONE_FILE}"), text("Done."), result("Done.")),
    )
    config = h.config(fake)
    with trio.fail_after(10):
        with trio.CancelScope() as scope:
            async with Orchestrator(config) as orch:
                rec = Recorder(orch.subscribe())
                handle = await orch.start_goal(h.goal())
                await rec.wait_for(SessionBound)
                scope.cancel()
                await trio.sleep_forever()
        assert scope.cancelled_caught
        pid = int(fake.invocations()[0]["pid"])
        await wait_gone(pid, timeout=1.0)

    first_run = handle.outcome
    assert first_run is not None
    assert first_run.kind is GoalEndKind.CANCELLED
    assert first_run.reason == "orchestrator shut down"
    ledger = await read_ledger(h)
    assert [e.kind for e in ledger].count("goal_completed") == 1
    assert outcome_kind(ledger[-1]) == "cancelled"

    # A second run of the same goal: its own goal_completed, the session carried over.
    async with orchestrator(config, sqlite=True) as (orch, rec):
        outcome = await orch.run_goal(h.goal())
    assert outcome.kind is GoalEndKind.DONE
    ledger = await read_ledger(h)
    kinds = [e.kind for e in ledger]
    assert kinds.count("goal_started") == kinds.count("goal_completed") == 2
    assert [outcome_kind(e) for e in ledger if e.kind == "goal_completed"] == [
        "cancelled",
        "done",
    ]
    (started,) = rec.of(GoalStarted)
    assert started.resumed_session == fake.invocations()[0]["session_id"]
    assert started.resumed_turns == 0  # the first run ended: nothing to carry over
    assert fake.invocations()[1]["resumed"]

    (summary,) = await read_status(h)
    assert summary.outcome == "done"


def test_the_ledger_lives_in_the_state_dir(h: Harness) -> None:
    assert Orchestrator(h.config()).state_dir == Path(h.config().state_dir)
