"""``--store PATH|URL`` (and ``NEXO_STORE``, and the config's ``store:``): every command
that reads or writes the state works on a SQLite file anywhere, or on a PostgreSQL
database (a real server: the ``pg_url`` fixture), and refuses a store it cannot use in one
line (exit 2)."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
from click.testing import CliRunner

from nexo_trio.cli import control, main
from nexo_trio.store.base import SharedStore
from nexo_trio.store.location import StoreLocation
from nexo_trio.testing.scenario import bash, init, result, sleep_request, turn
from tests.cli.helpers import (
    NEXO_TRIO,
    invoke,
    json_lines,
    make_setup,
    run_process,
    single_json,
    write_yaml,
)
from tests.cli.test_signals import processes, start_run
from tests.cli.test_watch import rows as watch_rows

__all__ = ["processes"]  # the fixture, used by name

WAIT = 20.0
HI = turn(init(), bash("echo hi > hello.txt"), result("Done."))
SLEEPY = turn(init(), sleep_request(30_000, "waiting for the build"))
ELSEWHERE = "otherhost:4242:cafe0001"
"""The owner of a lease held by an orchestrator on another host."""
UNREACHABLE = "postgresql://nexo@127.0.0.1:1/x"
DONE = {"goal_id": "g1", "outcome": {"goal_id": "g1", "outcome": {"kind": "done"}}}


def started(goal_id: str) -> dict[str, Any]:
    return {"goal_id": goal_id, "description": "d", "workspace": "/w", "pid": 1}


async def seed(store: SharedStore) -> None:
    """``g1`` done (bound to ``sess-1``), ``g2`` open and leased to another host, ``g3``
    open with no lease (crashed)."""
    await store.append_events("g1", [("goal_started", started("g1")), ("goal_completed", DONE)])
    await store.put_binding("g1", "sess-1")
    await store.append_events("g2", [("goal_started", started("g2"))])
    await store.append_events("g3", [("goal_started", started("g3"))])
    lease = await store.take_lease("g2", ELSEWHERE, 120.0)
    assert lease.owner == ELSEWHERE


def in_store(value: str, fn: Callable[[SharedStore], Awaitable[Any]]) -> Any:
    """``fn(store)`` on the store ``value`` names (a SQLite path or a PostgreSQL URL)."""

    async def run() -> Any:
        if value.startswith("postgresql://"):
            from nexo_trio.store.postgres import open_postgres_store

            async with open_postgres_store(value) as store:
                return await fn(store)
        async with StoreLocation(value).open() as sqlite_store:
            return await fn(sqlite_store)

    return trio.run(run)


def one_error_line(stderr: str) -> str:
    """The one line a failing command prints (no traceback)."""
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    assert lines[0].startswith("Error: "), stderr
    return lines[0].removeprefix("Error: ")


def status_rows(stdout: str) -> dict[str, str]:
    """``status`` lines by goal id."""
    return {line.split()[0]: line for line in stdout.splitlines()}


# ------------------------------------------------------------------------- SQLite


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Path:
    """A SQLite store outside any state dir, holding the goals of :func:`seed`."""
    path = tmp_path / "elsewhere" / "ledger.db"
    path.parent.mkdir()
    in_store(str(path), seed)
    return path


def test_store_option_reads_a_sqlite_file_outside_the_state_dir(
    tmp_path: Path, sqlite_store: Path
) -> None:
    state = tmp_path / "state"
    r = invoke("status", "--state-dir", state, "--store", sqlite_store)
    assert r.exit_code == 0, r.output
    rows = status_rows(r.stdout)
    assert list(rows) == ["g3", "g2", "g1"]  # the most recently active first
    assert rows["g1"].startswith("g1  done ")
    # On SQLite a goal runs on this host: its lock says, not a lease.
    assert rows["g2"].startswith("g2  crashed (last: goal_started)")

    events = invoke("events", "g1", "--store", sqlite_store, "--state-dir", state, "--json")
    assert events.exit_code == 0, events.output
    assert [row["kind"] for row in json_lines(events.stdout)] == ["goal_started", "goal_completed"]

    bindings = invoke("bindings", "--store", sqlite_store, "--state-dir", state)
    assert bindings.exit_code == 0, bindings.output
    assert bindings.stdout.startswith("g1  sess-1  active ")

    # The state dir itself holds nothing: without --store there is nothing recorded yet.
    plain = invoke("status", "--state-dir", state)
    assert plain.exit_code == 0, plain.output
    assert plain.stderr == f"nothing recorded yet: {state / 'nexo.db'} does not exist\n"
    assert not state.exists()


def test_nexo_store_names_the_store_and_store_beats_it(tmp_path: Path, sqlite_store: Path) -> None:
    runner = CliRunner()
    state = str(tmp_path / "state")
    by_env = runner.invoke(
        main, ["status", "--state-dir", state], env={"NEXO_STORE": str(sqlite_store)}
    )
    assert by_env.exit_code == 0, by_env.output
    assert list(status_rows(by_env.stdout)) == ["g3", "g2", "g1"]
    events = runner.invoke(
        main, ["events", "g1", "--state-dir", state], env={"NEXO_STORE": str(sqlite_store)}
    )
    assert events.exit_code == 0, events.output
    assert len(events.stdout.splitlines()) == 2

    missing = tmp_path / "missing.db"
    overridden = runner.invoke(
        main,
        ["bindings", "--state-dir", state, "--store", str(sqlite_store)],
        env={"NEXO_STORE": str(missing)},
    )
    assert overridden.exit_code == 0, overridden.output
    assert overridden.stdout.startswith("g1  sess-1  active ")
    assert not missing.exists()


def test_the_config_store_key(tmp_path: Path, sqlite_store: Path) -> None:
    config = write_yaml(
        tmp_path / "config.yaml", {"state_dir": str(tmp_path / "state"), "store": str(sqlite_store)}
    )
    r = invoke("status", "--config", config, "--json")
    assert r.exit_code == 0, r.output
    assert [row["goal_id"] for row in json_lines(r.stdout)] == ["g3", "g2", "g1"]


def test_run_writes_the_store_given_and_the_others_read_it(tmp_path: Path) -> None:
    s = make_setup(tmp_path, [HI])
    store = tmp_path / "shared" / "runs.db"
    store.parent.mkdir()
    r = invoke("run", s.goal(), "--config", s.config, "--store", store)
    assert r.exit_code == 0, r.output
    assert f"transcript: nexo-trio transcript g1 --state-dir {s.state_dir} --store {store}" in (
        r.stdout
    )
    assert store.exists()
    assert not (s.state_dir / "nexo.db").exists()

    status = invoke("status", "--config", s.config, "--store", store)
    assert status.exit_code == 0, status.output
    assert status.stdout.startswith("g1  done ")
    shown = invoke("transcript", "g1", "--config", s.config, "--store", store)
    assert shown.exit_code == 0, shown.output
    assert "echo hi > hello.txt" in shown.stdout
    watched = invoke("watch", "--config", s.config, "--store", store)
    assert watched.exit_code == 0, watched.output
    assert f"nexo-trio watch: {store}" in watched.stdout
    assert " done " in watched.stdout


# ------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    "command",
    [["status"], ["events", "g1"], ["bindings"], ["pause", "g1"], ["watch"], ["run", "GOAL"]],
)
def test_an_unsupported_scheme_is_one_line(tmp_path: Path, command: list[str]) -> None:
    s = make_setup(tmp_path, [])
    args = [str(s.goal()) if arg == "GOAL" else arg for arg in command]
    r = invoke(*args, "--config", s.config, "--store", "mysql://x")
    assert r.exit_code == 2, r.output
    line = one_error_line(r.stderr)
    assert line.startswith("store: unsupported URL scheme 'mysql'"), line
    assert "postgresql://" in line
    assert not s.state_dir.exists()
    assert s.fake.invocations() == []


@pytest.mark.parametrize(
    "command",
    [
        ["status"],
        ["events", "g1"],
        ["events", "g1", "--follow"],
        ["bindings"],
        ["pause", "g1"],
        ["transcript", "g1"],
        ["worktrees"],
        ["run", "GOAL"],
    ],
)
def test_an_unreachable_postgres_is_one_line_and_exit_2(tmp_path: Path, command: list[str]) -> None:
    s = make_setup(tmp_path, [turn(init(), result("Done."))])
    args = [str(s.goal()) if arg == "GOAL" else arg for arg in command]
    proc = run_process(*args, "--config", s.config, "--store", UNREACHABLE)
    assert proc.returncode == 2, proc
    line = one_error_line(proc.stderr)
    assert line.startswith(f"cannot use the store {UNREACHABLE}: "), line
    assert "Connection refused" in line
    assert s.fake.invocations() == []


def test_an_empty_store_option_is_a_usage_error(tmp_path: Path) -> None:
    r = invoke("status", "--state-dir", tmp_path / "state", "--store", " ")
    assert r.exit_code == 2, r.output
    assert "is empty" in r.stderr


# ------------------------------------------------------------------------- PostgreSQL


@pytest.fixture
def pg_store(pg_url: str) -> str:
    """A PostgreSQL store holding the goals of :func:`seed`."""
    in_store(pg_url, seed)
    return pg_url


def test_status_events_and_bindings_on_postgres(tmp_path: Path, pg_store: str) -> None:
    state = tmp_path / "state"
    r = invoke("status", "--state-dir", state, "--store", pg_store)
    assert r.exit_code == 0, r.output
    rows = status_rows(r.stdout)
    assert set(rows) == {"g1", "g2", "g3"}
    assert rows["g1"].startswith("g1  done ")
    assert rows["g2"].startswith(f"g2  running on {ELSEWHERE} (lease until ")
    assert rows["g3"].startswith("g3  crashed (last: goal_started)")
    as_json = {
        row["goal_id"]: row
        for row in json_lines(invoke("status", "--store", pg_store, "--json").stdout)
    }
    assert as_json["g1"]["outcome"] == "done"
    assert as_json["g1"]["running"] is None
    assert as_json["g2"]["running"].startswith(f"running on {ELSEWHERE} (lease until ")
    assert as_json["g3"]["running"] == "crashed"

    events = invoke("events", "g1", "--store", pg_store, "--json")
    assert events.exit_code == 0, events.output
    assert [row["kind"] for row in json_lines(events.stdout)] == ["goal_started", "goal_completed"]
    text = invoke("events", "g1", "--store", pg_store)
    assert text.exit_code == 0, text.output
    assert "outcome=done" in text.stdout.splitlines()[-1]
    none = invoke("events", "nope", "--store", pg_store)
    assert none.exit_code == 2
    assert one_error_line(none.stderr) == "no events recorded for goal 'nope'"

    bindings = invoke("bindings", "--store", pg_store)
    assert bindings.exit_code == 0, bindings.output
    assert bindings.stdout.startswith("g1  sess-1  active ")
    assert not state.exists()  # reading a database server makes no state dir


def test_watch_on_postgres_tells_leased_from_crashed(pg_store: str) -> None:
    r = invoke("watch", "--store", pg_store)
    assert r.exit_code == 0, r.output
    assert "nexo-trio watch: postgresql://" in r.stdout
    table = watch_rows(r.stdout)
    assert table["g1"][1] == "done"
    assert table["g2"][1] == "running"
    assert table["g3"][1] == "crashed"


def test_follow_on_postgres_wakes_on_new_events(pg_url: str) -> None:
    in_store(pg_url, lambda store: store.append_events("g1", [("goal_started", started("g1"))]))
    proc = subprocess.Popen(
        [str(NEXO_TRIO), "events", "g1", "-f", "--until-done", "--json", "--store", pg_url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = json.loads(proc.stdout.readline())
        assert first["kind"] == "goal_started"
        in_store(pg_url, lambda store: store.append_events("g1", [("goal_completed", DONE)]))
        stdout, stderr = proc.communicate(timeout=WAIT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stderr
    assert [json.loads(line)["kind"] for line in stdout.splitlines()] == ["goal_completed"]


def answered_controls(url: str, goal_id: str) -> list[str]:
    """The ops of the goal's control requests left in the store, each answered."""
    import psycopg

    with psycopg.connect(url, connect_timeout=10) as conn:
        rows = conn.execute(
            "SELECT request, reply FROM controls WHERE goal_id = %s ORDER BY id", (goal_id,)
        ).fetchall()
    assert all(reply is not None for _, reply in rows), rows
    return [json.loads(request)["op"] for request, _ in rows]


class FakeRunner:
    """An orchestrator elsewhere, as the store sees it: it answers every control request
    for ``g2`` with ``reply`` (in a thread of its own, its own trio run)."""

    def __init__(self, url: str, reply: dict[str, Any]) -> None:
        self.url = url
        self.reply = reply
        self.requests: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=trio.run, args=(self._serve,), daemon=True)

    async def _serve(self) -> None:
        from nexo_trio.store.postgres import open_postgres_store

        async with open_postgres_store(self.url) as store:
            self._ready.set()
            deadline = trio.current_time() + WAIT
            while not self._stop.is_set() and trio.current_time() < deadline:
                for message in await store.pending_controls(["g2"]):
                    self.requests.append(message.request)
                    await store.answer_control(message.id, self.reply)
                await store.wait_changed(0.2)

    def __enter__(self) -> FakeRunner:
        self._thread.start()
        assert self._ready.wait(WAIT)
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(WAIT)


@pytest.fixture
def answered(pg_store: str) -> Iterator[FakeRunner]:
    ok = {"v": 1, "ok": True, "message": "paused goal 'g2'", "problem": None}
    with FakeRunner(pg_store, ok) as runner:
        yield runner


def test_a_control_command_reaches_the_runner_through_the_store(
    tmp_path: Path, answered: FakeRunner
) -> None:
    proc = run_process("pause", "g2", "--state-dir", tmp_path / "state", "--store", answered.url)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "paused goal 'g2'\n"
    (request,) = answered.requests
    assert request["op"] == "pause"
    assert request["goal_id"] == "g2"
    assert request["v"] == 1


def test_a_reply_that_changed_nothing_exits_1(pg_store: str) -> None:
    unchanged = {
        "v": 1,
        "ok": False,
        "message": "goal 'g2' is already paused",
        "problem": "unchanged",
    }
    with FakeRunner(pg_store, unchanged):
        r = invoke("pause", "g2", "--store", pg_store)
    assert r.exit_code == 1, r.output
    assert r.stderr == "goal 'g2' is already paused\n"


def test_a_control_command_for_a_goal_no_one_leases_is_not_running(pg_store: str) -> None:
    for goal_id in ("g3", "nope"):  # crashed, unknown
        r = invoke("cancel", goal_id, "--store", pg_store)
        assert r.exit_code == 2, r.output
        assert one_error_line(r.stderr) == (
            f"goal {goal_id!r} is not running: no orchestrator holds its lease in the store "
            f"{pg_store}"
        )
    assert in_store(pg_store, lambda store: store.pending_controls(["g3", "nope"])) == []


def test_a_runner_that_does_not_answer_times_out_naming_it(
    pg_store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(control, "STORE_REPLY_TIMEOUT_S", 1.5)
    started_at = time.monotonic()
    r = invoke("resume", "g2", "--store", pg_store)
    assert r.exit_code == 2, r.output
    assert time.monotonic() - started_at < 10
    assert one_error_line(r.stderr) == (
        f"goal 'g2': its runner {ELSEWHERE} did not answer within 2 s "
        "(the request expired unanswered: it is not applied)"
    )
    # Expired: a runner that comes later never acts on it.
    assert in_store(pg_store, lambda store: store.pending_controls(["g2"])) == []


def test_a_run_on_postgres_is_seen_and_controlled_from_anywhere(
    tmp_path: Path, pg_url: str, processes: list[subprocess.Popen[str]]
) -> None:
    """A real ``nexo-trio run`` on the store: ``status`` names its host and process,
    a second run is refused with its lease, ``pause`` from another state dir goes through
    the store, ``cancel`` from its own through its socket."""
    s = make_setup(tmp_path, [SLEEPY, HI])
    goal = s.goal(budget={"max_turns": 4, "max_wall_time": "60s"})
    proc = start_run(processes, goal, s.config, "--store", pg_url, "--json")
    deadline = time.monotonic() + WAIT
    while True:
        kinds = [
            row["kind"]
            for row in json_lines(invoke("events", "g1", "--store", pg_url, "--json").stdout)
        ]
        if "sleeping" in kinds:
            break
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, kinds
        time.sleep(0.1)

    status = invoke("status", "--store", pg_url)
    assert status.exit_code == 0, status.output
    assert status.stdout.startswith(f"g1  running on {socket.gethostname()}:{proc.pid}:")

    other = tmp_path / "other-state"
    second = invoke("run", goal, "--config", s.config, "--state-dir", other, "--store", pg_url)
    assert second.exit_code == 2, second.output
    line = one_error_line(second.stderr)
    assert line.startswith(f"goal g1 is running on {socket.gethostname()}:{proc.pid}:"), line

    paused = run_process("pause", "g1", "--state-dir", other, "--store", pg_url)
    assert paused.returncode == 0, paused.stderr
    assert paused.stdout == "paused goal 'g1'\n"
    again = run_process("pause", "g1", "--state-dir", other, "--store", pg_url)
    assert again.returncode == 1, again.stderr
    assert "already paused" in again.stderr

    assert answered_controls(pg_url, "g1") == ["pause", "pause"]  # the store's way

    cancelled = run_process("cancel", "g1", "--config", s.config, "--store", pg_url)
    assert cancelled.returncode == 0, cancelled.stderr
    assert answered_controls(pg_url, "g1") == ["pause", "pause"]  # its socket, on this host
    _, stderr = proc.communicate(timeout=WAIT)
    assert proc.returncode == 130, stderr
    after = invoke("status", "--store", pg_url, "--json")
    assert single_json(after.stdout)["outcome"] == "cancelled"
