"""What the orchestrator needs from persistence: session bindings and the goal ledger.

Two implementations: :class:`~nexo_trio.store.sqlite.SQLiteStore` (a file, survives the
process) and :class:`~nexo_trio.store.memory.MemoryStore` (tests and embedding). Times are
seconds since the epoch from the store's clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import attrs


@attrs.frozen
class Binding:
    """Which Claude Code session a goal continues.

    An invalid binding (the CLI said the session is unknown) is kept for forensics but never
    returned by lookups.
    """

    goal_id: str
    session_id: str
    model: str | None = None
    workspace: str | None = None
    created_at: float = 0.0
    updated_at: float = 0.0
    last_active_at: float = 0.0
    invalid: bool = False


@attrs.frozen
class LedgerEntry:
    """One recorded goal event."""

    seq: int
    goal_id: str
    at: float
    kind: str
    data: dict[str, Any]


@attrs.frozen
class GoalSummary:
    """A goal as the ledger knows it: for ``nexo-trio status``."""

    goal_id: str
    first_at: float
    last_at: float
    events: int
    last_kind: str
    outcome: str | None
    """The outcome kind of the latest ``goal_completed`` event, ``None`` while running."""


class Store(Protocol):
    """Session bindings and the goal ledger."""

    async def get_binding(
        self,
        goal_id: str,
        *,
        idle_ttl_s: float | None = None,
        max_age_s: float | None = None,
    ) -> Binding | None:
        """The goal's valid binding, unless idle longer than ``idle_ttl_s`` or older
        (since creation) than ``max_age_s``."""
        ...

    async def put_binding(
        self,
        goal_id: str,
        session_id: str,
        *,
        model: str | None = None,
        workspace: str | None = None,
    ) -> Binding:
        """Bind (or re-bind) a goal to a session; a new session id resets ``created_at``
        and clears ``invalid``. Returns the stored binding."""
        ...

    async def mark_invalid(self, goal_id: str, session_id: str) -> None:
        """Mark the goal's binding to ``session_id`` invalid (no-op if bound elsewhere)."""
        ...

    async def touch(self, goal_id: str) -> None:
        """Set the binding's ``last_active_at`` to now."""
        ...

    async def list_bindings(
        self,
        *,
        include_invalid: bool = False,
        idle_ttl_s: float | None = None,
        max_age_s: float | None = None,
    ) -> list[Binding]:
        """Bindings (valid ones unless ``include_invalid``), most recently active first."""
        ...

    async def purge_older_than(self, age_s: float) -> int:
        """Delete bindings not active for ``age_s`` seconds; return how many."""
        ...

    async def append_events(
        self, goal_id: str, events: Sequence[tuple[str, dict[str, Any]]]
    ) -> None:
        """Append ``(kind, data)`` events of a goal to the ledger, in order, atomically."""
        ...

    async def events(self, goal_id: str, *, after_seq: int = 0) -> list[LedgerEntry]:
        """The goal's events with ``seq > after_seq``, in order."""
        ...

    async def goals(self) -> list[GoalSummary]:
        """Every goal in the ledger, most recently active first."""
        ...
