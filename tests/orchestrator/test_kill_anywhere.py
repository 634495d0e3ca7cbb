"""``kill -9`` of a ``nexo-trio run`` process at several points of a goal, then a re-run:
it reaches the same outcome, turn count and spend as an uninterrupted run, with no turn
counted twice.

The goal: turn 1 claims completion without doing the work (acceptance fails), turn 2 asks
to sleep 2 s, turn 3 does the work and acceptance passes. The run is killed during a turn,
during acceptance, during the sleep, and during the last turn. A killed turn never
finished, so the fake's scenario for the crashed run holds one extra copy of that turn: its
re-run plays the turn the uninterrupted run played.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import psutil
import pytest
import trio

from nexo_trio.orchestrator.state_dir import DB_NAME
from nexo_trio.store import open_sqlite_store
from nexo_trio.testing.scenario import (
    FakeClaude,
    Turn,
    bash,
    hang,
    init,
    result,
    sleep_request,
    text,
    turn,
)

from .conftest import DONE_FILE, Harness, wait_gone, wait_invocations
from .test_crash_resume import nexo_trio

GOAL_ID = "kill-goal"
CHECK_MARK = "check-started"


def claims_done() -> Turn:
    return turn(init(), text("Done."), result("Done.", cost_usd=0.1))


def sleeps() -> Turn:
    return turn(init(), sleep_request(2_000, "waiting for CI"), result(None, cost_usd=0.01))


def does_it() -> Turn:
    return turn(init(), bash(f"touch {DONE_FILE}"), text("Done."), result("Done.", cost_usd=0.2))


def hangs() -> Turn:
    return turn(init(), text("Working on it..."), hang())


def files(root: Path, binary: Path, *, slow_check: bool) -> tuple[Path, Path]:
    """The goal file and config file of one run's directory."""
    # A slow check (when the run is killed during acceptance) says it started, then waits.
    check = f"touch {root / CHECK_MARK}; sleep 3; " if slow_check else ""
    goal = root / "goal.yaml"
    (goal.parent / "work").mkdir(exist_ok=True)
    goal.write_text(
        f"id: {GOAL_ID}\n"
        "description: Create ok.txt.\n"
        "acceptance:\n"
        "  - kind: shell\n"
        f"    command: '{check}test -f {DONE_FILE}'\n"
        "    timeout: 20s\n"
        "budget:\n"
        "  max_turns: 6\n"
        "  max_wall_time: 120s\n"
        "workspace: ./work\n"
    )
    config = root / "cfg.yaml"
    config.write_text(
        f"claude:\n  binary: {binary}\n"
        "turn_timeout: 30s\n"
        "kill_grace: 1s\n"
        "sandbox: {mode: none}\n"  # the test watches the pids the fake records
        f"state_dir: {root / 'state'}\n"
    )
    return goal, config


async def ledger(root: Path) -> list[tuple[str, dict[str, Any]]]:
    """The goal's recorded events, read by another process's store."""
    async with open_sqlite_store(root / "state" / DB_NAME) as store:
        return [(e.kind, e.data) for e in await store.events(GOAL_ID)]


async def until(condition: Callable[[], Awaitable[bool]], timeout: float = 20.0) -> None:
    with trio.fail_after(timeout):
        while not await condition():  # noqa: ASYNC110 - another process's files, no event
            await trio.sleep(0.05)


async def run_to_the_end(run: list[str], env: dict[str, str], cwd: Path) -> dict[str, Any]:
    with trio.fail_after(60):
        proc = await trio.run_process(
            run, env=env, cwd=cwd, capture_stdout=True, capture_stderr=True, check=False
        )
    assert proc.returncode == 0, proc.stderr.decode()
    outcome: dict[str, Any] = json.loads(proc.stdout)
    return outcome


async def kill_orphans(fake: FakeClaude) -> None:
    """The killed run's turn runs in a session of its own: orphaned, not killed with it."""
    for invocation in fake.invocations():
        pid = int(invocation["pid"])
        with contextlib.suppress(psutil.NoSuchProcess):
            psutil.Process(pid).kill()
        await wait_gone(pid)


def spent(outcome: dict[str, Any]) -> tuple[Any, ...]:
    usage = dict(outcome["usage"])
    usage.pop("wall_time_s")
    cost = round(usage.pop("cost_usd"), 9)
    return outcome["outcome"]["kind"], outcome["total_turns"], cost, tuple(sorted(usage.items()))


Point = tuple[str, list[Turn], bool]

POINTS: dict[str, Point] = {
    # name: (what the test waits for before the kill, the crashed run's scenario, slow check)
    "during the first turn": (
        "invocations:1",
        [hangs(), claims_done(), sleeps(), does_it()],
        False,
    ),
    "during acceptance": ("check", [claims_done(), sleeps(), does_it()], True),
    "during the sleep": ("sleeping", [claims_done(), sleeps(), does_it()], False),
    "during the last turn": ("invocations:3", [claims_done(), sleeps(), hangs(), does_it()], False),
}


@pytest.mark.parametrize("point", list(POINTS))
async def test_a_run_killed_anywhere_resumes_to_the_uninterrupted_outcome(
    h: Harness, point: str
) -> None:
    wait_for, crashed_turns, slow = POINTS[point]

    # The uninterrupted run, for reference.
    calm = h.fake(claims_done(), sleeps(), does_it(), name="calm")
    (h.root / "calm").mkdir()
    goal, config = files(h.root / "calm", calm.binary, slow_check=slow)
    run = [nexo_trio(), "run", str(goal), "--config", str(config), "--json"]
    expected = await run_to_the_end(run, {**os.environ, **calm.env}, h.root / "calm")
    assert expected["outcome"]["kind"] == "done"
    assert expected["total_turns"] == 3

    # The same goal, killed at the point, then run again.
    fake = h.fake(*crashed_turns, name="crashed")
    root = h.root / "crashed"
    root.mkdir()
    goal, config = files(root, fake.binary, slow_check=slow)
    env = {**os.environ, **fake.env}
    run = [nexo_trio(), "run", str(goal), "--config", str(config), "--json"]
    with (root / "run1.out").open("wb") as out, (root / "run1.err").open("wb") as err:
        first = await trio.lowlevel.open_process(run, stdout=out, stderr=err, env=env, cwd=root)
    h.guard.watch(first.pid)
    try:
        if wait_for.startswith("invocations:"):
            await wait_invocations(fake, int(wait_for.split(":")[1]), timeout=20)
        elif wait_for == "check":
            await until(lambda: trio.to_thread.run_sync((root / CHECK_MARK).exists))
        else:
            await until(lambda: _recorded(root, "sleeping"))
    finally:
        first.send_signal(signal.SIGKILL)
        with trio.fail_after(5):
            await first.wait()
    assert first.returncode == -signal.SIGKILL
    await kill_orphans(fake)
    before = [kind for kind, _ in await ledger(root)]
    assert "goal_completed" not in before

    got = await run_to_the_end(run, env, root)
    assert spent(got) == spent(expected)
    # The conversation goes on (a session the killed CLI never saved is refused by the
    # fake, like by the real CLI: then a fresh one starts, not counted).
    assert got["session_id"] == fake.invocations()[-1]["session_id"]

    events = await ledger(root)
    kinds = [kind for kind, _ in events]
    assert kinds.count("goal_started") == 2
    assert kinds.count("goal_completed") == 1
    (second_start,) = [data for kind, data in events if kind == "goal_started"][1:]
    assert second_start["resumed_after"] == "crashed"
    counted = [d["turn"] for k, d in events if k == "replay_decided" and d["counted"]]
    assert counted == [1, 2, 3]  # no turn counted twice
    if point == "during acceptance":
        # The re-run checked again without running a turn.
        assert len(fake.invocations()) == 3
        checks = [d["turn"] for k, d in events if k == "acceptance_checked"]
        assert checks == [1, 3]
    if point.startswith("during the") and "turn" in point:
        assert second_start["abandoned_turn"] == (1 if "first" in point else 3)


async def _recorded(root: Path, kind: str) -> bool:
    if not (root / "state" / DB_NAME).exists():
        return False
    return kind in [k for k, _ in await ledger(root)]
