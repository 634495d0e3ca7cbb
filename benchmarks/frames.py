"""Realistic stream-json frames, the same for every variant of the stream benchmarks.

A turn as the real CLI writes it (tests/fixtures/claude-cli-2.1.332/stream-json): its init
frame, then a cycle of status frames, partial-message stream events, assistant text and tool
calls with usage, and tool results, ending in a result frame.
"""

from __future__ import annotations

from pathlib import Path

import orjson

SESSION = "11111111-2222-4333-8444-555555555555"
INIT_FIXTURE = (
    Path(__file__).resolve().parent.parent
    / "tests/fixtures/claude-cli-2.1.332/stream-json/sess2.ndjson"
)


def _fixture_line(index: int) -> dict[str, object]:
    lines = [line for line in INIT_FIXTURE.read_bytes().split(b"\n") if line.strip()]
    frame: dict[str, object] = orjson.loads(lines[index])
    return frame


def result_frame() -> bytes:
    """The real CLI's result frame (from the recorded fixture)."""
    frame = _fixture_line(-1)
    assert frame["type"] == "result", frame["type"]
    frame["session_id"] = SESSION
    return orjson.dumps(frame)


def init_frame() -> bytes:
    """The real CLI's init frame (from the recorded fixture), with no MCP servers."""
    frame = _fixture_line(0)
    frame["mcp_servers"] = []
    frame["session_id"] = SESSION
    return orjson.dumps(frame)


def frames(n: int) -> list[bytes]:
    """``n`` frames, each one encoded line without its newline: the init frame, the cycle,
    and a result frame last."""
    usage = {
        "input_tokens": 120,
        "output_tokens": 12,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 4000,
    }
    cycle: list[dict[str, object]] = [
        {"type": "system", "subtype": "status", "status": "requesting", "session_id": SESSION},
        {
            "type": "stream_event",
            "event": {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": "Working on it, step by step."},
            },
            "session_id": SESSION,
            "parent_tool_use_id": None,
        },
        {
            "type": "assistant",
            "message": {
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "model": "claude-sonnet-4-5",
                "content": [{"type": "text", "text": "I will list the files first. " * 4}],
                "stop_reason": None,
                "usage": usage,
            },
            "parent_tool_use_id": None,
            "session_id": SESSION,
        },
        {
            "type": "assistant",
            "message": {
                "id": "msg_2",
                "type": "message",
                "role": "assistant",
                "model": "claude-sonnet-4-5",
                "content": [
                    {
                        "type": "tool_use",
                        "id": "toolu_1",
                        "name": "Bash",
                        "input": {"command": "ls -la src/", "description": "List files"},
                    }
                ],
                "stop_reason": None,
                "usage": usage,
            },
            "parent_tool_use_id": None,
            "session_id": SESSION,
        },
        {
            "type": "user",
            "message": {
                "role": "user",
                "content": [
                    {
                        "tool_use_id": "toolu_1",
                        "type": "tool_result",
                        "content": "total 8\n-rw-r--r-- 1 dev dev 120 main.py\n" * 3,
                        "is_error": False,
                    }
                ],
            },
            "parent_tool_use_id": None,
            "session_id": SESSION,
        },
    ]
    for number, frame in enumerate(cycle):
        # As the real CLI writes them: every frame has its own uuid.
        frame["uuid"] = f"00000000-0000-4000-8000-{number:012d}"
    lines = [init_frame()]
    lines += [orjson.dumps(cycle[i % len(cycle)]) for i in range(n - 2)]
    lines.append(result_frame())
    return lines


def write_stream(path: Path, n: int) -> int:
    """Write ``n`` frames to ``path`` as the CLI would (one per line); its size in bytes."""
    data = b"\n".join(frames(n)) + b"\n"
    path.write_bytes(data)
    return len(data)
