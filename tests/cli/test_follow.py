"""``nexo-trio events GOAL --follow``: the events so far, then each one another process
records, within a second; Ctrl-C and SIGTERM end it with exit 0. And the text form of
``events`` for people: the failed checks and why, rounded numbers (``--json`` exact)."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from nexo_trio.testing.scenario import bash, init, result, sleep, text, turn
from tests.cli.helpers import NEXO_TRIO, invoke, json_lines, make_setup
from tests.cli.test_signals import processes, start_run

__all__ = ["processes"]  # the fixture, used by name

WAIT = 15.0
HELLO = turn(init(), bash("echo hello > hello.txt"), sleep(0.3), text("Done."), result("Done."))
HI = turn(init(), bash("echo hi > hello.txt"), sleep(0.3), text("Done."), result("Done."))


class Lines:
    """The stdout lines of a process, each with the time it arrived."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self._queue: queue.Queue[tuple[float, str] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put((time.time(), line))
        self._queue.put(None)

    def finish(self, timeout: float = WAIT) -> str:
        """Wait for the process to end; its stderr (both pipes closed)."""
        self.proc.wait(timeout=timeout)
        self._thread.join(timeout=timeout)
        assert self.proc.stdout is not None
        assert self.proc.stderr is not None
        with self.proc.stdout, self.proc.stderr:
            return self.proc.stderr.read()

    def until(self, predicate: Any, timeout: float = WAIT) -> list[tuple[float, str]]:
        """Lines until (and with) the first one ``predicate`` accepts."""
        got: list[tuple[float, str]] = []
        deadline = time.monotonic() + timeout
        while True:
            item = self._queue.get(timeout=max(0.01, deadline - time.monotonic()))
            assert item is not None, f"stdout closed after {got}"
            got.append(item)
            if predicate(item[1]):
                return got


def start_follow(processes: list[subprocess.Popen[str]], *args: str | Path) -> Lines:
    proc = subprocess.Popen(
        [str(NEXO_TRIO), "events", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    processes.append(proc)
    return Lines(proc)


@pytest.fixture
def done_goal(tmp_path: Path) -> Path:
    """A state dir with the goal ``g1`` done in two turns (the first one's checks failed)."""
    s = make_setup(tmp_path, [HELLO, HI])
    r = invoke("run", s.goal(), "--config", s.config)
    assert r.exit_code == 0, r.output
    return s.state_dir


def test_follow_shows_another_process_events_within_a_second(
    tmp_path: Path, processes: list[subprocess.Popen[str]]
) -> None:
    s = make_setup(tmp_path, [HELLO, HI])
    # Started before anything is recorded: it waits for the state dir, then the goal.
    lines = start_follow(
        processes, "g1", "--follow", "--json", "--until-done", "--state-dir", s.state_dir
    )
    time.sleep(0.5)
    run = start_run(processes, s.goal(), s.config)
    got = lines.until(lambda line: json.loads(line)["kind"] == "goal_completed")
    run.communicate(timeout=WAIT)
    assert run.returncode == 0
    stderr = lines.finish()  # --until-done: it ends by itself
    assert lines.proc.returncode == 0, stderr
    assert "waiting" in stderr
    assert "Traceback" not in stderr

    rows = [json.loads(line) for _, line in got]
    recorded = json_lines(invoke("events", "g1", "--state-dir", s.state_dir, "--json").stdout)
    assert rows == recorded  # every event, in order, exact
    late = [(arrived - row["at"], row["kind"]) for (arrived, _), row in zip(got, rows, strict=True)]
    assert all(delay < 1.0 for delay, _ in late), late
    assert [row["kind"] for row in rows].count("attempt_started") == 2


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_follow_ends_with_exit_0_on_ctrl_c_or_sigterm(
    done_goal: Path, processes: list[subprocess.Popen[str]], signum: signal.Signals
) -> None:
    lines = start_follow(processes, "g1", "-f", "--state-dir", done_goal)
    got = lines.until(lambda line: "goal_completed" in line)
    assert got[0][1].split()[3] == "goal_started"
    time.sleep(0.3)  # polling: nothing new
    lines.proc.send_signal(signum)
    stderr = lines.finish()
    assert lines.proc.returncode == 0, stderr
    assert stderr == ""


def test_until_done_of_a_goal_that_is_not_running_ends_at_once(done_goal: Path) -> None:
    r = invoke("events", "g1", "--follow", "--until-done", "--state-dir", done_goal)
    assert r.exit_code == 0, r.output
    assert r.stdout == invoke("events", "g1", "--state-dir", done_goal).stdout


def test_until_done_needs_follow(done_goal: Path) -> None:
    r = invoke("events", "g1", "--until-done", "--state-dir", done_goal)
    assert r.exit_code == 2
    assert r.stderr == "Error: --until-done goes with --follow\n"


def test_the_text_form_shows_failed_checks_and_rounds_numbers(done_goal: Path) -> None:
    text_lines = invoke("events", "g1", "--state-dir", done_goal).stdout.splitlines()
    rows = json_lines(invoke("events", "g1", "--state-dir", done_goal, "--json").stdout)
    by_kind: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for line, row in zip(text_lines, rows, strict=True):
        by_kind.setdefault(row["kind"], []).append((line, row["data"]))

    (failed, _), (met, _) = by_kind["acceptance_checked"]
    assert "met=False passed=0/1" in failed
    assert "✗ file_match: hello.txt ~ /^hi$/: hello.txt does not match /^hi$/ (hello)" in failed
    assert met.endswith("met=True passed=1/1")

    line, data = by_kind["attempt_completed"][0]
    assert data["cost_usd"] == 0.001  # --json: exact
    assert "cost_usd=0.0010 " in line
    assert f"duration_s={data['duration_s']:.1f} " in line
    assert data["duration_s"] != round(data["duration_s"], 1)
    assert "tokens=120" in line

    ((end, data),) = by_kind["goal_completed"]
    wall = data["outcome"]["usage"]["wall_time_s"]
    assert end.endswith(f"outcome=done after 2 turn(s), 240 tokens, $0.0020, {wall:.1f}s")
