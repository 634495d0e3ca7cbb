"""The fixed cost of one turn: wall time and CPU of our process for a 3-frame turn (init, one
frame, result), with 50 and with 500 idle processes on the host.

Three variants against the same fake CLI (:mod:`benchmarks.anchor`), interleaved round by
round: nexo-trio's ``run_turn`` (under its subreaper helper, as an unconfined turn runs),
``claude-agent-sdk``'s ``query`` under trio (the anchor; warmed up once, so that its import is
not counted) and a bare trio process (the floor). A fourth row runs the turn as a goal's
default machinery does around the CLI: ``run_turn`` confined by bubblewrap (a plan from
``prepare_sandbox``, as ``sandbox: auto`` picks where bwrap works) and keeping the raw stream
gzip-compressed (``stdout_copy``), against the same floor; skipped where bwrap does not work.
(The rest of a goal's turn, the gate server and the ledger, is ``bench_goals``'s.)

CPU of our process is the ``time.process_time()`` delta around one turn: it includes our
worker threads, not the children. The idle processes are ``sleep`` processes started for the
rows and killed after them (they end by themselves within ten minutes regardless).
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import trio

from benchmarks import anchor, frames
from benchmarks.suite import Row, Stat, interleave_async
from nexo_trio.core.command import ClaudeCommand
from nexo_trio.core.outcome import Cause
from nexo_trio.core.sandbox import SandboxPlan
from nexo_trio.engine.sandbox import prepare_sandbox, probe_bwrap
from nexo_trio.engine.supervisor import run_turn

IDLE = (50, 500)
FRAMES = 3
IDLE_LIFETIME_S = 600
GROUP = "turn"

Turn = Callable[[Path, Path], Awaitable[int]]


@contextmanager
def idle_processes(count: int) -> Iterator[None]:
    """``count`` idle ``sleep`` processes on the host while the block runs."""
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for _ in range(count):
            procs.append(
                subprocess.Popen(
                    ["sleep", str(IDLE_LIFETIME_S)],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        yield
    finally:
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.wait()


def host_processes() -> int:
    """How many processes the host runs now (as ``/proc`` shows them to us)."""
    return sum(1 for entry in Path("/proc").iterdir() if entry.name.isdigit())


async def _goal_turn(work: Path) -> Turn | None:
    """A turn with a goal's default machinery around the CLI (see the module docstring);
    ``None`` where bubblewrap does not work."""
    if await probe_bwrap() is not None:
        return None
    workspace = work / "workspace"
    workspace.mkdir()
    plan: SandboxPlan = await trio.to_thread.run_sync(
        lambda: prepare_sandbox(
            workspace, work / "scratch", home=work / "home", readable=[work, anchor.FAKE_CLI]
        )
    )
    streams = work / "streams"
    streams.mkdir()
    count = 0

    async def turn(binary: Path, stream: Path) -> int:
        nonlocal count
        count += 1
        command = ClaudeCommand(
            prompt="Benchmark.",
            binary=str(binary),
            cwd=workspace,
            env={"NEXO_BENCH_FRAMES": str(stream)},
        )
        result = await run_turn(
            command,
            timeout=anchor.TIMEOUT_S,
            sandbox=plan,
            stdout_copy=streams / f"turn-{count}.ndjson.gz",
        )
        assert result.outcome.cause is Cause.COMPLETED, result.outcome
        return result.outcome.events

    return turn


async def _measure(
    variants: dict[str, Turn], binary: Path, stream: Path, rounds: int
) -> dict[str, tuple[list[float], list[float]]]:
    """Wall and CPU seconds of each variant's turns, interleaved: ``{name: (wall, cpu)}``."""
    cpu: dict[str, list[float]] = {name: [] for name in variants}

    def timed(name: str, turn: Turn) -> Callable[[], Awaitable[float]]:
        async def one() -> float:
            cpu_start = time.process_time()
            start = time.perf_counter()
            seen = await turn(binary, stream)
            wall = time.perf_counter() - start
            cpu[name].append(time.process_time() - cpu_start)
            assert seen > 0, name
            return wall

        return one

    wall = await interleave_async(
        {name: timed(name, turn) for name, turn in variants.items()}, rounds
    )
    return {name: (wall[name], cpu[name]) for name in variants}


def _ms(values: list[float]) -> Stat:
    return Stat.of(values).scaled(1e3)


async def _rows(quick: bool) -> list[Row]:
    rounds = 5 if quick else 25
    idle_counts = (IDLE[0],) if quick else IDLE
    with tempfile.TemporaryDirectory(prefix="bench-turn-") as tmp:
        work = Path(tmp)
        binary = anchor.launcher(work)
        stream = work / "frames.ndjson"
        frames.write_stream(stream, FRAMES)
        variants: dict[str, Turn] = {
            "nexo": anchor.nexo_turn,
            "sdk": anchor.sdk_turn,
            "floor": anchor.floor_turn,
        }
        goal = await _goal_turn(work)
        if goal is not None:
            variants["goal"] = goal
        for turn in variants.values():  # imports and first-time costs, not counted
            await turn(binary, stream)
        results: dict[int, dict[str, tuple[list[float], list[float]]]] = {}
        hosts: dict[int, int] = {}
        for count in idle_counts:
            with idle_processes(count):
                hosts[count] = host_processes()
                results[count] = await _measure(variants, binary, stream, rounds)
    rows: list[Row] = []
    for count in idle_counts:
        result = results[count]
        note = f"{count} idle processes started, {hosts[count]} on the host; {rounds} rounds"
        cpu = {name: _ms(samples[1]) for name, samples in result.items()}
        wall = {name: _ms(samples[0]) for name, samples in result.items()}
        rows.append(
            Row(
                GROUP,
                f"3-frame turn, wall, {count} idle",
                "ms",
                wall["nexo"],
                anchor=wall["sdk"],
                floor=wall["floor"],
                better="lower",
                note=note,
            )
        )
        rows.append(
            Row(
                GROUP,
                f"3-frame turn, CPU of our process, {count} idle",
                "ms",
                cpu["nexo"],
                anchor=cpu["sdk"],
                floor=cpu["floor"],
                better="lower",
                target="<= the SDK's",
                met=cpu["nexo"].median <= cpu["sdk"].median,
                note=note,
            )
        )
        if "goal" in cpu:
            rows.append(
                Row(
                    GROUP,
                    f"3-frame goal turn (bwrap sandbox, .gz stream copy), CPU, {count} idle",
                    "ms",
                    cpu["goal"],
                    floor=cpu["floor"],
                    better="lower",
                    note=f"{note}; wall {wall['goal'].median:.1f} ms",
                )
            )
    if len(idle_counts) == 2:
        low, high = idle_counts
        per = 100 / (hosts[high] - hosts[low])

        def growth(name: str) -> Stat:
            cpu_low = statistics_median(results[low][name][1])
            cpu_high = statistics_median(results[high][name][1])
            return Stat.of([(cpu_high - cpu_low) * per * 1e6])

        ours, sdk, floor = growth("nexo"), growth("sdk"), growth("floor")
        rows.append(
            Row(
                GROUP,
                f"turn CPU growth with the host's processes ({low} -> {high} idle)",
                "µs per 100 processes",
                ours,
                anchor=sdk,
                floor=floor,
                better="lower",
                target="independent of the host's processes (<= the floor's + 50 µs)",
                # A floor that got cheaper with more processes is noise (a bare spawn cannot
                # gain from them): it counts as no growth, not as a bar below zero.
                met=ours.median <= max(floor.median, 0.0) + 50,
                note="difference of the medians; a negative floor counts as 0",
            )
        )
    return rows


def statistics_median(values: list[float]) -> float:
    """The median of ``values``."""
    return Stat.of(values).median


def rows(quick: bool = False) -> list[Row]:
    """The fixed per-turn cost rows (see the module docstring)."""
    return trio.run(_rows, quick)


if __name__ == "__main__":
    from benchmarks.suite import markdown

    print(markdown(rows()))
