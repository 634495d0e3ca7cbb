"""How many examples the fuzz tests run: ``NEXO_FUZZ_EXAMPLES`` in all, shared by weight.

The default suite runs a small profile (2 000 examples over every fuzz test, a few seconds);
``nox -s fuzz`` runs them with ``NEXO_FUZZ_EXAMPLES=150000`` (the stream's tests get three
quarters of them: over 100 000 byte streams and JSON frames through framer, parser and
reducer). Every example run is counted, and the fuzz run prints the counts at its end.
"""

from __future__ import annotations

import collections
import os
from typing import Final

from hypothesis import HealthCheck, settings

TOTAL_EXAMPLES: Final = int(os.environ.get("NEXO_FUZZ_EXAMPLES", "2000"))
"""Examples over all the fuzz tests."""

WEIGHTS: Final = {
    "streams": 0.25,
    "chunkings": 0.20,
    "frames": 0.20,
    "classify": 0.10,
    "mcp": 0.20,
    "socket": 0.05,
}
"""Each fuzz test's share of the examples (they add up to 1)."""

RUN: Final[collections.Counter[str]] = collections.Counter()
"""Examples run so far, by share (read by the fuzz conftest's summary)."""


def examples(share: str) -> settings:
    """The hypothesis settings of the fuzz test that has ``share`` of the examples."""
    return settings(
        max_examples=max(1, round(TOTAL_EXAMPLES * WEIGHTS[share])),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


def count(share: str) -> None:
    """Count one example of ``share`` (call it first thing in the test body)."""
    RUN[share] += 1
