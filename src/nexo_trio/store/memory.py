"""An in-memory :class:`~nexo_trio.store.base.Store`, for tests and embedding.

It is also the reference for the semantics: the pure helpers here (re-binding, the TTL and
max-age filters, the outcome of a goal) are shared with the SQLite store, so the two cannot
drift apart on the fine print (strict vs. non-strict comparisons, which fields survive a
re-bind).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import attrs
import orjson
import trio

from nexo_trio.store.base import Binding, GoalSummary, LedgerEntry

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
    """The binding after ``put_binding``.

    A new session id starts a new life: ``created_at`` is reset and ``invalid`` cleared. The
    same session id keeps both. ``model`` / ``workspace`` of ``None`` keep the stored value.
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
    same = existing.session_id == session_id
    return Binding(
        goal_id=goal_id,
        session_id=session_id,
        model=model if model is not None else existing.model,
        workspace=workspace if workspace is not None else existing.workspace,
        created_at=existing.created_at if same else now,
        updated_at=now,
        last_active_at=now,
        invalid=existing.invalid if same else False,
    )


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


def binding_order(binding: Binding) -> tuple[float, str]:
    """Sort key: most recently active first, ties by goal id."""
    return (-binding.last_active_at, binding.goal_id)


def encode_data(data: dict[str, Any]) -> bytes:
    """The ledger's JSON encoding of an event's data (raises ``TypeError`` if not JSON)."""
    return orjson.dumps(data)


def decode_data(raw: bytes | str) -> dict[str, Any]:
    """Inverse of :func:`encode_data`."""
    data = orjson.loads(raw)
    if not isinstance(data, dict):  # pragma: no cover - only written by encode_data
        raise TypeError(f"ledger data is not a JSON object: {data!r}")
    return data


def outcome_kind(data: dict[str, Any]) -> str | None:
    """``data["outcome"]["kind"]`` of a ``goal_completed`` event, if it is a string."""
    outcome = data.get("outcome")
    if isinstance(outcome, dict):
        kind = outcome.get("kind")
        if isinstance(kind, str):
            return kind
    return None


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
        self._bindings: dict[str, Binding] = {}
        self._ledger: dict[str, list[_Row]] = {}
        self._seq = 0

    async def get_binding(
        self,
        goal_id: str,
        *,
        idle_ttl_s: float | None = None,
        max_age_s: float | None = None,
    ) -> Binding | None:
        """The goal's valid binding, unless idle longer than ``idle_ttl_s`` or older
        (since creation) than ``max_age_s``."""
        await trio.lowlevel.checkpoint()
        binding = self._bindings.get(goal_id)
        if binding is None or binding.invalid:
            return None
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
        """Bind (or re-bind) a goal to a session; a new session id resets ``created_at``
        and clears ``invalid``. Returns the stored binding."""
        await trio.lowlevel.checkpoint()
        binding = rebind(
            self._bindings.get(goal_id),
            goal_id,
            session_id,
            model=model,
            workspace=workspace,
            now=self._clock(),
        )
        self._bindings[goal_id] = binding
        return binding

    async def mark_invalid(self, goal_id: str, session_id: str) -> None:
        """Mark the goal's binding to ``session_id`` invalid (no-op if bound elsewhere)."""
        await trio.lowlevel.checkpoint()
        binding = self._bindings.get(goal_id)
        if binding is not None and binding.session_id == session_id:
            self._bindings[goal_id] = attrs.evolve(binding, invalid=True, updated_at=self._clock())

    async def touch(self, goal_id: str) -> None:
        """Set the binding's ``last_active_at`` to now."""
        await trio.lowlevel.checkpoint()
        binding = self._bindings.get(goal_id)
        if binding is not None:
            self._bindings[goal_id] = attrs.evolve(binding, last_active_at=self._clock())

    async def list_bindings(
        self,
        *,
        include_invalid: bool = False,
        idle_ttl_s: float | None = None,
        max_age_s: float | None = None,
    ) -> list[Binding]:
        """Bindings (valid ones unless ``include_invalid``), most recently active first."""
        await trio.lowlevel.checkpoint()
        now = self._clock()
        found = [
            b
            for b in self._bindings.values()
            if (include_invalid or not b.invalid)
            and is_fresh(b, now=now, idle_ttl_s=idle_ttl_s, max_age_s=max_age_s)
        ]
        found.sort(key=binding_order)
        return found

    async def purge_older_than(self, age_s: float) -> int:
        """Delete bindings not active for ``age_s`` seconds; return how many."""
        await trio.lowlevel.checkpoint()
        cutoff = self._clock() - age_s
        stale = [g for g, b in self._bindings.items() if b.last_active_at < cutoff]
        for goal_id in stale:
            del self._bindings[goal_id]
        return len(stale)

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
