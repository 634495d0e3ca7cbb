"""``nexo-trio run``: exit codes, ``--json``, option overrides, workspace resolution."""

from __future__ import annotations

from pathlib import Path

import pytest

from nexo_trio.testing.scenario import api_error, bash, init, result, text, turn
from nexo_trio.wire.files import goal_id_for_path
from tests.cli.helpers import (
    Setup,
    assert_goal_outcome_shape,
    invoke,
    make_setup,
    single_json,
)

HI = turn(init(), bash("echo hi > hello.txt"), text("Done."), result("Done."))
HELLO = turn(init(), bash("echo hello > hello.txt"), text("Done."), result("Done."))


def test_done_exits_0_and_prints_a_summary(tmp_path: Path) -> None:
    s = make_setup(tmp_path, [HI])
    r = invoke("run", s.goal(), "--config", s.config)
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith("done — 1 turn(s)")
    assert "turn 1 started" in r.stderr
    assert "goal done after 1 turns" in r.stderr


def test_json_prints_one_goal_outcome_and_progress_goes_to_stderr(tmp_path: Path) -> None:
    s = make_setup(tmp_path, [HELLO, HI])
    r = invoke("run", s.goal(), "--config", s.config, "--json")
    assert r.exit_code == 0, r.output
    data = single_json(r.stdout)
    assert_goal_outcome_shape(data)
    assert data["goal_id"] == "g1"
    assert data["outcome"] == {"kind": "done"}
    assert data["total_turns"] == 2
    assert data["final_text"] == "Done."
    assert data["acceptance"]["met"] is True
    assert data["usage"]["input_tokens"] > 0
    assert data["usage"]["cost_usd"] == pytest.approx(0.002)
    sessions = {i["session_id"] for i in s.fake.invocations()}
    assert sessions == {data["session_id"]}
    # Progress: on stderr only, one plain line per notable event.
    for line in ("turn 1 started", "acceptance: 0/1 not met", "acceptance: 1/1 met", "goal done"):
        assert line in r.stderr
    assert "turn" not in r.stdout.replace('"total_turns"', "")


def test_budget_exhausted_exits_1(tmp_path: Path) -> None:
    s = make_setup(tmp_path, [HELLO])
    r = invoke("run", s.goal(budget={"max_turns": 1}), "--config", s.config, "--json")
    assert r.exit_code == 1, r.output
    data = single_json(r.stdout)
    assert_goal_outcome_shape(data)
    assert data["outcome"]["kind"] == "budget_exhausted"
    assert data["outcome"]["axis"] == "turns"
    assert "max turns" in data["outcome"]["reason"]
    assert data["total_turns"] == 1
    assert data["acceptance"]["met"] is False
    assert "max turns reached" in r.stderr


def test_escalation_exits_1(tmp_path: Path) -> None:
    s = make_setup(tmp_path, [turn(init(), api_error(400, "invalid request"))])
    r = invoke("run", s.goal(), "--config", s.config, "--json")
    assert r.exit_code == 1, r.output
    data = single_json(r.stdout)
    assert_goal_outcome_shape(data)
    assert data["outcome"]["kind"] == "escalated"
    assert "400" in data["outcome"]["reason"]
    assert "axis" not in data["outcome"]
    assert len(s.fake.invocations()) == 1  # no looping on a broken request


def test_summary_line_when_not_done(tmp_path: Path) -> None:
    s = make_setup(tmp_path, [HELLO])
    r = invoke("run", s.goal(budget={"max_turns": 1}), "--config", s.config)
    assert r.exit_code == 1
    assert r.stdout.startswith("budget_exhausted: max turns reached: 1 of 1 — 1 turn(s)")


def test_claude_bin_overrides_the_config(tmp_path: Path) -> None:
    s = make_setup(tmp_path, [HI], binary=str(tmp_path / "no-such-claude"))
    broken = invoke("run", s.goal(goal_id="broken"), "--config", s.config, "--json")
    assert broken.exit_code == 1
    assert single_json(broken.stdout)["outcome"]["kind"] == "escalated"
    r = invoke(
        "run", s.goal(goal_id="g2"), "--config", s.config, "--claude-bin", s.fake.binary, "--json"
    )
    assert r.exit_code == 0, r.output
    assert single_json(r.stdout)["outcome"]["kind"] == "done"
    assert len(s.fake.invocations()) == 1


def test_state_dir_overrides_the_config(tmp_path: Path) -> None:
    s = make_setup(tmp_path, [HI])
    other = tmp_path / "other-state"
    r = invoke("run", s.goal(), "--config", s.config, "--state-dir", other)
    assert r.exit_code == 0, r.output
    assert (other / "nexo.db").exists()
    assert not s.state_dir.exists()
    shown = invoke("status", "--state-dir", other)
    assert shown.exit_code == 0
    assert "g1" in shown.stdout


def test_a_relative_workspace_is_relative_to_the_goal_file(tmp_path: Path) -> None:
    s: Setup = make_setup(tmp_path, [HI])
    goal = s.goal(workspace="../elsewhere/work")
    (goal.parent / "../elsewhere/work").mkdir(parents=True)
    r = invoke("run", goal, "--config", s.config)
    assert r.exit_code == 0, r.output
    expected = (goal.parent / "../elsewhere/work").resolve()
    assert (expected / "hello.txt").read_text() == "hi\n"
    assert s.fake.invocations()[0]["cwd"] == str(expected)
    assert not (Path.cwd() / "elsewhere").exists()


def test_a_goal_without_id_gets_one(tmp_path: Path) -> None:
    s = make_setup(tmp_path, [HI])
    r = invoke("run", s.goal(goal_id=None), "--config", s.config, "--json")
    assert r.exit_code == 0, r.output
    goal_id = single_json(r.stdout)["goal_id"]
    # Derived from the goal file's path: the same file is the same goal.
    assert goal_id == goal_id_for_path(Path(s.goal(goal_id=None)))
    assert goal_id.startswith("goal-")
    again = invoke("run", s.goal(goal_id=None), "--config", s.config, "--json")
    assert again.exit_code == 0, again.output
    assert single_json(again.stdout) == single_json(r.stdout)  # done: reported, not re-run
    assert len(s.fake.invocations()) == 1


def test_a_workspace_the_goal_names_must_exist(tmp_path: Path) -> None:
    s: Setup = make_setup(tmp_path, [HI])
    goal = s.goal(workspace="./nowhere")
    r = invoke("run", goal, "--config", s.config)
    assert r.exit_code == 2
    assert "workspace" in r.stderr
    assert "does not exist" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not (goal.parent / "nowhere").exists()  # never silently created
