"""Start-up: ``nexo-trio --help`` and ``import nexo_trio`` beside the floor of ``python -c
pass``, each a whole process, interleaved round by round (medians of :data:`ROUNDS`)."""

from __future__ import annotations

import functools
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.suite import Row, Stat, interleave, markdown

ROUNDS = 15
QUICK_ROUNDS = 3
NEXO_TRIO = Path(sys.executable).parent / "nexo-trio"
FLOOR = [sys.executable, "-c", "pass"]
HELP_TARGET_MS = 150.0
"""The issue's target: ``--help`` at most this far above ``python -c pass``."""


def _ms(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, timeout=60)
    return (time.perf_counter() - start) * 1000


def rows(quick: bool = False) -> list[Row]:
    """``import nexo_trio`` and ``nexo-trio --help`` beside ``python -c pass`` (ms)."""
    variants = {
        "floor": FLOOR,
        "import": [sys.executable, "-c", "import nexo_trio"],
        "help": [str(NEXO_TRIO), "--help"],
    }
    samples = interleave(
        {name: functools.partial(_ms, argv) for name, argv in variants.items()},
        QUICK_ROUNDS if quick else ROUNDS,
    )
    floor = Stat.of(samples["floor"])
    help_ = Stat.of(samples["help"])
    above = help_.median - floor.median
    return [
        Row(
            "start-up",
            "python -c 'import nexo_trio'",
            "ms",
            Stat.of(samples["import"]),
            floor=floor,
            better="lower",
            note="whole process; floor python -c pass",
        ),
        Row(
            "start-up",
            "nexo-trio --help",
            "ms",
            help_,
            floor=floor,
            better="lower",
            target=f"<= floor + {HELP_TARGET_MS:.0f} ms",
            met=above <= HELP_TARGET_MS,
            note=f"+{above:.0f} ms over the floor",
        ),
    ]


if __name__ == "__main__":
    print(markdown(rows()))
