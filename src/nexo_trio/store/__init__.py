"""Persistence: session bindings and the goal ledger (SQLite, or in memory)."""

from nexo_trio.store.base import Binding, GoalSummary, LedgerEntry, Store
from nexo_trio.store.memory import MemoryStore
from nexo_trio.store.sqlite import (
    SchemaVersionError,
    SQLiteStore,
    StoreClosedError,
    StoreError,
    StoreUnwritableError,
    open_sqlite_store,
    raise_if_unwritable,
)

__all__ = [
    "Binding",
    "GoalSummary",
    "LedgerEntry",
    "MemoryStore",
    "SQLiteStore",
    "SchemaVersionError",
    "Store",
    "StoreClosedError",
    "StoreError",
    "StoreUnwritableError",
    "open_sqlite_store",
    "raise_if_unwritable",
]
