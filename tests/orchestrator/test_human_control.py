"""The human decider through the orchestrator: a question waits, ``nexo-trio approve`` or
``deny`` from another process answers it through the control socket, and the answer is
what the CLI gets and what the ledger records."""

from __future__ import annotations

import subprocess

import attrs
import trio

from nexo_trio.core.goal_events import DecisionMade, GoalPaused
from nexo_trio.core.goal_outcome import GoalEndKind
from nexo_trio.core.settings import PermissionSettings
from nexo_trio.testing import bash, init, result, text, turn

from .conftest import Harness, orchestrator
from .test_crash_resume import nexo_trio


async def control(h: Harness, *args: str) -> subprocess.CompletedProcess[bytes]:
    """``nexo-trio ARGS --state-dir STATE`` in another process."""
    with trio.fail_after(30):
        return await trio.run_process(
            [nexo_trio(), *args, "--state-dir", str(h.root / "state")],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )


async def test_approve_and_deny_from_another_process(h: Harness) -> None:
    fake = h.fake(
        turn(init(), bash("touch ok.txt"), bash("touch nope.txt"), text("Done."), result("Done."))
    )
    config = h.config(fake, permission=PermissionSettings(decider="human"))
    async with orchestrator(config, sqlite=True) as (orch, rec):
        assert orch.human is not None
        handle = await orch.start_goal(h.goal())
        assert await orch.pause_goal("g1")  # running, and asking nothing yet
        await rec.wait_for(GoalPaused)
        nothing = await control(h, "approve", "g1")
        assert await orch.resume_goal("g1")
        first = await orch.human.next_question()
        assert (first.goal_id, first.tool_name, first.summary) == ("g1", "Bash", "touch ok.txt")
        approved = await control(h, "approve", "g1")
        assert approved.returncode == 0, approved.stderr
        assert b"approved Bash: touch ok.txt" in approved.stdout
        await orch.human.wait_gone(first.id)
        second = await orch.human.next_question()
        denied = await control(h, "deny", "g1", "--reason", "not that one")
        assert denied.returncode == 0, denied.stderr
        await orch.human.wait_gone(second.id)
        outcome = await handle.wait()
        stopped = await control(h, "approve", "g1")

    assert nothing.returncode == 1
    assert b"no permission question of goal 'g1' waits" in nothing.stderr
    assert stopped.returncode == 2
    assert b"goal 'g1' is not running" in stopped.stderr
    assert outcome.kind is GoalEndKind.DONE
    assert (h.workspace() / "ok.txt").exists()
    assert not (h.workspace() / "nope.txt").exists()
    allow, deny = rec.of(DecisionMade)
    assert (allow.outcome, allow.decider, allow.subject) == ("allow_once", "human", "touch ok.txt")
    assert allow.rationale is not None
    assert allow.rationale.startswith("approved by ")
    assert (deny.outcome, deny.decider) == ("deny", "human")
    assert deny.reason is not None
    assert deny.reason.endswith(": not that one")
    assert [e["outcome"] for e in fake.permission_log()] == ["allow", "deny"]


async def test_an_unanswered_question_is_denied_at_its_deadline(h: Harness) -> None:
    fake = h.fake(turn(init(), bash("touch ok.txt"), text("Done."), result("Done.")))
    permission = PermissionSettings(decider="human", tool_timeout_s=2.0)
    config = attrs.evolve(h.config(fake), permission=permission)
    async with orchestrator(config) as (orch, rec):
        outcome = await orch.run_goal(h.goal(max_turns=1))
    assert outcome.kind is GoalEndKind.BUDGET_EXHAUSTED
    (decision,) = rec.of(DecisionMade)
    assert decision.outcome == "deny"
    assert decision.reason is not None
    assert "nobody answered" in decision.reason
    assert [e["outcome"] for e in fake.permission_log()] == ["deny"]
