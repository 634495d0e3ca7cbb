"""A turn's process tree is walked down from its subreaper helper: what the turn leaves is
stopped however it detached, and no turn reads the rest of the host's processes, except when
the helper was killed (then the turn marker and pipes find the strays)."""

from __future__ import annotations

import os
import signal
from collections.abc import Sequence
from pathlib import Path

import psutil
import pytest
import trio

from nexo_trio.core.events import Event
from nexo_trio.core.outcome import TurnKind
from nexo_trio.core.turn import TurnState
from nexo_trio.engine import process_tree, run_turn
from nexo_trio.engine.process_tree import children_files
from nexo_trio.testing.scenario import exit_with, hang, init, result, spawn, text, turn
from tests.engine.conftest import FakeClaudeFactory, ProcessGuard, is_gone

pytestmark = pytest.mark.skipif(not children_files(), reason="needs /proc/PID/task/TID/children")


@pytest.fixture
def host_scans(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records every listing of ``/proc`` itself (a pass over the host's processes) and
    every search for strays."""
    scans: list[str] = []
    real_listdir = os.listdir
    real_find_strays = process_tree.find_strays

    def listdir(path: str | os.PathLike[str] = ".") -> list[str]:
        if os.fspath(path).rstrip("/") == "/proc":
            scans.append("listdir /proc")
        return real_listdir(path)

    def find_strays(marker: bytes, pipes: set[str], *, exclude: set[int]) -> list[int]:
        scans.append("find_strays")
        return real_find_strays(marker, pipes, exclude=exclude)

    monkeypatch.setattr(os, "listdir", listdir)
    monkeypatch.setattr(process_tree, "find_strays", find_strays)
    return scans


async def test_a_daemon_that_detached_and_scrubbed_its_environment_is_stopped_without_a_scan(
    make_fake: FakeClaudeFactory, procs: ProcessGuard, tmp_path: Path, host_scans: list[str]
) -> None:
    # A double fork into a session of its own, no marker in its environment, none of the
    # turn's pipes: only the subreaper (to which it is re-parented) still ties it to the turn.
    pidfile = procs.pidfile(tmp_path / "daemon.pid")
    script = f"setsid env -i sleep 30 </dev/null >/dev/null 2>&1 & echo $! > {pidfile}"
    fake = make_fake(turn(init(), spawn(("sh", "-c", script)), result("Done."), exit_with(0)))
    with trio.fail_after(10):
        res = await run_turn(fake.command("go"), timeout=30, kill_grace=0.3)
    assert res.outcome.kind is TurnKind.CLAIMED_DONE
    assert any("surviving descendant" in a for a in res.stop_actions), res.stop_actions
    assert is_gone(procs.read_pid(pidfile))
    assert host_scans == []


async def test_a_plain_turn_reads_none_of_the_hosts_processes(
    make_fake: FakeClaudeFactory, host_scans: list[str]
) -> None:
    fake = make_fake(turn(init(), text("hello"), result("Done."), exit_with(0)))
    with trio.fail_after(10):
        res = await run_turn(fake.command("go"), timeout=30, kill_grace=0.3)
    assert res.outcome.kind is TurnKind.CLAIMED_DONE
    assert res.stop_actions == ()
    assert host_scans == []


async def test_strays_of_a_turn_whose_helper_was_killed_are_found_by_the_marker(
    make_fake: FakeClaudeFactory, procs: ProcessGuard, tmp_path: Path, host_scans: list[str]
) -> None:
    pidfile = procs.pidfile(tmp_path / "grandchild.pid")
    fake = make_fake(turn(init(), spawn(("sleep", "30"), pidfile=pidfile), text("ready"), hang()))
    helper: list[int] = []

    async def kill_the_helper(state: TurnState, batch: Sequence[Event]) -> None:
        if not helper and state.last_text == "ready" and state.pid is not None:
            helper.append(psutil.Process(state.pid).ppid())
            os.kill(helper[0], signal.SIGKILL)

    with trio.fail_after(10):
        res = await run_turn(
            fake.command("go"), timeout=30, kill_grace=0.3, on_events=kill_the_helper
        )
    assert helper
    assert helper[0] != os.getpid()
    grandchild = procs.read_pid(pidfile)
    # Its subreaper gone, the grandchild is init's: the helper can't vouch for the tree, so
    # the host's processes are searched for the turn's marker.
    assert "find_strays" in host_scans
    assert is_gone(grandchild)
    assert any("surviving descendant" in a for a in res.stop_actions), res.stop_actions
