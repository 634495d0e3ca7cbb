"""Run every benchmark and print each figure beside the floor it is measured against.

Numbers, not pass/fail: the machines are shared and noisy, so compare ratios.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import bench_stream


def main() -> None:
    """Print one table per benchmark."""
    print("== stream: events/s through framer + parser + reducer (100k generated lines)")
    for name, rate, note in bench_stream.run():
        print(f"  {name:<28} {rate:>12,.0f} events/s   {note}")


if __name__ == "__main__":
    main()
