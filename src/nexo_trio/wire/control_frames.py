"""Frames of the control socket: another ``nexo-trio`` process asks the one running a goal
to do something to it, and gets one answer.

One JSON object per line, one request per connection::

    {"v": 1, "op": "approve", "goal_id": "g1", "reason": null, "by": "uid 1000", ...}
    {"v": 1, "ok": true, "message": "approved Bash: rm -rf build", "problem": null}

``op`` is one of :data:`OPS`: ``approve`` / ``deny`` answer the goal's human decider;
``pause``, ``resume``, ``cancel`` (with an optional ``reason``), ``interrupt`` (with its
``message``) and ``max_turns`` (with ``max_turns``) are the operator controls of
:class:`~nexo_trio.orchestrator.orchestrator.Orchestrator`. A reply that is not ``ok`` says
why in ``problem`` (:data:`PROBLEMS`): nothing changed (``unchanged``: already paused...),
the request is not valid for the goal (``invalid``: an empty message, lowering
``max_turns``), or the process does not run the goal (``not_running``). Fields added since
version 1 are optional, so older peers still understand each other.

The records are typed; :func:`encode_request` /
:func:`decode_request` and :func:`encode_reply` / :func:`decode_reply` are the only code that
reads or writes the JSON, and decoding validates (:class:`ControlFrameError`).
"""

from __future__ import annotations

from typing import Any, Final, Literal, TypeAlias, get_args

import attrs
import cattrs
import orjson

PROTOCOL_VERSION: Final = 1
MAX_FRAME_BYTES: Final = 1024 * 1024

Op: TypeAlias = Literal["approve", "deny", "pause", "resume", "cancel", "interrupt", "max_turns"]
OPS: tuple[Op, ...] = get_args(Op)

Problem: TypeAlias = Literal["unchanged", "invalid", "not_running"]
PROBLEMS: tuple[Problem, ...] = get_args(Problem)


class ControlFrameError(ValueError):
    """A control frame that is not JSON or not of the protocol's shape."""


@attrs.frozen
class ControlRequest:
    """What the asking process wants done to a goal."""

    op: Op = attrs.field(validator=attrs.validators.in_(OPS))
    goal_id: str = attrs.field(validator=attrs.validators.instance_of(str))
    reason: str | None = None
    by: str = ""
    message: str | None = None
    """The operator message of an ``interrupt``."""
    max_turns: int | None = None
    """The new turn budget of a ``max_turns``."""
    now: bool = False
    """An ``interrupt`` written into the running turn at once, where it takes messages."""


@attrs.frozen
class ControlReply:
    """Whether it was done, and what happened, in words."""

    ok: bool
    message: str
    problem: Problem | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.in_(PROBLEMS))
    )
    """Why it was not done (``None`` when ``ok``, or from a peer that does not say)."""


def _make_converter() -> cattrs.Converter:
    converter = cattrs.Converter()

    def strict_str(value: object, _: object) -> str:
        if not isinstance(value, str):
            raise TypeError(f"expected a string, got {type(value).__name__}")
        return value

    def strict_bool(value: object, _: object) -> bool:
        if not isinstance(value, bool):
            raise TypeError(f"expected true or false, got {type(value).__name__}")
        return value

    def strict_int(value: object, _: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"expected an integer, got {type(value).__name__}")
        return value

    converter.register_structure_hook(str, strict_str)
    converter.register_structure_hook(bool, strict_bool)
    converter.register_structure_hook(int, strict_int)
    return converter


_converter: Final = _make_converter()


def _encode(obj: ControlRequest | ControlReply) -> bytes:
    return orjson.dumps(to_data(obj)) + b"\n"


def _decode(line: bytes, cls: type[Any]) -> Any:
    if len(line) > MAX_FRAME_BYTES:
        raise ControlFrameError(f"frame of {len(line)} bytes exceeds {MAX_FRAME_BYTES}")
    try:
        data = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise ControlFrameError(f"not JSON: {exc}") from None
    return _from_data(data, cls)


def _from_data(data: object, cls: type[Any]) -> Any:
    if not isinstance(data, dict) or data.get("v") != PROTOCOL_VERSION:
        raise ControlFrameError(f"not a version-{PROTOCOL_VERSION} control frame")
    data = {key: value for key, value in data.items() if key != "v"}
    try:
        return _converter.structure(data, cls)
    except cattrs.BaseValidationError as exc:
        problems = "; ".join(cattrs.transform_error(exc))
        raise ControlFrameError(f"malformed {cls.__name__}: {problems}") from None
    except (ValueError, TypeError) as exc:  # the record's own validators
        raise ControlFrameError(f"malformed {cls.__name__}: {exc}") from None


def to_data(obj: ControlRequest | ControlReply) -> dict[str, Any]:
    """A request or reply as the JSON object of its frame (what a store keeps of it)."""
    data: dict[str, Any] = {"v": PROTOCOL_VERSION, **_converter.unstructure(obj)}
    return data


def request_from_data(data: object) -> ControlRequest:
    """A request from the JSON object of its frame, validated (:class:`ControlFrameError`)."""
    request: ControlRequest = _from_data(data, ControlRequest)
    return request


def reply_from_data(data: object) -> ControlReply:
    """A reply from the JSON object of its frame, validated (:class:`ControlFrameError`)."""
    reply: ControlReply = _from_data(data, ControlReply)
    return reply


def encode_request(request: ControlRequest) -> bytes:
    """One request as a line."""
    return _encode(request)


def decode_request(line: bytes) -> ControlRequest:
    """A request line, validated."""
    request: ControlRequest = _decode(line, ControlRequest)
    return request


def encode_reply(reply: ControlReply) -> bytes:
    """One reply as a line."""
    return _encode(reply)


def decode_reply(line: bytes) -> ControlReply:
    """A reply line, validated."""
    reply: ControlReply = _decode(line, ControlReply)
    return reply
