"""One turn driven three ways against the same fake CLI (:mod:`benchmarks.fake_cli`): through
nexo-trio's ``run_turn``, through ``claude-agent-sdk``'s ``query`` (the anchor: what a user
would pick instead, run under trio as anyio allows), and the floor (a bare
``trio.lowlevel.open_process``, its stdout split on newlines and each line ``orjson``-decoded).

Each function runs one whole turn (spawn to exit) and returns how many frames the caller saw,
so a benchmark can check that every variant did the same work.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import claude_agent_sdk
import orjson
import trio
from claude_agent_sdk import ClaudeAgentOptions, ResultMessage, query

from nexo_trio.core.command import ClaudeCommand
from nexo_trio.core.outcome import Cause
from nexo_trio.engine.supervisor import run_turn

FAKE_CLI = Path(__file__).resolve().with_name("fake_cli.py")
TIMEOUT_S = 600.0


def launcher(directory: Path) -> Path:
    """An executable ``claude`` in ``directory`` that runs the fake CLI (both nexo-trio and
    the SDK want one program to exec)."""
    path = directory / "claude"
    path.write_text(f'#!/bin/sh\nexec {sys.executable} -S {FAKE_CLI} "$@"\n')
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def _env(frames: Path) -> dict[str, str]:
    return {"NEXO_BENCH_FRAMES": str(frames)}


async def nexo_turn(binary: Path, frames: Path) -> int:
    """One turn through :func:`nexo_trio.engine.supervisor.run_turn`; frames seen."""
    command = ClaudeCommand(prompt="Benchmark.", binary=str(binary), env=_env(frames))
    result = await run_turn(command, timeout=TIMEOUT_S)
    assert result.outcome.cause is Cause.COMPLETED, result.outcome
    return result.outcome.events


async def sdk_turn(binary: Path, frames: Path) -> int:
    """One turn through ``claude_agent_sdk.query``; messages seen."""
    options = ClaudeAgentOptions(cli_path=str(binary), env=_env(frames))
    count = 0
    saw_result = False
    async for message in query(prompt="Benchmark.", options=options):
        count += 1
        saw_result = saw_result or isinstance(message, ResultMessage)
    assert saw_result, "the SDK saw no result"
    return count


async def floor_turn(binary: Path, frames: Path) -> int:
    """One turn as bare as it gets: spawn, read, split, decode, wait; frames seen."""
    process = await trio.lowlevel.open_process(
        [str(binary), "-p", "Benchmark.", "--output-format", "stream-json"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        env={**os.environ, **_env(frames)},
    )
    assert process.stdout is not None
    count = 0
    pending = b""
    try:
        while chunk := await process.stdout.receive_some(1 << 16):
            lines = (pending + chunk).split(b"\n")
            pending = lines.pop()
            for line in lines:
                if line:
                    orjson.loads(line)
                    count += 1
    finally:
        await process.stdout.aclose()
        await process.wait()
    return count


def sdk_version() -> str:
    """The installed claude-agent-sdk's version."""
    return str(claude_agent_sdk.__version__)
