"""Shared fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures" / "claude-cli-2.1.332"


@pytest.fixture
def fixtures_dir() -> Path:
    """Recordings of the real CLI's output."""
    return FIXTURES
