"""``nexo-trio watch [GOAL…]``: a live table of the goals of a state dir, from any terminal,
whichever process runs them.

Each goal's row is the fold of its ledger (:func:`nexo_trio.core.goal_machine.apply` over
:func:`~nexo_trio.wire.goal_json.event_from_ledger` of its rows), read again about twice a
second: only the events recorded since the last read are fetched and folded. Whether a
running goal's process is alive comes, on SQLite, from
:func:`nexo_trio.cli.control.running_pid` (asked again when a run starts or ends) and that
pid; on PostgreSQL (runs on any host) from the goal's lease: a run whose process is gone
(or whose lease expired) shows ``crashed``. On a terminal the table redraws until Ctrl-C
(exit 0); otherwise (or with ``--once``) one snapshot is printed.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Final

import attrs
import click
import psutil
import trio
from rich.console import Console
from rich.live import Live
from rich.table import Table

from nexo_trio.cli.common import (
    STATE_DIR_ERRORS,
    read_config,
    state_dir_option,
    store_error,
    store_location,
)
from nexo_trio.cli.control import running_pid
from nexo_trio.cli.stores import NothingRecorded, opened
from nexo_trio.core.goal_machine import GoalState, apply, initial_state
from nexo_trio.orchestrator.state_dir import StateDir
from nexo_trio.store.base import LedgerEntry, SharedStore
from nexo_trio.store.location import StoreLocation
from nexo_trio.wire.goal_json import event_from_ledger

REFRESH_S: Final = 0.5
"""How often the ledger is read again (and the table redrawn)."""
SNAPSHOT_WIDTH: Final = 200
"""The width of a snapshot printed to a file or a pipe (no terminal to measure)."""

COLUMNS: Final = ("goal", "state", "turns", "tokens", "cost", "last event", "age")


@attrs.define
class Watched:
    """One goal as the watcher knows it: the fold of the events read so far."""

    goal_id: str
    state: GoalState
    last_seq: int = 0
    events: int = 0
    last_kind: str = ""
    last_at: float = 0.0
    pid: int | None = None
    pid_due: bool = True
    """Ask :func:`running_pid` again (a run started or ended since)."""
    alive: bool | None = None
    """Whether the process of a running goal is alive (``None``: not running, or unknown)."""

    def fold(self, entries: Sequence[LedgerEntry]) -> None:
        """Fold newly read ledger rows (in order) into the state."""
        for entry in entries:
            if not entry.seq:
                continue
            self.last_seq, self.last_kind, self.last_at = entry.seq, entry.kind, entry.at
            self.events += 1
            if entry.kind in ("goal_started", "goal_completed"):
                self.pid_due = True
            try:
                event = event_from_ledger(entry.kind, entry.data, at=entry.at)
            except (ExceptionGroup, ValueError, TypeError, KeyError):
                # cattrs' validation errors are exception groups. A row of another version:
                # shown as the last event, not folded.
                continue
            if event is not None:
                self.state = apply(self.state, event)


def state_label(state: GoalState, *, alive: bool | None, now: float) -> str:
    """What a goal is doing, in a word or three: ``done`` (or how its last run ended),
    ``working (turn N)``, ``checking``, ``paused``, ``sleeping Ns``, ``cancelling``, ``crashed``
    (its run's process is gone), ``new``."""
    if not state.running:
        if state.outcome is not None:
            return state.outcome.kind.value
        return "new" if state.runs == 0 else "idle"
    if alive is False:
        return "crashed"
    if state.cancel_reason is not None:
        return "cancelling"
    attempt = state.attempt
    if state.paused:
        return "paused" if attempt is None else f"pausing (turn {attempt.turn} running)"
    if attempt is not None:
        return "compacting" if attempt.compact else f"working (turn {attempt.turn})"
    if state.acceptance_due is not None:
        return "checking"
    if state.sleep is not None:
        return f"sleeping {_duration(max(0.0, state.sleep.until - now))}"
    return "running"


def _duration(seconds: float) -> str:
    """``4.2s``, ``3m05s``, ``2h10m``, ``3d04h``."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    minutes, secs = divmod(whole, 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s"


def goal_row(goal: Watched, now: float) -> tuple[str, ...]:
    """The table row of one goal (see :data:`COLUMNS`)."""
    state = goal.state
    if not goal.events:
        return (goal.goal_id, "no events", "-", "-", "-", "-", "-")
    return (
        goal.goal_id,
        state_label(state, alive=goal.alive, now=now),
        str(state.turns),
        str(state.usage.total_tokens),
        f"${state.cost_usd:.4f}",
        goal.last_kind,
        _duration(max(0.0, now - goal.last_at)),
    )


class Watcher:
    """Keeps the goals of one store (or the ``goal_ids`` given) up to date; ``layout`` is
    the state dir of this host's runs (their control sockets, for a SQLite store)."""

    def __init__(
        self,
        layout: StateDir,
        goal_ids: Sequence[str] = (),
        *,
        location: StoreLocation | None = None,
    ) -> None:
        self.layout = layout
        self.location = location or StoreLocation(str(layout.database))
        self.given = tuple(dict.fromkeys(goal_ids))
        self.goals: dict[str, Watched] = {
            goal_id: Watched(goal_id, initial_state(goal_id)) for goal_id in self.given
        }

    @property
    def where(self) -> str:
        """What the table is of: the state dir, or the store when it is elsewhere."""
        if self.location.path == self.layout.database:
            return str(self.layout.root)
        return str(self.location)

    async def refresh(self, store: SharedStore) -> None:
        """Read what was recorded since the last refresh, and who is alive."""
        summaries = await store.goals()
        # The oldest goal first, so rows keep their place while the table redraws.
        for summary in sorted(summaries, key=lambda s: (s.first_at, s.goal_id)):
            if self.given and summary.goal_id not in self.goals:
                continue
            goal = self.goals.setdefault(
                summary.goal_id, Watched(summary.goal_id, initial_state(summary.goal_id))
            )
            if summary.events != goal.events:
                goal.fold(await store.events(goal.goal_id, after_seq=goal.last_seq))
        for goal in self.goals.values():
            await self._check_process(store, goal)

    async def _check_process(self, store: SharedStore, goal: Watched) -> None:
        if not goal.state.running:
            goal.alive, goal.pid = None, None
            return
        if self.location.is_postgres:
            # Its run may be on any host: alive while an orchestrator holds its lease.
            goal.alive = await store.lease_of(goal.goal_id) is not None
            return
        if goal.pid_due:
            goal.pid = await running_pid(store, goal.goal_id)
            goal.pid_due = False
        pid = goal.pid
        if pid is None:
            goal.alive = None
            return
        socket = self.layout.control_socket(pid)
        goal.alive = await trio.to_thread.run_sync(
            lambda: psutil.pid_exists(pid) and socket.exists()
        )

    def table(self, now: float, *, caption: str | None = None, titled: bool = True) -> Table:
        """The table of every goal watched (``titled``: with :attr:`where` as its title)."""
        title = f"nexo-trio watch: {self.where}" if titled else None
        table = Table(title=title, caption=caption)
        for column in COLUMNS:
            table.add_column(column, justify="right" if column in ("turns", "tokens") else "left")
        for goal in self.goals.values():
            table.add_row(*goal_row(goal, now))
        return table


async def _until_signalled(scope: trio.CancelScope) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            scope.cancel()
            return


async def snapshot(watcher: Watcher, console: Console) -> None:
    """Print the table once (:class:`NothingRecorded` for a SQLite file not made yet)."""
    async with opened(watcher.location) as store:
        await watcher.refresh(store)
    # The state dir on a line of its own, never wrapped (a title would be, when long).
    header = f"nexo-trio watch: {watcher.where}"
    await trio.to_thread.run_sync(partial(console.print, header, soft_wrap=True))
    table = watcher.table(time.time(), titled=False)
    await trio.to_thread.run_sync(console.print, table)


async def live(watcher: Watcher, console: Console, *, refresh_s: float = REFRESH_S) -> None:
    """Redraw the table every ``refresh_s`` until cancelled (waiting for a SQLite store's
    file to appear if it is not there yet)."""
    location = watcher.location
    with Live(console=console, auto_refresh=False) as shown:

        async def draw(caption: str | None = None) -> None:
            table = watcher.table(time.time(), caption=caption)
            await trio.to_thread.run_sync(partial(shown.update, table, refresh=True))

        while not await location.exists():
            await draw(f"nothing recorded yet: waiting for {location}")
            await trio.sleep(refresh_s)
        async with location.open() as store:
            while True:
                await watcher.refresh(store)
                await draw("Ctrl-C to stop")
                await trio.sleep(refresh_s)


@click.command()
@click.argument("goal_ids", nargs=-1, metavar="[GOAL]...")
@state_dir_option
@click.option("--once", is_flag=True, help="Print one snapshot and exit (also when not a tty).")
def watch(
    goal_ids: tuple[str, ...], config_file: Path | None, state_dir: Path | None, once: bool
) -> None:
    """A live table of every goal in the state dir (or the GOALs given), whichever process
    runs them: state, turns, tokens, cost, last event and its age.

    Refreshed about twice a second until Ctrl-C; when stdout is not a terminal (or with
    --once), one snapshot."""
    config = read_config(config_file, state_dir=state_dir)
    layout = StateDir(Path(config.state_dir).expanduser())
    location = store_location(config)
    terminal = sys.stdout.isatty()
    console = Console(file=sys.stdout, highlight=False, width=None if terminal else SNAPSHOT_WIDTH)
    watcher = Watcher(layout, goal_ids, location=location)
    if once or not terminal:
        try:
            trio.run(snapshot, watcher, console)
        except NothingRecorded as exc:
            click.echo(exc.message, err=True)
        except STATE_DIR_ERRORS as exc:
            raise store_error(location, exc) from None
        return

    async def main() -> Exception | None:
        failure: Exception | None = None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_until_signalled, nursery.cancel_scope)
            try:
                await live(watcher, console)
            except STATE_DIR_ERRORS as exc:
                failure = exc
            nursery.cancel_scope.cancel()
        return failure

    failure: Exception | None = None
    with contextlib.suppress(KeyboardInterrupt):  # a Ctrl-C before the receiver was set up
        failure = trio.run(main)
    if failure is not None:
        raise store_error(location, failure)
