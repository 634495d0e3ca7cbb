"""A child process forked in the calling (trio) thread, waited for through its pidfd.

What the engine needs of a child (:class:`~nexo_trio.engine.stopping.ChildProcess`), for the
processes it starts itself rather than through ``trio.Process``: the per-turn helper
(:mod:`.reaped`) and bwrap (:mod:`.confined`). ``subprocess`` forks with ``vfork``, so the
fork waits only for the exec, and a worker thread would cost more than the fork.

Its pidfd is opened at once (the pid is ours until we reap it): :meth:`wait_exited` waits on
it without reaping, so the pid (and its process group's id) stays reserved; :meth:`wait`
reaps. Unlike ``trio.Process``, :attr:`returncode` never reaps.
"""

from __future__ import annotations

import os
import subprocess
from typing import Final

import trio

_POLL_S: Final = 0.02
"""How often a child is polled where there are no pidfds (Linux < 5.3)."""


class ForkedProcess:
    """A started child with trio streams on its pipes (see the module docstring)."""

    def __init__(
        self,
        popen: subprocess.Popen[bytes],
        *,
        stdin: trio.lowlevel.FdStream | None,
        stdout: trio.lowlevel.FdStream,
        stderr: trio.lowlevel.FdStream,
    ) -> None:
        self._popen = popen
        self.pid: Final = popen.pid
        self.stdin: trio.abc.SendStream | None = stdin
        self.stdout = stdout
        self.stderr = stderr
        self._lock = trio.Lock()
        self._pidfd: int | None
        try:
            self._pidfd = os.pidfd_open(popen.pid)
        except (AttributeError, OSError):  # no pidfds (Linux < 5.3): poll instead
            self._pidfd = None

    @property
    def returncode(self) -> int | None:
        """The exit status once reaped (negative: the signal that killed it), else ``None``."""
        return self._popen.returncode

    def poll(self) -> int | None:
        """Reap the child if it has exited; its exit status, else ``None``."""
        code = self._popen.poll()
        if code is not None:
            self._release_pidfd()
        return code

    def exit_status(self) -> int | None:
        """The exit status (negative: the signal that killed it) once it has exited, read
        without reaping it (``WNOWAIT``); ``None`` while it runs."""
        if self._popen.returncode is not None:
            return self._popen.returncode
        try:
            info = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:  # reaped meanwhile (by poll): its status is known
            return self._popen.poll()
        if info is None:
            return None
        return info.si_status if info.si_code == os.CLD_EXITED else -abs(info.si_status)

    async def wait_exited(self) -> None:
        """Until the child has exited, left unreaped (a zombie): its pid, and so its
        process group's id, stays reserved until :meth:`wait` or :meth:`poll`."""
        if self.exit_status() is not None:
            await trio.lowlevel.checkpoint()
            return
        async with self._lock:
            while self.exit_status() is None:
                if self._pidfd is None:
                    await trio.sleep(_POLL_S)
                    continue
                try:
                    await trio.lowlevel.wait_readable(self._pidfd)
                except trio.ClosedResourceError:  # reaped meanwhile (by poll)
                    continue

    async def wait(self) -> int:
        """Wait for the child to exit, reap it, return its exit status."""
        await self.wait_exited()
        code = self.poll()
        if code is None:  # it has exited: this does not block
            code = self._popen.wait()
            self._release_pidfd()
        return code

    def _release_pidfd(self) -> None:
        if self._pidfd is not None:
            trio.lowlevel.notify_closing(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None

    def release(self) -> None:
        """Close the pidfd (the pipes are the caller's to close)."""
        self._release_pidfd()
