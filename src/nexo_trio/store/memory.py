"""An in-memory :class:`~nexo_trio.store.base.Store`, for tests and embedding.

It is also the reference for the semantics: the pure helpers here (re-binding, the TTL and
max-age filters, the order of bindings, the outcome of a goal) are shared with the SQLite
store, so the two cannot drift apart on the fine print (strict vs. non-strict comparisons,
which fields survive a re-bind, how ties are broken).

Bindings: one row per ``(goal_id, session_id)``, each with a *put sequence* number that
grows with every ``put_binding`` (the SQLite store uses the rowid, which a put renews). A
goal's latest row is the one with the latest ``updated_at``, ties to the higher sequence;
it is the goal's current binding if it is valid.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import attrs
import trio

from nexo_trio.store.base import Binding, GoalSummary, LedgerEntry
from nexo_trio.wire.ledger_rows import decode_data, encode_data, outcome_kind

GOAL_STARTED = "goal_started"
GOAL_COMPLETED = "goal_completed"


def rebind(
    existing: Binding | None,
    goal_id: str,
    session_id: str,
    *,
    model: str | None,
    workspace: str | None,
    now: float,
) -> Binding:
    """The ``(goal_id, session_id)`` row after ``put_binding``, given the stored one.

    An existing row keeps ``created_at``, takes ``model`` / ``workspace`` when given
    (``None`` keeps the stored value) and is valid again. A new row starts now, with what
    was given: nothing is inherited from the goal's other sessions.
    """
    if existing is None:
        return Binding(
            goal_id=goal_id,
            session_id=session_id,
            model=model,
            workspace=workspace,
            created_at=now,
            updated_at=now,
            last_active_at=now,
            invalid=False,
        )
    return attrs.evolve(
        existing,
        model=model if model is not None else existing.model,
        workspace=workspace if workspace is not None else existing.workspace,
        updated_at=now,
        last_active_at=now,
        invalid=False,
    )


def latest_row(rows: Iterable[tuple[int, Binding]]) -> tuple[int, Binding] | None:
    """Of one goal's ``(put sequence, row)`` pairs, the latest: the latest ``updated_at``,
    ties to the later put. It is the goal's current binding unless it is invalid."""
    return max(rows, key=lambda row: (row[1].updated_at, row[0]), default=None)


def is_fresh(
    binding: Binding, *, now: float, idle_ttl_s: float | None, max_age_s: float | None
) -> bool:
    """Neither idle longer than ``idle_ttl_s`` nor older (since creation) than ``max_age_s``.

    Exactly at the limit still counts as fresh. Both stores compare against a cutoff
    (``now - limit``) so that they agree to the last bit of a float.
    """
    if idle_ttl_s is not None and binding.last_active_at < now - idle_ttl_s:
        return False
    return not (max_age_s is not None and binding.created_at < now - max_age_s)


def binding_order(seq: int, binding: Binding) -> tuple[float, str, float, int]:
    """Sort key of a ``(put sequence, row)`` pair: most recently active first, ties by goal
    id, then (rows of one goal) the later put first."""
    return (-binding.last_active_at, binding.goal_id, -binding.updated_at, -seq)


def fresh_in_order(
    rows: Iterable[tuple[int, Binding]],
    *,
    now: float,
    idle_ttl_s: float | None,
    max_age_s: float | None,
) -> list[Binding]:
    """What ``list_bindings`` answers for these ``(put sequence, row)`` pairs: the fresh
    rows (:func:`is_fresh`) in :func:`binding_order`."""
    found = [
        row for row in rows if is_fresh(row[1], now=now, idle_ttl_s=idle_ttl_s, max_age_s=max_age_s)
    ]
    found.sort(key=lambda row: binding_order(*row))
    return [binding for _, binding in found]


@attrs.frozen
class _Row:
    seq: int
    at: float
    kind: str
    raw: bytes


class MemoryStore:
    """Bindings and ledger in process memory; gone with the process.

    Event data is stored JSON-encoded (like the SQLite store), so what goes in must be JSON
    and what comes out is a fresh copy.
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        # goal id -> session id -> (put sequence, row)
        self._bindings: dict[str, dict[str, tuple[int, Binding]]] = {}
        self._puts = 0
        self._ledger: dict[str, list[_Row]] = {}
        self._seq = 0

    # -- health: memory never fails to write ----------------------------------------------

    @property
    def write_problem(self) -> str | None:
        """Always ``None``: memory does not fail to write."""
        return None

    @property
    def unwritable(self) -> str | None:
        """Always ``None``."""
        return None

    def unwritten(self) -> list[LedgerEntry]:
        """Always empty."""
        return []

    async def wait_flushed(self, timeout_s: float) -> bool:
        """Everything is written as soon as it is appended."""
        await trio.lowlevel.checkpoint()
        return True

    def _current(self, goal_id: str) -> tuple[int, Binding] | None:
        latest = latest_row(self._bindings.get(goal_id, {}).values())
        return None if latest is None or latest[1].invalid else latest

    async def get_binding(
        self,
        goal_id: str,
        *,
        idle_ttl_s: float | None = None,
        max_age_s: float | None = None,
    ) -> Binding | None:
        """The goal's current binding (see :class:`~nexo_trio.store.base.Binding`), or
        ``None`` if it has none or it is idle longer than ``idle_ttl_s`` (since
        ``last_active_at``) or older than ``max_age_s`` (since ``created_at``); exactly at a
        limit still counts."""
        await trio.lowlevel.checkpoint()
        current = self._current(goal_id)
        if current is None:
            return None
        binding = current[1]
        now = self._clock()
        if not is_fresh(binding, now=now, idle_ttl_s=idle_ttl_s, max_age_s=max_age_s):
            return None
        return binding

    async def put_binding(
        self,
        goal_id: str,
        session_id: str,
        *,
        model: str | None = None,
        workspace: str | None = None,
    ) -> Binding:
        """Bind the goal to ``session_id``, which becomes its current binding; other rows
        of the goal are kept as they are. Returns the stored row (see
        :meth:`~nexo_trio.store.base.Store.put_binding`)."""
        await trio.lowlevel.checkpoint()
        rows = self._bindings.setdefault(goal_id, {})
        stored = rows.get(session_id)
        binding = rebind(
            None if stored is None else stored[1],
            goal_id,
            session_id,
            model=model,
            workspace=workspace,
            now=self._clock(),
        )
        self._puts += 1
        rows[session_id] = (self._puts, binding)
        return binding

    async def mark_invalid(self, goal_id: str, session_id: str) -> None:
        """Flag the goal's ``session_id`` row invalid, keeping it (and its times); a no-op
        if there is no such row."""
        await trio.lowlevel.checkpoint()
        rows = self._bindings.get(goal_id, {})
        stored = rows.get(session_id)
        if stored is not None:
            seq, binding = stored
            rows[session_id] = (seq, attrs.evolve(binding, invalid=True))

    async def touch(self, goal_id: str) -> None:
        """Set the current binding's ``last_active_at`` to now; a no-op without one."""
        await trio.lowlevel.checkpoint()
        current = self._current(goal_id)
        if current is not None:
            seq, binding = current
            touched = attrs.evolve(binding, last_active_at=self._clock())
            self._bindings[goal_id][binding.session_id] = (seq, touched)

    async def list_bindings(
        self,
        *,
        include_invalid: bool = False,
        idle_ttl_s: float | None = None,
        max_age_s: float | None = None,
    ) -> list[Binding]:
        """The current binding of each goal that has one; with ``include_invalid``, every
        row instead (invalid and superseded ones too). Most recently active first,
        filtered like :meth:`get_binding`."""
        await trio.lowlevel.checkpoint()
        rows: list[tuple[int, Binding]] = []
        for goal_id, by_session in self._bindings.items():
            if include_invalid:
                rows.extend(by_session.values())
            elif (current := self._current(goal_id)) is not None:
                rows.append(current)
        return fresh_in_order(rows, now=self._clock(), idle_ttl_s=idle_ttl_s, max_age_s=max_age_s)

    async def purge_older_than(self, age_s: float) -> int:
        """Delete every row (of any goal, valid or not) not active for more than ``age_s``
        seconds; return how many."""
        await trio.lowlevel.checkpoint()
        cutoff = self._clock() - age_s
        purged = 0
        for goal_id in list(self._bindings):
            rows = self._bindings[goal_id]
            stale = [s for s, (_, b) in rows.items() if b.last_active_at < cutoff]
            for session_id in stale:
                del rows[session_id]
            purged += len(stale)
            if not rows:
                del self._bindings[goal_id]
        return purged

    async def append_events(
        self, goal_id: str, events: Sequence[tuple[str, dict[str, Any]]]
    ) -> None:
        """Append ``(kind, data)`` events of a goal to the ledger, in order, atomically."""
        # Encode everything before touching the ledger: a bad event appends nothing.
        encoded = [(kind, encode_data(data)) for kind, data in events]
        await trio.lowlevel.checkpoint()
        if not encoded:
            return
        now = self._clock()
        rows = self._ledger.setdefault(goal_id, [])
        for kind, raw in encoded:
            self._seq += 1
            rows.append(_Row(seq=self._seq, at=now, kind=kind, raw=raw))

    async def events(self, goal_id: str, *, after_seq: int = 0) -> list[LedgerEntry]:
        """The goal's events with ``seq > after_seq``, in order."""
        await trio.lowlevel.checkpoint()
        return [
            LedgerEntry(
                seq=row.seq, goal_id=goal_id, at=row.at, kind=row.kind, data=decode_data(row.raw)
            )
            for row in self._ledger.get(goal_id, ())
            if row.seq > after_seq
        ]

    async def goals(self) -> list[GoalSummary]:
        """Every goal in the ledger, most recently active first."""
        await trio.lowlevel.checkpoint()
        found: list[tuple[int, GoalSummary]] = []
        for goal_id, rows in self._ledger.items():
            outcome: str | None = None
            for row in reversed(rows):
                if row.kind == GOAL_COMPLETED:
                    outcome = outcome_kind(decode_data(row.raw))
                    break
                if row.kind == GOAL_STARTED:
                    break
            summary = GoalSummary(
                goal_id=goal_id,
                first_at=min(row.at for row in rows),
                last_at=max(row.at for row in rows),
                events=len(rows),
                last_kind=rows[-1].kind,
                outcome=outcome,
            )
            found.append((rows[-1].seq, summary))
        found.sort(key=lambda item: (-item[1].last_at, -item[0]))
        return [summary for _, summary in found]
