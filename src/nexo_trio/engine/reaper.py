"""The parent of an unconfined check: a child subreaper that leaves nothing of it running.

Started by :func:`nexo_trio.engine.capture.run_captured` (when no sandbox confines the check)
as ``python -I -S reaper.py --status-fd N --grace S -- COMMAND...``, in a session of its own,
with the check's stdout and stderr pipes and, on stdin, a pipe whose other end only the
orchestrator holds: the *lifeline*.

It makes itself a child subreaper (``prctl(PR_SET_CHILD_SUBREAPER)``), so every process the
command starts, however it detaches (``setsid``, a double fork, ``nohup ... &``), is
re-parented to it rather than to init when its parent dies: it stays a descendant of this
process and is found by walking the process tree down from here. Then it runs COMMAND (stdin
``/dev/null``, in this process group) and:

- when COMMAND exits: reports its status, SIGKILLs every descendant left, reaps, exits 0;
- when asked to stop, by end-of-file on the lifeline (the orchestrator closed it, or died,
  even of a SIGKILL) or by a SIGTERM: SIGTERM to every descendant, up to ``--grace`` seconds
  for them to go, SIGKILL to whatever is left, reap, report, exit 0.

Either way the kill is bounded (:data:`KILL_BOUND`): a process stuck in the kernel is given up
on and reported. Descendants are signalled through a pidfd opened while the process is seen
to be the child of the parent it was found under, so a reused pid is never signalled.

Reports on fd N, one JSON object a line: ``{"pid": P}`` once COMMAND runs; ``{"exit": CODE}``
when it ended (negative: killed by that signal); ``{"error": ERRNO, "message": ...,
"filename": ...}`` when it could not be started (the helper then exits 127);
``{"survivors": K}`` when processes were still there at the end of the kill bound.

What it cannot catch: a process that kills this helper (``kill -9 $PPID``) before it ends, or
one started by another service on its behalf (``systemd-run``, ``at``). Bubblewrap's PID
namespace, where it works, has neither hole (``engine/capture.py``).

Standard library only, started with ``-I -S``: a few tens of milliseconds per check.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import select
import signal
import subprocess
import sys
import time
from typing import Final

PR_SET_CHILD_SUBREAPER: Final = 36
KILL_BOUND: Final = 3.0
"""How long the final SIGKILL rounds may take before the survivors are given up on."""
_POLL_S: Final = 0.01
USAGE: Final = "usage: reaper.py --status-fd N [--grace SECONDS] -- COMMAND..."


def main(argv: list[str]) -> int:
    """Parse the options, run the command, leave nothing of it behind."""
    try:
        split = argv.index("--")
        options, command = argv[:split], argv[split + 1 :]
        status_fd = int(options[options.index("--status-fd") + 1])
        grace = float(options[options.index("--grace") + 1]) if "--grace" in options else 1.0
    except (ValueError, IndexError):
        print(USAGE, file=sys.stderr)
        return 2
    if not command:
        print(USAGE, file=sys.stderr)
        return 2
    return Reaper(status_fd).run(command, grace)


class Reaper:
    """One run: the command, its status, and the signals that wake the loop."""

    def __init__(self, status_fd: int) -> None:
        self.status_fd = status_fd
        self.me = os.getpid()
        self.command_pid = -1
        self.status: int | None = None
        self.childless = False
        self.stop = False
        # Signals wake the select() of the loop through this pipe.
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(self.wake_w)
        # Handlers, not SIG_IGN: an exec resets handled signals, but inherits ignored ones.
        signal.signal(signal.SIGCHLD, _ignore)
        signal.signal(signal.SIGTERM, self._on_stop)

    def _on_stop(self, signum: int, frame: object) -> None:
        self.stop = True

    def report(self, **fields: object) -> None:
        """One line of status for the orchestrator (gone: never mind)."""
        with contextlib.suppress(OSError):
            os.write(self.status_fd, json.dumps(fields).encode() + b"\n")

    def run(self, command: list[str], grace: float) -> int:
        """Run ``command`` to its end or until told to stop; kill what is left."""
        _become_subreaper()
        try:
            child = subprocess.Popen(command, stdin=subprocess.DEVNULL)
        except OSError as exc:
            self.report(error=exc.errno, message=exc.strerror, filename=_text(exc.filename))
            return 127
        self.command_pid = child.pid
        self.report(pid=child.pid)
        while True:
            self.reap()
            if self.status is not None or self.stop:
                break
            ready, _, _ = select.select([0, self.wake_r], [], [])
            if 0 in ready and not os.read(0, 4096):
                self.stop = True  # the lifeline ended: the orchestrator wants this over
            self._drain_wakeups()
        if self.status is None:
            self.terminate(grace)
        survivors = self.kill_all(KILL_BOUND)
        child.returncode = self.status  # reaped here, not by Popen
        if survivors:
            self.report(survivors=survivors)
        return 0

    def reap(self) -> None:
        """Reap every exited child; note the command's status when it is among them."""
        while True:
            try:
                pid, wait_status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.childless = True
                return
            if pid == 0:
                return
            if pid == self.command_pid:
                self.status = os.waitstatus_to_exitcode(wait_status)
                self.report(exit=self.status)

    def terminate(self, grace: float) -> None:
        """SIGTERM to every descendant; up to ``grace`` for all of them to go."""
        self.signal_all(signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            self.reap()
            if self.childless or not any(alive for _, _, alive in self.descendants()):
                return
            self._pause()

    def kill_all(self, bound: float) -> int:
        """SIGKILL every descendant until none is left (how many were, after ``bound``)."""
        deadline = time.monotonic() + bound
        while True:
            self.reap()
            if self.childless:  # no child at all, so no descendant either
                return 0
            found = self.descendants()
            if time.monotonic() >= deadline:
                return sum(1 for _, _, alive in found if alive)
            self.signal_all(signal.SIGKILL, found)
            self._pause()

    def signal_all(
        self, sig: signal.Signals, found: list[tuple[int, int, bool]] | None = None
    ) -> None:
        """Send ``sig`` to every live descendant."""
        for pid, parent, alive in self.descendants() if found is None else found:
            if alive:
                _send(pid, parent, sig)

    def descendants(self) -> list[tuple[int, int, bool]]:
        """``(pid, parent, alive)`` of every descendant, parents before their children."""
        tree = _process_tree()
        found: list[tuple[int, int, bool]] = []
        pending = [self.me]
        while pending:
            parent = pending.pop()
            for pid, alive in tree.get(parent, ()):
                found.append((pid, parent, alive))
                pending.append(pid)
        return found

    def _pause(self) -> None:
        select.select([self.wake_r], [], [], _POLL_S)
        self._drain_wakeups()

    def _drain_wakeups(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self.wake_r, 4096):
                pass


def _ignore(signum: int, frame: object) -> None:
    return


def _become_subreaper() -> None:
    """Make orphaned descendants ours (Linux 3.4+); without it, only the group is covered."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def _process_tree() -> dict[int, list[tuple[int, bool]]]:
    """Every process's children as ``(pid, alive)``, from one pass over ``/proc``.

    (``/proc/PID/task/TID/children`` would be cheaper, but not every kernel has it.)
    """
    tree: dict[int, list[tuple[int, bool]]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return tree
    for entry in entries:
        if not entry.isdigit():
            continue
        stat = _stat(int(entry))
        if stat is not None:
            state, ppid = stat
            tree.setdefault(ppid, []).append((int(entry), state != "Z"))
    return tree


def _stat(pid: int) -> tuple[str, int] | None:
    """The state letter and parent pid of ``pid``, or ``None`` when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # "PID (COMM) STATE PPID ...": COMM may hold spaces and parentheses, so split after it.
    fields = data.rpartition(b")")[2].split()
    try:
        return fields[0].decode(), int(fields[1])
    except (IndexError, ValueError):
        return None


def _send(pid: int, parent: int, sig: signal.Signals) -> None:
    """Signal ``pid`` only if it still is the child of ``parent`` it was found as.

    The pidfd pins the process: once it is open, checking the parent rules out a reused pid.
    """
    try:
        fd = os.pidfd_open(pid)
    except AttributeError:  # no pidfds in this Python: signal by pid
        with contextlib.suppress(OSError):
            os.kill(pid, sig)
        return
    except OSError:  # gone (or no pidfds in this kernel: then it is reaped next round)
        if parent == os.getpid():
            with contextlib.suppress(OSError):
                os.kill(pid, sig)  # our own child: its pid is reserved until we reap it
        return
    try:
        stat = _stat(pid)
        if stat is not None and stat[1] == parent:
            signal.pidfd_send_signal(fd, sig)
    except OSError:
        pass
    finally:
        os.close(fd)


def _text(value: object) -> str | None:
    return None if value is None else os.fsdecode(value) if isinstance(value, bytes) else str(value)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
