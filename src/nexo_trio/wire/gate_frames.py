"""Frames of the permission bridge: MCP server <-> orchestrator over a Unix socket.

One JSON object per line (UTF-8, ``\\n``-terminated), at most :data:`MAX_FRAME_BYTES`.
Many requests may be in flight on one connection; replies carry the request's ``id``.

Request (MCP server -> orchestrator)::

    {"v": 1, "type": "permission", "id": "r1", "goal_id": "...", "tool_name": "Bash",
     "input": {...}, "tool_use_id": "toolu_..."}

Replies (orchestrator -> MCP server)::

    {"v": 1, "type": "decision", "id": "r1", "behavior": "allow", "updated_input": {...}}
    {"v": 1, "type": "decision", "id": "r1", "behavior": "deny", "message": "..."}
    {"v": 1, "type": "error", "id": "r1" | null, "error": "..."}

This module is stdlib-only on purpose: the MCP server imports it, and Claude Code spawns
that server on every turn, so its start-up time matters.
"""

from __future__ import annotations

import json
from typing import Any, Final

PROTOCOL_VERSION: Final = 1
MAX_FRAME_BYTES: Final = 16 * 1024 * 1024
"""Tool inputs can be large (a Write of a big file), but not unbounded."""


class FrameError(ValueError):
    """A frame that is not valid JSON or not of the protocol's shape."""


def encode(frame: dict[str, Any]) -> bytes:
    """One frame as a line."""
    return json.dumps({"v": PROTOCOL_VERSION, **frame}, separators=(",", ":")).encode() + b"\n"


def permission_request(
    request_id: str,
    *,
    goal_id: str,
    tool_name: str,
    tool_input: dict[str, Any],
    tool_use_id: str | None,
) -> bytes:
    """A permission request frame."""
    return encode(
        {
            "type": "permission",
            "id": request_id,
            "goal_id": goal_id,
            "tool_name": tool_name,
            "input": tool_input,
            "tool_use_id": tool_use_id,
        }
    )


def decision_reply(request_id: str, behavior: dict[str, Any]) -> bytes:
    """A decision frame from a ``{"behavior": ..., "updatedInput"|"message": ...}`` dict."""
    frame: dict[str, Any] = {"type": "decision", "id": request_id, "behavior": behavior["behavior"]}
    if behavior["behavior"] == "allow":
        frame["updated_input"] = behavior.get("updatedInput")
    else:
        frame["message"] = behavior.get("message", "Permission denied")
    return encode(frame)


def error_reply(request_id: str | None, error: str) -> bytes:
    """An error frame (the connection goes on)."""
    return encode({"type": "error", "id": request_id, "error": error})


def decode(line: bytes) -> dict[str, Any]:
    """Parse one line into a frame dict; :class:`FrameError` says what is wrong."""
    if len(line) > MAX_FRAME_BYTES:
        raise FrameError(f"frame of {len(line)} bytes exceeds the {MAX_FRAME_BYTES} byte cap")
    try:
        frame = json.loads(line)
    except ValueError as exc:  # also UnicodeDecodeError
        raise FrameError(f"not JSON: {exc}") from None
    except RecursionError:
        raise FrameError("JSON nested too deeply") from None
    if not isinstance(frame, dict):
        raise FrameError(f"a frame must be a JSON object, got {type(frame).__name__}")
    if frame.get("v") != PROTOCOL_VERSION:
        raise FrameError(f"unsupported protocol version {frame.get('v')!r}")
    if not isinstance(frame.get("type"), str):
        raise FrameError("a frame needs a string 'type'")
    return frame


def salvage_id(line: bytes) -> str | None:
    """The string ``id`` of a line that failed validation, if one can be read from it, so
    the error reply names the request it answers."""
    try:
        frame = json.loads(line)
    except (ValueError, RecursionError):
        return None
    request_id = frame.get("id") if isinstance(frame, dict) else None
    return request_id if isinstance(request_id, str) else None


def check_request(frame: dict[str, Any]) -> None:
    """Validate a permission request frame (raises :class:`FrameError`)."""
    if frame.get("type") != "permission":
        raise FrameError(f"unknown frame type {frame.get('type')!r}")
    for key in ("id", "goal_id", "tool_name"):
        if not isinstance(frame.get(key), str) or not frame[key]:
            raise FrameError(f"a permission frame needs a non-empty string {key!r}")
    if not isinstance(frame.get("input"), dict):
        raise FrameError("a permission frame needs an object 'input'")
    tool_use_id = frame.get("tool_use_id")
    if tool_use_id is not None and not isinstance(tool_use_id, str):
        raise FrameError("'tool_use_id' must be a string or null")


def check_reply(frame: dict[str, Any]) -> None:
    """Validate a decision or error frame (raises :class:`FrameError`)."""
    kind = frame.get("type")
    if kind == "error":
        if not isinstance(frame.get("error"), str):
            raise FrameError("an error frame needs a string 'error'")
        return
    if kind != "decision":
        raise FrameError(f"unknown frame type {kind!r}")
    if not isinstance(frame.get("id"), str):
        raise FrameError("a decision frame needs a string 'id'")
    behavior = frame.get("behavior")
    if behavior == "allow":
        updated = frame.get("updated_input")
        if updated is not None and not isinstance(updated, dict):
            raise FrameError("'updated_input' must be an object")
    elif behavior == "deny":
        if not isinstance(frame.get("message"), str):
            raise FrameError("a deny needs a string 'message'")
    else:
        raise FrameError(f"unknown behavior {behavior!r}")
