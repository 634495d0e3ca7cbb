"""A full record of each turn (issue 12): the ledger keeps Claude's texts, every tool call
(its input redacted, its result's size and error), every decision with its command and the
call it was about; the raw stdout is kept compressed, capped, and replays to the outcome
the run recorded."""

from __future__ import annotations

import gzip
import os
import sqlite3
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest
import trio

from nexo_trio.cli.replay import StreamNotes, replay_stream
from nexo_trio.core.goal_events import (
    AssistantText,
    AttemptCompleted,
    AttemptStarted,
    DecisionMade,
    GoalEvent,
    ToolCalled,
)
from nexo_trio.core.goal_outcome import GoalEndKind
from nexo_trio.core.kept_text import TEXT_CAP
from nexo_trio.core.redact import REDACTED
from nexo_trio.engine import stream_copy
from nexo_trio.gate import socket_server
from nexo_trio.store import MemoryStore
from nexo_trio.store.sqlite import open_sqlite_store
from nexo_trio.testing import bash, init, result, text, tool_use, turn
from nexo_trio.wire.goal_json import event_from_ledger

from .conftest import DONE_FILE, Harness, orchestrator

SECRET = "s3cr3t-value-of-the-deploy-token"
RECORD = (AssistantText, ToolCalled, DecisionMade)


async def ledger_events(h: Harness) -> list[GoalEvent]:
    async with open_sqlite_store(h.root / "state" / "nexo.db") as store:
        rows = await store.events("g1")
    return [e for row in rows if (e := event_from_ledger(row.kind, row.data, at=row.at))]


def ledger_texts(h: Harness) -> list[str]:
    with sqlite3.connect(h.root / "state" / "nexo.db") as db:
        return [str(row[0]) for row in db.execute("SELECT data FROM ledger ORDER BY seq")]


def stream_file(h: Harness, started: AttemptStarted) -> Path:
    assert started.stream is not None
    return h.root / "state" / "streams" / "g1" / started.stream


def replayed(path: Path, notes: StreamNotes | None = None) -> tuple[str, str]:
    with path.open("rb") as f:
        outcome = replay_stream(f, notes=notes)
    return outcome.kind.value, outcome.cause.value


async def test_the_ledger_keeps_texts_calls_and_decisions_redacted(h: Harness) -> None:
    environ = {"PATH": os.environ["PATH"], "DEPLOY_TOKEN": SECRET}
    fake = h.fake(
        turn(
            init(),
            text("First, the file."),
            bash(f"echo {SECRET} > {DONE_FILE}"),  # a secret's value in a command
            bash("exit 3"),  # a failing call
            tool_use("Bash", {"command": "rm -rf *"}),  # denied by the rules
            text("Then a look."),
            tool_use("mcp__tools__deploy", {"api_key": "k-123456789", "target": "prod"}),
            tool_use("Read", {"file_path": DONE_FILE}),  # allowed by the CLI: no result comes
            result("Done."),
        )
    )
    async with orchestrator(h.config(fake), sqlite=True, environ=environ) as (orch, rec):
        outcome = await orch.run_goal(h.goal())
    assert outcome.kind is GoalEndKind.DONE

    ledger = await ledger_events(h)
    record = [e for e in ledger if isinstance(e, RECORD)]
    live = [e for e in rec.events() if isinstance(e, RECORD)]
    assert [type(e) for e in live] == [type(e) for e in record]  # subscribers see them too
    texts = [e.text for e in record if isinstance(e, AssistantText)]
    assert texts == ["First, the file.", "Then a look."]  # every text, not only the last
    calls = [e for e in record if isinstance(e, ToolCalled)]
    assert [(c.turn, c.name, c.input) for c in calls] == [
        (1, "Bash", {"command": f"echo {REDACTED} > {DONE_FILE}"}),
        (1, "Bash", {"command": "exit 3"}),
        (1, "Bash", {"command": "rm -rf *"}),
        (1, "mcp__tools__deploy", {"api_key": REDACTED, "target": "prod"}),
        (1, "Read", {"file_path": DONE_FILE}),
    ]
    sizes = [(c.result_bytes, c.is_error) for c in calls]
    assert sizes[0] == (len("(Bash completed with no output)"), False)
    assert sizes[1] == (len("(Bash completed with no output)"), True)
    assert sizes[2][1]  # the deny message, as an error result
    assert sizes[2][0]
    assert sizes[4] == (None, False)  # the turn ended before a result
    assert len({c.tool_use_id for c in calls}) == 5

    # Each decision names its call and what it was about, redacted.
    decisions = {d.tool_use_id or "": d for d in record if isinstance(d, DecisionMade)}
    by_id = {c.tool_use_id: c for c in calls}
    assert set(decisions) <= set(by_id)
    assert [(by_id[i].name, d.subject, d.outcome) for i, d in decisions.items()][:3] == [
        ("Bash", f"echo {REDACTED} > {DONE_FILE}", "allow_once"),
        ("Bash", "exit 3", "allow_once"),
        ("Bash", "rm -rf *", "deny"),
    ]
    # Each decision is recorded before its call (the call once its result came).
    position = {id(e): i for i, e in enumerate(record)}
    for tool_use_id, decision in decisions.items():
        assert position[id(decision)] < position[id(by_id[tool_use_id])]

    # Nothing of the secret anywhere in the ledger; the raw stream has it all, privately.
    assert all(SECRET not in row for row in ledger_texts(h))
    (started,) = [e for e in ledger if isinstance(e, AttemptStarted)]
    path = stream_file(h, started)
    assert path.name.startswith("turn-1-")
    assert path.name.endswith(".ndjson.gz")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert SECRET.encode() in gzip.decompress(path.read_bytes())
    (completed,) = [e for e in ledger if isinstance(e, AttemptCompleted)]
    assert replayed(path) == (completed.kind, completed.cause)


async def test_a_stream_past_its_cap_is_cut_and_the_ledger_keeps_the_turn(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stream_copy, "STREAM_CAP", 16 * 1024)
    long_text = "word " * (TEXT_CAP // 4)  # 320 Ki characters: past both caps
    fake = h.fake(
        turn(init(), bash(f"touch {DONE_FILE}"), text(long_text), result("Done.")),
    )
    async with orchestrator(h.config(fake), sqlite=True) as (orch, _):
        outcome = await orch.run_goal(h.goal())
    assert outcome.kind is GoalEndKind.DONE

    ledger = await ledger_events(h)
    (said,) = [e for e in ledger if isinstance(e, AssistantText)]
    assert said.text.startswith(long_text[:TEXT_CAP])
    assert said.text.endswith("more characters not kept]")  # kept as every text is
    (started,) = [e for e in ledger if isinstance(e, AttemptStarted)]
    path = stream_file(h, started)
    raw = gzip.decompress(path.read_bytes())
    *kept, last = raw.splitlines()
    assert orjson.loads(last) == {
        "type": "nexo_stream_truncated",
        "kept_bytes": len(raw) - len(last) - 1,
        "cap_bytes": 16 * 1024,
    }
    assert len(raw) - len(last) - 1 <= 16 * 1024
    assert orjson.loads(kept[0])["type"] == "system"
    notes = StreamNotes()
    # The result came past the cap: the replay of what was kept cannot know it (and says).
    assert replayed(path, notes) == ("continue", "no_result")
    assert notes.truncated is not None


async def test_a_call_stopped_mid_way_is_recorded_without_a_result(h: Harness) -> None:
    fake = h.fake(turn(init(), text("Waiting."), bash("sleep 30"), result("Done.")))
    async with (
        orchestrator(h.config(fake), sqlite=True) as (orch, rec),
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(orch.run_goal, h.goal())
        await rec.wait_for(DecisionMade)
        await trio.sleep(0.2)  # the command runs
        await orch.cancel_goal("g1")
    ledger = await ledger_events(h)
    (call,) = [e for e in ledger if isinstance(e, ToolCalled)]
    assert (call.name, call.input, call.result_bytes) == ("Bash", {"command": "sleep 30"}, None)
    kinds = [type(e) for e in ledger]
    assert kinds.index(ToolCalled) < kinds.index(AttemptCompleted)  # before the turn's end
    (completed,) = [e for e in ledger if isinstance(e, AttemptCompleted)]
    assert completed.kind == "cancelled"


class SlowRecordStore(MemoryStore):
    """A store whose writes of tool calls take a while (a ledger another process locks)."""

    async def append_events(
        self, goal_id: str, events: Sequence[tuple[str, dict[str, Any]]]
    ) -> None:
        if any(kind == "tool_called" for kind, _ in events):
            await trio.sleep(0.6)
        await super().append_events(goal_id, events)


async def test_a_decision_waiting_behind_a_slow_write_is_still_recorded(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The gate gives up waiting for its record sooner than the call's write takes: the
    # decision of the second call waits behind the first call's record, and is kept.
    monkeypatch.setattr(socket_server, "RECORD_TIMEOUT_S", 0.2)
    fake = h.fake(turn(init(), bash("echo a"), bash(f"touch {DONE_FILE}"), result("Done.")))
    store = SlowRecordStore()
    async with orchestrator(h.config(fake), store=store) as (orch, rec):
        outcome = await orch.run_goal(h.goal())
    assert outcome.kind is GoalEndKind.DONE
    assert (outcome.allowed, outcome.denied) == (2, 0)
    assert [d.subject for d in rec.of(DecisionMade)] == ["echo a", f"touch {DONE_FILE}"]
    kinds = [row.kind for row in await store.events("g1")]
    assert kinds.count("decision_made") == kinds.count("tool_called") == 2
