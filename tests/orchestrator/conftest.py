"""Fixtures of the orchestrator tests: fakes, configs and goals in a temporary directory, an
event recorder, and a process-leak guard that also knows every pid the fakes recorded (an
orphaned fake is no descendant of the test process any more)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import attrs
import psutil
import pytest
import trio

from nexo_trio.core.compact import CompactPolicy
from nexo_trio.core.goal import Budget, Criterion, Goal, ShellCheck
from nexo_trio.core.goal_events import GoalEvent, event_kind
from nexo_trio.core.settings import (
    ClaudeSettings,
    Config,
    PermissionTransport,
    ReplaySettings,
    SandboxSettings,
)
from nexo_trio.orchestrator.orchestrator import Orchestrator
from nexo_trio.store import MemoryStore, Store
from nexo_trio.testing.scenario import FakeClaude, Turn
from tests.engine.conftest import ProcessGuard, guard_processes, is_gone

FAKE_MAX_LIFETIME = 20.0
"""A ``hang`` step of a leaked fake ends by itself after this long."""

DONE_FILE = "ok.txt"
"""The file the default acceptance check wants in the workspace."""

E = TypeVar("E")


@attrs.define
class Harness:
    """Fakes, configs and goals of one test, all under ``root``."""

    root: Path
    guard: ProcessGuard
    fakes: list[FakeClaude] = attrs.Factory(list)
    transport: PermissionTransport = "mcp"
    """The permission transport of every config made (a test may run on both)."""

    def fake(self, *turns: Turn, name: str | None = None) -> FakeClaude:
        """A fake claude playing ``turns``, one per invocation, in a directory of its own."""
        directory = self.root / "fakes" / (name or f"fake{len(self.fakes) + 1}")
        fake = FakeClaude.create(directory, turns, max_lifetime=FAKE_MAX_LIFETIME)
        self.fakes.append(fake)
        return fake

    def config(self, fake: FakeClaude | None = None, **overrides: Any) -> Config:
        """A config running ``fake`` with short timeouts; ``overrides`` replace fields."""
        claude = ClaudeSettings()
        if fake is not None:
            claude = ClaudeSettings(binary=str(fake.binary), env=fake.env)
        config = Config(
            claude=claude,
            # Unconfined: the fake's invocation records give pids the tests watch, and
            # inside a sandbox's PID namespace they would not be ours. The sandbox has its
            # own tests (test_confinement.py).
            sandbox=SandboxSettings(mode="none"),
            turn_timeout_s=20.0,
            kill_grace_s=1.0,
            state_dir=str(self.root / "state"),
            workspace_root=str(self.root / "workspaces"),
            replay=ReplaySettings(max_retries=3),
            compact=CompactPolicy(),
        )
        config = attrs.evolve(config, **overrides)
        if self.transport != config.permission.transport:
            permission = attrs.evolve(config.permission, transport=self.transport)
            config = attrs.evolve(config, permission=permission)
        return config

    def goal(
        self,
        goal_id: str = "g1",
        *,
        acceptance: tuple[Criterion, ...] | None = None,
        **budget: Any,
    ) -> Goal:
        """A goal whose acceptance wants ``ok.txt`` in the workspace (unless given)."""
        checks = acceptance
        if checks is None:
            checks = (ShellCheck(command=f"test -f {DONE_FILE}", label="ok.txt exists"),)
        limits = {"max_turns": 6, "max_wall_time_s": 30.0, **budget}
        return Goal(
            id=goal_id,
            description=f"Create {DONE_FILE}.",
            acceptance=checks,
            budget=Budget(**limits),
        )

    def workspace(self, goal_id: str = "g1") -> Path:
        """Where a goal without an explicit workspace works."""
        return self.root / "workspaces" / goal_id

    def watch_fakes(self) -> None:
        """Let the guard watch every pid the fakes recorded."""
        for fake in self.fakes:
            for invocation in fake.invocations():
                self.guard.watch(int(invocation["pid"]))


@pytest.fixture
def procs() -> Iterator[ProcessGuard]:
    """A test that leaves a process behind fails, and whatever it left is killed."""
    yield from guard_processes()


@pytest.fixture
def h(tmp_path: Path, procs: ProcessGuard) -> Iterator[Harness]:
    """The harness of one test (the guard also watches every fake's recorded pids)."""
    harness = Harness(root=tmp_path, guard=procs)
    yield harness
    harness.watch_fakes()


class Recorder:
    """Every event of an orchestrator subscription, and waits for particular ones."""

    def __init__(self, channel: trio.MemoryReceiveChannel[GoalEvent]) -> None:
        self.channel = channel
        self.seen: list[GoalEvent] = []

    def events(self) -> list[GoalEvent]:
        """Every event so far, in order."""
        while True:
            try:
                self.seen.append(self.channel.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                return self.seen

    def of(self, cls: type[E]) -> list[E]:
        """The events of one type so far."""
        return [e for e in self.events() if isinstance(e, cls)]

    async def wait_for(
        self,
        cls: type[E],
        predicate: Callable[[E], bool] = lambda _: True,
        *,
        timeout: float = 10.0,
    ) -> E:
        """The first event of type ``cls`` matching ``predicate``, waiting for it if needed."""
        for event in self.of(cls):
            if predicate(event):
                return event
        with trio.fail_after(timeout):
            while True:
                received = await self.channel.receive()
                self.seen.append(received)
                if isinstance(received, cls) and predicate(received):
                    return received


@asynccontextmanager
async def orchestrator(
    config: Config, *, store: Store | None = None, sqlite: bool = False, **options: Any
) -> AsyncIterator[tuple[Orchestrator, Recorder]]:
    """An open Orchestrator and a recorder of its events. Its store is ``store``, else the
    SQLite file in the config's state dir when ``sqlite``, else a fresh MemoryStore."""
    if store is None and not sqlite:
        store = MemoryStore()
    async with Orchestrator(config, store=store, **options) as orch:
        yield orch, Recorder(orch.subscribe())


def kinds(events: Sequence[GoalEvent]) -> list[str]:
    """The snake_case kinds of events, in order."""
    return [event_kind(type(e)) for e in events]


async def wait_gone(pid: int, timeout: float = 5.0) -> None:
    """Wait (real time) until ``pid`` is gone; fail otherwise."""
    with trio.move_on_after(timeout):
        while not is_gone(pid):  # noqa: ASYNC110 - there is no event for another process
            await trio.sleep(0.02)
    assert is_gone(pid), f"process {pid} is still running: {psutil.Process(pid).cmdline()}"


async def wait_invocations(fake: FakeClaude, count: int, timeout: float = 10.0) -> None:
    """Wait (real time) until the fake has recorded ``count`` invocations."""
    with trio.fail_after(timeout):
        while len(fake.invocations()) < count:  # noqa: ASYNC110 - a file, not an event
            await trio.sleep(0.02)
