"""Running the same goal again: what the ledger decides (DESIGN.md §3, the goal machine).

A goal that ended done reports its outcome without a turn (exit 0); one out of a budget
reports that (exit 1) unless its file now allows more; a cancelled one goes on, its turns
and spend carried; ``--restart`` starts over and the ledger says so.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

from nexo_trio.testing import bash, hang, init, result, text, turn
from tests.cli.helpers import invoke, json_lines, make_setup, single_json
from tests.cli.test_signals import processes, start_run, wait_for_invocation, wait_for_session

__all__ = ["processes"]  # the fixture, used by name

HI = turn(init(), bash("echo hi > hello.txt"), text("Done."), result("Done.", cost_usd=0.5))
HELLO = turn(init(), bash("echo hello > hello.txt"), text("Done."), result("Done.", cost_usd=0.5))


def kinds(state_dir: Path, goal_id: str = "g1") -> list[str]:
    r = invoke("events", goal_id, "--state-dir", state_dir, "--json")
    assert r.exit_code == 0, r.output
    return [row["kind"] for row in json_lines(r.stdout)]


def test_a_done_goal_reports_its_outcome_again_without_a_turn(tmp_path: Path) -> None:
    s = make_setup(tmp_path, [HI, HI])
    first = invoke("run", s.goal(), "--config", s.config, "--json")
    assert first.exit_code == 0, first.output
    recorded = kinds(s.state_dir)
    again = invoke("run", s.goal(), "--config", s.config, "--json")
    assert again.exit_code == 0, again.output
    assert single_json(again.stdout) == single_json(first.stdout)
    assert len(s.fake.invocations()) == 1
    assert kinds(s.state_dir) == recorded  # nothing new in the ledger


def test_a_goal_out_of_turns_reports_it_until_its_file_allows_more(tmp_path: Path) -> None:
    s = make_setup(tmp_path, [HELLO, HI])
    first = invoke("run", s.goal(budget={"max_turns": 1}), "--config", s.config, "--json")
    assert first.exit_code == 1, first.output
    assert single_json(first.stdout)["outcome"]["axis"] == "turns"
    again = invoke("run", s.goal(budget={"max_turns": 1}), "--config", s.config, "--json")
    assert again.exit_code == 1
    assert single_json(again.stdout) == single_json(first.stdout)
    assert len(s.fake.invocations()) == 1
    more = invoke("run", s.goal(budget={"max_turns": 2}), "--config", s.config, "--json")
    assert more.exit_code == 0, more.output
    done = single_json(more.stdout)
    assert done["total_turns"] == 2
    assert done["usage"]["cost_usd"] == 1.0  # the first run's spend carried
    second = s.fake.invocations()[1]
    assert "You said the goal was done" in second["prompt"]  # its failures still shown
    assert second["resumed"]


def test_restart_starts_over_with_a_new_session_and_a_fresh_budget(tmp_path: Path) -> None:
    s = make_setup(tmp_path, [HELLO, HI])
    first = invoke("run", s.goal(budget={"max_turns": 1}), "--config", s.config, "--json")
    assert first.exit_code == 1, first.output
    restarted = invoke(
        "run", s.goal(budget={"max_turns": 1}), "--config", s.config, "--json", "--restart"
    )
    assert restarted.exit_code == 0, restarted.output
    done = single_json(restarted.stdout)
    assert (done["total_turns"], done["usage"]["cost_usd"]) == (1, 0.5)
    assert done["session_id"] != single_json(first.stdout)["session_id"]
    second = s.fake.invocations()[1]
    assert not second["resumed"]
    assert "You said the goal was done" not in second["prompt"]
    seen = kinds(s.state_dir)
    assert seen.count("goal_restarted") == 1
    assert seen.index("goal_restarted") > seen.index("goal_completed")
    assert "goal restarted" in restarted.stderr


def test_a_goal_cancelled_with_ctrl_c_goes_on_with_its_turns(
    tmp_path: Path, processes: list[subprocess.Popen[str]]
) -> None:
    s = make_setup(tmp_path, [HELLO, turn(init(), hang()), HI])
    goal = s.goal(budget={"max_turns": 5})
    proc = start_run(processes, goal, s.config, "--json")
    wait_for_invocation(s.fake, proc)
    wait_for_session(s.state_dir, "g1", proc)
    while len(s.fake.invocations()) < 2:  # the hanging second turn
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=20)
    assert proc.returncode == 130, stderr
    cancelled = single_json(stdout)
    assert cancelled["total_turns"] == 2  # the cancelled turn ran: it counts

    again = invoke("run", goal, "--config", s.config, "--json")
    assert again.exit_code == 0, again.output
    done = single_json(again.stdout)
    assert done["total_turns"] == 3
    assert done["session_id"] == cancelled["session_id"]
    assert "resuming after 2 turns (the last run cancelled)" in again.stderr
