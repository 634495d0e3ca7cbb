"""``nexo-trio events GOAL --follow``: the goal's events so far, then each new one as it is
recorded, by this process or any other on the store.

The ledger is read again by sequence number (through the store's own reads, in a worker
thread) each time the store may have changed: on PostgreSQL when a ``NOTIFY`` of the store
comes (another host's append), on SQLite every 0.2 s (a file tells no one), and in any case
at least every :data:`WAIT_S`; so an event another process commits shows within a fraction
of a second. It runs until Ctrl-C or SIGTERM (exit 0, no traceback) or, with
``--until-done``, until the goal's latest event is its run's ``goal_completed`` (at once for
a goal that is not running). A goal not recorded yet (even a SQLite file or state dir not
made yet) is waited for: the command can be started before ``nexo-trio run``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Callable
from typing import Final

import click
import trio

from nexo_trio.cli.common import STATE_DIR_ERRORS, store_error
from nexo_trio.cli.state import event_line
from nexo_trio.store.base import EVENTS
from nexo_trio.store.location import StoreLocation

POLL_INTERVAL_S: Final = 0.15
"""How often a SQLite file that does not exist yet is looked for."""
WAIT_S: Final = 1.0
"""The longest wait for the store to change between two reads of the ledger."""

Write = Callable[[bytes], None]


def _write_stdout(data: bytes) -> None:
    sys.stdout.buffer.write(data)
    sys.stdout.flush()


async def follow(
    location: StoreLocation,
    goal_id: str,
    *,
    as_json: bool = False,
    until_done: bool = False,
    write: Write = _write_stdout,
    note: Callable[[str], None] | None = None,
    poll_s: float = POLL_INTERVAL_S,
    wait_s: float = WAIT_S,
) -> None:
    """Print the goal's events from the store at ``location`` with ``write`` (in a worker
    thread), then the new ones as they come, until cancelled (or, ``until_done``, until the
    goal's latest event is ``goal_completed``). ``note`` is told once when there is nothing
    yet. Between reads it waits for the store to change, at most ``wait_s``."""
    say = note or (lambda text: click.echo(text, err=True))
    db = location.path
    if db is not None and not await location.exists():
        # Opening the store would create the file (and the state dir): wait for a run to.
        say(f"nothing recorded yet: {db} does not exist; waiting for it")
        while not await location.exists():  # noqa: ASYNC110 - another process makes it
            await trio.sleep(poll_s)
    async with location.open() as store:
        last_seq = 0
        noted = False
        while True:
            # Marked before the read: events appended while it runs wake the wait at once.
            mark = store.changes_seen()
            # Events this reader keeps unwritten (it writes none) would have seq 0: skipped.
            entries = [e for e in await store.events(goal_id, after_seq=last_seq) if e.seq]
            if entries:
                data = b"".join(event_line(e, as_json=as_json) for e in entries)
                await trio.to_thread.run_sync(write, data)
                last_seq = entries[-1].seq
                if until_done and entries[-1].kind == "goal_completed":
                    return
            elif not last_seq and not noted:
                noted = True
                say(f"no events recorded for goal {goal_id!r} yet; waiting for them")
            await store.wait_changed(wait_s, (EVENTS,), since=mark)


async def _until_signalled(scope: trio.CancelScope) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            scope.cancel()
            return


def follow_events(
    location: StoreLocation, goal_id: str, *, as_json: bool, until_done: bool
) -> None:
    """``events --follow`` for the CLI: exit 0 on Ctrl-C/SIGTERM, quietly when stdout is
    closed (``| head``), exit 2 for a store it cannot read (one line)."""

    async def main() -> OSError | Exception | None:
        # Failures are returned, not raised: out of the nursery they would be a group.
        failure: Exception | None = None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_until_signalled, nursery.cancel_scope)
            try:
                await follow(location, goal_id, as_json=as_json, until_done=until_done)
            except STATE_DIR_ERRORS as exc:
                failure = exc
            nursery.cancel_scope.cancel()
        return failure

    try:
        failure = trio.run(main)
    except KeyboardInterrupt:  # a Ctrl-C before the signal receiver was set up
        return
    if isinstance(failure, BrokenPipeError):
        # Nobody reads any more: stop, without Python complaining at exit about the flush.
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
    elif failure is not None:
        raise store_error(location, failure)
