"""What the ledger keeps of a turn besides its outcome: Claude's texts and its tool calls.

:func:`transcribe` turns one batch of the engine's events (the frames of one read of the
CLI's stdout) into ledger events:

* :class:`~nexo_trio.core.goal_events.AssistantText` for each text block of an assistant
  message (every one, not only the last);
* :class:`~nexo_trio.core.goal_events.ToolCalled` for each tool call, once its result came
  back: the result's size in bytes and whether it was an error. A call whose result never
  came (the turn was stopped during it) is recorded without one when the turn's stdout
  ends.

A call's input keeps its structure, with the values of secret-looking keys (``api_key``,
``password``) redacted and nesting deeper than :data:`INPUT_DEPTH` flattened to a note; the
orchestrator redacts and caps every text of every event as it records it
(:mod:`nexo_trio.core.kept_text`). Whole, the turn is in its raw stdout copy, whose end
says when it was cut at its cap (:func:`truncation_line`).

Pure: the state between batches is the calls waiting for their result. A batch costs a
type check per event; only texts, tool uses and tool results do more.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Final

import attrs

from nexo_trio.core.events import (
    AssistantMessage,
    Cancelled,
    DeadlineHit,
    Event,
    SpawnFailed,
    StderrTail,
    StdoutClosed,
    TextBlock,
    ToolResultBlock,
    ToolUseBlock,
    UserMessage,
)
from nexo_trio.core.goal_events import AssistantText, GoalEvent, ToolCalled
from nexo_trio.core.redact import REDACTED, is_secret_name

INPUT_DEPTH: Final = 16
"""How deep a tool call's input is kept (deeper values become a note: the raw stream has
them)."""
UNKNOWN_TOOL: Final = "(unknown)"
"""The name of a call whose result came without its tool use having been seen."""
TRUNCATED_FRAME: Final = "nexo_stream_truncated"
"""The ``type`` of the line that ends a raw stream copy cut at its cap."""
STOPPED_FRAME: Final = "nexo_turn_stopped"
"""The ``type`` of the line a raw stream copy has where the engine began stopping the turn
(its deadline, or a cancel): the stream alone does not say so, and ``replay`` must read
the CLI's answer to our stop as the live run did."""


@attrs.frozen
class Transcribing:
    """Where a turn's record is: the calls that wait for their result."""

    goal_id: str
    turn: int
    pending: tuple[ToolCalled, ...] = ()
    ended: bool = False
    """The turn's stdout ended: every call is recorded, nothing more comes."""


def transcribe(
    state: Transcribing, batch: Sequence[Event]
) -> tuple[Transcribing, tuple[GoalEvent, ...]]:
    """The record of one batch: the new state and the events to record, in order."""
    if state.ended:
        return state, ()
    found: list[GoalEvent] = []
    pending = state.pending
    for event in batch:
        if isinstance(event, AssistantMessage):
            pending = _assistant(state, event, pending, found)
        elif isinstance(event, UserMessage):
            pending = _results(state, event, pending, found)
        elif isinstance(event, StdoutClosed | SpawnFailed | StderrTail):
            # Nothing more can come: the calls still open never got a result.
            found.extend(pending)
            return Transcribing(state.goal_id, state.turn, ended=True), tuple(found)
    if pending is not state.pending:
        state = attrs.evolve(state, pending=pending)
    return state, tuple(found)


def _assistant(
    state: Transcribing,
    message: AssistantMessage,
    pending: tuple[ToolCalled, ...],
    found: list[GoalEvent],
) -> tuple[ToolCalled, ...]:
    parent = message.parent_tool_use_id
    for block in message.content:
        if isinstance(block, TextBlock):
            if block.text:
                found.append(AssistantText(state.goal_id, state.turn, block.text, parent))
        elif isinstance(block, ToolUseBlock):
            if block.id and any(call.tool_use_id == block.id for call in pending):
                continue  # the same tool use shown again
            call = ToolCalled(
                state.goal_id,
                state.turn,
                block.id,
                block.name,
                kept_input(block.input),
                parent_tool_use_id=parent,
            )
            pending = (*pending, call)
    return pending


def _results(
    state: Transcribing,
    message: UserMessage,
    pending: tuple[ToolCalled, ...],
    found: list[GoalEvent],
) -> tuple[ToolCalled, ...]:
    for block in message.content:
        if not isinstance(block, ToolResultBlock):
            continue
        size = result_bytes(block.content)
        for index, call in enumerate(pending):
            if call.tool_use_id == block.tool_use_id:
                pending = pending[:index] + pending[index + 1 :]
                found.append(attrs.evolve(call, result_bytes=size, is_error=block.is_error))
                break
        else:
            found.append(
                ToolCalled(
                    state.goal_id,
                    state.turn,
                    block.tool_use_id,
                    UNKNOWN_TOOL,
                    result_bytes=size,
                    is_error=block.is_error,
                    parent_tool_use_id=message.parent_tool_use_id,
                )
            )
    return pending


def kept_input(value: dict[str, Any]) -> dict[str, Any]:
    """A tool call's input as the ledger keeps it: the values of secret-looking keys
    redacted, nesting bounded (see :data:`INPUT_DEPTH`)."""
    kept = _kept(value, INPUT_DEPTH)
    return kept if isinstance(kept, dict) else {}


def _kept(value: Any, depth: int) -> Any:
    if isinstance(value, dict):
        if depth <= 0:
            return f"[{len(value)} keys nested too deep to keep]"
        return {
            str(key): (
                REDACTED
                if isinstance(item, str) and is_secret_name(str(key))
                else _kept(item, depth - 1)
            )
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        if depth <= 0:
            return f"[{len(value)} items nested too deep to keep]"
        return [_kept(item, depth - 1) for item in value]
    return value


def result_bytes(content: object) -> int:
    """The size of a tool result, in bytes: its text (UTF-8), or each of its parts (text
    parts as text, others such as images as their JSON)."""
    if content is None:
        return 0
    if isinstance(content, str):
        return _utf8_size(content)
    if isinstance(content, list):
        total = 0
        for part in content:
            text = part.get("text") if isinstance(part, dict) else None
            if isinstance(text, str) and part.get("type", "text") == "text":
                total += _utf8_size(text)
            else:
                total += _json_size(part)
        return total
    return _json_size(content)


def _utf8_size(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def _json_size(value: object) -> int:
    try:
        return _utf8_size(json.dumps(value, ensure_ascii=False, default=str))
    except (ValueError, RecursionError):
        return _utf8_size(str(value))


def stop_line(event: Cancelled | DeadlineHit) -> bytes:
    """The line a raw stream copy gets where the engine's ``event`` came."""
    frame: dict[str, object] = (
        {"type": STOPPED_FRAME, "why": "timeout", "timeout_s": event.timeout_s}
        if isinstance(event, DeadlineHit)
        else {"type": STOPPED_FRAME, "why": "cancelled", "reason": event.reason}
    )
    return json.dumps(frame).encode() + b"\n"


def stop_event(frame: Mapping[str, object]) -> Cancelled | DeadlineHit | None:
    """The engine's event a :data:`STOPPED_FRAME` line says (``None`` for another line)."""
    if frame.get("type") != STOPPED_FRAME:
        return None
    timeout = frame.get("timeout_s")
    if frame.get("why") == "timeout" and isinstance(timeout, int | float):
        return DeadlineHit(timeout_s=float(timeout))
    reason = frame.get("reason")
    return Cancelled(reason=reason if isinstance(reason, str) else "cancelled")


def truncation_line(kept_bytes: int, cap_bytes: int) -> bytes:
    """The line that ends a raw stream copy cut at ``cap_bytes`` (``kept_bytes`` kept)."""
    frame = {"type": TRUNCATED_FRAME, "kept_bytes": kept_bytes, "cap_bytes": cap_bytes}
    return json.dumps(frame).encode() + b"\n"
