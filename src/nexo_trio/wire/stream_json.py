"""Claude Code's ``--output-format stream-json`` stdout, read into typed frames.

One cattrs converter serves this wire format. It is deliberately lenient: the CLI adds
fields and changes shapes between versions, so a field of an unexpected type reads as its
default instead of failing the frame, and every frame keeps the object it came from in
``raw``. Nothing a line can contain makes :func:`parse_line` raise. The frequent frames
(assistant and user messages, stream events, status frames) are read by hand-written
readers with the converter's rules, several times faster; the converter stays their
definition (:func:`parse_frame_by_converter`, which the tests compare them with). They are
built lazily (see :mod:`nexo_trio.core.events`): with what the turn reducer reads of them,
the rest structured from ``raw`` (by the hand-written readers) on first access.

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
    register_source_loader,
    register_structurer,
    slot_setter,
)
from nexo_trio.core.framing import DEFAULT_LINE_CAP, Framed, LineFramer, Oversized

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
        try:
            return int(value)
        except ValueError:  # more digits than int() converts (sys.get_int_max_str_digits)
            return None
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


# --------------------------------------------------------------------------- the hot frames
#
# Most of a turn's frames are assistant and user messages, partial-message stream events and
# status frames: those are read by hand below, with the same lenient rules as the converter
# (each field is its type's hook applied to the value, a missing key reading as ``None``,
# which every hook turns into the field's default), at a fraction of the cost of the
# generated functions and their dispatch. tests/core/test_stream_json.py checks that they
# read any object exactly as the converter does (the readers above stay the definition).


def _lift(obj: JsonObject, key: str) -> JsonObject:
    """``obj`` with the keys of its nested object ``key`` read as its own (its own win)."""
    nested = obj.get(key)
    return {**nested, **obj} if isinstance(nested, dict) else obj


_USAGES: Final[dict[tuple[int, int, int, int], Usage]] = {}
"""Usage records already made, by their counts: a message's frames repeat its usage, and a
record is immutable (a dict lookup costs a fraction of making one)."""
_USAGES_KEPT: Final = 256
_latest_usage: tuple[JsonObject, Usage] = ({}, Usage())
"""The usage object last read (a copy of it) and its record: a message's frames come
together, each with the same usage, and comparing two small dicts is cheaper than reading
one (the copy's counts are the record's, whatever becomes of the frame's own object)."""


def _usage(value: Any) -> Usage:
    global _latest_usage  # noqa: PLW0603  (rebound whole, at once: safe across threads)
    if not isinstance(value, dict):
        return Usage()
    latest, record = _latest_usage
    if value == latest:
        return record
    get = value.get
    counts = (
        v if type(v := get("input_tokens")) is int else 0,
        v if type(v := get("output_tokens")) is int else 0,
        v if type(v := get("cache_read_input_tokens")) is int else 0,
        v if type(v := get("cache_creation_input_tokens")) is int else 0,
    )
    usage = _USAGES.get(counts)
    if usage is None:
        if len(_USAGES) >= _USAGES_KEPT:
            _USAGES.clear()
        usage = _USAGES[counts] = Usage(*counts)
    _latest_usage = (dict(value), usage)
    return usage


def _block(value: Any) -> ContentBlock:
    if not isinstance(value, dict):
        return OtherBlock(type=None, raw={"value": value})
    kind = value.get("type")
    if kind == "text":
        return TextBlock(v if isinstance(v := value.get("text"), str) else "")
    if kind == "tool_use":
        return ToolUseBlock(
            v if isinstance(v := value.get("id"), str) else "",
            v if isinstance(v := value.get("name"), str) else "",
            v if isinstance(v := value.get("input"), dict) else {},
        )
    if kind == "tool_result":
        return ToolResultBlock(
            v if isinstance(v := value.get("tool_use_id"), str) else "",
            value.get("content"),
            value.get("is_error") is True,
        )
    if kind == "thinking":
        return ThinkingBlock(v if isinstance(v := value.get("thinking"), str) else "")
    return OtherBlock(type=kind if isinstance(kind, str) else None, raw=value)


def _content(value: Any) -> tuple[ContentBlock, ...]:
    if isinstance(value, list):
        return tuple([_block(v) for v in value])
    if isinstance(value, str):  # a plain-string message, e.g. a replayed prompt
        return (TextBlock(text=value),)
    return ()


def _read_assistant(obj: JsonObject) -> AssistantMessage:
    f = _lift(obj, "message")
    usage = f.get("usage")
    return AssistantMessage(
        v if isinstance(v := f.get("session_id"), str) else None,
        v if isinstance(v := f.get("id"), str) else None,
        v if isinstance(v := f.get("model"), str) else None,
        _content(f.get("content")),
        _usage(usage) if isinstance(usage, dict) else None,
        v if isinstance(v := f.get("stop_reason"), str) else None,
        v if isinstance(v := f.get("parent_tool_use_id"), str) else None,
        v if isinstance(v := f.get("error"), str) else None,
        f.get("is_api_error_message") is True,
        _int_or_none(f.get("api_error_status"), None),
        obj,
    )


def _read_user(obj: JsonObject) -> UserMessage:
    f = _lift(obj, "message")
    return UserMessage(
        v if isinstance(v := f.get("session_id"), str) else None,
        _content(f.get("content")),
        v if isinstance(v := f.get("parent_tool_use_id"), str) else None,
        obj,
    )


def _read_stream_event(obj: JsonObject) -> StreamEvent:
    return StreamEvent(
        v if isinstance(v := obj.get("session_id"), str) else None,
        v if isinstance(v := obj.get("event"), dict) else {},
        obj,
    )


def _read_status(obj: JsonObject) -> SystemStatus:
    return SystemStatus(
        v if isinstance(v := obj.get("session_id"), str) else None,
        v if isinstance(v := obj.get("status"), str) else None,
        obj,
    )


# The lazily built frames: each with only what the turn reducer reads of it (its digest, or
# its session id); the rest comes from the hand-written readers above on first access.

_new = object.__new__
_NO_MESSAGE: Final[JsonObject] = {}
"""Stands for a missing or non-object ``message`` (only read, never changed)."""
_ABSENT: Final = object()
_MESSAGE_KEYS: Final = frozenset({"id", "model", "usage", "content"})
_set_assistant_raw = slot_setter(AssistantMessage, "raw")
_set_assistant_source = slot_setter(AssistantMessage, "source")
_set_assistant_digest = slot_setter(AssistantMessage, "digest")
_set_assistant_usage = slot_setter(AssistantMessage, "usage")
_set_user_raw = slot_setter(UserMessage, "raw")
_set_user_source = slot_setter(UserMessage, "source")
_set_user_digest = slot_setter(UserMessage, "digest")
_set_stream_event_raw = slot_setter(StreamEvent, "raw")
_set_stream_event_source = slot_setter(StreamEvent, "source")
_set_stream_event_session = slot_setter(StreamEvent, "session_id")
_set_status_raw = slot_setter(SystemStatus, "raw")
_set_status_source = slot_setter(SystemStatus, "source")
_set_status_session = slot_setter(SystemStatus, "session_id")


def _lazy_assistant(obj: JsonObject, source: bytes | None = None) -> AssistantMessage:
    """``obj`` as an assistant message built lazily, with its digest and usage: the values
    :func:`_read_assistant` gives those fields (the keys of ``message`` read as the frame's
    own, the frame's own winning)."""
    m = obj.get("message")
    if not isinstance(m, dict):
        m = _NO_MESSAGE
    mget = m.get
    session_id = obj.get("session_id", _ABSENT)
    if session_id is _ABSENT:
        session_id = mget("session_id")
    if obj.keys().isdisjoint(_MESSAGE_KEYS):  # as the CLI writes them: all in the message
        message_id, model = mget("id"), mget("model")
        usage, content = mget("usage"), mget("content")
    else:
        get = obj.get
        message_id = get("id", mget("id"))
        model = get("model", mget("model"))
        usage = get("usage", mget("usage"))
        content = get("content", mget("content"))
    text = None
    tools: tuple[str, ...] = ()
    if isinstance(content, list):
        for block in content:
            if isinstance(block, dict):
                kind = block.get("type")
                if kind == "text":
                    value = block.get("text")
                    if isinstance(value, str) and value:
                        text = value
                elif kind == "tool_use":
                    name = block.get("name")
                    tools = (*tools, name if isinstance(name, str) else "")
    elif isinstance(content, str) and content:
        text = content
    frame = _new(AssistantMessage)
    if source is None:
        _set_assistant_raw(frame, obj)
    else:
        _set_assistant_source(frame, source)
    _set_assistant_usage(frame, _usage(usage) if isinstance(usage, dict) else None)
    _set_assistant_digest(
        frame,
        (
            session_id if isinstance(session_id, str) else None,
            message_id if isinstance(message_id, str) else None,
            model if isinstance(model, str) else None,
            text,
            tools,
        ),
    )
    return frame


def _lazy_user(obj: JsonObject, source: bytes | None = None) -> UserMessage:
    """``obj`` as a user message built lazily, with its digest (as :func:`_lazy_assistant`)."""
    m = obj.get("message")
    if not isinstance(m, dict):
        m = _NO_MESSAGE
    session_id = obj.get("session_id", m.get("session_id"))
    content = obj.get("content", m.get("content"))
    results: tuple[tuple[bool, Any], ...] = ()
    if isinstance(content, list):
        for block in content:
            if isinstance(block, dict) and block.get("type") == "tool_result":
                results = (*results, (block.get("is_error") is True, block.get("content")))
    frame = _new(UserMessage)
    if source is None:
        _set_user_raw(frame, obj)
    else:
        _set_user_source(frame, source)
    _set_user_digest(frame, (session_id if isinstance(session_id, str) else None, results))
    return frame


def _lazy_stream_event(obj: JsonObject, source: bytes | None = None) -> StreamEvent:
    session_id = obj.get("session_id")
    frame = _new(StreamEvent)
    if source is None:
        _set_stream_event_raw(frame, obj)
    else:
        _set_stream_event_source(frame, source)
    _set_stream_event_session(frame, session_id if isinstance(session_id, str) else None)
    return frame


def _lazy_status(obj: JsonObject, source: bytes | None = None) -> SystemStatus:
    session_id = obj.get("session_id")
    frame = _new(SystemStatus)
    if source is None:
        _set_status_raw(frame, obj)
    else:
        _set_status_source(frame, source)
    _set_status_session(frame, session_id if isinstance(session_id, str) else None)
    return frame


for _cls, _structure in (
    (AssistantMessage, _read_assistant),
    (UserMessage, _read_user),
    (StreamEvent, _read_stream_event),
    (SystemStatus, _read_status),
):
    register_structurer(_cls, _structure)


FAST_READ_FIELDS: Final[dict[type[Any], tuple[str, ...]]] = {
    AssistantMessage: (
        "session_id",
        "message_id",
        "model",
        "content",
        "usage",
        "stop_reason",
        "parent_tool_use_id",
        "error",
        "is_api_error_message",
        "api_error_status",
        "raw",
    ),
    UserMessage: ("session_id", "content", "parent_tool_use_id", "raw"),
    StreamEvent: ("session_id", "event", "raw"),
    SystemStatus: ("session_id", "status", "raw"),
    Usage: (
        "input_tokens",
        "output_tokens",
        "cache_read_input_tokens",
        "cache_creation_input_tokens",
    ),
    TextBlock: ("text",),
    ThinkingBlock: ("thinking",),
    ToolUseBlock: ("id", "name", "input"),
    ToolResultBlock: ("tool_use_id", "content", "is_error"),
}
"""The fields the hand-written readers set, positionally, in order: a record that gains a
field must gain it here too (a test compares these with the records' own fields)."""

_FAST_TYPE_READERS: Final[dict[str, Callable[[JsonObject], Frame]]] = {
    **_TYPE_READERS,
    "assistant": _lazy_assistant,
    "user": _lazy_user,
    "stream_event": _lazy_stream_event,
}
_FAST_SYSTEM_READERS: Final[dict[str, Callable[[JsonObject], Frame]]] = {
    **_SYSTEM_READERS,
    "status": _lazy_status,
}
_EAGER_TYPE_READERS: Final[dict[str, Callable[[JsonObject], Frame]]] = {
    **_TYPE_READERS,
    "assistant": _read_assistant,
    "user": _read_user,
    "stream_event": _read_stream_event,
}
_EAGER_SYSTEM_READERS: Final[dict[str, Callable[[JsonObject], Frame]]] = {
    **_SYSTEM_READERS,
    "status": _read_status,
}


def parse_frame(obj: JsonObject) -> Frame:
    """Read one decoded JSON object into its frame record (never raises); the frequent
    frames are built lazily (see the module docstring)."""
    return _parse_frame(obj, _FAST_TYPE_READERS, _FAST_SYSTEM_READERS)


def parse_frame_eagerly(obj: JsonObject) -> Frame:
    """:func:`parse_frame` with every field of every frame structured at once (by the
    hand-written readers): what a lazily built frame's fields are filled from."""
    return _parse_frame(obj, _EAGER_TYPE_READERS, _EAGER_SYSTEM_READERS)


def parse_frame_by_converter(obj: JsonObject) -> Frame:
    """:func:`parse_frame` with the converter's readers alone: the definition the fast
    readers of the frequent frames are checked against."""
    return _parse_frame(obj, _TYPE_READERS, _SYSTEM_READERS)


def _parse_frame(
    obj: JsonObject,
    readers: dict[str, Callable[[JsonObject], Frame]],
    system_readers: dict[str, Callable[[JsonObject], Frame]],
) -> Frame:
    kind = obj.get("type")
    note = None
    try:
        if kind == "system":
            subtype = obj.get("subtype")
            reader = system_readers.get(subtype) if isinstance(subtype, str) else None
            return (reader or _read_system_other)(obj)
        reader = readers.get(kind) if isinstance(kind, str) else None
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
        lines = self._framer.split(chunk)
        if lines is None:  # a line over the cap may end in it: numbered items, one by one
            return _decode(self._framer.feed(chunk))
        return _decode_lines(*lines)

    def close(self) -> list[LineEvent]:
        """End of stream: decode the unterminated last line, if any."""
        return _decode(self._framer.close())


def _read_system(obj: JsonObject, source: bytes) -> Frame:
    if obj.get("subtype") == "status":  # _lazy_status, inlined
        session_id = obj.get("session_id")
        frame = _new(SystemStatus)
        _set_status_source(frame, source)
        _set_status_session(frame, session_id if isinstance(session_id, str) else None)
        return frame
    return parse_frame(obj)


def _read_other(obj: JsonObject, _: bytes) -> Frame:
    return parse_frame(obj)


def _read_control_request(obj: JsonObject, source: bytes) -> Frame:
    """A ``control_request`` read again from its line by :mod:`json`, whose integers are
    exact: orjson reads one past 64 bits as a float, and the input of a ``can_use_tool``
    ask goes back to the CLI in an allow (``updatedInput``) as it came. ``obj`` when the
    stricter reader refuses the line (NaN, say): the ask is still answered (denied)."""
    try:
        exact = json.loads(source, parse_constant=_reject_constant, parse_float=_finite_float)
    except (ValueError, RecursionError):
        return parse_frame(obj)
    return parse_frame(exact if isinstance(exact, dict) else obj)


register_source_loader(orjson.loads)

_DECODER_READERS: Final[dict[str, Callable[[JsonObject, bytes], Frame]]] = {
    **dict.fromkeys(_TYPE_READERS, _read_other),
    "assistant": _lazy_assistant,
    "user": _lazy_user,
    "stream_event": _lazy_stream_event,
    "system": _read_system,
    "control_request": _read_control_request,
}
"""The decoder's reader of each frame type it knows, given the object and the line it was
decoded from (objects of other types, and lines that are not objects, take
:func:`parse_line`); none of them raises on an object orjson made. The frequent frames keep
the line, not the object (see :mod:`nexo_trio.core.events`)."""


def _decode_lines(line_no: int, lines: list[bytes]) -> list[LineEvent]:
    """The events of ``lines``, numbered from ``line_no``, blank ones included (each is at
    most the cap): :func:`parse_line` of each non-blank one, inlined for the usual case, a
    JSON object orjson reads (a blank line is one orjson refuses too)."""
    out: list[LineEvent] = []
    append = out.append
    loads = orjson.loads
    readers = _DECODER_READERS
    for index, data in enumerate(lines):
        try:
            obj = loads(data)
            # Not an object (a TypeError), an unknown or unhashable type (a KeyError or a
            # TypeError), a blank line or bad JSON (a JSONDecodeError, a ValueError):
            reader = readers[obj["type"]]
        except (ValueError, TypeError, KeyError):
            if data and not data.isspace():
                append(parse_line(line_no + index, data))
            continue
        append(reader(obj, data))
    return out


def _decode(items: list[Framed]) -> list[LineEvent]:
    out: list[LineEvent] = []
    append = out.append
    for item in items:
        if isinstance(item, Oversized):
            append(OversizedLine(item.line_no, item.size, _excerpt(item.head)))
            continue
        line_no, data = item
        # parse_line, inlined for the common case: a JSON object orjson reads.
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            append(parse_line(line_no, data))
            continue
        if type(obj) is not dict:
            append(parse_line(line_no, data))
        elif obj.get("type") == "control_request":
            append(_read_control_request(obj, data))
        else:
            append(parse_frame(obj))
    return out
