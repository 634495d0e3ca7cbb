"""Leases, the goal queue and control requests: the SQL that SQLite and PostgreSQL share.

A store that many orchestrators use at once (:class:`~nexo_trio.store.base.SharedStore`)
coordinates through three tables (created by each store's migrations)::

    leases    (goal_id PK, owner, until)         who runs a goal, until when unless renewed
    goal_queue(goal_id PK, spec, state, ...)     goals submitted for workers
    controls  (id, goal_id, request, reply, ...) control requests for whoever runs a goal
    transcripts (goal_id, session_id PK, data)   the CLI's session files (gzip), per session

Rules, in one place:

- A lease is live while ``until >= now``. Taking a goal's lease succeeds when there is no
  live lease of another owner: an upsert whose ``WHERE`` is that rule, so two takers can
  never both win (the row is the arbiter, in either database).
- A goal's queue row is ``queued`` (waiting), ``running`` (claimed by a worker) or
  ``finished``. Claiming takes the oldest waiting goals without a live lease, then running
  ones whose lease ran out (their worker died); a lease given back (a worker stopping)
  puts a running goal back to waiting.
- Claiming takes the oldest queued goals without a live lease. On PostgreSQL the candidate
  rows are locked ``FOR UPDATE SKIP LOCKED``, so concurrent claimers pass each other
  instead of queueing on the same row; SQLite serializes write transactions anyway.
- Locks are taken queue row first, lease row second, by claims and finishes alike, so the
  two never deadlock. (Renewals lock only their owner's lease rows; a claim takes over only
  expired leases: a deadlock between them needs a live owner with expired leases, and
  PostgreSQL then fails one of the two, which is retried at its next round.)
- ``now`` is the store's clock (:attr:`SharedSql._lease_now`): PostgreSQL's own clock by
  default, so that hosts whose clocks differ still agree on when a lease expired.

Operations are written once with ``:name`` parameters; :meth:`SharedSql._sql` runs them in
the store's dialect.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any

from nexo_trio.store.base import (
    CONTROLS,
    FINISHED,
    QUEUE,
    QUEUED,
    RUNNING,
    ControlMessage,
    Lease,
    QueuedGoal,
)
from nexo_trio.store.ledger_sql import SqlHooks
from nexo_trio.wire.ledger_rows import decode_data, encode_data

_QUEUE_COLUMNS = (
    "q.goal_id, q.spec, q.submitted_at, q.state, l.owner, l.until, q.claims, q.finished_at, "
    "q.outcome"
)


def _queued(row: Sequence[Any], now: float) -> QueuedGoal:
    goal_id, spec, submitted_at, state, owner, until, claims, finished_at, outcome = row
    live = until is not None and until >= now
    return QueuedGoal(
        goal_id=goal_id,
        spec=decode_data(spec),
        submitted_at=submitted_at,
        state=state,
        owner=owner if live else None,
        lease_until=until if live else None,
        claims=claims,
        finished_at=finished_at,
        outcome=outcome,
    )


def _control(row: Sequence[Any]) -> ControlMessage:
    control_id, goal_id, request, at, reply = row
    return ControlMessage(
        id=control_id,
        goal_id=goal_id,
        request=decode_data(request),
        at=at,
        reply=None if reply is None else decode_data(reply),
    )


class SharedSql(SqlHooks):
    """The :class:`~nexo_trio.store.base.SharedStore` operations, on a batched store.

    Mixed into a :class:`~nexo_trio.store.batched.BatchedStore` subclass, which gives the
    hooks below; each write is one request of the store's writer (batched with others, in
    its own savepoint), each read one read of its pool."""

    _SKIP_LOCKED = ""
    """What locks claim candidates so that concurrent claimers skip each other."""

    # -- hooks (the store's, besides SqlHooks') ----------------------------------------

    @abc.abstractmethod
    def _lease_now(self, conn: Any) -> float:
        """Now, by the clock leases are kept on (blocking: in the store's thread)."""

    @abc.abstractmethod
    def _notify(self, conn: Any, what: str) -> None:
        """Tell listeners of ``what`` (:data:`~nexo_trio.store.base.CHANGES`), once this
        transaction commits, that it changed."""

    # -- leases ----------------------------------------------------------------------------

    def _take(self, conn: Any, goal_id: str, owner: str, lease_s: float) -> Lease:
        now = self._lease_now(conn)
        params = {"goal_id": goal_id, "owner": owner, "until": now + lease_s, "now": now}
        self._sql(
            conn,
            "INSERT INTO leases (goal_id, owner, until) VALUES (:goal_id, :owner, :until) "
            "ON CONFLICT (goal_id) DO UPDATE SET owner = excluded.owner, until = excluded.until "
            "WHERE leases.owner = excluded.owner OR leases.until < :now",
            params,
        )
        row = self._sql(
            conn, "SELECT owner, until FROM leases WHERE goal_id = :goal_id", params
        ).fetchone()
        return Lease(goal_id=goal_id, owner=row[0], until=row[1])

    async def take_lease(self, goal_id: str, owner: str, lease_s: float) -> Lease:
        """Lease the goal to ``owner`` for ``lease_s`` seconds unless another owner holds a
        live lease; the lease that now holds (someone else's: refused)."""
        lease: Lease = await self._write(lambda conn: self._take(conn, goal_id, owner, lease_s))
        return lease

    async def renew_leases(self, owner: str, goal_ids: Sequence[str], lease_s: float) -> set[str]:
        """Extend ``owner``'s leases of ``goal_ids`` by ``lease_s`` from now, in one write;
        the goals still leased to ``owner`` (an expired lease that no one took is renewed:
        the goal was never run by anyone else meanwhile)."""
        wanted = list(dict.fromkeys(goal_ids))
        if not wanted:
            return set()

        def op(conn: Any) -> set[str]:
            names = {f"g{index}": goal_id for index, goal_id in enumerate(wanted)}
            listed = ", ".join(f":{name}" for name in names)
            rows = self._sql(
                conn,
                "UPDATE leases SET until = :until "
                f"WHERE owner = :owner AND goal_id IN ({listed}) RETURNING goal_id",
                {"until": self._lease_now(conn) + lease_s, "owner": owner, **names},
            ).fetchall()
            return {goal_id for (goal_id,) in rows}

        renewed: set[str] = await self._write(op)
        return renewed

    async def release_lease(self, goal_id: str, owner: str) -> None:
        """Give up ``owner``'s lease of the goal (a no-op if it is not ``owner``'s)."""

        def op(conn: Any) -> None:
            params = {"goal_id": goal_id, "owner": owner, "queued": QUEUED, "running": RUNNING}
            # The queue row first, then the lease (the order claims lock them in): a
            # running goal given back waits in the queue again.
            self._sql(
                conn,
                "UPDATE goal_queue SET state = :queued WHERE goal_id = :goal_id "
                "AND state = :running AND EXISTS (SELECT 1 FROM leases "
                "WHERE goal_id = :goal_id AND owner = :owner)",
                params,
            )
            self._sql(
                conn, "DELETE FROM leases WHERE goal_id = :goal_id AND owner = :owner", params
            )
            self._notify(conn, QUEUE)

        await self._write(op)

    def _live_lease(self, conn: Any, goal_id: str, now: float) -> Lease | None:
        row = self._sql(
            conn,
            "SELECT owner, until FROM leases WHERE goal_id = :goal_id AND until >= :now",
            {"goal_id": goal_id, "now": now},
        ).fetchone()
        return None if row is None else Lease(goal_id=goal_id, owner=row[0], until=row[1])

    async def lease_of(self, goal_id: str) -> Lease | None:
        """The goal's live lease, ``None`` if no one holds one."""
        lease: Lease | None = await self._read(
            lambda conn: self._live_lease(conn, goal_id, self._lease_now(conn))
        )
        return lease

    # -- the queue -------------------------------------------------------------------------

    async def submit(self, goal_id: str, spec: dict[str, Any]) -> bool:
        """Queue the goal; ``False`` (nothing changed) if it is queued already. A finished
        goal is queued again, with the spec given."""
        data = encode_data(spec).decode()

        def op(conn: Any) -> bool:
            now = self._lease_now(conn)
            cursor = self._sql(
                conn,
                "INSERT INTO goal_queue (goal_id, spec, state, submitted_at, claims) "
                "VALUES (:goal_id, :spec, :queued, :now, 0) "
                "ON CONFLICT (goal_id) DO UPDATE SET spec = excluded.spec, state = :queued, "
                "submitted_at = excluded.submitted_at, finished_at = NULL, outcome = NULL "
                "WHERE goal_queue.state = :finished",
                {
                    "goal_id": goal_id,
                    "spec": data,
                    "queued": QUEUED,
                    "finished": FINISHED,
                    "now": now,
                },
            )
            if cursor.rowcount:
                self._notify(conn, QUEUE)
            return bool(cursor.rowcount)

        queued: bool = await self._write(op)
        return queued

    async def claim(self, owner: str, lease_s: float, limit: int = 1) -> list[QueuedGoal]:
        """Take up to ``limit`` queued goals that no one holds a live lease on, oldest
        first, leasing each to ``owner``; concurrent claimers never get the same goal."""

        def op(conn: Any) -> list[QueuedGoal]:
            now = self._lease_now(conn)
            # Waiting goals first (the partial index on queued rows: running goals are
            # not walked past), then running ones whose worker's lease ran out. Never a
            # goal anyone holds a live lease on, the claimer included: a goal it runs
            # already is not claimed again.
            candidates: list[tuple[str]] = []
            for state in (QUEUED, RUNNING):
                wanted = limit - len(candidates)
                if wanted <= 0:
                    break
                candidates += self._sql(
                    conn,
                    "SELECT q.goal_id FROM goal_queue AS q "
                    "WHERE q.state = :state AND NOT EXISTS (SELECT 1 FROM leases AS l "
                    "WHERE l.goal_id = q.goal_id AND l.until >= :now) "
                    f"ORDER BY q.submitted_at, q.goal_id LIMIT :limit {self._SKIP_LOCKED}",
                    {"state": state, "now": now, "limit": wanted},
                ).fetchall()
            claimed = []
            for (goal_id,) in candidates:
                # Looked at again, by a statement of its own: on PostgreSQL a candidate
                # row locked just after another claimer committed its lease passes the
                # first check (its subquery saw the older snapshot). Taking that lease
                # would wait for its holder, who may wait for our row lock: a deadlock.
                if self._live_lease(conn, goal_id, now) is not None:
                    continue
                lease = self._take(conn, goal_id, owner, lease_s)
                if lease.owner != owner:  # taken by a `run` between the two statements
                    continue
                self._sql(
                    conn,
                    "UPDATE goal_queue SET claims = claims + 1, state = :running "
                    "WHERE goal_id = :goal_id",
                    {"goal_id": goal_id, "running": RUNNING},
                )
                row = self._sql(
                    conn,
                    f"SELECT {_QUEUE_COLUMNS} FROM goal_queue AS q "
                    "LEFT JOIN leases AS l ON l.goal_id = q.goal_id WHERE q.goal_id = :goal_id",
                    {"goal_id": goal_id},
                ).fetchone()
                claimed.append(_queued(row, now))
            return claimed

        goals: list[QueuedGoal] = await self._write(op)
        return goals

    async def finish(self, goal_id: str, owner: str, outcome: str) -> bool:
        """Mark a queued goal finished with ``outcome`` and release ``owner``'s lease of
        it; ``False`` (nothing changed) if ``owner`` does not hold it."""

        def op(conn: Any) -> bool:
            now = self._lease_now(conn)
            params = {
                "goal_id": goal_id,
                "owner": owner,
                "outcome": outcome,
                "now": now,
                "finished": FINISHED,
            }
            # The queue row first, then the lease: the order claims lock them in.
            held = self._sql(
                conn,
                "UPDATE goal_queue SET state = :finished, finished_at = :now, "
                "outcome = :outcome WHERE goal_id = :goal_id AND EXISTS ("
                "SELECT 1 FROM leases WHERE goal_id = :goal_id AND owner = :owner)",
                params,
            ).rowcount
            if not held:
                return False
            self._sql(
                conn,
                "DELETE FROM leases WHERE goal_id = :goal_id AND owner = :owner",
                params,
            )
            self._notify(conn, QUEUE)
            return True

        done: bool = await self._write(op)
        return done

    async def unfinished(self) -> int:
        """How many submitted goals are not finished (waiting or running): a count, not
        the rows (their specs)."""

        def read(conn: Any) -> int:
            row = self._sql(
                conn,
                "SELECT count(*) FROM goal_queue WHERE state <> :finished",
                {"finished": FINISHED},
            ).fetchone()
            return int(row[0])

        count: int = await self._read(read)
        return count

    async def queue(self) -> list[QueuedGoal]:
        """Every submitted goal, oldest first."""

        def read(conn: Any) -> list[QueuedGoal]:
            now = self._lease_now(conn)
            rows = self._sql(
                conn,
                f"SELECT {_QUEUE_COLUMNS} FROM goal_queue AS q "
                "LEFT JOIN leases AS l ON l.goal_id = q.goal_id "
                "ORDER BY q.submitted_at, q.goal_id",
                {},
            ).fetchall()
            return [_queued(row, now) for row in rows]

        goals: list[QueuedGoal] = await self._read(read)
        return goals

    # -- control requests ------------------------------------------------------------------

    async def post_control(self, goal_id: str, request: dict[str, Any], *, ttl_s: float) -> int:
        """Leave a control request for whichever process runs the goal, for ``ttl_s``
        seconds (unanswered by then, it is never applied); its id."""
        data = encode_data(request).decode()

        def op(conn: Any) -> int:
            now = self._lease_now(conn)
            row = self._sql(
                conn,
                "INSERT INTO controls (goal_id, request, at, expires_at) "
                "VALUES (:goal_id, :request, :now, :expires) RETURNING id",
                {"goal_id": goal_id, "request": data, "now": now, "expires": now + ttl_s},
            ).fetchone()
            self._notify(conn, CONTROLS)
            return int(row[0])

        control_id: int = await self._write(op)
        return control_id

    async def pending_controls(self, goal_ids: Sequence[str]) -> list[ControlMessage]:
        """The unanswered, unexpired control requests for ``goal_ids``, oldest first."""
        wanted = set(goal_ids)
        if not wanted:
            return []

        def read(conn: Any) -> list[ControlMessage]:
            # Only live requests: an expired one's asker has given up on it (and said so),
            # and a goal run later must not act on it. So few rows, whatever the history.
            rows = self._sql(
                conn,
                "SELECT id, goal_id, request, at, reply FROM controls "
                "WHERE reply IS NULL AND expires_at >= :now ORDER BY id",
                {"now": self._lease_now(conn)},
            ).fetchall()
            return [_control(row) for row in rows if row[1] in wanted]

        found: list[ControlMessage] = await self._read(read)
        return found

    async def answer_control(self, control_id: int, reply: dict[str, Any]) -> None:
        """Record the reply to a control request (the first reply stands)."""
        data = encode_data(reply).decode()

        def op(conn: Any) -> None:
            now = self._lease_now(conn)
            self._sql(
                conn,
                "UPDATE controls SET reply = :reply, answered_at = :now "
                "WHERE id = :id AND reply IS NULL",
                {"reply": data, "now": now, "id": control_id},
            )
            self._notify(conn, CONTROLS)

        await self._write(op)

    async def control(self, control_id: int) -> ControlMessage | None:
        """A control request and its reply so far."""

        def read(conn: Any) -> ControlMessage | None:
            row = self._sql(
                conn,
                "SELECT id, goal_id, request, at, reply FROM controls WHERE id = :id",
                {"id": control_id},
            ).fetchone()
            return None if row is None else _control(row)

        found: ControlMessage | None = await self._read(read)
        return found

    # -- session transcripts ---------------------------------------------------------------

    async def put_transcript(self, goal_id: str, session_id: str, data: bytes) -> None:
        """Keep (replace) a session's transcript file (gzip-compressed bytes)."""

        def op(conn: Any) -> None:
            now = self._lease_now(conn)
            self._sql(
                conn,
                "INSERT INTO transcripts (goal_id, session_id, data, at) "
                "VALUES (:goal_id, :session_id, :data, :now) "
                "ON CONFLICT (goal_id, session_id) DO UPDATE SET data = excluded.data, "
                "at = excluded.at",
                {"goal_id": goal_id, "session_id": session_id, "data": data, "now": now},
            )

        await self._write(op)

    _APPENDED_BLOB = "CAST(data || :data AS BLOB)"
    """The transcript's blob with ``:data`` after it (SQLite's ``||`` makes text)."""

    async def append_transcript(
        self, goal_id: str, session_id: str, data: bytes, *, after: bytes, size: int
    ) -> bool:
        """Add ``data`` to a session's kept transcript if it is ``size`` bytes long and ends
        with ``after`` (the one this host kept, not another's since): one statement."""
        start = size - len(after) + 1

        def op(conn: Any) -> bool:
            now = self._lease_now(conn)
            done = self._sql(
                conn,
                f"UPDATE transcripts SET data = {self._APPENDED_BLOB}, at = :now "
                "WHERE goal_id = :goal_id AND session_id = :session_id "
                "AND length(data) = :size AND substr(data, :start, :tail) = :after",
                {
                    "goal_id": goal_id,
                    "session_id": session_id,
                    "data": data,
                    "now": now,
                    "size": size,
                    "start": start,
                    "tail": len(after),
                    "after": after,
                },
            )
            return bool(done.rowcount == 1)

        appended: bool = await self._write(op)
        return appended

    async def get_transcript(self, goal_id: str, session_id: str) -> bytes | None:
        """A session's kept transcript file (gzip-compressed), ``None`` if none is kept."""

        def read(conn: Any) -> bytes | None:
            row = self._sql(
                conn,
                "SELECT data FROM transcripts WHERE goal_id = :goal_id "
                "AND session_id = :session_id",
                {"goal_id": goal_id, "session_id": session_id},
            ).fetchone()
            return None if row is None else bytes(row[0])

        found: bytes | None = await self._read(read)
        return found


SHARED_TABLES_SQL = (
    """
    CREATE TABLE leases (
        goal_id TEXT PRIMARY KEY NOT NULL,
        owner   TEXT NOT NULL,
        until   DOUBLE PRECISION NOT NULL
    )
    """,
    """
    CREATE TABLE goal_queue (
        goal_id      TEXT PRIMARY KEY NOT NULL,
        spec         TEXT NOT NULL,  -- the goal as submitted, JSON
        state        TEXT NOT NULL,  -- queued | running | finished
        submitted_at DOUBLE PRECISION NOT NULL,
        claims       INTEGER NOT NULL DEFAULT 0,
        finished_at  DOUBLE PRECISION,
        outcome      TEXT
    )
    """,
    "CREATE INDEX goal_queue_waiting ON goal_queue (submitted_at, goal_id) WHERE state = 'queued'",
)
"""The lease and queue tables, the same in both databases (the ``controls`` table's id
column differs: each store adds it)."""

__all__ = ["SHARED_TABLES_SQL", "SharedSql"]
