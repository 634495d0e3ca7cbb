"""The process tree of one turn: remember its members, signal them, wait for them to go.

Claude Code runs its Bash-tool children in **their own sessions**, so a signal to the
CLI's process group does not reach them, and once the CLI is dead they are re-parented
and can no longer be found from it. So the tree is collected while the CLI lives (now and
then while it runs) and again once it is stopped, and every member is signalled by pid.
psutil guards each signal against pid reuse (it checks the process's start time).

An unconfined turn runs the CLI under a child subreaper (:mod:`nexo_trio.engine.reaper`):
the tree is then rooted at that helper, which every orphan of the turn is re-parented to, so
a collection finds even a daemon that detached (``setsid env -i``), and the CLI itself is a
member set apart (``ignore``: it is signalled through the helper, and not counted among its
own descendants).

A collection walks down from the root only: ``/proc/PID/task/TID/children`` of the root and
of each descendant found (:func:`descendants`), a few small reads for a turn's tree, however
many processes the host runs. Only where the kernel has no such files (before Linux 3.5,
or without ``CONFIG_PROC_CHILDREN``) does it fall back to psutil's walk over all of
``/proc``.

A descendant that escaped between two collections (the CLI started it and exited, with no
subreaper above it, or the subreaper itself was killed) is still found by the marker in its
environment or by the turn's pipes it holds: :meth:`ProcessTree.adopt_strays`, a pass over
every process on the host. Under a live subreaper nothing can escape, so the supervisor asks
for that pass only when the helper cannot vouch for the tree (it died, or the kernel has no
children files).

The walks read ``/proc``: the event loop's callers use :meth:`ProcessTree.collect`, which
looks at the root's own children in the caller's thread (one or two tiny reads, which never
wait for a disk) and walks further, or for strays, in a worker thread only when there is
something to walk.
"""

from __future__ import annotations

import math
import os
import signal
from collections.abc import Iterable, Sequence
from functools import cache

import psutil
import trio

from nexo_trio.engine.reaper import children_of
from nexo_trio.engine.stopping import signal_group

_POLL_S = 0.02


class ProcessTree:
    """The root process and every descendant it has been seen to have (but ``ignore``)."""

    def __init__(self, pid: int, *, ignore: Iterable[int] = (), reserved: bool = False) -> None:
        """``reserved``: ``pid`` is our own child, not reaped while the tree is in use, so
        its pid cannot be another process's (no handle on it is needed to tell)."""
        self.pid = pid
        self.ignore = frozenset(ignore)
        """Pids never taken as members (the CLI under a subreaper: signalled on its own)."""
        self.reserved = reserved
        self._members: dict[int, psutil.Process] = {}
        self._root: psutil.Process | None = None
        if not reserved or not children_files():
            try:
                self._root = psutil.Process(pid)
            except psutil.Error:
                self._root = None

    @property
    def known_descendants(self) -> list[psutil.Process]:
        """Descendants seen so far (some may be gone)."""
        return list(self._members.values())

    def snapshot(self) -> None:
        """Remember the root's current descendants (one walk over ``/proc``)."""
        self._remember(self._children())

    def adopt_strays(self, marker: str, pipe_fds: list[int]) -> int:
        """Remember descendants that escaped the tree; return how many were found.

        A process the CLI started and left behind between two snapshots is re-parented and
        can't be found from the CLI any more. Two traces still tie it to this turn: the
        marker variable every turn puts in the CLI's environment (inherited unless a
        program scrubs it), and the far end of the turn's stdout/stderr pipes (our own
        ends are close-on-exec, so only descendants can hold them). One pass over
        ``/proc``, synchronous (:meth:`collect` makes it in a worker thread). Linux only.
        """
        return self._remember(self._strays(marker.encode(), _pipe_targets(pipe_fds)))

    async def collect(self, marker: str | None = None, pipe_fds: Sequence[int] = ()) -> int:
        """:meth:`snapshot` and, given the turn's ``marker``, :meth:`adopt_strays`, walking
        ``/proc`` in a worker thread (the members are only changed here, in the caller's
        thread); how many new members were found.

        Without a ``marker``, a root with no child but the ignored ones (the common case at
        the end of a turn) is seen from the caller's thread, with no thread at all."""
        if marker is None and self._childless():
            return 0
        targets = _pipe_targets(pipe_fds) if marker is not None else set()
        needle = marker.encode() if marker is not None else None
        found = await trio.to_thread.run_sync(self._scan, needle, targets)
        return self._remember(found)

    def _childless(self) -> bool:
        """The root has no child but the ignored ones (the root gone counts too), as its
        children files tell; ``False`` when the kernel has none."""
        if not children_files():
            return False
        found = children(self.pid)
        return found is not None and not set(found) - self.ignore

    def _scan(self, marker: bytes | None, targets: set[str]) -> list[psutil.Process]:
        found = self._children()
        if marker is not None:
            found += self._strays(marker, targets)
        return found

    def _children(self) -> list[psutil.Process]:
        if not children_files():
            if self._root is None:
                return []
            try:
                return self._root.children(recursive=True)
            except psutil.Error:
                return []
        if not self.reserved and (self._root is None or not is_alive(self._root)):
            return []  # gone (its pid may be another's), or a zombie: it has no children
        found = []
        for pid in descendants(self.pid):
            try:
                found.append(psutil.Process(pid))
            except psutil.Error:
                continue
        return found

    def _strays(self, marker: bytes, targets: set[str]) -> list[psutil.Process]:
        exclude = {os.getpid(), self.pid, *self.ignore}  # known members: _remember skips
        found = []
        for pid in find_strays(marker, targets, exclude=exclude):
            try:
                found.append(psutil.Process(pid))
            except psutil.Error:
                continue
        return found

    def _remember(self, found: Iterable[psutil.Process]) -> int:
        added = 0
        for proc in found:
            if proc.pid not in self._members and proc.pid not in self.ignore:
                self._members[proc.pid] = proc
                added += 1
        return added

    def signal_root_group(self, sig: signal.Signals) -> bool:
        """Signal the root's process group (the CLI runs as a session and group leader)."""
        return signal_group(self.pid, sig)

    def signal_descendants(self, sig: signal.Signals) -> int:
        """Signal every remembered descendant still alive; return how many were signalled."""
        count = 0
        for proc in self.alive_descendants():
            try:
                proc.send_signal(sig)
            except psutil.Error:
                continue
            count += 1
        return count

    def alive_descendants(self) -> list[psutil.Process]:
        """Remembered descendants that are still running (zombies count as gone)."""
        return [p for p in self._members.values() if is_alive(p)]

    async def wait_descendants_gone(self, timeout: float = math.inf) -> list[psutil.Process]:
        """Poll until no remembered descendant is alive, or ``timeout``; return survivors."""
        with trio.move_on_after(timeout):
            # Polling: the death of a process that is not our child raises no event.
            while self.alive_descendants():  # noqa: ASYNC110
                await trio.sleep(_POLL_S)
        return self.alive_descendants()


@cache
def children_files() -> bool:
    """Whether this kernel has ``/proc/PID/task/TID/children`` (Linux 3.5+ with
    ``CONFIG_PROC_CHILDREN``, which every major distribution's kernel has)."""
    return os.path.exists(f"/proc/self/task/{os.getpid()}/children")


def children(pid: int) -> list[int] | None:
    """The pids of ``pid``'s children, from the children file of each of its threads (a
    child is listed under the thread that started it); empty when ``pid`` is gone, ``None``
    when the kernel has no children files. The lists are the kernel's at the time of each
    read: a process re-parented to ``pid`` meanwhile may be missing."""
    if not children_files():
        return None
    return children_of(pid)


def descendants(pid: int) -> list[int]:
    """The pids of every descendant of ``pid``, parents before their children, walking down
    from it (:func:`children`): as many reads as the tree has processes, none for the rest
    of the host. Empty when the kernel has no children files."""
    found: list[int] = []
    seen = {pid}
    pending = [pid]
    while pending:
        for child in children(pending.pop()) or ():
            if child not in seen:  # a pid reused within the walk could loop
                seen.add(child)
                found.append(child)
                pending.append(child)
    return found


def _pipe_targets(fds: Sequence[int]) -> set[str]:
    """The ``/proc`` links (``pipe:[INODE]``) of those of ``fds`` that are pipes."""
    targets: set[str] = set()
    for fd in fds:
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("pipe:"):
            targets.add(target)
    return targets


def find_strays(marker: bytes, pipes: set[str], *, exclude: set[int]) -> list[int]:
    """Pids (not in ``exclude``) whose environment holds ``marker`` (a ``NAME=value``
    entry) or that hold a pipe whose ``/proc`` link is in ``pipes``."""
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    found: list[int] = []
    for entry in entries:
        if not entry.isdigit() or int(entry) in exclude:
            continue
        if _environ_has(entry, marker) or (pipes and _holds_pipe(entry, pipes)):
            found.append(int(entry))
    return found


def _environ_has(pid: str, marker: bytes) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            environ = f.read()
    except OSError:  # gone, or not ours to look at
        return False
    return marker in environ.split(b"\0")


def _holds_pipe(pid: str, pipes: set[str]) -> bool:
    fd_dir = f"/proc/{pid}/fd"
    try:
        names = os.listdir(fd_dir)
    except OSError:
        return False
    for name in names:
        try:
            if os.readlink(f"{fd_dir}/{name}") in pipes:
                return True
        except OSError:
            continue
    return False


def is_alive(proc: psutil.Process) -> bool:
    """Whether ``proc`` runs (a zombie, or a process gone, does not)."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
