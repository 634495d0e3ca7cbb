"""What the orchestrator needs from persistence: session bindings and the goal ledger.

Two implementations: :class:`~nexo_trio.store.sqlite.SQLiteStore` (a file, survives the
process) and :class:`~nexo_trio.store.memory.MemoryStore` (tests and embedding). Times are
seconds since the epoch from the store's clock.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, cast

import attrs


@attrs.frozen
class Binding:
    """That a goal used (or uses) a Claude Code session: one row per ``(goal_id, session_id)``.

    A goal keeps a row for every session it was ever bound to. Its *current* binding is its
    latest row: the one with the latest ``updated_at`` (ties go to the later put), provided
    that row is valid. When the latest row is invalid the goal has no current binding; an
    older valid row never takes over (it is an older conversation, not a spare one).

    An invalid binding (the CLI said the session is unknown) is kept for forensics but never
    returned by lookups; superseded rows (a later session was bound) are kept too.

    ``created_at`` is when the session was first bound, ``updated_at`` when it was last put
    (marking it invalid or touching it does not change that), ``last_active_at`` when it
    was last put or touched.
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
    """One recorded goal event.

    ``pending``: appended but not written yet (the store could not write, and keeps it in
    memory, in order, until it can); its ``seq`` is 0 until then.
    """

    seq: int
    goal_id: str
    at: float
    kind: str
    data: dict[str, Any]
    pending: bool = False


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
    """Session bindings and the goal ledger.

    Writes the goals depend on (``append_events``, ``put_binding``, ``mark_invalid``,
    ``touch``) do not fail for the store's own trouble (a lock held by another process, a
    full disk): they are kept in memory, in order, and written once the store can again;
    :attr:`write_problem` and :attr:`unwritable` tell. Bugs (data that is not JSON, a
    closed store) raise.
    """

    @property
    def write_problem(self) -> str | None:
        """Why the latest write failed while writes are kept or failing; ``None`` when
        the store writes fine."""
        ...

    @property
    def unwritable(self) -> str | None:
        """Set (to why, and how much is not written) once kept writes could not be written
        for longer than the store's bound, or the store closed with writes not written;
        ``None`` otherwise (again ``None`` if it recovers before closing)."""
        ...

    def unwritten(self) -> list[LedgerEntry]:
        """The events appended but not written (yet), in order (``pending`` entries)."""
        ...

    async def wait_flushed(self, timeout_s: float) -> bool:
        """Wait (at most ``timeout_s``) until every write so far is written; whether it is."""
        ...

    async def get_binding(
        self,
        goal_id: str,
        *,
        idle_ttl_s: float | None = None,
        max_age_s: float | None = None,
    ) -> Binding | None:
        """The goal's current binding (see :class:`Binding`), or ``None`` if it has none or
        it is idle longer than ``idle_ttl_s`` (since ``last_active_at``) or older than
        ``max_age_s`` (since ``created_at``); exactly at a limit still counts."""
        ...

    async def put_binding(
        self,
        goal_id: str,
        session_id: str,
        *,
        model: str | None = None,
        workspace: str | None = None,
    ) -> Binding:
        """Bind the goal to ``session_id``, which becomes its current binding; other rows
        of the goal are kept as they are.

        An existing ``(goal_id, session_id)`` row gets ``updated_at`` and
        ``last_active_at`` set to now, ``model`` / ``workspace`` when given (``None`` keeps
        the stored value), and ``invalid`` cleared; ``created_at`` stays. Otherwise a new
        row is inserted with ``created_at``, ``updated_at`` and ``last_active_at`` now and
        the given ``model`` / ``workspace`` (nothing is inherited from other sessions).
        Returns the stored row."""
        ...

    async def mark_invalid(self, goal_id: str, session_id: str) -> None:
        """Flag the goal's ``session_id`` row invalid, keeping it (and its times); a no-op
        if there is no such row. If it was the current binding, the goal has none until
        the next :meth:`put_binding`."""
        ...

    async def touch(self, goal_id: str) -> None:
        """Set the current binding's ``last_active_at`` to now; a no-op without one."""
        ...

    async def list_bindings(
        self,
        *,
        include_invalid: bool = False,
        idle_ttl_s: float | None = None,
        max_age_s: float | None = None,
    ) -> list[Binding]:
        """The current binding of each goal that has one; with ``include_invalid``, every
        row instead (invalid and superseded ones too). Most recently active first (ties by
        goal id, then the later put first), filtered like :meth:`get_binding`."""
        ...

    async def purge_older_than(self, age_s: float) -> int:
        """Delete every row (of any goal, valid or not) not active for more than ``age_s``
        seconds; return how many."""
        ...

    async def append_events(
        self, goal_id: str, events: Sequence[tuple[str, dict[str, Any]]]
    ) -> None:
        """Append ``(kind, data)`` events of a goal to the ledger, in order, atomically.

        Returns once they are written, or kept in memory to be written before any later
        event (see the class docstring)."""
        ...

    async def events(self, goal_id: str, *, after_seq: int = 0) -> list[LedgerEntry]:
        """The goal's events with ``seq > after_seq``, in order; events not written yet
        come last, ``pending``."""
        ...

    async def goals(self) -> list[GoalSummary]:
        """Every goal in the ledger, most recently active first."""
        ...


@attrs.frozen
class Lease:
    """That ``owner`` (one orchestrator: a worker, or a ``nexo-trio run``) runs the goal until
    ``until`` (seconds since the epoch, the store's clock) unless it renews the lease first.
    Past ``until`` the lease is expired: anyone may take the goal over."""

    goal_id: str
    owner: str
    until: float


EVENTS = "events"
"""What :meth:`SharedStore.wait_changed` waits for: a goal's events appended..."""
QUEUE = "queue"
"""...a goal submitted, finished or handed back..."""
CONTROLS = "controls"
"""...a control request posted or answered."""
CHANGES = (EVENTS, QUEUE, CONTROLS)

QUEUED = "queued"
"""A submitted goal waiting for a worker (a worker gave it back, or none took it yet)."""
RUNNING = "running"
"""A submitted goal a worker claimed (its lease: :attr:`QueuedGoal.owner`; once the lease
runs out, another worker may claim it)."""
FINISHED = "finished"
"""A submitted goal whose run ended (its ``goal_completed`` is in the ledger)."""


@attrs.frozen
class QueuedGoal:
    """A goal submitted to the store's queue.

    ``spec`` is the goal as submitted (its JSON form, :mod:`nexo_trio.wire.goal_spec`);
    ``owner`` and ``lease_until`` are those of its live lease (``None`` when no one holds
    one); ``claims`` counts the times a worker took it from the queue (more than one: a
    worker died or handed it back, and another went on from the ledger)."""

    goal_id: str
    spec: dict[str, Any]
    submitted_at: float
    state: str
    owner: str | None = None
    lease_until: float | None = None
    claims: int = 0
    finished_at: float | None = None
    outcome: str | None = None


@attrs.frozen
class ControlMessage:
    """A control request for a goal, left in the store for whichever process runs it
    (``request``: the control socket's request, as JSON); ``reply`` once answered."""

    id: int
    goal_id: str
    request: dict[str, Any]
    at: float
    reply: dict[str, Any] | None = None


class SharedStore(Store, Protocol):
    """A store that orchestrators on many hosts share: leases, a goal queue, control
    requests, and wake-ups (:meth:`wait_changed`).

    Lease, queue and control operations are answers, not records: when the store cannot
    write they fail (:class:`~nexo_trio.store.batched.StoreError`), they are never kept."""

    async def take_lease(self, goal_id: str, owner: str, lease_s: float) -> Lease:
        """Lease the goal to ``owner`` for ``lease_s`` seconds, unless another owner holds a
        live lease on it; the lease that now holds (``owner`` is someone else's: refused).
        Taking one's own lease again renews it."""
        ...

    async def renew_leases(self, owner: str, goal_ids: Sequence[str], lease_s: float) -> set[str]:
        """Extend ``owner``'s leases of ``goal_ids`` by ``lease_s`` from now, in one write;
        the goals still leased to ``owner`` (a lease lost meanwhile is not among them)."""
        ...

    async def release_lease(self, goal_id: str, owner: str) -> None:
        """Give up ``owner``'s lease of the goal (a no-op if it is not ``owner``'s)."""
        ...

    async def lease_of(self, goal_id: str) -> Lease | None:
        """The goal's live lease, ``None`` if no one holds one."""
        ...

    async def submit(self, goal_id: str, spec: dict[str, Any]) -> bool:
        """Queue the goal; ``False`` (nothing changed) if it is queued already. A finished
        goal is queued again (its next run goes on from its ledger)."""
        ...

    async def claim(self, owner: str, lease_s: float, limit: int = 1) -> list[QueuedGoal]:
        """Take up to ``limit`` queued goals that no one holds a live lease on, oldest
        first, leasing each to ``owner``; concurrent claimers never get the same goal."""
        ...

    async def finish(self, goal_id: str, owner: str, outcome: str) -> bool:
        """Mark a queued goal finished with ``outcome`` and release ``owner``'s lease of it;
        ``False`` (nothing changed) if ``owner`` does not hold it."""
        ...

    async def queue(self) -> list[QueuedGoal]:
        """Every submitted goal, oldest first."""
        ...

    async def unfinished(self) -> int:
        """How many submitted goals are not finished (waiting or running)."""
        ...

    async def post_control(self, goal_id: str, request: dict[str, Any], *, ttl_s: float) -> int:
        """Leave a control request for whichever process runs the goal, for ``ttl_s``
        seconds (unanswered by then, it is never applied); its id."""
        ...

    async def pending_controls(self, goal_ids: Sequence[str]) -> list[ControlMessage]:
        """The unanswered, unexpired control requests for ``goal_ids``, oldest first."""
        ...

    async def answer_control(self, control_id: int, reply: dict[str, Any]) -> None:
        """Record the reply to a control request."""
        ...

    async def control(self, control_id: int) -> ControlMessage | None:
        """A control request and its reply so far."""
        ...

    async def put_transcript(self, goal_id: str, session_id: str, data: bytes) -> None:
        """Keep (replace) a session's transcript file (gzip-compressed bytes)."""
        ...

    async def append_transcript(
        self, goal_id: str, session_id: str, data: bytes, *, after: bytes, size: int
    ) -> bool:
        """Add ``data`` (a gzip member: the file's new end) to a session's kept transcript,
        when it is still the one this host kept: ``size`` bytes long, ending with ``after``
        (the last member's gzip trailer). ``False``, nothing changed, otherwise."""
        ...

    async def get_transcript(self, goal_id: str, session_id: str) -> bytes | None:
        """A session's kept transcript file (gzip-compressed), ``None`` if none is kept."""
        ...

    def changes_seen(self) -> dict[str, int]:
        """A mark of the changes heard so far: taken before looking (a claim, a read), it
        makes :meth:`wait_changed` return at once for a change that came meanwhile."""
        ...

    async def wait_changed(
        self,
        timeout_s: float,
        what: Sequence[str] = CHANGES,
        *,
        since: Mapping[str, int] | None = None,
    ) -> None:
        """Return once something of ``what`` (:data:`CHANGES`) may have changed, by any
        process, since the mark ``since`` (default: now), or after ``timeout_s``; a
        waiter looks again either way."""
        ...


def shared_store(store: Store) -> SharedStore | None:
    """``store`` if orchestrators on many hosts share it (PostgreSQL: its leases, control
    requests and transcripts then matter), else ``None``."""
    return cast("SharedStore", store) if getattr(store, "shared_by_hosts", False) else None
