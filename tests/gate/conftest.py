"""Fixtures of the gate tests: a short socket directory, the stub orchestrator, and the
engine tests' process-leak guard (no MCP server may outlive its test)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from tests.engine.conftest import ProcessGuard, guard_processes
from tests.gate.helpers import StubOrchestrator, short_tempdir


@pytest.fixture(autouse=True)
def procs() -> Iterator[ProcessGuard]:
    """Fail a test that leaves a process behind (and kill what it left)."""
    yield from guard_processes()


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    """A directory with a short path, for Unix sockets."""
    with short_tempdir() as path:
        yield path


@pytest.fixture
async def stub(sock_dir: Path, nursery: trio.Nursery) -> StubOrchestrator:
    """A stub orchestrator listening on ``sock_dir/gate.sock`` (allows by default)."""
    orchestrator = StubOrchestrator(sock_dir / "gate.sock")
    await nursery.start(orchestrator.serve)
    return orchestrator
