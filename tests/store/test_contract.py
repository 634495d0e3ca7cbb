"""The Store contract, run against every implementation (memory and SQLite)."""

from __future__ import annotations

import pytest

from nexo_trio.store import Binding, Store
from tests.store.conftest import FakeClock

T0 = 1_000_000.0


# -- bindings ----------------------------------------------------------------------------


async def test_unknown_goal_has_no_binding(store: Store) -> None:
    assert await store.get_binding("nope") is None
    assert await store.list_bindings(include_invalid=True) == []


async def test_put_then_get(store: Store, clock: FakeClock) -> None:
    stored = await store.put_binding("g", "s1", model="opus", workspace="/w")
    expected = Binding(
        goal_id="g",
        session_id="s1",
        model="opus",
        workspace="/w",
        created_at=T0,
        updated_at=T0,
        last_active_at=T0,
        invalid=False,
    )
    assert stored == expected
    assert await store.get_binding("g") == expected


async def test_same_session_keeps_created_at_and_fields(store: Store, clock: FakeClock) -> None:
    await store.put_binding("g", "s1", model="opus", workspace="/w")
    clock.advance(10)
    again = await store.put_binding("g", "s1")
    assert again.created_at == T0
    assert again.updated_at == again.last_active_at == T0 + 10
    # None means "unchanged", not "erase".
    assert (again.model, again.workspace) == ("opus", "/w")
    changed = await store.put_binding("g", "s1", model="haiku")
    assert changed.model == "haiku"
    assert await store.get_binding("g") == changed
    assert await store.list_bindings(include_invalid=True) == [changed]  # still one row


async def test_new_session_is_a_new_row(store: Store, clock: FakeClock) -> None:
    first = await store.put_binding("g", "s1", model="opus", workspace="/w")
    clock.advance(10)
    rebound = await store.put_binding("g", "s2")
    assert rebound.session_id == "s2"
    assert rebound.created_at == rebound.updated_at == rebound.last_active_at == T0 + 10
    # A row of its own: nothing is inherited from the goal's other session.
    assert (rebound.model, rebound.workspace) == (None, None)
    assert await store.get_binding("g") == rebound
    assert await store.list_bindings() == [rebound]
    # The superseded (still valid) row is kept, untouched.
    assert await store.list_bindings(include_invalid=True) == [rebound, first]


async def test_invalid_binding_is_kept_but_hidden(store: Store, clock: FakeClock) -> None:
    await store.put_binding("g", "s1")
    await store.put_binding("other", "s9")
    clock.advance(5)
    await store.mark_invalid("g", "s1")
    assert await store.get_binding("g") is None
    assert [b.goal_id for b in await store.list_bindings()] == ["other"]
    everything = await store.list_bindings(include_invalid=True)
    kept = next(b for b in everything if b.goal_id == "g")
    assert kept.invalid
    assert kept.session_id == "s1"
    # Marking invalid changes nothing else: updated_at is when the row was last put.
    assert kept.created_at == kept.updated_at == kept.last_active_at == T0


async def test_mark_invalid_of_another_session_is_a_noop(store: Store) -> None:
    await store.put_binding("g", "s2")
    await store.mark_invalid("g", "s1")
    await store.mark_invalid("unknown-goal", "s1")
    binding = await store.get_binding("g")
    assert binding is not None
    assert not binding.invalid
    assert await store.list_bindings(include_invalid=True) == [binding]


async def test_rebind_with_new_session_keeps_the_invalid_one(
    store: Store, clock: FakeClock
) -> None:
    await store.put_binding("g", "s1", model="opus")
    await store.mark_invalid("g", "s1")
    clock.advance(1)
    rebound = await store.put_binding("g", "s2")
    assert not rebound.invalid
    assert await store.get_binding("g") == rebound
    assert [b.session_id for b in await store.list_bindings()] == ["s2"]
    everything = await store.list_bindings(include_invalid=True)
    assert [(b.session_id, b.invalid, b.model) for b in everything] == [
        ("s2", False, None),
        ("s1", True, "opus"),
    ]


async def test_rebind_with_same_session_clears_invalid(store: Store, clock: FakeClock) -> None:
    await store.put_binding("g", "s1", model="opus")
    await store.mark_invalid("g", "s1")
    clock.advance(3)
    again = await store.put_binding("g", "s1")
    assert not again.invalid
    assert (again.created_at, again.updated_at, again.model) == (T0, T0 + 3, "opus")
    assert await store.get_binding("g") == again
    assert await store.list_bindings(include_invalid=True) == [again]


async def test_get_binding_is_the_latest_put(store: Store, clock: FakeClock) -> None:
    for session in ("s1", "s2", "s3"):
        await store.put_binding("g", session, model=f"m-{session}")
        clock.advance(1)
    current = await store.get_binding("g")
    assert current is not None
    assert current.session_id == "s3"
    # Putting an older session again makes it current; it keeps its birth and fields.
    again = await store.put_binding("g", "s1")
    assert (again.session_id, again.created_at, again.model) == ("s1", T0, "m-s1")
    assert await store.get_binding("g") == again
    assert await store.list_bindings() == [again]
    assert [b.session_id for b in await store.list_bindings(include_invalid=True)] == [
        "s1",
        "s3",
        "s2",
    ]


async def test_invalid_current_binding_does_not_fall_back(store: Store, clock: FakeClock) -> None:
    # The orchestrator marks a session invalid only when the CLI says it is gone: resuming
    # an older session instead would be wrong. The goal has no binding until the next put.
    old = await store.put_binding("g", "s1")
    clock.advance(1)
    await store.put_binding("g", "s2")
    clock.advance(1)
    await store.mark_invalid("g", "s2")
    assert await store.get_binding("g") is None
    assert await store.list_bindings() == []
    await store.touch("g")  # no current binding: touches nothing
    everything = await store.list_bindings(include_invalid=True)
    assert [(b.session_id, b.invalid, b.last_active_at) for b in everything] == [
        ("s2", True, T0 + 1),
        ("s1", False, T0),
    ]
    assert everything[1] == old
    clock.advance(1)
    fresh = await store.put_binding("g", "s3")
    assert await store.get_binding("g") == fresh


async def test_marking_a_superseded_row_invalid_keeps_the_current(
    store: Store, clock: FakeClock
) -> None:
    await store.put_binding("g", "s1")
    clock.advance(1)
    current = await store.put_binding("g", "s2")
    clock.advance(1)
    await store.mark_invalid("g", "s1")
    assert await store.get_binding("g") == current
    assert await store.list_bindings() == [current]
    assert [(b.session_id, b.invalid) for b in await store.list_bindings(include_invalid=True)] == [
        ("s2", False),
        ("s1", True),
    ]


async def test_same_instant_puts_are_ordered_by_put(store: Store) -> None:
    # The clock does not move: updated_at ties, and the later put wins.
    await store.put_binding("g", "s1")
    await store.put_binding("g", "s2")
    current = await store.get_binding("g")
    assert current is not None
    assert current.session_id == "s2"
    assert [b.session_id for b in await store.list_bindings(include_invalid=True)] == ["s2", "s1"]
    await store.put_binding("g", "s1")
    current = await store.get_binding("g")
    assert current is not None
    assert current.session_id == "s1"
    assert [b.session_id for b in await store.list_bindings(include_invalid=True)] == ["s1", "s2"]
    await store.mark_invalid("g", "s1")
    assert await store.get_binding("g") is None  # s2 does not take over either


async def test_touch_moves_only_the_current_binding(store: Store, clock: FakeClock) -> None:
    await store.put_binding("g", "s1")
    clock.advance(1)
    await store.put_binding("g", "s2")
    await store.put_binding("other", "s9")
    clock.advance(1)
    await store.touch("g")
    rows = {b.session_id: b for b in await store.list_bindings(include_invalid=True)}
    assert rows["s2"].last_active_at == T0 + 2
    assert rows["s2"].updated_at == T0 + 1  # touching is not putting
    assert rows["s1"].last_active_at == T0
    assert rows["s9"].last_active_at == T0 + 1


async def test_filters_apply_to_the_current_binding_only(store: Store, clock: FakeClock) -> None:
    await store.put_binding("g", "s1")
    clock.advance(100)
    await store.put_binding("g", "s2")
    clock.advance(100)
    # s2 (the current one) is too old: an older row never stands in for it.
    assert await store.get_binding("g", max_age_s=150) is not None
    assert await store.get_binding("g", max_age_s=99) is None
    assert await store.get_binding("g", idle_ttl_s=99) is None
    assert await store.list_bindings(idle_ttl_s=99) == []
    # With include_invalid, the filters apply to every row.
    assert [b.session_id for b in await store.list_bindings(include_invalid=True)] == ["s2", "s1"]
    assert [
        b.session_id for b in await store.list_bindings(include_invalid=True, max_age_s=150)
    ] == ["s2"]
    assert await store.list_bindings(include_invalid=True, idle_ttl_s=99) == []


async def test_several_goals_each_with_history(store: Store, clock: FakeClock) -> None:
    await store.put_binding("a", "a1")
    await store.put_binding("b", "b1")
    clock.advance(1)
    await store.put_binding("a", "a2")
    await store.mark_invalid("b", "b1")
    clock.advance(1)
    await store.put_binding("c", "c1")
    await store.touch("b")  # b has no current binding
    assert [(b.goal_id, b.session_id) for b in await store.list_bindings()] == [
        ("c", "c1"),
        ("a", "a2"),
    ]
    assert [(b.goal_id, b.session_id) for b in await store.list_bindings(include_invalid=True)] == [
        ("c", "c1"),
        ("a", "a2"),
        ("a", "a1"),
        ("b", "b1"),
    ]


async def test_idle_ttl_on_last_active(store: Store, clock: FakeClock) -> None:
    await store.put_binding("g", "s1")
    clock.advance(60)
    assert await store.get_binding("g", idle_ttl_s=60) is not None  # exactly at the limit
    assert len(await store.list_bindings(idle_ttl_s=60)) == 1
    clock.advance(0.5)
    assert await store.get_binding("g", idle_ttl_s=60) is None
    assert await store.list_bindings(idle_ttl_s=60) == []
    assert await store.get_binding("g") is not None  # no filter, no expiry
    await store.touch("g")
    touched = await store.get_binding("g", idle_ttl_s=60)
    assert touched is not None
    assert touched.last_active_at == T0 + 60.5
    assert touched.created_at == touched.updated_at == T0


async def test_max_age_on_created_at(store: Store, clock: FakeClock) -> None:
    await store.put_binding("g", "s1")
    clock.advance(100)
    await store.touch("g")  # activity does not make a session younger
    assert await store.get_binding("g", max_age_s=100) is not None
    clock.advance(1)
    await store.touch("g")
    assert await store.get_binding("g", max_age_s=100) is None
    assert await store.list_bindings(max_age_s=100) == []
    assert await store.get_binding("g", idle_ttl_s=1) is not None
    await store.put_binding("g", "s1")  # same session: still old
    assert await store.get_binding("g", max_age_s=100) is None
    await store.put_binding("g", "s2")  # a new session is born now
    assert await store.get_binding("g", max_age_s=100) is not None


async def test_touch_of_unknown_goal_is_a_noop(store: Store) -> None:
    await store.touch("ghost")
    assert await store.list_bindings(include_invalid=True) == []


async def test_list_bindings_most_recently_active_first(store: Store, clock: FakeClock) -> None:
    for goal in ("a", "b", "c"):
        await store.put_binding(goal, f"s-{goal}")
        clock.advance(1)
    await store.touch("a")
    clock.advance(1)
    await store.put_binding("tie-1", "s")
    await store.put_binding("tie-0", "s")
    assert [b.goal_id for b in await store.list_bindings()] == ["tie-0", "tie-1", "a", "c", "b"]
    assert [b.goal_id for b in await store.list_bindings(idle_ttl_s=1)] == [
        "tie-0",
        "tie-1",
        "a",
    ]


async def test_purge_older_than(store: Store, clock: FakeClock) -> None:
    await store.put_binding("old", "s1")
    await store.put_binding("old-invalid", "s2")
    await store.mark_invalid("old-invalid", "s2")
    clock.advance(50)
    await store.put_binding("edge", "s3")
    clock.advance(50)
    await store.put_binding("fresh", "s4")
    # "old" and "old-invalid": idle 100 s; "edge": idle exactly 50 s (kept); "fresh": 0 s.
    assert await store.purge_older_than(50) == 2
    remaining = await store.list_bindings(include_invalid=True)
    assert sorted(b.goal_id for b in remaining) == ["edge", "fresh"]
    assert await store.purge_older_than(50) == 0
    clock.advance(1)
    assert await store.purge_older_than(50) == 1
    assert [b.goal_id for b in await store.list_bindings()] == ["fresh"]


async def test_purge_counts_every_row_of_a_goal(store: Store, clock: FakeClock) -> None:
    await store.put_binding("g", "s1")
    clock.advance(1)
    await store.put_binding("g", "s2")
    await store.mark_invalid("g", "s2")
    clock.advance(1)
    await store.put_binding("g", "s3")
    clock.advance(9)
    # Idle: s1 11 s, s2 (invalid, superseded) 10 s, s3 (the current one) 9 s.
    assert await store.purge_older_than(10) == 1
    assert [b.session_id for b in await store.list_bindings(include_invalid=True)] == ["s3", "s2"]
    current = await store.get_binding("g")
    assert current is not None
    assert current.session_id == "s3"
    clock.advance(1)
    assert await store.purge_older_than(10) == 1  # s2; s3 is exactly at the limit
    clock.advance(1)
    assert await store.purge_older_than(10) == 1
    assert await store.list_bindings(include_invalid=True) == []
    assert await store.get_binding("g") is None
    await store.put_binding("g", "s1")  # a purged session can be bound again, from scratch
    assert (await store.list_bindings())[0].created_at == T0 + 13


# -- ledger ------------------------------------------------------------------------------


async def test_events_in_order_with_increasing_seq(store: Store, clock: FakeClock) -> None:
    await store.append_events("g", [("goal_started", {"n": 0}), ("attempt_started", {"n": 1})])
    clock.advance(2)
    await store.append_events("other", [("goal_started", {})])
    await store.append_events("g", [("attempt_completed", {"n": 2, "nested": {"x": [1, 2]}})])
    entries = await store.events("g")
    assert [(e.kind, e.data.get("n")) for e in entries] == [
        ("goal_started", 0),
        ("attempt_started", 1),
        ("attempt_completed", 2),
    ]
    assert all(e.goal_id == "g" for e in entries)
    assert [e.at for e in entries] == [T0, T0, T0 + 2]
    assert entries[2].data == {"n": 2, "nested": {"x": [1, 2]}}
    seqs = [e.seq for e in entries]
    assert seqs == sorted(seqs)
    assert len(set(seqs)) == 3
    (other,) = await store.events("other")
    assert seqs[1] < other.seq < seqs[2]  # one sequence across goals
    after = await store.events("g", after_seq=seqs[0])
    assert [e.seq for e in after] == seqs[1:]
    assert await store.events("g", after_seq=seqs[2]) == []
    assert await store.events("nobody") == []


async def test_empty_append_is_a_noop(store: Store) -> None:
    await store.append_events("g", [])
    assert await store.events("g") == []
    assert await store.goals() == []


async def test_append_is_atomic_on_bad_data(store: Store) -> None:
    with pytest.raises(TypeError):
        await store.append_events("g", [("ok", {"a": 1}), ("bad", {"x": object()})])
    assert await store.events("g") == []


async def test_returned_data_is_a_copy(store: Store) -> None:
    data = {"list": [1]}
    await store.append_events("g", [("k", data)])
    data["list"].append(2)
    (entry,) = await store.events("g")
    entry.data["list"].append(3)
    (again,) = await store.events("g")
    assert again.data == {"list": [1]}


# -- goals() ---------------------------------------------------------------------------------


async def test_goals_summary(store: Store, clock: FakeClock) -> None:
    assert await store.goals() == []
    await store.append_events("a", [("goal_started", {}), ("attempt_started", {})])
    clock.advance(1)
    await store.append_events("b", [("goal_started", {})])
    clock.advance(1)
    await store.append_events(
        "a", [("goal_completed", {"goal_id": "a", "outcome": {"kind": "done"}})]
    )
    summaries = await store.goals()
    assert [s.goal_id for s in summaries] == ["a", "b"]
    a, b = summaries
    assert (a.first_at, a.last_at, a.events, a.last_kind, a.outcome) == (
        T0,
        T0 + 2,
        3,
        "goal_completed",
        "done",
    )
    assert (b.first_at, b.last_at, b.events, b.last_kind, b.outcome) == (
        T0 + 1,
        T0 + 1,
        1,
        "goal_started",
        None,
    )


async def test_goal_outcome_follows_reruns(store: Store, clock: FakeClock) -> None:
    def completed(kind: str) -> tuple[str, dict[str, object]]:
        return ("goal_completed", {"outcome": {"kind": kind, "reason": "r"}})

    await store.append_events("g", [("goal_started", {}), completed("budget_exhausted")])
    (summary,) = await store.goals()
    assert summary.outcome == "budget_exhausted"
    # Re-run of the same goal id (after a crash, say): running again.
    await store.append_events("g", [("goal_started", {}), ("attempt_started", {})])
    (summary,) = await store.goals()
    assert summary.outcome is None
    assert summary.last_kind == "attempt_started"
    # The latest completion wins.
    await store.append_events("g", [completed("cancelled")])
    await store.append_events("g", [completed("done"), ("progress", {})])
    (summary,) = await store.goals()
    assert (summary.outcome, summary.last_kind, summary.events) == ("done", "progress", 7)


async def test_goal_completed_without_outcome_kind(store: Store) -> None:
    await store.append_events("g", [("goal_completed", {"outcome": "done"})])
    await store.append_events("h", [("goal_completed", {})])
    assert [s.outcome for s in await store.goals()] == [None, None]


async def test_goals_most_recently_active_first(store: Store, clock: FakeClock) -> None:
    for goal in ("a", "b", "c"):
        await store.append_events(goal, [("goal_started", {})])
        clock.advance(1)
    await store.append_events("a", [("progress", {})])
    # "x" and "y" share a timestamp: the later append comes first.
    await store.append_events("x", [("goal_started", {})])
    await store.append_events("y", [("goal_started", {})])
    assert [s.goal_id for s in await store.goals()] == ["y", "x", "a", "c", "b"]
