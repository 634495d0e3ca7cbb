"""The fake claude with a permission prompt tool, against the real MCP server and the stub
orchestrator: it asks like Claude Code asks, and does what Claude Code does with the answer.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import trio

from nexo_trio.testing.scenario import (
    FakeClaude,
    bash,
    init,
    result,
    stdio_server,
    text,
    tool_result,
    tool_use,
    turn,
    write_mcp_config,
)
from tests.gate import helpers
from tests.gate.helpers import StubOrchestrator, server_argv

PROMPT_TOOL = "mcp__nexo__permission_prompt"
WRITE = "echo hello-from-fake > fake_out.txt"


def _fake(tmp_path: Path, *steps: dict[str, Any]) -> FakeClaude:
    return FakeClaude.create(
        tmp_path / "fake",
        [turn(init(), *steps, text("Done."), result("Done."))],
        max_lifetime=20,
    )


def _config(tmp_path: Path, argv: Sequence[str], *, timeout_ms: int = 10_000) -> Path:
    return write_mcp_config(
        tmp_path / "mcp.json", {"nexo": stdio_server(argv, timeout_ms=timeout_ms)}
    )


def _workspace(tmp_path: Path) -> Path:
    workspace = tmp_path / "workspace"
    workspace.mkdir(exist_ok=True)
    return workspace


async def _play(
    fake: FakeClaude,
    config: Path,
    workspace: Path,
    *,
    allowed_tools: Sequence[str] = (),
) -> tuple[int, list[dict[str, Any]], str]:
    """Run one turn of the fake; (exit code, frames, stderr)."""
    command = fake.command(
        "Write the file",
        cwd=workspace,
        mcp_config=config,
        permission_prompt_tool=PROMPT_TOOL,
        allowed_tools=allowed_tools,
    )
    with trio.fail_after(30):
        done = await trio.run_process(
            command.argv(),
            cwd=workspace,
            env=command.child_env(os.environ),
            stdin=b"",
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    frames = [json.loads(line) for line in done.stdout.decode().splitlines() if line]
    return done.returncode, frames, done.stderr.decode()


def _frames(frames: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [f for f in frames if f["type"] == kind]


def _tool_results(frames: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [f["message"]["content"][0] for f in _frames(frames, "user")]


async def test_allow_runs_the_command(stub: StubOrchestrator, tmp_path: Path) -> None:
    workspace = _workspace(tmp_path)
    fake = _fake(tmp_path, bash(WRITE))
    config = _config(tmp_path, server_argv(stub.path, goal_id="g-allow"))
    code, frames, _ = await _play(fake, config, workspace)
    assert code == 0
    (init_frame,) = _frames(frames, "system")
    assert init_frame["mcp_servers"] == [{"name": "nexo", "status": "connected"}]
    assert (workspace / "fake_out.txt").read_text() == "hello-from-fake\n"
    (outcome,) = _tool_results(frames)
    assert outcome["is_error"] is False
    assert _frames(frames, "result")[0]["permission_denials"] == []
    (request,) = stub.requests
    assert request["goal_id"] == "g-allow"
    assert request["tool_name"] == "Bash"
    assert request["input"] == {"command": WRITE}
    assert request["tool_use_id"] == "toolu_fake0001"
    (entry,) = fake.permission_log()
    assert entry["tool"] == "Bash"
    assert entry["outcome"] == "allow"
    assert entry["answer"] == {"command": WRITE}


async def test_allow_with_updated_input_runs_the_new_command(
    stub: StubOrchestrator, tmp_path: Path
) -> None:
    stub.script = helpers.allow({"command": "echo rewritten > fake_out.txt"})
    workspace = _workspace(tmp_path)
    fake = _fake(tmp_path, bash(WRITE))
    code, _, _ = await _play(fake, _config(tmp_path, server_argv(stub.path)), workspace)
    assert code == 0
    assert (workspace / "fake_out.txt").read_text() == "rewritten\n"


async def test_deny_leaves_the_workspace_alone(stub: StubOrchestrator, tmp_path: Path) -> None:
    stub.script = helpers.deny("Denied by test decider")
    workspace = _workspace(tmp_path)
    fake = _fake(tmp_path, bash(WRITE))
    code, frames, _ = await _play(fake, _config(tmp_path, server_argv(stub.path)), workspace)
    assert code == 0
    assert list(workspace.iterdir()) == []
    (outcome,) = _tool_results(frames)
    assert outcome == {
        "tool_use_id": "toolu_fake0001",
        "type": "tool_result",
        "content": "Denied by test decider",
        "is_error": True,
    }
    (final,) = _frames(frames, "result")
    assert final["permission_denials"] == [
        {"tool_name": "Bash", "tool_use_id": "toolu_fake0001", "tool_input": {"command": WRITE}}
    ]
    (entry,) = fake.permission_log()
    assert (entry["outcome"], entry["answer"]) == ("deny", "Denied by test decider")


async def test_denied_tool_use_skips_the_scripted_result(
    stub: StubOrchestrator, tmp_path: Path
) -> None:
    stub.script = helpers.deny("no writes")
    workspace = _workspace(tmp_path)
    write = {"file_path": "x.txt", "content": "x"}
    fake = _fake(tmp_path, tool_use("Write", write), tool_result("File written"))
    code, frames, _ = await _play(fake, _config(tmp_path, server_argv(stub.path)), workspace)
    assert code == 0
    (outcome,) = _tool_results(frames)
    assert (outcome["content"], outcome["is_error"]) == ("no writes", True)
    denials = _frames(frames, "result")[0]["permission_denials"]
    assert denials == [{"tool_name": "Write", "tool_use_id": "toolu_fake0001", "tool_input": write}]


async def test_allowed_and_read_only_tools_are_not_asked(
    stub: StubOrchestrator, tmp_path: Path
) -> None:
    stub.script = helpers.deny("must not be asked")
    workspace = _workspace(tmp_path)
    fake = _fake(
        tmp_path,
        bash(WRITE),
        tool_use("Read", {"file_path": "fake_out.txt"}),
        tool_result("hello-from-fake"),
    )
    config = _config(tmp_path, server_argv(stub.path))
    code, frames, _ = await _play(fake, config, workspace, allowed_tools=["Read", "Bash(echo:*)"])
    assert code == 0
    assert (workspace / "fake_out.txt").exists()
    assert [r["is_error"] for r in _tool_results(frames)] == [False, False]
    assert stub.requests == []
    assert fake.permission_log() == []


async def test_server_command_missing_fails_at_init(tmp_path: Path) -> None:
    workspace = _workspace(tmp_path)
    fake = _fake(tmp_path, bash(WRITE))
    config = _config(tmp_path, [str(tmp_path / "no-such-server"), "--socket", "x"])
    code, frames, stderr = await _play(fake, config, workspace)
    (init_frame,) = _frames(frames, "system")
    assert init_frame["mcp_servers"] == [{"name": "nexo", "status": "failed"}]
    assert "no-such-server" in stderr
    # The tool call fails (without counting as a denial) and nothing runs.
    (outcome,) = _tool_results(frames)
    assert outcome["is_error"] is True
    assert "<tool_use_error>" in outcome["content"]
    assert list(workspace.iterdir()) == []
    assert _frames(frames, "result")[0]["permission_denials"] == []
    assert code == 0


async def test_unknown_protocol_version_fails_at_init(tmp_path: Path) -> None:
    server = tmp_path / "old_server.py"
    server.write_text(
        "import json, sys\n"
        "for line in sys.stdin:\n"
        "    msg = json.loads(line)\n"
        "    if 'id' not in msg:\n"
        "        continue\n"
        "    if msg['method'] == 'initialize':\n"
        "        out = {'result': {'protocolVersion': '1999-01-01', 'capabilities': {},\n"
        "                          'serverInfo': {'name': 'old', 'version': '0'}}}\n"
        "    else:\n"
        "        out = {'error': {'code': -32601, 'message': 'no'}}\n"
        "    out.update(jsonrpc='2.0', id=msg['id'])\n"
        "    print(json.dumps(out), flush=True)\n"
    )
    fake = _fake(tmp_path)
    code, frames, _ = await _play(
        fake, _config(tmp_path, [sys.executable, str(server)]), _workspace(tmp_path)
    )
    assert code == 0
    assert _frames(frames, "system")[0]["mcp_servers"] == [{"name": "nexo", "status": "failed"}]


async def test_silent_server_fails_at_init_after_its_timeout(tmp_path: Path) -> None:
    fake = _fake(tmp_path)
    config = _config(
        tmp_path, [sys.executable, "-c", "import time; time.sleep(30)"], timeout_ms=300
    )
    code, frames, _ = await _play(fake, config, _workspace(tmp_path))
    assert code == 0
    assert _frames(frames, "system")[0]["mcp_servers"] == [{"name": "nexo", "status": "failed"}]


async def test_call_timeout_is_an_error_not_a_denial(
    stub: StubOrchestrator, tmp_path: Path
) -> None:
    # A server deadline longer than the CLI's tool timeout: what the orchestrator must
    # never configure. The CLI then fails the call without recording a denial.
    stub.script = helpers.never
    workspace = _workspace(tmp_path)
    fake = _fake(tmp_path, bash(WRITE))
    config = _config(tmp_path, server_argv(stub.path, deadline=20), timeout_ms=500)
    code, frames, _ = await _play(fake, config, workspace)
    assert code == 0
    (outcome,) = _tool_results(frames)
    assert outcome["is_error"] is True
    assert "no answer to tools/call" in outcome["content"]
    assert _frames(frames, "result")[0]["permission_denials"] == []
    assert list(workspace.iterdir()) == []
    (entry,) = fake.permission_log()
    assert entry["outcome"] == "error"


async def test_sigterm_stops_the_server(stub: StubOrchestrator, tmp_path: Path) -> None:
    stub.script = helpers.never
    workspace = _workspace(tmp_path)
    fake = _fake(tmp_path, bash(WRITE))
    config = _config(tmp_path, server_argv(stub.path, deadline=20), timeout_ms=20_000)
    command = fake.command(
        "Write", cwd=workspace, mcp_config=config, permission_prompt_tool=PROMPT_TOOL
    )
    process = await trio.lowlevel.open_process(
        command.argv(),
        cwd=workspace,
        env=command.child_env(os.environ),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
    )
    try:
        with trio.fail_after(10):
            await stub.wait_for_requests()
        process.send_signal(signal.SIGTERM)
        with trio.fail_after(10):
            assert await process.wait() == 143
    finally:
        with trio.CancelScope(shield=True):
            if process.returncode is None:
                process.kill()
            await process.wait()
    # The process-leak guard checks that the MCP server is gone too.


async def test_scenario_status_overrides_and_skips_the_server(
    stub: StubOrchestrator, tmp_path: Path
) -> None:
    workspace = _workspace(tmp_path)
    fake = FakeClaude.create(
        tmp_path / "fake",
        [turn(init({"nexo": "failed"}), bash(WRITE), result("Done."))],
        max_lifetime=20,
    )
    code, frames, _ = await _play(fake, _config(tmp_path, server_argv(stub.path)), workspace)
    assert code == 0
    assert _frames(frames, "system")[0]["mcp_servers"] == [{"name": "nexo", "status": "failed"}]
    (outcome,) = _tool_results(frames)
    assert outcome["is_error"] is True
    assert "was not started" in outcome["content"]
    assert stub.connections == 0
    assert list(workspace.iterdir()) == []
