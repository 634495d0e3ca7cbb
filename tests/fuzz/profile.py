"""How many examples the fuzz tests run: ``NEXO_FUZZ_EXAMPLES`` in all, shared by weight.

The default suite runs a small profile (2 000 examples over every fuzz test, some 10 s);
``nox -s fuzz`` runs them with ``NEXO_FUZZ_EXAMPLES=130000``, some 10 minutes (the
stream's tests get 82 % of them: over 100 000 byte streams and JSON frames through framer,
parser and reducer; the rest is garbage at the MCP permission server and the gate's
socket server).
Every example run is counted (in this process: the fuzz session runs without xdist), and
the run prints the counts at its end.
"""

from __future__ import annotations

import collections
import os
from typing import Final

from hypothesis import HealthCheck, settings

TOTAL_EXAMPLES: Final = int(os.environ.get("NEXO_FUZZ_EXAMPLES", "2000"))
"""Examples over all the fuzz tests."""

WEIGHTS: Final = {
    "streams": 0.27,
    "chunkings": 0.22,
    "frames": 0.22,
    "classify": 0.11,
    "mcp": 0.13,
    "mcp_process": 0.005,
    "socket": 0.045,
}
"""Each fuzz test's share of the examples (they add up to 1): the stream's, the MCP
permission server's protocol (``mcp``) and real process (``mcp_process``: long streams
through one process, a few in the default profile), the gate's socket server."""
assert round(sum(WEIGHTS.values()), 9) == 1, WEIGHTS

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
