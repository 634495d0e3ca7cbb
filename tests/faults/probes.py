"""What the fault matrix measures around a turn: the processes it left, this process's file
descriptors and memory, and the events it reported."""

from __future__ import annotations

import os
import signal
from collections.abc import Sequence

import attrs

from nexo_trio.core.events import (
    AssistantMessage,
    Cancelled,
    DeadlineHit,
    Event,
    MalformedLine,
    OversizedLine,
    ProcessExited,
    Result,
    Spawned,
    SpawnFailed,
    StderrTail,
    StdoutClosed,
    SystemInit,
    TextBlock,
    UnknownFrame,
)
from nexo_trio.core.turn import INITIAL_STATE, TurnState, reduce

NOT_FROM_STDOUT = (
    Spawned,
    SpawnFailed,
    StdoutClosed,
    ProcessExited,
    StderrTail,
    DeadlineHit,
    Cancelled,
)


# --------------------------------------------------------------------------- processes


def marked_processes(marker: str) -> list[tuple[int, str]]:
    """Live processes (zombies left out) whose command line or environment holds ``marker``:
    ``(pid, command line)``. Read from ``/proc``, so a process in a PID namespace of its
    own (a confined turn) is found by its host pid."""
    needle = marker.encode()
    found: list[tuple[int, str]] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
            with open(f"/proc/{entry}/environ", "rb") as f:
                environ = f.read()
            with open(f"/proc/{entry}/stat", "rb") as f:
                state = f.read().rpartition(b")")[2].split()[0]
        except (OSError, IndexError):
            continue  # gone meanwhile
        if state != b"Z" and (needle in cmdline or needle in environ):
            found.append((int(entry), cmdline.replace(b"\0", b" ").decode(errors="replace")))
    return found


def kill_marked(marker: str) -> list[str]:
    """SIGKILL whatever carries ``marker`` (clean-up after a failing test); what was killed."""
    killed = []
    for pid, cmdline in marked_processes(marker):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            continue
        killed.append(f"{pid} {cmdline}")
    return killed


# --------------------------------------------------------------------------- this process


def open_fds() -> int:
    """How many file descriptors this process has open."""
    return len(os.listdir("/proc/self/fd"))


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    raise LookupError(field)


def reset_peak_memory() -> bool:
    """Reset this process's peak RSS (``VmHWM``) to its current RSS; whether the kernel
    allowed it (``/proc/self/clear_refs``, Linux 4.0+)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def rss_bytes() -> int:
    """This process's resident memory now."""
    return _status_kib("VmRSS") * 1024


def peak_rss_bytes() -> int:
    """This process's peak resident memory since the last :func:`reset_peak_memory`."""
    return _status_kib("VmHWM") * 1024


# --------------------------------------------------------------------------- events


@attrs.define
class Recorder:
    """An ``on_events`` callback keeping every event the run reported, in order."""

    events: list[Event] = attrs.Factory(list)
    states: list[TurnState] = attrs.Factory(list)

    async def __call__(self, state: TurnState, batch: Sequence[Event]) -> None:
        self.events.extend(batch)
        self.states.append(state)

    def line_events(self) -> list[Event]:
        """The events of stdout lines (frames, malformed and oversized lines)."""
        return [e for e in self.events if not isinstance(e, NOT_FROM_STDOUT)]

    def replayed(self) -> TurnState:
        """The reducer folded over every reported event, from the initial state."""
        state = INITIAL_STATE
        for event in self.events:
            state = reduce(state, event)
        return state


Summary = tuple[object, ...]


def summary(event: Event) -> Summary:
    """A line event as the matrix names it: its kind and what identifies it."""
    match event:
        case SystemInit():
            return ("init",)
        case AssistantMessage(content=content):
            text = [b.text for b in content if isinstance(b, TextBlock)]
            return ("assistant", text[0] if text else None)
        case Result(subtype=subtype, result=result):
            return ("result", subtype, result)
        case MalformedLine(line_no=line_no, error=error):
            return ("malformed", line_no, error.partition(":")[0])
        case OversizedLine(line_no=line_no, size=size):
            return ("oversized", line_no, size)
        case UnknownFrame(type=kind):
            return ("unknown", kind)
        case _:
            return (type(event).__name__,)
