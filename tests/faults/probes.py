"""What the fault matrix measures around a turn or a goal: the processes it left, this
process's file descriptors and memory, the events it reported, and the ledger it wrote."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs
import orjson
import pytest

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
from nexo_trio.core.goal_events import GoalEvent, SessionBound
from nexo_trio.core.turn import INITIAL_STATE, TurnState, reduce
from nexo_trio.store import open_sqlite_store
from nexo_trio.wire.goal_json import event_to_ledger, is_ledger_event

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


# --------------------------------------------------------------------------- goals


LedgerRow = tuple[int, str, str, dict[str, Any]]
"""``(seq, goal_id, kind, data)`` of one ledger row."""
Stored = tuple[str, Any]
"""``(kind, data)`` of one ledger row, as JSON stores it."""


def ledger_rows(database: Path, goal_id: str | None = None) -> list[LedgerRow]:
    """The rows of a SQLite ledger file (of one goal, if given), in ``seq`` order, read by a
    fresh connection (another process may hold the file open, even its write lock)."""
    conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=5.0)
    try:
        rows = conn.execute("SELECT seq, goal_id, kind, data FROM ledger ORDER BY seq").fetchall()
    finally:
        conn.close()
    return [
        (seq, goal, kind, orjson.loads(data))
        for seq, goal, kind, data in rows
        if goal_id is None or goal == goal_id
    ]


def as_stored(events: Sequence[GoalEvent], goal_id: str | None = None) -> list[Stored]:
    """What the ledger must hold of the events an orchestrator reported (of one goal, if
    given): every ledger event, in order, as ``(kind, data)`` the way JSON stores it."""
    return [
        (kind, orjson.loads(orjson.dumps(data)))
        for kind, data in (
            event_to_ledger(e)
            for e in events
            if is_ledger_event(e) and (goal_id is None or e.goal_id == goal_id)
        )
    ]


def assert_ledger_is(
    database: Path, events: Sequence[GoalEvent], goal_id: str, *, before: Sequence[Stored] = ()
) -> list[LedgerRow]:
    """Nothing is lost: the goal's rows in the file are ``before`` (what was there already)
    and then exactly the ledger events reported, event by event, each once, in order."""
    rows = ledger_rows(database, goal_id)
    stored = [(kind, data) for _, _, kind, data in rows]
    expected = [*before, *as_stored(events, goal_id)]
    assert [k for k, _ in stored] == [k for k, _ in expected], "the ledger's kinds differ"
    for index, (got, want) in enumerate(zip(stored, expected, strict=True)):
        assert got == want, f"ledger row {index} ({got[0]}) differs from the event reported"
    assert_runs_well_formed(rows)
    return rows


def assert_runs_well_formed(rows: Sequence[LedgerRow], *, unfinished: bool = False) -> None:
    """Each goal's rows: strictly increasing ``seq``, times that never go back, and runs
    that each begin with one ``goal_started`` and end with one ``goal_completed`` (the last
    one may lack its end when ``unfinished``: the rest of it was never written)."""
    seqs = [seq for seq, *_ in rows]
    assert seqs == sorted(set(seqs)), "ledger seqs repeat or go back"
    by_goal: dict[str, list[LedgerRow]] = {}
    for row in rows:
        by_goal.setdefault(row[1], []).append(row)
    for goal, goal_rows in by_goal.items():
        times = [data["at"] for *_, data in goal_rows if "at" in data]
        assert times == sorted(times), f"goal {goal}: event times go back"
        open_run = False
        for _, _, kind, _ in goal_rows:
            if kind == "goal_started":
                assert not open_run, f"goal {goal}: a run began before the last one ended"
                open_run = True
            elif kind == "goal_completed":
                assert open_run, f"goal {goal}: goal_completed outside a run"
                open_run = False
            else:
                assert open_run or kind in SEEDED, f"goal {goal}: {kind} outside a run"
        assert unfinished or not open_run, f"goal {goal}: the last run never ended"


SEEDED = frozenset({"session_bound"})
"""Kinds a test may plant in a ledger before any run (a goal bound in an earlier life)."""


async def seed_binding(database: Path, goal_id: str, session_id: str) -> list[Stored]:
    """Bind a goal to ``session_id`` in a SQLite ledger as an earlier process would have (a
    binding and its ``session_bound`` event); the rows planted."""
    seeded = [event_to_ledger(SessionBound(goal_id, session_id, at=time.time()))]
    async with open_sqlite_store(database) as store:
        await store.put_binding(goal_id, session_id)
        await store.append_events(goal_id, seeded)
    return [(kind, orjson.loads(orjson.dumps(data))) for kind, data in seeded]


def wait_unmarked(marker: str, *, within: float = 5.0) -> list[tuple[int, str]]:
    """Wait (real time, at most ``within``) until no live process carries ``marker``; what
    is still alive then (empty when all are gone)."""
    deadline = time.monotonic() + within
    while (alive := marked_processes(marker)) and time.monotonic() < deadline:
        time.sleep(0.02)
    return alive


# --------------------------------------------------------------------------- a small disk


@contextlib.contextmanager
def mounted_tmpfs(mount_point: Path, *, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` (``2m``) of our own at ``mount_point`` (the test is skipped where
    mounting is not allowed); unmounted afterwards."""
    mount_point.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}")
    try:
        yield mount_point
    finally:
        if subprocess.run(["umount", str(mount_point)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(mount_point)], check=False)  # pragma: no cover


FILL_RULE = "Bash(head:*)"
"""An ``--allowedTools`` rule letting the fake CLI run :func:`fill_command` without asking
the permission gate (it writes outside the workspace)."""


def fill_command(filler: Path) -> str:
    """A shell command filling the file system of ``filler`` up to the last byte (it fails
    with ENOSPC, as it should)."""
    return f"head -c 1G /dev/zero > {filler}"
