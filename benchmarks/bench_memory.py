"""Peak memory of one 64 MiB line through the line framer (``core/framing.py``), in chunks
as a pipe delivers them: the growth over what was held before, as a multiple of the line
(``tracemalloc``; the floor is the line itself, 1x)."""

from __future__ import annotations

import tracemalloc

from nexo_trio.core.framing import DEFAULT_LINE_CAP, LineFramer

CHUNK = 64 * 1024


def run() -> list[tuple[str, float, str]]:
    """One row: the peak growth, in multiples of the line."""
    size = DEFAULT_LINE_CAP - 1  # the longest line accepted by default
    line = b"x" * size + b"\n"
    framer = LineFramer()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        view = memoryview(line)
        got = []
        for start in range(0, len(line), CHUNK):
            got += framer.feed(bytes(view[start : start + CHUNK]))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(got) == 1
    return [("one 64 MiB line, framed", (peak - base) / size, "x the line (floor: 1x)")]


if __name__ == "__main__":
    for name, value, note in run():
        print(f"  {name:<32} {value:>6.2f} {note}")
