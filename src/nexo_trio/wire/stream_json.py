"""Claude Code's ``--output-format stream-json`` stdout, read into typed frames.

One cattrs converter serves this wire format. It is deliberately lenient: the CLI adds
fields and changes shapes between versions, so a field of an unexpected type reads as its
default instead of failing the frame, and every frame keeps the object it came from in
``raw``. Nothing a line can contain makes :func:`parse_line` raise.

A lone surrogate escape in a string (``"\\ud800"``, valid JSON that Node's ``JSON.stringify``
writes for a string holding half a surrogate pair, e.g. a tool output cut mid-character) is
read as U+FFFD rather than dropping the whole frame: orjson refuses such lines, so they
alone take a slower path through :mod:`json` (:func:`_loads_lone_surrogates`).

:class:`StreamDecoder` joins the sans-IO line framer and this parser: bytes in, events out.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
from collections.abc import Callable
from typing import Any, Final, TypeVar, get_args, get_origin

import cattrs
import orjson
from cattrs.gen import make_dict_structure_fn, override

from nexo_trio.core.events import (
    ApiRetry,
    AssistantMessage,
    CompactBoundary,
    ContentBlock,
    ControlRequest,
    Frame,
    JsonObject,
    LineEvent,
    MalformedLine,
    McpServerStatus,
    ModelUsage,
    OtherBlock,
    OversizedLine,
    PermissionDenial,
    PermissionDeniedFrame,
    RateLimitEvent,
    Result,
    StreamEvent,
    SystemInit,
    SystemOther,
    SystemStatus,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolUseBlock,
    UnknownFrame,
    Usage,
    UserMessage,
)
from nexo_trio.core.framing import DEFAULT_LINE_CAP, Framed, Line, LineFramer

EXCERPT_BYTES: Final = 200
"""How much of a malformed line its event quotes."""

T = TypeVar("T")


# --------------------------------------------------------------------------- lenient scalars


def _str_or_none(value: Any, _: Any) -> str | None:
    return value if isinstance(value, str) else None


def _str(value: Any, _: Any) -> str:
    return value if isinstance(value, str) else ""


def _int(value: Any, _: Any) -> int:
    return value if type(value) is int else 0


def _int_or_none(value: Any, _: Any) -> int | None:
    if type(value) is int:
        return value
    # The CLI has reported statuses as strings ("529") in some versions.
    # isdecimal, not isdigit: int() refuses digits like "²" that isdigit accepts.
    if isinstance(value, str) and value.isdecimal():
        return int(value)
    return None


def _float(value: Any, _: Any) -> float:
    return float(value) if type(value) in (int, float) else 0.0


def _float_or_none(value: Any, _: Any) -> float | None:
    return float(value) if type(value) in (int, float) else None


def _bool(value: Any, _: Any) -> bool:
    return value is True


def _json_object(value: Any, _: Any) -> JsonObject:
    return value if isinstance(value, dict) else {}


def _is_homogeneous_tuple(cl: Any) -> bool:
    args = get_args(cl)
    return get_origin(cl) is tuple and len(args) == 2 and args[1] is Ellipsis


def _lenient_tuple(converter: cattrs.Converter) -> Callable[[Any], Callable[[Any, Any], Any]]:
    def factory(cl: Any) -> Callable[[Any, Any], Any]:
        item_type = get_args(cl)[0]
        structure_item = converter.get_structure_hook(item_type)

        def structure(value: Any, _: Any) -> tuple[Any, ...]:
            if not isinstance(value, list):
                return ()
            return tuple(structure_item(v, item_type) for v in value)

        return structure

    return factory


# --------------------------------------------------------------------------- the converter

_BLOCK_TYPES: Final[dict[str, type[Any]]] = {
    "text": TextBlock,
    "thinking": ThinkingBlock,
    "tool_use": ToolUseBlock,
    "tool_result": ToolResultBlock,
}


def _register_exact(c: cattrs.Converter, cl: Any, fn: Callable[[Any, Any], Any]) -> None:
    """Register a hook for exactly ``cl``: ``str | None`` must not also claim plain ``str``."""
    c.register_structure_hook_func(lambda t: bool(t == cl), fn)


def _make_converter() -> cattrs.Converter:
    c = cattrs.Converter(detailed_validation=False, forbid_extra_keys=False)
    # Plain classes go through cattrs's singledispatch, which wins over predicate hooks: its
    # built-in str/int/float hooks (str(None) == "None", bool("false") is True, int(None)
    # raises) must be replaced there, not shadowed by a predicate that is never consulted.
    plain: tuple[tuple[type[Any], Callable[[Any, Any], Any]], ...] = (
        (str, _str),
        (int, _int),
        (float, _float),
        (bool, _bool),
    )
    for cls, plain_hook in plain:
        c.register_structure_hook(cls, plain_hook)
    scalar: Any
    for scalar, hook in (
        (str | None, _str_or_none),
        (int | None, _int_or_none),
        (float | None, _float_or_none),
        (JsonObject, _json_object),
    ):
        _register_exact(c, scalar, hook)
    _register_exact(c, Any, lambda v, _: v)
    c.register_structure_hook_factory(_is_homogeneous_tuple, _lenient_tuple(c))

    def record(cl: type[T], **overrides: Any) -> None:
        fn = make_dict_structure_fn(cl, c, **overrides)

        def structure(value: Any, _: Any) -> T:
            return fn(value if isinstance(value, dict) else {}, cl)

        c.register_structure_hook(cl, structure)

    for record_type in (
        Usage,
        McpServerStatus,
        PermissionDenial,
        TextBlock,
        ThinkingBlock,
        ToolUseBlock,
        ToolResultBlock,
    ):
        record(record_type)
    record(
        ModelUsage,
        input_tokens=override(rename="inputTokens"),
        output_tokens=override(rename="outputTokens"),
        cache_read_input_tokens=override(rename="cacheReadInputTokens"),
        cache_creation_input_tokens=override(rename="cacheCreationInputTokens"),
        cost_usd=override(rename="costUSD"),
        context_window=override(rename="contextWindow"),
    )

    def usage_or_none(value: Any, _: Any) -> Usage | None:
        return c.structure(value, Usage) if isinstance(value, dict) else None

    _register_exact(c, Usage | None, usage_or_none)

    def model_usage_map(value: Any, _: Any) -> dict[str, ModelUsage] | None:
        if not isinstance(value, dict):
            return None
        return {str(k): c.structure(v, ModelUsage) for k, v in value.items()}

    _register_exact(c, dict[str, ModelUsage] | None, model_usage_map)

    def content_block(value: Any, _: Any) -> ContentBlock:
        if not isinstance(value, dict):
            return OtherBlock(type=None, raw={"value": value})
        kind = value.get("type")
        if not isinstance(kind, str):  # a list or object "type" is unhashable
            return OtherBlock(type=None, raw=value)
        cl = _BLOCK_TYPES.get(kind)
        if cl is None:
            return OtherBlock(type=kind, raw=value)
        block: ContentBlock = c.structure(value, cl)
        return block

    _register_exact(c, ContentBlock, content_block)

    def content(value: Any, _: Any) -> tuple[ContentBlock, ...]:
        if isinstance(value, str):  # a plain-string message, e.g. a replayed prompt
            return (TextBlock(text=value),)
        if not isinstance(value, list):
            return ()
        return tuple(content_block(v, ContentBlock) for v in value)

    _register_exact(c, tuple[ContentBlock, ...], content)
    return c


converter: Final = _make_converter()
"""The converter of the stream-json wire format (lenient; see the module docstring)."""


def _frame_reader(
    cl: type[T], *, lift: str | None = None, **overrides: Any
) -> Callable[[JsonObject], T]:
    """A function that reads a frame object into ``cl``.

    ``lift`` names a nested object (``message``, ``request``...) whose keys are read as if
    they were the frame's own; the frame's own keys win. The whole frame object is kept as
    ``raw``: it is handed to the generated function under that key, which the lenient
    ``JsonObject`` hook passes through without copying.
    """
    fn = make_dict_structure_fn(cl, converter, **overrides)

    def read(obj: JsonObject) -> T:
        nested = obj.get(lift) if lift is not None else None
        if isinstance(nested, dict):
            return fn({**nested, **obj, "raw": obj}, cl)
        return fn({**obj, "raw": obj}, cl)

    return read


_read_system_other = _frame_reader(SystemOther)
_SYSTEM_READERS: Final[dict[str, Callable[[JsonObject], Frame]]] = {
    "init": _frame_reader(SystemInit, permission_mode=override(rename="permissionMode")),
    "status": _frame_reader(SystemStatus),
    "api_retry": _frame_reader(ApiRetry),
    "permission_denied": _frame_reader(PermissionDeniedFrame),
    "compact_boundary": _frame_reader(CompactBoundary, lift="compact_metadata"),
}
_TYPE_READERS: Final[dict[str, Callable[[JsonObject], Frame]]] = {
    "assistant": _frame_reader(AssistantMessage, lift="message", message_id=override(rename="id")),
    "user": _frame_reader(UserMessage, lift="message"),
    "result": _frame_reader(Result),
    "stream_event": _frame_reader(StreamEvent),
    "rate_limit_event": _frame_reader(RateLimitEvent),
    "control_request": _frame_reader(ControlRequest, lift="request"),
}


def parse_frame(obj: JsonObject) -> Frame:
    """Read one decoded JSON object into its frame record (never raises)."""
    kind = obj.get("type")
    note = None
    try:
        if kind == "system":
            subtype = obj.get("subtype")
            reader = _SYSTEM_READERS.get(subtype) if isinstance(subtype, str) else None
            return (reader or _read_system_other)(obj)
        reader = _TYPE_READERS.get(kind) if isinstance(kind, str) else None
        if reader is not None:
            return reader(obj)
    except Exception as exc:  # a frame we can't read is kept, never fatal
        note = f"could not read {kind!r} frame: {exc!r}"
    return UnknownFrame(
        session_id=_str_or_none(obj.get("session_id"), None),
        type=kind if isinstance(kind, str) else None,
        note=note,
        raw=obj,
    )


def _excerpt(data: bytes) -> str:
    return data[:EXCERPT_BYTES].decode("utf-8", errors="replace")


_SURROGATE_ESCAPE: Final = re.compile(rb"\\u[dD][89a-fA-F]")
"""A ``\\uD800``-``\\uDFFF`` escape: JSON that orjson refuses when it is unpaired."""
_SURROGATE: Final = re.compile("[\ud800-\udfff]")
REPLACEMENT_CHARACTER: Final = "\ufffd"
_NOT_READ: Final = object()


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):  # orjson refuses 1e400 too: the slow path must agree
        raise ValueError(f"number {text} is out of range")
    return value


def _loads_lone_surrogates(text: str) -> Any:
    """``text`` decoded by :mod:`json` (which accepts unpaired surrogate escapes), each
    unpaired surrogate then replaced by U+FFFD. Raises ``ValueError`` or ``RecursionError``
    like a decoder. Only for lines orjson refused: slower, and more lenient than orjson
    nowhere else (``NaN``, ``Infinity`` and out-of-range numbers are refused here too)."""
    obj = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    return _replace_surrogates(obj)


def _clean(text: str) -> str:
    return _SURROGATE.sub(REPLACEMENT_CHARACTER, text)


def _replace_surrogates(value: Any) -> Any:
    """``value`` with every surrogate in its strings (keys too) replaced by U+FFFD: after
    :mod:`json`, which joins the valid pairs, only unpaired ones are left. In place and
    without recursion (the nesting is as deep as the line made it)."""
    if isinstance(value, str):
        return _clean(value)
    stack = [value] if isinstance(value, dict | list) else []
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            for i, item in enumerate(node):
                if isinstance(item, str):
                    node[i] = _clean(item)
                elif isinstance(item, dict | list):
                    stack.append(item)
            continue
        items = list(node.items())
        node.clear()
        for key, item in items:
            if isinstance(item, dict | list):
                stack.append(item)
            node[_clean(key)] = _clean(item) if isinstance(item, str) else item
    return value


def parse_line(line_no: int, data: bytes) -> LineEvent:
    """Read one stdout line into a frame, or a :class:`MalformedLine` saying what is wrong."""
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        try:
            # Strict: raw surrogate bytes (CESU-8) stay invalid UTF-8, as orjson has it.
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            return MalformedLine(line_no=line_no, excerpt=_excerpt(data), error="invalid UTF-8")
        obj = _NOT_READ
        if _SURROGATE_ESCAPE.search(data) is not None:
            with contextlib.suppress(ValueError, RecursionError):
                obj = _loads_lone_surrogates(text)
        if obj is _NOT_READ:
            return MalformedLine(
                line_no=line_no, excerpt=_excerpt(data), error=f"invalid JSON: {exc}"
            )
    if not isinstance(obj, dict):
        return MalformedLine(
            line_no=line_no,
            excerpt=_excerpt(data),
            error=f"not a JSON object but {type(obj).__name__}",
        )
    return parse_frame(obj)


class StreamDecoder:
    """Bytes of a stdout stream in, line events out (framer + parser)."""

    def __init__(self, line_cap: int = DEFAULT_LINE_CAP) -> None:
        self._framer = LineFramer(line_cap)

    def feed(self, chunk: bytes | bytearray) -> list[LineEvent]:
        """Decode one chunk; return the events of the lines it completed."""
        return [self._decode(item) for item in self._framer.feed(chunk)]

    def close(self) -> list[LineEvent]:
        """End of stream: decode the unterminated last line, if any."""
        return [self._decode(item) for item in self._framer.close()]

    @staticmethod
    def _decode(item: Framed) -> LineEvent:
        if isinstance(item, Line):
            return parse_line(item.line_no, item.data)
        return OversizedLine(line_no=item.line_no, size=item.size)
