"""The SharedStore contract (leases, the goal queue, control requests), run against SQLite
and PostgreSQL alike."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest
import trio

from nexo_trio.store.base import FINISHED, QUEUED, RUNNING, SharedStore
from nexo_trio.store.sqlite import open_sqlite_store
from tests.store.conftest import FakeClock

T0 = 1_000_000.0


# -- leases ------------------------------------------------------------------------------


async def test_a_lease_is_taken_renewed_and_refused_to_others(
    shared_store: SharedStore, clock: FakeClock
) -> None:
    lease = await shared_store.take_lease("g", "w1", 30)
    assert (lease.owner, lease.until) == ("w1", T0 + 30)
    assert await shared_store.lease_of("g") == lease
    # Another owner is refused while the lease is live, even exactly at its end.
    clock.advance(30)
    refused = await shared_store.take_lease("g", "w2", 30)
    assert refused.owner == "w1"
    # Its owner renews it.
    assert await shared_store.renew_leases("w1", ["g", "other"], 30) == {"g"}
    assert (await shared_store.lease_of("g")) is not None
    clock.advance(31)
    assert await shared_store.lease_of("g") is None  # expired
    taken = await shared_store.take_lease("g", "w2", 30)
    assert taken.owner == "w2"
    # The old owner lost it: renewing says so, releasing it does nothing.
    assert await shared_store.renew_leases("w1", ["g"], 30) == set()
    await shared_store.release_lease("g", "w1")
    assert (await shared_store.lease_of("g")) == taken
    await shared_store.release_lease("g", "w2")
    assert await shared_store.lease_of("g") is None


async def test_an_expired_lease_nobody_took_is_renewed_by_its_owner(
    shared_store: SharedStore, clock: FakeClock
) -> None:
    await shared_store.take_lease("g", "w1", 10)
    clock.advance(60)
    assert await shared_store.renew_leases("w1", ["g"], 10) == {"g"}
    assert (await shared_store.lease_of("g")) is not None


# -- the queue ---------------------------------------------------------------------------


async def test_submit_claim_finish(shared_store: SharedStore, clock: FakeClock) -> None:
    spec = {"id": "a", "description": "x ü \u2603", "nested": {"n": [1, 2.5, None]}}
    assert await shared_store.submit("a", spec)
    clock.advance(1)
    assert await shared_store.submit("b", {"id": "b"})
    assert not await shared_store.submit("a", {"id": "a", "other": True})  # already queued
    claimed = await shared_store.claim("w1", 30)
    assert [g.goal_id for g in claimed] == ["a"]  # oldest first
    assert claimed[0].spec == spec  # exactly as submitted
    assert (claimed[0].owner, claimed[0].lease_until, claimed[0].claims) == ("w1", T0 + 31, 1)
    # Claimed goals are not handed out again while leased.
    assert [g.goal_id for g in await shared_store.claim("w2", 30, limit=5)] == ["b"]
    assert await shared_store.claim("w3", 30) == []
    assert not await shared_store.finish("a", "w2", "done")  # not w2's
    assert await shared_store.finish("a", "w1", "done")
    assert await shared_store.unfinished() == 1  # b
    rows = {g.goal_id: g for g in await shared_store.queue()}
    assert rows["a"].state == FINISHED
    assert (rows["a"].outcome, rows["a"].owner, rows["a"].finished_at) == ("done", None, T0 + 1)
    assert rows["b"].state == RUNNING
    assert rows["b"].owner == "w2"
    # A finished goal can be submitted again; it is then claimable again.
    assert await shared_store.submit("a", {"id": "a", "again": True})
    again = await shared_store.claim("w3", 30)
    assert [(g.goal_id, g.spec, g.claims) for g in again] == [("a", {"id": "a", "again": True}, 2)]


async def test_a_dead_workers_goal_is_claimed_again_after_its_lease(
    shared_store: SharedStore, clock: FakeClock
) -> None:
    await shared_store.submit("a", {"id": "a"})
    assert [g.goal_id for g in await shared_store.claim("dead", 30)] == ["a"]
    clock.advance(29)
    assert await shared_store.claim("w2", 30) == []
    clock.advance(2)
    assert [g.state for g in await shared_store.queue()] == [RUNNING]  # its worker died
    retaken = await shared_store.claim("w2", 30)
    assert [(g.goal_id, g.owner, g.claims) for g in retaken] == [("a", "w2", 2)]
    assert not await shared_store.finish("a", "dead", "done")  # the dead one lost it


async def test_a_goal_leased_by_a_run_is_not_claimed(
    shared_store: SharedStore, clock: FakeClock
) -> None:
    await shared_store.take_lease("a", "a-run", 30)
    await shared_store.submit("a", {"id": "a"})
    assert await shared_store.claim("w", 30) == []
    await shared_store.release_lease("a", "a-run")
    assert [g.goal_id for g in await shared_store.claim("w", 30)] == ["a"]


# -- control requests --------------------------------------------------------------------


async def test_control_requests_are_posted_and_answered(
    shared_store: SharedStore, clock: FakeClock
) -> None:
    first = await shared_store.post_control("g", {"op": "pause", "goal_id": "g"}, ttl_s=60)
    second = await shared_store.post_control("h", {"op": "cancel", "goal_id": "h"}, ttl_s=60)
    third = await shared_store.post_control("g", {"op": "resume", "goal_id": "g"}, ttl_s=60)
    pending = await shared_store.pending_controls(["g"])
    assert [(c.id, c.request["op"]) for c in pending] == [(first, "pause"), (third, "resume")]
    await shared_store.answer_control(first, {"ok": True, "message": "paused"})
    await shared_store.answer_control(first, {"ok": False})  # the first answer stands
    found = await shared_store.control(first)
    assert found is not None
    assert found.reply == {"ok": True, "message": "paused"}
    assert [c.id for c in await shared_store.pending_controls(["g", "h"])] == [second, third]
    assert await shared_store.control(10_000) is None
    assert await shared_store.pending_controls([]) == []


async def test_an_expired_control_request_is_never_handed_out(
    shared_store: SharedStore, clock: FakeClock
) -> None:
    """Its asker gave up on it (and said so): a goal run later must not act on it."""
    request_id = await shared_store.post_control("g", {"op": "pause"}, ttl_s=15)
    clock.advance(15)
    assert [c.id for c in await shared_store.pending_controls(["g"])] == [request_id]
    clock.advance(0.5)
    assert await shared_store.pending_controls(["g"]) == []


async def test_wait_changed_is_bounded(shared_store: SharedStore) -> None:
    start = trio.current_time()
    await shared_store.wait_changed(0.3)
    assert trio.current_time() - start <= 2.0


# -- many claimers at once ---------------------------------------------------------------


def _opener(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Callable[[], AbstractAsyncContextManager[SharedStore]]:
    if kind == "sqlite":
        path = tmp_path / "shared.db"
        return lambda: open_sqlite_store(path)
    from nexo_trio.store.postgres import open_postgres_store

    url = request.getfixturevalue("pg_url")
    return lambda: open_postgres_store(url)


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_concurrent_claimers_never_share_a_goal(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Eight stores (each its own connections, as eight workers would be) claim 200 goals
    at once: every goal is claimed exactly once."""
    opener = _opener(kind, tmp_path, request)
    async with opener() as submitter:
        for index in range(200):
            await submitter.submit(f"g{index:03d}", {"n": index})
    claims: dict[str, list[str]] = {}

    async def worker(name: str) -> None:
        async with opener() as store:
            while True:
                got = await store.claim(name, 60, limit=3)
                if not got:
                    return
                for goal in got:
                    claims.setdefault(goal.goal_id, []).append(name)
                    assert await store.finish(goal.goal_id, name, "done")

    async with trio.open_nursery() as nursery:
        for index in range(8):
            nursery.start_soon(worker, f"w{index}")
    assert sorted(claims) == [f"g{index:03d}" for index in range(200)]
    assert all(len(owners) == 1 for owners in claims.values())
    async with opener() as reader:
        rows = await reader.queue()
    assert {row.state for row in rows} == {FINISHED}


async def test_a_claimer_does_not_claim_what_it_holds_already(
    shared_store: SharedStore, clock: FakeClock
) -> None:
    await shared_store.submit("a", {"id": "a"})
    assert [g.goal_id for g in await shared_store.claim("w", 30)] == ["a"]
    assert await shared_store.claim("w", 30) == []
    clock.advance(31)  # its own lease expired: then it may claim it again
    assert [g.claims for g in await shared_store.claim("w", 30)] == [2]


async def test_transcripts_are_kept_per_session(shared_store: SharedStore) -> None:
    assert await shared_store.get_transcript("g", "s") is None
    blob = bytes(range(256)) * 1000
    await shared_store.put_transcript("g", "s", blob)
    await shared_store.put_transcript("g", "t", b"other")
    assert await shared_store.get_transcript("g", "s") == blob
    await shared_store.put_transcript("g", "s", b"newer")
    assert await shared_store.get_transcript("g", "s") == b"newer"
    assert await shared_store.get_transcript("h", "s") is None


async def test_a_transcript_grows_only_from_the_copy_its_host_kept(
    shared_store: SharedStore,
) -> None:
    """An append goes on only when the stored copy is the one the host kept (its length and
    its last bytes): after another host replaced it, nothing changes."""
    first = bytes(range(256)) * 40 + b"\x00end"
    await shared_store.put_transcript("g", "s", first)
    assert await shared_store.append_transcript(
        "g", "s", b"\x00more", after=first[-8:], size=len(first)
    )
    grown = first + b"\x00more"
    assert await shared_store.get_transcript("g", "s") == grown
    # A host that kept the first copy, not the grown one: refused, nothing changes.
    assert not await shared_store.append_transcript(
        "g", "s", b"late", after=first[-8:], size=len(first)
    )
    # The same length but other last bytes (another host's copy): refused too.
    assert not await shared_store.append_transcript(
        "g", "s", b"late", after=b"12345678", size=len(grown)
    )
    assert not await shared_store.append_transcript("g", "nope", b"x", after=b"12345678", size=8)
    assert await shared_store.get_transcript("g", "s") == grown
    assert await shared_store.get_transcript("g", "nope") is None


async def test_a_waiter_wakes_when_another_store_submits(
    pg_url: str,
) -> None:
    """PostgreSQL: ``wait_changed`` returns on the other process's NOTIFY, long before its
    bound; a waiter of another kind of change sleeps on."""
    from nexo_trio.store.base import CONTROLS, QUEUE
    from nexo_trio.store.postgres import open_postgres_store

    async with open_postgres_store(pg_url) as waiter, open_postgres_store(pg_url) as other:
        await waiter.wait_changed(0.2)  # the listener connects
        woke: dict[str, float] = {}

        async def wait(name: str, what: tuple[str, ...]) -> None:
            start = trio.current_time()
            await waiter.wait_changed(5.0, what)
            woke[name] = trio.current_time() - start

        async with trio.open_nursery() as nursery:
            nursery.start_soon(wait, "queue", (QUEUE,))
            nursery.start_soon(wait, "controls", (CONTROLS,))
            await trio.sleep(0.3)
            await other.submit("a", {"id": "a"})
    assert woke["queue"] < 1.5
    assert woke["controls"] >= 4.5


async def test_appends_of_a_goal_leased_to_another_owner_are_fenced(pg_url: str) -> None:
    """PostgreSQL: a store fenced by owner A writes only the events of goals A holds the
    lease of (expired or not): not those of a goal B took over (A stalled past its lease),
    nor of one whose lease is gone (B finished it)."""
    from nexo_trio.store.postgres import open_postgres_store

    async with open_postgres_store(pg_url) as store:
        store.fence_owner = "A"
        await store.take_lease("mine", "A", 30)
        await store.take_lease("taken", "B", 30)
        for goal in ("mine", "taken", "gone"):
            await store.append_events(goal, [("note", {"n": 1})])
        assert [len(await store.events(goal)) for goal in ("mine", "taken", "gone")] == [1, 0, 0]
        assert [(row[0], row[2]) for row in store.fenced] == [("taken", "note"), ("gone", "note")]


async def test_a_goal_handed_back_waits_again_and_is_claimed_first(
    shared_store: SharedStore, clock: FakeClock
) -> None:
    await shared_store.submit("a", {"id": "a"})
    clock.advance(1)
    await shared_store.submit("b", {"id": "b"})
    [a] = await shared_store.claim("w1", 30)
    assert a.state == RUNNING
    await shared_store.release_lease("a", "w2")  # not w2's: nothing changes
    assert {g.goal_id: g.state for g in await shared_store.queue()} == {"a": RUNNING, "b": QUEUED}
    await shared_store.release_lease("a", "w1")
    assert {g.goal_id: g.state for g in await shared_store.queue()} == {"a": QUEUED, "b": QUEUED}
    assert [g.goal_id for g in await shared_store.claim("w2", 30)] == ["a"]
