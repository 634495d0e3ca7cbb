"""Fixtures of the store tests: a fake clock and each Store implementation."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import attrs
import pytest

from nexo_trio.store import MemoryStore, Store, open_sqlite_store
from nexo_trio.store.base import SharedStore


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


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def store(
    request: pytest.FixtureRequest, clock: FakeClock, db_path: Path
) -> AsyncIterator[Store]:
    """Each Store implementation, on the fake clock (PostgreSQL: a fresh database on the
    test server)."""
    if request.param == "memory":
        yield MemoryStore(clock=clock)
    elif request.param == "sqlite":
        async with open_sqlite_store(db_path, clock=clock) as sqlite_store:
            yield sqlite_store
    else:
        from nexo_trio.store.postgres import open_postgres_store

        url = request.getfixturevalue("pg_url")
        async with open_postgres_store(url, clock=clock, lease_clock=clock) as pg_store:
            yield pg_store


@pytest.fixture(params=["sqlite", "postgres"])
async def shared_store(
    request: pytest.FixtureRequest, clock: FakeClock, db_path: Path
) -> AsyncIterator[SharedStore]:
    """Each SharedStore implementation (leases, the queue, controls), on the fake clock."""
    if request.param == "sqlite":
        async with open_sqlite_store(db_path, clock=clock) as sqlite_store:
            yield sqlite_store
    else:
        from nexo_trio.store.postgres import open_postgres_store

        url = request.getfixturevalue("pg_url")
        async with open_postgres_store(url, clock=clock, lease_clock=clock) as pg_store:
            yield pg_store
