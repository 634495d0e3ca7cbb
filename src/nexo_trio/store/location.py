"""Which store a command or an orchestrator opens: the ``store:`` setting made concrete.

``--store`` beats ``NEXO_STORE``, which beats the config's ``store:``; without any, the
store is ``nexo.db`` in the state directory. A value is a SQLite path or a
``postgresql://`` URL; any other URL is refused with a message naming the schemes we know.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import trio

from nexo_trio.store.base import SharedStore
from nexo_trio.store.urls import SCHEMES, is_postgres_url, is_url, redact_url

DB_NAME = "nexo.db"
"""The SQLite store's file name in the state directory."""


class StoreLocationError(ValueError):
    """A ``store:`` value that names no store we can open (the message says why)."""


@attrs.frozen
class StoreLocation:
    """A store to open: a SQLite file (:attr:`path`) or a PostgreSQL URL (:attr:`url`)."""

    value: str

    @classmethod
    def of(cls, store: str | None, state_dir: Path) -> StoreLocation:
        """The store ``store`` names (``None``: the state dir's ``nexo.db``); a relative
        path is taken from the current directory, as the state dir is."""
        if store is None:
            return cls(str(state_dir.expanduser() / DB_NAME))
        if is_postgres_url(store):
            return cls(store)
        if is_url(store):
            scheme = store.partition("://")[0]
            known = ", ".join(f"{name}://" for name in SCHEMES)
            raise StoreLocationError(
                f"store: unsupported URL scheme {scheme!r} (a SQLite file path, or {known})"
            )
        return cls(str(Path(store).expanduser()))

    @property
    def is_postgres(self) -> bool:
        """Whether this is a PostgreSQL database (shared by hosts) rather than a file."""
        return is_postgres_url(self.value)

    @property
    def path(self) -> Path | None:
        """The SQLite file, ``None`` for PostgreSQL."""
        return None if self.is_postgres else Path(self.value)

    def __str__(self) -> str:
        return redact_url(self.value) if self.is_postgres else self.value

    async def exists(self) -> bool:
        """Whether anything can have been recorded there yet (a database server: yes)."""
        path = self.path
        return True if path is None else await trio.to_thread.run_sync(path.exists)

    @asynccontextmanager
    async def open(
        self, *, clock: Callable[[], float] = time.time, timeout_s: float | None = 30.0
    ) -> AsyncIterator[SharedStore]:
        """The store, running, flushed and closed on exit (see each store's opener)."""
        path = self.path
        if path is None:
            from nexo_trio.store.postgres import open_postgres_store  # noqa: PLC0415 - optional

            async with open_postgres_store(self.value, timeout_s=timeout_s, clock=clock) as store:
                yield store
        else:
            from nexo_trio.store.sqlite import open_sqlite_store  # noqa: PLC0415 - lazy

            async with open_sqlite_store(path, timeout_s=timeout_s, clock=clock) as sqlite_store:
                yield sqlite_store


__all__ = ["DB_NAME", "StoreLocation", "StoreLocationError"]
