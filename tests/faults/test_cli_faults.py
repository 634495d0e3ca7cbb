"""The fault matrix, goal level, through ``nexo-trio run`` as a real process: its exit code,
what it prints (the outcome on stdout, one ``Error: ...`` line on stderr and no traceback),
the processes it leaves (none), and the SQLite ledger it wrote (read back by a fresh
connection, row by row).

Rows: an invalid session (``replay.max_retries`` 0 and 3); another process holding the
ledger's write lock for 20 s mid-turn; the disk of the state dir filled mid-turn; Ctrl-C
during an acceptance check and SIGTERM mid-turn; a FIFO or a device where a ``file_match``
check looks; goal ids ``..``, ``.`` and ``-x``; a symlink planted where the gate's socket
goes. Whether many such goals leak descriptors is asked in process, by
``test_goal_faults.py``: only there can one count them over many turns.

Every process these runs start carries the test's directory: in its argv (the goal file,
the fake claude) or its environment (``NEXO_FAULT_MARK``, which every turn, MCP server and
check inherits), so none can outlive its test unseen.
"""

from __future__ import annotations

import os
import select
import signal
import sqlite3
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import trio
import yaml

from nexo_trio.cli.common import EXIT_CANCELLED, EXIT_STATE_UNWRITABLE, EXIT_USAGE
from nexo_trio.orchestrator.state_dir import DB_NAME
from nexo_trio.testing.scenario import (
    Step,
    Turn,
    bash,
    hang,
    init,
    result,
    spawn,
    text,
    turn,
)
from tests.cli.helpers import NEXO_TRIO, Setup, make_setup, single_json, write_yaml
from tests.faults.probes import (
    FILL_RULE,
    LedgerRow,
    assert_runs_well_formed,
    fill_command,
    kill_marked,
    ledger_rows,
    marked_processes,
    mounted_tmpfs,
    seed_binding,
    wait_unmarked,
)
from tests.gate.helpers import short_tempdir

RUN_TIMEOUT = 60.0
"""No run of these tests may take longer (``subprocess`` kills it, the test fails)."""
START_TIMEOUT = 15.0
HELLO = "echo hi > hello.txt"
"""What the default goal of ``tests.cli.helpers.Setup`` wants done."""
DONE_IN_ONE_TURN = (
    "goal_started",
    "attempt_started",
    "turn_spawned",
    "session_bound",
    "decision_made",
    "attempt_completed",
    "replay_decided",
    "acceptance_checked",
    "goal_completed",
)
"""The ledger of a goal done in one turn with one permission decision (``HELLO``)."""


# --------------------------------------------------------------------------- running


class Runs:
    """The ``nexo-trio`` processes of one test, all marked with its directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.started: list[subprocess.Popen[str]] = []

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "NEXO_FAULT_MARK": str(self.root)}

    def start(self, *args: str | Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        """``nexo-trio ARGS`` in the background, its pipes kept."""
        proc = subprocess.Popen(
            [str(NEXO_TRIO), *map(str, args)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env or self.env,
        )
        self.started.append(proc)
        return proc

    def run(
        self, *args: str | Path, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """``nexo-trio ARGS`` to its end (at most ``RUN_TIMEOUT``)."""
        proc = self.start(*args, env=env)
        stdout, stderr = proc.communicate(timeout=RUN_TIMEOUT)
        return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


@pytest.fixture
def runs(tmp_path: Path) -> Iterator[Runs]:
    """The test's runs; afterwards nothing carrying the test's directory may be alive."""
    started = Runs(tmp_path)
    try:
        yield started
    finally:
        for proc in started.started:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    alive = wait_unmarked(str(tmp_path), within=3.0)
    killed = kill_marked(str(tmp_path))
    assert not alive, f"processes of the test survived it: {killed}"


def run_goal(runs: Runs, s: Setup, goal: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return runs.run("run", goal, "--config", s.config, "--json", *extra)


def error_line(stderr: str) -> str:
    """The last line on stderr, which must say ``Error: ...``; no traceback anywhere."""
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines, "nothing on stderr"
    assert lines[-1].startswith("Error: "), stderr
    return lines[-1]


def configure(s: Setup, **claude: Any) -> None:
    """Add ``claude`` settings (``allowed_tools``, say) to the setup's config file."""
    data = yaml.safe_load(s.config.read_text())
    data["claude"].update(claude)
    write_yaml(s.config, data)


def kinds(rows: Sequence[LedgerRow]) -> list[str]:
    return [kind for _, _, kind, _ in rows]


RECORD_KINDS = frozenset({"assistant_text", "tool_called"})
"""The turn's record (what Claude said and ran: tests/orchestrator/test_record.py)."""


def flow(rows: Sequence[LedgerRow]) -> list[str]:
    """The kinds of the rows but the turn's record."""
    return [kind for kind in kinds(rows) if kind not in RECORD_KINDS]


def wait_for(what: str, check: Any, proc: subprocess.Popen[str]) -> None:
    """Poll ``check()`` until true, while ``proc`` runs (at most ``START_TIMEOUT``)."""
    deadline = time.monotonic() + START_TIMEOUT
    while not check():
        assert proc.poll() is None, f"the run ended before {what}: {proc.communicate()}"
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.02)


def has_row(database: Path, kind: str) -> bool:
    try:
        return kind in kinds(ledger_rows(database))
    except sqlite3.Error:  # not created yet
        return False


def wait_until_file(path: Path) -> str:
    """A shell loop that waits until ``path`` exists (the fake's turn waits on the test)."""
    return f"while [ ! -e {path} ]; do sleep 0.02; done"


WAIT_RULE = "Bash(while:*)"
"""The ``--allowedTools`` rule that lets :func:`wait_until_file` run without the gate."""


# --------------------------------------------------------------------------- 1. invalid session


def claims_done() -> Turn:
    """A turn that claims the goal is done without doing anything."""
    return turn(init(), text("Done."), result("Done."))


def does_it() -> Turn:
    """A turn that does the goal (one permission decision) and says so."""
    return turn(init(), bash(HELLO), text("Done."), result("Done."))


def bindings(database: Path) -> list[tuple[str, bool]]:
    conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT session_id, invalid FROM bindings WHERE goal_id = 'g1' ORDER BY rowid"
        ).fetchall()
    finally:
        conn.close()
    return [(session, bool(invalid)) for session, invalid in rows]


@pytest.mark.parametrize("max_retries", [0, 3])
def test_an_invalid_session_is_dropped_and_a_fresh_one_does_the_goal(
    tmp_path: Path, runs: Runs, max_retries: int
) -> None:
    """The goal's session (bound by an earlier run) is unknown to the CLI ("No
    conversation found"): with retries the run goes on in a fresh session (exit 0); without,
    it escalates (exit 1) and the next run starts fresh (exit 0). Either way the binding is
    marked invalid."""
    stale = str(uuid.uuid4())
    s = make_setup(
        tmp_path, [does_it(), does_it()], config={"replay": {"max_retries": max_retries}}
    )
    database = s.state_dir / DB_NAME
    seeded = trio.run(seed_binding, database, "g1", stale)
    goal = s.goal()

    first = run_goal(runs, s, goal)
    outcomes = [single_json(first.stdout)]
    if max_retries == 0:
        assert first.returncode == 1, first.stderr
        assert outcomes[0]["outcome"]["kind"] == "escalated"
        assert "session invalid" in outcomes[0]["outcome"]["reason"]
        assert "No conversation found" in outcomes[0]["outcome"]["reason"]
        assert bindings(database) == [(stale, True)]
        first = run_goal(runs, s, goal)
        outcomes.append(single_json(first.stdout))
    assert first.returncode == 0, first.stderr
    done = outcomes[-1]
    assert done["outcome"] == {"kind": "done"}
    bad, fresh = s.fake.invocations()
    assert f"--resume={stale}" in bad["argv"]
    assert not any(arg.startswith("--resume") for arg in fresh["argv"])
    assert done["session_id"] == fresh["session_id"] != stale
    assert bindings(database) == [(stale, True), (fresh["session_id"], False)]

    rows = ledger_rows(database, "g1")
    assert [(kind, data) for _, _, kind, data in rows[:1]] == seeded
    assert_runs_well_formed(rows)
    assert kinds(rows).count("goal_started") == len(outcomes)
    judged = [data for _, _, kind, data in rows if kind == "replay_decided"]
    invalid = [j for j in judged if j["invalid_session"] is not None]
    assert [(j["invalid_session"], j["action"]) for j in invalid] == [
        (stale, "escalate" if max_retries == 0 else "fresh_session")
    ]
    bound = [data["session_id"] for _, _, kind, data in rows if kind == "session_bound"]
    assert bound == [stale, fresh["session_id"]]
    completed = [data["outcome"] for _, _, kind, data in rows if kind == "goal_completed"]
    assert completed == outcomes  # each run's end, as printed


# --------------------------------------------------------------------------- 2. a lock for 20 s


HOLDER = r"""
import select, sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
select.select([sys.stdin], [], [], float(sys.argv[2]))  # a line, EOF, or hold_s at most
conn.execute("ROLLBACK")
conn.close()
print("released", flush=True)
"""
LOCK_S = 20.0
CLOCK_SKEW_S = 1.0
"""How far a run's clock may be off this process's wall clock (see the lock test)."""


def hold_lock(runs: Runs, database: Path) -> subprocess.Popen[str]:
    """Another process holding the ledger's write lock (``BEGIN IMMEDIATE``) for
    ``LOCK_S``; returns once it holds it."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(database), str(LOCK_S)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    runs.started.append(holder)
    assert holder.stdout is not None
    ready, _, _ = select.select([holder.stdout], [], [], START_TIMEOUT)
    assert ready, "the lock holder never locked"
    assert holder.stdout.readline() == "locked\n"
    return holder


def test_a_lock_held_20_s_mid_turn_by_another_process_loses_nothing(
    tmp_path: Path, runs: Runs
) -> None:
    """While the turn runs, another process holds the ledger's write lock for 20 s, and the
    turn goes on meanwhile (a permission decision is recorded: kept in memory). After the
    lock is released the goal ends done, exit 0, and the ledger holds every event once,
    in order."""
    locked, released = tmp_path / "locked", tmp_path / "released"
    s = make_setup(
        tmp_path,
        [
            turn(
                init(),
                bash(wait_until_file(locked)),
                bash(HELLO),  # asks the gate: its decision is recorded while locked
                text("Wrote it."),
                bash(wait_until_file(released)),
                text("Done."),
                result("Done."),
            )
        ],
    )
    configure(s, allowed_tools=[WAIT_RULE])
    database = s.state_dir / DB_NAME
    proc = runs.start("run", s.goal(), "--config", s.config, "--json")
    wait_for("the session was bound", lambda: has_row(database, "session_bound"), proc)
    holder = hold_lock(runs, database)
    locked_at, locked_wall = time.monotonic(), time.time()
    locked.touch()
    # Near the end of the lock: the turn went on, nothing new reached the file (the
    # decision made meanwhile is kept in memory).
    time.sleep(LOCK_S - 2.0)
    assert holder.poll() is None, "the lock was let go early"
    assert proc.poll() is None
    assert flow(ledger_rows(database)) == list(DONE_IN_ONE_TURN[:4])
    assert holder.wait(timeout=10) == 0  # not communicate(): its EOF would release the lock
    held = time.monotonic() - locked_at
    assert holder.stdout is not None
    assert holder.stdout.read() == "released\n"
    for pipe in (holder.stdin, holder.stdout):
        if pipe is not None:
            pipe.close()
    released.touch()
    stdout, stderr = proc.communicate(timeout=RUN_TIMEOUT)

    assert held >= LOCK_S - 0.5
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr
    outcome = single_json(stdout)
    assert outcome["outcome"] == {"kind": "done"}
    assert (outcome["decisions"], outcome["total_turns"]) == ({"allowed": 1, "denied": 0}, 1)
    rows = ledger_rows(database)
    assert flow(rows) == list(DONE_IN_ONE_TURN)  # each once, in order
    assert kinds(rows).count("tool_called") == 3
    assert_runs_well_formed(rows)
    data = {kind: row for _, _, kind, row in rows}
    assert data["decision_made"]["subject"] == HELLO
    assert data["decision_made"]["outcome"] == "allow_once"
    assert data["goal_completed"]["outcome"] == outcome
    # The decision was made (and kept) while the lock was held: stamped with that time, and
    # the turn ended after the release. The run's clock is the wall clock at its start
    # advanced by the monotonic one, so it may drift from this process's ``time.time()`` by
    # a little (a stepped wall clock): compared across processes only within a second, and
    # the gap between the two events is measured on the run's own clock.
    decided_at, completed_at = data["decision_made"]["at"], data["attempt_completed"]["at"]
    assert locked_wall - CLOCK_SKEW_S <= decided_at <= locked_wall + LOCK_S / 2
    assert completed_at - decided_at >= held - LOCK_S / 2
    assert completed_at <= time.time() + CLOCK_SKEW_S
    assert (tmp_path / "goals" / "ws-g1" / "hello.txt").read_text() == "hi\n"


# --------------------------------------------------------------------------- 3. disk full


def test_a_disk_full_mid_turn_prints_the_outcome_then_exits_3(tmp_path: Path, runs: Runs) -> None:
    """The state dir's file system fills up mid-turn (once the session is recorded) and
    stays full: the goal still ends (done), ``nexo-trio run`` prints its outcome, then
    says the state dir is unwritable and how much was not written, and exits 3; the file
    holds what came before, intact."""
    go = tmp_path / "go"
    with mounted_tmpfs(tmp_path / "fs", size="2m") as fs:
        filler = fs / "filler"
        steps = [bash(wait_until_file(go)), bash(fill_command(filler)), bash(HELLO)]
        s = make_setup(
            tmp_path,
            [turn(init(), *steps, text("Done."), result("Done."))],
            config={"state_dir": str(fs / "state")},
        )
        configure(s, allowed_tools=[WAIT_RULE, FILL_RULE])
        database = fs / "state" / DB_NAME
        started = time.monotonic()
        proc = runs.start("run", s.goal(), "--config", s.config, "--json")
        wait_for("the session was bound", lambda: has_row(database, "session_bound"), proc)
        go.touch()
        stdout, stderr = proc.communicate(timeout=RUN_TIMEOUT)
        elapsed = time.monotonic() - started
        assert filler.stat().st_size > 0
        rows = ledger_rows(database)

    assert proc.returncode == EXIT_STATE_UNWRITABLE, stderr
    assert single_json(stdout)["outcome"] == {"kind": "done"}
    line = error_line(stderr)
    assert line.startswith(f"Error: state dir unwritable: {database}: "), line
    assert "full" in line
    # What the file holds: the events before the disk filled, whole.
    assert_runs_well_formed(rows, unfinished=True)
    assert flow(rows) == list(DONE_IN_ONE_TURN[:4])
    # And what it does not hold is counted, not lost silently (the record too: three
    # tool calls and Claude's text).
    missing = len(DONE_IN_ONE_TURN) + 4 - len(rows)
    assert line.endswith(f"; {missing} event(s) of 1 goal(s) not written"), line
    assert elapsed < 30  # the flush at close is bounded (5 s), no waiting for 60 s
    assert (tmp_path / "goals" / "ws-g1" / "hello.txt").read_text() == "hi\n"


# --------------------------------------------------------------------------- 4. signals


SLEEPER = "import time; time.sleep(120)"


def test_ctrl_c_during_acceptance_stops_the_check_and_its_daemon(
    tmp_path: Path, runs: Runs
) -> None:
    """Ctrl-C while an acceptance check runs a long ``sleep`` that started a grandchild in a
    session of its own: exit 130, the outcome printed, nothing of the check's tree alive,
    the ledger says cancelled."""
    checking = tmp_path / "checking"
    check = f"touch {checking}; setsid sleep 300 & sleep 300"
    s = make_setup(tmp_path, [claims_done()])
    goal = s.goal(acceptance=[{"kind": "shell", "command": check, "timeout": "120s"}])
    proc = runs.start("run", goal, "--config", s.config, "--json")
    wait_for("the check started", checking.exists, proc)
    wait_for("its daemon started", lambda: len(sleepers(tmp_path)) == 2, proc)
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=RUN_TIMEOUT)

    assert proc.returncode == EXIT_CANCELLED, stderr
    assert time.monotonic() - started < 10
    assert "Traceback" not in stderr
    outcome = single_json(stdout)
    assert outcome["outcome"]["kind"] == "cancelled"
    assert "SIGINT" in outcome["outcome"]["reason"]
    alive = wait_unmarked(str(tmp_path))
    assert not alive, f"processes of the check survived: {alive}"
    rows = ledger_rows(s.state_dir / DB_NAME)
    assert_cancelled(rows, "SIGINT", outcome)
    assert "acceptance_checked" not in kinds(rows)  # the check never finished


def sleepers(root: Path) -> list[tuple[int, str]]:
    """The check's ``sleep 300`` processes (the marker is in their environment)."""
    return [p for p in marked_processes(str(root)) if p[1].startswith("sleep 300")]


def test_sigterm_mid_turn_stops_the_turn_and_its_daemon(tmp_path: Path, runs: Runs) -> None:
    """SIGTERM to ``nexo-trio run`` while the turn runs, a grandchild of the CLI in a
    session of its own: exit 130, the outcome printed, nothing of the turn's tree alive
    (the CLI, its MCP server, the grandchild), the ledger says cancelled."""
    pidfile = tmp_path / "grandchild.pid"
    steps: list[Step] = [
        init(),
        spawn([sys.executable, "-c", SLEEPER, str(tmp_path)], pidfile=pidfile),
        text("working"),
        hang(),
    ]
    s = make_setup(tmp_path, [turn(*steps)])
    proc = runs.start("run", s.goal(), "--config", s.config, "--json")
    database = s.state_dir / DB_NAME
    wait_for("the session was bound", lambda: has_row(database, "session_bound"), proc)
    wait_for("the grandchild started", lambda: pidfile.exists() and pidfile.read_text(), proc)
    grandchild = int(pidfile.read_text())
    assert any(pid == grandchild for pid, _ in marked_processes(str(tmp_path)))
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=RUN_TIMEOUT)

    assert proc.returncode == EXIT_CANCELLED, stderr
    assert time.monotonic() - started < 10
    assert "Traceback" not in stderr
    outcome = single_json(stdout)
    assert outcome["outcome"]["kind"] == "cancelled"
    assert "SIGTERM" in outcome["outcome"]["reason"]
    alive = wait_unmarked(str(tmp_path))
    assert not alive, f"processes of the turn survived: {alive}"
    rows = ledger_rows(database)
    assert_cancelled(rows, "SIGTERM", outcome)
    (attempt,) = [data for _, _, kind, data in rows if kind == "attempt_completed"]
    assert attempt["kind"] == "cancelled"


def assert_cancelled(rows: Sequence[LedgerRow], signame: str, outcome: dict[str, Any]) -> None:
    """The ledger of a run cancelled by ``signame``: the cancel recorded before the end,
    the end recorded once, last, with the outcome printed."""
    assert_runs_well_formed(rows)
    names = kinds(rows)
    assert names[0] == "goal_started"
    assert names.count("cancel_requested") == 1
    assert names.count("goal_completed") == 1
    assert names[-1] == "goal_completed"
    assert names.index("cancel_requested") < names.index("goal_completed")
    cancel = rows[names.index("cancel_requested")][3]
    assert cancel["reason"] == f"cancelled by {signame}"
    assert rows[-1][3]["outcome"] == outcome


# --------------------------------------------------------------------------- 5. special files


def _fifo(path: Path) -> str:
    os.mkfifo(path)
    return "results.txt is a FIFO, not a regular file: refused"


def _char_device(path: Path) -> str:
    os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(1, 5))  # what /dev/zero is
    return "results.txt is a character device, not a regular file: refused"


def _link_to_dev_zero(path: Path) -> str:
    path.symlink_to("/dev/zero")
    return "path results.txt resolves outside the workspace: refused"


@pytest.mark.parametrize("make", [_fifo, _char_device, _link_to_dev_zero], ids=lambda f: f.__name__)
def test_a_special_file_at_a_file_match_path_is_refused_at_once(
    tmp_path: Path, runs: Runs, make: Any
) -> None:
    """A FIFO (nobody ever writes it: an open would block forever) or a device (it never
    ends) where a ``file_match`` check reads: refused at once with a clear message, the
    loop goes on, and the next turn, which writes a real file there, is done."""
    s = make_setup(
        tmp_path,
        [
            claims_done(),
            turn(
                init(),
                bash("rm -f results.txt && echo hi > results.txt"),
                text("Done."),
                result("Done."),
            ),
        ],
    )
    workspace = tmp_path / "goals" / "ws-g1"
    workspace.mkdir(parents=True)
    try:
        message = make(workspace / "results.txt")
    except PermissionError as exc:  # pragma: no cover - mknod needs CAP_MKNOD
        pytest.skip(f"cannot make the special file here: {exc}")
    goal = s.goal(acceptance=[{"kind": "file_match", "path": "results.txt", "pattern": "^hi$"}])
    started = time.monotonic()
    done = run_goal(runs, s, goal)
    elapsed = time.monotonic() - started

    assert done.returncode == 0, done.stderr
    assert elapsed < 20
    outcome = single_json(done.stdout)
    assert (outcome["outcome"], outcome["total_turns"]) == ({"kind": "done"}, 2)
    rows = ledger_rows(s.state_dir / DB_NAME)
    assert_runs_well_formed(rows)
    refused, passed = [data for _, _, kind, data in rows if kind == "acceptance_checked"]
    assert refused["met"] is False
    (result_,) = refused["results"]
    assert (result_["passed"], result_["message"]) == (False, message)
    assert result_["duration_s"] < 2.0  # at once, not after a timeout
    assert passed["met"] is True
    # The failure went back to Claude in the next prompt, word for word.
    assert message in s.fake.invocations()[1]["prompt"]


# --------------------------------------------------------------------------- 6. goal ids


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.parametrize("goal_id", ["..", ".", "-x"])
def test_a_goal_id_that_is_no_name_exits_2_with_one_line(
    tmp_path: Path, runs: Runs, goal_id: str
) -> None:
    """An id that would name the workspace root's parent, the root itself, or read as an
    option: exit 2, one ``Error:`` line naming the id, nothing created anywhere (the
    default workspace would be ``workspace_root/ID``)."""
    root = tmp_path / "inside"
    s = make_setup(root, [does_it()], config={"workspace_root": str(root / "workspaces")})
    goal = write_yaml(root / "goal.yaml", {"id": goal_id, "description": "Create hello.txt."})
    before = tree(tmp_path)
    done = runs.run("run", goal, "--config", s.config)

    assert done.returncode == EXIT_USAGE, done.stderr
    assert done.stdout == ""
    line = error_line(done.stderr)
    assert len([x for x in done.stderr.splitlines() if x.strip()]) == 1, done.stderr
    assert line.startswith(f"Error: {goal}: id: must be"), line
    assert f"got {goal_id!r}" in line
    assert tree(tmp_path) == before
    assert s.fake.invocations() == []


# --------------------------------------------------------------------------- 7. socket dir


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


@pytest.mark.parametrize("where", ["state-dir-run", "long-path-fallback"])
def test_a_symlink_planted_at_the_socket_dir_exits_2_and_is_never_followed(
    tmp_path: Path, runs: Runs, where: str
) -> None:
    """The directory of the gate's socket is a symlink to someone else's directory: the
    state dir's ``run/``, or (for a state dir whose socket path would be too long)
    ``<tmp>/nexo-trio-<uid>``, planted by another user. Exit 2, one line, the victim
    directory's mode and contents untouched, no turn run."""
    victim = tmp_path / "victim"
    victim.mkdir()
    victim.chmod(0o751)
    env = runs.env
    with short_tempdir() as shared:  # the temp dir (short: the socket must fit there)
        env["TMPDIR"] = str(shared)
        if where == "state-dir-run":
            state_dir = tmp_path / "state"
            state_dir.mkdir()
            planted = state_dir / "run"
        else:
            state_dir = tmp_path / ("x" * 120)
            planted = shared / f"nexo-trio-{os.getuid()}"
        planted.symlink_to(victim)
        s = make_setup(tmp_path, [does_it()], config={"state_dir": str(state_dir)})
        done = runs.run("run", s.goal(), "--config", s.config, env=env)
        assert planted.is_symlink()

    assert done.returncode == EXIT_USAGE, done.stderr
    assert done.stdout == ""
    line = error_line(done.stderr)
    assert len([x for x in done.stderr.splitlines() if x.strip()]) == 1, done.stderr
    assert f"{planted} is a symlink; refusing" in line, line
    assert mode(victim) == 0o751
    assert list(victim.iterdir()) == []
    assert s.fake.invocations() == []
