"""Fixtures of the engine tests: fakes that can't outlive a test, and a process-leak guard."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import attrs
import psutil
import pytest

from nexo_trio.testing.scenario import FakeClaude, Turn

FAKE_MAX_LIFETIME = 20.0
"""A ``hang`` step of a leaked fake ends by itself after this long."""


def is_gone(pid: int) -> bool:
    """The process has ended: no such pid, or only a zombie is left of it."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def live_descendants() -> dict[int, psutil.Process]:
    """This test process's descendants that are running (zombies left out)."""
    found: dict[int, psutil.Process] = {}
    for proc in psutil.Process().children(recursive=True):
        try:
            if proc.status() != psutil.STATUS_ZOMBIE:
                found[proc.pid] = proc
        except psutil.NoSuchProcess:
            continue
    return found


@attrs.define
class ProcessGuard:
    """Knows which processes a test started, and kills whatever of them is left."""

    started_at: float
    before: frozenset[int]
    pidfiles: list[Path] = attrs.Factory(list)
    pids: list[int] = attrs.Factory(list)

    def pidfile(self, path: Path) -> Path:
        """Watch the pid a process (say a grandchild in its own session) will write here."""
        self.pidfiles.append(path)
        return path

    def watch(self, pid: int) -> None:
        """Watch one pid."""
        self.pids.append(pid)

    def read_pid(self, path: Path) -> int:
        """The pid written to ``path``."""
        return int(path.read_text().strip())

    def new_descendants(self) -> list[psutil.Process]:
        """Running descendants of the test process that were not there before the test."""
        return [p for pid, p in live_descendants().items() if pid not in self.before]

    def leftovers(self) -> list[psutil.Process]:
        """Every watched or new process still running."""
        found = {p.pid: p for p in self.new_descendants()}
        pids = list(self.pids)
        pids += [self.read_pid(p) for p in self.pidfiles if p.exists() and p.read_text().strip()]
        for pid in pids:
            try:
                proc = psutil.Process(pid)
                # Guard against pid reuse: only what was born during the test is ours.
                if proc.create_time() >= self.started_at - 1 and not is_gone(pid):
                    found[pid] = proc
            except psutil.NoSuchProcess:
                continue
        return list(found.values())

    def kill_leftovers(self) -> list[str]:
        """SIGKILL every leftover; describe what was killed."""
        killed: list[str] = []
        procs = self.leftovers()
        for proc in procs:
            try:
                killed.append(f"{proc.pid} {proc.cmdline()}")
                proc.kill()
            except psutil.Error:
                continue
        psutil.wait_procs(procs, timeout=2)
        return killed


def guard_processes() -> Iterator[ProcessGuard]:
    """The body of a ``procs`` fixture: a test that leaves a process behind fails, and
    whatever it left is killed (also when the test failed for another reason)."""
    guard = ProcessGuard(started_at=time.time(), before=frozenset(live_descendants()))
    yield guard
    # A process that is still being reaped by the kernel gets a moment.
    deadline = time.monotonic() + 2.0
    while guard.leftovers() and time.monotonic() < deadline:
        time.sleep(0.02)
    killed = guard.kill_leftovers()
    assert not killed, f"processes left behind: {killed}"


@pytest.fixture(autouse=True)
def procs() -> Iterator[ProcessGuard]:
    """A process-leak guard for every engine test."""
    yield from guard_processes()


@pytest.fixture
def make_fake(tmp_path: Path) -> FakeClaudeFactory:
    """Install fakes under ``tmp_path`` (a fresh directory for each)."""
    return FakeClaudeFactory(tmp_path)


@attrs.define
class FakeClaudeFactory:
    """Makes a :class:`FakeClaude` in a new directory, with a short ``hang``."""

    root: Path
    count: int = 0

    def __call__(self, *turns: Turn, name: str | None = None) -> FakeClaude:
        """A fake playing ``turns``, one per invocation."""
        self.count += 1
        directory = self.root / (name or f"fake{self.count}")
        return FakeClaude.create(directory, turns, max_lifetime=FAKE_MAX_LIFETIME)


def open_fds() -> int:
    """How many file descriptors this process has open."""
    return len(os.listdir("/proc/self/fd"))
