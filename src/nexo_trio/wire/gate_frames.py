"""Frames of the permission bridge (MCP server <-> orchestrator over a Unix socket), and the
answer the permission prompt tool gives Claude Code.

One JSON object per line (UTF-8, ``\\n``-terminated), at most :data:`MAX_FRAME_BYTES`.
Many requests may be in flight on one connection; replies carry the request's ``id``.

Request (MCP server -> orchestrator), :class:`PermissionFrame`::

    {"v": 1, "type": "permission", "id": "r1", "goal_id": "...", "tool_name": "Bash",
     "input": {...}, "tool_use_id": "toolu_...", "token": "..."}

``token`` (optional, so frames without it still decode) is the secret of the turn whose MCP
server sends the request: the orchestrator writes a fresh one into each turn's MCP config
and denies a request whose token is not the goal's current turn's (an orphaned turn of an
earlier run, say). A frame without a token is never from a current turn.

Replies (orchestrator -> MCP server), :class:`DecisionFrame` and :class:`ErrorFrame`::

    {"v": 1, "type": "decision", "id": "r1", "behavior": "allow", "updated_input": {...}}
    {"v": 1, "type": "decision", "id": "r1", "behavior": "deny", "message": "..."}
    {"v": 1, "type": "error", "id": "r1" | null, "error": "..."}

Each frame is a typed record, encoded by one function and decoded (and validated) by one
function; nothing else reads or writes the JSON. :func:`decision_frame` makes the reply to
a request from a :class:`~nexo_trio.core.permission.Decision` (the orchestrator's side),
:func:`tool_answer` the MCP ``tools/call`` result Claude Code reads from a reply (the MCP
server's side).

Stdlib only on purpose, and so the records are :class:`~typing.NamedTuple` rather than attrs
classes (the project's rule elsewhere) or dataclasses: the MCP server imports this module,
Claude Code spawns that server on every turn, and ``attrs`` costs ~60 ms of import there,
``dataclasses`` ~12 ms (it loads :mod:`inspect`); a NamedTuple costs nothing beyond
:mod:`typing`, which is loaded anyway.
"""

# No ``from __future__ import annotations`` here: with string annotations, each NamedTuple
# field costs a compile() at import (a ForwardRef), ~5 ms for this module's records.
import json
from typing import TYPE_CHECKING, Any, Final, NamedTuple, TypeAlias

if TYPE_CHECKING:
    from nexo_trio.core.permission import Decision

PROTOCOL_VERSION: Final = 1
MAX_FRAME_BYTES: Final = 16 * 1024 * 1024
"""Tool inputs can be large (a Write of a big file), but not unbounded."""
DEFAULT_DENY: Final = "Permission denied"

JsonObject: TypeAlias = dict[str, Any]


class FrameError(ValueError):
    """A frame that is not valid JSON or not of the protocol's shape."""


class PermissionFrame(NamedTuple):
    """A tool call asking for permission."""

    id: str
    goal_id: str
    tool_name: str
    input: JsonObject
    tool_use_id: str | None = None
    token: str | None = None
    """The secret of the turn that asks (``None``: the sender has none)."""


class DecisionFrame(NamedTuple):
    """The orchestrator's decision on request ``id``. An allow's ``updated_input`` replaces
    the tool's input (``None``: keep the request's); a deny carries the ``message`` Claude
    reads."""

    id: str
    allow: bool
    updated_input: JsonObject | None = None
    message: str | None = None


class ErrorFrame(NamedTuple):
    """The orchestrator could not handle request ``id`` (``None``: it cannot tell which)."""

    id: str | None
    error: str


ReplyFrame: TypeAlias = DecisionFrame | ErrorFrame


# --------------------------------------------------------------------------- encoding


_ENCODERS: Final = {
    allow_nan: json.JSONEncoder(separators=(",", ":"), allow_nan=allow_nan)
    for allow_nan in (True, False)
}
"""What ``json.dumps(frame, separators=(",", ":"), allow_nan=...)`` would make, without a new
encoder per frame."""


def json_line(frame: JsonObject, *, allow_nan: bool = True) -> bytes:
    """``frame`` as one line of JSON (integers of any size kept exact; ``allow_nan=False``:
    NaN and infinities raise ``ValueError``, as strict JSON readers refuse them)."""
    return _ENCODERS[allow_nan].encode(frame).encode() + b"\n"


_line = json_line


def encode_request(frame: PermissionFrame) -> bytes:
    """A permission request as a line (``token`` only when there is one)."""
    request: JsonObject = {
        "v": PROTOCOL_VERSION,
        "type": "permission",
        "id": frame.id,
        "goal_id": frame.goal_id,
        "tool_name": frame.tool_name,
        "input": frame.input,
        "tool_use_id": frame.tool_use_id,
    }
    if frame.token is not None:
        request["token"] = frame.token
    return _line(request)


def encode_reply(frame: ReplyFrame) -> bytes:
    """A decision or error frame as a line (raises ``TypeError`` or ``ValueError`` for an
    ``updated_input`` that is not JSON, NaN and infinities included: Claude Code could not
    read them)."""
    if isinstance(frame, ErrorFrame):
        return _line({"v": PROTOCOL_VERSION, "type": "error", "id": frame.id, "error": frame.error})
    reply: JsonObject = {"v": PROTOCOL_VERSION, "type": "decision", "id": frame.id}
    if frame.allow:
        reply["behavior"] = "allow"
        reply["updated_input"] = frame.updated_input
    else:
        reply["behavior"] = "deny"
        reply["message"] = frame.message if frame.message is not None else DEFAULT_DENY
    return _line(reply, allow_nan=False)


# --------------------------------------------------------------------------- decoding


def _decode_object(line: bytes) -> JsonObject:
    """The frame's JSON object, of this protocol's version and with a string ``type``."""
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


def decode_request(line: bytes) -> PermissionFrame:
    """One line into a permission request; :class:`FrameError` says what is wrong."""
    frame = _decode_object(line)
    if frame["type"] != "permission":
        raise FrameError(f"unknown frame type {frame['type']!r}")
    for key in ("id", "goal_id", "tool_name"):
        if not isinstance(frame.get(key), str) or not frame[key]:
            raise FrameError(f"a permission frame needs a non-empty string {key!r}")
    tool_input = frame.get("input")
    if not isinstance(tool_input, dict):
        raise FrameError("a permission frame needs an object 'input'")
    tool_use_id = frame.get("tool_use_id")
    if tool_use_id is not None and not isinstance(tool_use_id, str):
        raise FrameError("'tool_use_id' must be a string or null")
    token = frame.get("token")
    if token is not None and not isinstance(token, str):
        raise FrameError("'token' must be a string or null")
    return PermissionFrame(
        frame["id"], frame["goal_id"], frame["tool_name"], tool_input, tool_use_id, token
    )


def decode_reply(line: bytes) -> ReplyFrame:
    """One line into a decision or an error frame; :class:`FrameError` says what is wrong."""
    frame = _decode_object(line)
    kind = frame["type"]
    request_id = frame.get("id")
    if kind == "error":
        error = frame.get("error")
        if not isinstance(error, str):
            raise FrameError("an error frame needs a string 'error'")
        if request_id is not None and not isinstance(request_id, str):
            raise FrameError("an error frame's 'id' must be a string or null")
        return ErrorFrame(request_id, error)
    if kind != "decision":
        raise FrameError(f"unknown frame type {kind!r}")
    if not isinstance(request_id, str):
        raise FrameError("a decision frame needs a string 'id'")
    behavior = frame.get("behavior")
    if behavior == "allow":
        updated = frame.get("updated_input")
        if updated is not None and not isinstance(updated, dict):
            raise FrameError("'updated_input' must be an object")
        return DecisionFrame(request_id, allow=True, updated_input=updated)
    if behavior == "deny":
        message = frame.get("message")
        if not isinstance(message, str):
            raise FrameError("a deny needs a string 'message'")
        return DecisionFrame(request_id, allow=False, message=message)
    raise FrameError(f"unknown behavior {behavior!r}")


def salvage_id(line: bytes) -> str | None:
    """The string ``id`` of a line that failed validation, if one can be read from it, so
    the error reply names the request it answers."""
    try:
        frame = json.loads(line)
    except (ValueError, RecursionError):
        return None
    request_id = frame.get("id") if isinstance(frame, dict) else None
    return request_id if isinstance(request_id, str) else None


# --------------------------------------------------------------------------- the two ends


def decision_frame(request: PermissionFrame, decision: "Decision") -> DecisionFrame:
    """The reply to ``request``: only an allowing decision allows (with its rewritten input,
    else the request's own); everything else is a deny with
    :func:`~nexo_trio.core.permission.deny_message`."""
    # Imported here, not at the top: the MCP server imports this module and never calls
    # this function, and core.permission would load attrs into it.
    from nexo_trio.core.permission import deny_message  # noqa: PLC0415

    if decision.allowed:
        updated = decision.updated_input if decision.updated_input is not None else request.input
        return DecisionFrame(request.id, allow=True, updated_input=updated)
    return DecisionFrame(request.id, allow=False, message=deny_message(decision))


def tool_answer(frame: DecisionFrame, tool_input: JsonObject) -> JsonObject:
    """The ``tools/call`` result Claude Code reads for ``frame``: one text block holding
    ``{"behavior": "allow", "updatedInput": ...}`` (``tool_input`` unless the decision
    rewrote it) or ``{"behavior": "deny", "message": ...}`` (never blank: a blank one is
    :data:`DEFAULT_DENY`). Raises ``ValueError`` for an input holding NaN or an infinity
    (which Python's JSON reads, but Claude Code's cannot: the text would not be JSON)."""
    if not frame.allow:
        message = frame.message
        return deny_answer(message if message is not None and message.strip() else DEFAULT_DENY)
    updated = tool_input if frame.updated_input is None else frame.updated_input
    return _text_answer({"behavior": "allow", "updatedInput": updated})


def deny_answer(message: str) -> JsonObject:
    """The ``tools/call`` result of a deny with ``message``."""
    return _text_answer({"behavior": "deny", "message": message})


def _text_answer(behavior: JsonObject) -> JsonObject:
    return {"content": [{"type": "text", "text": json.dumps(behavior, allow_nan=False)}]}
