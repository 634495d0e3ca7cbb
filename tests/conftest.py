"""Shared fixtures."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.pg_server import (
    PgServer,
    PostgresUnavailable,
    fresh_database,
    start_server,
    stop_server,
)

FIXTURES = Path(__file__).parent / "fixtures" / "claude-cli-2.1.332"


@pytest.fixture
def fixtures_dir() -> Path:
    """Recordings of the real CLI's output."""
    return FIXTURES


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """A throwaway PostgreSQL server (tests/pg_server.py), started once per pytest process
    (each xdist worker its own) and only when a test asks for it; skips, saying how to get
    them, without the server binaries or psycopg."""
    try:
        server = start_server()
    except PostgresUnavailable as exc:
        pytest.skip(str(exc))
    try:
        yield server
    finally:
        stop_server(server)


@pytest.fixture
def pg_url(pg_server: PgServer) -> Iterator[str]:
    """The URL of a fresh, empty database on the test server, dropped after the test."""
    with fresh_database(pg_server) as url:
        yield url
