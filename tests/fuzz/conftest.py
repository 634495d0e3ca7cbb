"""The fuzz tests' summary: how many examples each share ran (see ``profile``)."""

from __future__ import annotations

import pytest

from tests.fuzz.profile import RUN, TOTAL_EXAMPLES


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not RUN:  # none ran here (or they ran in xdist workers)
        return
    shares = ", ".join(f"{share} {n:,}" for share, n in sorted(RUN.items()))
    terminalreporter.write_line(
        f"fuzz: {sum(RUN.values()):,} examples run (profile {TOTAL_EXAMPLES:,}): {shares}"
    )
