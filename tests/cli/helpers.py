"""Building blocks of the CLI tests: a fake claude, goal and config files, and runners."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs
import yaml
from click.testing import CliRunner, Result

from nexo_trio.cli import main
from nexo_trio.testing.scenario import FakeClaude, Turn

NEXO_TRIO = Path(sys.executable).parent / "nexo-trio"

GOAL_OUTCOME_KEYS = {
    "goal_id",
    "outcome",
    "total_turns",
    "usage",
    "final_text",
    "acceptance",
    "decisions",
    "session_id",
    "elapsed_s",
}
USAGE_KEYS = {
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
    "cost_usd",
    "wall_time_s",
}
OUTCOME_KINDS = {"done", "budget_exhausted", "escalated", "cancelled"}


def write_yaml(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@attrs.frozen
class Setup:
    """A fake claude with its scenario, a config file pointing at it, and a state dir."""

    root: Path
    fake: FakeClaude
    config: Path
    state_dir: Path

    def goal(
        self,
        name: str = "goal.yaml",
        *,
        goal_id: str | None = "g1",
        description: str = "Create hello.txt containing the word hi.",
        acceptance: Sequence[dict[str, Any]] | None = None,
        budget: dict[str, Any] | None = None,
        workspace: str | None = None,
    ) -> Path:
        """Write a goal file under ``root/goals`` (its workspace defaults to ``./ws``)."""
        data: dict[str, Any] = {}
        if goal_id is not None:
            data["id"] = goal_id
        data["description"] = description
        data["acceptance"] = list(
            acceptance
            if acceptance is not None
            else [{"kind": "file_match", "path": "hello.txt", "pattern": "^hi$"}]
        )
        data["budget"] = budget or {"max_turns": 4, "max_wall_time": "60s"}
        data["workspace"] = workspace or f"./ws-{goal_id or 'anon'}"
        if workspace is None:  # a workspace the goal names must exist
            (self.root / "goals" / data["workspace"]).mkdir(parents=True, exist_ok=True)
        return write_yaml(self.root / "goals" / name, data)


SIGNAL_STOPS = {"permission": {"transport": "mcp"}}
"""A config whose turns are stopped by signals (SIGTERM, kill_grace, SIGKILL): the MCP
transport. On the default stdio transport a stop is an ``interrupt`` first, which the fake
honours at once; tests of what a CLI does with (or despite) SIGTERM use this."""


def make_setup(
    root: Path,
    turns: Sequence[Turn],
    *,
    max_lifetime: float = 30.0,
    binary: str | None = None,
    config: dict[str, Any] | None = None,
) -> Setup:
    """A fake claude playing ``turns``; the config runs it (or ``binary`` with its env)."""
    fake = FakeClaude.create(root / "fake", turns, max_lifetime=max_lifetime)
    state_dir = root / "state"
    data: dict[str, Any] = {
        "claude": {"binary": binary or str(fake.binary), "env": fake.env},
        "turn_timeout": "30s",
        "kill_grace": "2s",
        "state_dir": str(state_dir),
        "workspace_root": str(root / "workspaces"),
        # Unconfined: the tests watch the pids the fake records (see tests/orchestrator).
        "sandbox": {"mode": "none"},
        **(config or {}),
    }
    return Setup(root, fake, write_yaml(root / "config.yaml", data), state_dir)


def invoke(*args: str | Path) -> Result:
    """Run ``nexo-trio ARGS`` in-process; stdout and stderr are kept apart."""
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=True)


def run_process(*args: str | Path, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run the real ``nexo-trio`` console script."""
    return subprocess.run(
        [str(NEXO_TRIO), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def single_json(stdout: str) -> dict[str, Any]:
    """The one JSON object ``--json`` prints (and nothing else on stdout)."""
    lines = stdout.splitlines()
    assert len(lines) == 1, stdout
    data: dict[str, Any] = json.loads(lines[0])
    assert isinstance(data, dict)
    return data


def json_lines(stdout: str) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in stdout.splitlines()]
    assert all(isinstance(row, dict) for row in rows)
    return rows


def assert_goal_outcome_shape(data: dict[str, Any]) -> None:
    """The DESIGN.md §3 GoalOutcome object, exactly."""
    assert set(data) == GOAL_OUTCOME_KEYS
    assert isinstance(data["goal_id"], str)
    assert data["outcome"]["kind"] in OUTCOME_KINDS
    assert set(data["outcome"]) <= {"kind", "reason", "axis"}
    assert isinstance(data["total_turns"], int)
    assert set(data["usage"]) == USAGE_KEYS
    assert set(data["decisions"]) == {"allowed", "denied"}
    assert isinstance(data["elapsed_s"], float)


@contextlib.contextmanager
def goal_lock_held(state_dir: Path, goal_id: str) -> Iterator[subprocess.Popen[bytes]]:
    """Another process holding the goal's lock (how a goal running elsewhere looks), until
    the block ends; its pid is the process's."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; "
            "from nexo_trio.orchestrator.goal_lock import try_acquire; "
            "lock = try_acquire(Path(sys.argv[1]), sys.argv[2]); print('held', flush=True); "
            "time.sleep(60)",
            str(state_dir),
            goal_id,
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == b"held\n"
        yield holder
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()
