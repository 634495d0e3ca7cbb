"""Run a short-lived command to its end and keep (a bounded part of) what it printed.

``run_captured`` is what acceptance checks use to run shell commands and ``git``:

- stdin is ``/dev/null``; stdout and stderr are read **concurrently** while the process
  runs, so a command printing megabytes on both never blocks on a full pipe;
- memory is bounded: the last ``stdout_cap`` bytes of stdout and the last ``stderr_cap``
  bytes of stderr are kept;
- **nothing the command starts outlives it**, not even a daemon that left its process group
  (``setsid env -i nohup sleep 300 >/dev/null 2>&1 &``): when the command exits, times out,
  or the caller is cancelled (a Ctrl-C), everything it started is killed;
- the process is always reaped, in a shielded scope with a bounded deadline.

How everything is found depends on the confinement, one of three:

``sandbox=plan`` (bubblewrap, :mod:`nexo_trio.engine.confined`)
    The command runs in a PID namespace of its own, with the plan's file system: read-only
    but for the workspace, the scratch dir (its ``TMPDIR``) and the plan's writable paths,
    a private ``/tmp``, no network with ``network=False`` (a captured command gets no API
    relay: the plan's ``api_proxy`` is dropped). bwrap exits when the command does, and the
    namespace's init with it, which takes every process of the namespace along: nothing
    can leave a PID namespace. bwrap is forked in the trio thread, so that
    ``--die-with-parent`` holds even if the orchestrator is SIGKILLed (see ``confined``).
    A stop is SIGTERM to the command's process group inside, ``kill_grace``, then SIGKILL
    to the namespace's init. bwrap reports a command killed by signal N as exit code
    ``128 + N``, as shells do.

``subreaper=True`` (the default without a sandbox; :mod:`nexo_trio.engine.reaper`)
    The command's parent is a small helper process that made itself a child subreaper: a
    process that detaches from the command is re-parented to it, stays its descendant and is
    killed when the command ends. A stop is the end of the helper's *lifeline* (a pipe on its
    stdin that only we hold; it also ends when the orchestrator dies): the helper SIGTERMs
    every descendant, waits ``kill_grace``, SIGKILLs what is left and exits. Should it not
    exit in time, its process group (the command's too) is SIGKILLed.

``subreaper=False``, no sandbox (the plain process group)
    The command runs in a session of its own, hence its own process group. On timeout or
    on cancellation the group gets SIGTERM, a short grace, then SIGKILL; after a normal exit
    whatever is left in the group (``sleep 300 &``) is SIGKILLed. A process that started a
    session of its own escapes.

The stop sequence is the engine's (:mod:`nexo_trio.engine.stopping`). Signalling a process
group by the leader's pid is only safe while that pid is reserved: the kernel does not reuse
a pid that is still some process's id or process group id. So the group is signalled before
the leader is reaped: its exit is awaited through a pidfd, which does not reap it (trio's
``Process.wait`` reaps).
"""

from __future__ import annotations

import functools
import os
import signal
import subprocess
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final, Protocol

import attrs
import trio

from nexo_trio.core.sandbox import SandboxPlan, bwrap_argv
from nexo_trio.engine import reaper
from nexo_trio.engine.confined import (
    BWRAP_PREFIX,
    ConfinedProcess,
    Sandbox,
    SandboxStartError,
    StatusPipe,
    describe_bwrap_spawn_error,
    missing_binary,
)
from nexo_trio.engine.reaped import HELPER_MARGIN, Reaped
from nexo_trio.engine.sandbox import with_binary
from nexo_trio.engine.stopping import (
    REAP_TIMEOUT,
    ChildProcess,
    close_pipes,
    escalate,
    reap,
    shielded_within,
    signal_group,
    stop_budget,
    wait_exited_unreaped,
)

READ_CHUNK: Final = 64 * 1024
DEFAULT_STDOUT_CAP: Final = 16 * 1024 * 1024
DEFAULT_STDERR_CAP: Final = 64 * 1024
KILL_GRACE: Final = 1.0
"""Time between SIGTERM and SIGKILL."""
PIPE_LINGER: Final = 1.0
"""How long to wait for end-of-file on the pipes once the command and what it started are
dead. Only a process that escaped (its own session, without a subreaper or a sandbox) can
still hold a pipe open then."""


@attrs.frozen
class Captured:
    """What one run of a command produced."""

    argv: tuple[str, ...]
    exit_code: int | None
    """The exit status; negative: killed by that signal (in a sandbox: ``128 + N``, as
    bwrap reports it); ``None``: could not be reaped."""
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
    sandbox: SandboxPlan | None = None,
    subreaper: bool = True,
) -> Captured:
    """Run ``argv`` in ``cwd`` until it exits or ``timeout`` seconds pass.

    ``sandbox`` confines the command (bubblewrap; the plan's paths must exist); without one,
    ``subreaper`` (the default) runs it under the subreaper helper, else in a plain process
    group of its own (see the module docstring). ``env`` is the command's environment
    (default: ours); in a sandbox ``TMPDIR`` is the plan's scratch dir.

    A timeout is a result (``timed_out``), not an exception. Raises ``OSError`` when the
    command can't be started (no such program, ``cwd`` missing, a sandbox that could not be
    set up: :class:`~nexo_trio.engine.confined.SandboxStartError`) and ``ValueError`` for
    a non-positive ``timeout`` or negative caps. A cancellation of the caller kills the
    command and everything it started, reaps, and propagates.
    """
    if not timeout > 0:
        raise ValueError(f"timeout must be positive, got {timeout}")
    if stdout_cap < 0 or stderr_cap < 0:
        raise ValueError("output caps must not be negative")
    started = trio.current_time()
    if sandbox is not None:
        run: _Run = await _Confined.start(argv, cwd, env, sandbox, kill_grace)
    elif subreaper:
        run = await _Reaped.start(argv, cwd, env, kill_grace)
    else:
        run = await _Group.start(argv, cwd, env, kill_grace)
    process = run.process
    assert process.stdout is not None
    assert process.stderr is not None
    stdout = _TailBuffer(stdout_cap)
    stderr = _TailBuffer(stderr_cap)
    timed_out = False
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_drain, process.stdout, stdout)
            nursery.start_soon(_drain, process.stderr, stderr)
            nursery.start_soon(run.serve)
            exited = False
            with trio.move_on_at(started + timeout):
                await run.exited()
                exited = True
            if exited:
                # Stragglers (background jobs of the command) must not outlive the check.
                await run.finish()
            else:
                timed_out = True
                await run.stop()
            # The pipes may still hold output the readers haven't taken yet: read to EOF.
            with trio.move_on_after(PIPE_LINGER):
                await stdout.eof.wait()
                await stderr.eof.wait()
            nursery.cancel_scope.cancel()
    finally:
        with shielded_within(run.stop_budget):
            if not run.ended:
                await run.stop()
        await close_pipes(process)
        run.release()
    out, out_truncated = stdout.value()
    err, err_truncated = stderr.value()
    if not timed_out and (error := run.start_error(err)) is not None:
        raise error
    return Captured(
        argv=tuple(argv),
        exit_code=run.exit_code,
        stdout=out,
        stdout_truncated=out_truncated,
        stderr=err,
        stderr_truncated=err_truncated,
        timed_out=timed_out,
        duration_s=trio.current_time() - started,
    )


# ----------------------------------------------------------------------------- the three ways


class _Run(Protocol):
    """One started command, confined one way or another."""

    @property
    def process(self) -> ChildProcess:
        """The process we started (the command, the helper, or bwrap)."""
        ...

    @property
    def stop_budget(self) -> float:
        """The longest :meth:`stop` takes."""
        ...

    @property
    def ended(self) -> bool:
        """The process has been reaped: nothing is left to stop."""
        ...

    @property
    def exit_code(self) -> int | None:
        """The command's exit status, once it ended."""
        ...

    async def serve(self) -> None:
        """Read what the process reports besides its output (a task of the run's nursery)."""

    async def exited(self) -> None:
        """Return once the command has ended."""

    async def finish(self) -> None:
        """After the command ended: kill whatever it left, reap."""

    async def stop(self) -> None:
        """SIGTERM, grace, SIGKILL to the command and everything it started; reap."""

    def start_error(self, stderr: bytes) -> OSError | None:
        """After a run that was not stopped: why the command never started, if it did not."""

    def release(self) -> None:
        """Close what is left open (the process's pipes are closed by then)."""


class _Group:
    """The command in a session (so a process group) of its own; nothing else."""

    def __init__(self, process: trio.Process, kill_grace: float) -> None:
        self.process = process
        self.kill_grace = kill_grace
        self.stop_budget = stop_budget(kill_grace)

    @classmethod
    async def start(
        cls, argv: Sequence[str], cwd: Path | str, env: Mapping[str, str] | None, grace: float
    ) -> _Group:
        process = await trio.lowlevel.open_process(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=cwd,
            env=env,
            # Own session, so own process group: one killpg reaches the command and
            # everything it started (unless something of it started a session of its own).
            start_new_session=True,
        )
        return cls(process, grace)

    @property
    def ended(self) -> bool:
        return self.process.returncode is not None

    @property
    def exit_code(self) -> int | None:
        return self.process.returncode

    async def serve(self) -> None:
        return

    async def exited(self) -> None:
        await wait_exited_unreaped(self.process)

    async def finish(self) -> None:
        signal_group(self.process.pid, signal.SIGKILL)
        await reap(self.process)

    async def stop(self) -> None:
        """SIGTERM to the group, up to the grace for the leader to exit (unreaped), SIGKILL
        to the group, then reap the leader. SIGKILL goes to the group even when the leader
        exited: a member may ignore SIGTERM."""
        if self.ended:
            return
        await escalate(
            functools.partial(signal_group, self.process.pid),
            functools.partial(wait_exited_unreaped, self.process),
            grace=self.kill_grace,
            wait_killed=self.process.wait,
        )

    def start_error(self, stderr: bytes) -> OSError | None:
        return None

    def release(self) -> None:
        return


class _Reaped:
    """The command under the subreaper helper (:mod:`nexo_trio.engine.reaped`)."""

    def __init__(self, reaped: Reaped) -> None:
        self.reaped = reaped
        self.process = reaped.helper
        self.stop_budget = reaped.stop_budget

    @classmethod
    async def start(
        cls, argv: Sequence[str], cwd: Path | str, env: Mapping[str, str] | None, grace: float
    ) -> _Reaped:
        # The command in the helper's process group, its stdin /dev/null; it ends with the
        # command (what it left is SIGKILLed then), or when the lifeline does.
        return cls(await Reaped.start(argv, cwd=cwd, env=env, grace=grace))

    @property
    def ended(self) -> bool:
        return self.process.returncode is not None

    @property
    def exit_code(self) -> int | None:
        if self.reaped.command_status is not None:
            return self.reaped.command_status
        return self.process.returncode  # the helper itself was killed: how

    async def serve(self) -> None:
        """Read the helper's reports until it closes the pipe (when it exits)."""
        await self.reaped.serve()

    async def exited(self) -> None:
        await self.reaped.wait_reported()

    async def finish(self) -> None:
        """The helper kills what the command left and exits: wait for that (bounded). Then
        its group (the command's too) is SIGKILLed: whatever is left in it, the helper too,
        if it is stuck."""
        await self.reaped.finish(reaper.KILL_BOUND + HELPER_MARGIN)

    async def stop(self) -> None:
        """End the lifeline; the helper stops the command (SIGTERM to everything it started,
        the grace, SIGKILL) and exits. Past its bound, SIGKILL to its process group."""
        if self.ended:
            return
        await self.reaped.close()

    def start_error(self, stderr: bytes) -> OSError | None:
        return self.reaped.error

    def release(self) -> None:
        self.reaped.release()


class _Confined:
    """The command inside bubblewrap: its own PID namespace, dying with it."""

    def __init__(self, process: ConfinedProcess, sandbox: Sandbox, kill_grace: float) -> None:
        self.process = process
        self.sandbox = sandbox
        self.kill_grace = kill_grace
        self.stop_budget = stop_budget(kill_grace, rounds=2)

    @classmethod
    async def start(
        cls,
        argv: Sequence[str],
        cwd: Path | str,
        env: Mapping[str, str] | None,
        plan: SandboxPlan,
        grace: float,
    ) -> _Confined:
        # No API relay for a captured command (with network=False it has no network).
        plan = attrs.evolve(plan, api_proxy=None)
        environ = {**(os.environ if env is None else env), **plan.env}
        # Looking the program up touches the file system: not in the event loop.
        plan, chdir = await trio.to_thread.run_sync(_check_program, argv[0], cwd, plan, environ)
        status = StatusPipe()
        full = [*bwrap_argv(plan, chdir=chdir, json_status_fd=status.write_fd), *argv]
        try:
            # In this (the trio) thread: --die-with-parent is tied to the forking thread.
            process = ConfinedProcess.start(
                full, stdin_pipe=False, cwd=cwd, env=environ, pass_fds=(status.write_fd,)
            )
        except OSError as exc:
            status.close()
            reason = describe_bwrap_spawn_error(plan.bwrap, exc)
            if reason is not None:
                raise SandboxStartError(reason) from exc
            raise
        except BaseException:
            status.close()
            raise
        return cls(process, Sandbox(process.pid, status.child_started()), grace)

    @property
    def ended(self) -> bool:
        return self.process.returncode is not None

    @property
    def exit_code(self) -> int | None:
        return self.process.returncode

    async def serve(self) -> None:
        await self.sandbox.read_status()

    async def exited(self) -> None:
        # bwrap exits once the command has (and takes the namespace along).
        await wait_exited_unreaped(self.process)

    async def finish(self) -> None:
        await self._end_sandbox()
        signal_group(self.process.pid, signal.SIGKILL)
        await reap(self.process)
        with trio.move_on_after(1.0):
            await self.sandbox.status_done.wait()  # did it report the command's exit?

    async def stop(self) -> None:
        """SIGTERM to the command inside (bwrap forwards no signal, its init ignores it),
        the grace, SIGKILL to the namespace's init and bwrap; reap."""
        if self.ended:
            return
        await escalate(
            self._signal,
            functools.partial(wait_exited_unreaped, self.process),
            grace=self.kill_grace,
            wait_killed=self.process.wait,
        )
        await self._end_sandbox()

    def _signal(self, sig: signal.Signals) -> None:
        if sig is signal.SIGKILL:
            self.sandbox.kill()
        elif not self.sandbox.terminate_command(sig) and self.process.returncode is None:
            # No command (yet, or any more): end bwrap, and the namespace with it.
            signal_group(self.process.pid, sig)

    async def _end_sandbox(self) -> None:
        """Make sure the namespace is gone: its init dies with bwrap; kill it otherwise."""
        if self.sandbox.init is None or await self.sandbox.wait_init_gone(1.0):
            return
        self.sandbox.kill_init()
        await self.sandbox.wait_init_gone(REAP_TIMEOUT)

    def start_error(self, stderr: bytes) -> OSError | None:
        if self.sandbox.command_ran:
            return None
        return SandboxStartError(_describe_sandbox_failure(stderr, self.process.returncode))

    def release(self) -> None:
        self.process.release()


def _check_program(
    program: str, cwd: Path | str, plan: SandboxPlan, env: Mapping[str, str]
) -> tuple[SandboxPlan, str]:
    """Raise the ``OSError`` an exec of ``program`` would (inside the sandbox it would only
    be a line of bwrap's on stderr); ``plan`` showing it if the private /tmp hides it, and
    the working directory as an absolute path."""
    path = env.get("PATH")
    if os.path.isdir(cwd):
        missing = missing_binary(program, Path(cwd), path)
        if missing is not None:
            raise missing
    return with_binary(plan, program, path), os.path.abspath(cwd)


def _describe_sandbox_failure(stderr: bytes, returncode: int | None) -> str:
    text = stderr.decode("utf-8", errors="replace")
    lines = [line.strip() for line in text.splitlines() if line.startswith(BWRAP_PREFIX)]
    if lines:
        return f"the sandbox could not be set up ({'; '.join(lines[-3:])})"
    if returncode is not None and returncode < 0:
        return f"the sandbox (bwrap) was killed by signal {-returncode} before the command ran"
    return f"the sandbox (bwrap) exited with code {returncode} before the command ran"


# ----------------------------------------------------------------------------- output


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
