"""The orchestrator's recording path (``Orchestrator._emit``) on a real SQLite ledger: the
events of many goals emitted at once share commits, yet each goal's events reach the ledger,
its live state and the subscribers in the order they were emitted, and an emit returns only
once its event is committed to the file (a gate decision's reply never precedes it)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import trio

from nexo_trio.core.goal import Goal
from nexo_trio.core.goal_events import DecisionMade, GoalEvent
from nexo_trio.core.goal_machine import initial_state
from nexo_trio.core.redact import REDACTED
from nexo_trio.core.settings import Config
from nexo_trio.orchestrator.goal_run import GoalHandle
from nexo_trio.orchestrator.orchestrator import Orchestrator
from nexo_trio.store.sqlite import open_sqlite_store

GOALS = 12
PER_TASK = 15
KEY = "sk-ant-api03-recording-test-0123456789"


def _decision(goal_id: str, n: str) -> DecisionMade:
    return DecisionMade(
        goal_id=goal_id,
        tool_name="Bash",
        outcome="allow_once",
        reason=f"read-only, key {KEY}",
        decider="rules",
        latency_ms=0.1,
        tool_use_id=n,
        subject="ls",
    )


def _committed(path: Path, goal_id: str) -> list[str]:
    """The tool_use_id of the goal's decisions in the file, in ledger order (another
    connection: only what is committed)."""
    with sqlite3.connect(path) as conn:
        rows = conn.execute(
            "SELECT data FROM ledger WHERE goal_id = ? ORDER BY seq", (goal_id,)
        ).fetchall()
    return [json.loads(data)["tool_use_id"] for (data,) in rows]


async def test_concurrent_goals_share_commits_and_keep_each_goals_order(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    emitted: dict[str, list[str]] = {}
    async with open_sqlite_store(path) as store:
        orch = Orchestrator(Config(), store=store, environ={})
        goal_ids = [f"g{n}" for n in range(GOALS)]
        for goal_id in goal_ids:
            orch._goals[goal_id] = GoalHandle(
                Goal(id=goal_id, description="x"), initial_state(goal_id)
            )
            orch._secrets[goal_id] = (KEY,)
            emitted[goal_id] = []
        seen = orch.subscribe()
        before = store.transactions

        async def emitter(goal_id: str, task: int) -> None:
            for n in range(PER_TASK):
                event = _decision(goal_id, f"{task}-{n}")
                emitted[goal_id].append(event.tool_use_id or "")  # the order of the calls
                await orch._emit(event)
                # Returned: committed to the file, the state has folded it.
                assert event.tool_use_id in _committed(path, goal_id)
                await trio.lowlevel.checkpoint()

        async with trio.open_nursery() as nursery:
            for goal_id in goal_ids:
                for task in range(2):  # two emitters per goal: the gate and the turn
                    nursery.start_soon(emitter, goal_id, task)

        total = GOALS * 2 * PER_TASK
        assert store.transactions - before < total  # commits were shared
        shown: dict[str, list[str]] = {goal_id: [] for goal_id in goal_ids}
        while True:
            try:
                event: GoalEvent = seen.receive_nowait()
            except trio.WouldBlock:
                break
            assert isinstance(event, DecisionMade)
            assert event.reason == f"read-only, key {REDACTED}"  # redacted once recorded
            assert event.at > 0  # stamped
            shown[event.goal_id].append(event.tool_use_id or "")
        for goal_id in goal_ids:
            assert _committed(path, goal_id) == emitted[goal_id]
            assert shown[goal_id] == emitted[goal_id]
        with sqlite3.connect(path) as conn:
            (leaks,) = conn.execute(
                "SELECT count(*) FROM ledger WHERE data LIKE ?", (f"%{KEY}%",)
            ).fetchone()
        assert leaks == 0


async def test_a_cancelled_decision_is_still_recorded(tmp_path: Path) -> None:
    """A gate decision's emit is not cancelled by its caller: the CLI has its answer."""
    path = tmp_path / "ledger.sqlite"
    async with open_sqlite_store(path) as store:
        orch = Orchestrator(Config(), store=store, environ={})
        goal_id = "g"
        orch._goals[goal_id] = GoalHandle(Goal(id=goal_id, description="x"), initial_state(goal_id))
        lock = orch._emit_locks[goal_id] = trio.Lock()
        await lock.acquire()  # another event is being recorded

        async def cancelled_emit() -> None:
            with trio.CancelScope() as scope:
                scope.cancel()  # its caller gave up (a short deadline)
                await orch._emit(_decision(goal_id, "late"))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(cancelled_emit)
            await trio.sleep(0.05)
            assert _committed(path, goal_id) == []
            lock.release()
        assert _committed(path, goal_id) == ["late"]
