"""Run a short-lived command to its end and keep (a bounded part of) what it printed.

``run_captured`` is what acceptance checks use to run shell commands and ``git``:

- stdin is ``/dev/null``; stdout and stderr are read **concurrently** while the process
  runs, so a command printing megabytes on both never blocks on a full pipe;
- memory is bounded: the last ``stdout_cap`` bytes of stdout and the last ``stderr_cap``
  bytes of stderr are kept;
- the command runs in its own session, hence its own process group. On timeout or on
  cancellation of the caller the group gets SIGTERM, a short grace, then SIGKILL. After a
  normal exit, whatever the command left running in its group (``sleep 300 &``) is
  SIGKILLed: nothing of a check may outlive it;
- the process is always reaped, in a shielded scope with a bounded deadline.

The stop sequence is the engine's (:mod:`nexo_trio.engine.stopping`), with this module's
strategy: the group alone is signalled, its SIGKILL always goes, and the leader is awaited
without being reaped until the group is dead.

Signalling a process group by the leader's pid is only safe while that pid is reserved:
the kernel does not reuse a pid that is still some process's id or process group id. So
the group is signalled before the leader is reaped: its exit is awaited through a pidfd,
which does not reap it (trio's ``Process.wait`` reaps).
"""

from __future__ import annotations

import functools
import os
import signal
import subprocess
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final

import attrs
import trio

from nexo_trio.engine.stopping import (
    close_pipes,
    escalate,
    reap,
    shielded_within,
    signal_group,
    stop_budget,
)

READ_CHUNK: Final = 64 * 1024
DEFAULT_STDOUT_CAP: Final = 16 * 1024 * 1024
DEFAULT_STDERR_CAP: Final = 64 * 1024
KILL_GRACE: Final = 1.0
"""Time between SIGTERM and SIGKILL to the process group."""
PIPE_LINGER: Final = 1.0
"""How long to wait for end-of-file on the pipes once the whole process group is dead.

Only a process that left the group (its own session) can still hold a pipe open then."""


@attrs.frozen
class Captured:
    """What one run of a command produced."""

    argv: tuple[str, ...]
    exit_code: int | None
    """The exit status; negative: killed by that signal; ``None``: could not be reaped."""
    stdout: bytes
    """The last ``stdout_cap`` bytes of stdout."""
    stdout_truncated: bool
    """Stdout was longer than the cap: its beginning was dropped."""
    stderr: bytes
    """The last ``stderr_cap`` bytes of stderr."""
    stderr_truncated: bool
    timed_out: bool
    duration_s: float

    @property
    def stdout_text(self) -> str:
        """Stdout decoded as UTF-8, undecodable bytes replaced."""
        return self.stdout.decode("utf-8", errors="replace")

    @property
    def stderr_text(self) -> str:
        """Stderr (its tail) decoded as UTF-8, undecodable bytes replaced."""
        return self.stderr.decode("utf-8", errors="replace")


async def run_captured(
    argv: Sequence[str],
    *,
    cwd: Path | str,
    timeout: float,
    stdout_cap: int = DEFAULT_STDOUT_CAP,
    stderr_cap: int = DEFAULT_STDERR_CAP,
    env: Mapping[str, str] | None = None,
    kill_grace: float = KILL_GRACE,
) -> Captured:
    """Run ``argv`` in ``cwd`` until it exits or ``timeout`` seconds pass.

    A timeout is a result (``timed_out``), not an exception. Raises ``OSError`` when the
    process can't be started (no such program, ``cwd`` missing, ...) and ``ValueError`` for
    a non-positive ``timeout`` or negative caps. A cancellation of the caller kills the
    process group, reaps the process and propagates.
    """
    if not timeout > 0:
        raise ValueError(f"timeout must be positive, got {timeout}")
    if stdout_cap < 0 or stderr_cap < 0:
        raise ValueError("output caps must not be negative")
    started = trio.current_time()
    process = await trio.lowlevel.open_process(
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=cwd,
        env=env,
        # Own session, so own process group: one killpg reaches the command and everything
        # it started (unless something of it started a session of its own).
        start_new_session=True,
    )
    assert process.stdout is not None
    assert process.stderr is not None
    stdout = _TailBuffer(stdout_cap)
    stderr = _TailBuffer(stderr_cap)
    timed_out = False
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_drain, process.stdout, stdout)
            nursery.start_soon(_drain, process.stderr, stderr)
            exited = False
            with trio.move_on_at(started + timeout):
                await _wait_exited_unreaped(process)
                exited = True
            if exited:
                # Stragglers (background jobs of the command) must not outlive the check.
                signal_group(process.pid, signal.SIGKILL)
                await reap(process)
            else:
                timed_out = True
                await _terminate_group(process, kill_grace)
            # The pipes may still hold output the readers haven't taken yet: read to EOF.
            with trio.move_on_after(PIPE_LINGER):
                await stdout.eof.wait()
                await stderr.eof.wait()
            nursery.cancel_scope.cancel()
    finally:
        await _cleanup(process, kill_grace)
    out, out_truncated = stdout.value()
    err, err_truncated = stderr.value()
    return Captured(
        argv=tuple(argv),
        exit_code=process.returncode,
        stdout=out,
        stdout_truncated=out_truncated,
        stderr=err,
        stderr_truncated=err_truncated,
        timed_out=timed_out,
        duration_s=trio.current_time() - started,
    )


class _TailBuffer:
    """Keeps the last ``cap`` bytes given to it, without copying on every chunk."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.chunks: deque[bytes] = deque()
        self.size = 0
        self.dropped = False
        self.eof = trio.Event()

    def add(self, chunk: bytes) -> None:
        self.chunks.append(chunk)
        self.size += len(chunk)
        # Drop whole chunks from the front while the rest still covers the cap.
        while self.chunks and self.size - len(self.chunks[0]) >= self.cap:
            self.size -= len(self.chunks.popleft())
            self.dropped = True

    def value(self) -> tuple[bytes, bool]:
        """The kept bytes, and whether anything was dropped."""
        data = b"".join(self.chunks)
        if len(data) > self.cap:
            return data[len(data) - self.cap :], True
        return data, self.dropped


async def _drain(stream: trio.abc.ReceiveStream, buffer: _TailBuffer) -> None:
    try:
        while chunk := await stream.receive_some(READ_CHUNK):
            buffer.add(bytes(chunk))
    except (trio.ClosedResourceError, trio.BrokenResourceError):
        return
    buffer.eof.set()


async def _wait_exited_unreaped(process: trio.Process) -> None:
    """Wait until ``process`` has exited, leaving it a zombie (its pid stays reserved)."""
    if process.returncode is not None:
        return
    pidfd_open = getattr(os, "pidfd_open", None)
    try:
        # Safe: only ``process.wait``/``poll`` reap it, so the pid is still ours.
        fd = pidfd_open(process.pid) if pidfd_open is not None else None
    except OSError:
        fd = None
    if fd is None:
        # No pidfd (not Linux, old kernel): wait by reaping; the group kill that follows
        # then races with pid reuse, which this fallback accepts.
        await process.wait()
        return
    try:
        await trio.lowlevel.wait_readable(fd)
    finally:
        trio.lowlevel.notify_closing(fd)
        os.close(fd)


async def _terminate_group(process: trio.Process, kill_grace: float) -> None:
    """SIGTERM to the group, up to ``kill_grace`` for the leader to exit (unreaped), SIGKILL
    to the group, then reap the leader.

    SIGKILL goes to the group even when the leader exited: a member may ignore SIGTERM.
    """
    await escalate(
        functools.partial(signal_group, process.pid),
        functools.partial(_wait_exited_unreaped, process),
        grace=kill_grace,
        wait_killed=process.wait,
    )


async def _cleanup(process: trio.Process, kill_grace: float) -> None:
    """Runs on every path out: the process group is dead, the process reaped, pipes closed."""
    with shielded_within(stop_budget(kill_grace)):
        if process.returncode is None:
            await _terminate_group(process, kill_grace)
    await close_pipes(process)
