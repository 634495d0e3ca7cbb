"""A command run under the subreaper helper: the orchestrator's side of
:mod:`nexo_trio.engine.reaper`, for an unconfined turn's CLI and an unconfined check alike.

:meth:`Reaped.start` starts the helper (in a session of its own) with three pipes besides the
command's output: the *lifeline* on its stdin, whose write end only this process holds; the
helper's report pipe; with ``stdin_pipe``, the command's stdin. Then:

- the helper's reports are read by whichever task waits for one of them
  (:meth:`Reaped.wait_started`, :meth:`Reaped.wait_reported`, :meth:`Reaped.wait`,
  :meth:`Reaped.serve`), one at a time;
- :meth:`Reaped.signal_command` asks the helper to signal the command (its process group
  with ``session``): a byte on the lifeline, written without blocking. The helper sends it
  only while it has not reaped the command, so a reused pid is never signalled;
- :meth:`Reaped.close` ends the lifeline: the helper SIGTERMs whatever is left of the
  command's tree, waits its grace, SIGKILLs and exits; past its bound its process group is
  SIGKILLed and it is reaped. The lifeline also ends when this process dies, even of a
  SIGKILL: then the helper does the same on its own, and nothing of the command outlives us.

A :class:`Reaped` stands for the *command* where the engine expects a child process
(:class:`~nexo_trio.engine.stopping.ChildProcess`): ``pid`` and ``returncode`` are the
command's, ``wait`` waits for the command (not for the helper, which with ``linger`` stays
until the command's leftovers are gone), ``stdout`` and ``stderr`` are the output pipes;
:attr:`Reaped.helper` is the helper process itself (a :class:`Helper`).

What a turn pays for all this is kept small (it is a fixed cost of every turn): the helper is
forked in the calling thread (``subprocess`` forks with ``vfork``: no worker thread to hop
to, which costs more than the fork), its exit is awaited and it is reaped through one pidfd,
opened at its start, and the command is held by a pidfd too (opened once the helper names
it, and kept only if the command is then still the helper's child), not a psutil handle.
Without pidfds (Linux before 5.3) both fall back to polling (and psutil for the command).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import select
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final

import psutil
import trio

from nexo_trio.engine import reaper
from nexo_trio.engine.forked import ForkedProcess
from nexo_trio.engine.process_tree import is_alive
from nexo_trio.engine.stopping import REAP_TIMEOUT, reap, signal_group

HELPER_MARGIN: Final = 1.0
"""Time on top of its own bounds for the helper to exit before it is SIGKILLed."""
_REQUESTS: Final = {signal.SIGTERM: b"t", signal.SIGKILL: b"k"}
_POLL_S: Final = 0.02


class ReaperStartError(OSError):
    """The helper did not start the command, for a reason of its own (its message says
    which); an ``OSError`` like any failure to start a process."""


class Helper(ForkedProcess):
    """The helper process: our child, forked in the calling thread (see
    :mod:`~nexo_trio.engine.forked`), with trio streams on its output pipes. Its stdin is
    the lifeline, held by :class:`Reaped`: :attr:`stdin` is always ``None``."""

    def __init__(
        self,
        popen: subprocess.Popen[bytes],
        *,
        stdout: trio.lowlevel.FdStream,
        stderr: trio.lowlevel.FdStream,
    ) -> None:
        super().__init__(popen, stdin=None, stdout=stdout, stderr=stderr)


class Reaped:
    """One command under the helper (see the module docstring)."""

    def __init__(
        self,
        helper: Helper,
        *,
        lifeline: int,
        status: trio.lowlevel.FdStream,
        stdin: trio.lowlevel.FdStream | None,
        grace: float,
    ) -> None:
        self.helper = helper
        self.stdin = stdin
        self._lifeline = lifeline
        self._status = status
        self.helper_bound = grace + reaper.KILL_BOUND + HELPER_MARGIN
        """How long the helper may take to stop the command and exit once told to."""
        self.stop_budget = self.helper_bound + REAP_TIMEOUT + 1.0
        """The longest :meth:`close` takes."""
        self.command_pid: int | None = None
        self.command_status: int | None = None
        """The command's exit status (negative: the signal that killed it), once known."""
        self.error: OSError | None = None
        """Why the command could not be started, if the helper said so."""
        self.survivors = 0
        """Processes the helper gave up on (stuck in the kernel past its kill bound)."""
        self.silence: float | None = None
        """The heartbeat's bound, when the helper stopped the command for want of beats."""
        self.started = trio.Event()
        """The helper started the command (``command_pid``), or said why not, or ended."""
        self.reported = trio.Event()
        """The helper said how the command ended, or ended itself."""
        self.status_done = trio.Event()
        """The helper closed its report pipe: it exited."""
        self._command: _Command | None = None
        self._buffer = b""
        self._reading = trio.Lock()

    @classmethod
    async def start(
        cls,
        argv: Sequence[str],
        *,
        cwd: Path | str | None,
        env: Mapping[str, str] | None,
        grace: float,
        stdin_pipe: bool = False,
        session: bool = False,
        linger: bool = False,
        heartbeat: float | None = None,
    ) -> Reaped:
        """Start ``argv`` under the helper (see :mod:`~nexo_trio.engine.reaper` for
        ``session`` and ``linger``); with ``stdin_pipe`` the command's stdin is a pipe
        (:attr:`stdin`), else ``/dev/null``. Raises ``OSError`` when the helper cannot be
        started (a missing ``cwd``, say); a command that cannot be started is reported
        (:attr:`error`, once :meth:`wait_started` returned)."""
        environ = os.environ if env is None else env
        await trio.lowlevel.checkpoint_if_cancelled()
        ours: list[int] = []
        theirs: list[int] = []
        try:
            lifeline_r, lifeline_w = os.pipe()
            theirs.append(lifeline_r)
            ours.append(lifeline_w)
            status_r, status_w = os.pipe()
            ours.append(status_r)
            theirs.append(status_w)
            out_r, out_w = os.pipe()
            ours.append(out_r)
            theirs.append(out_w)
            err_r, err_w = os.pipe()
            ours.append(err_r)
            theirs.append(err_w)
            command = [sys.executable, "-I", "-S", reaper.__file__, "--status-fd", str(status_w)]
            command += ["--grace", repr(grace), *_locale_options(environ)]
            if stdin_pipe:
                stdin_r, stdin_w = os.pipe()
                theirs.append(stdin_r)
                ours.append(stdin_w)
                command += ["--stdin-fd", str(stdin_r)]
            if cwd is not None:
                command += ["--cwd", str(cwd)]  # its chdir may block: the helper's, not ours
            command += [*(["--session"] if session else []), *(["--linger"] if linger else [])]
            if heartbeat is not None:
                command += ["--heartbeat", repr(heartbeat)]  # then :meth:`beat`, often
            popen = _fork(
                [*command, "--", *argv],
                stdio=(lifeline_r, out_w, err_w),
                env=env,
                pass_fds=tuple(fd for fd in theirs if fd not in (lifeline_r, out_w, err_w)),
            )
        except BaseException:
            for fd in ours:
                os.close(fd)
            raise
        finally:
            for fd in theirs:
                os.close(fd)
        os.set_blocking(lifeline_w, False)  # requests are written from sync code
        helper = Helper(
            popen, stdout=trio.lowlevel.FdStream(out_r), stderr=trio.lowlevel.FdStream(err_r)
        )
        return cls(
            helper,
            lifeline=lifeline_w,
            status=trio.lowlevel.FdStream(status_r),
            stdin=trio.lowlevel.FdStream(stdin_w) if stdin_pipe else None,
            grace=grace,
        )

    # ------------------------------------------------------------------ the command

    @property
    def pid(self) -> int:
        """The command's pid (the helper's until the command is started)."""
        return self.command_pid if self.command_pid is not None else self.helper.pid

    @property
    def returncode(self) -> int | None:
        """The command's exit status once it is known (see :meth:`wait`)."""
        return self.command_status

    @property
    def stdout(self) -> trio.abc.ReceiveStream | None:
        """The command's stdout pipe (the helper keeps none of it)."""
        return self.helper.stdout

    @property
    def stderr(self) -> trio.abc.ReceiveStream | None:
        """The command's stderr pipe."""
        return self.helper.stderr

    async def wait(self) -> int:
        """Wait until the command has ended; its exit status.

        When the helper ended without saying (it was killed), nobody can reap the command
        any more: a command still running is SIGKILLed by pid (a pid-reuse-safe handle),
        which is then its status; one already gone gets the helper's status."""
        await self.wait_reported()
        if self.command_status is None:
            self.command_status = await self._orphaned_status()
        return self.command_status

    async def _orphaned_status(self) -> int:
        command = self._command
        if command is not None and command.alive():
            command.send_signal(signal.SIGKILL)
            await command.wait_gone()
            return -signal.SIGKILL
        return await self.helper.wait()

    def signal_command(self, sig: signal.Signals) -> bool:
        """Ask the helper to send ``sig`` (SIGTERM or SIGKILL) to the command (its group
        with ``session``); ``False`` when the command is known to have ended or the helper
        is gone. Without a helper to ask, a SIGKILL goes to the command by pid."""
        if self.command_status is not None:
            return False
        if self.status_done.is_set() or self._lifeline < 0:
            return self._signal_orphan(sig)
        try:
            os.write(self._lifeline, _REQUESTS[sig])
        except BlockingIOError:
            return True  # thousands of requests pending: the helper is reading them
        except OSError:  # EPIPE: the helper is gone
            return self._signal_orphan(sig)
        return True

    def beat(self) -> None:
        """Tell the helper this process is alive (with ``heartbeat``: a lifeline silent
        that long is a stop). Never blocks; a helper that is gone is no problem."""
        if self._lifeline < 0:
            return
        with contextlib.suppress(OSError):  # full (it is reading), or EPIPE (it is gone)
            os.write(self._lifeline, b"h")

    def _signal_orphan(self, sig: signal.Signals) -> bool:
        command = self._command
        if self.command_status is not None or command is None or not command.alive():
            return False
        return command.send_signal(sig)

    # ------------------------------------------------------------------ the reports

    async def wait_started(self) -> None:
        """Until the helper started the command, or said why not, or ended. No deadline of
        ours: the helper answers within its own start bound (``reaper.START_BOUND``) or
        dies, and either ends this wait."""
        await self._read_until(self.started)

    async def wait_reported(self) -> None:
        """Until the helper said how the command ended, or ended itself."""
        await self._read_until(self.reported)

    async def serve(self) -> None:
        """Read the helper's reports until it exits."""
        await self._read_until(self.status_done)

    async def _read_until(self, event: trio.Event) -> None:
        # Any waiter reads (one at a time): a report one reads wakes the others' events.
        while not event.is_set() and not self.status_done.is_set():
            async with self._reading:
                if event.is_set() or self.status_done.is_set():
                    return
                try:
                    chunk = await self._status.receive_some(4096)
                except (trio.ClosedResourceError, trio.BrokenResourceError):
                    chunk = b""
                if not chunk:
                    self._ended()
                    return
                self._feed(chunk)

    def _feed(self, chunk: bytes) -> None:
        *lines, self._buffer = (self._buffer + chunk).split(b"\n")
        for line in lines:
            self._report(line)

    def _ended(self) -> None:
        if self._buffer:
            self._report(self._buffer)
        self._buffer = b""
        for event in (self.started, self.reported, self.status_done):
            event.set()

    def _report(self, line: bytes) -> None:
        try:
            report = json.loads(line)
        except ValueError:
            return
        if not isinstance(report, dict):
            return
        if isinstance(pid := report.get("pid"), int) and self.command_pid is None:
            self.command_pid = pid
            self._command = _Command.open(pid, self.helper.pid)
            self.started.set()
        if isinstance(code := report.get("exit"), int):
            self.command_status = code
            self.reported.set()
        if isinstance(number := report.get("error"), int):
            message, filename = report.get("message"), report.get("filename")
            self.error = OSError(number, message or os.strerror(number), filename)
            self.started.set()
        if isinstance(count := report.get("survivors"), int):
            self.survivors = count
        if isinstance(silence := report.get("silence"), int | float):
            self.silence = float(silence)

    # ------------------------------------------------------------------ the end

    def end_lifeline(self) -> None:
        """Tell the helper to stop the command and everything it started (idempotent)."""
        if self._lifeline >= 0:
            os.close(self._lifeline)
            self._lifeline = -1

    async def close(self) -> None:
        """End the lifeline and wait (bounded) for the helper to leave nothing and exit;
        past its bound, SIGKILL its process group; reap it; read its last reports."""
        self.end_lifeline()
        await self.finish(self.helper_bound)

    async def finish(self, bound: float) -> None:
        """Up to ``bound`` for the helper to exit by itself, then SIGKILL to its process
        group (still reserved: the helper is not reaped yet); reap; its last reports."""
        helper = self.helper
        if helper.exit_status() is None:
            with trio.move_on_after(bound):
                await helper.wait_exited()
        signal_group(helper.pid, signal.SIGKILL)
        if helper.exit_status() is not None:
            helper.poll()  # it has exited: reaped at once
        else:
            await reap(helper)
        # Exited, the helper has closed its report pipe (only it held it): what is left
        # of its reports is read at once, with no wait.
        if not self._drain():
            with trio.move_on_after(1.0):
                await self.serve()

    def _drain(self) -> bool:
        """Read the reports already there, without waiting; whether the pipe has ended."""
        if self.status_done.is_set():
            return True
        if self._reading.locked():
            return False  # a waiter is reading: it reads the rest
        try:
            fd = self._status.fileno()
        except trio.ClosedResourceError:
            self._ended()
            return True
        while True:
            try:
                chunk = os.read(fd, 4096)
            except BlockingIOError:
                return False
            except OSError:
                chunk = b""
            if not chunk:
                self._ended()
                return True
            self._feed(chunk)

    def release(self) -> None:
        """Close what is left of ours (the output pipes are the caller's to close)."""
        self.end_lifeline()
        self._status.close()
        self.helper.release()
        if self._command is not None:
            self._command.close()


def _fork(
    argv: list[str],
    *,
    stdio: tuple[int, int, int],
    env: Mapping[str, str] | None,
    pass_fds: tuple[int, ...],
) -> subprocess.Popen[bytes]:
    """Start the helper in a session of its own (no terminal's Ctrl-C reaches it), forked
    here, in the calling (trio) thread: ``subprocess`` forks with ``vfork``, so this waits
    only for the exec of our own interpreter, and a worker thread would cost more than the
    fork (as ``engine.confined`` forks bwrap). It starts in our working directory: the
    helper itself changes to the command's (``--cwd``), so a workspace on a hung file system
    blocks the helper, never the event loop. Raises ``OSError`` like any spawn."""
    stdin, stdout, stderr = stdio
    return subprocess.Popen(
        argv,
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
        env=env,
        start_new_session=True,
        pass_fds=pass_fds,
    )


def _locale_options(env: Mapping[str, str]) -> list[str]:
    """The helper's interpreter coerces a C ``LC_CTYPE`` to UTF-8 in its environment (PEP
    538, which ``-I`` does not turn off): give the command the one it was meant to get."""
    value = env.get("LC_CTYPE")
    return ["--unsetenv", "LC_CTYPE"] if value is None else ["--setenv", f"LC_CTYPE={value}"]


class _Command:
    """A handle on the command (the helper's child, not ours) that a reused pid cannot
    fool: a pidfd, or where there are none a psutil handle (which checks the start time).

    Opened only while the command is seen to be the helper's child: the helper is ours and
    not reaped, so its pid is not reused, and the command's pid is not either while the
    pidfd is open."""

    def __init__(self, pidfd: int | None, process: psutil.Process | None) -> None:
        self._pidfd = pidfd
        self._process = process

    @classmethod
    def open(cls, pid: int, parent: int) -> _Command | None:
        """A handle on ``pid`` if it is ``parent``'s child, else ``None``."""
        try:
            pidfd = os.pidfd_open(pid)
        except AttributeError:  # no pidfds in this Python
            pidfd = None
        except OSError as exc:  # gone, or no pidfds in this kernel
            if exc.errno != errno.ENOSYS:
                return None
            pidfd = None
        if pidfd is None:
            try:
                process = psutil.Process(pid)
                return cls(None, process) if process.ppid() == parent else None
            except psutil.Error:
                return None
        if _parent_of(pid) != parent:
            os.close(pidfd)
            return None
        return cls(pidfd, None)

    def alive(self) -> bool:
        """Whether the command runs (a zombie does not)."""
        if self._pidfd is not None:
            readable, _, _ = select.select([self._pidfd], [], [], 0)
            return not readable
        return self._process is not None and is_alive(self._process)

    def send_signal(self, sig: signal.Signals) -> bool:
        """Send ``sig`` to the command; ``False`` when it is gone."""
        try:
            if self._pidfd is not None:
                signal.pidfd_send_signal(self._pidfd, sig)
            elif self._process is not None:
                self._process.send_signal(sig)
        except (OSError, psutil.Error):
            return False
        return True

    async def wait_gone(self) -> None:
        """Until the command has exited (the caller bounds the wait)."""
        if self._pidfd is None:
            while self.alive():  # noqa: ASYNC110 - not our child: no event for its end
                await trio.sleep(_POLL_S)
            return
        with contextlib.suppress(trio.ClosedResourceError):  # released meanwhile
            await trio.lowlevel.wait_readable(self._pidfd)

    def close(self) -> None:
        """Close the pidfd (idempotent)."""
        if self._pidfd is not None:
            trio.lowlevel.notify_closing(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None
        self._process = None


def _parent_of(pid: int) -> int | None:
    """The parent pid of ``pid`` (from ``/proc/PID/stat``: one small read that never waits
    for a disk), ``None`` when it is gone."""
    try:
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        data = os.read(fd, 4096)  # the fields up to the parent's come first
    except OSError:
        return None
    finally:
        os.close(fd)
    # "PID (COMM) STATE PPID ...": COMM may hold spaces and parentheses, so split after it.
    fields = data.rpartition(b")")[2].split()
    try:
        return int(fields[1])
    except (IndexError, ValueError):
        return None
