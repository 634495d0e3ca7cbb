"""A ``nexo-trio run`` killed mid-turn, then run again: the re-run resumes the session and
the turn count from the ledger, and ``status`` / ``events`` show the goal afterwards."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
from pathlib import Path

import trio

from nexo_trio.orchestrator.state_dir import DB_NAME
from nexo_trio.store import open_sqlite_store
from nexo_trio.testing.scenario import bash, hang, init, result, text, turn

from .conftest import DONE_FILE, Harness, wait_gone, wait_invocations

GOAL_ID = "crash-goal"


def nexo_trio() -> str:
    """The ``nexo-trio`` console script of the environment running the tests."""
    beside = Path(sys.executable).parent / "nexo-trio"
    found = str(beside) if beside.exists() else shutil.which("nexo-trio")
    assert found, "the nexo-trio console script is not installed"
    return found


def write_files(h: Harness, binary: Path) -> tuple[Path, Path]:
    """The goal file and config file of the test."""
    goal = h.root / "goal.yaml"
    (goal.parent / "work").mkdir(exist_ok=True)
    goal.write_text(
        f"id: {GOAL_ID}\n"
        "description: Create ok.txt.\n"
        "acceptance:\n"
        "  - kind: shell\n"
        f"    command: test -f {DONE_FILE}\n"
        "    timeout: 10s\n"
        "budget:\n"
        "  max_turns: 5\n"
        "  max_wall_time: 60s\n"
        "workspace: ./work\n"
    )
    config = h.root / "cfg.yaml"
    config.write_text(
        "claude:\n"
        f"  binary: {binary}\n"
        "turn_timeout: 30s\n"
        "kill_grace: 1s\n"
        "sandbox: {mode: none}\n"  # the test watches the pids the fake records
        f"state_dir: {h.root / 'state'}\n"
        f"workspace_root: {h.root / 'workspaces'}\n"
    )
    return goal, config


async def test_a_killed_run_is_resumed_by_the_next(h: Harness) -> None:
    fake = h.fake(
        turn(init(), text("Done."), result("Done.", cost_usd=0.1)),  # acceptance fails
        turn(init(), text("Working on it..."), hang()),  # the run is killed in here
        turn(init(), bash(f"touch {DONE_FILE}"), text("Done."), result("Done.", cost_usd=0.2)),
    )
    goal_file, config_file = write_files(h, fake.binary)
    env = {**os.environ, **fake.env}
    run = [nexo_trio(), "run", str(goal_file), "--config", str(config_file), "--json"]

    # First run: SIGKILL once the second turn is running.
    with (h.root / "run1.out").open("wb") as out, (h.root / "run1.err").open("wb") as err:
        first = await trio.lowlevel.open_process(run, stdout=out, stderr=err, env=env, cwd=h.root)
    h.guard.watch(first.pid)
    try:
        await wait_invocations(fake, 2, timeout=20)
    finally:
        first.send_signal(signal.SIGKILL)
        with trio.fail_after(5):
            await first.wait()
    assert first.returncode == -signal.SIGKILL
    # The hanging fake goes with the run (the lifeline of its subreaper helper ended).
    await wait_gone(int(fake.invocations()[1]["pid"]))
    session = fake.invocations()[0]["session_id"]

    # The ledger has the first run's turn, and no end.
    async with open_sqlite_store(h.root / "state" / DB_NAME) as store:
        kinds = [e.kind for e in await store.events(GOAL_ID)]
        binding = await store.get_binding(GOAL_ID)
    assert "goal_completed" not in kinds
    assert kinds.count("attempt_completed") == 1
    assert binding is not None
    assert binding.session_id == session

    # Second run: resumes the session and the turn count.
    with trio.fail_after(30):
        second = await trio.run_process(
            run, env=env, cwd=h.root, capture_stdout=True, capture_stderr=True, check=False
        )
    assert second.returncode == 0, second.stderr.decode()
    outcome = json.loads(second.stdout)
    assert outcome["goal_id"] == GOAL_ID
    assert outcome["outcome"]["kind"] == "done"
    assert outcome["total_turns"] == 2  # the earlier run's counted turn, plus this one
    assert outcome["session_id"] == session
    assert outcome["usage"]["cost_usd"] > 0.29  # 0.1 carried over + 0.2
    invocations = fake.invocations()
    assert len(invocations) == 3
    rerun = invocations[2]
    assert f"--resume={session}" in rerun["argv"]
    assert rerun["session_id"] == session
    assert (h.root / "work" / DONE_FILE).exists()

    async with open_sqlite_store(h.root / "state" / DB_NAME) as store:
        entries = await store.events(GOAL_ID)
    started = [e for e in entries if e.kind == "goal_started"]
    assert len(started) == 2, [(e.seq, e.kind, e.data.get("turn")) for e in entries][5:]
    assert started[1].data["resumed_turns"] == 1
    assert started[1].data["resumed_session"] == session
    assert [e.kind for e in entries].count("goal_completed") == 1
    assert entries[-1].kind == "goal_completed"

    # What the state dir shows after the processes are gone.
    state = ["--state-dir", str(h.root / "state")]
    status = await trio.run_process(
        [nexo_trio(), "status", *state, "--json"], capture_stdout=True, capture_stderr=True
    )
    (row,) = [json.loads(line) for line in status.stdout.splitlines()]
    assert (row["goal_id"], row["outcome"]) == (GOAL_ID, "done")
    events = await trio.run_process(
        [nexo_trio(), "events", GOAL_ID, *state, "--json"],
        capture_stdout=True,
        capture_stderr=True,
    )
    shown = [json.loads(line)["kind"] for line in events.stdout.splitlines()]
    assert shown == [e.kind for e in entries]
    plain = await trio.run_process(
        [nexo_trio(), "status", *state], capture_stdout=True, capture_stderr=True
    )
    assert GOAL_ID in plain.stdout.decode()
    assert "done" in plain.stdout.decode()
