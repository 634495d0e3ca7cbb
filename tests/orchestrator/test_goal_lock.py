"""A goal runs in at most one process: the goal's lock (``orchestrator/goal_lock.py``), held
by the process running it, dropped by the kernel when that process dies however it dies;
and what a crashed run's turn left running, stopped by pid *and* start time, or by marker
(``engine/leftovers.py``)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from nexo_trio.core.goal_events import GoalCompleted, GoalStarted
from nexo_trio.core.goal_lock import LockHolder, lock_record, parse_lock_record
from nexo_trio.core.processes import ProcessIdentity
from nexo_trio.engine.leftovers import find_leftovers, process_identity, stop_leftovers
from nexo_trio.engine.supervisor import TURN_MARKER_VAR
from nexo_trio.orchestrator.goal_lock import (
    GoalLocked,
    goal_runner,
    lock_path,
    try_acquire,
)
from nexo_trio.store import MemoryStore
from nexo_trio.testing.scenario import bash, init, result, sleep, text, turn

from .conftest import DONE_FILE, Harness, orchestrator, wait_gone

MESSAGE = re.compile(r"goal g1 is running in process (\d+) since \d{4}-\d\d-\d\d \d\d:\d\d:\d\d")

HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from nexo_trio.orchestrator.goal_lock import try_acquire
    lock = try_acquire(Path(sys.argv[1]), sys.argv[2])
    print("held", flush=True)
    time.sleep(60)
    """
)
"""A process that takes a goal's lock and keeps it (until it is killed)."""


@pytest.fixture
def holders() -> Iterator[list[subprocess.Popen[str]]]:
    """Lock-holding processes a test started: killed at the end."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def hold_elsewhere(
    holders: list[subprocess.Popen[str]], state_dir: Path, goal_id: str = "g1"
) -> subprocess.Popen[str]:
    """Another process holding the goal's lock (returns once it holds it)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(state_dir), goal_id],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    holders.append(proc)
    assert proc.stdout is not None
    assert proc.stdout.readline() == "held\n", proc.communicate()
    return proc


# --------------------------------------------------------------------------- the lock


def test_a_held_lock_names_its_holder_until_released(tmp_path: Path) -> None:
    before = time.time()
    lock = try_acquire(tmp_path, "g1")
    holder = goal_runner(tmp_path, "g1")
    assert holder is not None
    assert holder.pid == os.getpid()
    assert holder.process == process_identity(os.getpid())
    assert holder.since is not None
    assert before <= holder.since <= time.time()
    # A second open of the file is a second holder, even in this process: refused.
    with pytest.raises(GoalLocked) as refused:
        try_acquire(tmp_path, "g1")
    assert isinstance(refused.value, ValueError)
    found = MESSAGE.fullmatch(str(refused.value))
    assert found is not None, str(refused.value)
    assert int(found[1]) == os.getpid()
    assert try_acquire(tmp_path, "g2").held  # another goal's lock is another lock
    lock.release_sync()
    assert not lock.held
    assert goal_runner(tmp_path, "g1") is None
    again = try_acquire(tmp_path, "g1")  # the file stays; the lock is free
    assert goal_runner(tmp_path, "g1") is not None
    again.release_sync()
    assert (lock_path(tmp_path, "g1").stat().st_mode & 0o777) == 0o600
    assert (lock_path(tmp_path, "g1").parent.stat().st_mode & 0o777) == 0o700


def test_a_released_lock_is_free_while_a_child_still_shares_its_file(tmp_path: Path) -> None:
    """A child forked as the lock is let go (a turn's spawn, between its fork and its exec)
    shares the lock's open file; the release frees the lock anyway, not at that child's
    exec. The child here keeps the descriptor for as long as it runs."""
    lock = try_acquire(tmp_path, "g1")
    fd = lock._fd
    assert fd is not None
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"],
        stdin=subprocess.PIPE,
        pass_fds=(fd,),
    )
    try:
        lock.release_sync()
        assert goal_runner(tmp_path, "g1") is None
        try_acquire(tmp_path, "g1").release_sync()
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(timeout=10)


def test_a_goal_never_locked_has_no_runner_and_the_probe_creates_nothing(tmp_path: Path) -> None:
    assert goal_runner(tmp_path / "state", "g1") is None
    assert not (tmp_path / "state").exists()


def test_a_holder_killed_with_sigkill_leaves_no_lock(
    tmp_path: Path, holders: list[subprocess.Popen[str]]
) -> None:
    proc = hold_elsewhere(holders, tmp_path)
    holder = goal_runner(tmp_path, "g1")
    assert holder is not None
    assert holder.pid == proc.pid
    with pytest.raises(GoalLocked, match=rf"^goal g1 is running in process {proc.pid} since "):
        try_acquire(tmp_path, "g1")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    # Its record is still in the file, but the kernel dropped its lock: nobody runs it.
    assert parse_lock_record(lock_path(tmp_path, "g1").read_text()) == holder
    assert goal_runner(tmp_path, "g1") is None
    lock = try_acquire(tmp_path, "g1")
    assert lock.holder.pid == os.getpid()
    assert parse_lock_record(lock_path(tmp_path, "g1").read_text()) == lock.holder
    lock.release_sync()


def test_a_record_naming_a_live_process_is_not_believed_without_the_lock(tmp_path: Path) -> None:
    """A record left in the file (here: naming this very process) names nobody while the
    lock is free."""
    me = process_identity(os.getpid())
    assert me is not None
    path = lock_path(tmp_path, "g1")
    path.parent.mkdir(parents=True)
    path.write_text(lock_record(LockHolder(process=me, since=1.0)))
    assert goal_runner(tmp_path, "g1") is None
    lock = try_acquire(tmp_path, "g1")
    assert lock.holder.since != 1.0  # rewritten by the new holder
    lock.release_sync()


# --------------------------------------------------------------------------- the orchestrator


async def test_a_goal_another_process_runs_is_refused_and_nothing_is_recorded(
    h: Harness, holders: list[subprocess.Popen[str]]
) -> None:
    config = h.config(h.fake())
    state_dir = Path(config.state_dir)
    proc = await trio.to_thread.run_sync(hold_elsewhere, holders, state_dir)
    store = MemoryStore()
    async with orchestrator(config, store=store) as (orch, _):
        with pytest.raises(GoalLocked, match=rf"^goal g1 is running in process {proc.pid} "):
            await orch.check_goal(h.goal())
        with pytest.raises(GoalLocked) as refused:
            await orch.start_goal(h.goal())
        assert refused.value.holder.pid == proc.pid
        assert orch.running() == []
        assert await store.events("g1") == []
        assert not h.workspace().exists()  # refused before its workspace was made


async def test_the_lock_is_held_while_the_goal_runs_and_released_once_it_ended(h: Harness) -> None:
    fake = h.fake(
        turn(init(), bash(f"touch {DONE_FILE}"), sleep(0.5), text("Done."), result("Done."))
    )
    config = h.config(fake)
    state_dir = Path(config.state_dir)
    async with orchestrator(config) as (orch, rec):
        handle = await orch.start_goal(h.goal())
        await rec.wait_for(GoalStarted)
        holder = await trio.to_thread.run_sync(goal_runner, state_dir, "g1")
        assert holder is not None
        assert holder.pid == os.getpid()
        outcome = await handle.wait()
        # Its end is recorded before the lock is let go: the next run folds it.
        assert rec.of(GoalCompleted)
        assert await trio.to_thread.run_sync(goal_runner, state_dir, "g1") is None
        assert outcome.kind.value == "done"


async def test_a_goal_cancelled_before_its_run_began_releases_its_lock(h: Harness) -> None:
    fake = h.fake(turn(init(), sleep(30)))
    config = h.config(fake, max_concurrent_goals=1)
    state_dir = Path(config.state_dir)
    async with orchestrator(config) as (orch, _):
        first = await orch.start_goal(h.goal("g0"))
        waiting = await orch.start_goal(h.goal())  # waits for the one slot
        assert await trio.to_thread.run_sync(goal_runner, state_dir, "g1") is not None
        assert await orch.cancel_goal("g1")
        await waiting.wait()
        assert await trio.to_thread.run_sync(goal_runner, state_dir, "g1") is None
        assert await orch.cancel_goal("g0")
        await first.wait()
    assert await trio.to_thread.run_sync(goal_runner, state_dir, "g0") is None


# --------------------------------------------------------------------------- leftovers


def spawn_marked(marker: str, *, ignore_sigterm: bool = False) -> subprocess.Popen[bytes]:
    """A process with the turn marker in its environment, in a session of its own."""
    script = "trap '' TERM; exec sleep 60" if ignore_sigterm else "exec sleep 60"
    return subprocess.Popen(
        ["/bin/sh", "-c", script],
        env={**os.environ, TURN_MARKER_VAR: marker},
        start_new_session=True,
    )


@pytest.fixture
def spawned() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


async def test_a_recorded_process_is_stopped_only_when_pid_and_start_time_match(
    spawned: list[subprocess.Popen[bytes]],
) -> None:
    proc = spawn_marked("not-asked-for")
    spawned.append(proc)
    comm = Path(f"/proc/{proc.pid}/comm")
    with trio.fail_after(5):  # the shell has exec'd sleep: its name is the one reported
        while (await trio.to_thread.run_sync(comm.read_text)).strip() != "sleep":  # noqa: ASYNC110
            await trio.sleep(0.01)
    identity = await trio.to_thread.run_sync(process_identity, proc.pid)
    assert identity is not None
    # The same pid, another start time: a reused pid. Never taken.
    reused = ProcessIdentity(pid=proc.pid, start=identity.start + 1, boot=identity.boot)
    assert await stop_leftovers(reused, None, grace=1.0) == ()
    other_boot = ProcessIdentity(pid=proc.pid, start=identity.start, boot="another-boot")
    assert await stop_leftovers(other_boot, None, grace=1.0) == ()
    assert proc.poll() is None
    stopped = await stop_leftovers(identity, None, grace=1.0)
    assert stopped == (f"{proc.pid} sleep",)
    await wait_gone(proc.pid)


async def test_processes_holding_the_turns_marker_are_stopped_even_ignoring_sigterm(
    spawned: list[subprocess.Popen[bytes]],
) -> None:
    marker = "test-leftovers-" + os.urandom(6).hex()
    polite, stubborn = spawn_marked(marker), spawn_marked(marker, ignore_sigterm=True)
    unrelated = spawn_marked("another-turn")
    spawned += [polite, stubborn, unrelated]
    # The marked processes are found once their environment is there to read.
    with trio.fail_after(5):
        while len(await trio.to_thread.run_sync(find_leftovers, None, marker)) < 2:  # noqa: ASYNC110
            await trio.sleep(0.02)
    started = trio.current_time()
    stopped = await stop_leftovers(None, marker, grace=0.5)
    assert sorted(int(s.split()[0]) for s in stopped) == sorted([polite.pid, stubborn.pid])
    assert trio.current_time() - started < 5
    await wait_gone(polite.pid)
    await wait_gone(stubborn.pid)
    assert unrelated.poll() is None
    assert await stop_leftovers(None, marker, grace=0.5) == ()  # nothing left: a no-op


async def test_nothing_recorded_means_nothing_is_looked_for() -> None:
    assert await stop_leftovers(None, None, grace=1.0) == ()
    me = await trio.to_thread.run_sync(process_identity, os.getpid())
    assert await stop_leftovers(me, None, grace=1.0) == ()  # never this process
