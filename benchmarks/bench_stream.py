"""Events per second through framer + parser + reducer, beside an orjson-only floor.

The stream is generated: a realistic mix of stream-json frames (partial-message stream
events, assistant text and tool calls, tool results, status frames) ending in a result
frame, cut into 64 KiB chunks as a pipe would deliver them.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import orjson

from nexo_trio.core.turn import INITIAL_STATE, classify, reduce
from nexo_trio.wire.stream_json import StreamDecoder

SESSION = "11111111-2222-4333-8444-555555555555"
CHUNK = 64 * 1024


def _frames(n: int) -> list[bytes]:
    usage = {
        "input_tokens": 120,
        "output_tokens": 12,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 4000,
    }
    cycle = [
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
    lines = [orjson.dumps(cycle[i % len(cycle)]) for i in range(n - 1)]
    lines.append(
        orjson.dumps(
            {
                "type": "result",
                "subtype": "success",
                "is_error": False,
                "result": "Done.",
                "session_id": SESSION,
                "usage": usage,
                "total_cost_usd": 0.5,
                "model_usage_since_last_result": {
                    "claude-sonnet-4-5": {"inputTokens": 1, "outputTokens": 1, "costUSD": 0.1}
                },
                "num_turns": 3,
                "permission_denials": [],
            }
        )
    )
    return lines


def _chunks(lines: list[bytes]) -> list[bytes]:
    stream = b"\n".join(lines) + b"\n"
    return [stream[i : i + CHUNK] for i in range(0, len(stream), CHUNK)]


def _best_of(runs: int, fn: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def run(n_lines: int = 100_000, runs: int = 5) -> list[tuple[str, float, str]]:
    """Measure; return rows of (name, events per second, note)."""
    lines = _frames(n_lines)
    chunks = _chunks(lines)

    def floor() -> None:
        # The floor: split the same chunks on newlines and orjson-decode each line.
        buf = b"".join(chunks)
        for line in buf.split(b"\n"):
            if line:
                orjson.loads(line)

    def ours() -> None:
        decoder = StreamDecoder()
        state = INITIAL_STATE
        for chunk in chunks:
            for event in decoder.feed(chunk):
                state = reduce(state, event)
        for event in decoder.close():
            state = reduce(state, event)
        outcome = classify(state)
        assert outcome.events == n_lines, outcome.events

    floor_s = _best_of(runs, floor)
    ours_s = _best_of(runs, ours)
    return [
        ("orjson only (floor)", n_lines / floor_s, f"{floor_s / n_lines * 1e6:.2f} µs/line"),
        (
            "framer + parser + reducer",
            n_lines / ours_s,
            f"{ours_s / n_lines * 1e6:.2f} µs/line, {ours_s / floor_s:.1f}x the floor",
        ),
    ]
