"""What a goal's lock file says: which process runs the goal, and since when.

A goal runs in at most one process. The process running it holds an exclusive ``flock`` on
``STATE_DIR/locks/GOAL.lock`` (``orchestrator/goal_lock.py``): the kernel drops it when the
process ends, however it ends, so a crash leaves nothing stuck. The file's text only names
the holder for the people asking (:func:`running_message`): one JSON object, rewritten by
each holder once it has the lock. A record is believed only while the lock is held and the
process it names still runs (same pid and start time, :mod:`nexo_trio.core.processes`): a
record left by a holder that died, or not yet rewritten by the next one, names nobody.
"""

from __future__ import annotations

import json
import math
import time
from typing import Final, TypeGuard

import attrs

from nexo_trio.core.processes import ProcessIdentity


@attrs.frozen
class LockHolder:
    """The process that holds a goal's lock, and since when (seconds since the epoch).

    ``process`` is ``None`` for a holder that could not be told (the lock is held, its
    record unreadable): the goal runs, in a process nobody can name."""

    process: ProcessIdentity | None
    since: float | None = None

    @property
    def pid(self) -> int | None:
        """The holder's pid (``None``: not known)."""
        return None if self.process is None else self.process.pid


UNKNOWN_HOLDER: Final = LockHolder(process=None)
"""The holder of a lock whose record names no live process."""


def lock_record(holder: LockHolder) -> str:
    """The lock file's text for ``holder`` (one line of JSON)."""
    process = holder.process
    data = {
        "pid": None if process is None else process.pid,
        "start": None if process is None else process.start,
        "boot": "" if process is None else process.boot,
        "since": holder.since,
    }
    return json.dumps(data, separators=(",", ":")) + "\n"


def parse_lock_record(text: str) -> LockHolder | None:
    """The holder a lock file's text names; ``None`` for anything else (an empty file, one
    being rewritten, one of another version)."""
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    pid, start, boot, since = (data.get(k) for k in ("pid", "start", "boot", "since"))
    if since is not None and not (_is_number(since) and math.isfinite(since)):
        return None
    when = None if since is None else float(since)
    if pid is None and start is None:
        return LockHolder(process=None, since=when)
    if not (_is_int(pid) and _is_int(start) and isinstance(boot, str)):
        return None
    try:
        process = ProcessIdentity(pid=pid, start=start, boot=boot)
    except ValueError:
        return None
    return LockHolder(process=process, since=when)


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def running_message(goal_id: str, holder: LockHolder) -> str:
    """``goal X is running in process N since T``: what a second run of a running goal
    says (``T`` in local time)."""
    if holder.process is None:
        return f"goal {goal_id} is running in another process"
    since = "" if holder.since is None else f" since {when(holder.since)}"
    return f"goal {goal_id} is running in process {holder.process.pid}{since}"


def when(at: float) -> str:
    """A time for people: ``2026-12-01 14:54:52``, local time."""
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at))
    except (OverflowError, OSError, ValueError):
        return f"{at:.0f} (seconds since the epoch)"
