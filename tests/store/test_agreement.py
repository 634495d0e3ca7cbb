"""The stores agree on bindings, operation after operation (property-based).

The contract tests pin the rules on chosen cases; this runs random sequences of binding
operations on two stores at once, on one fake clock, and compares every lookup after every
step: the SQL of the SQLite and of the PostgreSQL store against the Python of the memory
store.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from nexo_trio.store import MemoryStore, Store, open_sqlite_store
from tests.store.conftest import FakeClock

GOALS = ("a", "b")
SESSIONS = ("s1", "s2", "s3")

Op = tuple[str, ...]

ops = st.one_of(
    st.tuples(
        st.just("put"),
        st.sampled_from(GOALS),
        st.sampled_from(SESSIONS),
        st.sampled_from(("", "opus", "haiku")),  # "" stands for None
    ),
    st.tuples(st.just("invalid"), st.sampled_from(GOALS), st.sampled_from(SESSIONS)),
    st.tuples(st.just("touch"), st.sampled_from(GOALS)),
    # Steps of 0 make ties: same updated_at, same last_active_at.
    st.tuples(st.just("advance"), st.sampled_from(("0", "0.5", "1", "3"))),
    st.tuples(st.just("purge"), st.sampled_from(("0", "1", "4"))),
)

FILTERS: tuple[tuple[float | None, float | None], ...] = (
    (None, None),
    (1.0, None),
    (None, 3.0),
    (2.0, 4.0),
)


async def apply(store: Store, op: Op) -> object:
    """Run one store operation; return what it returned."""
    match op:
        case ("put", goal, session, model):
            return await store.put_binding(goal, session, model=model or None)
        case ("invalid", goal, session):
            await store.mark_invalid(goal, session)
            return None
        case ("touch", goal):
            await store.touch(goal)
            return None
        case ("purge", age):
            return await store.purge_older_than(float(age))
    raise AssertionError(op)  # pragma: no cover


async def observe(store: Store) -> list[object]:
    """Every lookup the Store offers, under every filter."""
    seen: list[object] = []
    for idle_ttl_s, max_age_s in FILTERS:
        for goal in GOALS:
            seen.append(await store.get_binding(goal, idle_ttl_s=idle_ttl_s, max_age_s=max_age_s))
        for include_invalid in (False, True):
            seen.append(
                await store.list_bindings(
                    include_invalid=include_invalid, idle_ttl_s=idle_ttl_s, max_age_s=max_age_s
                )
            )
    return seen


@settings(max_examples=60, deadline=None)
@given(st.lists(ops, max_size=30))
def test_memory_and_sqlite_agree(steps: list[Op]) -> None:
    async def main(path: Path) -> None:
        clock = FakeClock()
        memory = MemoryStore(clock=clock)
        async with open_sqlite_store(path, clock=clock) as sqlite:
            for op in steps:
                if op[0] == "advance":
                    clock.advance(float(op[1]))
                else:
                    assert await apply(memory, op) == await apply(sqlite, op), op
                assert await observe(memory) == await observe(sqlite), op

    with tempfile.TemporaryDirectory() as tmp:
        trio.run(main, Path(tmp) / "agree.db")


def test_memory_and_postgres_agree(pg_url: str) -> None:
    """The same sequences against PostgreSQL (one database, emptied between examples): its
    SQL, written once for both databases, against the memory store's Python."""
    import psycopg

    from nexo_trio.store.postgres import open_postgres_store

    @settings(max_examples=40, deadline=None)
    @given(st.lists(ops, max_size=30))
    def agree(steps: list[Op]) -> None:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute("DROP TABLE IF EXISTS bindings, ledger, nexo_schema CASCADE")
            conn.execute("DROP SEQUENCE IF EXISTS binding_puts")
            for table in ("leases", "goal_queue", "controls", "transcripts"):
                conn.execute(f"DROP TABLE IF EXISTS {table}")

        async def main() -> None:
            clock = FakeClock()
            memory = MemoryStore(clock=clock)
            async with open_postgres_store(pg_url, clock=clock, lease_clock=clock) as pg:
                for op in steps:
                    if op[0] == "advance":
                        clock.advance(float(op[1]))
                    else:
                        assert await apply(memory, op) == await apply(pg, op), op
                    assert await observe(memory) == await observe(pg), op

        trio.run(main)

    agree()
