"""Fixtures of the CLI tests: a working directory of their own, and no process left behind."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

LEFTOVER_GRACE = 3.0


def _processes_of(root: Path, before: set[int]) -> list[psutil.Process]:
    """Live processes a test started: new descendants of this process, and any process whose
    command line or working directory is under the test's ``root`` (the fake claude runs in
    a workspace there, and so do its children, e.g. the permission gate's MCP server)."""
    me = psutil.Process()
    found = {p.pid: p for p in me.children(recursive=True) if p.pid not in before}
    text = str(root)
    for proc in psutil.process_iter(["cmdline", "cwd"]):
        if proc.pid == me.pid:  # this test chdir-ed there itself
            continue
        if any(text in arg for arg in proc.info["cmdline"] or ()) or (
            proc.info["cwd"] or ""
        ).startswith(text):
            found.setdefault(proc.pid, proc)
    alive = []
    for proc in found.values():
        try:
            if proc.status() != psutil.STATUS_ZOMBIE:
                alive.append(proc)
        except psutil.NoSuchProcess:
            continue
    return alive


@pytest.fixture(autouse=True)
def _own_cwd_and_no_leftovers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Run each test from a directory of its own (nothing may land in the repository), and
    fail it if any process started for it (all of them name its tmp_path) outlives it."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    yield
    deadline = time.monotonic() + LEFTOVER_GRACE
    while (leftovers := _processes_of(tmp_path, before)) and time.monotonic() < deadline:
        time.sleep(0.05)
    described = []
    for proc in leftovers:
        with contextlib.suppress(psutil.NoSuchProcess):
            described.append((proc.pid, proc.cmdline()))
            proc.kill()
    assert not described, f"processes left behind: {described}"
