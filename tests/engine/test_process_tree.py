"""``ProcessTree``: remembering a CLI's descendants, including the ones that escape it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import psutil
import pytest
import trio

from nexo_trio.engine.process_tree import (
    ProcessTree,
    children,
    children_files,
    descendants,
    find_strays,
)
from tests.engine.conftest import ProcessGuard, is_gone

NO_MARKER = "NEXO_TRIO_TURN=no-such-turn"

# A middle process that starts a grandchild in its own session, prints its pid, and waits
# for a line on stdin (or exits at once with "exit" as its argument).
MIDDLE = """
import subprocess, sys
child = subprocess.Popen(
    ["sleep", "30"], start_new_session=True, stdin=subprocess.DEVNULL,
    stdout=int(sys.argv[1]) if len(sys.argv) > 1 else subprocess.DEVNULL,
    pass_fds=[int(sys.argv[1])] if len(sys.argv) > 1 else [],
)
print(child.pid, flush=True)
sys.stdin.readline()
"""


def _start_middle(
    stdout_fd: int | None = None, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    extra = [] if stdout_fd is None else [str(stdout_fd)]
    return subprocess.Popen(
        [sys.executable, "-c", MIDDLE, *extra],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        pass_fds=[] if stdout_fd is None else [stdout_fd],
        env=env,
    )


@pytest.fixture
def middle(procs: ProcessGuard) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """A running middle process and the pid of its grandchild (in a session of its own)."""
    proc = _start_middle()
    assert proc.stdout is not None
    grandchild = int(proc.stdout.readline())
    procs.watch(grandchild)
    try:
        yield proc, grandchild
    finally:
        proc.kill()
        proc.wait()
        assert proc.stdin is not None
        assert proc.stdout is not None
        proc.stdin.close()
        proc.stdout.close()


async def test_snapshot_remembers_a_grandchild_that_outlives_its_parent(
    middle: tuple[subprocess.Popen[bytes], int],
) -> None:
    proc, grandchild = middle
    tree = ProcessTree(proc.pid)
    tree.snapshot()
    assert grandchild in [p.pid for p in tree.known_descendants]
    assert psutil.Process(grandchild).ppid() == proc.pid

    proc.kill()
    proc.wait()
    # Orphaned: no longer a descendant of anything we know, but remembered.
    tree.snapshot()
    assert [p.pid for p in tree.alive_descendants()] == [grandchild]
    assert not tree.signal_root_group(signal.SIGTERM)  # the root's group is gone

    assert tree.signal_descendants(signal.SIGKILL) == 1
    assert await tree.wait_descendants_gone(5.0) == []
    assert is_gone(grandchild)
    assert tree.signal_descendants(signal.SIGKILL) == 0


async def test_wait_descendants_gone_reports_survivors(
    middle: tuple[subprocess.Popen[bytes], int],
) -> None:
    proc, grandchild = middle
    tree = ProcessTree(proc.pid)
    tree.snapshot()
    survivors = await tree.wait_descendants_gone(0.05)
    assert [p.pid for p in survivors] == [grandchild]
    tree.signal_descendants(signal.SIGKILL)
    assert await tree.wait_descendants_gone(5.0) == []


async def test_a_pipe_holder_that_escaped_the_tree_is_adopted(procs: ProcessGuard) -> None:
    read_end, write_end = os.pipe()
    try:
        proc = _start_middle(write_end)
        os.close(write_end)
        write_end = -1
        assert proc.stdout is not None
        assert proc.stdin is not None
        grandchild = int(proc.stdout.readline())
        procs.watch(grandchild)
        # The parent is gone before anyone looked: the tree never saw the grandchild.
        tree = ProcessTree(proc.pid)
        proc.stdin.close()
        proc.wait()
        proc.stdout.close()
        tree.snapshot()
        assert tree.known_descendants == []

        assert tree.adopt_strays(NO_MARKER, [read_end]) == 1
        assert [p.pid for p in tree.alive_descendants()] == [grandchild]
        assert tree.adopt_strays(NO_MARKER, [read_end]) == 0  # already known
        tree.signal_descendants(signal.SIGKILL)
        assert await tree.wait_descendants_gone(5.0) == []
        assert os.read(read_end, 1) == b""  # nobody holds the pipe any more
    finally:
        os.close(read_end)
        if write_end >= 0:
            os.close(write_end)


async def test_a_detached_stray_is_found_by_the_turn_marker_in_its_environment(
    procs: ProcessGuard,
) -> None:
    marker = "NEXO_TRIO_TURN=test-marker-1234"
    proc = _start_middle(env={**os.environ, "NEXO_TRIO_TURN": "test-marker-1234"})
    assert proc.stdout is not None
    assert proc.stdin is not None
    grandchild = int(proc.stdout.readline())
    procs.watch(grandchild)
    tree = ProcessTree(proc.pid)
    proc.stdin.close()
    proc.wait()
    proc.stdout.close()
    tree.snapshot()
    assert tree.known_descendants == []  # it holds none of our pipes and its parent is gone
    assert tree.adopt_strays("NEXO_TRIO_TURN=other-turn", []) == 0
    assert tree.adopt_strays(marker, []) == 1
    assert [p.pid for p in tree.alive_descendants()] == [grandchild]
    tree.signal_descendants(signal.SIGKILL)
    assert await tree.wait_descendants_gone(5.0) == []


def test_pipe_holders_only_match_the_given_pipe_and_skip_excluded_pids() -> None:
    read_end, write_end = os.pipe()
    other_read, other_write = os.pipe()
    try:
        target = os.readlink(f"/proc/self/fd/{read_end}")
        assert find_strays(b"-", {target}, exclude=set()) == [os.getpid()]
        assert find_strays(b"-", {target}, exclude={os.getpid()}) == []
        tree = ProcessTree(os.getpid())
        assert tree.adopt_strays(NO_MARKER, [other_read]) == 0  # we hold it, and we are excluded
    finally:
        for fd in (read_end, write_end, other_read, other_write):
            os.close(fd)


def test_adopting_ignores_what_is_not_a_pipe() -> None:
    tree = ProcessTree(os.getpid())
    with open(__file__, "rb") as f:
        assert tree.adopt_strays(NO_MARKER, [f.fileno()]) == 0
    assert tree.adopt_strays(NO_MARKER, [-1, 10_000]) == 0


def test_zombies_count_as_gone(procs: ProcessGuard) -> None:
    child = subprocess.Popen(["sleep", "30"])
    try:
        tree = ProcessTree(os.getpid())
        tree.snapshot()
        assert child.pid in [p.pid for p in tree.alive_descendants()]
        os.kill(child.pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while psutil.Process(child.pid).status() != psutil.STATUS_ZOMBIE:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert child.pid not in [p.pid for p in tree.alive_descendants()]
    finally:
        child.kill()
        child.wait()


def test_a_tree_of_a_process_that_does_not_exist() -> None:
    proc = subprocess.Popen(["true"])
    proc.wait()
    tree = ProcessTree(proc.pid)
    tree.snapshot()
    assert tree.known_descendants == []
    assert tree.signal_descendants(signal.SIGKILL) == 0


# --------------------------------------------------------------------------- the walk down


CHAIN = """
import subprocess, sys
depth = int(sys.argv[1])
if depth:
    child = subprocess.Popen([sys.executable, "-c", sys.argv[2], str(depth - 1), sys.argv[2]])
    print(child.pid, flush=True)
else:
    print("leaf", flush=True)
sys.stdin.readline()
"""


@pytest.fixture
def chain(procs: ProcessGuard) -> Iterator[tuple[subprocess.Popen[bytes], list[int]]]:
    """A child with a child with a child (each waits on the same stdin, the pipe's read end
    inherited), and the pids below the first, in order."""
    proc = subprocess.Popen(
        [sys.executable, "-c", CHAIN, "2", CHAIN], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert proc.stdout is not None
    assert proc.stdin is not None
    below = [int(proc.stdout.readline()), int(proc.stdout.readline())]
    assert proc.stdout.readline() == b"leaf\n"
    for pid in below:
        procs.watch(pid)
    try:
        yield proc, below
    finally:
        proc.stdin.close()  # each of them reads end of file and exits
        proc.wait()
        proc.stdout.close()
        for pid in below:
            with contextlib.suppress(psutil.Error):
                psutil.Process(pid).wait(5)


def test_the_walk_finds_every_descendant_parents_first(
    chain: tuple[subprocess.Popen[bytes], list[int]],
) -> None:
    proc, below = chain
    assert children_files()  # Linux 3.5+: what the rest of this file relies on
    assert children(proc.pid) == below[:1]
    assert descendants(proc.pid) == below
    assert proc.pid in (children(os.getpid()) or [])
    assert descendants(below[-1]) == []


def test_the_walk_of_a_process_that_is_gone_finds_nothing() -> None:
    proc = subprocess.Popen(["true"])
    proc.wait()
    assert children(proc.pid) == []
    assert descendants(proc.pid) == []


def test_a_reserved_root_is_walked_without_a_handle_on_it(
    chain: tuple[subprocess.Popen[bytes], list[int]],
) -> None:
    proc, below = chain
    tree = ProcessTree(proc.pid, ignore=below[:1], reserved=True)
    tree.snapshot()
    # The ignored pid is walked through, not taken.
    assert [p.pid for p in tree.known_descendants] == below[1:]


async def test_a_childless_root_is_collected_without_a_thread(
    monkeypatch: pytest.MonkeyPatch, middle: tuple[subprocess.Popen[bytes], int]
) -> None:
    proc, grandchild = middle
    threads: list[object] = []
    real = trio.to_thread.run_sync

    async def counted(fn: Callable[..., object], *args: object) -> object:
        threads.append(fn)
        return await real(fn, *args)

    monkeypatch.setattr(trio.to_thread, "run_sync", counted)
    # The middle process's only child is ignored: nothing to walk, and no thread for it.
    assert await ProcessTree(proc.pid, ignore={grandchild}, reserved=True).collect() == 0
    assert threads == []
    # With a child to walk down from, the walk goes to a worker thread.
    tree = ProcessTree(proc.pid, reserved=True)
    assert await tree.collect() == 1
    assert len(threads) == 1
    await _kill_all(tree)


async def _kill_all(tree: ProcessTree) -> None:
    tree.signal_descendants(signal.SIGKILL)
    assert await tree.wait_descendants_gone(5.0) == []


async def test_a_collection_without_a_marker_reads_no_other_process(
    monkeypatch: pytest.MonkeyPatch, middle: tuple[subprocess.Popen[bytes], int]
) -> None:
    proc, grandchild = middle
    read: list[int] = []
    real_open = open

    def recording_open(file: Any, *args: Any, **kwargs: Any) -> Any:
        parts = str(file).split("/")
        if str(file).startswith("/proc/") and parts[2].isdigit():
            read.append(int(parts[2]))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr("builtins.open", recording_open)
    tree = ProcessTree(proc.pid, reserved=True)
    assert await tree.collect() == 1
    assert set(read) <= {proc.pid, grandchild}  # the tree's own, none of the host's others
    assert [p.pid for p in tree.known_descendants] == [grandchild]
    await _kill_all(tree)
