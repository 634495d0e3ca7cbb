"""A goal runs in at most one process: its lock, ``STATE_DIR/locks/GOAL.lock``.

The process running a goal holds an exclusive ``flock`` on the goal's lock file from the
moment the goal is started (``Orchestrator.start_goal``) until its run has recorded its
end. The kernel drops the lock when the process ends, however it ends (``kill -9``, power
loss), so a crashed run never leaves the goal stuck; the file is never deleted (deleting a
lock file another process has open would let two processes hold "the" lock). The lock's
file descriptor is close-on-exec: no process the run starts holds it after the run is gone.

The file names its holder for the message of a second run (``goal X is running in process
N since T``, :func:`nexo_trio.core.goal_lock.running_message`): each holder rewrites it once
it has the lock. A record is believed only while the lock is held and the process it names
still runs with the recorded start time (:func:`nexo_trio.core.processes.same_process`).

- :func:`acquire_goal_lock` takes the lock or raises :class:`GoalLocked`;
- :func:`goal_runner` asks, without taking it, which process runs the goal (``None``:
  none); commands that must not touch a running goal's workspace use it.

The calls are blocking (``open``, ``flock``, ``/proc``) and short; the async ones run them
in a worker thread.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from pathlib import Path
from typing import Final

import trio

from nexo_trio.core.goal_lock import (
    UNKNOWN_HOLDER,
    LockHolder,
    lock_record,
    parse_lock_record,
    running_message,
)
from nexo_trio.core.processes import same_process
from nexo_trio.engine.leftovers import process_identity
from nexo_trio.orchestrator.state_dir import StateDir

READ_RETRY_S: Final = 1.0
"""How long a run that found the lock taken waits for the holder to name itself (a holder
writes its record right after taking the lock) or for a probe to let go of it."""
_POLL_S: Final = 0.01


class GoalLocked(ValueError):
    """The goal is running in another process (``holder``). The message is ``goal X is
    running in process N since T``."""

    def __init__(self, goal_id: str, holder: LockHolder) -> None:
        super().__init__(running_message(goal_id, holder))
        self.goal_id = goal_id
        self.holder = holder


def lock_path(state_dir: Path, goal_id: str) -> Path:
    """The goal's lock file (goal ids are safe file names)."""
    return StateDir(state_dir).lock(goal_id)


class GoalLock:
    """The lock of one goal, held by this process until :meth:`release`."""

    def __init__(self, goal_id: str, path: Path, fd: int, holder: LockHolder) -> None:
        self.goal_id = goal_id
        self.path = path
        self.holder = holder
        self._fd: int | None = fd

    @property
    def held(self) -> bool:
        """Whether the lock is still held (not released)."""
        return self._fd is not None

    def release_sync(self) -> None:
        """Let go of the lock (idempotent; blocking, but a close of a regular file)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            _unlock_and_close(fd)

    async def release(self) -> None:
        """Let go of the lock, off the event loop, even when cancelled."""
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(self.release_sync)


def try_acquire(state_dir: Path, goal_id: str, *, now: float | None = None) -> GoalLock:
    """Take the goal's lock (blocking, within :data:`READ_RETRY_S`); raise
    :class:`GoalLocked` when another process holds it, ``OSError`` when the file cannot be
    made."""
    path = lock_path(state_dir, goal_id)
    _make_dir(path.parent)
    deadline = time.monotonic() + READ_RETRY_S
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            if _flock(fd, fcntl.LOCK_EX):
                holder = _hold(fd, now)
                return GoalLock(goal_id, path, fd, holder)
            found = _live_holder(fd)
        except BaseException:
            _unlock_and_close(fd)
            raise
        os.close(fd)
        # Taken: by a live holder (say so), or by a probe or a holder still writing its
        # record, both gone in a moment (try again).
        if found is not None or time.monotonic() >= deadline:
            raise GoalLocked(goal_id, found or UNKNOWN_HOLDER)
        time.sleep(_POLL_S)


async def acquire_goal_lock(state_dir: Path, goal_id: str) -> GoalLock:
    """:func:`try_acquire` in a worker thread (cancellation waits for it: a lock taken in
    an abandoned thread would be held by nobody who knows)."""
    return await trio.to_thread.run_sync(try_acquire, state_dir, goal_id)


def goal_runner(state_dir: Path, goal_id: str) -> LockHolder | None:
    """The process running the goal (from its lock), or ``None`` when no process does.

    Blocking (``open``, ``flock``, ``/proc``): from trio, use :func:`find_goal_runner`. A
    process that holds the lock but cannot be named (its record unreadable after
    :data:`READ_RETRY_S`) is :data:`~nexo_trio.core.goal_lock.UNKNOWN_HOLDER`."""
    path = lock_path(state_dir, goal_id)
    deadline = time.monotonic() + READ_RETRY_S
    while True:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except FileNotFoundError:
            return None  # never locked: nobody runs it
        try:
            # A shared lock: free unless a holder has the exclusive one (held a moment).
            if _flock(fd, fcntl.LOCK_SH):
                return None
            found = _live_holder(fd)
        finally:
            _unlock_and_close(fd)
        if found is not None:
            return found
        if time.monotonic() >= deadline:
            return UNKNOWN_HOLDER
        time.sleep(_POLL_S)


async def find_goal_runner(state_dir: Path, goal_id: str) -> LockHolder | None:
    """:func:`goal_runner` in a worker thread."""
    return await trio.to_thread.run_sync(goal_runner, state_dir, goal_id)


def _make_dir(directory: Path) -> None:
    """``STATE_DIR/locks`` and, when missing, the state dir: made private (0700)."""
    for path in (directory.parent, directory):
        if path.is_dir():
            continue
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(path, 0o700)  # mkdir's mode goes through the umask


def _flock(fd: int, kind: int) -> bool:
    """Take the lock without waiting; ``False`` when another open file holds it."""
    try:
        fcntl.flock(fd, kind | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return False
        raise
    return True


def _unlock_and_close(fd: int) -> None:
    """Let go of ``fd``'s lock, then close it. Unlocked first: a child being forked at this
    moment (a turn's spawn, between its fork and its exec) shares the open file, and a
    close alone would leave the lock held until that child's exec; an unlock frees the open
    file's lock, whoever else has it open."""
    try:
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _hold(fd: int, now: float | None) -> LockHolder:
    """Write this process's record into the lock file it just locked."""
    # Without /proc (not Linux) the record names nobody: readers say "another process".
    me = process_identity(os.getpid())
    holder = LockHolder(process=me, since=time.time() if now is None else now)
    data = lock_record(holder).encode()
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
    except OSError:
        pass  # a full disk: the lock holds all the same, its holder goes unnamed
    return holder


def _live_holder(fd: int) -> LockHolder | None:
    """The holder the locked file names, if that process still runs (else: a stale record,
    or one not written yet)."""
    try:
        text = os.pread(fd, 4096, 0).decode("utf-8", errors="replace")
    except OSError:
        return None
    holder = parse_lock_record(text)
    if holder is None or holder.process is None:
        return None
    process = holder.process
    return holder if same_process(process, process_identity(process.pid)) else None
