"""``kill -9`` of ``nexo-trio run`` mid-turn, then a re-run on the same state dir (issue #10,
defects 2 and 9), confined (bubblewrap's PID namespace) and unconfined (the subreaper
helper, ``engine/reaper.py``).

The killed turn's Bash tool starts a daemon behind ``setsid env -i`` (a session of its own,
none of the turn's environment) that appends a tick to a file in the workspace every 50 ms,
and the turn then hangs. Once the ticks come, ``nexo-trio run`` is SIGKILLed, and:

1. within :data:`GONE_WITHIN` no process of the turn is alive: none carrying the test's
   marker (the fake claude and its permission server have it in their environment, the
   daemon in its argv, the subreaper helper or bwrap in theirs), found with psutil;
2. the re-run starts (its gate socket is its own: the dead run's is no obstacle), does the
   goal (exit 0, outcome ``done``, one turn), and the SQLite ledger, read row by row, says
   the earlier run crashed in its turn 1, which the re-run ran again;
3. the old turn writes nothing after the re-run began: the daemon's file is as it was;
4. a permission request carrying the killed turn's token (its permission server, orphaned
   and connecting to the re-run's socket) is denied, and the denial is in the re-run's
   ledger (the re-run is in this process, to reach its socket mid-turn).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import attrs
import psutil
import pytest
import trio

from nexo_trio.cli.common import EXIT_DONE, read_config, read_goal
from nexo_trio.core.goal_events import DecisionMade
from nexo_trio.core.goal_outcome import GoalEndKind
from nexo_trio.engine.sandbox import probe_bwrap
from nexo_trio.gate.goal_gate import NOT_THE_CURRENT_TURN
from nexo_trio.gate.mcp_protocol import TOKEN_ENV
from nexo_trio.orchestrator.orchestrator import Orchestrator
from nexo_trio.orchestrator.state_dir import DB_NAME, StateDir
from nexo_trio.testing.scenario import FakeClaude, Turn, bash, hang, init, result, text, turn
from tests.cli.helpers import NEXO_TRIO, single_json
from tests.gate.helpers import McpServer, assert_deny

GOAL_ID = "killed-goal"
GONE_WITHIN = 5.0
"""How long the killed run's turn may take to be gone (the subreaper helper gives it the
config's kill grace, 1 s, then SIGKILLs; bwrap's namespace dies at once)."""
TICKS_WITHIN = 30.0
"""How long the first run may take to start the turn and its daemon."""
RUN_TIMEOUT = 60.0
"""No run of ``nexo-trio`` here may take longer."""
TICKER = """\
import sys, time
path = sys.argv[1]
deadline = time.monotonic() + 60  # a leaked daemon still ends
while time.monotonic() < deadline:
    with open(path, "a") as f:
        f.write(f"{time.time()}\\n")
    time.sleep(0.05)
"""
"""The daemon: a tick a line; its argv carries the marker (``sys.argv[2]``)."""


# --------------------------------------------------------------------------- the setup


@attrs.frozen
class Setup:
    """One test's goal, config, fake claude and state dir, and the marker of its processes."""

    root: Path
    marker: str
    fake: FakeClaude
    goal: Path
    config: Path
    state_dir: Path
    workspace: Path
    ticks: Path
    confined: bool

    def nexo_run(self) -> list[str]:
        """``nexo-trio run GOAL --config CFG --state-dir S --json``."""
        return [
            str(NEXO_TRIO),
            "run",
            str(self.goal),
            "--config",
            str(self.config),
            "--state-dir",
            str(self.state_dir),
            "--json",
        ]

    def env(self) -> dict[str, str]:
        """The environment ``nexo-trio run`` gets (its turns and their tools inherit it)."""
        return {**os.environ, "NEXO_KILL_MARK": self.marker}


def make_setup(root: Path, *, confined: bool, rerun: Turn) -> Setup:
    """A goal whose first turn starts the ticking daemon and hangs; ``rerun`` is the turn
    the re-run plays."""
    marker = f"nexo-killed-{uuid.uuid4().hex}"
    workspace = root / "work"
    workspace.mkdir()
    ticks = workspace / "ticks.txt"
    home = root / "home"
    # Confined, the fake can write only its HOME's .claude dir (and the workspace).
    state = home / ".claude" / "fake" if confined else None
    daemon = root / "fake" / "ticker.py"  # beside the binary: visible in the sandbox too
    starts_daemon = (
        f"setsid env -i {sys.executable} {daemon} {ticks} {marker}"
        " </dev/null >/dev/null 2>&1 & echo started"
    )
    first = turn(init(), bash(starts_daemon), text("Working..."), hang())
    fake = FakeClaude.create(root / "fake", [first, rerun], state_dir=state, max_lifetime=30)
    daemon.write_text(TICKER)
    goal = root / "goal.yaml"
    goal.write_text(
        f"id: {GOAL_ID}\n"
        f"description: Create ok.txt ({marker}).\n"
        "acceptance: [{kind: shell, command: 'test -f ok.txt', timeout: 10s}]\n"
        "budget: {max_turns: 4, max_wall_time: 120s}\n"
        "workspace: ./work\n"
    )
    config = root / "config.yaml"
    claude_env = {**fake.env, "HOME": str(home)}
    config.write_text(
        json.dumps(
            {
                "claude": {"binary": str(fake.binary), "env": claude_env},
                "turn_timeout": "60s",
                "kill_grace": "1s",
                "sandbox": {"mode": "bwrap" if confined else "none"},
                # Decided by nobody's rules: the daemon's command runs either way. The MCP
                # transport: its per-turn config and token are what the rerun must refuse.
                "permission": {"decider": "allow_all", "transport": "mcp"},
                "state_dir": str(root / "state"),
            }
        )
    )
    return Setup(
        root, marker, fake, goal, config, root / "state", workspace, ticks, confined=confined
    )


# --------------------------------------------------------------------------- processes


def marked(marker: str) -> list[psutil.Process]:
    """Live processes (zombies left out) with ``marker`` in their argv or environment."""
    found = []
    for proc in psutil.process_iter():
        if proc.pid == os.getpid():
            continue
        try:
            text = " ".join(proc.cmdline())
            with contextlib.suppress(psutil.AccessDenied):
                text += " " + " ".join(f"{k}={v}" for k, v in proc.environ().items())
            if marker in text and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except psutil.Error:
            continue
    return found


def describe(procs: list[psutil.Process]) -> list[str]:
    """``pid argv`` of each process still there."""
    described = []
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            described.append(f"{proc.pid} {' '.join(proc.cmdline())}")
    return described


def wait_until(predicate: Any, timeout: float, what: str) -> None:
    """Poll ``predicate`` (real time, bounded)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.05)


def tick_count(ticks: Path) -> int:
    return len(ticks.read_text().splitlines()) if ticks.exists() else 0


@pytest.fixture
def leftovers() -> Iterator[list[str]]:
    """Markers whose processes must all be gone at the end (killed and failed otherwise)."""
    markers: list[str] = []
    yield markers
    left = []
    for marker in markers:
        procs = marked(marker)
        left += describe(procs)
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                proc.kill()
    assert not left, f"processes outlived the test: {left}"


def bwrap_or_skip(confined: bool) -> None:
    if confined and (reason := trio.run(probe_bwrap)) is not None:
        pytest.skip(f"confined runs need a working bubblewrap: {reason}")


# --------------------------------------------------------------------------- the kill


@attrs.frozen
class Killed:
    """What the killed run left: its pid, the processes its turn had, its MCP config."""

    pid: int
    turn_processes: list[str]
    mcp_config: dict[str, Any]


def run_and_kill(s: Setup) -> Killed:
    """Start ``nexo-trio run``, wait for the daemon's ticks, SIGKILL it; check that nothing
    of its turn is left within :data:`GONE_WITHIN` and that the ticks stop."""
    with (s.root / "run1.out").open("wb") as out, (s.root / "run1.err").open("wb") as err:
        first = subprocess.Popen(s.nexo_run(), stdout=out, stderr=err, env=s.env(), cwd=s.root)
    try:
        wait_until(lambda: tick_count(s.ticks) >= 2, TICKS_WITHIN, "the turn's daemon ticks")
        names = describe(marked(s.marker))
        mcp_config = json.loads(StateDir(s.state_dir).mcp_config(GOAL_ID).read_text())
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    assert first.returncode == -signal.SIGKILL, (s.root / "run1.err").read_text()
    # What the turn was: the fake (and bwrap, or the helper), its permission server, the daemon.
    assert any(str(s.fake.binary) in name for name in names), names
    assert any("nexo_trio.gate.mcp_stdio" in name for name in names), names
    assert any(f"ticker.py {s.ticks} {s.marker}" in name for name in names), names

    deadline = time.monotonic() + GONE_WITHIN
    while (alive := marked(s.marker)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive, f"the killed run's turn lives on: {describe(alive)}"
    # What ended it: bwrap's namespace, or the subreaper helper.
    assert any(("bwrap" if s.confined else "reaper.py") in name for name in names), names
    # Gone for good: the daemon writes no more.
    count = tick_count(s.ticks)
    time.sleep(0.3)
    assert tick_count(s.ticks) == count
    return Killed(first.pid, names, mcp_config)


def ledger(state_dir: Path) -> list[tuple[int, str, str, dict[str, Any]]]:
    """The ledger's rows ``(seq, goal_id, kind, data)``, by a connection of its own."""
    with contextlib.closing(sqlite3.connect(state_dir / DB_NAME)) as db:
        rows = db.execute("SELECT seq, goal_id, kind, data FROM ledger ORDER BY seq").fetchall()
    return [(seq, goal, kind, json.loads(data)) for seq, goal, kind, data in rows]


def split_runs(
    rows: list[tuple[int, str, str, dict[str, Any]]],
) -> tuple[list[tuple[str, dict[str, Any]]], list[tuple[str, dict[str, Any]]]]:
    """The rows of the killed run and of the re-run, as ``(kind, data)``; every row is the
    goal's, in strictly increasing order."""
    assert [goal for _, goal, _, _ in rows] == [GOAL_ID] * len(rows)
    seqs = [seq for seq, _, _, _ in rows]
    assert seqs == sorted(set(seqs)), seqs
    starts = [i for i, (_, _, kind, _) in enumerate(rows) if kind == "goal_started"]
    assert len(starts) == 2, [kind for _, _, kind, _ in rows]
    events = [(kind, data) for _, _, kind, data in rows]
    return events[: starts[1]], events[starts[1] :]


RECORD_KINDS = ("turn_spawned", "assistant_text", "tool_called")
"""Rows whose place among the others is not fixed (the CLI's identity, recorded as it
starts; what Claude wrote and called): the checks of the order leave them out."""


def check_killed_run(events: list[tuple[str, dict[str, Any]]], killed: Killed, s: Setup) -> str:
    """The killed run's rows: it began, bound its session, started turn 1, allowed the
    daemon's command, and recorded no end of the turn or the goal. Its session id."""
    # What Claude wrote and called (the turn's record) is beside the point here.
    events = [(kind, data) for kind, data in events if kind not in RECORD_KINDS[1:]]
    kinds = [kind for kind, _ in events]
    # The init frame (the session) and the permission request come on two channels: the
    # ledger may have them either way round.
    assert kinds[:2] == ["goal_started", "attempt_started"], kinds
    assert sorted(kinds[2:]) == ["decision_made", "session_bound", "turn_spawned"], kinds
    (_, started), (_, attempt) = events[:2]
    bound, decision, spawned = (
        dict(events[2:])[kind] for kind in ("session_bound", "decision_made", "turn_spawned")
    )
    assert (spawned["turn"], spawned["boot"] != "") == (1, True)  # what a re-run checks
    assert attempt["marker"]
    assert (started["run"], started["resumed_after"], started["pid"]) == (1, None, killed.pid)
    assert started["confined"] is s.confined
    assert (attempt["turn"], attempt["redo"], attempt["resume_session"]) == (1, False, None)
    assert (decision["tool_name"], decision["outcome"], decision["turn"]) == (
        "Bash",
        "allow_once",
        1,
    )
    assert "ticker.py" in decision["subject"]
    session: str = bound["session_id"]
    return session


def check_rerun_began(events: list[tuple[str, dict[str, Any]]], session: str, pid: int) -> None:
    """The re-run's first rows: a run that knows the last one crashed in turn 1, and the
    redo of that turn in the same session."""
    (_, started), (_, attempt) = events[:2]
    assert (events[0][0], events[1][0]) == ("goal_started", "attempt_started")
    assert started["run"] == 2
    assert started["resumed_after"] == "crashed"
    assert started["abandoned_turn"] == 1
    assert started["resumed_session"] == session
    assert started["resumed_turns"] == 0  # the crashed turn never completed: not counted
    assert started["pid"] == pid
    assert started["leftovers_stopped"] == []  # the killed run's turn was already gone
    assert (attempt["turn"], attempt["redo"], attempt["resume_session"]) == (1, True, session)


# --------------------------------------------------------------------------- the tests

DONE = turn(init(), bash("touch ok.txt"), text("Done."), result("Done."))


@pytest.mark.parametrize("confined", [False, True], ids=["unconfined", "confined"])
def test_a_run_killed_mid_turn_leaves_nothing_and_the_rerun_does_the_goal(
    confined: bool, tmp_path: Path, leftovers: list[str]
) -> None:
    bwrap_or_skip(confined)
    s = make_setup(tmp_path, confined=confined, rerun=DONE)
    leftovers.append(s.marker)
    killed = run_and_kill(s)
    # The dead run's socket is named after its pid: the re-run serves its own.
    args = killed.mcp_config["mcpServers"]["nexo"]["args"]
    assert args[args.index("--socket") + 1] == str(StateDir(s.state_dir).gate_socket(killed.pid))
    ticks = s.ticks.read_bytes()

    rerun_started = time.time()
    second = subprocess.Popen(
        s.nexo_run(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=s.env(),
        cwd=s.root,
        text=True,
    )
    stdout, stderr = second.communicate(timeout=RUN_TIMEOUT)
    assert "another process is serving" not in stderr
    assert second.returncode == EXIT_DONE, stderr
    outcome = single_json(stdout)
    assert outcome["goal_id"] == GOAL_ID
    assert outcome["outcome"]["kind"] == "done"
    assert outcome["total_turns"] == 1
    assert (s.workspace / "ok.txt").exists()

    # Nothing the old turn started wrote anything after the re-run began.
    assert s.ticks.read_bytes() == ticks
    assert s.ticks.stat().st_mtime < rerun_started

    old, new = split_runs(ledger(s.state_dir))
    session = check_killed_run(old, killed, s)
    assert outcome["session_id"] == session
    check_rerun_began(new, session, second.pid)
    (spawned,) = [data for kind, data in new if kind == "turn_spawned"]
    assert spawned["turn"] == 1
    new = [(kind, data) for kind, data in new if kind not in RECORD_KINDS]
    assert [kind for kind, _ in new[2:]] == [
        "decision_made",
        "attempt_completed",
        "replay_decided",
        "acceptance_checked",
        "goal_completed",
    ], new
    (_, decision), (_, completed), (_, replay), (_, checked), (_, end) = new[2:]
    assert (decision["subject"], decision["outcome"], decision["turn"]) == (
        "touch ok.txt",
        "allow_once",
        1,
    )
    assert (completed["turn"], completed["kind"], completed["session_id"]) == (
        1,
        "claimed_done",
        session,
    )
    assert (replay["turn"], replay["action"], replay["counted"]) == (1, "proceed", True)
    assert (checked["turn"], checked["met"]) == (1, True)
    assert (end["outcome"]["outcome"], end["outcome"]["total_turns"]) == ({"kind": "done"}, 1)
    # The re-run's own turn left nothing either.
    assert marked(s.marker) == []


async def test_the_killed_turns_token_is_denied_and_recorded_by_the_rerun(
    tmp_path: Path, leftovers: list[str]
) -> None:
    # The re-run's turn holds in a tool call until the stale request has been answered.
    go = "go.txt"
    held = turn(
        init(),
        bash(f"while [ ! -e {go} ]; do sleep 0.05; done"),
        bash("touch ok.txt"),
        text("Done."),
        result("Done."),
    )
    s = make_setup(tmp_path, confined=False, rerun=held)
    leftovers.append(s.marker)
    killed = await trio.to_thread.run_sync(run_and_kill, s)
    orphan = killed.mcp_config["mcpServers"]["nexo"]
    stale_token = orphan["env"][TOKEN_ENV]

    config = read_config(s.config, state_dir=s.state_dir)
    goal = read_goal(s.goal)
    async with Orchestrator(config) as orch, trio.open_nursery() as nursery:
        events = orch.subscribe()
        outcomes = []

        async def rerun() -> None:
            outcomes.append(await orch.run_goal(goal))

        nursery.start_soon(rerun)
        with trio.fail_after(30):  # the re-run's turn is open: its tool call was allowed
            while not isinstance(event := await events.receive(), DecisionMade):
                pass
        assert (event.outcome, event.turn) == ("allow_once", 1)
        current = json.loads(StateDir(s.state_dir).mcp_config(GOAL_ID).read_text())
        assert current["mcpServers"]["nexo"]["env"][TOKEN_ENV] != stale_token
        # The orphan's permission server, as its turn's config started it (the token in
        # its environment), connecting to the socket the re-run serves.
        args = list(orphan["args"])
        args[args.index("--socket") + 1] = str(StateDir(s.state_dir).gate_socket(os.getpid()))
        async with orphan_server(orphan["command"], args, orphan["env"], tmp_path) as server:
            params = server.call_message(1, {"command": "rm -rf ."})["params"]
            response = await server.request("tools/call", params, rpc_id=1)
        assert_deny(response, NOT_THE_CURRENT_TURN)
        (s.workspace / go).touch()
        with trio.fail_after(RUN_TIMEOUT):
            while not outcomes:  # noqa: ASYNC110 - the nursery's task appends it
                await trio.sleep(0.05)
    assert outcomes[0].kind is GoalEndKind.DONE

    old, new = split_runs(await trio.to_thread.run_sync(ledger, s.state_dir))
    check_rerun_began(new, check_killed_run(old, killed, s), os.getpid())
    # Between the two allowed calls of the re-run's turn: the orphan's, denied, recorded.
    decisions = [data for kind, data in new if kind == "decision_made"]
    assert [(d["subject"], d["outcome"], d["decider"], d["turn"]) for d in decisions] == [
        (f"while [ ! -e {go} ]; do sleep 0.05; done", "allow_once", "allow_all", 1),
        ("rm -rf .", "deny", "gate", None),  # asked by none of the re-run's turns
        ("touch ok.txt", "allow_once", "allow_all", 1),
    ]
    assert decisions[1]["tool_name"] == "Bash"
    assert decisions[1]["reason"] == NOT_THE_CURRENT_TURN
    assert [kind for kind, _ in new][-1] == "goal_completed"


@contextlib.asynccontextmanager
async def orphan_server(
    command: str, args: list[str], env: dict[str, str], directory: Path
) -> AsyncIterator[McpServer]:
    """The permission MCP server started as ``command args`` with ``env`` added, its
    handshake done; killed and reaped at the end."""
    stderr_path = directory / "orphan-mcp.stderr"
    with stderr_path.open("wb") as err:
        process = await trio.lowlevel.open_process(
            [command, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
            env={**os.environ, **env},
        )
    server = McpServer(process, stderr_path)
    try:
        await server.handshake()
        yield server
    finally:
        with trio.CancelScope(shield=True):
            if process.returncode is None:
                process.send_signal(signal.SIGKILL)
            await process.wait()
            for pipe in (process.stdin, process.stdout):
                if pipe is not None:
                    await pipe.aclose()
