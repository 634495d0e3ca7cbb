"""A throwaway PostgreSQL server for the tests: ``initdb`` into a temporary directory, then
``pg_ctl start``, listening on a Unix socket in a private directory and on 127.0.0.1 only.

Everything here blocks (subprocesses, psycopg's synchronous connections): it is meant for
synchronous pytest fixtures and benchmark set-up, never for a trio task. Every wait is
bounded by a subprocess timeout, ``pg_ctl -t`` or psycopg's ``connect_timeout``.

As root, PostgreSQL refuses to run: the server then runs as an unprivileged user (a
dedicated ``nexo-pg`` system user, created if missing, else ``nobody``) through ``runuser``
(or ``setpriv``), and its directories are under /tmp, owned by that user.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import os
import pwd
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    import psycopg
    from psycopg.rows import TupleRow

SUPERUSER = "nexo"
"""The database superuser initdb creates (trust authentication: no password)."""
HOST = "127.0.0.1"
"""The only TCP address the server listens on."""
RUN_AS_USER = "nexo-pg"
"""The system user the server runs as when we are root (created if missing)."""
FALLBACK_RUN_AS_USER = "nobody"
"""The user the server runs as when we are root and RUN_AS_USER can't be created."""

MISSING_BINARIES = (
    "PostgreSQL server binaries not found (apt-get install postgresql-15, or set NEXO_PG_BIN)"
)
MISSING_PSYCOPG = "psycopg is not installed (pip install 'psycopg[binary]')"

SERVER_OPTIONS = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    # 16 benchmark worker processes with their pools, plus the tests' own connections.
    "max_connections": "300",
    "shared_buffers": "32MB",
}
"""Settings for speed, not durability: the data is thrown away with the server."""

INITDB_TIMEOUT = 60.0
START_TIMEOUT = 30
"""Seconds pg_ctl waits for the server to accept connections."""
STOP_TIMEOUT = 10
REAP_TIMEOUT = 5.0
CONNECT_TIMEOUT = 10
"""Seconds psycopg waits for a connection (libpq's connect_timeout)."""
PORT_ATTEMPTS = 3
"""A free port may be taken by someone else before the server binds it: try again."""


class PostgresUnavailable(Exception):
    """The server can't be started here for a missing piece (binaries, psycopg): the tests
    that need it skip, with this message."""


@attrs.frozen
class Installation:
    """Where a server's binaries and files are, and whom it runs as."""

    bin_dir: Path
    base_dir: Path
    """Holds data_dir, socket_dir and log_file; removed when the server stops."""
    run_as: str | None
    """The OS user the server runs as (we are root), or None: as we are."""

    @property
    def data_dir(self) -> Path:
        """The cluster initdb made."""
        return self.base_dir / "data"

    @property
    def socket_dir(self) -> Path:
        """The private directory of the server's Unix socket."""
        return self.base_dir / "socket"

    @property
    def log_file(self) -> Path:
        """The server's output."""
        return self.base_dir / "postgres.log"


@attrs.frozen
class PgServer:
    """A running server; :func:`stop_server` stops it and removes its directories."""

    installation: Installation
    port: int
    """The TCP port it listens on, on HOST only."""
    startup_seconds: float
    """How long initdb and pg_ctl start took."""
    _databases: Iterator[int] = attrs.field(factory=itertools.count, eq=False, repr=False)

    @property
    def socket_dir(self) -> Path:
        """The private directory of the server's Unix socket."""
        return self.installation.socket_dir

    def url(self, dbname: str = "postgres") -> str:
        """The URL of one of the server's databases over TCP, as SUPERUSER."""
        return f"postgresql://{SUPERUSER}@{HOST}:{self.port}/{dbname}"

    def next_database_name(self) -> str:
        """A database name not used before on this server: ``test_N``."""
        return f"test_{next(self._databases)}"


def find_bin_dir() -> Path | None:
    """Where initdb, pg_ctl and postgres are: NEXO_PG_BIN, else ``pg_config --bindir``, else
    the highest /usr/lib/postgresql/*/bin (Debian), else PATH; None if nowhere."""
    configured = os.environ.get("NEXO_PG_BIN")
    if configured:
        path = Path(configured)
        return path if _has_server_binaries(path) else None
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        try:
            done = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True
            )
        except (OSError, subprocess.SubprocessError):
            pass
        else:
            # Debian's /usr/bin/pg_config is libpq-dev's: its bindir may hold no server.
            path = Path(done.stdout.strip())
            if _has_server_binaries(path):
                return path
    versions: list[tuple[int, Path]] = []
    for path in Path("/usr/lib/postgresql").glob("*/bin"):
        if path.parent.name.isdigit() and _has_server_binaries(path):
            versions.append((int(path.parent.name), path))
    if versions:
        return max(versions)[1]
    initdb = shutil.which("initdb")
    if initdb is not None:
        path = Path(initdb).resolve().parent
        if _has_server_binaries(path):
            return path
    return None


def _has_server_binaries(path: Path) -> bool:
    return all(os.access(path / name, os.X_OK) for name in ("initdb", "pg_ctl", "postgres"))


def require_psycopg() -> None:
    """Raise PostgresUnavailable when psycopg can't be imported."""
    try:
        import psycopg  # noqa: F401
    except ImportError as exc:
        raise PostgresUnavailable(MISSING_PSYCOPG) from exc


def start_server() -> PgServer:
    """initdb and start a server on a free port of 127.0.0.1 and a private Unix socket.

    Raises PostgresUnavailable without the binaries or psycopg, RuntimeError when initdb or
    the server fails (with their output)."""
    require_psycopg()
    bin_dir = find_bin_dir()
    if bin_dir is None:
        raise PostgresUnavailable(MISSING_BINARIES)
    started = time.monotonic()
    run_as = _unprivileged_user() if os.geteuid() == 0 else None
    # As root the server's user must be able to reach its directories: under /tmp (the
    # caller's TMPDIR or pytest's tmp_path may be in /root, 0700), the parent 0755.
    base_dir = Path(tempfile.mkdtemp(prefix="nexo-pg-", dir="/tmp" if run_as else None))
    installation = Installation(bin_dir=bin_dir, base_dir=base_dir, run_as=run_as)
    try:
        base_dir.chmod(0o755)
        installation.data_dir.mkdir(mode=0o700)
        installation.socket_dir.mkdir(mode=0o700)
        installation.log_file.touch(mode=0o600)
        if run_as is not None:
            entry = pwd.getpwnam(run_as)
            for path in (installation.data_dir, installation.socket_dir, installation.log_file):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        _initdb(installation)
        port = _start_on_a_free_port(installation)
    except BaseException:
        _remove(installation)
        raise
    server = PgServer(
        installation=installation, port=port, startup_seconds=time.monotonic() - started
    )
    _running.append(server)
    return server


_running: list[PgServer] = []
"""The servers start_server started and stop_server has not stopped yet."""


@atexit.register
def _stop_all() -> None:
    """A safety net should a caller's teardown never run (an interrupted session)."""
    for server in list(_running):
        stop_server(server)


def stop_server(server: PgServer) -> None:
    """Stop the server (immediate shutdown: its data is thrown away) and remove its
    directories. Safe to call twice."""
    with contextlib.suppress(ValueError):
        _running.remove(server)
    _remove(server.installation)


@contextlib.contextmanager
def running_server() -> Iterator[PgServer]:
    """A server for the duration of the block."""
    server = start_server()
    try:
        yield server
    finally:
        stop_server(server)


def create_database(server: PgServer) -> str:
    """Create a fresh, empty database (``test_N``) and return its URL."""
    from psycopg import sql

    name = server.next_database_name()
    with _admin_connection(server) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return server.url(name)


def drop_database(server: PgServer, url: str) -> None:
    """Drop the database create_database made at url, closing its connections."""
    from psycopg import sql

    name = url.rsplit("/", 1)[1]
    with _admin_connection(server) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@contextlib.contextmanager
def fresh_database(server: PgServer) -> Iterator[str]:
    """A fresh database for the duration of the block: its URL."""
    url = create_database(server)
    try:
        yield url
    finally:
        drop_database(server, url)


@contextlib.contextmanager
def _admin_connection(server: PgServer) -> Iterator[psycopg.Connection[TupleRow]]:
    """An autocommit connection to the server's postgres database (CREATE/DROP DATABASE
    can't run in a transaction)."""
    import psycopg

    with psycopg.connect(
        server.url("postgres"), autocommit=True, connect_timeout=CONNECT_TIMEOUT
    ) as conn:
        yield conn


def _remove(installation: Installation) -> None:
    """Stop the server if one runs and remove its directories."""
    if installation.base_dir.exists():
        _stop(installation)
        shutil.rmtree(installation.base_dir, ignore_errors=True)


def _initdb(installation: Installation) -> None:
    _run(
        installation,
        [
            "initdb",
            "-D",
            str(installation.data_dir),
            "-A",
            "trust",
            "-U",
            SUPERUSER,
            "--no-sync",
            "--no-instructions",
            "-E",
            "UTF8",
            "--locale=C",
        ],
        timeout=INITDB_TIMEOUT,
    )


def _start_on_a_free_port(installation: Installation) -> int:
    """Start the server on a free port; the port. A port free when we looked may be taken
    before the server binds it: then try another."""
    for attempt in range(1, PORT_ATTEMPTS + 1):
        port = _free_port()
        log_before = installation.log_file.stat().st_size
        try:
            _pg_ctl_start(installation, port)
        except RuntimeError:
            with installation.log_file.open("rb") as log:
                log.seek(log_before)
                taken = b"could not bind" in log.read()
            if not taken or attempt == PORT_ATTEMPTS:
                raise
        else:
            return port
    raise AssertionError("unreachable")


def _pg_ctl_start(installation: Installation, port: int) -> None:
    settings = {
        "listen_addresses": HOST,
        "port": str(port),
        "unix_socket_directories": str(installation.socket_dir),
        **SERVER_OPTIONS,
    }
    # pg_ctl hands -o to a shell: quote each argument.
    options = shlex.join(arg for key, value in settings.items() for arg in ("-c", f"{key}={value}"))
    _run(
        installation,
        [
            "pg_ctl",
            "start",
            "-w",
            "-t",
            str(START_TIMEOUT),
            "-D",
            str(installation.data_dir),
            # The server's output goes to the log, not to our pipes: pg_ctl returns while
            # the server runs on, holding whatever it inherited.
            "-l",
            str(installation.log_file),
            "-o",
            options,
        ],
        timeout=START_TIMEOUT + 10,
        with_log=True,
    )


def _stop(installation: Installation) -> None:
    """Stop the server if one runs: immediate shutdown, else fast, else SIGKILL of the
    postmaster its postmaster.pid names."""
    pid_file = installation.data_dir / "postmaster.pid"
    try:
        pid = int(pid_file.read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return  # no server runs (or it never wrote its pid)
    for mode in ("immediate", "fast"):
        argv = ["pg_ctl", "stop", "-w", "-t", str(STOP_TIMEOUT), "-m", mode]
        try:
            _run(installation, [*argv, "-D", str(installation.data_dir)], timeout=STOP_TIMEOUT + 5)
        except RuntimeError:
            continue
        break
    else:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    _reap_if_ours(pid)


def _reap_if_ours(pid: int) -> None:
    """pg_ctl leaves the postmaster an orphan: should we be a child subreaper it is our
    child, and its zombie ours to reap. Waits a bounded REAP_TIMEOUT."""
    deadline = time.monotonic() + REAP_TIMEOUT
    while True:
        try:
            reaped, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return  # not our child: init reaps it
        if reaped != 0 or time.monotonic() > deadline:
            return
        time.sleep(0.01)


def _run(
    installation: Installation, argv: list[str], *, timeout: float, with_log: bool = False
) -> None:
    """Run one of the server's programs (argv[0] in bin_dir), as its user, in base_dir."""
    what = shlex.join(argv[:2])
    argv = [str(installation.bin_dir / argv[0]), *argv[1:]]
    if installation.run_as is not None:
        argv = [*_as_user(installation.run_as), *argv]
    # Our PG* variables (PGPORT, PGDATA, PGHOST...) are not the throwaway server's. TZ set
    # spares initdb its search of the time zone database.
    env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
    env["TZ"] = "UTC"
    env["LC_ALL"] = "C"
    try:
        done = subprocess.run(
            argv,
            cwd=installation.base_dir,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"{what} did not finish in {timeout:g}s") from exc
    except OSError as exc:
        raise RuntimeError(f"{what} could not run: {exc}") from exc
    if done.returncode != 0:
        log = f"\n--- server log ---\n{_tail(installation.log_file)}" if with_log else ""
        raise RuntimeError(
            f"{what} failed (exit {done.returncode}):\n{done.stdout}{done.stderr}{log}"
        )


def _as_user(user: str) -> list[str]:
    """The command prefix that runs a command as user (we are root)."""
    runuser = shutil.which("runuser")
    if runuser is not None:
        return [runuser, "-u", user, "--"]
    setpriv = shutil.which("setpriv")
    if setpriv is not None:
        entry = pwd.getpwnam(user)
        return [setpriv, f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}", "--clear-groups"]
    raise RuntimeError("we are root and neither runuser nor setpriv is here: PostgreSQL won't run")


def _unprivileged_user() -> str:
    """RUN_AS_USER, created as a system user if missing; FALLBACK_RUN_AS_USER if it can't be."""
    if _user_exists(RUN_AS_USER):
        return RUN_AS_USER
    useradd = shutil.which("useradd")
    if useradd is not None:
        argv = [useradd, "--system", "--no-create-home", RUN_AS_USER]
        if Path("/usr/sbin/nologin").exists():
            argv[1:1] = ["--shell", "/usr/sbin/nologin"]
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(argv, capture_output=True, timeout=30, check=False)
        # Another process (an xdist worker) may have created it at the same time.
        if _user_exists(RUN_AS_USER):
            return RUN_AS_USER
    if _user_exists(FALLBACK_RUN_AS_USER):
        return FALLBACK_RUN_AS_USER
    raise RuntimeError(f"we are root and there is no {RUN_AS_USER} nor {FALLBACK_RUN_AS_USER}")


def _user_exists(user: str) -> bool:
    try:
        pwd.getpwnam(user)
    except KeyError:
        return False
    return True


def _free_port() -> int:
    """A TCP port of 127.0.0.1 nobody listens on now (the kernel's choice for port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _tail(path: Path, chars: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""
