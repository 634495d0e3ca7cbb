"""Workspaces on git with the real CLI (offline, scripted API): a two-turn goal in worktree
mode whose turn 1 commits on the goal's branch from inside its sandbox, then ``nexo-trio
diff --turn 1`` and ``nexo-trio rollback --turn 2`` on what it left; the user's checkout
stays byte for byte as it was."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import trio
import yaml

from nexo_trio.core.prompt import FAILURES_HEADER
from nexo_trio.testing.messages_api import (
    Reply,
    last_message_has_tool_result,
    nth,
    prompt_contains,
    text,
    tool_use,
)
from tests.e2e.conftest import E2E, MARKER_VAR
from tests.git_repos import checkout_snapshot, git

pytestmark = pytest.mark.real_claude

NEXO_TRIO = Path(sys.executable).parent / "nexo-trio"


async def nexo(e2e: E2E, *args: str | Path) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, MARKER_VAR: e2e.marker}
    with trio.fail_after(90):
        return await trio.run_process(
            [str(NEXO_TRIO), *map(str, args)],
            cwd=e2e.root,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )


async def test_a_worktree_goal_then_diff_and_rollback_on_the_real_cli(e2e: E2E) -> None:
    repo = e2e.root / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "gone.txt").write_text("turn 2 deletes me\n")
    (repo / "notes.txt").write_text("notes\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "base")
    (repo / "notes.txt").write_text("notes\nthe user's uncommitted edit\n")
    (repo / "mine.txt").write_text("untracked, the user's\n")
    before = checkout_snapshot(repo)

    commit = "git -c user.name=c -c user.email=c@example.com"
    turn_1 = f"echo one > a.txt && {commit} add a.txt && {commit} commit -q -m 'turn 1'"
    turn_2 = "echo two > b.txt && rm gone.txt && echo more >> a.txt"
    e2e.api.add(
        Reply(nth(0), tool_use("Bash", {"command": turn_1})),
        Reply(nth(1) & last_message_has_tool_result(), text("Wrote a.txt. Done.")),
        Reply(nth(2) & prompt_contains(FAILURES_HEADER), tool_use("Bash", {"command": turn_2})),
        Reply(nth(3) & last_message_has_tool_result(), text("Wrote b.txt. Done.")),
    )
    goal_file = e2e.root / "goals" / "goal.yaml"
    goal_file.parent.mkdir()
    goal_file.write_text(
        yaml.safe_dump(
            {
                "id": "wt",
                "description": "Create a.txt, then b.txt containing two.",
                "acceptance": [{"kind": "file_match", "path": "b.txt", "pattern": "^two$"}],
                "budget": {"max_turns": 3, "max_wall_time": "120s"},
                "workspace": {"repo": "../repo"},
            }
        )
    )
    config = e2e.root / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "claude": {"binary": str(e2e.claude_bin), "env": e2e.claude_env()},
                "turn_timeout": "45s",
                "kill_grace": "3s",
                "state_dir": str(e2e.state_dir),
                "workspace_root": str(e2e.root / "workspaces"),
                "sandbox": {"mode": "auto"},
            }
        )
    )
    run = await nexo(e2e, "run", goal_file, "--config", config, "--json")
    assert run.returncode == 0, run.stderr.decode()
    worktree = e2e.root / "workspaces" / "wt"
    assert (worktree / "b.txt").read_text() == "two\n"
    # Claude's own commit is on the goal's branch, made from inside its turn.
    assert git(worktree, "log", "-1", "--format=%s", "nexo/wt").strip() == "turn 1"
    assert checkout_snapshot(repo) == before  # the user's checkout, byte for byte

    shown = await nexo(e2e, "diff", "wt", "--turn", "1", "--state-dir", e2e.state_dir)
    assert shown.returncode == 0, shown.stderr.decode()
    out = shown.stdout.decode()
    assert "+++ b/a.txt" in out
    assert "+one" in out
    assert "b.txt" not in out
    assert "gone.txt" not in out

    back = await nexo(e2e, "rollback", "wt", "--turn", "2", "--state-dir", e2e.state_dir)
    assert back.returncode == 0, back.stderr.decode()
    # Exactly turn 1's files.
    assert (worktree / "a.txt").read_text() == "one\n"
    assert not (worktree / "b.txt").exists()
    assert (worktree / "gone.txt").read_text() == "turn 2 deletes me\n"
    assert git(worktree, "status", "--porcelain") == ""  # as turn 1 left it: committed
    assert checkout_snapshot(repo) == before
    events = await nexo(e2e, "events", "wt", "--state-dir", e2e.state_dir, "--json")
    rows = [json.loads(line) for line in events.stdout.splitlines()]
    assert [r["data"]["turn"] for r in rows if r["kind"] == "rolled_back"] == [2]
    started = next(r["data"] for r in rows if r["kind"] == "goal_started")
    assert started["git"]["kind"] == "worktree"
    if shutil.which("bwrap"):
        assert started["confined"], started["warnings"]  # the commit was made in the sandbox
