"""``run_turn``: one supervised Claude Code run, under trio structured concurrency.

A nursery owns everything the run needs::

    process (own session) ── stdout reader ──┐
                          ── exit waiter ────┤  batches of events   ┌──────────────┐
                          ── stderr drainer  ├──── channel ───────▶ │ reduce(...)  │ ─▶ TurnResult
    watchdogs (deadline, stop, exit) ────────┘                      └──────────────┘

The engine only feeds the pure reducer; the outcome is ``classify`` of the final state, the
same as ``nexo-trio replay`` gives for the same events.

Unconfined, the CLI runs under a child subreaper (:mod:`nexo_trio.engine.reaper`, through
:class:`~nexo_trio.engine.reaped.Reaped`): a small helper process, the CLI's parent, to which
every process the turn leaves is re-parented, however it detached (``setsid env -i``, a
double fork), and which kills all of them when its *lifeline* ends: when the turn ends, and
when the orchestrator dies, even of a SIGKILL. The CLI runs in a session of its own; the
helper reports its pid, its exit status, or why it could not be started (the turn then ends
as a spawn failure, described as for any exec). ``Spawned`` carries the CLI's pid.

Stopping a run (timeout, ``stop`` set, caller cancelled, a wedged CLI): SIGTERM to the CLI's
process group (the CLI then stops its own Bash children and MCP servers; sent by the helper,
which alone knows whether the pid is still the CLI's), ``kill_grace``, then SIGKILL to the
group and to every descendant ever seen (they may live in sessions of their own);
descendants that outlive the CLI get the same escalation by pid. The tree is the helper's,
walked down from it (``/proc/PID/task/*/children``: a few reads for the turn's own
processes, none for the rest of the host, so a turn costs the same however many processes
the host runs) at the SIGKILL and after the CLI has ended; only when the helper cannot vouch
for it (it was killed) are the turn's strays looked for among every process on the host (its
marker, its pipes), in a worker thread. Where the kernel has no children files, the tree is
collected every second, over all of ``/proc``, in a worker thread. The process is always
reaped, in a shielded scope with
a bounded deadline, and the helper's lifeline ended, which is its last word: whatever is
still there then is killed by it. The escalation itself is the engine's one stop sequence,
:func:`nexo_trio.engine.stopping.escalate`.

With a ``sandbox`` plan the CLI runs inside bubblewrap (:mod:`nexo_trio.engine.confined`):
the argv is prefixed with ``bwrap_argv(plan)``, ``TMPDIR`` is the plan's scratch dir, the
SIGTERM goes to the CLI inside the sandbox (bwrap forwards none), the SIGKILL to the
sandbox's init (which ends the whole PID namespace), and the ``/proc`` scans for strays are
skipped: nothing can leave the namespace, and it ends with the CLI. ``Spawned`` is reported
once bwrap is known to have started the CLI (its first output, its exit code, a stop); a
bwrap that fails to set the sandbox up ends the turn as a spawn failure that says why.
With the plan's ``api_proxy`` (no network but the API) the turn's allow-listing proxy
(:mod:`nexo_trio.engine.api_gateway`) is bound before the CLI starts, served by the turn's
nursery and closed with it, and the CLI runs behind the sandbox's relay
(:mod:`nexo_trio.engine.netrelay`), which execs it.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import os
import signal
import sys
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Final

import attrs
import trio

from nexo_trio.core.command import ClaudeCommand
from nexo_trio.core.events import (
    Cancelled,
    DeadlineHit,
    Event,
    ProcessExited,
    Spawned,
    SpawnFailed,
    StderrTail,
    StdoutClosed,
)
from nexo_trio.core.framing import DEFAULT_LINE_CAP
from nexo_trio.core.outcome import TurnOutcome
from nexo_trio.core.record import stop_line
from nexo_trio.core.sandbox import SandboxPlan, bwrap_argv
from nexo_trio.core.turn import INITIAL_STATE, TurnState, classify, reduce, reduce_all
from nexo_trio.engine import netrelay
from nexo_trio.engine.api_gateway import ApiGateway
from nexo_trio.engine.confined import (
    ConfinedProcess,
    Sandbox,
    SandboxStartError,
    StatusPipe,
    describe_bwrap_spawn_error,
    describe_sandbox_failure,
    find_binary,
    interpreter_problem,
    missing_binary,
)
from nexo_trio.engine.conversation import Conversation
from nexo_trio.engine.process_tree import ProcessTree, children_files
from nexo_trio.engine.reaped import Reaped, ReaperStartError
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
)
from nexo_trio.engine.stream_copy import StreamCopy
from nexo_trio.wire.stream_json import StreamDecoder

log = logging.getLogger("nexo_trio.engine")

TURN_MARKER_VAR: Final = "NEXO_TRIO_TURN"
"""Set in the CLI's environment to a fresh id per turn (or the one the command's ``env``
gives), so the turn's stray descendants can be recognised after the CLI is gone."""
READ_CHUNK: Final = 64 * 1024
STDERR_TAIL_BYTES: Final = 16 * 1024
SNAPSHOT_INTERVAL: Final = 1.0
"""How often the process tree is re-collected while the CLI runs."""
BATCH_BUFFER: Final = 64
"""Batches the channel holds before the stdout reader waits (backpressure to the pipe)."""
MARK_WAIT_S: Final = 1.0
"""How long a stop waits to be marked in the raw copy in order (see ``_report_stop``)."""

EventsCallback = Callable[[TurnState, Sequence[Event]], Awaitable[None]]
"""Called after each batch of events is reduced, with the new state and the batch."""


@attrs.frozen
class TurnResult:
    """What one supervised run produced."""

    outcome: TurnOutcome
    state: TurnState
    argv: tuple[str, ...]
    pid: int | None
    duration_s: float
    stop_actions: tuple[str, ...] = ()
    """What the engine had to do to end the process (``SIGTERM``, ``SIGKILL``, ...)."""

    @property
    def stderr_tail(self) -> str:
        """The last bytes of the CLI's stderr."""
        return self.state.stderr_tail


async def run_turn(
    command: ClaudeCommand,
    *,
    timeout: float,
    kill_grace: float = 5.0,
    line_cap: int = DEFAULT_LINE_CAP,
    on_events: EventsCallback | None = None,
    stop: trio.Event | None = None,
    require_mcp_servers: Sequence[str] = (),
    environ: Mapping[str, str] | None = None,
    sandbox: SandboxPlan | None = None,
    stdout_copy: Path | None = None,
    conversation: Conversation | None = None,
    heartbeat_s: float | None = None,
) -> TurnResult:
    """Run one Claude Code turn to its end and classify it.

    ``timeout`` bounds the whole run; ``kill_grace`` is the wait between SIGTERM and
    SIGKILL. Setting ``stop`` ends the run gracefully with a ``cancelled`` outcome; a
    cancellation of the caller's scope stops the process the same way and propagates.
    When an MCP server named in ``require_mcp_servers`` (the permission gate) is not
    connected according to the init frame, the run is stopped at once and escalates.
    ``environ`` is the environment the CLI starts from (default: ``os.environ`` as it is
    when the turn starts); the command's ``env`` overrides apply on top of it, and
    ``CLAUDECODE`` is always removed (see ``ClaudeCommand.child_env``).
    ``sandbox`` confines the run (bubblewrap; see the module docstring): the plan's paths
    must exist (``engine.sandbox.prepare_sandbox`` makes them so), and ``TMPDIR`` is set to
    its scratch dir. The result's ``argv`` and ``pid`` are then bwrap's.
    ``stdout_copy``: a file (created 0600) to keep the raw stdout in, every byte of it up
    to a cap, gzip-compressed when its name ends in ``.gz``
    (:mod:`~nexo_trio.engine.stream_copy`).
    ``conversation``: the stdio transport (a command with ``stream_input``): the CLI's
    stdin stays open for it (:mod:`~nexo_trio.engine.conversation`), it answers the CLI's
    permission asks, and a stop (``stop``, the deadline) first sends the CLI an
    ``interrupt`` and waits ``kill_grace`` for the turn to end with its session intact,
    before the SIGTERM.
    ``heartbeat_s``: an unconfined turn's helper stops the turn by itself when this process
    has not been heard from for that long (stopped with SIGSTOP, or wedged), as a worker
    that cannot renew its leases must. A confined turn has no such helper: without a network
    of its own it reaches the API only through this process's relay, so it waits anyway;
    with one, it runs on until this process wakes.
    Failures of the run (timeouts, crashes, a missing binary) are outcomes, not exceptions.
    """
    if not timeout > 0:
        raise ValueError(f"timeout must be positive, got {timeout}")
    if not kill_grace >= 0:
        raise ValueError(f"kill_grace must not be negative, got {kill_grace}")
    if conversation is not None and not command.stream_input:
        raise ValueError("a conversation needs a command with stream_input")
    argv = command.argv()
    stdin_data = command.stdin_data()
    stdin_pipe = stdin_data is not None or conversation is not None
    initial = INITIAL_STATE
    if require_mcp_servers:
        initial = attrs.evolve(initial, required_mcp_servers=tuple(require_mcp_servers))
    # The caller may choose the marker (to record it before the turn starts).
    marker = command.env.get(TURN_MARKER_VAR) or uuid.uuid4().hex
    env = command.child_env(os.environ if environ is None else environ)
    env[TURN_MARKER_VAR] = marker
    started = trio.current_time()
    sandboxed: Sandbox | None = None
    reaped: Reaped | None = None
    try:
        if sandbox is None:
            reaped = await _start_reaped(
                command, argv, env, stdin_pipe, kill_grace, heartbeat_s=heartbeat_s
            )
            process: ChildProcess = reaped
        else:
            env.update(sandbox.env)
            argv, process, sandboxed = await _start_confined(
                command, argv, sandbox, env, stdin_pipe
            )
    except OSError as exc:
        if isinstance(exc, SandboxStartError | ReaperStartError):
            reason = str(exc)
        else:
            # Says which file is really missing: reads the binary (not in the event loop).
            reason = await trio.to_thread.run_sync(describe_spawn_error, command, exc)
            if sandbox is not None:
                reason = describe_bwrap_spawn_error(sandbox.bwrap, exc) or reason
        event = SpawnFailed(reason=reason)
        state = reduce(initial, event)
        if on_events is not None:
            await on_events(state, [event])
        return TurnResult(
            outcome=classify(state),
            state=state,
            argv=tuple(argv),
            pid=None,
            duration_s=trio.current_time() - started,
        )
    copy = await StreamCopy.open(stdout_copy) if stdout_copy is not None else None
    run = _Run(
        process,
        copy=copy,
        argv=argv,
        stdin_data=stdin_data,
        marker=f"{TURN_MARKER_VAR}={marker}",
        deadline=started + timeout,
        timeout=timeout,
        kill_grace=kill_grace,
        line_cap=line_cap,
        on_events=on_events,
        stop=stop,
        initial=initial,
        sandbox=sandboxed,
        reaped=reaped,
        conversation=conversation,
        heartbeat_s=heartbeat_s,
    )
    try:
        state = await run.supervise()
    finally:
        if copy is not None:
            await copy.aclose()
    if reaped is not None and reaped.silence is not None:
        run.stop_actions.append(
            f"the helper stopped the turn: this process was silent for {reaped.silence:g} s"
        )
    return TurnResult(
        outcome=classify(state),
        state=state,
        argv=tuple(argv),
        pid=process.pid,
        duration_s=trio.current_time() - started,
        stop_actions=tuple(run.stop_actions),
    )


async def _start_reaped(
    command: ClaudeCommand,
    argv: list[str],
    env: dict[str, str],
    stdin_pipe: bool,
    kill_grace: float,
    *,
    heartbeat_s: float | None = None,
) -> Reaped:
    """Start the CLI under the subreaper helper, in a session of its own (a terminal's
    Ctrl-C reaches us, not the CLI, and the CLI's process group can be signalled as one),
    and wait for the helper to say it did; raises ``OSError`` like a spawn (the exec's
    error as the helper saw it, or :class:`ReaperStartError`)."""
    try:
        reaped = await Reaped.start(
            argv,
            cwd=command.cwd,
            env=env,
            grace=kill_grace,
            stdin_pipe=stdin_pipe,
            session=True,
            linger=True,  # what the CLI leaves gets the turn's own escalation first
            heartbeat=heartbeat_s,
        )
    except OSError as exc:
        if exc.filename is not None and str(exc.filename) == sys.executable:
            raise ReaperStartError(
                f"the process helper's interpreter {sys.executable} cannot be started: "
                f"{exc.strerror or exc}"
            ) from exc
        raise  # the working directory, say: described like any spawn failure
    try:
        await reaped.wait_started()
    except BaseException:
        await _discard(reaped)
        raise
    if reaped.command_pid is not None:
        return reaped
    tail = await _discard(reaped)
    if reaped.error is not None:
        raise reaped.error
    raise ReaperStartError(_helper_failure(reaped.helper.returncode, tail))


async def _discard(reaped: Reaped) -> str:
    """End a helper that did not start the CLI (or whose turn was cancelled meanwhile):
    nothing of it is left, all its pipes closed; what it said on stderr."""
    tail = ""
    with shielded_within(reaped.stop_budget):
        await reaped.close()
        if reaped.command_pid is None:
            tail = await _helper_stderr(reaped)
    await close_pipes(reaped)
    reaped.release()
    return tail


async def _helper_stderr(reaped: Reaped) -> str:
    """What the helper said on stderr before it failed (it has exited: this is short)."""
    data = b""
    with trio.move_on_after(1.0):
        stderr = reaped.stderr
        while stderr is not None and (chunk := await stderr.receive_some(READ_CHUNK)):
            data = (data + chunk)[-STDERR_TAIL_BYTES:]
    return data.decode("utf-8", errors="replace").strip()


def _helper_failure(returncode: int | None, stderr: str) -> str:
    how = f"was killed by signal {-returncode}" if returncode and returncode < 0 else ""
    how = how or f"exited with code {returncode}"
    reason = f"the process helper (engine/reaper.py) {how} before claude started"
    return f"{reason}: {stderr[-500:]}" if stderr else reason


def _confined_plan(
    command: ClaudeCommand, plan: SandboxPlan, path: str | None
) -> tuple[SandboxPlan, str | None]:
    """Raise the ``OSError`` an exec of the CLI would (inside the sandbox a missing binary
    is only a line on bwrap's stderr); ``plan`` showing the binary if the private /tmp
    would hide it, and the working directory as an absolute path. Touches the file
    system: run in a worker thread."""
    if command.cwd is None or os.path.isdir(command.cwd):
        missing = missing_binary(command.binary, command.cwd, path)
        if missing is not None:
            raise missing
    chdir = None if command.cwd is None else os.path.abspath(command.cwd)
    return with_binary(plan, command.binary, path), chdir


async def _start_confined(
    command: ClaudeCommand,
    argv: list[str],
    plan: SandboxPlan,
    env: dict[str, str],
    stdin_pipe: bool,
) -> tuple[list[str], ConfinedProcess, Sandbox]:
    """Start the CLI inside bwrap (forked in this thread: see ``engine.confined``); raises
    ``OSError`` like a spawn, also for a CLI binary that the sandbox would not find."""
    plan, chdir = await trio.to_thread.run_sync(_confined_plan, command, plan, env.get("PATH"))
    gateway = None
    relay: list[str] = []
    if plan.api_proxy is not None:
        try:
            # Binding touches the file system: in a worker thread, shielded (a gateway bound
            # for a caller cancelled meanwhile would be lost; no checkpoint follows).
            with trio.CancelScope(shield=True):
                gateway = await trio.to_thread.run_sync(ApiGateway, plan.api_proxy)
        except OSError as exc:
            raise SandboxStartError(
                f"the sandbox's API proxy cannot listen on {plan.api_proxy.socket}: "
                f"{exc.strerror or exc}"
            ) from exc
        relay = [sys.executable, "-I", "-S", netrelay.__file__, "--port"]
        relay += [str(plan.api_proxy.port), "--socket", plan.api_proxy.socket, "--"]
    status = StatusPipe()
    full = [*bwrap_argv(plan, chdir=chdir, json_status_fd=status.write_fd), *relay, *argv]
    try:
        process = ConfinedProcess.start(
            full,
            stdin_pipe=stdin_pipe,
            cwd=command.cwd,
            env=env,
            pass_fds=(status.write_fd,),
        )
    except BaseException:
        status.close()
        if gateway is not None:
            gateway.close()
        raise
    return full, process, Sandbox(process.pid, status.child_started(), gateway=gateway)


def describe_spawn_error(command: ClaudeCommand, exc: OSError) -> str:
    """Say in words why the CLI could not be started (naming the file that is really
    missing: for a script whose ``#!`` interpreter is missing, the kernel's ``ENOENT`` is
    about the interpreter, not the script)."""
    where = exc.filename if exc.filename is not None else command.binary
    if command.cwd is not None and str(where) == str(command.cwd):
        return f"working directory {where} does not exist or is not a directory"
    if isinstance(exc, FileNotFoundError | PermissionError):
        # The PATH the exec searched: the command's own, else the inherited one (a run
        # given another ``environ`` may have searched another, rarely).
        path = command.env.get("PATH") if "PATH" in command.env else os.environ.get("PATH")
        found = find_binary(command.binary, command.cwd, path)
        if found is not None and os.path.isfile(found):
            problem = interpreter_problem(found, command.cwd)
            if problem is not None:
                shown = command.binary if found == command.binary else f"{command.binary} ({found})"
                return f"{shown}: {problem[1]}"
    if isinstance(exc, FileNotFoundError):
        return f"{command.binary}: no such file (is Claude Code installed and on PATH?)"
    if isinstance(exc, PermissionError):
        if os.path.isdir(os.path.join(command.cwd or "", where)):
            return f"{command.binary}: is a directory, not an executable"
        return f"{command.binary}: permission denied (not executable?)"
    if exc.errno == errno.ENOEXEC:
        return f"{command.binary}: not an executable this system can run"
    return f"{command.binary}: {exc.strerror or exc}"


class _Run:
    """The supervision of one started process (one use)."""

    def __init__(
        self,
        process: ChildProcess,
        *,
        argv: list[str],
        stdin_data: bytes | None,
        marker: str,
        deadline: float,
        timeout: float,
        kill_grace: float,
        line_cap: int,
        on_events: EventsCallback | None,
        stop: trio.Event | None,
        initial: TurnState = INITIAL_STATE,
        sandbox: Sandbox | None = None,
        reaped: Reaped | None = None,
        copy: StreamCopy | None = None,
        conversation: Conversation | None = None,
        heartbeat_s: float | None = None,
    ) -> None:
        self.process = process
        self.heartbeat_s = heartbeat_s
        self.conversation = conversation
        self._nursery: trio.Nursery | None = None
        self.copy = copy
        self.sandbox = sandbox
        self.reaped = reaped
        self.held: list[Event] | None = None
        """While a sandbox has not shown that it started the CLI: the events held back
        (``Spawned`` is reported once it has, or a ``SpawnFailed`` if it never did)."""
        self.sandbox_failure: str | None = None
        self.argv = argv
        self.stdin_data = stdin_data
        self.marker = marker
        self.deadline = deadline
        self.timeout = timeout
        self.kill_grace = kill_grace
        self.decoder = StreamDecoder(line_cap)
        self.on_events = on_events
        self.stop = stop
        # Under the subreaper, the turn's tree is the helper's: the CLI and every orphan.
        self.tree = (
            ProcessTree(reaped.helper.pid, ignore={process.pid}, reserved=True)
            if reaped is not None
            else ProcessTree(process.pid)
        )
        self.stop_actions: list[str] = []
        self.state = initial
        self._watch_scope: trio.CancelScope | None = None
        self._fired: set[str] = set()
        """The watchdogs that went off (see :meth:`_watchdog`)."""
        self.gate_failed = _Watched(self._rewatch)
        self.stderr_tail = bytearray()
        self.result_seen = _Watched(self._rewatch)
        self.exited = _Watched(self._rewatch)
        self.stdout_closed = _Watched(self._rewatch)
        self.stderr_done = trio.Event()
        self.stopping = False
        self.send, self.receive = trio.open_memory_channel[Sequence[Event]](BATCH_BUFFER)
        self._in_order = trio.StrictFIFOLock()
        """Held from a stdout chunk's copy to its batch's send, and from a stop's mark in
        the copy to its event's send: the raw copy then has the stop where the reducer
        had it."""

    async def supervise(self) -> TurnState:
        try:
            self.spawned = Spawned(pid=self.process.pid, argv=tuple(self.argv))
            if self.sandbox is None:
                await self._apply([self.spawned])
            else:
                self.held = []
            try:
                await self._run_tasks()
            except BaseExceptionGroup as group:
                # The nursery is ours, not the caller's: a caller's cancellation leaves as
                # Cancelled, and an error of its on_events callback as that error.
                single = _single_exception(group)
                if single is None:
                    raise
                raise single from None
            await self._apply([StderrTail(text=self._stderr_text())])
            return self.state
        finally:
            await self._cleanup()

    async def _run_tasks(self) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._read_stdout)
            nursery.start_soon(self._wait_exit)
            nursery.start_soon(self._drain_stderr)
            if self.conversation is not None:
                assert self.process.stdin is not None
                nursery.start_soon(self.conversation.serve, self.process.stdin)
            elif self.stdin_data is not None:
                nursery.start_soon(self._write_stdin, self.stdin_data)
            nursery.start_soon(self._watchdog, nursery)
            if self.sandbox is None:
                if not children_files():
                    nursery.start_soon(self._snapshot_tree)
            else:
                nursery.start_soon(self.sandbox.read_status)
                if self.sandbox.gateway is not None:
                    nursery.start_soon(self.sandbox.gateway.serve)
            if self.stop is not None:
                nursery.start_soon(self._watch_stop, self.stop)
            if self.reaped is not None and self.heartbeat_s is not None:
                nursery.start_soon(self._beat, self.reaped, self.heartbeat_s)
            # Bounded even if the process can't be killed (stuck in the kernel): past the
            # deadline, the stop sequence and the reap budget, the turn ends regardless.
            with trio.move_on_at(self.deadline + self._stop_budget()):
                async for batch in self.receive:
                    await self._apply(batch)
                    if self.state.finished:
                        break
            # Late stderr bytes of a process that just exited: wait for them, briefly.
            with trio.move_on_after(min(self.kill_grace, 1.0)):
                await self.stderr_done.wait()
            nursery.cancel_scope.cancel()

    async def _apply(self, batch: Sequence[Event]) -> None:
        if self.held is not None:
            if self.sandbox_failure is not None and any(
                isinstance(e, ProcessExited) for e in batch
            ):
                batch = [SpawnFailed(reason=self.sandbox_failure), *self.held, *batch]
            elif all(isinstance(e, StdoutClosed) for e in batch):
                self.held.extend(batch)  # says nothing about whether the CLI started
                return
            else:
                batch = [self.spawned, *self.held, *batch]
            self.held = None
        self.state = state = reduce_all(self.state, batch)
        conversation = self.conversation
        if conversation is not None:
            raced = conversation.raced
            conversation.on_frames(batch)
            if conversation.raced and not raced and self._nursery is not None:
                # The CLI would run the late message as a query of its own: end it now.
                self.stop_actions.append("a mid-turn message came after the result")
                self._nursery.start_soon(self._stop_process)
        if state.result is not None:
            self.result_seen.set()
        if state.gate_error is not None:
            self.gate_failed.set()
        if self.on_events is not None:
            await self.on_events(state, batch)

    # ------------------------------------------------------------------ readers

    async def _read_stdout(self) -> None:
        stdout = self.process.stdout
        assert stdout is not None
        # Only a copy needs the order kept with the stops (see _report_stop).
        in_order = self._in_order if self.copy is not None else contextlib.nullcontext()
        async with self.send.clone() as send:
            try:
                while True:
                    chunk = await stdout.receive_some(READ_CHUNK)
                    if not chunk:
                        break
                    async with in_order:
                        if self.copy is not None:
                            await self.copy.write(chunk)
                        batch = self.decoder.feed(chunk)
                        if batch:
                            await send.send(batch)
            except trio.ClosedResourceError:
                pass  # the exit watchdog gave up on a pipe a descendant held open
            self.stdout_closed.set()
            await send.send([*self.decoder.close(), StdoutClosed()])

    async def _wait_exit(self) -> None:
        async with self.send.clone() as send:
            returncode = await self.process.wait()
            if self.sandbox is not None:
                await self._check_sandbox_started(returncode)
            self.exited.set()
            await send.send([ProcessExited.from_returncode(returncode)])

    async def _check_sandbox_started(self, returncode: int) -> None:
        """After bwrap exited: did it start the CLI? If not, say why (from its stderr)."""
        assert self.sandbox is not None
        # bwrap has exited, so its report pipe is closed: this wait is short.
        with trio.move_on_after(1.0):
            await self.sandbox.status_done.wait()
        if self.sandbox.command_ran:
            return
        with trio.move_on_after(1.0):
            await self.stderr_done.wait()
        self.sandbox_failure = describe_sandbox_failure(self._stderr_text(), returncode)

    async def _drain_stderr(self) -> None:
        stderr = self.process.stderr
        assert stderr is not None
        try:
            while True:
                chunk = await stderr.receive_some(READ_CHUNK)
                if not chunk:
                    break
                self.stderr_tail += chunk
                if len(self.stderr_tail) > STDERR_TAIL_BYTES:
                    del self.stderr_tail[: len(self.stderr_tail) - STDERR_TAIL_BYTES]
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass
        self.stderr_done.set()

    async def _write_stdin(self, data: bytes) -> None:
        stdin = self.process.stdin
        assert stdin is not None
        try:
            await stdin.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the CLI exited without reading its prompt; its exit tells the story
        finally:
            with trio.CancelScope(shield=True):
                await stdin.aclose()

    def _stderr_text(self) -> str:
        return bytes(self.stderr_tail).decode("utf-8", errors="replace")

    # ------------------------------------------------------------------ watchdogs

    async def _watchdog(self, nursery: trio.Nursery) -> None:
        """The turn's watchdogs, in one task: the deadline; a permission gate that failed
        to connect (every tool call would fail); a CLI still running ``kill_grace`` after
        its result frame; a stdout that a descendant keeps open ``kill_grace`` after the
        CLI exited. It sleeps until the nearest of their alarms (:meth:`_next_alarm`),
        which the events it watches move as they are set (:class:`_Watched`), so a turn
        that needs none of them never wakes it; what goes off runs in a task of its own,
        so that one stop does not hold up the rest of the watch."""
        fired = self._fired
        while True:
            with trio.CancelScope(deadline=self._next_alarm()) as scope:
                self._watch_scope = scope
                await trio.sleep_forever()
            self._watch_scope = None
            now = trio.current_time()
            if "deadline" not in fired and now >= self.deadline:
                fired.add("deadline")
                await self._report_stop(self.send, DeadlineHit(timeout_s=self.timeout))
                nursery.start_soon(self._stop_process)
            if "gate" not in fired and self.gate_failed.is_set():
                fired.add("gate")
                self.stop_actions.append("permission gate unavailable")
                nursery.start_soon(self._stop_process)
            if "linger" not in fired and now >= self._linger_alarm():
                fired.add("linger")
                self.stop_actions.append("lingered after its result")
                nursery.start_soon(self._stop_process)
            if "pipe" not in fired and now >= self._pipe_alarm():
                fired.add("pipe")
                self.stop_actions.append("stdout held open after exit")
                nursery.start_soon(self._give_up_stdout)

    def _next_alarm(self) -> float:
        """When the watchdog must look next (``-inf``: at once, ``inf``: never)."""
        fired = self._fired
        if "gate" not in fired and self.gate_failed.is_set():
            return -math.inf
        alarm = math.inf if "deadline" in fired else self.deadline
        if "linger" not in fired:
            alarm = min(alarm, self._linger_alarm())
        if "pipe" not in fired:
            alarm = min(alarm, self._pipe_alarm())
        return alarm

    def _linger_alarm(self) -> float:
        """``kill_grace`` after the result frame, while the CLI has not exited."""
        if not self.result_seen.is_set() or self.exited.is_set():
            return math.inf
        return self.result_seen.at + self.kill_grace

    def _pipe_alarm(self) -> float:
        """``kill_grace`` after the CLI exited, while its stdout is still open."""
        if not self.exited.is_set() or self.stdout_closed.is_set():
            return math.inf
        return self.exited.at + self.kill_grace

    def _rewatch(self) -> None:
        """Move the watchdog's alarm: one of the events it watches was set."""
        scope = self._watch_scope
        if scope is not None and (alarm := self._next_alarm()) != scope.deadline:
            scope.deadline = alarm

    async def _watch_stop(self, stop: trio.Event) -> None:
        async with self.send.clone() as send:
            await stop.wait()
            await self._report_stop(send, Cancelled(reason="stop requested"))
        await self._stop_process()

    async def _beat(self, reaped: Reaped, heartbeat_s: float) -> None:
        """Tell the helper, four times per ``heartbeat_s``, that this process is alive."""
        while True:
            reaped.beat()
            await trio.sleep(heartbeat_s / 4)

    async def _report_stop(
        self, send: trio.MemorySendChannel[Sequence[Event]], event: Cancelled | DeadlineHit
    ) -> None:
        """Send the engine's stop ``event``, marked at the same place in the raw copy (for
        ``replay``). The wait for the reader is bounded: a copy stuck on its disk never
        holds up a stop (the copy then goes without the mark, logged)."""
        if self.copy is not None:
            with trio.move_on_after(MARK_WAIT_S) as waited:
                await self._in_order.acquire()
            if not waited.cancelled_caught:
                try:
                    await self.copy.mark(stop_line(event))
                    await send.send([event])
                finally:
                    self._in_order.release()
                return
            log.warning("the raw stream copy has no mark of the turn's stop: its writer lags")
        await send.send([event])

    async def _give_up_stdout(self) -> None:
        """Stop listening to a stdout that a descendant keeps open after the CLI exited:
        stop the descendants, then, ``kill_grace`` later, close our end."""
        await self._stop_descendants()
        with trio.move_on_after(self.kill_grace):
            await self.stdout_closed.wait()
        stdout = self.process.stdout
        if not self.stdout_closed.is_set() and stdout is not None:
            # Wakes the reader with ClosedResourceError; it then reports StdoutClosed.
            await stdout.aclose()

    async def _snapshot_tree(self) -> None:
        """Where the kernel has no children files: remember the tree now and then (a walk
        over all of ``/proc``), for the SIGKILL of a stop to reach what it had."""
        # Not at once: the CLI has only just been started, and has no children yet.
        while True:
            await trio.sleep(SNAPSHOT_INTERVAL)
            await self.tree.collect()

    # ------------------------------------------------------------------ stopping

    def _stop_budget(self) -> float:
        """The longest a stop takes: the CLI's escalation, then its survivors', a reap, and
        the subreaper helper's end."""
        helper = self.reaped.stop_budget if self.reaped is not None else 0.0
        interrupt = self.kill_grace if self.conversation is not None else 0.0
        return stop_budget(self.kill_grace, rounds=2) + 1.0 + helper + interrupt

    async def _stop_process(self) -> None:
        """SIGTERM, ``kill_grace``, SIGKILL to the tree. Idempotent; safe to call anywhere."""
        if self.stopping:
            return
        self.stopping = True
        await self._interrupt()
        if self.process.returncode is None:
            await escalate(
                self._signal_tree,
                self.process.wait,
                grace=self.kill_grace,
                gone=lambda: self.process.returncode is not None,
            )
        await self._stop_descendants()

    async def _interrupt(self) -> None:
        """The stdio transport's graceful stop: ask the CLI to end the turn (``interrupt``)
        and give it ``kill_grace`` to do so, its session intact. Only while the turn has
        no result and the conversation can still write (not in the cleanup)."""
        conversation = self.conversation
        if conversation is None or self.process.returncode is not None:
            return
        if self.result_seen.is_set() or not conversation.interrupt():
            return
        self.stop_actions.append("interrupt")
        with trio.move_on_after(self.kill_grace):
            await self.exited.wait()

    def _signal_tree(self, sig: signal.Signals) -> None:
        """SIGTERM to the CLI's group (the CLI then stops its own children); SIGKILL to the
        group and to every descendant seen, since they may live in sessions of their own."""
        if self.sandbox is not None:
            self._signal_sandbox(sig)
            return
        assert self.reaped is not None  # unconfined, the CLI runs under the helper
        if self.reaped.signal_command(sig):
            self.stop_actions.append(sig.name)
        # The tree as it is now, walked down from the helper (a read per process of the
        # turn's tree, none for the rest of the host; never waits for a disk); without
        # children files, as last collected. Whatever the walk misses is re-parented to the
        # helper when its parent dies, and found by the collection that follows the stop.
        if sig is signal.SIGKILL and children_files():
            self.tree.snapshot()
        if sig is signal.SIGKILL and (killed := self.tree.signal_descendants(sig)):
            self.stop_actions.append(f"SIGKILL to {killed} descendant(s)")

    def _signal_sandbox(self, sig: signal.Signals) -> None:
        """SIGTERM to the CLI inside the sandbox (bwrap would die of it, and its init ignores
        it); SIGKILL to the sandbox's init and bwrap, which ends everything in it."""
        assert self.sandbox is not None
        if sig is signal.SIGKILL:
            if self.sandbox.kill():
                self.stop_actions.append(sig.name)
        elif self.sandbox.terminate_command(sig):
            self.stop_actions.append(sig.name)
        elif signal_group(self.process.pid, sig):
            # No CLI (yet, or any more) to end gracefully: end bwrap, and the sandbox with it.
            self.stop_actions.append(f"{sig.name} to bwrap")

    async def _collect(self) -> None:
        """Collect the tree again and, unless the helper vouches for it, the descendants
        that escaped it (see ProcessTree.adopt_strays: a pass over every process on the
        host, in a worker thread)."""
        if self._helper_vouches():
            await self.tree.collect()
            return
        fds = [
            stream.fileno()
            for stream, eof in (
                (self.process.stdout, self.stdout_closed),
                (self.process.stderr, self.stderr_done),
            )
            if isinstance(stream, trio.lowlevel.FdStream) and not eof.is_set()
        ]
        fds = [fd for fd in fds if fd >= 0]
        await self.tree.collect(self.marker, fds)

    def _helper_vouches(self) -> bool:
        """Whether the subreaper helper accounts for every process of the turn, so that the
        tree walked down from it is all of it: the kernel has children files (then it has
        child subreapers too), and the helper still runs (every orphan of the turn is
        re-parented to it) or exited by itself with status 0 and no survivors (it does only
        once it has no descendant left). Not when it was killed, say: what it had is then
        init's, and only the marker or the turn's pipes tie it to the turn."""
        if self.reaped is None or not children_files():
            return False
        status = self.reaped.helper.exit_status()
        return status is None or (status == 0 and self.reaped.survivors == 0)

    async def _stop_descendants(self) -> None:
        """Stop descendants that outlived the CLI: SIGTERM, grace, SIGKILL."""
        if self.sandbox is not None:
            await self._end_sandbox()
            return
        await self._collect()
        if not self.tree.alive_descendants():
            return
        await escalate(
            self._signal_survivors,
            self.tree.wait_descendants_gone,
            grace=self.kill_grace,
            gone=lambda: not self.tree.alive_descendants(),
        )

    async def _end_sandbox(self) -> None:
        """Make sure the sandbox is gone once bwrap is: its init dies with bwrap
        (``--die-with-parent``) and takes the namespace with it; this only checks, and
        kills it if it somehow did not."""
        assert self.sandbox is not None
        # Normally gone already, or about to be: bwrap's exit SIGKILLs it.
        if self.sandbox.init is None or await self.sandbox.wait_init_gone(1.0):
            return
        if self.sandbox.kill_init():
            self.stop_actions.append("SIGKILL to the sandbox")
        await self.sandbox.wait_init_gone(REAP_TIMEOUT)

    def _signal_survivors(self, sig: signal.Signals) -> None:
        count = self.tree.signal_descendants(sig)
        if count or sig is signal.SIGKILL:  # a SIGKILL round is recorded even if none was left
            self.stop_actions.append(f"{sig.name} to {count} surviving descendant(s)")

    async def _cleanup(self) -> None:
        """Runs on every path out: nothing of the run may outlive it."""
        with shielded_within(self._stop_budget()):
            if self.process.returncode is None:
                self.stopping = False
                await self._stop_process()
            else:
                await self._stop_descendants()
            await close_pipes(self.process)
            await reap(self.process)
            if self.reaped is not None:
                # Its lifeline ends: it kills whatever is still there (nothing, normally).
                await self.reaped.close()
            if isinstance(self.process, ConfinedProcess):
                self.process.release()
            if self.sandbox is not None and self.sandbox.gateway is not None:
                self.sandbox.gateway.close()
        if self.reaped is not None:
            self.reaped.release()  # also past the budget: the helper then ends it all
        self.send.close()
        self.receive.close()


class _Watched:
    """A ``trio.Event`` that remembers when it was set (:attr:`at`) and, when it is, moves
    the alarm of the turn's watchdog (``moved``: :meth:`_Run._rewatch`)."""

    __slots__ = ("_event", "_moved", "at")

    def __init__(self, moved: Callable[[], None]) -> None:
        self._event = trio.Event()
        self._moved = moved
        self.at = math.inf
        """When it was set (trio's clock)."""

    def set(self) -> None:
        """Set it (idempotent) and move the watchdog's alarm."""
        if not self._event.is_set():
            self.at = trio.current_time()
            self._event.set()
            self._moved()

    def is_set(self) -> bool:
        """Whether it was set."""
        return self._event.is_set()

    async def wait(self) -> None:
        """Until it is set."""
        await self._event.wait()


def _single_exception(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The one exception a group stands for: its only non-``Cancelled`` leaf, or a
    ``Cancelled`` when that is all it holds; ``None`` when it holds several errors."""
    leaves: list[BaseException] = []
    pending: list[BaseException] = [group]
    while pending:
        exc = pending.pop()
        if isinstance(exc, BaseExceptionGroup):
            pending.extend(exc.exceptions)
        else:
            leaves.append(exc)
    errors = [e for e in leaves if not isinstance(e, trio.Cancelled)]
    if not errors:
        return leaves[0] if leaves else None
    if len(errors) == 1:
        return errors[0]
    return None
