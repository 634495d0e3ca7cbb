"""``nexo-trio pause|resume|cancel|interrupt|max-turns GOAL`` from another process, against
a goal a real ``nexo-trio run`` process runs with the fake claude: each answers once
applied (exit 0), says when it changed nothing (exit 1), and exits 2 when the goal is not
running or the request is not valid."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import pytest
import trio

from nexo_trio.core.prompt import INTERRUPT_OPEN
from nexo_trio.orchestrator.control_server import ControlServer, peer_problem, send_control
from nexo_trio.store.sqlite import open_sqlite_store
from nexo_trio.testing.scenario import bash, hang, init, result, sleep_request, turn
from nexo_trio.wire.control_frames import ControlReply, ControlRequest
from tests.cli.helpers import invoke, json_lines, make_setup, run_process, single_json
from tests.cli.test_signals import gone, processes, start_run, wait_for_invocation

__all__ = ["processes"]  # the fixture, used by name

WAIT = 15.0
HI = turn(init(), bash("echo hi > hello.txt"), result("Done."))
SLEEPY = turn(init(), sleep_request(30_000, "waiting for the build"))


def kinds(state_dir: Path, goal_id: str = "g1") -> list[str]:
    r = invoke("events", goal_id, "--state-dir", state_dir, "--json")
    return [row["kind"] for row in json_lines(r.stdout)] if r.exit_code == 0 else []


def wait_for_kind(
    state_dir: Path, kind: str, proc: subprocess.Popen[str], *, goal_id: str = "g1"
) -> None:
    """Wait until the goal's ledger holds an event of ``kind`` (its run still going)."""
    deadline = time.monotonic() + WAIT
    while kind not in kinds(state_dir, goal_id):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"no {kind} event: {kinds(state_dir, goal_id)}"
        time.sleep(0.05)


def control(state_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """A control command in a process of its own."""
    return run_process(*args, "--state-dir", state_dir, timeout=30)


def test_interrupt_pause_resume_and_max_turns_of_a_sleeping_goal(
    tmp_path: Path, processes: list[subprocess.Popen[str]]
) -> None:
    s = make_setup(tmp_path, [SLEEPY, HI])
    proc = start_run(processes, s.goal(budget={"max_turns": 4}), s.config, "--json")
    wait_for_kind(s.state_dir, "sleeping", proc)

    paused = control(s.state_dir, "pause", "g1")
    assert paused.returncode == 0, paused.stderr
    assert paused.stdout == "paused goal 'g1'\n"
    again = control(s.state_dir, "pause", "g1")
    assert again.returncode == 1, again.stderr
    assert "already paused" in again.stderr
    lower = invoke("max-turns", "g1", "2", "--state-dir", s.state_dir)
    assert lower.exit_code == 2, lower.output
    assert "max turns can only be raised: 2 is below the current 4" in lower.stderr
    raised = invoke("max-turns", "g1", "6", "--state-dir", s.state_dir)
    assert raised.exit_code == 0, raised.output
    assert raised.stdout == "goal 'g1' may now run 6 turns (1 done)\n"
    empty = invoke("interrupt", "g1", "  ", "--state-dir", s.state_dir)
    assert empty.exit_code == 2
    assert empty.stderr == "Error: interrupt: the message is empty\n"

    queued = control(s.state_dir, "interrupt", "g1", "write hi, not hello")
    assert queued.returncode == 0, queued.stderr
    assert "queued for goal 'g1'" in queued.stdout
    assert "paused" in queued.stdout  # it runs once resumed
    time.sleep(0.5)  # paused: the message does not start a turn
    assert len(s.fake.invocations()) == 1
    resumed = control(s.state_dir, "resume", "g1")
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout == "resumed goal 'g1'\n"

    stdout, stderr = proc.communicate(timeout=WAIT)
    assert proc.returncode == 0, stderr
    assert single_json(stdout)["outcome"]["kind"] == "done"
    second = s.fake.invocations()[1]["prompt"]
    assert INTERRUPT_OPEN in second
    assert "write hi, not hello" in second
    seen = kinds(s.state_dir)
    for kind in ("goal_paused", "max_turns_raised", "interrupt_queued", "goal_resumed"):
        assert seen.count(kind) == 1, seen
    assert seen.index("goal_paused") < seen.index("goal_resumed") < seen.index("woke_up")

    for args in (["resume", "g1"], ["pause", "g1"], ["max-turns", "g1", "9"]):
        stopped = invoke(*args, "--state-dir", s.state_dir)
        assert stopped.exit_code == 2, stopped.output
        assert stopped.stderr.startswith("Error: goal 'g1' is not running: no process runs it")


def test_cancel_stops_the_running_turn_and_the_run_exits_130(
    tmp_path: Path, processes: list[subprocess.Popen[str]]
) -> None:
    s = make_setup(tmp_path, [turn(init(), hang())])
    proc = start_run(processes, s.goal(), s.config, "--json")
    fake_pid = wait_for_invocation(s.fake, proc)
    wait_for_kind(s.state_dir, "session_bound", proc)

    cancelled = control(s.state_dir, "cancel", "g1", "--reason", "wrong goal")
    assert cancelled.returncode == 0, cancelled.stderr
    assert cancelled.stdout == "cancelling goal 'g1': its running turn 1 is being stopped\n"
    stdout, stderr = proc.communicate(timeout=WAIT)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    outcome = single_json(stdout)["outcome"]
    assert outcome == {"kind": "cancelled", "reason": "wrong goal"}
    assert gone(fake_pid)
    after = control(s.state_dir, "cancel", "g1")
    assert after.returncode == 2
    assert "goal 'g1' is not running" in after.stderr


def test_a_goal_whose_process_is_gone_is_not_running(tmp_path: Path) -> None:
    """The ledger says a process runs the goal (a run killed with SIGKILL leaves it so),
    but nothing answers on that process's control socket."""
    dead = subprocess.Popen(["true"])
    dead.wait()
    state_dir = tmp_path / "state"

    async def record() -> None:
        async with open_sqlite_store(state_dir / "nexo.db") as store:
            await store.append_events("g1", [("goal_started", {"goal_id": "g1", "pid": dead.pid})])

    trio.run(record)
    r = invoke("pause", "g1", "--state-dir", state_dir)
    assert r.exit_code == 2
    assert r.stderr.startswith(f"Error: goal 'g1' is not running: its process {dead.pid} does not")


def test_a_goal_never_run_is_not_running(tmp_path: Path) -> None:
    r = invoke("interrupt", "nope", "hello", "--state-dir", tmp_path / "state")
    assert r.exit_code == 2
    assert r.stderr.startswith("Error: goal 'nope' is not running: no process runs it")
    assert not (tmp_path / "state").exists()


@pytest.mark.parametrize("args", [["max-turns", "g1", "0"], ["max-turns", "g1", "x"]])
def test_max_turns_needs_a_positive_number(tmp_path: Path, args: list[str]) -> None:
    r = invoke(*args, "--state-dir", tmp_path)
    assert r.exit_code == 2
    assert "Invalid value for 'N'" in r.stderr


def test_the_control_socket_answers_only_its_own_user(tmp_path: Path) -> None:
    async def handler(request: ControlRequest) -> ControlReply:
        return ControlReply(True, f"did {request.op}")

    async def ask(uid: int) -> ControlReply:
        path = tmp_path / "run" / f"control-{uid}.sock"
        async with trio.open_nursery() as nursery:
            await nursery.start(ControlServer(path, handler, uid=uid).serve)
            assert path.stat().st_mode & 0o777 == 0o600
            reply = await send_control(path, ControlRequest("pause", "g1"))
            nursery.cancel_scope.cancel()
        return reply

    assert trio.run(ask, os.getuid()) == ControlReply(True, "did pause")
    refused = trio.run(ask, os.getuid() + 1)
    assert (refused.ok, refused.problem) == (False, "invalid")
    assert refused.message.startswith(f"refused: process {os.getpid()} runs as uid {os.getuid()}")

    left, right = socket.socketpair(socket.AF_UNIX)
    with left, right:
        assert peer_problem(trio.socket.from_stdlib_socket(left), os.getuid()) is None


STDIO = {"permission": {"transport": "stdio"}}


def test_interrupt_now_reaches_the_running_turn_on_stdio(
    tmp_path: Path, processes: list[subprocess.Popen[str]]
) -> None:
    """``interrupt --now`` writes the message into the running turn (permission.transport:
    stdio): the fake takes it mid-turn, the ledger says it was delivered, and the next turn's
    prompt does not repeat it."""
    long_turn = turn(init(), bash("sleep 1.5"), bash("echo hi > hello.txt"), result("Done."))
    s = make_setup(tmp_path, [long_turn], config=STDIO)
    proc = start_run(processes, s.goal(), s.config, "--json")
    wait_for_invocation(s.fake, proc)
    wait_for_kind(s.state_dir, "session_bound", proc)

    sent = control(s.state_dir, "interrupt", "g1", "--now", "hurry up")
    assert sent.returncode == 0, sent.stderr
    assert sent.stdout.startswith("sent to goal 'g1''s running turn 1"), sent.stdout
    stdout, stderr = proc.communicate(timeout=WAIT)
    assert proc.returncode == 0, stderr
    assert single_json(stdout)["outcome"]["kind"] == "done"
    (message,) = s.fake.messages()
    assert (message["text"], message["taken"]) == ("hurry up", True)
    seen = kinds(s.state_dir)
    assert seen.count("interrupt_queued") == seen.count("interrupt_delivered") == 1
    assert len(s.fake.invocations()) == 1


def test_interrupt_now_without_a_stdio_turn_is_queued_and_says_so(
    tmp_path: Path, processes: list[subprocess.Popen[str]]
) -> None:
    s = make_setup(tmp_path, [SLEEPY, HI])
    proc = start_run(processes, s.goal(budget={"max_turns": 4}), s.config, "--json")
    wait_for_kind(s.state_dir, "sleeping", proc)
    queued = control(s.state_dir, "interrupt", "g1", "--now", "write hi")
    assert queued.returncode == 0, queued.stderr
    assert "queued for goal 'g1'" in queued.stdout
    assert "--now needs a turn on permission.transport stdio" in queued.stdout
    _, stderr = proc.communicate(timeout=WAIT)
    assert proc.returncode == 0, stderr
    assert "write hi" in s.fake.invocations()[1]["prompt"]


def test_pause_and_cancel_interrupt_a_stdio_turn(
    tmp_path: Path, processes: list[subprocess.Popen[str]]
) -> None:
    """On stdio a pause interrupts the running turn (its session kept: the goal goes on in
    it once resumed), and the stop is an interrupt, not a signal."""
    s = make_setup(tmp_path, [turn(init(), hang()), HI], config=STDIO)
    proc = start_run(processes, s.goal(), s.config, "--json")
    wait_for_invocation(s.fake, proc)
    wait_for_kind(s.state_dir, "session_bound", proc)

    paused = control(s.state_dir, "pause", "g1")
    assert paused.returncode == 0, paused.stderr
    assert paused.stdout == (
        "paused goal 'g1': its running turn 1 is interrupted (its session kept)\n"
    )
    wait_for_kind(s.state_dir, "attempt_completed", proc)
    r = invoke("events", "g1", "--state-dir", s.state_dir, "--json")
    (completed,) = [e for e in json_lines(r.stdout) if e["kind"] == "attempt_completed"]
    assert completed["data"]["stop_actions"] == ["interrupt"]
    assert completed["data"]["kind"] == "cancelled"
    assert len(s.fake.invocations()) == 1  # paused: no new turn
    resumed = control(s.state_dir, "resume", "g1")
    assert resumed.returncode == 0, resumed.stderr
    _, stderr = proc.communicate(timeout=WAIT)
    assert proc.returncode == 0, stderr
    first, second = s.fake.invocations()
    assert "--resume" in " ".join(second["argv"])
    assert second["session_id"] == first["session_id"]
