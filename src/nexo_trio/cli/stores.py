"""The store a command reads or writes (``--store`` / ``NEXO_STORE`` / the config's
``store:``, else ``nexo.db`` in the state dir), opened the same way by every command.

A SQLite file that does not exist yet is "nothing recorded yet"; a store that cannot be
used (not our database, a PostgreSQL server that cannot be reached) is one line and exit 2
(:func:`~nexo_trio.cli.common.store_error`). What a goal that recorded no end is comes
from the goal's lock on SQLite (a process of this host), from its lease on PostgreSQL
(any host).
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import TypeVar

import trio

from nexo_trio.cli.common import (
    STATE_DIR_ERRORS,
    UserError,
    state_dir_error,
    store_error,
)
from nexo_trio.core.goal_lock import running_message
from nexo_trio.orchestrator.goal_lock import find_goal_runner
from nexo_trio.orchestrator.leases import leased_message
from nexo_trio.store.base import Lease, SharedStore
from nexo_trio.store.batched import StoreError
from nexo_trio.store.location import StoreLocation

T = TypeVar("T")

STORE_ERRORS = (sqlite3.Error, StoreError)
"""What reading or writing an open store can raise for the store's own trouble (a file
that is not our database, a PostgreSQL server gone)."""


class NothingRecorded(UserError):
    """The store is a SQLite file that does not exist: nothing was recorded there yet."""

    def __init__(self, location: StoreLocation) -> None:
        super().__init__(f"nothing recorded yet: {location} does not exist")


@asynccontextmanager
async def opened(location: StoreLocation) -> AsyncIterator[SharedStore]:
    """The store at ``location``, running (closed on exit). One that cannot be opened is
    a :class:`UserError` (:func:`store_error`); a SQLite file that does not exist is
    :class:`NothingRecorded` (opening it would create it, and the state dir)."""
    if not await location.exists():
        raise NothingRecorded(location)
    async with AsyncExitStack() as stack:
        try:
            store = await stack.enter_async_context(location.open())
        except STATE_DIR_ERRORS as exc:
            raise store_error(location, exc) from None
        yield store


def with_store(location: StoreLocation, fn: Callable[[SharedStore], Awaitable[T]]) -> T:
    """``fn(store)`` with the store open, in a trio run of its own; the store's trouble
    while opening or using it is a :class:`UserError` (exit 2, one line), and a SQLite
    file that does not exist is :class:`NothingRecorded`."""

    async def main() -> T:
        async with opened(location) as store:
            return await fn(store)

    try:
        return trio.run(main)
    except STORE_ERRORS as exc:
        raise store_error(location, exc) from None


def open_error(location: StoreLocation, state_dir: Path, exc: BaseException) -> UserError:
    """The one-line error of a command that opens the state dir and the store (``run``,
    ``check``): the store's trouble names the store, anything else the state dir."""
    if isinstance(exc, STORE_ERRORS):
        return store_error(location, exc)
    return state_dir_error(state_dir, exc)


def lease_state(lease: Lease) -> str:
    """``running on HOST:PID:… (lease until T)``: a goal leased to a live orchestrator."""
    return leased_message(lease).removeprefix(f"goal {lease.goal_id} is ")


async def open_state(
    location: StoreLocation, store: SharedStore, state_dir: Path, goal_id: str
) -> str:
    """What a goal whose latest run recorded no end is: on PostgreSQL ``running on OWNER
    (lease until T)`` while an orchestrator holds its lease; on SQLite ``running in
    process N since T`` while a process of this host holds its lock (in ``state_dir``);
    else ``crashed`` (the next run goes on from its ledger and stops what the crashed run
    left)."""
    if location.is_postgres:
        lease = await store.lease_of(goal_id)
        return "crashed" if lease is None else lease_state(lease)
    holder = await find_goal_runner(state_dir, goal_id)
    if holder is None:
        return "crashed"
    return running_message(goal_id, holder).removeprefix(f"goal {goal_id} is ")


__all__ = [
    "STORE_ERRORS",
    "NothingRecorded",
    "lease_state",
    "open_error",
    "open_state",
    "opened",
    "with_store",
]
