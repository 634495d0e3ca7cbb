"""``nexo-trio demo``: the main job, offline, on the bundled fake claude."""

from __future__ import annotations

import os
import pty
import subprocess
from pathlib import Path

from tests.cli.helpers import (
    NEXO_TRIO,
    assert_goal_outcome_shape,
    invoke,
    run_process,
    single_json,
)


def test_demo_shows_the_failure_fed_back_and_ends_done(tmp_path: Path) -> None:
    r = invoke("demo", "--dir", tmp_path / "demo")
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith("done — 2 turn(s)")
    err = r.stderr
    progress = [
        "goal: Create hello.txt containing the word hi.",
        "[demo-hello] turn 1 started",
        "[demo-hello] turn 1 -> claimed_done",
        "[demo-hello] acceptance: 0/2 not met",
        "[demo-hello] turn 2 started",
        "[demo-hello] turn 2 -> claimed_done",
        "[demo-hello] acceptance: 2/2 met",
        "[demo-hello] goal done after 2 turns",
    ]
    positions = [err.index(line) for line in progress]
    assert positions == sorted(positions)
    assert "The second prompt Claude received (the acceptance failure, fed back):" in err
    assert "  | You said the goal was done, but these acceptance checks fail:" in err
    assert "  | 1. hello.txt says hi: exit code 1 (expected 0)" in err
    assert "  | Goal: Create hello.txt containing the word hi." in err
    assert "Both turns ran in the same session: True" in err
    assert (tmp_path / "demo" / "workspace" / "hello.txt").read_text() == "hi\n"


def test_demo_json(tmp_path: Path) -> None:
    r = invoke("demo", "--json", "--dir", tmp_path / "demo")
    assert r.exit_code == 0, r.output
    data = single_json(r.stdout)
    assert_goal_outcome_shape(data)
    assert data["goal_id"] == "demo-hello"
    assert data["outcome"] == {"kind": "done"}
    assert data["total_turns"] == 2
    assert data["acceptance"]["met"] is True
    assert "acceptance: 2/2 met" in r.stderr


def test_demo_as_a_process_leaves_nothing_behind(tmp_path: Path) -> None:
    proc = run_process("demo", "--json")
    assert proc.returncode == 0, proc.stderr
    data = single_json(proc.stdout)
    assert data["outcome"]["kind"] == "done"
    assert data["total_turns"] == 2
    assert "Traceback" not in proc.stderr
    assert list(Path.cwd().iterdir()) == []  # the temporary directory is gone, cwd untouched


def test_demo_on_a_terminal_draws_the_live_table(tmp_path: Path) -> None:
    """stderr on a pseudo-terminal: the live table instead of plain lines."""
    primary, secondary = pty.openpty()
    try:
        proc = subprocess.Popen(
            [str(NEXO_TRIO), "demo", "--dir", str(tmp_path / "demo")],
            stdout=subprocess.PIPE,
            stderr=secondary,
            env={**os.environ, "COLUMNS": "120", "TERM": "xterm"},
        )
        os.close(secondary)
        chunks = []
        while True:
            try:
                chunk = os.read(primary, 65536)
            except OSError:  # EIO: the terminal's other side is closed
                break
            if not chunk:
                break
            chunks.append(chunk)
        stdout, _ = proc.communicate(timeout=30)
    finally:
        os.close(primary)
    screen = b"".join(chunks).decode("utf-8", errors="replace")
    assert proc.returncode == 0, screen
    assert stdout.decode().startswith("done — 2 turn(s)")
    assert "┏" in screen  # a table was drawn
    assert "2 done" in screen[screen.rindex("nexo-trio") :]  # its last frame
    assert "[demo-hello] turn 1 started" not in screen  # no plain lines on a terminal
    assert "1. hello.txt says hi: exit code 1 (expected 0)" in screen
