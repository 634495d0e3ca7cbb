"""What a crashed run left behind: find the processes of its open turn and stop them.

When ``nexo-trio run`` dies (``kill -9``, the OOM killer), its turn's processes normally die
with it: bubblewrap's PID namespace ends with its supervisor, and an unconfined turn's
subreaper helper kills the whole tree once its lifeline closes. This module is the belt and
braces for what survived anyway (the helper killed along with the run, say): the next run of
the goal stops them before the goal goes on.

The ledger holds what identifies them (recorded by ``orchestrator/goal_run.py``): the turn's
marker, ``NEXO_TRIO_TURN=<id>`` in the environment of everything the turn started (recorded
with ``attempt_started``, before the CLI starts), and the CLI's pid with its start time and
boot (``turn_spawned``, once it runs). :func:`find_leftovers` takes the recorded process
only when pid, start time and boot all match what runs under that pid now (a reused pid is
never taken), with its descendants, and every process whose environment holds the marker;
:func:`stop_leftovers` stops them: SIGTERM, the kill grace, SIGKILL (psutil checks each
process's start time again before it signals it).

:func:`process_identity` reads a process's identity from ``/proc``; the parsing and the
decision are :mod:`nexo_trio.core.processes`. Linux only (elsewhere nothing is found).

Unlike a turn (which walks down from its own subreaper helper and reads nothing else of the
host), the search for the marker is a pass over every process on the host: what survived a
crashed run has been re-parented to init or some other subreaper, so no tree of ours leads
to it, and the marker is all that is left to tell it by. It runs once per recovery, not per
turn.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Sequence
from functools import cache
from typing import Final

import psutil
import trio

from nexo_trio.core.processes import ProcessIdentity, parse_stat_start, same_process
from nexo_trio.engine.process_tree import find_strays, is_alive
from nexo_trio.engine.stopping import escalate, shielded_within, stop_budget
from nexo_trio.engine.supervisor import TURN_MARKER_VAR

MARKER_VAR: Final = TURN_MARKER_VAR
"""The turn marker's variable."""
_POLL_S: Final = 0.02


@cache
def boot_id() -> str:
    """This boot's id (``/proc/sys/kernel/random/boot_id``; empty when unknown)."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            return f.read().strip()
    except OSError:
        return ""


def process_identity(pid: int) -> ProcessIdentity | None:
    """The identity of the process running under ``pid`` now; ``None`` when there is none
    (or it cannot be read). Blocking (reads ``/proc``): call it from a worker thread."""
    if pid < 1:
        return None
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as f:
            stat = f.read()
    except OSError:
        return None
    start = parse_stat_start(stat)
    if start is None:
        return None
    return ProcessIdentity(pid=pid, start=start, boot=boot_id())


def find_leftovers(process: ProcessIdentity | None, marker: str | None) -> list[psutil.Process]:
    """The live processes of a crashed turn: ``process`` (the turn's CLI, as recorded) and
    its descendants when it is still the same process, and every process whose environment
    holds ``NEXO_TRIO_TURN=<marker>``. Never this process. Blocking (walks ``/proc``)."""
    found: dict[int, psutil.Process] = {}
    me = os.getpid()
    if process is not None and process.pid != me:
        try:
            root = psutil.Process(process.pid)
            # Read after psutil has the process's own start time: if the pid is reused
            # between the two, psutil's handle is the new process and the check fails.
            if same_process(process, process_identity(process.pid)):
                found[root.pid] = root
                for child in root.children(recursive=True):
                    found.setdefault(child.pid, child)
        except psutil.Error:
            pass
    if marker:
        needle = f"{MARKER_VAR}={marker}".encode()
        for pid in find_strays(needle, set(), exclude={me, *found}):
            with contextlib.suppress(psutil.Error):
                proc = psutil.Process(pid)
                # Again, now that psutil holds the process's start time: the marked one
                # may have gone and its pid been reused in between.
                if proc.environ().get(MARKER_VAR) == marker:
                    found[pid] = proc
    return [proc for pid, proc in found.items() if pid != me and is_alive(proc)]


def describe(proc: psutil.Process) -> str:
    """``PID NAME`` of a process (its name as far as it can be read)."""
    try:
        name = proc.name()
    except psutil.Error:
        name = "?"
    return f"{proc.pid} {name}"


async def stop_leftovers(
    process: ProcessIdentity | None, marker: str | None, *, grace: float
) -> tuple[str, ...]:
    """Stop what :func:`find_leftovers` finds (SIGTERM, ``grace``, SIGKILL; shielded and
    bounded); ``PID NAME`` of each process that was stopped (empty: nothing was left)."""
    if process is None and not marker:
        return ()
    procs = await trio.to_thread.run_sync(find_leftovers, process, marker)
    if not procs:
        return ()
    stopped = tuple(describe(proc) for proc in procs)

    def send(sig: signal.Signals) -> None:
        for proc in _alive(procs):
            with contextlib.suppress(psutil.Error):
                proc.send_signal(sig)  # psutil refuses a pid that is another process now

    async def wait() -> None:
        while _alive(procs):  # noqa: ASYNC110 - not our children: no event for their end
            await trio.sleep(_POLL_S)

    with shielded_within(stop_budget(grace)):
        await escalate(send, wait, grace=grace, gone=lambda: not _alive(procs))
    return stopped


def _alive(procs: Sequence[psutil.Process]) -> list[psutil.Process]:
    return [proc for proc in procs if is_alive(proc)]
