"""Ctrl-C and SIGTERM on ``nexo-trio run``: the turn's process dies, the ledger records the
cancellation, and the exit code is 130."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from nexo_trio.testing.scenario import FakeClaude, hang, ignore_sigterm, init, turn
from tests.cli.helpers import NEXO_TRIO, SIGNAL_STOPS, invoke, json_lines, make_setup, single_json

START_TIMEOUT = 15.0


def wait_for_invocation(fake: FakeClaude, proc: subprocess.Popen[str]) -> int:
    """The pid of the fake claude, once it recorded its invocation."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        invocations = fake.invocations()
        if invocations:
            pid: int = invocations[0]["pid"]
            return pid
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    raise AssertionError("the fake claude never started")


def wait_for_session(state_dir: Path, goal_id: str, proc: subprocess.Popen[str]) -> None:
    """Wait until the ledger says the turn is under way (its init frame was read)."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        r = invoke("events", goal_id, "--state-dir", state_dir, "--json")
        if r.exit_code == 0 and any(row["kind"] == "session_bound" for row in json_lines(r.stdout)):
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError("the turn never bound its session")


def ignores_sigterm(pid: int) -> bool:
    """Whether the process has set SIGTERM to be ignored (its ``SigIgn`` mask says so)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigIgn:"):
            return bool(int(line.split()[1], 16) >> (signal.SIGTERM - 1) & 1)
    raise AssertionError(f"no SigIgn line in /proc/{pid}/status")


def wait_until_ignoring_sigterm(pid: int) -> None:
    """Wait until the fake has run its ``ignore_sigterm`` step."""
    deadline = time.monotonic() + START_TIMEOUT
    while not ignores_sigterm(pid):
        assert time.monotonic() < deadline, "the fake never ignored SIGTERM"
        time.sleep(0.02)


def gone(pid: int, timeout: float = 5.0) -> bool:
    """Whether ``pid`` is gone (or a zombie nobody waits for any more)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.02)
    return False


def start_run(
    processes: list[subprocess.Popen[str]], goal: Path, config: Path, *extra: str
) -> subprocess.Popen[str]:
    """``nexo-trio run GOAL --config CONFIG EXTRA...`` in the background, pipes kept."""
    proc = subprocess.Popen(
        [str(NEXO_TRIO), "run", str(goal), "--config", str(config), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    processes.append(proc)
    return proc


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[str]]]:
    """Processes a test started: killed if a test fails half-way."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_cancels_the_goal_and_exits_130(
    tmp_path: Path,
    processes: list[subprocess.Popen[str]],
    signum: signal.Signals,
) -> None:
    s = make_setup(tmp_path, [turn(init(), hang())])
    goal = s.goal(goal_id="hanging")
    proc = start_run(processes, goal, s.config, "--json")
    fake_pid = wait_for_invocation(s.fake, proc)
    wait_for_session(s.state_dir, "hanging", proc)
    # The fake and what it started (the permission gate's MCP server, spawned at init).
    tree = [fake_pid, *(p.pid for p in psutil.Process(fake_pid).children(recursive=True))]
    started = time.monotonic()
    proc.send_signal(signum)
    stdout, stderr = proc.communicate(timeout=20)
    assert proc.returncode == 130, stderr
    assert time.monotonic() - started < 10  # SIGTERM to the fake, no waiting for its lifetime
    for pid in tree:
        assert gone(pid), f"process {pid} of the turn survived"
    assert "Traceback" not in stderr

    data = single_json(stdout)
    assert data["outcome"]["kind"] == "cancelled"
    assert signum.name in data["outcome"]["reason"]
    assert "goal cancelled" in stderr

    r = invoke("events", "hanging", "--state-dir", s.state_dir, "--json")
    assert r.exit_code == 0, r.output
    rows = json_lines(r.stdout)
    kinds = [row["kind"] for row in rows]
    assert "cancel_requested" in kinds
    assert kinds[-1] == "goal_completed"
    assert kinds.count("goal_completed") == 1
    assert kinds.index("cancel_requested") < kinds.index("goal_completed")
    cancel = rows[kinds.index("cancel_requested")]["data"]
    assert cancel["reason"] == f"cancelled by {signum.name}"
    outcome = rows[-1]["data"]["outcome"]
    assert outcome["outcome"]["kind"] == "cancelled"

    text = invoke("events", "hanging", "--state-dir", s.state_dir)
    assert "cancel_requested" in text.stdout
    assert "goal_completed" in text.stdout
    assert "cancelled" in text.stdout


def test_a_second_ctrl_c_stops_at_once(
    tmp_path: Path, processes: list[subprocess.Popen[str]]
) -> None:
    """A CLI that ignores SIGTERM holds the first Ctrl-C for the kill grace (20 s here);
    the second one kills the tree at once, and the ledger still records the end."""
    s = make_setup(
        tmp_path,
        [turn(init(), ignore_sigterm(), hang())],
        config={"kill_grace": "20s", **SIGNAL_STOPS},
    )
    goal = s.goal(goal_id="stubborn")
    proc = start_run(processes, goal, s.config)
    fake_pid = wait_for_invocation(s.fake, proc)
    wait_for_session(s.state_dir, "stubborn", proc)
    wait_until_ignoring_sigterm(fake_pid)  # its step right after the init frame
    tree = [fake_pid, *(p.pid for p in psutil.Process(fake_pid).children(recursive=True))]
    proc.send_signal(signal.SIGINT)
    with pytest.raises(subprocess.TimeoutExpired):
        proc.wait(timeout=0.5)  # waiting out the kill grace of a CLI ignoring SIGTERM
    assert not gone(fake_pid, timeout=0)
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=15)
    assert proc.returncode == 130, stderr
    assert time.monotonic() - started < 5
    for pid in tree:
        assert gone(pid), f"process {pid} of the turn survived"
    assert "Traceback" not in stderr

    r = invoke("events", "stubborn", "--state-dir", s.state_dir, "--json")
    kinds = [row["kind"] for row in json_lines(r.stdout)]
    assert kinds.count("goal_completed") == 1
    assert kinds[-1] == "goal_completed"
    assert json_lines(r.stdout)[-1]["data"]["outcome"]["outcome"]["kind"] == "cancelled"
