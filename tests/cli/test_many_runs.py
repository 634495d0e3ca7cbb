"""Many runs, one state dir (issue 12): several ``nexo-trio run`` processes share a state
dir; a goal runs in one process at a time (a second run exits 2 naming the first); a
``kill -9``'d run leaves no lock and what its turn left running is stopped by the next run;
``nexo-trio run A.yaml B.yaml`` and ``run DIR/`` run many goals in one process; the
overrides of the common keys."""

from __future__ import annotations

import io
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
import trio

from nexo_trio.cli.common import UserError, read_config, read_goal
from nexo_trio.cli.progress import Progress
from nexo_trio.cli.run import run_with_progress
from nexo_trio.core.goal import Goal
from nexo_trio.orchestrator.orchestrator import Orchestrator
from nexo_trio.testing import bash, hang, init, result, sleep, spawn, text, turn
from tests.cli.helpers import (
    Setup,
    assert_goal_outcome_shape,
    invoke,
    json_lines,
    make_setup,
    run_process,
    single_json,
)
from tests.cli.test_signals import gone, processes, start_run, wait_for_session
from tests.orchestrator.test_goal_lock import hold_elsewhere, holders

__all__ = ["holders", "processes"]  # the fixtures, used by name

HI = turn(init(), bash("echo hi > hello.txt"), text("Done."), result("Done.", cost_usd=0.5))
HELLO = turn(init(), bash("echo hello > hello.txt"), text("Done."), result("Done.", cost_usd=0.5))
SLOW_HI = turn(
    init(), bash("echo hi > hello.txt"), sleep(4), text("Done."), result("Done.", cost_usd=0.5)
)
BETA = "Beta: create hello.txt with hi."
RUNNING = re.compile(
    r"Error: goal (\S+) is running in process (\d+) since \d{4}-\d\d-\d\d \d\d:\d\d:\d\d"
)


def rows(s: Setup, goal_id: str) -> list[dict[str, Any]]:
    r = invoke("events", goal_id, "--state-dir", s.state_dir, "--json")
    assert r.exit_code == 0, r.output
    return json_lines(r.stdout)


def of_kind(s: Setup, goal_id: str, kind: str) -> list[dict[str, Any]]:
    return [row["data"] for row in rows(s, goal_id) if row["kind"] == kind]


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


def finish(proc: subprocess.Popen[str], timeout: float = 20) -> tuple[int, str, str]:
    stdout, stderr = proc.communicate(timeout=timeout)
    return proc.returncode, stdout, stderr


# --------------------------------------------------------------------------- processes


def test_two_processes_run_two_goals_on_one_state_dir(
    tmp_path: Path, processes: list[subprocess.Popen[str]]
) -> None:
    s = make_setup(tmp_path, [SLOW_HI, SLOW_HI])
    first = start_run(processes, s.goal("a.yaml", goal_id="a"), s.config, "--json")
    second = start_run(processes, s.goal("b.yaml", goal_id="b"), s.config, "--json")
    for proc, goal_id in ((first, "a"), (second, "b")):
        code, stdout, stderr = finish(proc)
        assert code == 0, stderr
        outcome = single_json(stdout)
        assert (outcome["goal_id"], outcome["outcome"]) == (goal_id, {"kind": "done"})
        assert "Traceback" not in stderr
        (started,) = of_kind(s, goal_id, "goal_started")
        assert started["pid"] == proc.pid  # each run in its own process
    # The two turns overlapped: both processes served their gates at once.
    a_ran, b_ran = (of_kind(s, g, "attempt_started")[0]["at"] for g in ("a", "b"))
    a_end, b_end = (of_kind(s, g, "attempt_completed")[0]["at"] for g in ("a", "b"))
    assert a_ran < b_end
    assert b_ran < a_end


def test_the_same_goal_twice_the_second_run_exits_2_naming_the_first(
    tmp_path: Path, processes: list[subprocess.Popen[str]]
) -> None:
    s = make_setup(tmp_path, [SLOW_HI, HI])
    goal = s.goal()
    first = start_run(processes, goal, s.config, "--json")
    wait_for_session(s.state_dir, "g1", first)
    second = run_process("run", goal, "--config", s.config, "--json")
    assert second.returncode == 2, second.stderr
    assert second.stdout == ""
    found = RUNNING.fullmatch(one_line(second.stderr))
    assert found is not None, second.stderr
    assert found.groups() == ("g1", str(first.pid))
    code, stdout, stderr = finish(first)
    assert code == 0, stderr
    assert single_json(stdout)["outcome"] == {"kind": "done"}
    assert len(s.fake.invocations()) == 1  # the second run ran no turn
    assert len(of_kind(s, "g1", "goal_started")) == 1  # nor recorded anything
    # Once the first has ended, the goal is free again: it reports its outcome.
    again = run_process("run", goal, "--config", s.config, "--json")
    assert again.returncode == 0, again.stderr


def test_a_run_killed_with_sigkill_leaves_no_lock_and_its_leftovers_are_stopped(
    tmp_path: Path, processes: list[subprocess.Popen[str]]
) -> None:
    """The subreaper helper is stopped first and killed with the run (what a kill of the
    whole process group, or the OOM killer, may do): then the turn's CLI and its daemon
    outlive the run. The next run stops both, by the recorded pid and start time and by the
    turn's marker, before the goal continues; the ledger says so."""
    daemon_pidfile = tmp_path / "daemon.pid"
    crashed = turn(init(), spawn(("sleep", "60"), pidfile=daemon_pidfile), hang())
    s = make_setup(tmp_path, [crashed, HI])
    goal = s.goal()
    first = start_run(processes, goal, s.config, "--json")
    wait_for_session(s.state_dir, "g1", first)
    while not daemon_pidfile.exists() or not daemon_pidfile.read_text().strip():
        assert first.poll() is None, first.communicate()
        time.sleep(0.02)
    daemon = int(daemon_pidfile.read_text())
    cli = int(s.fake.invocations()[0]["pid"])
    helper = psutil.Process(cli).parent()
    assert helper is not None
    assert helper.pid != first.pid  # the subreaper between the run and the CLI
    helper.suspend()  # it cannot stop the turn when its lifeline closes
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=10)
    helper.kill()
    helper.wait(timeout=10)
    time.sleep(0.3)
    assert not gone(cli, timeout=0.1)
    assert not gone(daemon, timeout=0.1)

    again = run_process("run", goal, "--config", s.config, "--json")
    assert again.returncode == 0, again.stderr
    assert single_json(again.stdout)["outcome"] == {"kind": "done"}
    assert gone(cli)
    assert gone(daemon)
    first_run, second_run = of_kind(s, "g1", "goal_started")
    assert first_run["leftovers_stopped"] == []
    assert second_run["resumed_after"] == "crashed"
    stopped = {int(entry.split()[0]) for entry in second_run["leftovers_stopped"]}
    assert {cli, daemon} <= stopped
    (spawned, *_) = of_kind(s, "g1", "turn_spawned")
    assert (spawned["turn"], spawned["pid"]) == (1, cli)
    assert "stopped what the crashed run left running" in again.stderr


# --------------------------------------------------------------------------- many goals


def test_many_goals_in_one_process_exit_0_only_when_all_are_done(tmp_path: Path) -> None:
    s = make_setup(
        tmp_path,
        [
            turn(*HI.steps, prompt_contains="Goal: Alpha"),
            turn(*HELLO.steps, prompt_contains="Goal: Beta"),
            turn(*HI.steps, prompt_contains="Goal: Beta"),
        ],
    )
    a = s.goal("a.yaml", goal_id="a", description="Alpha: create hello.txt with hi.")
    b = s.goal(
        "b.yaml",
        goal_id="b",
        description="Beta: create hello.txt with hi.",
        budget={"max_turns": 1},
    )
    r = invoke("run", a, b, "--config", s.config, "--json")
    assert r.exit_code == 1, r.output  # b ran out of turns
    outcomes = json_lines(r.stdout)
    for outcome in outcomes:
        assert_goal_outcome_shape(outcome)
    assert [(o["goal_id"], o["outcome"]["kind"]) for o in outcomes] == [
        ("a", "done"),
        ("b", "budget_exhausted"),
    ]
    assert "a: done" in r.stderr  # each goal's summary, named
    assert "b: budget_exhausted" in r.stderr
    # Both done: exit 0 (a reports its recorded outcome, b goes on with a turn more).
    more = s.goal(
        "b.yaml",
        goal_id="b",
        description="Beta: create hello.txt with hi.",
        budget={"max_turns": 2},
    )
    done = invoke("run", a, more, "--config", s.config)
    assert done.exit_code == 0, done.output
    assert done.stdout.startswith("a: done")


def test_a_directory_runs_its_goal_files_sorted_at_most_max_concurrent_goals_at_once(
    tmp_path: Path,
) -> None:
    s = make_setup(tmp_path, [HI, HI, HI], config={"max_concurrent_goals": 2})
    goals = s.root / "goals"
    s.goal("c.yml", goal_id="c")
    s.goal("a.yaml", goal_id="a")
    s.goal("b.yaml", goal_id="b")
    (goals / "notes.txt").write_text("not a goal\n")
    (goals / ".draft.yaml").write_text("not: [valid\n")  # hidden: not taken
    r = invoke("run", goals, "--config", s.config, "--json")
    assert r.exit_code == 0, r.output
    assert [o["goal_id"] for o in json_lines(r.stdout)] == ["a", "b", "c"]
    spans = {}
    for goal_id in "abc":
        (started,) = of_kind(s, goal_id, "goal_started")
        (completed,) = of_kind(s, goal_id, "goal_completed")
        spans[goal_id] = (started["at"], completed["at"])
    # Never three at once: the third began once one of the first two had ended.
    first_end = min(spans["a"][1], spans["b"][1])
    assert spans["c"][0] >= first_end


def test_ctrl_c_cancels_every_goal_of_the_process(
    tmp_path: Path, processes: list[subprocess.Popen[str]]
) -> None:
    s = make_setup(tmp_path, [turn(init(), hang()), turn(init(), hang())])
    a, b = s.goal("a.yaml", goal_id="a"), s.goal("b.yaml", goal_id="b")
    proc = start_run(processes, a, s.config, str(b), "--json")
    wait_for_session(s.state_dir, "a", proc)
    wait_for_session(s.state_dir, "b", proc)
    proc.send_signal(signal.SIGINT)
    code, stdout, stderr = finish(proc)
    assert code == 130, stderr
    assert [(o["goal_id"], o["outcome"]["kind"]) for o in json_lines(stdout)] == [
        ("a", "cancelled"),
        ("b", "cancelled"),
    ]
    for invocation in s.fake.invocations():
        assert gone(int(invocation["pid"]))


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["a.yaml", "a.yaml"], r"a\.yaml: goal file given twice"),
        (["goals-dir", "a.yaml"], r"a\.yaml: goal file given twice"),
        (["a.yaml", "same-id.yaml"], r"same-id\.yaml: goal id 'a' is also the id of .*a\.yaml"),
        (["empty-dir"], r"empty-dir: no goal files \(\*\.yaml, \*\.yml\) in the directory"),
    ],
)
def test_goal_files_named_twice_or_of_one_id_exit_2_before_anything_runs(
    tmp_path: Path, arguments: list[str], message: str
) -> None:
    s = make_setup(tmp_path, [HI])
    goals = s.root / "goals"
    s.goal("a.yaml", goal_id="a")
    s.goal("same-id.yaml", goal_id="a")
    (goals / "empty-dir").mkdir()
    where = {"goals-dir": goals, "empty-dir": goals / "empty-dir"}
    paths = [where.get(name, goals / name) for name in arguments]
    if arguments[0] == "goals-dir":
        (goals / "same-id.yaml").unlink()
    r = invoke("run", *paths, "--config", s.config)
    assert r.exit_code == 2, r.output
    assert re.fullmatch(f"Error: .*{message}", one_line(r.stderr)), r.stderr
    assert s.fake.invocations() == []
    assert not s.state_dir.exists()


# --------------------------------------------------------------------------- overrides


def test_overrides_of_the_budget(tmp_path: Path) -> None:
    s = make_setup(tmp_path, [HELLO, HELLO])
    goal = s.goal(budget={"max_turns": 8})
    turns = invoke("run", goal, "--config", s.config, "--json", "--max-turns", "1")
    assert turns.exit_code == 1, turns.output
    out = single_json(turns.stdout)
    assert (out["outcome"]["axis"], out["total_turns"]) == ("turns", 1)
    cost = invoke(
        "run", s.goal("c.yaml", goal_id="c"), "--config", s.config, "--json", "--max-cost", "0.4"
    )
    assert cost.exit_code == 1, cost.output
    out = single_json(cost.stdout)
    assert (out["outcome"]["axis"], out["total_turns"]) == ("cost", 1)


def test_overrides_of_the_config(tmp_path: Path) -> None:
    slow = turn(init(), sleep(10), text("Done."), result("Done."))
    s = make_setup(tmp_path, [HI, slow], config={"replay": {"max_retries": 0}})
    denied = invoke(
        "run",
        s.goal(budget={"max_turns": 1}),
        "--config",
        s.config,
        "--json",
        "--model",
        "claude-test-model",
        "--decider",
        "deny_all",
    )
    assert denied.exit_code == 1, denied.output
    out = single_json(denied.stdout)
    assert out["decisions"] == {"allowed": 0, "denied": 1}  # deny_all, not the config's rules
    argv = s.fake.invocations()[0]["argv"]
    assert "--model=claude-test-model" in argv
    started = time.monotonic()
    timed = invoke(
        "run",
        s.goal("t.yaml", goal_id="t", budget={"max_turns": 1}),
        "--config",
        s.config,
        "--json",
        "--turn-timeout",
        "1s",
    )
    assert time.monotonic() - started < 8
    assert timed.exit_code == 1, timed.output
    (completed,) = of_kind(s, "t", "attempt_completed")
    assert completed["cause"] == "timeout"
    (began,) = of_kind(s, "t", "attempt_started")
    assert began["timeout_s"] == 1.0


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--max-turns", "0", "--max-turns: must be at least 1, got 0"),
        ("--max-turns", "two", "--max-turns: expected a whole number, got 'two'"),
        ("--max-cost", "-1", "--max-cost: "),
        ("--max-cost", "lots", "--max-cost: expected an amount in USD like 2.50, got 'lots'"),
        ("--model", " ", "--model: must not be empty"),
        ("--decider", "maybe", "--decider: expected one of "),
        ("--turn-timeout", "soon", "--turn-timeout: expected a duration like 90s"),
        ("--turn-timeout", "0s", "--turn-timeout: "),
    ],
)
def test_invalid_overrides_exit_2_with_one_line(
    tmp_path: Path, option: str, value: str, message: str
) -> None:
    s = make_setup(tmp_path, [HI])
    r = invoke("run", s.goal(), "--config", s.config, option, value)
    assert r.exit_code == 2, r.output
    line = one_line(r.stderr)
    assert line.startswith(f"Error: {message}"), line
    assert s.fake.invocations() == []


def test_help_lists_the_overrides() -> None:
    r = invoke("run", "--help")
    assert r.exit_code == 0
    for option in ("--max-turns", "--max-cost", "--model", "--decider", "--turn-timeout"):
        assert option in r.stdout


async def test_a_goal_taken_up_elsewhere_after_the_check_is_still_one_usage_error(
    tmp_path: Path, holders: list[subprocess.Popen[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race: another process takes the goal between the check and the start. The run
    still ends with the one line (a UserError, not a group out of the nurseries)."""
    s = make_setup(tmp_path, [HI])
    goal = read_goal(s.goal())
    config = read_config(s.config)
    orch = Orchestrator(config)
    await trio.to_thread.run_sync(hold_elsewhere, holders, s.state_dir)

    async def passes(goal: Goal) -> None:
        del goal

    monkeypatch.setattr(orch, "check_goal", passes)
    with pytest.raises(UserError, match=r"^goal g1 is running in process \d+ since "):
        await run_with_progress(goal, config, progress=Progress(io.StringIO()), orchestrator=orch)
    assert s.fake.invocations() == []
