"""Everything one turn can observe, as frozen records.

Two families feed the turn reducer:

* **Frames**: one JSON object the CLI printed on stdout (``--output-format stream-json``).
  Each frame keeps the object it was read from in ``raw``, so fields we do not model (and
  frame types we have never seen) are kept, never dropped.
* **Engine events**: what the supervising shell observed about the process: it was spawned
  (or could not be), its stdout closed, it exited, a deadline passed, the caller cancelled,
  a line could not be read, the tail of its stderr.

Nothing here does I/O; the records are built by :mod:`nexo_trio.wire.stream_json` (frames)
and by the engine (engine events), and consumed by :mod:`nexo_trio.core.turn`.

**Lazily built frames.** The frequent frames (assistant and user messages, stream events,
status frames) are records like the others, but the decoder builds them from their ``raw``
object with only what the turn reducer reads set (a user or assistant message's
``digest``, a stream event's or status frame's ``session_id``); their other fields are
structured from ``raw`` on first access, all at once, by the reader the wire module
registered (:func:`register_structurer`), and kept. Reading a field, comparing, ``repr``,
``attrs.evolve`` or pickling one fills it; it is then the same record as one structured
eagerly (the tests check that for any frame object). A record built by its constructor has
every field set, and its ``digest`` is computed from them on first access.
"""

from __future__ import annotations

import signal as _signal
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, TypeAlias

import attrs

JsonObject: TypeAlias = dict[str, Any]
"""A decoded JSON object, kept as the CLI sent it."""


def _raw() -> Any:
    """The ``raw`` field: the JSON object a record was read from (not compared, not shown)."""
    return attrs.field(factory=dict, repr=False, eq=False)


def _source() -> Any:
    """The ``source`` field of a lazily built frame: the stdout line the decoder read it
    from, its ``raw`` decoded again from it on first access (``None`` for a record built
    otherwise). Not compared, not shown."""
    return attrs.field(init=False, repr=False, eq=False)


@attrs.frozen
class Usage:
    """Token counts of a request or a whole turn (the four the API reports)."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        """All four counts summed: what a token budget is charged."""
        return (
            self.input_tokens
            + self.output_tokens
            + self.cache_read_input_tokens
            + self.cache_creation_input_tokens
        )

    @property
    def context_tokens(self) -> int:
        """Tokens the model read as context: input plus both cache counts."""
        return self.input_tokens + self.cache_read_input_tokens + self.cache_creation_input_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cache_read_input_tokens=self.cache_read_input_tokens + other.cache_read_input_tokens,
            cache_creation_input_tokens=(
                self.cache_creation_input_tokens + other.cache_creation_input_tokens
            ),
        )


# --------------------------------------------------------------------------- content blocks


@attrs.frozen
class TextBlock:
    """A text content block."""

    text: str = ""


@attrs.frozen
class ThinkingBlock:
    """A thinking content block (extended thinking)."""

    thinking: str = ""


@attrs.frozen
class ToolUseBlock:
    """Claude asks to run a tool."""

    id: str = ""
    name: str = ""
    input: JsonObject = attrs.field(factory=dict)


@attrs.frozen
class ToolResultBlock:
    """The result of a tool call, as the CLI fed it back to the model."""

    tool_use_id: str = ""
    content: Any = None
    is_error: bool = False


@attrs.frozen
class OtherBlock:
    """A content block of a type we do not model, kept whole."""

    type: str | None = None
    raw: JsonObject = _raw()


ContentBlock: TypeAlias = TextBlock | ThinkingBlock | ToolUseBlock | ToolResultBlock | OtherBlock


# --------------------------------------------------------------------------- lazy frames

_STRUCTURERS: dict[type[Any], Callable[[JsonObject], Any]] = {}
"""The eager reader of each lazily built frame type (see :func:`register_structurer`)."""
_SOURCE_LOADERS: list[Callable[[bytes], JsonObject]] = []
"""How a frame's ``raw`` is read again from its ``source`` line (see
:func:`register_source_loader`)."""


def register_structurer(cls: type[Any], structure: Callable[[JsonObject], Any]) -> None:
    """Name the function that structures a whole ``cls`` record from a frame object: the
    fields of a lazily built ``cls`` are filled from it on first access."""
    _STRUCTURERS[cls] = structure


def register_source_loader(loads: Callable[[bytes], JsonObject]) -> None:
    """Name the function that decodes a lazily built frame's ``source`` line into its
    ``raw`` object (the one the decoder decoded it with)."""
    _SOURCE_LOADERS[:] = [loads]


def slot_setter(cls: type[Any], name: str) -> Callable[[Any, Any], None]:
    """The setter of slot ``name`` of the slotted record class ``cls``: how a lazily built
    frame gets the few fields it is built with (the records are frozen)."""
    setter: Callable[[Any, Any], None] = cls.__dict__[name].__set__
    return setter


class _LazyFrame:
    """Base of the frame records the decoder may build lazily (see the module docstring).

    A field not set yet is a slot not set yet: only then does Python call ``__getattr__``,
    which fills every unset field of the record from its ``raw`` object (or computes the
    ``digest`` of a record built by its constructor) and returns the one asked for. The
    decoder builds them with the line they came from as ``source`` instead of ``raw``, which
    is then decoded again from it on first access: the decoded objects of a batch of frames
    are freed as soon as each frame is built (the reducer does not read them), so the
    cyclic collector neither counts nor moves them while the batch is held.
    """

    __slots__ = ()
    _EAGER: ClassVar[frozenset[str]] = frozenset()
    """The fields a lazily built record is always built with, besides ``raw`` or
    ``source``."""

    def _digest(self) -> Any:
        """The ``digest`` computed from the record's fields."""
        raise AttributeError("digest")

    if not TYPE_CHECKING:  # for mypy, an unknown attribute stays an error

        def __getattr__(self, name: str) -> Any:
            cls = type(self)
            if name == "digest":
                value = self._digest()
                object.__setattr__(self, "digest", value)
                return value
            if name == "source":  # built from an object, not by the decoder from a line
                object.__setattr__(self, "source", None)
                return None
            if name == "raw":
                source = object.__getattribute__(self, "source")  # unset: AttributeError
                raw = _SOURCE_LOADERS[0](source)
                object.__setattr__(self, "raw", raw)
                return raw
            if name.startswith("__") or name in cls._EAGER:
                raise AttributeError(name)
            names = [f.name for f in attrs.fields(cls) if f.init]
            if name not in names:
                raise AttributeError(name)
            full = _STRUCTURERS[cls](self.raw)
            for field in names:
                try:
                    object.__getattribute__(self, field)
                except AttributeError:
                    object.__setattr__(self, field, getattr(full, field))
            return object.__getattribute__(self, name)


def _last_text(content: tuple[ContentBlock, ...]) -> str | None:
    """The text of the last non-empty text block, if any."""
    text = None
    for block in content:
        if type(block) is TextBlock and block.text:
            text = block.text
    return text


# --------------------------------------------------------------------------- frames


@attrs.frozen
class McpServerStatus:
    """One MCP server's connection status, as the init frame reports it."""

    name: str = ""
    status: str = ""


@attrs.frozen
class SystemInit:
    """``system/init``: the first frame; names the session, model, tools and MCP servers."""

    session_id: str | None = None
    model: str | None = None
    cwd: str | None = None
    tools: tuple[str, ...] = ()
    mcp_servers: tuple[McpServerStatus, ...] = ()
    permission_mode: str | None = None
    claude_code_version: str | None = None
    raw: JsonObject = _raw()


@attrs.frozen
class SystemStatus(_LazyFrame):
    """``system/status``: e.g. ``requesting`` or ``compacting`` (lazily built: see the
    module docstring)."""

    _EAGER: ClassVar[frozenset[str]] = frozenset({"session_id"})

    session_id: str | None = None
    status: str | None = None
    raw: JsonObject = _raw()
    source: bytes | None = _source()


@attrs.frozen
class CompactBoundary:
    """``system/compact_boundary``: the conversation was compacted."""

    session_id: str | None = None
    trigger: str | None = None
    pre_tokens: int | None = None
    post_tokens: int | None = None
    raw: JsonObject = _raw()


@attrs.frozen
class ApiRetry:
    """``system/api_retry``: the CLI is retrying a failed API request itself."""

    session_id: str | None = None
    attempt: int = 0
    max_retries: int = 0
    retry_delay_ms: int = 0
    error_status: int | None = None
    error: str | None = None
    raw: JsonObject = _raw()


@attrs.frozen
class PermissionDeniedFrame:
    """``system/permission_denied``: the CLI refused a tool call."""

    session_id: str | None = None
    tool_name: str | None = None
    tool_use_id: str | None = None
    raw: JsonObject = _raw()


@attrs.frozen
class SystemOther:
    """A ``system`` frame of a subtype we do not model, kept whole."""

    session_id: str | None = None
    subtype: str | None = None
    raw: JsonObject = _raw()


AssistantDigest: TypeAlias = tuple[str | None, str | None, str | None, str | None, tuple[str, ...]]
"""What the turn reducer reads of an assistant message besides its ``usage``: its session
id, message id and model, the text of its last non-empty text block, and the names of its
tool calls. (Strings only: the collector untracks such a tuple the first time it sees it,
so a batch of frames held while it runs costs it less.)"""
UserDigest: TypeAlias = tuple[str | None, tuple[tuple[bool, Any], ...]]
"""What the turn reducer reads of a user message: its session id, and ``(is_error,
content)`` of each of its tool results."""


@attrs.frozen
class AssistantMessage(_LazyFrame):
    """An ``assistant`` frame: one model message (text, thinking, tool calls).

    Its ``usage`` is per request and partial; a turn's usage comes from its result frame.
    API failures arrive as a synthetic message with ``is_api_error_message`` set. Lazily
    built (see the module docstring): with its ``digest`` and ``usage``.
    """

    _EAGER: ClassVar[frozenset[str]] = frozenset({"usage"})

    session_id: str | None = None
    message_id: str | None = None
    model: str | None = None
    content: tuple[ContentBlock, ...] = ()
    usage: Usage | None = None
    stop_reason: str | None = None
    parent_tool_use_id: str | None = None
    error: str | None = None
    is_api_error_message: bool = False
    api_error_status: int | None = None
    raw: JsonObject = _raw()
    digest: AssistantDigest = attrs.field(init=False, eq=False, repr=False)
    """What the turn reducer reads of it (:data:`AssistantDigest`)."""
    source: bytes | None = _source()

    def _digest(self) -> AssistantDigest:
        tools = tuple(b.name for b in self.content if type(b) is ToolUseBlock)
        return self.session_id, self.message_id, self.model, _last_text(self.content), tools


@attrs.frozen
class UserMessage(_LazyFrame):
    """A ``user`` frame: tool results the CLI fed back (or a replayed prompt). Lazily built
    (see the module docstring): with its ``digest``."""

    session_id: str | None = None
    content: tuple[ContentBlock, ...] = ()
    parent_tool_use_id: str | None = None
    raw: JsonObject = _raw()
    digest: UserDigest = attrs.field(init=False, eq=False, repr=False)
    """What the turn reducer reads of it (:data:`UserDigest`)."""
    source: bytes | None = _source()

    def _digest(self) -> UserDigest:
        results = tuple((b.is_error, b.content) for b in self.content if type(b) is ToolResultBlock)
        return self.session_id, results


@attrs.frozen
class ModelUsage:
    """One model's entry in ``modelUsage`` / ``model_usage_since_last_result``."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cost_usd: float = 0.0
    context_window: int | None = None


@attrs.frozen
class PermissionDenial:
    """One entry of the result frame's ``permission_denials``."""

    tool_name: str | None = None
    tool_use_id: str | None = None
    tool_input: JsonObject = attrs.field(factory=dict)


@attrs.frozen
class Result:
    """The ``result`` frame: how the CLI run ended, with the run's usage and cost.

    ``total_cost_usd`` is cumulative across ``--resume``; the run's own cost is the sum of
    ``costUSD`` in ``model_usage_since_last_result`` (see :attr:`run_cost_usd`).
    """

    session_id: str | None = None
    subtype: str | None = None
    is_error: bool = False
    result: str | None = None
    errors: tuple[str, ...] = ()
    api_error_status: int | None = None
    terminal_reason: str | None = None
    stop_reason: str | None = None
    usage: Usage = attrs.field(factory=Usage)
    total_cost_usd: float | None = None
    model_usage_since_last_result: dict[str, ModelUsage] | None = None
    num_turns: int | None = None
    duration_ms: int | None = None
    permission_denials: tuple[PermissionDenial, ...] = ()
    raw: JsonObject = _raw()

    @property
    def run_cost_usd(self) -> float | None:
        """This run's own cost; ``None`` when the CLI did not report it per run."""
        if self.model_usage_since_last_result is None:
            return None
        return sum((m.cost_usd for m in self.model_usage_since_last_result.values()), 0.0)


@attrs.frozen
class StreamEvent(_LazyFrame):
    """A ``stream_event`` frame (``--include-partial-messages``): one raw API event (lazily
    built: see the module docstring)."""

    _EAGER: ClassVar[frozenset[str]] = frozenset({"session_id"})

    session_id: str | None = None
    event: JsonObject = attrs.field(factory=dict)
    raw: JsonObject = _raw()
    source: bytes | None = _source()


@attrs.frozen
class RateLimitEvent:
    """A ``rate_limit_event`` frame, kept whole."""

    session_id: str | None = None
    raw: JsonObject = _raw()


@attrs.frozen
class ControlRequest:
    """A ``control_request`` frame (stdio permission protocol)."""

    session_id: str | None = None
    request_id: str | None = None
    subtype: str | None = None
    request: JsonObject = attrs.field(factory=dict)
    raw: JsonObject = _raw()


@attrs.frozen
class UnknownFrame:
    """A JSON object of a type we do not model (or could not read), kept whole."""

    session_id: str | None = None
    type: str | None = None
    note: str | None = None
    raw: JsonObject = _raw()


Frame: TypeAlias = (
    SystemInit
    | SystemStatus
    | CompactBoundary
    | ApiRetry
    | PermissionDeniedFrame
    | SystemOther
    | AssistantMessage
    | UserMessage
    | Result
    | StreamEvent
    | RateLimitEvent
    | ControlRequest
    | UnknownFrame
)

# --------------------------------------------------------------------------- line events


@attrs.frozen
class MalformedLine:
    """A stdout line that is not a JSON object (bad UTF-8, bad or truncated JSON, a list...)."""

    line_no: int
    excerpt: str
    error: str


@attrs.frozen
class OversizedLine:
    """A stdout line longer than the framer's cap; its bytes were skipped but its start
    (``excerpt``, decoded leniently)."""

    line_no: int
    size: int
    excerpt: str = ""


LineEvent: TypeAlias = Frame | MalformedLine | OversizedLine
"""What one stdout line becomes."""

# --------------------------------------------------------------------------- engine events

# Exit codes a shell-style parent reports for "terminated by signal N" (128 + N). The CLI
# itself exits 143 when it handles SIGTERM.
_SIGNAL_EXIT_CODES = {
    128 + s.value: s.value
    for s in (_signal.SIGHUP, _signal.SIGINT, _signal.SIGKILL, _signal.SIGTERM)
}


@attrs.frozen
class Spawned:
    """The process started."""

    pid: int
    argv: tuple[str, ...] = ()


@attrs.frozen
class SpawnFailed:
    """The process could not be started (binary missing, not executable, ...)."""

    reason: str


@attrs.frozen
class StdoutClosed:
    """The process's stdout reached EOF (or the engine stopped reading it)."""


@attrs.frozen
class ProcessExited:
    """The process ended: with an exit code, or killed by a signal."""

    exit_code: int | None = None
    signal: int | None = None

    @classmethod
    def from_returncode(cls, returncode: int) -> ProcessExited:
        """Build from a POSIX returncode, where ``-N`` means "killed by signal N"."""
        if returncode < 0:
            return cls(exit_code=None, signal=-returncode)
        return cls(exit_code=returncode, signal=None)

    @property
    def killed_signal(self) -> int | None:
        """The signal that ended the process, also when reported as exit code 128+N."""
        if self.signal is not None:
            return self.signal
        if self.exit_code is not None:
            return _SIGNAL_EXIT_CODES.get(self.exit_code)
        return None


@attrs.frozen
class DeadlineHit:
    """The turn's timeout passed before the process finished."""

    timeout_s: float


@attrs.frozen
class Cancelled:
    """The turn was cancelled (by the caller or an operator)."""

    reason: str = "cancelled"


@attrs.frozen
class StderrTail:
    """The last bytes the process wrote to stderr (bounded), decoded."""

    text: str


EngineEvent: TypeAlias = (
    Spawned | SpawnFailed | StdoutClosed | ProcessExited | DeadlineHit | Cancelled | StderrTail
)

Event: TypeAlias = LineEvent | EngineEvent
"""Anything the turn reducer accepts."""


def signal_name(signum: int) -> str:
    """``SIGTERM`` for 15; ``signal 99`` for a number with no name."""
    try:
        return _signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"
