"""Conformance: the official ``mcp`` SDK's stdio client talks to our server, and the frames
recorded between Claude Code 2.1.332 and a permission server replay with the same answers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

import pytest
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.types import CallToolResult, TextContent

from tests.conftest import FIXTURES
from tests.gate import helpers
from tests.gate.helpers import StubOrchestrator, run_server, server_argv, text_json

RECORDINGS = sorted((FIXTURES / "mcp-permission-frames").glob("*.jsonl"))
RECORDED_TOOL = "approve"
"""The tool's name in the recordings; ours is ``permission_prompt``."""


def _decision(result: CallToolResult) -> dict[str, Any]:
    assert not result.is_error
    (block,) = result.content
    assert isinstance(block, TextContent)
    return cast(dict[str, Any], json.loads(block.text))


async def test_official_sdk_client(stub: StubOrchestrator, sock_dir: Path) -> None:
    argv = server_argv(stub.path, goal_id="sdk")
    params = StdioServerParameters(command=argv[0], args=argv[1:])
    with (sock_dir / "sdk-stderr.log").open("w") as errlog:
        async with (
            stdio_client(params, errlog=errlog) as (read, write),
            ClientSession(read, write) as session,
        ):
            init = await session.initialize()
            assert init.protocol_version == "2025-11-25"
            assert init.capabilities.tools is not None
            assert init.server_info.name == "nexo"
            await session.send_ping()
            listing = await session.list_tools()
            (tool,) = listing.tools
            assert tool.name == "permission_prompt"
            assert tool.input_schema["required"] == ["tool_name", "input"]

            arguments = {"tool_name": "Bash", "input": {"command": "ls"}, "tool_use_id": "t1"}
            allowed = await session.call_tool("permission_prompt", arguments)
            assert _decision(allowed) == {"behavior": "allow", "updatedInput": {"command": "ls"}}

            stub.script = helpers.deny("not today")
            denied = await session.call_tool("permission_prompt", arguments)
            assert _decision(denied) == {"behavior": "deny", "message": "not today"}

            # Even a tool we do not have is a deny, not an error.
            unknown = await session.call_tool("shell", {"command": "ls"})
            assert _decision(unknown)["behavior"] == "deny"
    assert [frame["goal_id"] for frame in stub.requests] == ["sdk", "sdk"]


def _recorded_script(recording: list[dict[str, Any]]) -> helpers.Script:
    """A stub that gives the decision the recording's last answer holds."""
    last = recording[-1]["msg"]["result"]["content"][0]["text"]
    decision = json.loads(last)
    if decision["behavior"] == "allow":
        return helpers.allow(decision.get("updatedInput"))
    return helpers.deny(decision["message"])


def _rename_tool(message: dict[str, Any]) -> dict[str, Any]:
    renamed: dict[str, Any] = json.loads(json.dumps(message))
    params = renamed.get("params")
    if renamed.get("method") == "tools/call" and isinstance(params, dict):
        params["name"] = {RECORDED_TOOL: "permission_prompt"}.get(params["name"], params["name"])
    return renamed


def _read_recording(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line]


@pytest.mark.parametrize("recording_path", RECORDINGS, ids=[p.stem for p in RECORDINGS])
async def test_recorded_frames_replay(
    stub: StubOrchestrator, sock_dir: Path, recording_path: Path
) -> None:
    recording = _read_recording(recording_path)
    assert recording, recording_path
    stub.script = _recorded_script(recording)
    outs = [entry["msg"] for entry in recording if entry["dir"] == "out"]
    ins = [entry["msg"] for entry in recording if entry["dir"] == "in"]
    answered = 0
    async with run_server(stub.path, sock_dir) as server:
        for message in ins:
            await server.send(_rename_tool(message))
            if "id" not in message:
                continue
            got = await server.recv()
            want = outs[answered]
            answered += 1
            assert got["jsonrpc"] == "2.0"
            assert got["id"] == want["id"] == message["id"]
            if "error" in want:
                assert got["error"]["code"] == want["error"]["code"]
                continue
            assert "error" not in got, got
            if message["method"] == "initialize":
                for key in ("protocolVersion", "capabilities"):
                    assert got["result"][key] == want["result"][key]
            elif message["method"] == "tools/list":
                (tool,) = got["result"]["tools"]
                assert len(want["result"]["tools"]) == 1
                assert tool["name"] == "permission_prompt"
                assert (
                    tool["inputSchema"]["required"]
                    == want["result"]["tools"][0]["inputSchema"]["required"]
                )
            elif message["method"] == "tools/call":
                want_text = json.loads(want["result"]["content"][0]["text"])
                assert text_json(got) == want_text
            else:  # pragma: no cover - the recordings hold nothing else
                raise AssertionError(message)
        await server.expect_silence(0.1)
        await server.close_stdin()
        assert await server.wait() == 0
    assert answered == len(outs)
    (frame,) = stub.requests
    call = next(m for m in ins if m.get("method") == "tools/call")
    assert frame["tool_name"] == call["params"]["arguments"]["tool_name"]
    assert frame["input"] == call["params"]["arguments"]["input"]
    assert frame["tool_use_id"] == call["params"]["arguments"]["tool_use_id"]


def test_recordings_exist() -> None:
    assert [p.stem for p in RECORDINGS] == ["allow", "deny", "rewrite"]
