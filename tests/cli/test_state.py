"""``nexo-trio status``, ``events GOAL_ID`` and ``bindings``: reading the state directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from nexo_trio.testing.scenario import bash, init, result, text, turn
from tests.cli.helpers import Setup, goal_lock_held, invoke, json_lines, make_setup, single_json
from tests.cli.test_watch import record_dead_run

HI = turn(init(), bash("echo hi > hello.txt"), text("Done."), result("Done."))
HELLO = turn(init(), bash("echo hello > hello.txt"), text("Done."), result("Done."))


@pytest.fixture
def after_a_run(tmp_path: Path) -> tuple[Setup, dict[str, object]]:
    """A state dir holding one finished goal ``g1`` (two turns, done)."""
    s = make_setup(tmp_path, [HELLO, HI])
    r = invoke("run", s.goal(), "--config", s.config, "--json")
    assert r.exit_code == 0, r.output
    return s, single_json(r.stdout)


def test_status(after_a_run: tuple[Setup, dict[str, object]]) -> None:
    s, _ = after_a_run
    r = invoke("status", "--state-dir", s.state_dir)
    assert r.exit_code == 0, r.output
    (line,) = r.stdout.splitlines()
    assert line.startswith("g1  done ")
    assert " events  last " in line


def test_status_json(after_a_run: tuple[Setup, dict[str, object]]) -> None:
    s, _ = after_a_run
    r = invoke("status", "--state-dir", s.state_dir, "--json")
    assert r.exit_code == 0, r.output
    (row,) = json_lines(r.stdout)
    assert row["goal_id"] == "g1"
    assert row["outcome"] == "done"
    assert row["last_kind"] == "goal_completed"
    assert isinstance(row["events"], int)
    assert row["events"] >= 8


def test_status_reads_the_config_state_dir(after_a_run: tuple[Setup, dict[str, object]]) -> None:
    s, _ = after_a_run
    r = invoke("status", "--config", s.config)
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith("g1  done")


def test_events_text(after_a_run: tuple[Setup, dict[str, object]]) -> None:
    s, _ = after_a_run
    r = invoke("events", "g1", "--state-dir", s.state_dir)
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    kinds = [line.split()[3] for line in lines]
    assert kinds[0] == "goal_started"
    assert kinds[-1] == "goal_completed"
    assert kinds.count("attempt_started") == 2
    assert kinds.count("acceptance_checked") == 2
    assert "session_bound" in kinds
    assert "turn_activity" not in kinds  # live-only events are not stored
    seqs = [int(line.split()[0]) for line in lines]
    assert seqs == sorted(seqs)
    assert "kind=claimed_done" in r.stdout
    assert "met=False" in r.stdout
    assert "outcome=done after" in lines[-1]


def test_events_json_is_one_object_per_line(after_a_run: tuple[Setup, dict[str, object]]) -> None:
    s, outcome = after_a_run
    r = invoke("events", "g1", "--state-dir", s.state_dir, "--json")
    assert r.exit_code == 0, r.output
    rows = json_lines(r.stdout)
    assert len(rows) == len(r.stdout.splitlines()) >= 8
    for row in rows:
        assert set(row) == {"seq", "at", "kind", "data"}
        assert row["data"]["goal_id"] == "g1"
    assert [row["seq"] for row in rows] == sorted({row["seq"] for row in rows})
    assert rows[-1]["kind"] == "goal_completed"
    recorded = rows[-1]["data"]["outcome"]
    assert recorded["outcome"] == {"kind": "done"}
    assert recorded["session_id"] == outcome["session_id"]
    (second,) = [r for r in rows if r["kind"] == "attempt_started" and r["data"]["turn"] == 2]
    assert "You said the goal was done" in second["data"]["prompt"]


def test_events_of_an_unknown_goal(after_a_run: tuple[Setup, dict[str, object]]) -> None:
    s, _ = after_a_run
    r = invoke("events", "nope", "--state-dir", s.state_dir)
    assert r.exit_code == 2
    assert r.stdout == ""
    assert r.stderr == "Error: no events recorded for goal 'nope'\n"


def test_bindings(after_a_run: tuple[Setup, dict[str, object]]) -> None:
    s, outcome = after_a_run
    r = invoke("bindings", "--state-dir", s.state_dir)
    assert r.exit_code == 0, r.output
    (line,) = r.stdout.splitlines()
    assert line.startswith(f"g1  {outcome['session_id']}  active ")
    assert "INVALID" not in line


def test_bindings_all_shows_invalid_ones(tmp_path: Path) -> None:
    s = make_setup(tmp_path, [HELLO])
    first = invoke("run", s.goal(budget={"max_turns": 1}), "--config", s.config, "--json")
    assert first.exit_code == 1, first.output
    old_session = single_json(first.stdout)["session_id"]
    # A second run of the same goal, on a fake that never saw that session: the stored
    # binding is refused ("No conversation found"), marked invalid, and a fresh one is bound.
    other = make_setup(tmp_path / "second", [HI], config={"state_dir": str(s.state_dir)})
    second = invoke("run", s.goal(budget={"max_turns": 3}), "--config", other.config, "--json")
    assert second.exit_code == 0, second.output
    # The goal goes on (its file now allows more turns) with the first run's turn counted;
    # the refused resume is not counted.
    assert single_json(second.stdout)["total_turns"] == 2
    assert [i["resumed"] for i in other.fake.invocations()] == [True, False]
    new_session = single_json(second.stdout)["session_id"]
    assert new_session != old_session

    valid = invoke("bindings", "--state-dir", s.state_dir)
    assert valid.exit_code == 0
    assert valid.stdout.splitlines() == [
        line for line in valid.stdout.splitlines() if new_session in line
    ]
    every = invoke("bindings", "--state-dir", s.state_dir, "--all")
    assert every.exit_code == 0
    lines = every.stdout.splitlines()
    assert len(lines) == 2
    (invalid,) = [line for line in lines if old_session in line]
    assert invalid.endswith("INVALID")
    (valid_line,) = [line for line in lines if new_session in line]
    assert not valid_line.endswith("INVALID")


@pytest.mark.parametrize(
    "args", [["status"], ["status", "--json"], ["bindings"], ["bindings", "--all"], ["events", "x"]]
)
def test_an_empty_state_dir_has_nothing_recorded(tmp_path: Path, args: list[str]) -> None:
    empty = tmp_path / "empty"
    r = invoke(*args, "--state-dir", empty)
    assert r.exit_code == 0, r.output
    assert r.stdout == ""
    assert r.stderr.startswith("nothing recorded yet: ")
    assert str(empty / "nexo.db") in r.stderr
    assert not empty.exists()  # reading never creates the state dir


def test_status_tells_a_crashed_run_from_a_running_one(tmp_path: Path) -> None:
    s = make_setup(tmp_path, [])
    s.state_dir.mkdir(parents=True)
    record_dead_run(s.state_dir, "dead")
    record_dead_run(s.state_dir, "alive")
    with goal_lock_held(s.state_dir, "alive") as holder:
        r = invoke("status", "--state-dir", s.state_dir, "--json")
        assert r.exit_code == 0, r.output
        rows = {row["goal_id"]: row for row in json_lines(r.stdout)}
        assert rows["dead"]["running"] == "crashed"
        assert rows["alive"]["running"].startswith(f"running in process {holder.pid} since ")
        text = invoke("status", "--state-dir", s.state_dir)
        assert "dead  crashed (last: goal_started)" in text.stdout
