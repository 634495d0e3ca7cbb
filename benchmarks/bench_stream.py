"""Stream throughput: realistic stream-json frames through a whole turn, three ways.

A subprocess (the fake CLI, :mod:`benchmarks.fake_cli`) writes ``n`` frames
(:mod:`benchmarks.frames`: the init frame, a cycle of status frames, partial-message stream
events, assistant text and tool calls with usage, tool results, and the result frame) as
fast as the pipe takes them, and the turn is driven to its end by

- ours: ``nexo_trio.engine.supervisor.run_turn`` (spawn, framing, parsing into typed frames,
  the reducer, the outcome; :func:`benchmarks.anchor.nexo_turn`);
- the anchor: ``claude-agent-sdk``'s ``query`` under trio against the same fake CLI
  (:func:`benchmarks.anchor.sdk_turn`);
- the floor: a bare trio process whose stdout is split on newlines and each line
  ``orjson``-decoded (:func:`benchmarks.anchor.floor_turn`).

The figure is frames per second of the whole turn (spawn to exit, wall clock), so the fixed
per-turn cost weighs on the small sizes and the per-frame path on the large ones. The three
variants are interleaved round by round (their order rotating); 1 M frames gets fewer
rounds than the others (each SDK round there takes tens of seconds), as its note says.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import trio

from benchmarks import anchor, frames
from benchmarks.suite import Row, Stat, interleave_async

SIZES: tuple[tuple[int, int], ...] = (
    (1_000, 7),
    (10_000, 7),
    (100_000, 5),
    (1_000_000, 3),
)
"""Frames per turn, and the rounds each size gets."""
QUICK_SIZES: tuple[tuple[int, int], ...] = ((1_000, 3), (10_000, 3))
TARGET_FRAMES = 100_000
TARGET_FLOOR_RATIO = 0.5
"""The issue's target: at 100 k frames, at least half the floor's frames/s."""

Turn = Callable[[Path, Path], Awaitable[int]]


def _timed(turn: Turn, binary: Path, stream: Path, n: int) -> Callable[[], Awaitable[float]]:
    async def run() -> float:
        start = time.perf_counter()
        seen = await turn(binary, stream)
        elapsed = time.perf_counter() - start
        # Every variant saw the whole stream (the SDK yields a message per frame it models:
        # all of these frames are of a type it does).
        assert seen == n, (turn.__name__, seen, n)
        return elapsed

    return run


async def _measure(directory: Path, sizes: tuple[tuple[int, int], ...]) -> list[Row]:
    binary = anchor.launcher(directory)
    rows = []
    for n, rounds in sizes:
        stream = directory / f"frames-{n}.ndjson"
        frames.write_stream(stream, n)
        variants = {
            "ours": _timed(anchor.nexo_turn, binary, stream, n),
            "sdk": _timed(anchor.sdk_turn, binary, stream, n),
            "floor": _timed(anchor.floor_turn, binary, stream, n),
        }
        # One warm-up turn each (imports, caches), not counted.
        for variant in variants.values():
            await variant()
        samples = await interleave_async(variants, rounds)
        stream.unlink()
        ours, sdk, floor = (Stat.of(samples[k]).per(n) for k in ("ours", "sdk", "floor"))
        target, met = "", None
        if n == TARGET_FRAMES:
            target = f">= {TARGET_FLOOR_RATIO}x floor (~3x the SDK)"
            met = ours.median >= TARGET_FLOOR_RATIO * floor.median
        note = f"medians of {rounds} interleaved rounds"
        if n >= 1_000_000:
            note += " (fewer: each SDK round takes tens of seconds)"
        rows.append(
            Row(
                group="stream",
                figure=f"{n:,} frames through a turn",
                unit="frames/s",
                ours=ours,
                anchor=sdk,
                floor=floor,
                better="higher",
                target=target,
                met=met,
                note=note,
            )
        )
    return rows


def rows(quick: bool = False) -> list[Row]:
    """Frames/s of whole turns at each size: ``run_turn``, the SDK, and the floor."""
    sizes = QUICK_SIZES if quick else SIZES
    with tempfile.TemporaryDirectory(prefix="nexo-bench-stream-") as directory:
        return trio.run(_measure, Path(directory), sizes)


if __name__ == "__main__":
    import sys

    from benchmarks.suite import markdown

    print(markdown(rows(quick="--quick" in sys.argv)), end="")
