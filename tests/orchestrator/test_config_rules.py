"""Claude Code's permission rules in our config (``permission.allow`` / ``deny``): an allow
rule allows without asking the deciders, a deny rule wins over everything, a compound
command is allowed only when every part is."""

from __future__ import annotations

from nexo_trio.core.goal_events import DecisionMade
from nexo_trio.core.goal_outcome import GoalEndKind
from nexo_trio.core.settings import PermissionSettings
from nexo_trio.testing import bash, init, result, text, turn

from .conftest import Harness, orchestrator


async def test_allow_and_deny_rules_before_the_deciders(h: Harness) -> None:
    fake = h.fake(
        turn(
            init(),
            bash("python3 -c 'print(1)'"),  # unknown to the rules; an allow rule covers it
            bash("python3 -c 'print(2)' && rm -rf ~/x"),  # not every part allowed
            bash("touch secret.txt"),  # the rules would allow it; a deny rule wins
            bash("touch ok.txt"),
            text("Done."),
            result("Done."),
        )
    )
    permission = PermissionSettings(allow=("Bash(python3 -c:*)",), deny=("Bash(touch secret*)",))
    async with orchestrator(h.config(fake, permission=permission)) as (orch, rec):
        outcome = await orch.run_goal(h.goal())

    assert outcome.kind is GoalEndKind.DONE
    allowed, compound, secret, ok = rec.of(DecisionMade)
    assert (allowed.outcome, allowed.decider, allowed.rule) == (
        "allow_once",
        "config rules",
        "Bash(python3 -c:*)",
    )
    assert (compound.outcome, compound.decider, compound.effect) == ("deny", "rules", "destructive")
    assert (secret.outcome, secret.decider, secret.rule) == (
        "deny",
        "config rules",
        "Bash(touch secret*)",
    )
    assert secret.reason is not None
    assert "permission.deny" in secret.reason
    assert (ok.outcome, ok.decider) == ("allow_once", "rules")
    assert not (h.workspace() / "secret.txt").exists()
