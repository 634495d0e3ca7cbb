"""Bindings and ledger reads and writes: the SQL that SQLite and PostgreSQL share.

Both databases run these statements as written (``:name`` parameters, run by the store's
:meth:`LedgerSql._sql`). What differs stays in each store: how a put of a binding takes a
new *put sequence* (SQLite's ``INSERT OR REPLACE`` gives the row a new ``rowid``;
PostgreSQL's upsert takes ``nextval``), named here by :attr:`LedgerSql._PUT_SEQ`, and how
events are appended (PostgreSQL fences them by lease).

Rules of bindings are those of :class:`~nexo_trio.store.base.Binding`: a goal's current
binding is its latest row (latest ``updated_at``, ties to the later put), if valid; the
filtering and ordering of lists is the memory store's Python (shared helpers), so the three
stores agree exactly.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any

import attrs

from nexo_trio.store.base import Binding, GoalSummary, LedgerEntry
from nexo_trio.store.batched import StoreError, _Request, pending_entries
from nexo_trio.store.memory import (
    GOAL_COMPLETED,
    GOAL_STARTED,
    fresh_in_order,
    is_fresh,
    rebind,
)
from nexo_trio.wire.ledger_rows import decode_data, outcome_kind

BINDING_COLUMNS = (
    "goal_id, session_id, model, workspace, created_at, updated_at, last_active_at, invalid"
)


def binding_row(row: Sequence[Any]) -> Binding:
    """A :class:`Binding` from the :data:`BINDING_COLUMNS` of a row."""
    return Binding(
        goal_id=row[0],
        session_id=row[1],
        model=row[2],
        workspace=row[3],
        created_at=row[4],
        updated_at=row[5],
        last_active_at=row[6],
        invalid=bool(row[7]),
    )


def _qualified(alias: str) -> str:
    return ", ".join(f"{alias}.{column.strip()}" for column in BINDING_COLUMNS.split(","))


_GOALS = """
    SELECT g.goal_id, g.first_at, g.last_at, g.n, last.kind,
        (SELECT c.data FROM ledger AS c
         WHERE c.goal_id = g.goal_id AND c.kind = :completed
           AND c.seq > COALESCE(
               (SELECT MAX(s.seq) FROM ledger AS s
                WHERE s.goal_id = g.goal_id AND s.kind = :started), 0)
         ORDER BY c.seq DESC LIMIT 1)
    FROM (SELECT goal_id, MIN(at) AS first_at, MAX(at) AS last_at,
                 COUNT(*) AS n, MAX(seq) AS last_seq
          FROM ledger GROUP BY goal_id) AS g
    JOIN ledger AS last ON last.seq = g.last_seq
    ORDER BY g.last_at DESC, g.last_seq DESC
"""
"""Every goal's summary in one statement (one consistent snapshot). The outcome is the data
of the latest goal_completed after the latest goal_started (if any)."""


class SqlHooks(abc.ABC):
    """What the shared SQL of :class:`LedgerSql` and :class:`~nexo_trio.store.shared.
    SharedSql` needs of the :class:`~nexo_trio.store.batched.BatchedStore` it is mixed into
    (after it, so the store's own methods are the ones that run)."""

    _clock: Any
    _kept: list[_Request[Any]]

    @abc.abstractmethod
    def _sql(self, conn: Any, sql: str, params: dict[str, Any]) -> Any:
        """Run ``sql`` (``:name`` parameters) on ``conn``; its cursor."""

    @abc.abstractmethod
    async def _write(self, op: Any) -> Any: ...

    @abc.abstractmethod
    async def _write_kept(self, request: _Request[Any]) -> bool: ...

    @abc.abstractmethod
    async def _read(self, fn: Any, then: Any = None) -> Any: ...

    @abc.abstractmethod
    def _is_operational(self, exc: BaseException) -> bool: ...


class LedgerSql(SqlHooks):
    """The bindings and ledger operations of a
    :class:`~nexo_trio.store.batched.BatchedStore` subclass (mixed in after it)."""

    _PUT_SEQ = "rowid"
    """The column whose order is the order of the puts (ties of ``updated_at``)."""
    _UPSERT_BINDING = (
        f"INSERT OR REPLACE INTO bindings ({BINDING_COLUMNS}) VALUES (:goal_id, :session_id, "
        ":model, :workspace, :created_at, :updated_at, :last_active_at, :invalid)"
    )
    """The put of a binding row, which gives it a new put sequence. SQLite: ``REPLACE``
    deletes the old row and inserts a new one, with a rowid above every other row's."""
    _LOCK_ROW = ""
    """What locks the row a put reads (SQLite: its write transaction locks the file)."""

    def _latest(self, select: str) -> str:
        return (
            f"SELECT {select} FROM bindings WHERE goal_id = :goal_id "
            f"ORDER BY updated_at DESC, {self._PUT_SEQ} DESC LIMIT 1"
        )

    def _session_row(self, conn: Any, goal_id: str, session_id: str) -> Binding | None:
        """The ``(goal_id, session_id)`` row (blocking: in the store's thread)."""
        row = self._sql(
            conn,
            f"SELECT {BINDING_COLUMNS} FROM bindings "
            "WHERE goal_id = :goal_id AND session_id = :session_id",
            {"goal_id": goal_id, "session_id": session_id},
        ).fetchone()
        return None if row is None else binding_row(row)

    async def _stored_binding(self, goal_id: str, session_id: str) -> Binding | None:
        """The ``(goal_id, session_id)`` row as stored, ``None`` if none or unreadable."""
        try:
            found: Binding | None = await self._read(
                lambda conn: self._session_row(conn, goal_id, session_id)
            )
        except Exception as exc:
            if isinstance(exc, StoreError) or self._is_operational(exc):
                return None
            raise
        return found

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
        now = self._clock()

        def op(conn: Any) -> Binding:
            row = self._sql(
                conn,
                f"SELECT {BINDING_COLUMNS} FROM bindings "
                f"WHERE goal_id = :goal_id AND session_id = :session_id{self._LOCK_ROW}",
                {"goal_id": goal_id, "session_id": session_id},
            ).fetchone()
            binding = rebind(
                None if row is None else binding_row(row),
                goal_id,
                session_id,
                model=model,
                workspace=workspace,
                now=now,
            )
            self._sql(conn, self._UPSERT_BINDING, attrs.asdict(binding))
            return binding

        request = _Request(
            op, resilient=True, what=f"binding of goal {goal_id} to session {session_id}"
        )
        if await self._write_kept(request):
            assert request.result is not None
            stored: Binding = request.result
            return stored
        # Kept (or still queued): the row it will be, as far as the database tells now.
        known = await self._stored_binding(goal_id, session_id)
        return rebind(known, goal_id, session_id, model=model, workspace=workspace, now=now)

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

        def read(conn: Any) -> Binding | None:
            sql = self._latest(BINDING_COLUMNS)
            row = self._sql(conn, sql, {"goal_id": goal_id}).fetchone()
            return None if row is None else binding_row(row)

        binding: Binding | None = await self._read(read)
        if binding is None or binding.invalid:
            return None
        if not is_fresh(binding, now=self._clock(), idle_ttl_s=idle_ttl_s, max_age_s=max_age_s):
            return None
        return binding

    async def mark_invalid(self, goal_id: str, session_id: str) -> None:
        """Flag the goal's ``session_id`` row invalid, keeping it (and its times); a no-op
        if there is no such row."""

        def op(conn: Any) -> None:
            self._sql(
                conn,
                "UPDATE bindings SET invalid = TRUE "
                "WHERE goal_id = :goal_id AND session_id = :session_id",
                {"goal_id": goal_id, "session_id": session_id},
            )

        what = f"invalid mark of goal {goal_id}'s session {session_id}"
        await self._write_kept(_Request(op, resilient=True, what=what))

    async def touch(self, goal_id: str) -> None:
        """Set the current binding's ``last_active_at`` to now; a no-op without one."""
        now = self._clock()

        def op(conn: Any) -> None:
            self._sql(
                conn,
                "UPDATE bindings SET last_active_at = :now WHERE (goal_id, session_id) = "
                f"({self._latest('goal_id, session_id')}) AND NOT invalid",
                {"now": now, "goal_id": goal_id},
            )

        await self._write_kept(_Request(op, resilient=True, what=f"touch of goal {goal_id}"))

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
        seq = self._PUT_SEQ

        def read(conn: Any) -> list[tuple[int, Binding]]:
            if include_invalid:
                sql = f"SELECT {seq}, {BINDING_COLUMNS} FROM bindings"
            else:
                # The latest row of each goal, if valid: no row of the goal comes after it.
                sql = f"""
                    SELECT b.{seq}, {_qualified("b")} FROM bindings AS b
                    WHERE NOT b.invalid AND NOT EXISTS (
                        SELECT 1 FROM bindings AS n
                        WHERE n.goal_id = b.goal_id
                          AND (n.updated_at > b.updated_at
                               OR (n.updated_at = b.updated_at AND n.{seq} > b.{seq})))
                """
            rows = self._sql(conn, sql, {}).fetchall()
            return [(row[0], binding_row(row[1:])) for row in rows]

        rows: list[tuple[int, Binding]] = await self._read(read)
        now = self._clock()
        return fresh_in_order(rows, now=now, idle_ttl_s=idle_ttl_s, max_age_s=max_age_s)

    async def purge_older_than(self, age_s: float) -> int:
        """Delete every row (of any goal, valid or not) not active for more than ``age_s``
        seconds; return how many."""
        cutoff = self._clock() - age_s

        def op(conn: Any) -> int:
            sql = "DELETE FROM bindings WHERE last_active_at < :cutoff"
            return int(self._sql(conn, sql, {"cutoff": cutoff}).rowcount)

        purged: int = await self._write(op)
        return purged

    async def events(self, goal_id: str, *, after_seq: int = 0) -> list[LedgerEntry]:
        """The goal's events with ``seq > after_seq``, in order; events kept in memory (not
        written yet) come last, ``pending``, with ``seq`` 0."""

        def read(conn: Any) -> list[LedgerEntry]:
            rows = self._sql(
                conn,
                "SELECT seq, at, kind, data FROM ledger WHERE goal_id = :goal_id "
                "AND seq > :after ORDER BY seq",
                {"goal_id": goal_id, "after": after_seq},
            ).fetchall()
            return [
                LedgerEntry(seq=seq, goal_id=goal_id, at=at, kind=kind, data=decode_data(data))
                for seq, at, kind, data in rows
            ]

        def with_kept(entries: list[LedgerEntry]) -> list[LedgerEntry]:
            # While a read holds a connection no kept write is being written: each kept
            # event is in what was just read or still kept, never both, never neither.
            kept = [
                request
                for request in self._kept
                if request.rows[:1] and request.rows[0][0] == goal_id
            ]
            return entries + pending_entries(kept)

        found: list[LedgerEntry] = await self._read(read, with_kept)
        return found

    async def goals(self) -> list[GoalSummary]:
        """Every goal in the ledger, most recently active first."""

        def read(conn: Any) -> list[GoalSummary]:
            params = {"completed": GOAL_COMPLETED, "started": GOAL_STARTED}
            return [
                GoalSummary(
                    goal_id=goal_id,
                    first_at=first_at,
                    last_at=last_at,
                    events=n,
                    last_kind=last_kind,
                    outcome=None if completed is None else outcome_kind(decode_data(completed)),
                )
                for goal_id, first_at, last_at, n, last_kind, completed in self._sql(
                    conn, _GOALS, params
                ).fetchall()
            ]

        found: list[GoalSummary] = await self._read(read)
        return found


__all__ = ["BINDING_COLUMNS", "LedgerSql", "SqlHooks", "binding_row"]
