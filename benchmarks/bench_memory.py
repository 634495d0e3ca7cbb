"""Peak memory: a long turn, and one huge line.

**A turn of 100 k and of 1 M frames** (the frames of :mod:`benchmarks.bench_stream`, written
by the fake CLI): each variant (``run_turn``, claude-agent-sdk's ``query``, the bare floor)
runs in a child process of its own, which first does a small warm-up turn (imports, caches),
then reads its RSS and resets its high-water mark to it (``/proc/self/clear_refs``), runs
the measured turn, and reads the high-water mark (``VmHWM``): the growth is what the turn
itself needed at its peak. RSS rather than ``tracemalloc``: it sees every allocation (C
extensions', the allocator's own, orjson's), costs nothing while the turn runs, and a fresh
process per variant keeps the variants apart (not ``ru_maxrss``: a child inherits its
parent's at fork and keeps it across exec). The target is constant memory in the number of
frames: the 1 M turn may not grow more than the 100 k one, give or take
:data:`CONSTANT_SLACK_MIB`.

**One 64 MiB line** (the longest the framer accepts by default) fed to the line framer in
64 KiB chunks, as a pipe delivers it: the peak growth of traced allocations
(``tracemalloc``, which is exact for the bytes objects involved) over what was held before,
in multiples of the line. The floor is the line itself, 1x; the target is at most 2x (a line
past 1 MiB is gathered into one growing buffer that is handed on without a copy). And the
same line as a JSON frame through the whole decoder (framer + ``orjson`` + the frame
record), for information: the decoded string is another copy of the line.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import tracemalloc
from functools import partial
from pathlib import Path

import orjson
import trio

from benchmarks import anchor, frames
from benchmarks.suite import Row, Stat, interleave
from nexo_trio.core.framing import DEFAULT_LINE_CAP, Line, LineFramer
from nexo_trio.wire.stream_json import StreamDecoder

CHUNK = 64 * 1024
MIB = 1024 * 1024
TURN_SIZES: tuple[tuple[int, int], ...] = ((100_000, 3), (1_000_000, 1))
"""Frames per turn, and the rounds each gets (peak RSS is not timing noise: few rounds)."""
QUICK_TURN_SIZES: tuple[tuple[int, int], ...] = ((10_000, 1), (100_000, 1))
CONSTANT_SLACK_MIB = 4.0
"""How much more the longest turn may grow than the shorter one and still be "constant"."""
LINE_TARGET = 2.0
WARM_UP_FRAMES = 1_000
TURNS = {"ours": anchor.nexo_turn, "sdk": anchor.sdk_turn, "floor": anchor.floor_turn}


# --------------------------------------------------------------------------- a long turn


def _status_kib(field: str) -> int:
    """A ``VmRSS``-like figure of ``/proc/self/status``, in KiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    raise LookupError(field)


def _rss_kib() -> int:
    """This process's resident set now, in KiB; its peak is reset to it (``clear_refs``
    5), so that :func:`_peak_kib` then tells the peak from here on."""
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")
    return _status_kib("VmRSS")


def _peak_kib() -> int:
    """This process's peak resident set (``VmHWM``: unlike ``ru_maxrss``, not inherited
    from the parent at fork, nor kept across the exec), in KiB."""
    return _status_kib("VmHWM")


def _child(variant: str, binary: str, stream: str, warm_up: str) -> None:
    """In the child process: a warm-up turn, then print the measured turn's peak RSS over
    the RSS before it (KiB)."""
    turn = TURNS[variant]
    trio.run(turn, Path(binary), Path(warm_up))
    before = _rss_kib()
    seen = trio.run(turn, Path(binary), Path(stream))
    print(json.dumps({"growth_kib": _peak_kib() - before, "frames": seen}))


def _line_child(variant: str) -> None:
    """In the child process: one 64 MiB JSON frame decoded, by the decoder (in chunks) or
    by the floor (one ``orjson.loads``); print the peak RSS over the RSS before (KiB)."""
    frame = _huge_frame()
    before = _rss_kib()
    got = _feed(StreamDecoder(), frame) if variant == "ours" else [orjson.loads(frame)]
    assert len(got) == 1, got[:3]
    print(json.dumps({"growth_kib": _peak_kib() - before, "frames": 1}))


def _in_child(*args: str) -> float:
    """Run this module with ``args`` in a child process; the peak growth it prints, MiB."""
    argv = [sys.executable, "-m", "benchmarks.bench_memory", *args]
    repo = Path(__file__).resolve().parent.parent
    done = subprocess.run(argv, cwd=repo, capture_output=True, check=True, text=True)
    report = json.loads(done.stdout.strip().splitlines()[-1])
    return float(report["growth_kib"]) / 1024


def _turn_growth(variant: str, binary: Path, stream: Path, warm_up: Path) -> float:
    """One child process running one turn of ``variant``: its peak RSS growth, in MiB."""
    return _in_child("--child", variant, str(binary), str(stream), str(warm_up))


def turn_rows(quick: bool = False) -> list[Row]:
    """Peak RSS growth of one long turn, each variant in a child process."""
    sizes = QUICK_TURN_SIZES if quick else TURN_SIZES
    out: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="nexo-bench-memory-") as name:
        directory = Path(name)
        binary = anchor.launcher(directory)
        warm_up = directory / "warm-up.ndjson"
        frames.write_stream(warm_up, WARM_UP_FRAMES)
        shorter: dict[str, Stat] | None = None
        for n, rounds in sizes:
            stream = directory / f"frames-{n}.ndjson"
            frames.write_stream(stream, n)
            samples = interleave(
                {v: partial(_turn_growth, v, binary, stream, warm_up) for v in TURNS},
                rounds,
            )
            stream.unlink()
            stats = {variant: Stat.of(values) for variant, values in samples.items()}
            target, met, note = "", None, f"{rounds} round(s), a child process per variant"
            if shorter is not None:
                target = f"constant: <= the shorter turn's + {CONSTANT_SLACK_MIB:g} MiB"
                met = stats["ours"].median <= shorter["ours"].median + CONSTANT_SLACK_MIB
                note += f"; ours at the shorter turn: {shorter['ours'].median:.1f} MiB"
            out.append(
                Row(
                    group="memory",
                    figure=f"peak RSS growth, {n:,}-frame turn",
                    unit="MiB",
                    ours=stats["ours"],
                    anchor=stats["sdk"],
                    floor=stats["floor"],
                    better="lower",
                    target=target,
                    met=met,
                    note=note,
                )
            )
            shorter = stats
    return out


# --------------------------------------------------------------------------- one huge line


LINE_SIZE = DEFAULT_LINE_CAP - 1
"""The longest line the framer accepts by default (64 MiB less its newline)."""


def _huge_line() -> bytes:
    return b"x" * LINE_SIZE + b"\n"


def _huge_frame() -> bytes:
    """A JSON frame of :data:`LINE_SIZE` bytes (a tool result's text), and its newline."""
    head = b'{"type":"user","session_id":"s","message":{"role":"user","content":"'
    tail = b'"}}'
    return head + b"x" * (LINE_SIZE - len(head) - len(tail)) + tail + b"\n"


def _feed(consumer: LineFramer | StreamDecoder, data: bytes) -> list[object]:
    """``data`` fed to ``consumer`` in :data:`CHUNK`-byte chunks, as a pipe delivers it."""
    view = memoryview(data)
    got: list[object] = []
    for start in range(0, len(data), CHUNK):
        got += consumer.feed(bytes(view[start : start + CHUNK]))
    got += consumer.close()
    return got


def _framer_growth() -> float:
    """The framer's peak traced growth for one huge line, in multiples of the line (the
    line's own bytes are held before and not counted; the chunks cut from it are)."""
    line = _huge_line()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        got = _feed(LineFramer(), line)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert got == [Line(1, line[:-1])]
    return (peak - base) / LINE_SIZE


def line_rows() -> list[Row]:
    """One 64 MiB line through the framer (the target row) and as a frame through the
    decoder, beside one ``orjson.loads`` of it."""
    framed = _framer_growth()
    decoded = Stat.of([_in_child("--line-child", "ours") * MIB / LINE_SIZE])
    loads = Stat.of([_in_child("--line-child", "floor") * MIB / LINE_SIZE])
    return [
        Row(
            group="memory",
            figure="one 64 MiB line through the framer",
            unit="x the line",
            ours=Stat.of([framed]),
            floor=Stat.of([1.0]),
            better="lower",
            target=f"<= {LINE_TARGET:g}x the line",
            met=framed <= LINE_TARGET,
            note=f"{framed:.4f}x, tracemalloc: the line gathered in one buffer; the "
            "floor is the line itself; claude-agent-sdk refuses lines over 1 MiB by default",
        ),
        Row(
            group="memory",
            figure="one 64 MiB frame through framer + parser, peak RSS growth",
            unit="x the line",
            ours=decoded,
            floor=loads,
            better="lower",
            note="a child process each; the floor is one orjson.loads of the whole line, "
            "whose decoded string is a copy of it",
        ),
    ]


def rows(quick: bool = False) -> list[Row]:
    """The memory rows: a long turn's peak RSS growth, one 64 MiB line's peak."""
    return [*turn_rows(quick), *line_rows()]


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        _child(*sys.argv[2:6])
    elif sys.argv[1:2] == ["--line-child"]:
        _line_child(sys.argv[2])
    else:
        from benchmarks.suite import markdown

        print(markdown(rows(quick="--quick" in sys.argv)), end="")
