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

A descendant that escaped between two collections (the CLI started it and exited, with no
subreaper above it) is still found by the marker in its environment or by the turn's pipes
it holds: :meth:`ProcessTree.adopt_strays`.

The walks over ``/proc`` take milliseconds (more on a busy machine): the event loop's
callers use :meth:`ProcessTree.collect`, which walks in a worker thread.
"""

from __future__ import annotations

import math
import os
import signal
from collections.abc import Iterable, Sequence

import psutil
import trio

from nexo_trio.engine.stopping import signal_group

_POLL_S = 0.02


class ProcessTree:
    """The root process and every descendant it has been seen to have (but ``ignore``)."""

    def __init__(self, pid: int, *, ignore: Iterable[int] = ()) -> None:
        self.pid = pid
        self.ignore = frozenset(ignore)
        """Pids never taken as members (the CLI under a subreaper: signalled on its own)."""
        self._members: dict[int, psutil.Process] = {}
        try:
            self._root: psutil.Process | None = psutil.Process(pid)
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
        thread); how many new members were found."""
        targets = _pipe_targets(pipe_fds) if marker is not None else set()
        needle = marker.encode() if marker is not None else None
        found = await trio.to_thread.run_sync(self._scan, needle, targets)
        return self._remember(found)

    def _scan(self, marker: bytes | None, targets: set[str]) -> list[psutil.Process]:
        found = self._children()
        if marker is not None:
            found += self._strays(marker, targets)
        return found

    def _children(self) -> list[psutil.Process]:
        if self._root is None:
            return []
        try:
            return self._root.children(recursive=True)
        except psutil.Error:
            return []

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
