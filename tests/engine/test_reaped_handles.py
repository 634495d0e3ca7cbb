"""The cheap parts of the subreaper helper (``engine/reaped.py``, ``engine/reaper.py``): the
helper is awaited without being reaped and reaped through one pidfd; the command is held by a
pidfd kept only while it is the helper's child; the helper walks its own tree through the
children files (the same tree as its fallback over all of ``/proc``); and the end of the
command's output comes no earlier than the report of its exit."""

from __future__ import annotations

import os
import signal
import subprocess

import pytest
import trio

from nexo_trio.engine import reaper
from nexo_trio.engine.process_tree import children_files
from nexo_trio.engine.reaped import Reaped, _Command
from tests.engine.conftest import ProcessGuard, is_gone


async def _end(reaped: Reaped) -> None:
    with trio.CancelScope(shield=True):
        await reaped.close()
        for stream in (reaped.stdin, reaped.stdout, reaped.stderr):
            if stream is not None:
                await stream.aclose()
        reaped.release()


async def test_the_helper_is_awaited_unreaped_then_reaped(procs: ProcessGuard) -> None:
    reaped = await Reaped.start(["true"], cwd=None, env=None, grace=1.0, session=True)
    try:
        await reaped.wait_started()
        assert await reaped.wait() == 0
        with trio.fail_after(10):
            await reaped.helper.wait_exited()
        # Exited, not reaped: its pid (and group id) is still reserved, and it says how.
        assert reaped.helper.returncode is None
        assert reaped.helper.exit_status() == 0
        assert reaped.helper.exit_status() == 0  # still not reaped by asking
        assert await reaped.helper.wait() == 0
        assert reaped.helper.poll() == 0
    finally:
        await _end(reaped)
    assert reaped.status_done.is_set()
    assert reaped.survivors == 0


async def test_the_command_handle_is_kept_only_for_the_helpers_child(
    procs: ProcessGuard,
) -> None:
    child = await trio.lowlevel.open_process(["sleep", "30"])
    try:
        # Our child, not the (pretended) helper's: no handle.
        assert _Command.open(child.pid, parent=os.getppid()) is None
        handle = _Command.open(child.pid, parent=os.getpid())
        assert handle is not None
        try:
            assert handle.alive()
            assert handle.send_signal(signal.SIGKILL)
            with trio.fail_after(10):
                await handle.wait_gone()
            assert not handle.alive()  # a zombie is not alive
        finally:
            handle.close()
            handle.close()  # idempotent
    finally:
        child.kill()
        await child.wait()
    assert _Command.open(child.pid, parent=os.getpid()) is None  # reaped: gone


async def test_the_output_ends_with_the_exit_report(procs: ProcessGuard) -> None:
    # The command closes its stdout and stderr at once and exits later: the pipes end only
    # once its exit has been reported (the helper held them until then).
    script = "exec >&- 2>&-; sleep 0.5"
    reaped = await Reaped.start(
        ["sh", "-c", script], cwd=None, env=None, grace=1.0, session=True, linger=True
    )
    try:
        await reaped.wait_started()
        assert reaped.stdout is not None
        with trio.fail_after(10):
            assert await reaped.stdout.receive_some(4096) == b""
        # The report is there by now (the command ran 0.5 s after closing its output).
        with trio.fail_after(0.3):
            await reaped.wait_reported()
        assert await reaped.wait() == 0
    finally:
        await _end(reaped)


@pytest.mark.skipif(not children_files(), reason="the kernel has no children files")
def test_the_helpers_walk_finds_what_the_whole_proc_pass_finds(procs: ProcessGuard) -> None:
    # A child with a grandchild of its own (a shell and its background sleep).
    script = "sleep 30 & echo $!; wait"
    child = subprocess.Popen(["sh", "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        grandchild = int(child.stdout.readline())
        me = os.getpid()
        walked = {(pid, parent) for pid, parent, alive in reaper._walk_children(me) if alive}
        assert {(child.pid, me), (grandchild, child.pid)} <= walked
        helper = object.__new__(reaper.Reaper)  # its walk only: no signal handlers set
        helper.me = me
        helper.children_files = False  # the fallback: one pass over all of /proc
        scanned = {(pid, parent) for pid, parent, alive in helper.descendants() if alive}
        assert {(child.pid, me), (grandchild, child.pid)} <= scanned
        helper.children_files = True
        assert {(pid, parent) for pid, parent, alive in helper.descendants() if alive} == walked
        os.kill(grandchild, signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
        if child.stdout is not None:
            child.stdout.close()
    assert is_gone(child.pid)
    assert child.pid not in {pid for pid, _, alive in reaper._walk_children(me) if alive}
