"""The test suite's PostgreSQL server (tests/pg_server.py): it answers, each test gets a
database of its own, and it listens on 127.0.0.1 and a private Unix socket only."""

from __future__ import annotations

import socket
import stat
import sys
from pathlib import Path
from typing import LiteralString

import pytest

from tests.pg_server import (
    CONNECT_TIMEOUT,
    HOST,
    MISSING_BINARIES,
    PgServer,
    PostgresUnavailable,
    find_bin_dir,
    fresh_database,
    start_server,
)

TCP_LISTEN = "0A"
"""The state column of a listening socket in /proc/net/tcp."""


def query(url: str, sql: LiteralString, *params: object) -> list[tuple[object, ...]]:
    """The rows of one statement on the database at url, in a transaction of its own."""
    import psycopg

    with psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT) as conn:
        cursor = conn.execute(sql, params or None)
        return cursor.fetchall() if cursor.description is not None else []


def database_name(url: str) -> str:
    """The database a URL names (its path)."""
    return url.rsplit("/", 1)[1]


def test_a_trivial_query(pg_url: str) -> None:
    import psycopg

    with psycopg.connect(pg_url, connect_timeout=CONNECT_TIMEOUT) as conn:
        assert conn.execute("SELECT 1 + 1").fetchone() == (2,)
        assert conn.execute("SELECT current_database()").fetchone() == (database_name(pg_url),)
        assert conn.info.server_version >= 150000
        assert conn.execute("SHOW server_encoding").fetchone() == ("UTF8",)
        conn.execute("CREATE TABLE t (x text)")
        conn.execute("INSERT INTO t VALUES ('é')")
        assert conn.execute("SELECT x FROM t").fetchall() == [("é",)]


def test_two_databases_are_distinct(pg_server: PgServer, pg_url: str) -> None:
    with fresh_database(pg_server) as other_url:
        assert other_url != pg_url
        query(pg_url, "CREATE TABLE only_here (x int)")
        tables = "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
        assert query(pg_url, tables) == [("only_here",)]
        assert query(other_url, tables) == []
    # Dropped when its block ends, the test's own database still there.
    databases = "SELECT datname FROM pg_database WHERE datname LIKE 'test_%'"
    assert query(pg_server.url(), databases) == [(database_name(pg_url),)]


@pytest.mark.parametrize("run", [1, 2])
def test_each_test_has_a_fresh_database(pg_url: str, run: int) -> None:
    # The same table in each run: a database kept from the other run would have it.
    query(pg_url, "CREATE TABLE marker (run int)")
    query(pg_url, "INSERT INTO marker VALUES (%s)", run)
    assert query(pg_url, "SELECT run FROM marker") == [(run,)]


def listening_addresses(path: Path, port: int) -> list[bytes]:
    """The local addresses of the sockets listening on port in /proc/net/tcp or tcp6."""
    addresses: list[bytes] = []
    for line in path.read_text().splitlines()[1:]:
        fields = line.split()
        address, port_hex = fields[1].split(":")
        if fields[3] == TCP_LISTEN and int(port_hex, 16) == port:
            raw = bytes.fromhex(address)
            # The kernel prints each 32-bit word of the address in host order.
            if sys.byteorder == "little":
                raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            addresses.append(raw)
    return addresses


def a_non_loopback_address() -> str | None:
    """An IPv4 address of this host other than loopback, if it has one (the source address
    of its default route: a UDP connect sends nothing)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(("192.0.2.1", 9))  # TEST-NET-1
        except OSError:
            return None
        address: str = sock.getsockname()[0]
    return None if address.startswith("127.") else address


def test_the_server_listens_on_loopback_only(pg_server: PgServer) -> None:
    assert query(pg_server.url(), "SHOW listen_addresses") == [(HOST,)]
    assert query(pg_server.url(), "SELECT host(inet_server_addr())") == [(HOST,)]
    proc = Path("/proc/net")
    if (proc / "tcp").exists():
        assert listening_addresses(proc / "tcp", pg_server.port) == [socket.inet_aton(HOST)]
        if (proc / "tcp6").exists():
            assert listening_addresses(proc / "tcp6", pg_server.port) == []
    address = a_non_loopback_address()
    if address is not None:
        with pytest.raises((ConnectionRefusedError, TimeoutError)):  # nothing listens there
            socket.create_connection((address, pg_server.port), timeout=2).close()


def test_the_unix_socket_is_in_a_private_directory(pg_server: PgServer) -> None:
    import psycopg

    mode = pg_server.socket_dir.stat().st_mode
    assert stat.S_IMODE(mode) == 0o700
    assert (pg_server.socket_dir / f".s.PGSQL.{pg_server.port}").is_socket()
    with psycopg.connect(
        host=str(pg_server.socket_dir),
        port=pg_server.port,
        user="nexo",
        dbname="postgres",
        connect_timeout=CONNECT_TIMEOUT,
    ) as conn:
        assert conn.execute("SHOW unix_socket_directories").fetchone() == (
            str(pg_server.socket_dir),
        )
        assert conn.execute("SELECT inet_server_addr()").fetchone() == (None,)


def test_missing_binaries_say_how_to_get_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("psycopg", reason="pip install 'psycopg[binary]'")
    monkeypatch.setenv("NEXO_PG_BIN", str(tmp_path))
    assert find_bin_dir() is None
    with pytest.raises(PostgresUnavailable, match="apt-get install postgresql-15"):
        start_server()
    assert "NEXO_PG_BIN" in MISSING_BINARIES
