"""What counts as the store's own trouble (retried, writes kept) and what is a bug (raised).

An *operational* failure is the environment's: another process holds the database's lock
longer than the busy timeout, the disk is full, the file system went read-only, the file
was removed. Writes that must not be lost are kept in memory and retried with
:func:`next_backoff`. Anything else (data that is not JSON, a closed store, SQL that is
wrong) is a bug and raises where it happens.
"""

from __future__ import annotations

import errno
import sqlite3
from typing import Final

RETRY_INITIAL_S: Final = 0.05
"""The first retry of kept writes comes this long after the failure..."""

RETRY_MAX_S: Final = 5.0
"""...and each further one twice as long after the previous one, at most this long."""

RETRY_BUSY_TIMEOUT_S: Final = 0.25
"""How long a retry (or the flush at close) waits for another process's lock: a short
wait per attempt keeps the writer (and reads, which wait for a retry) responsive."""

UNWRITABLE_AFTER_S: Final = 60.0
"""Kept writes not written for this long make the store *unwritable* (reported)."""

# Primary result codes (https://sqlite.org/rescode.html) that say the environment, not the
# statement, is at fault. SQLITE_ERROR (1: "no such table", syntax) is not among them.
_OPERATIONAL_CODES: Final = frozenset(
    {
        3,  # SQLITE_PERM
        5,  # SQLITE_BUSY: another connection holds the lock past the busy timeout
        6,  # SQLITE_LOCKED
        7,  # SQLITE_NOMEM
        8,  # SQLITE_READONLY
        9,  # SQLITE_INTERRUPT
        10,  # SQLITE_IOERR (disk I/O error, and its extended codes)
        11,  # SQLITE_CORRUPT
        13,  # SQLITE_FULL: database or disk is full
        14,  # SQLITE_CANTOPEN
        15,  # SQLITE_PROTOCOL
        26,  # SQLITE_NOTADB
    }
)

_BUG_CLASSES: Final = (
    sqlite3.ProgrammingError,  # a closed connection, wrong parameters
    sqlite3.InterfaceError,
    sqlite3.IntegrityError,
    sqlite3.DataError,
    sqlite3.NotSupportedError,
)


def is_operational(exc: BaseException) -> bool:
    """Whether ``exc`` is the environment's trouble (retry, keep the writes), not a bug."""
    if isinstance(exc, OSError):
        return True
    if not isinstance(exc, sqlite3.DatabaseError) or isinstance(exc, _BUG_CLASSES):
        return False
    code = exc.sqlite_errorcode
    return code is not None and (code & 0xFF) in _OPERATIONAL_CODES


def describe(exc: BaseException) -> str:
    """A short human account of a failure: ``database is locked``, ``No space left on
    device: /x/nexo.db-wal``."""
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    return str(exc) or type(exc).__name__


def next_backoff(current: float, *, maximum: float = RETRY_MAX_S) -> float:
    """The wait after ``current`` one: twice as long, at most ``maximum``."""
    return min(current * 2, maximum)


def replaced_error(path: str) -> OSError:
    """The database file at ``path`` is no longer the one the store opened: writes through
    the open connection would go to a file nobody will ever read."""
    return OSError(errno.ESTALE, "the database file was removed or replaced", path)


__all__ = [
    "RETRY_BUSY_TIMEOUT_S",
    "RETRY_INITIAL_S",
    "RETRY_MAX_S",
    "UNWRITABLE_AFTER_S",
    "describe",
    "is_operational",
    "next_backoff",
    "replaced_error",
]
