"""``nexo-trio watch [GOAL…]``: the table of every goal of a state dir, whichever process runs
it, from the fold of its ledger: one snapshot when stdout is not a terminal (or ``--once``),
a live table on one until Ctrl-C."""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import time
from pathlib import Path

import trio
from hypothesis import given
from hypothesis import strategies as st

from nexo_trio.cli.watch import Watched, _duration, goal_row, state_label
from nexo_trio.core.goal_events import (
    AttemptStarted,
    GoalPaused,
    GoalStarted,
    Sleeping,
)
from nexo_trio.core.goal_machine import apply, initial_state
from nexo_trio.store.sqlite import open_sqlite_store
from nexo_trio.testing.scenario import bash, init, result, sleep_request, turn
from tests.cli.helpers import NEXO_TRIO, invoke, make_setup
from tests.cli.test_control_ops import wait_for_kind
from tests.cli.test_signals import processes, start_run

__all__ = ["processes"]  # the fixture, used by name

WAIT = 15.0
HI = turn(init(), bash("echo hi > hello.txt"), result("Done.", cost_usd=0.25))
SLEEPY = turn(init(), sleep_request(30_000, "waiting for the build"))


def rows(stdout: str) -> dict[str, list[str]]:
    """The snapshot's rows by goal id: their cells."""
    found = {}
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.strip("│┃ ").split("│")]
        if len(cells) == 7 and cells[0] not in ("goal", ""):
            found[cells[0]] = cells
    return found


def record_dead_run(state_dir: Path, goal_id: str) -> int:
    """A run the ledger says is going on, in a process that is gone (a SIGKILL leaves it)."""
    dead = subprocess.Popen(["true"])
    dead.wait()

    async def record() -> None:
        async with open_sqlite_store(state_dir / "nexo.db") as store:
            data = {"goal_id": goal_id, "description": "d", "workspace": "/w", "pid": dead.pid}
            await store.append_events(goal_id, [("goal_started", data)])

    trio.run(record)
    return dead.pid


def test_a_snapshot_shows_every_goal_whoever_runs_it(
    tmp_path: Path, processes: list[subprocess.Popen[str]]
) -> None:
    s = make_setup(tmp_path, [HI, SLEEPY])
    done = invoke("run", s.goal("one.yaml", goal_id="g1"), "--config", s.config)
    assert done.exit_code == 0, done.output
    sleeper = start_run(processes, s.goal("two.yaml", goal_id="g2"), s.config)
    wait_for_kind(s.state_dir, "sleeping", sleeper, goal_id="g2")
    record_dead_run(s.state_dir, "g3")

    r = invoke("watch", "--state-dir", s.state_dir)  # not a terminal: one snapshot
    assert r.exit_code == 0, r.output
    table = rows(r.stdout)
    assert list(table) == ["g1", "g2", "g3"]  # the oldest first
    assert table["g1"][1:6] == ["done", "1", "120", "$0.2500", "goal_completed"]
    label, left = table["g2"][1].split()
    assert label == "sleeping"
    assert 20 < float(left.removesuffix("s")) <= 30  # what is left of its 30 s
    assert table["g2"][2:5] == ["1", "120", "$0.0010"]
    assert table["g2"][5] == "sleeping"
    assert table["g3"][1:3] == ["crashed", "0"]
    assert str(s.state_dir) in r.stdout

    some = invoke("watch", "g2", "nope", "--once", "--state-dir", s.state_dir)
    assert some.exit_code == 0, some.output
    table = rows(some.stdout)
    assert list(table) == ["g2", "nope"]
    assert table["nope"][1] == "no events"

    cancelled = invoke("cancel", "g2", "--state-dir", s.state_dir)
    assert cancelled.exit_code == 0, cancelled.output
    sleeper.communicate(timeout=WAIT)
    assert sleeper.returncode == 130
    after = rows(invoke("watch", "g2", "--state-dir", s.state_dir).stdout)
    assert after["g2"][1] == "cancelled"


def test_a_live_table_on_a_terminal_until_ctrl_c(tmp_path: Path) -> None:
    s = make_setup(tmp_path, [HI])
    done = invoke("run", s.goal(), "--config", s.config)
    assert done.exit_code == 0, done.output
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [str(NEXO_TRIO), "watch", "--state-dir", str(s.state_dir)],
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "120", "LINES": "30", "TERM": "xterm"},
    )
    os.close(slave)
    shown = b""
    deadline = time.monotonic() + WAIT
    try:
        # Two draws of the table: it is redrawn, not printed once.
        while shown.count(b"nexo-trio watch") < 2 and time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                shown += os.read(master, 65536)
        assert shown.count(b"nexo-trio watch") >= 2, shown
        assert b"g1" in shown
        assert b"done" in shown
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=WAIT)
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr


def test_nothing_recorded_yet(tmp_path: Path) -> None:
    r = invoke("watch", "--state-dir", tmp_path / "none")
    assert r.exit_code == 0
    assert r.stdout == ""
    assert r.stderr.startswith("nothing recorded yet: ")
    assert not (tmp_path / "none").exists()


def test_the_state_is_the_fold_of_the_ledger() -> None:
    def fold(*events: object) -> Watched:
        state = initial_state("g")
        for event in events:
            state = apply(state, event)  # type: ignore[arg-type]
        return Watched("g", state, events=len(events), last_kind="x", last_at=100.0)

    started = GoalStarted("g", description="d", workspace="/w", at=100.0)
    working = AttemptStarted("g", 1, compact=False, resume_session=None, prompt="p", at=101.0)
    assert state_label(fold().state, alive=None, now=0) == "new"
    assert state_label(fold(started).state, alive=True, now=0) == "running"
    assert state_label(fold(started).state, alive=False, now=0) == "crashed"
    assert state_label(fold(started, working).state, alive=True, now=0) == "working (turn 1)"
    paused = fold(started, working, GoalPaused("g"))
    assert state_label(paused.state, alive=True, now=0) == "pausing (turn 1 running)"
    asleep = fold(started, Sleeping("g", 5000, "later", until=160.0))
    assert state_label(asleep.state, alive=True, now=100.0) == "sleeping 1m00s"
    assert goal_row(asleep, now=103.0)[-1] == "3.0s"
    assert goal_row(Watched("g", initial_state("g")), now=0)[1] == "no events"


def _parsed(shown: str) -> tuple[float, float]:
    """What ``_duration`` showed, back in seconds, and the resolution it shows."""
    if shown.endswith("s") and "m" not in shown:
        return float(shown[:-1]), 0.05
    units = {"d": 86_400, "h": 3600, "m": 60, "s": 1}
    total, number, last = 0.0, "", 1
    for char in shown:
        if char.isdigit():
            number += char
        else:
            total, number, last = total + int(number) * units[char], "", units[char]
    return total, float(last)


@given(st.floats(min_value=0, max_value=10**8, allow_nan=False))
def test_durations_read_back_to_within_their_last_unit(seconds: float) -> None:
    shown = _duration(seconds)
    assert len(shown) <= 8
    value, resolution = _parsed(shown)
    if resolution < 1:
        assert abs(value - seconds) <= resolution + 1e-9
    else:
        assert value <= seconds < value + resolution
