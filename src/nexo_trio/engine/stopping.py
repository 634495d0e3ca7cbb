"""Stopping processes: the escalation every process the engine starts ends with.

:func:`escalate` is the one stop sequence: SIGTERM, up to a grace for the target to go,
SIGKILL unless it went, then a bounded wait for it to be gone for good. What the target is
and how it is signalled and awaited is up to the caller, because the callers differ on
purpose:

- a turn (``supervisor``) signals the CLI's process group and, with SIGKILL, every
  descendant it has seen, since the CLI runs its tools in sessions of their own. It waits
  by reaping the CLI. Then it stops the descendants that outlived the CLI the same way,
  signalling them by pid and polling for them to go;
- a captured command (``capture``) signals its process group only, and waits through a
  pidfd *without* reaping, so the leader's pid (the group id) stays reserved while the
  group is signalled. It always sends the SIGKILL: a member of the group may ignore SIGTERM
  when the leader doesn't.

On every path out the stop runs in a :func:`shielded_within` scope of :func:`stop_budget`
seconds: shielded, so a cancelled caller still leaves nothing behind; bounded, so a process
stuck in the kernel can't hang the caller forever.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Awaitable, Callable
from typing import Final, Protocol

import trio

REAP_TIMEOUT: Final = 5.0
"""How long to wait for a SIGKILLed target to be gone before giving up on it."""

Send = Callable[[signal.Signals], object]
"""Signals the target (and records or ignores that it did)."""
Wait = Callable[[], Awaitable[object]]
"""Returns once the target is gone (never mind how long: the caller bounds the wait)."""


class ChildProcess(Protocol):
    """What the engine needs of a child process: a ``trio.Process``, or a confined turn's
    :class:`~nexo_trio.engine.confined.ConfinedProcess`."""

    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> int | None: ...

    @property
    def stdin(self) -> trio.abc.SendStream | None: ...

    @property
    def stdout(self) -> trio.abc.ReceiveStream | None: ...

    @property
    def stderr(self) -> trio.abc.ReceiveStream | None: ...

    async def wait(self) -> int: ...


def _never() -> bool:
    return False


async def escalate(
    send: Send,
    wait: Wait,
    *,
    grace: float,
    gone: Callable[[], bool] = _never,
    wait_killed: Wait | None = None,
    reap_timeout: float = REAP_TIMEOUT,
) -> None:
    """``send(SIGTERM)``, ``wait`` up to ``grace``, ``send(SIGKILL)``, wait up to ``reap_timeout``.

    The SIGKILL is skipped when ``gone()`` says the target went during the grace (by
    default it never says so: the SIGKILL always goes). After the SIGKILL the wait is
    ``wait_killed`` (say, a reap where ``wait`` left the process a zombie), else ``wait``.
    Returns when the target is gone or the time is up; what is left is the caller's to see.
    """
    send(signal.SIGTERM)
    with trio.move_on_after(grace):
        await wait()
    if gone():
        return
    send(signal.SIGKILL)
    with trio.move_on_after(reap_timeout):
        await (wait if wait_killed is None else wait_killed)()


def stop_budget(grace: float, *, rounds: int = 1) -> float:
    """The longest ``rounds`` successive :func:`escalate` calls with this ``grace`` take."""
    return rounds * (grace + REAP_TIMEOUT)


def shielded_within(seconds: float) -> trio.CancelScope:
    """A scope for stopping: shielded from the caller's cancellation, given up after ``seconds``."""
    return trio.CancelScope(shield=True, deadline=trio.current_time() + seconds)


def signal_group(pgid: int, sig: signal.Signals) -> bool:
    """Signal a process group; ``False`` when it is empty or not ours to signal.

    Only safe while ``pgid`` is reserved: while its leader is alive or still a zombie, or
    some member of the group is alive.
    """
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


async def reap(process: ChildProcess, timeout: float = REAP_TIMEOUT) -> None:
    """Wait up to ``timeout`` for ``process`` to exit, and reap it."""
    with trio.move_on_after(timeout):
        await process.wait()


async def close_pipes(process: ChildProcess) -> None:
    """Close our ends of the process's pipes (all of them, even past a stop's deadline)."""
    with trio.CancelScope(shield=True):
        for stream in (process.stdin, process.stdout, process.stderr):
            if stream is not None:
                await stream.aclose()


async def wait_exited_unreaped(process: ChildProcess) -> None:
    """Wait until ``process`` (our child) has exited, leaving it a zombie: its pid, and so
    its process group's id, stays reserved until it is reaped (``process.wait``)."""
    if process.returncode is not None:
        return
    pidfd_open = getattr(os, "pidfd_open", None)
    try:
        # Safe: only ``process.wait``/``poll`` reap it, so the pid is still ours.
        fd = pidfd_open(process.pid) if pidfd_open is not None else None
    except OSError:
        fd = None
    if fd is None:
        # No pidfd (not Linux, old kernel): wait by reaping; a group kill that follows
        # then races with pid reuse, which this fallback accepts.
        await process.wait()
        return
    try:
        await trio.lowlevel.wait_readable(fd)
    finally:
        trio.lowlevel.notify_closing(fd)
        os.close(fd)
