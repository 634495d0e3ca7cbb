"""Which process is which: a pid, the time it started and the boot it started in.

A pid alone names a process only while it lives: once it is gone the kernel hands the number
to the next process that asks. A recorded process (the holder of a goal's lock, a turn's
CLI) is therefore recorded with its start time, as ``/proc/PID/stat`` gives it (clock ticks
after boot: exact, an integer), and the boot's id: a process is the recorded one only when
all three match (:func:`same_process`). Reading ``/proc`` is the shells' job
(``engine/leftovers.py``); parsing what it holds and deciding is here.
"""

from __future__ import annotations

import attrs

from nexo_trio.core import validation as v


@attrs.frozen
class ProcessIdentity:
    """One process of one boot: its pid and when it started."""

    pid: int = attrs.field(validator=v.at_least(1))
    start: int = attrs.field(validator=v.at_least(0))
    """Field 22 of ``/proc/PID/stat``: when the process started, in clock ticks after boot."""
    boot: str = ""
    """``/proc/sys/kernel/random/boot_id`` (empty: not known)."""


def parse_stat_start(stat: str) -> int | None:
    """The start time (clock ticks after boot) in the text of ``/proc/PID/stat``; ``None``
    when the text is not such a line.

    The second field, the command name in parentheses, may itself hold spaces and
    parentheses: the fields after it are counted from its *last* closing parenthesis.
    """
    close = stat.rfind(")")
    if close < 0:
        return None
    fields = stat[close + 1 :].split()
    # fields[0] is field 3 (the state): field 22 is fields[19].
    if len(fields) < 20 or not fields[19].isdigit():
        return None
    return int(fields[19])


def same_process(recorded: ProcessIdentity, observed: ProcessIdentity | None) -> bool:
    """Whether ``observed`` (what runs under the recorded pid now; ``None``: nothing) is the
    recorded process: same pid, same start time, and the same boot when both know it."""
    if observed is None:
        return False
    if recorded.pid != observed.pid or recorded.start != observed.start:
        return False
    return not (recorded.boot and observed.boot and recorded.boot != observed.boot)
