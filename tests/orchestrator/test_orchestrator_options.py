"""Every parameter of ``Orchestrator`` does what its name says."""

from __future__ import annotations

import os
from pathlib import Path

import attrs
import pytest

from nexo_trio import Goal, Orchestrator
from nexo_trio.core.goal import CustomCheck
from nexo_trio.core.goal_outcome import GoalEndKind
from nexo_trio.store import MemoryStore
from nexo_trio.testing import turn

from .conftest import Harness, orchestrator
from .test_goal_loop import does_it


async def test_environ_is_the_base_environment_of_the_cli(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NEXO_TEST_AMBIENT", "of the test process")
    fake = h.fake(turn(*does_it()))
    environ = {"PATH": os.environ["PATH"], "NEXO_TEST_GIVEN": "given"}
    config = h.config(fake)
    async with orchestrator(config, environ=environ) as (orch, _):
        outcome = await orch.run_goal(h.goal())
    assert outcome.kind is GoalEndKind.DONE
    (invocation,) = fake.invocations()
    env = invocation["env"]
    assert env["NEXO_TEST_GIVEN"] == "given"
    assert "NEXO_TEST_AMBIENT" not in env
    assert env["NEXO_FAKE_CLAUDE_STATE"] == str(fake.state_dir)  # config.claude.env on top


async def test_goal_env_overrides_per_goal_and_none_removes(h: Harness) -> None:
    fake = h.fake(turn(*does_it()))
    environ = {"PATH": os.environ["PATH"], "NEXO_TEST_SECRET": "s3cret"}

    def per_goal(goal: Goal) -> dict[str, str | None]:
        return {"NEXO_TEST_SECRET": None, "NEXO_TEST_GOAL": goal.id}

    async with orchestrator(h.config(fake), environ=environ, goal_env=per_goal) as (orch, _):
        await orch.run_goal(h.goal())
    (invocation,) = fake.invocations()
    assert invocation["env"]["NEXO_TEST_GOAL"] == "g1"
    assert "NEXO_TEST_SECRET" not in invocation["env"]


async def test_base_dir_anchors_relative_paths(h: Harness) -> None:
    fake = h.fake(turn(*does_it()))
    config = attrs.evolve(h.config(fake), state_dir="st", workspace_root="wss")
    async with Orchestrator(config, base_dir=h.root / "base") as orch:
        outcome = await orch.run_goal(h.goal())
    assert outcome.kind is GoalEndKind.DONE
    assert (h.root / "base" / "st" / "nexo.db").exists()
    assert (h.root / "base" / "wss" / "g1" / "ok.txt").exists()


async def test_an_unknown_custom_check_is_refused_when_the_goal_starts(h: Harness) -> None:
    goal = attrs.evolve(h.goal(), acceptance=(CustomCheck("lint_clean"),))
    async with orchestrator(h.config(), store=MemoryStore()) as (orch, rec):
        with pytest.raises(ValueError, match="unknown custom check 'lint_clean'"):
            await orch.start_goal(goal)
        assert orch.running() == []
    assert rec.events() == []


def test_records_are_checked_when_built_in_python() -> None:
    from nexo_trio import Budget

    with pytest.raises(ValueError, match=r"^max_turns: must be at least 1, got 0$"):
        Budget(max_turns=0)
    with pytest.raises(ValueError, match=r"^id: must be a non-empty string"):
        Goal(id="a/b", description="x")
    with pytest.raises(ValueError, match=r"^id: "):
        Goal(id="..", description="x")
    with pytest.raises(ValueError, match=r"^description: must not be empty$"):
        Goal(id="ok", description="  ")


def test_the_state_dir_layout(tmp_path: Path) -> None:
    from nexo_trio.orchestrator.state_dir import StateDir

    layout = StateDir(tmp_path)
    assert layout.database == tmp_path / "nexo.db"
    assert layout.mcp_config("g1") == tmp_path / "gate" / "g1.mcp.json"
    assert layout.gate_socket(42) == tmp_path / "run" / "gate-42.sock"
    deep = StateDir(tmp_path / ("x" * 120))
    assert len(os.fsencode(deep.gate_socket(4_194_304))) <= 100
