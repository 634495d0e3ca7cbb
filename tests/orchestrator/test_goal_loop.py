"""The goal loop end to end through the fake claude: done, needs_retry, resume, invalid
sessions, sleep and wake-up, escalation, compaction, and an acceptance check printing 10 MB."""

from __future__ import annotations

import uuid

import pytest
import trio

from nexo_trio.core.acceptance import EVIDENCE_CHARS
from nexo_trio.core.compact import CompactPolicy
from nexo_trio.core.events import Usage
from nexo_trio.core.goal import ShellCheck
from nexo_trio.core.goal_events import (
    AcceptanceChecked,
    AttemptCompleted,
    AttemptStarted,
    CompactScheduled,
    Escalated,
    ReplayDecided,
    SessionBound,
    Sleeping,
    StuckDetected,
    TurnActivity,
    WokeUp,
)
from nexo_trio.core.goal_outcome import GoalEndKind
from nexo_trio.core.prompt import FAILURES_HEADER, FRESH_START, INTERRUPT_CLOSE, INTERRUPT_OPEN
from nexo_trio.core.settings import ClaudeSettings, ReplaySettings
from nexo_trio.store import Binding, MemoryStore
from nexo_trio.testing.scenario import (
    Step,
    api_error,
    bash,
    compact_turn,
    hang,
    init,
    result,
    sleep,
    sleep_request,
    text,
    turn,
)
from nexo_trio.wire.goal_json import event_to_ledger
from tests.goal_log import attempt_kinds, counted, judged

from .conftest import DONE_FILE, Harness, kinds, orchestrator, wait_gone

CHECK = ShellCheck(command=f"echo looking for {DONE_FILE}; test -f {DONE_FILE}", label="ok")
"""Fails (with evidence on stdout) until ``ok.txt`` exists."""


def claims_done(final: str = "Done.", *, cost_usd: float = 0.001) -> list[Step]:
    """Steps of a turn that claims completion without doing anything."""
    return [init(), text(final), result(final, cost_usd=cost_usd)]


def does_it(final: str = "Created ok.txt. Done.") -> list[Step]:
    """Steps of a turn that creates ``ok.txt`` and claims completion."""
    return [init(), bash(f"echo hi > {DONE_FILE}"), text(final), result(final)]


def resume_arg(argv: list[str]) -> str | None:
    """The value of ``--resume=`` in an argv (None when absent)."""
    values = [a.removeprefix("--resume=") for a in argv if a.startswith("--resume")]
    assert len(values) <= 1
    return values[0] if values else None


def interrupt_block(*messages: str) -> str:
    """The prompt block that carries operator messages."""
    return f"{INTERRUPT_OPEN}\n" + "\n\n".join(messages) + f"\n{INTERRUPT_CLOSE}"


# --------------------------------------------------------------------------- done


async def test_done_on_the_first_turn(h: Harness) -> None:
    usage = {
        "input_tokens": 120,
        "output_tokens": 30,
        "cache_read_input_tokens": 7,
        "cache_creation_input_tokens": 5,
    }
    fake = h.fake(
        turn(
            init(),
            bash(f"echo hi > {DONE_FILE}"),
            text("Created ok.txt."),
            result("Created ok.txt.", usage=usage, cost_usd=0.25),
        )
    )
    async with orchestrator(h.config(fake)) as (orch, rec):
        outcome = await orch.run_goal(h.goal(acceptance=(CHECK,)))
        events = rec.events()

    assert outcome.kind is GoalEndKind.DONE
    assert outcome.reason is None
    assert outcome.total_turns == 1
    assert outcome.usage == Usage(**usage)
    assert outcome.cost_usd == pytest.approx(0.25)
    invocations = fake.invocations()
    assert len(invocations) == 1
    assert not invocations[0]["resumed"]
    assert outcome.session_id == invocations[0]["session_id"]
    assert outcome.final_text == "Created ok.txt."
    assert outcome.acceptance is not None
    assert outcome.acceptance.met
    (check,) = outcome.acceptance.results
    assert (check.label, check.passed) == ("ok", True)
    assert "looking for ok.txt" in check.evidence
    assert (h.workspace() / DONE_FILE).read_text() == "hi\n"
    # The prompt is the goal; the workspace is the cwd.
    assert invocations[0]["prompt"] == "Goal: Create ok.txt."
    assert invocations[0]["cwd"] == str(h.workspace().resolve())

    durable = kinds([e for e in events if not isinstance(e, TurnActivity)])
    # The decision reaches us over the permission socket, the rest of the turn over the
    # CLI's stdout: each is recorded as it comes, so the decision may be recorded before
    # the session binding of the init frame the CLI wrote before it (the fake asks at once),
    # but always inside its turn and before the call it allowed.
    decision = durable.index("decision_made")  # the Bash call went through the gate
    assert durable.index("attempt_started") < decision < durable.index("tool_called")
    assert [kind for kind in durable if kind != "decision_made"] == [
        "goal_started",
        "attempt_started",
        "turn_spawned",  # who the CLI is: a run after a crash stops it if it outlived us
        "session_bound",
        "tool_called",  # the record: the call once its result came, then Claude's text
        "assistant_text",
        "attempt_completed",
        "replay_decided",
        "acceptance_checked",
        "goal_completed",
    ]
    assert any(isinstance(e, TurnActivity) and e.last_tool == "Bash" for e in events)
    (bound,) = [e for e in events if isinstance(e, SessionBound)]
    assert bound.session_id == outcome.session_id
    (completed,) = [e for e in events if isinstance(e, AttemptCompleted)]
    assert (completed.turn, completed.kind) == (1, "claimed_done")
    assert completed.usage == Usage(**usage)
    (decided,) = rec.of(ReplayDecided)
    assert (decided.turn, decided.action, decided.counted) == (1, "proceed", True)
    assert orch.running() == []


async def test_needs_retry_then_done_feeds_the_failures_back_in_the_same_session(
    h: Harness,
) -> None:
    fake = h.fake(
        turn(*claims_done("I am done.", cost_usd=0.1)),
        turn(
            init(),
            bash(f"touch {DONE_FILE}"),
            text("Now it is there."),
            result("Now it is there.", cost_usd=0.2),
        ),
    )
    async with orchestrator(h.config(fake)) as (orch, rec):
        outcome = await orch.run_goal(h.goal(acceptance=(CHECK,)))

    assert outcome.kind is GoalEndKind.DONE
    assert outcome.total_turns == 2
    # Per-run costs are summed (the fake's total_cost_usd is cumulative: 0.1, then 0.3).
    assert outcome.cost_usd == pytest.approx(0.3)
    assert outcome.usage == Usage(input_tokens=200, output_tokens=40)

    first, second = fake.invocations()
    (failed,) = [e for e in rec.of(AcceptanceChecked) if e.turn == 1]
    assert not failed.met
    (failure,) = failed.results
    assert failure.message  # e.g. "exit code 1 (expected 0)"
    assert failure.evidence.strip() == "looking for ok.txt"

    assert FAILURES_HEADER not in first["prompt"]
    prompt = second["prompt"]
    assert FAILURES_HEADER in prompt
    assert f"1. ok: {failure.message}" in prompt
    assert "   looking for ok.txt" in prompt
    assert prompt.index(FAILURES_HEADER) < prompt.index("Goal: Create ok.txt.")

    # The second turn resumed the session of the first.
    session = first["session_id"]
    assert resume_arg(first["argv"]) is None
    assert resume_arg(second["argv"]) == session
    assert second["resumed"]
    assert second["session_id"] == session == outcome.session_id
    assert fake.sessions()[session]["prompts"] == [first["prompt"], second["prompt"]]
    assert attempt_kinds(rec.events()) == [(1, "needs_retry"), (2, "done")]
    assert len(rec.of(SessionBound)) == 1
    started = rec.of(AttemptStarted)
    assert [s.resume_session for s in started] == [None, session]


# --------------------------------------------------------------------------- sessions


class SpyStore(MemoryStore):
    """A MemoryStore that snapshots the bindings right after a session is marked invalid."""

    def __init__(self) -> None:
        super().__init__()
        self.after_invalid: list[list[Binding]] = []

    async def mark_invalid(self, goal_id: str, session_id: str) -> None:
        await super().mark_invalid(goal_id, session_id)
        self.after_invalid.append(await self.list_bindings(include_invalid=True))
        assert await self.get_binding(goal_id) is None


async def test_invalid_session_starts_fresh_without_counting_and_redelivers_interrupts(
    h: Harness,
) -> None:
    stale = str(uuid.uuid4())
    store = SpyStore()
    # The goal was bound to a session in an earlier run (the ledger says so).
    await store.put_binding("g1", stale)
    await store.append_events("g1", [event_to_ledger(SessionBound("g1", stale))])
    fake = h.fake(turn(*does_it()))
    async with orchestrator(h.config(fake), store=store) as (orch, rec):
        handle = await orch.start_goal(h.goal())
        assert await orch.pause_goal("g1")  # so that both notes go out with the first turn
        assert await orch.interrupt_goal("g1", "first note")
        assert await orch.interrupt_goal("g1", "second note")
        assert await orch.resume_goal("g1")
        outcome = await handle.wait()

    assert outcome.kind is GoalEndKind.DONE
    assert outcome.total_turns == 1  # the invalid turn is not counted
    bad, fresh = fake.invocations()
    assert bad["resumed"]
    assert resume_arg(bad["argv"]) == stale
    assert resume_arg(fresh["argv"]) is None
    assert not fresh["resumed"]
    assert fresh["session_id"] != stale
    assert outcome.session_id == fresh["session_id"]

    # The stale binding was marked invalid (hidden from lookups), then the new one bound.
    (snapshot,) = store.after_invalid
    assert [(b.session_id, b.invalid) for b in snapshot] == [(stale, True)]
    # Both are kept: the fresh binding (current), the stale one invalid (for forensics).
    every = await store.list_bindings(include_invalid=True)
    assert [(b.session_id, b.invalid) for b in every] == [
        (fresh["session_id"], False),
        (stale, True),
    ]
    current = await store.get_binding("g1")
    assert current is not None
    assert current.session_id == fresh["session_id"]

    (decided,) = judged(rec.events())
    assert decided.action == "fresh_session"
    assert decided.invalid_session == stale
    assert decided.reason is not None
    assert "No conversation found" in decided.reason
    assert [e.session_id for e in rec.of(SessionBound)] == [fresh["session_id"]]
    assert [a.cause for a in rec.of(AttemptCompleted)] == ["session_invalid", "completed"]
    assert [d.counted for d in rec.of(ReplayDecided)] == [False, True]
    started = rec.of(AttemptStarted)
    assert [s.resume_session for s in started] == [stale, None]
    # The operator messages went out with the invalid turn, which never reached Claude:
    # the fresh turn carries them again, in order.
    block = interrupt_block("first note", "second note")
    assert block in bad["prompt"]
    assert fresh["prompt"].startswith(block)


async def test_with_no_retries_an_invalid_session_escalates_and_the_rerun_starts_fresh(
    h: Harness,
) -> None:
    """``max_retries: 0``: the stale session escalates, and it is still dropped, so the re-run
    starts a fresh session instead of escalating the same way forever."""
    stale = str(uuid.uuid4())
    store = SpyStore()
    await store.put_binding("g1", stale)
    await store.append_events("g1", [event_to_ledger(SessionBound("g1", stale))])
    fake = h.fake(turn(*does_it()))
    config = h.config(fake, replay=ReplaySettings(max_retries=0))
    async with orchestrator(config, store=store) as (orch, rec):
        first = await orch.run_goal(h.goal())

    assert first.kind is GoalEndKind.ESCALATED
    assert first.reason is not None
    assert "session invalid" in first.reason
    (decided,) = judged(rec.events())
    assert decided.action == "escalate"
    assert decided.invalid_session == stale
    assert await store.get_binding("g1") is None
    every = await store.list_bindings(include_invalid=True)
    assert [(b.session_id, b.invalid) for b in every] == [(stale, True)]

    async with orchestrator(config, store=store) as (orch, _):
        second = await orch.run_goal(h.goal())
    assert second.kind is GoalEndKind.DONE
    bad, fresh = fake.invocations()
    assert resume_arg(bad["argv"]) == stale
    assert resume_arg(fresh["argv"]) is None
    assert second.session_id == fresh["session_id"] != stale


# --------------------------------------------------------------------------- escalation


async def test_a_401_escalates_after_one_turn(h: Harness) -> None:
    fake = h.fake(
        turn(init(), api_error(401, "invalid x-api-key")),
        turn(*does_it()),
    )
    async with orchestrator(h.config(fake)) as (orch, rec):
        outcome = await orch.run_goal(h.goal())

    assert outcome.kind is GoalEndKind.ESCALATED
    assert outcome.reason is not None
    assert "401" in outcome.reason
    assert outcome.total_turns == 1
    assert len(fake.invocations()) == 1
    (escalated,) = rec.of(Escalated)
    assert escalated.reason == outcome.reason
    assert outcome.acceptance is None


async def test_a_missing_binary_escalates_after_one_turn(h: Harness) -> None:
    config = h.config(claude=ClaudeSettings(binary=str(h.root / "no" / "claude")))
    async with orchestrator(config) as (orch, rec):
        outcome = await orch.run_goal(h.goal(max_turns=5, max_consecutive_errors=5))

    assert outcome.kind is GoalEndKind.ESCALATED
    assert outcome.reason is not None
    assert "could not start claude" in outcome.reason
    assert outcome.total_turns == 1
    assert len(rec.of(AttemptStarted)) == 1
    (attempt,) = rec.of(AttemptCompleted)
    assert attempt.cause == "spawn_failed"


async def test_retryable_errors_escalate_after_max_retries(h: Harness) -> None:
    fake = h.fake(*[turn(init(), api_error(529, "overloaded")) for _ in range(6)])
    config = h.config(fake, replay=ReplaySettings(max_retries=2))
    async with orchestrator(config) as (orch, rec):
        outcome = await orch.run_goal(h.goal(max_turns=10, max_consecutive_errors=None))

    assert outcome.kind is GoalEndKind.ESCALATED
    assert outcome.reason is not None
    assert outcome.reason.startswith("gave up after 2 retries")
    assert len(fake.invocations()) == 3
    assert outcome.total_turns == 3
    assert [d.action for d in judged(rec.events())] == ["retry", "retry", "escalate"]
    # Retries resume the session the first attempt created.
    sessions = {i["session_id"] for i in fake.invocations()}
    assert len(sessions) == 1


async def test_a_timed_out_turn_is_retried_in_the_same_session(h: Harness) -> None:
    fake = h.fake(turn(init(), hang()), turn(*does_it()))
    async with orchestrator(h.config(fake, turn_timeout_s=0.5)) as (orch, rec):
        outcome = await orch.run_goal(h.goal())

    assert outcome.kind is GoalEndKind.DONE
    assert outcome.total_turns == 2
    hung, retry = fake.invocations()
    await wait_gone(int(hung["pid"]), timeout=1.0)
    (decided,) = judged(rec.events())
    assert decided.action == "retry"
    first = rec.of(AttemptCompleted)[0]
    assert (first.cause, first.kind) == ("timeout", "continue")
    assert resume_arg(retry["argv"]) == hung["session_id"]


# --------------------------------------------------------------------------- sleep


async def test_sleep_then_wake_up_tick_in_the_next_prompt(h: Harness) -> None:
    fake = h.fake(
        turn(init(), sleep_request(200, "waiting for CI")),
        turn(*does_it()),
    )
    async with orchestrator(h.config(fake)) as (orch, rec):
        outcome = await orch.run_goal(h.goal())

    assert outcome.kind is GoalEndKind.DONE
    assert outcome.total_turns == 2
    assert outcome.elapsed_s >= 0.2
    (sleeping,) = rec.of(Sleeping)
    assert (sleeping.duration_ms, sleeping.reason) == (200, "waiting for CI")
    (woke,) = rec.of(WokeUp)
    assert woke.slept_ms == 200
    kinds_seen = kinds(rec.events())
    assert kinds_seen.index("sleeping") < kinds_seen.index("woke_up")
    first, second = fake.invocations()
    assert "[WAKE UP]" not in first["prompt"]
    assert second["prompt"].startswith("[WAKE UP]")
    assert "waiting for CI" in second["prompt"]
    assert resume_arg(second["argv"]) == first["session_id"]
    assert attempt_kinds(rec.events()) == [(1, "sleep"), (2, "done")]
    assert sleeping.until == pytest.approx(sleeping.at + 0.2, abs=0.05)


async def test_cancel_during_a_long_sleep_is_prompt(h: Harness) -> None:
    fake = h.fake(turn(init(), sleep_request(60_000)), turn(*does_it()))
    async with orchestrator(h.config(fake)) as (orch, rec):
        handle = await orch.start_goal(h.goal())
        await rec.wait_for(Sleeping)
        started = trio.current_time()
        assert await orch.cancel_goal("g1", "enough")
        with trio.fail_after(2):
            outcome = await handle.wait()
        took = trio.current_time() - started

    assert outcome.kind is GoalEndKind.CANCELLED
    assert outcome.reason == "enough"
    assert took < 1.0
    assert len(fake.invocations()) == 1
    assert rec.of(WokeUp) == []


# --------------------------------------------------------------------------- compaction

COMPACT = CompactPolicy(context_window=1000, threshold=0.8, min_turns_between=3)


async def test_a_nearly_full_context_schedules_a_compact_turn(h: Harness) -> None:
    fake = h.fake(
        turn(init(), sleep(0.3), text("Done.", usage={"input_tokens": 900}), result("Done.")),
        compact_turn(pre_tokens=900, post_tokens=100),
        turn(*does_it()),
    )
    async with orchestrator(h.config(fake, compact=COMPACT)) as (orch, rec):
        handle = await orch.start_goal(h.goal())
        await rec.wait_for(AttemptStarted, lambda e: e.turn == 1)
        assert await orch.interrupt_goal("g1", "mind the tests")
        outcome = await handle.wait()

    assert outcome.kind is GoalEndKind.DONE
    assert outcome.total_turns == 2  # the compact turn is not counted
    work, compaction, last = fake.invocations()
    session = work["session_id"]
    assert compaction["prompt"].startswith("/compact")
    assert compaction["resumed"]
    assert resume_arg(compaction["argv"]) == session
    assert compaction["turn"] == 1  # the scenario's compact turn answered it
    # The compact turn did not consume the operator message: the next work turn has it.
    assert INTERRUPT_OPEN not in compaction["prompt"]
    assert INTERRUPT_OPEN not in work["prompt"]
    assert last["prompt"].startswith(interrupt_block("mind the tests"))
    assert FAILURES_HEADER in last["prompt"]
    assert resume_arg(last["argv"]) == session

    (scheduled,) = rec.of(CompactScheduled)
    assert (scheduled.context_tokens, scheduled.forced) == (900, False)
    started = rec.of(AttemptStarted)
    assert [s.compact for s in started] == [False, True, False]
    assert counted(rec.events()) == [(False, True), (True, False), (False, True)]
    seen = kinds(rec.events())
    assert (
        seen.index("compact_scheduled")
        < [i for i, k in enumerate(seen) if k == "attempt_started"][1]
    )


async def test_prompt_too_long_forces_a_compaction(h: Harness) -> None:
    fake = h.fake(
        turn(
            init(),
            result(
                "Prompt is too long",
                is_error=True,
                api_error_status=400,
                terminal_reason="prompt_too_long",
            ),
        ),
        compact_turn(pre_tokens=190_000, post_tokens=1_000),
        turn(*does_it()),
    )
    async with orchestrator(h.config(fake)) as (orch, rec):
        outcome = await orch.run_goal(h.goal())

    assert outcome.kind is GoalEndKind.DONE
    failed, compaction, last = fake.invocations()
    assert compaction["prompt"].startswith("/compact")
    assert resume_arg(compaction["argv"]) == failed["session_id"]
    assert resume_arg(last["argv"]) == failed["session_id"]
    (decided,) = judged(rec.events())
    assert decided.action == "compact"
    (scheduled,) = rec.of(CompactScheduled)
    assert scheduled.forced
    # The failed work turn counts, the compact turn does not.
    assert outcome.total_turns == 2
    assert counted(rec.events()) == [(False, True), (True, False), (False, True)]


# --------------------------------------------------------------------------- acceptance


async def test_an_acceptance_check_printing_10_mb_does_not_deadlock(h: Harness) -> None:
    big = ShellCheck(
        command=(
            f"head -c 10000000 /dev/zero | tr '\\0' x; echo; echo tail-marker; test -f {DONE_FILE}"
        ),
        label="big",
    )
    fake = h.fake(turn(*claims_done()), turn(*does_it()))
    async with orchestrator(h.config(fake)) as (orch, rec):
        with trio.fail_after(30):
            outcome = await orch.run_goal(h.goal(acceptance=(big,)))

    assert outcome.kind is GoalEndKind.DONE
    assert outcome.acceptance is not None
    (passed,) = outcome.acceptance.results
    assert passed.passed
    assert len(passed.evidence) <= EVIDENCE_CHARS + 1
    assert passed.evidence.rstrip().endswith("tail-marker")
    (failed,) = rec.of(AcceptanceChecked)[0].results
    assert not failed.passed
    assert len(failed.evidence) <= EVIDENCE_CHARS + 1
    assert failed.evidence.rstrip().endswith("tail-marker")
    # The failure reached the next prompt, bounded.
    prompt = fake.invocations()[1]["prompt"]
    assert "tail-marker" in prompt
    assert len(prompt) < 3 * EVIDENCE_CHARS


# --------------------------------------------------------------------------- stuck


async def test_stuck_on_the_same_failures_gets_a_fresh_session_then_escalates(
    h: Harness,
) -> None:
    fake = h.fake(*[turn(*claims_done()) for _ in range(7)])
    async with orchestrator(h.config(fake)) as (orch, rec):
        outcome = await orch.run_goal(h.goal(acceptance=(CHECK,), max_turns=10))

    assert outcome.kind is GoalEndKind.ESCALATED
    assert outcome.reason is not None
    assert outcome.reason.startswith("stuck: the same 1 acceptance check failed")
    assert outcome.total_turns == 6
    invocations = fake.invocations()
    assert len(invocations) == 6
    first_session = invocations[0]["session_id"]
    assert {i["session_id"] for i in invocations[:3]} == {first_session}
    fresh = invocations[3]
    assert not fresh["resumed"]
    assert fresh["session_id"] != first_session
    assert fresh["prompt"].startswith(FRESH_START)
    assert FAILURES_HEADER in fresh["prompt"]
    assert {i["session_id"] for i in invocations[3:]} == {fresh["session_id"]}
    stuck = rec.of(StuckDetected)
    assert [s.action for s in stuck] == ["fresh_session", "escalate"]
