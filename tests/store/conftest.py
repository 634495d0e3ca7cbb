"""Fixtures of the store tests: a fake clock and each Store implementation."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import attrs
import pytest

from nexo_trio.store import MemoryStore, Store, open_sqlite_store


@attrs.define
class FakeClock:
    """A clock that moves only when told to."""

    now: float = 1_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move the clock forward."""
        self.now += seconds


def open_fds() -> int:
    """How many file descriptors this process has open."""
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def clock() -> FakeClock:
    """A fake clock, shared with the store under test."""
    return FakeClock()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """Where a SQLite store lives; the parent directory does not exist yet."""
    return tmp_path / "state" / "nexo.db"


@pytest.fixture(params=["memory", "sqlite"])
async def store(
    request: pytest.FixtureRequest, clock: FakeClock, db_path: Path
) -> AsyncIterator[Store]:
    """Each Store implementation, on the fake clock."""
    if request.param == "memory":
        yield MemoryStore(clock=clock)
    else:
        async with open_sqlite_store(db_path, clock=clock) as sqlite_store:
            yield sqlite_store
