"""Start-up: ``nexo-trio --help`` and ``import nexo_trio`` beside the floor of ``python -c
pass``, each a whole process, interleaved round by round (medians of :data:`ROUNDS`)."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

ROUNDS = 15
NEXO_TRIO = Path(sys.executable).parent / "nexo-trio"
VARIANTS = {
    "python -c pass (floor)": [sys.executable, "-c", "pass"],
    "python -c 'import nexo_trio'": [sys.executable, "-c", "import nexo_trio"],
    "nexo-trio --help": [str(NEXO_TRIO), "--help"],
}


def _ms(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, timeout=60)
    return (time.perf_counter() - start) * 1000


def run() -> list[tuple[str, float, str]]:
    """Rows of (name, milliseconds, note)."""
    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for _ in range(ROUNDS):
        for name, argv in VARIANTS.items():
            times[name].append(_ms(argv))
    floor = statistics.median(times["python -c pass (floor)"])
    rows = []
    for name, seen in times.items():
        median = statistics.median(seen)
        spread = max(seen) - min(seen)
        rows.append((name, median, f"+{median - floor:.0f} ms over the floor; spread {spread:.0f}"))
    return rows


if __name__ == "__main__":
    for name, value, note in run():
        print(f"  {name:<32} {value:>8.1f} ms   {note}")
