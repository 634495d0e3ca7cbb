"""The database's files are private: the directory it is created in 0700, the file and its
``-wal`` / ``-shm`` / ``-journal`` companions 0600 (the ledger holds prompts and check
output; no other local user reads it).

SQLite creates the companions with the mode of the database file, so creating that file
0600 ourselves (an empty file is a new database to SQLite) covers them too. Files of an
older nexo-trio that are readable by others are tightened when we own them; a directory
that already exists is left as its owner made it.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger("nexo_trio.store")

DIR_MODE = 0o700
FILE_MODE = 0o600
COMPANIONS = ("-wal", "-shm", "-journal")


def prepare_database_file(path: Path) -> None:
    """Create ``path``'s directory (0700) and the file (0600) if missing; tighten the
    file and its companions if others may read them. Blocking: run it in a thread."""
    directory = path.parent
    existed = directory.exists()
    directory.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    if not existed:
        # mkdir's mode goes through the umask; say exactly what we mean.
        os.chmod(directory, DIR_MODE)
    # O_NONBLOCK: never hang on a FIFO someone put there; O_CREAT on a directory fails.
    flags = os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC | os.O_NONBLOCK
    _tighten(os.open(path, flags, FILE_MODE), path)
    for suffix in COMPANIONS:
        companion = Path(f"{path}{suffix}")
        try:
            fd = os.open(companion, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        except FileNotFoundError:
            continue
        _tighten(fd, companion)


def _tighten(fd: int, path: Path) -> None:
    """Take group and other bits off the open file ``fd`` if we own it; close ``fd``."""
    try:
        info = os.fstat(fd)
        mode = stat.S_IMODE(info.st_mode)
        if info.st_uid == os.geteuid() and mode & 0o077 and stat.S_ISREG(info.st_mode):
            try:
                os.fchmod(fd, mode & ~0o077)
            except OSError as exc:  # a read-only file system, say: it is read elsewhere
                log.warning("%s: cannot make it private (mode %o): %s", path, mode, exc)
    finally:
        os.close(fd)


def file_identity(path: Path) -> tuple[int, int]:
    """``(device, inode)`` of the file at ``path``: which file it is, not what it holds."""
    info = os.stat(path)
    return info.st_dev, info.st_ino


__all__ = ["COMPANIONS", "DIR_MODE", "FILE_MODE", "file_identity", "prepare_database_file"]
