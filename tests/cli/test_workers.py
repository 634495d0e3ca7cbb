"""Workers on one PostgreSQL store (issue 14): ``nexo-trio submit`` queues goals, worker
processes (each its own state dir, as on separate hosts) run them; every goal is run
exactly once, a ``kill -9``'d worker's goal is finished by the other with no turn counted
twice, and ``status`` from a third process sees all of them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg
import pytest

from nexo_trio.testing import bash, init, result, sleep, text, turn
from tests.cli.helpers import NEXO_TRIO, Setup, make_setup, run_process, write_yaml

HI = turn(init(), bash("echo hi > hello.txt"), text("Done."), result("Done.", cost_usd=0.01))


def start_worker(s: Setup, url: str, name: str, *extra: str) -> subprocess.Popen[str]:
    """A ``nexo-trio worker`` process with its own state dir (as on its own host)."""
    return subprocess.Popen(
        [
            str(NEXO_TRIO),
            "worker",
            "--config",
            str(s.config),
            "--store",
            url,
            "--state-dir",
            str(s.root / f"state-{name}"),
            "--workspace-root",
            str(s.root / f"workspaces-{name}"),
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen[str], timeout: float = 60) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"worker did not exit in {timeout} s:\n{err}") from None
    return proc.returncode, out, err


def ledger(url: str) -> list[tuple[str, str, dict[str, Any]]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT goal_id, kind, data FROM ledger ORDER BY seq").fetchall()
    return [(goal_id, kind, json.loads(data)) for goal_id, kind, data in rows]


def queue_rows(url: str) -> dict[str, tuple[str, int, str | None]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT goal_id, state, claims, outcome FROM goal_queue").fetchall()
    return {goal_id: (state, claims, outcome) for goal_id, state, claims, outcome in rows}


def submit(s: Setup, url: str, goals: list[Path]) -> list[str]:
    done = run_process("submit", "--config", s.config, "--store", url, *goals)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_two_workers_run_twenty_goals_each_exactly_once(tmp_path: Path, pg_url: str) -> None:
    s = make_setup(tmp_path, [HI] * 20, config={"lease_timeout": "10s"})
    goals = [s.goal(f"g{index:02d}.yaml", goal_id=f"g{index:02d}") for index in range(20)]
    assert submit(s, pg_url, goals) == [f"g{index:02d}" for index in range(20)]
    # Submitting again changes nothing: they are queued already.
    again = run_process("submit", "--config", s.config, "--store", pg_url, goals[0])
    assert again.returncode == 0
    assert "already queued" in again.stderr
    workers = [
        start_worker(s, pg_url, name, "--until-empty", "--concurrency", "3", "--json")
        for name in ("a", "b")
    ]
    results = [finish(worker, timeout=120) for worker in workers]
    for code, _, err in results:
        assert code == 0, err
    outcomes = [json.loads(line) for _, out, _ in results for line in out.splitlines()]
    assert sorted(o["goal_id"] for o in outcomes) == [f"g{index:02d}" for index in range(20)]
    assert {o["outcome"]["kind"] for o in outcomes} == {"done"}
    # Both workers took part, and each goal was claimed, started and turned once.
    assert all(out.strip() for _, out, _ in results), "one worker ran nothing"
    events = ledger(pg_url)
    started = Counter(goal for goal, kind, _ in events if kind == "goal_started")
    turns = Counter(goal for goal, kind, _ in events if kind == "attempt_started")
    completed = Counter(goal for goal, kind, _ in events if kind == "goal_completed")
    assert set(started.values()) == set(turns.values()) == set(completed.values()) == {1}
    assert len(s.fake.invocations()) == 20
    assert queue_rows(pg_url) == {f"g{index:02d}": ("finished", 1, "done") for index in range(20)}
    # A third process sees every goal through the store.
    status = run_process("status", "--config", s.config, "--store", pg_url, "--json")
    assert status.returncode == 0, status.stderr
    rows = [json.loads(line) for line in status.stdout.splitlines()]
    assert sorted(row["goal_id"] for row in rows) == [f"g{index:02d}" for index in range(20)]
    assert {row["outcome"] for row in rows} == {"done"}


def wait_until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_kill_9_of_a_worker_mid_goal_the_other_finishes_it_with_no_turn_twice(
    tmp_path: Path, pg_url: str
) -> None:
    slow = turn(init(), bash("echo started > started.txt"), sleep(60), result("never"))
    s = make_setup(tmp_path, [slow, HI], max_lifetime=90, config={"lease_timeout": "3s"})
    goal = s.goal("g.yaml", goal_id="g")
    assert submit(s, pg_url, [goal]) == ["g"]
    first = start_worker(s, pg_url, "a", "--concurrency", "1")
    try:
        wait_until(
            lambda: any(kind == "attempt_started" for _, kind, _ in ledger(pg_url)),
            30,
            "the first worker's turn",
        )
        wait_until(lambda: len(s.fake.invocations()) == 1, 30, "the fake's first invocation")
        # Started while the goal is leased to the first: it waits for the lease to end.
        second = start_worker(s, pg_url, "b", "--concurrency", "1", "--until-empty", "--json")
        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=10)
        code, out, err = finish(second, timeout=60)
    finally:
        if first.poll() is None:
            first.kill()
        first.communicate()
    assert code == 0, err
    [outcome] = [json.loads(line) for line in out.splitlines()]
    assert outcome["outcome"]["kind"] == "done"
    events = ledger(pg_url)
    # The turn the kill interrupted is run again as itself (a redo), not counted twice.
    attempts = [data for _, kind, data in events if kind == "attempt_started"]
    assert [(a["turn"], a.get("redo", False)) for a in attempts] == [(1, False), (1, True)]
    assert outcome["total_turns"] == 1
    assert [kind for _, kind, _ in events].count("goal_completed") == 1
    assert queue_rows(pg_url) == {"g": ("finished", 2, "done")}
    assert len(s.fake.invocations()) == 2


def test_sigterm_hands_a_running_goal_back_and_another_worker_goes_on(
    tmp_path: Path, pg_url: str
) -> None:
    slow = turn(init(), bash("echo started > started.txt"), sleep(60), result("never"))
    s = make_setup(tmp_path, [slow, HI], max_lifetime=90, config={"lease_timeout": "30s"})
    assert submit(s, pg_url, [s.goal("g.yaml", goal_id="g")]) == ["g"]
    first = start_worker(s, pg_url, "a", "--concurrency", "1")
    wait_until(lambda: len(s.fake.invocations()) == 1, 30, "the first worker's turn")
    started = time.monotonic()
    first.send_signal(signal.SIGTERM)
    code, _, err = finish(first, timeout=30)
    assert code == 0, err
    assert time.monotonic() - started < 15  # kill_grace (2 s) and the recording
    assert "1 handed back" in err
    # Handed back: still queued, no lease; the next worker continues it at once.
    assert queue_rows(pg_url) == {"g": ("queued", 1, None)}
    second = start_worker(s, pg_url, "b", "--concurrency", "1", "--until-empty", "--json")
    code, out, err = finish(second, timeout=60)
    assert code == 0, err
    [outcome] = [json.loads(line) for line in out.splitlines()]
    assert outcome["outcome"]["kind"] == "done"
    assert queue_rows(pg_url) == {"g": ("finished", 2, "done")}


def test_a_worker_on_a_sqlite_store_is_refused(tmp_path: Path) -> None:
    s = make_setup(tmp_path, [HI])
    done = run_process("worker", "--config", s.config, "--store", tmp_path / "x.db")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"Error: a worker needs a store that hosts share: --store postgresql://... "
        f"(the store is the SQLite file {tmp_path / 'x.db'})"
    ]


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_submit_prints_ids_and_refuses_bad_files_before_queueing_any(
    tmp_path: Path, kind: str, request: pytest.FixtureRequest
) -> None:
    s = make_setup(tmp_path, [HI])
    store = str(tmp_path / "q.db") if kind == "sqlite" else request.getfixturevalue("pg_url")
    good = s.goal("a.yaml", goal_id="a")
    bad = write_yaml(tmp_path / "goals" / "bad.yaml", {"id": "b"})  # no description
    done = run_process("submit", "--config", s.config, "--store", store, good, bad)
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1
    assert "bad.yaml" in done.stderr
    assert submit(s, store, [good]) == ["a"]


def test_a_stalled_worker_s_goal_is_taken_over_and_the_stalled_one_writes_nothing_more(
    tmp_path: Path, pg_url: str
) -> None:
    """SIGSTOP a worker past its lease: the other takes the goal over and finishes it; once
    the first runs again it finds its lease lost, stops its run, and none of what it then
    records reaches the ledger (one goal_completed: the second worker's)."""
    slow = turn(init(), bash("echo started > started.txt"), sleep(60), result("never"))
    s = make_setup(tmp_path, [slow, HI], max_lifetime=90, config={"lease_timeout": "3s"})
    assert submit(s, pg_url, [s.goal("g.yaml", goal_id="g")]) == ["g"]
    first = start_worker(s, pg_url, "a", "--concurrency", "1")
    try:
        wait_until(lambda: len(s.fake.invocations()) == 1, 30, "the first worker's turn")
        os.kill(first.pid, signal.SIGSTOP)
        second = start_worker(s, pg_url, "b", "--concurrency", "1", "--until-empty", "--json")
        code, out, err = finish(second, timeout=60)
        assert code == 0, err
        os.kill(first.pid, signal.SIGCONT)
        time.sleep(3)  # its heartbeat's next round finds the lease lost
        first.send_signal(signal.SIGTERM)
        first_code, _, first_err = finish(first, timeout=30)
    finally:
        if first.poll() is None:
            os.kill(first.pid, signal.SIGCONT)
            first.kill()
        first.communicate()
    assert first_code == 0, first_err
    assert "1 lost" in first_err
    [outcome] = [json.loads(line) for line in out.splitlines()]
    assert outcome["outcome"]["kind"] == "done"
    kinds = [kind for _, kind, _ in ledger(pg_url)]
    assert kinds.count("goal_completed") == 1
    assert kinds[-1] == "goal_completed"
    assert queue_rows(pg_url) == {"g": ("finished", 2, "done")}
