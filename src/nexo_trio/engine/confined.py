"""A turn inside bubblewrap: start it, learn its shape, signal it, tell a bwrap failure apart.

The processes of a confined turn, seen from the host::

    bwrap (monitor; our child, own session)
      └─ bwrap (init: pid 1 of the turn's PID namespace; session and group leader)
           └─ claude (pid 2) ── its Bash tools, MCP servers, their children ...

What bubblewrap does with signals (0.8.0, verified): the monitor forwards none, and dies of
a SIGTERM like any process, and then ``--die-with-parent`` SIGKILLs the init, so the CLI
never sees the SIGTERM; the init ignores a SIGTERM (an init of a PID namespace only gets
the signals it has a handler for, and bwrap's has none). So a graceful stop signals the
CLI's own process group (the init's, since ``--new-session`` calls ``setsid`` in the init
before it forks the CLI): the CLI stops its tools and MCP servers and exits, the init
reports its exit code (a death by signal N as ``128 + N``) and the monitor exits with it.
A SIGKILL goes to the init and to the monitor: killing the init of a PID namespace kills
everything in it, wherever it was reparented or whatever session it made for itself, and
nothing can leave a PID namespace. The monitor exits as soon as the CLI does, and with it
(``--die-with-parent``) the init and the rest of the namespace: nothing the turn started
outlives it, even a SIGKILL of the orchestrator. No ``/proc`` scan is needed to find
strays.

``--die-with-parent`` is ``PR_SET_PDEATHSIG``, which fires when the *thread* that forked
bwrap ends. ``trio.lowlevel.open_process`` forks in a worker thread of trio's cache, which
exits after 10 s idle and would take every longer turn down with it (verified: SIGKILL
after 10.0 s). So a confined turn is forked here, synchronously, in the trio thread
(:class:`ConfinedProcess`; the fork itself takes about a millisecond).

bwrap reports on a pipe (``--json-status-fd``): the init's pid at once, and the CLI's exit
code only if it really started the CLI. A bwrap that exits without that report failed to
set the sandbox up (or to exec the command), and its ``bwrap: ...`` lines on stderr say why:
:func:`describe_sandbox_failure`.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import struct
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final

import psutil
import trio

from nexo_trio.core.sandbox import BWRAP_INSTALL_HINT
from nexo_trio.engine.api_gateway import ApiGateway
from nexo_trio.engine.forked import ForkedProcess
from nexo_trio.engine.process_tree import is_alive
from nexo_trio.engine.stopping import signal_group

_POLL_S: Final = 0.02
BWRAP_PREFIX: Final = "bwrap: "


class SandboxStartError(OSError):
    """The sandbox could not be started (its message says why, for the outcome)."""


class ConfinedProcess(ForkedProcess):
    """A started bwrap, with trio streams on its pipes: what the supervisor needs of a
    ``trio.Process`` (``pid``, ``returncode``, ``stdin``/``stdout``/``stderr``, ``wait``),
    forked in the calling (trio) thread (:mod:`~nexo_trio.engine.forked`). See the module
    docstring for why."""

    @classmethod
    def start(
        cls,
        argv: Sequence[str],
        *,
        stdin_pipe: bool,
        cwd: str | os.PathLike[str] | None,
        env: Mapping[str, str],
        pass_fds: Sequence[int] = (),
    ) -> ConfinedProcess:
        """Fork and exec ``argv`` in a session of its own, with pipes on stdout and stderr
        (and stdin when ``stdin_pipe``, else ``/dev/null``). Raises ``OSError`` like
        ``subprocess.Popen``."""
        ours: list[int] = []
        theirs: list[int] = []
        try:
            if stdin_pipe:
                child_in, our_in = os.pipe()
                theirs.append(child_in)
                ours.append(our_in)
            out_r, out_w = os.pipe()
            ours.append(out_r)
            theirs.append(out_w)
            err_r, err_w = os.pipe()
            ours.append(err_r)
            theirs.append(err_w)
            popen = subprocess.Popen(
                list(argv),
                stdin=theirs[0] if stdin_pipe else subprocess.DEVNULL,
                stdout=out_w,
                stderr=err_w,
                cwd=cwd,
                env=dict(env),
                start_new_session=True,
                pass_fds=tuple(pass_fds),
            )
        except BaseException:
            for fd in ours:
                os.close(fd)
            raise
        finally:
            for fd in theirs:
                os.close(fd)
        return cls(
            popen,
            stdin=trio.lowlevel.FdStream(ours[0]) if stdin_pipe else None,
            stdout=trio.lowlevel.FdStream(out_r),
            stderr=trio.lowlevel.FdStream(err_r),
        )


class StatusPipe:
    """The pipe bwrap reports its status on (``--json-status-fd``)."""

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe()

    def child_started(self) -> trio.lowlevel.FdStream:
        """Close our copy of the write end (bwrap has its own now); the read end as a stream."""
        self.close_write_end()
        return trio.lowlevel.FdStream(self.read_fd)

    def close_write_end(self) -> None:
        """Close the write end (idempotent)."""
        if self.write_fd >= 0:
            os.close(self.write_fd)
            self.write_fd = -1

    def close(self) -> None:
        """Close both ends (when bwrap could not be started)."""
        self.close_write_end()
        os.close(self.read_fd)


class Sandbox:
    """The live view of one running sandbox: its init, its command, bwrap's reports."""

    def __init__(
        self,
        monitor_pid: int,
        status: trio.lowlevel.FdStream,
        *,
        gateway: ApiGateway | None = None,
    ) -> None:
        self.monitor_pid = monitor_pid
        self.gateway = gateway
        """The turn's API proxy (no network but the API), served by the turn's nursery."""
        self._status = status
        self._monitor: psutil.Process | None
        try:
            self._monitor = psutil.Process(monitor_pid)
        except psutil.Error:
            self._monitor = None
        self.init: psutil.Process | None = None
        self.command_ran = False
        """bwrap reported the command's exit code: it did start the command."""
        self.status_done = trio.Event()

    async def read_status(self) -> None:
        """Read bwrap's reports until it closes the pipe (a task of the turn's nursery)."""
        buffer = b""
        try:
            async with self._status:
                while True:
                    chunk = await self._status.receive_some(4096)
                    if not chunk:
                        break
                    buffer += chunk
                    *lines, buffer = buffer.split(b"\n")
                    for line in lines:
                        self._report(line)
            self._report(buffer)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass
        finally:
            self.status_done.set()

    def _report(self, line: bytes) -> None:
        try:
            report = json.loads(line)
        except ValueError:
            return
        if not isinstance(report, dict):
            return
        child_pid = report.get("child-pid")
        if isinstance(child_pid, int) and self.init is None:
            with contextlib.suppress(psutil.Error):
                self.init = psutil.Process(child_pid)
        if isinstance(report.get("exit-code"), int):
            self.command_ran = True

    def find_init(self) -> psutil.Process | None:
        """The init of the turn's PID namespace (reported by bwrap, else bwrap's child)."""
        if self.init is None and self._monitor_running():
            assert self._monitor is not None
            children = _children(self._monitor)
            if children:
                self.init = children[0]
        return self.init

    def _monitor_running(self) -> bool:
        """bwrap is still running (psutil rules out a reused pid)."""
        return self._monitor is not None and is_alive(self._monitor)

    def find_command(self) -> psutil.Process | None:
        """The confined command (the CLI): the init's first child, i.e. its child with the
        lowest pid inside the namespace (later children of the init are orphans the CLI
        left, all started after it)."""
        init = self.find_init()
        if init is None:
            return None
        children = _children(init)
        ranked = [(pid, child) for child in children if (pid := _ns_pid(child.pid)) is not None]
        return min(ranked, key=lambda pair: pair[0])[1] if ranked else None

    def terminate_command(self, sig: signal.Signals) -> bool:
        """Signal the command's process group (the CLI and the children it keeps in its
        group), or the command alone when its group is bwrap's; ``False`` when there is no
        command (yet, or any more)."""
        command = self.find_command()
        if command is None:
            return False
        try:
            pgid = os.getpgid(command.pid)
        except OSError:
            return False
        if pgid not in (self.monitor_pid, os.getpgrp()) and signal_group(pgid, sig):
            return True
        try:
            command.send_signal(sig)
        except psutil.Error:
            return False
        return True

    def kill(self) -> bool:
        """SIGKILL the namespace's init (the kernel then kills everything in the namespace)
        and bwrap's process group; whether anything was there to kill. Only while bwrap has
        not been reaped (its pid, the group's id, is reserved until then)."""
        killed = self.kill_init()
        return signal_group(self.monitor_pid, signal.SIGKILL) or killed

    def kill_init(self) -> bool:
        """SIGKILL the namespace's init, if it is still there (safe at any time)."""
        init = self.find_init()
        if init is None or not is_alive(init):
            return False
        try:
            init.kill()
        except psutil.Error:
            return False
        return True

    def init_alive(self) -> bool:
        """The namespace's init is still running (its death ends the whole namespace)."""
        return self.init is not None and is_alive(self.init)

    async def wait_init_gone(self, timeout: float) -> bool:
        """Poll up to ``timeout`` for the init to be gone; whether it is."""
        with trio.move_on_after(timeout):
            # Polling: the death of a process that is not our child raises no event.
            while self.init_alive():  # noqa: ASYNC110
                await trio.sleep(_POLL_S)
        return not self.init_alive()


def describe_sandbox_failure(stderr: str, returncode: int | None) -> str:
    """Say in words why bwrap did not start the command, from its stderr and exit status."""
    lines = [line.strip() for line in stderr.splitlines() if line.startswith(BWRAP_PREFIX)]
    if lines:
        detail = "; ".join(lines[-3:])
        return f"the sandbox could not be set up ({detail})"
    if returncode is not None and returncode < 0:
        name = signal.Signals(-returncode).name if -returncode in signal.valid_signals() else ""
        return f"the sandbox (bwrap) was killed by {name or -returncode} before claude started"
    tail = stderr.strip()[-500:]
    reason = f"the sandbox (bwrap) exited with code {returncode} before claude started"
    return f"{reason}: {tail}" if tail else reason


def describe_bwrap_spawn_error(bwrap: str, exc: OSError) -> str | None:
    """The reason for an ``OSError`` of starting bwrap itself; ``None`` when the error is
    about something else (the working directory)."""
    if exc.filename is not None and str(exc.filename) != bwrap:
        return None
    if isinstance(exc, FileNotFoundError):
        return f"{bwrap}: bubblewrap is not installed ({BWRAP_INSTALL_HINT})"
    return f"{bwrap}: {exc.strerror or exc}"


def missing_binary(binary: str, cwd: Path | None, path: str | None) -> OSError | None:
    """The ``OSError`` an exec of ``binary`` would raise here, or ``None`` if it would run.

    A confined CLI is exec'd by bwrap inside the sandbox, where a missing binary is only a
    line on stderr; the sandbox sees the host's file system, so this check on the host
    gives the same answer, in time to report it like an unconfined spawn failure. That
    includes a script whose ``#!`` interpreter is missing or not executable (the kernel's
    ``ENOENT`` / ``EACCES`` for the script itself): :func:`interpreter_problem`.
    """
    if "/" in binary:
        candidate = binary if os.path.isabs(binary) else os.path.join(cwd or os.getcwd(), binary)
        if not os.path.exists(candidate):
            return FileNotFoundError(2, "No such file or directory", binary)
        if os.path.isdir(candidate) or not os.access(candidate, os.X_OK):
            return PermissionError(13, "Permission denied", binary)
    else:
        found = find_binary(binary, cwd, path)
        if found is None:
            return FileNotFoundError(2, "No such file or directory", binary)
        candidate = found
    problem = interpreter_problem(candidate, cwd)
    if problem is None:
        return None
    error = FileNotFoundError if problem[0] == errno.ENOENT else PermissionError
    return error(problem[0], os.strerror(problem[0]), binary)


def find_binary(binary: str, cwd: Path | None, path: str | None) -> str | None:
    """The file an exec of ``binary`` runs: a path (relative to ``cwd``) as it is, a bare name
    looked up on ``path`` (``None``: the default search path) like ``execvp`` does; ``None``
    when there is no such executable file."""
    if "/" in binary:
        candidate = binary if os.path.isabs(binary) else os.path.join(cwd or os.getcwd(), binary)
        return candidate if os.path.exists(candidate) else None
    for directory in (path if path is not None else os.defpath).split(os.pathsep):
        candidate = os.path.join(directory or ".", binary)
        if not os.path.isabs(candidate):
            candidate = os.path.join(cwd or os.getcwd(), candidate)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


_MAX_INTERPRETERS: Final = 4
"""How deep the kernel follows ``#!`` interpreters that are scripts themselves."""
_PT_INTERP: Final = 3


def interpreter_problem(executable: str, cwd: Path | None = None) -> tuple[int, str] | None:
    """Why the kernel would refuse to exec ``executable`` (an existing file) for want of the
    interpreter it names: ``(errno, description)``, e.g. ``(ENOENT, "its interpreter
    /no/such/python does not exist")``; ``None`` when there is none to blame.

    The kernel reports a missing ``#!`` interpreter (or an ELF binary's missing dynamic
    loader) as ``ENOENT`` for the file it was asked to run, which exists: "no such file"
    then names the wrong file. A script's interpreter may be a script itself (followed as
    deep as the kernel follows it); a relative one is relative to ``cwd``, as for the
    kernel.
    """
    current = executable
    whose = "its"
    for _ in range(_MAX_INTERPRETERS + 1):
        named = _shebang_interpreter(current)
        kind = "interpreter"
        if named is None:
            named, kind = _elf_interpreter(current), "ELF interpreter (dynamic loader)"
            if named is None:
                return None
        interpreter = os.path.join(cwd or os.getcwd(), named)  # an absolute one stays
        shown = named if named.isprintable() else ascii(named)
        if named.endswith("\r"):
            shown += " (the #! line ends in a carriage return: Windows line endings?)"
        if not os.path.exists(interpreter):
            hint = "" if kind == "interpreter" else " (a build for another C library or system?)"
            return errno.ENOENT, f"{whose} {kind} {shown} does not exist{hint}"
        if os.path.isdir(interpreter) or not os.access(interpreter, os.X_OK):
            return errno.EACCES, f"{whose} {kind} {shown} is not executable"
        if kind != "interpreter":
            return None
        current = interpreter
        whose = f"the {kind} {named} is a script, and its"
    return None


def _head(path: str, size: int = 256) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(size)
    except OSError:
        return b""


def _shebang_interpreter(path: str) -> str | None:
    """The interpreter a ``#!`` line names as the kernel reads it (within the file's first
    256 bytes: after ``#!`` and any blanks, up to a space, a tab or the newline), or
    ``None``."""
    head = _head(path)
    if not head.startswith(b"#!"):
        return None
    line = head[2:].split(b"\n", 1)[0].lstrip(b" \t")
    name = line.replace(b"\t", b" ").split(b" ", 1)[0]
    return os.fsdecode(name) if name else None


# Where an ELF header keeps e_phoff, e_phentsize, e_phnum; where a program header keeps
# p_offset and p_filesz; and their formats: for 32-bit and 64-bit files.
_ELF_LAYOUT: Final = {
    1: ((28, "I"), (42, "H"), (44, "H"), (4, "I"), (16, "I")),
    2: ((32, "Q"), (54, "H"), (56, "H"), (8, "Q"), (32, "Q")),
}


def _elf_interpreter(path: str) -> str | None:
    """The dynamic loader (``PT_INTERP``) an ELF executable names, or ``None``."""
    try:
        with open(path, "rb") as f:
            header = f.read(64)
            if len(header) < 64 or not header.startswith(b"\x7fELF"):
                return None
            layout = _ELF_LAYOUT.get(header[4])
            if layout is None:
                return None
            order = "<" if header[5] == 1 else ">"

            def field(data: bytes, at: tuple[int, str]) -> int:
                value: int = struct.unpack_from(order + at[1], data, at[0])[0]
                return value

            phoff, phentsize, phnum = (field(header, at) for at in layout[:3])
            for index in range(min(phnum, 256)):
                f.seek(phoff + index * phentsize)
                entry = f.read(phentsize)
                if field(entry, (0, "I")) != _PT_INTERP:
                    continue
                f.seek(field(entry, layout[3]))
                name = f.read(min(field(entry, layout[4]), 4096)).split(b"\0", 1)[0]
                return os.fsdecode(name) if name else None
    except (OSError, ValueError, struct.error):  # unreadable, truncated, nonsense offsets
        return None
    return None


def _children(proc: psutil.Process) -> list[psutil.Process]:
    """The children of ``proc``, from ``/proc/PID/task/*/children`` when the kernel has it
    (a few small reads, where psutil's ``children()`` walks all of ``/proc``)."""
    pids: list[int] = []
    try:
        for task in os.listdir(f"/proc/{proc.pid}/task"):
            with open(f"/proc/{proc.pid}/task/{task}/children", "rb") as f:
                pids += [int(p) for p in f.read().split()]
    except (OSError, ValueError):
        try:
            return proc.children()
        except psutil.Error:
            return []
    found = []
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            found.append(psutil.Process(pid))
    return found


def _ns_pid(pid: int) -> int | None:
    """The pid of ``pid`` in its innermost PID namespace (``NSpid`` of its status)."""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"NSpid:"):
                    return int(line.split()[-1])
    except (OSError, ValueError):
        return None
    return None
