"""The gate's batched worker threads (:mod:`nexo_trio.gate.batched_thread`): results and
errors come back to their own caller, concurrent calls share thread hops, a cancelled caller
abandons its call, and hung calls do not hold up the others."""

from __future__ import annotations

import threading
import time

import pytest
import trio

from nexo_trio.gate import batched_thread
from nexo_trio.gate.batched_thread import run_batched


async def test_each_caller_gets_its_own_result_or_error() -> None:
    results: dict[int, object] = {}

    def square(n: int) -> int:
        if n == 13:
            raise ValueError("unlucky")
        return n * n

    async def one(n: int) -> None:
        try:
            results[n] = await run_batched(lambda: square(n))
        except ValueError as exc:
            results[n] = exc

    async with trio.open_nursery() as nursery:
        for n in range(50):
            nursery.start_soon(one, n)
    assert {n: v for n, v in results.items() if n != 13} == {n: n * n for n in range(50) if n != 13}
    assert isinstance(results[13], ValueError)


async def test_concurrent_calls_share_thread_hops() -> None:
    threads: set[int] = set()
    batches = 0

    def work() -> None:
        threads.add(threading.get_ident())
        time.sleep(0.002)

    async with trio.open_nursery() as nursery:
        for _ in range(64):
            nursery.start_soon(run_batched, work)
    batches = batched_thread._batches().numbers
    assert batches < 64 / 4, f"{batches} thread hops for 64 calls"
    assert len(threads) <= batched_thread.MAX_THREADS + 1


async def test_a_cancelled_caller_abandons_its_call() -> None:
    release = threading.Event()
    ran: list[str] = []

    def hung() -> str:
        release.wait(10)
        ran.append("hung")
        return "late"

    def behind() -> str:
        ran.append("behind")
        return "never asked for"

    start = time.monotonic()
    try:
        with trio.move_on_after(0.2) as scope:
            async with trio.open_nursery() as nursery:
                for _ in range(batched_thread.MAX_THREADS):
                    nursery.start_soon(run_batched, hung)
                await trio.sleep(0.05)
                nursery.start_soon(run_batched, behind)  # waits: every thread is busy
        assert scope.cancelled_caught
        assert time.monotonic() - start < 2
    finally:
        release.set()
    assert await run_batched(lambda: "next") == "next"  # the threads are free again
    assert "behind" not in ran  # abandoned before it started: skipped


async def test_hung_calls_do_not_hold_up_the_others(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(batched_thread, "STUCK_S", 0.2)
    release = threading.Event()
    try:
        async with trio.open_nursery() as nursery:
            for _ in range(batched_thread.MAX_THREADS):
                nursery.start_soon(run_batched, lambda: release.wait(10))
            await trio.sleep(0.05)
            with trio.fail_after(5):
                # No other call comes: the watchdog gets this one a thread.
                assert await run_batched(lambda: "served") == "served"
            release.set()
    finally:
        release.set()
