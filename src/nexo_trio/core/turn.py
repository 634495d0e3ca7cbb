"""The turn state machine: ``reduce(state, event) -> state`` and ``classify(state)``.

Pure functions over frozen records; the engine and ``nexo-trio replay`` both only feed them.
``reduce_all(state, events)`` folds a batch (the engine's: one read of stdout) into one new
state, the same as ``reduce`` event by event.

Rules of ``reduce``
-------------------
Phases: ``pending`` -> ``running`` (on :class:`Spawned`) -> ``finished`` (once stdout has
closed **and** the process has exited, in either order), or ``pending`` -> ``finished`` on
:class:`SpawnFailed` (ignored once a result frame is in).

1. Every line event (frame, malformed line, oversized line) bumps ``events``; malformed and
   oversized lines bump their own counters too. Nothing else about them is kept.
2. Before the result frame, frames update the turn: ``session_id`` becomes the last one any
   frame named; the init frame is kept; assistant frames set the last text, the last tool
   and the context size of the latest request, and their usage is kept per API message (the
   CLI prints several frames for one message, with its id and usage on each: a message is
   counted once, each count at the largest any of its frames reported), which gives the
   turn's spend so far, its cost estimated by :mod:`nexo_trio.core.pricing`; ``user``
   frames' tool results are counted,
   and a failing one extends the run of identical tool errors (a success ends it);
   ``api_retry`` and ``compact_boundary`` are counted (the latter also keeps the context
   size after compaction). The first ``result`` frame is kept and freezes all of this.
3. After the result frame, frames change nothing but ``events``: the outcome is decided.
4. ``StdoutClosed`` and ``ProcessExited`` are recorded once each (the first exit wins).
5. ``DeadlineHit`` and ``Cancelled`` are recorded (the first of each wins); they only
   matter when no result frame came, or when the result is the CLI's answer to our
   ``interrupt`` (an ``error_during_execution`` result that came while we were stopping).
6. ``StderrTail`` replaces the stored tail.

Rules of ``classify`` (first match wins)
----------------------------------------
* spawn failed -> ``escalate``.
* a required MCP server (the permission gate) not connected at init -> ``escalate``
  "permission gate unavailable" (the engine stops the CLI at once).
* a result frame -> decided by the frame alone (see :func:`_classify_result`), except an
  ``error_during_execution`` result of a turn being stopped (cancelled, deadline hit): the
  CLI's answer to our ``interrupt`` (stdio transport), classified as the stop below, its
  session kept.
* no result: cancelled -> ``cancelled``; deadline hit -> ``continue`` "turn timeout";
  killed by a signal (also exit 128+N) -> ``continue`` "interrupted"; clean exit or no exit
  seen -> ``continue`` "stream ended without result"; non-zero exit -> ``continue`` with the
  code and the stderr tail.

The outcome's usage and cost (:func:`turn_spend`) are the result frame's; without one (a
turn killed, timed out or crashed), what the assistant frames reported, its cost estimated.
"""

from __future__ import annotations

import enum
import json
import math
import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Final

import attrs

from nexo_trio.core.events import (
    ApiRetry,
    AssistantMessage,
    Cancelled,
    CompactBoundary,
    DeadlineHit,
    EngineEvent,
    Event,
    MalformedLine,
    OversizedLine,
    ProcessExited,
    Result,
    Spawned,
    SpawnFailed,
    StderrTail,
    StdoutClosed,
    StreamEvent,
    SystemInit,
    SystemStatus,
    Usage,
    UserMessage,
    signal_name,
)
from nexo_trio.core.outcome import COMPACT_HINT, Cause, TurnKind, TurnOutcome
from nexo_trio.core.pricing import estimate_cost


class Phase(enum.Enum):
    """Where the turn's process is in its life."""

    PENDING = "pending"
    RUNNING = "running"
    FINISHED = "finished"


@attrs.frozen
class MessageSpend:
    """What one API message of the turn used, as its assistant frames reported it."""

    message_id: str | None
    model: str | None
    usage: Usage
    cost_usd: float = 0.0
    """What ``usage`` costs at the price table's rates for ``model`` (an estimate)."""


@attrs.frozen
class TurnState:
    """Everything the reducer remembers about one turn."""

    phase: Phase = Phase.PENDING
    pid: int | None = None
    spawn_error: str | None = None
    session_id: str | None = None
    init: SystemInit | None = None
    result: Result | None = None
    last_text: str | None = None
    last_tool: str | None = None
    tool_uses: int = 0
    context_tokens: int = 0
    api_retries: int = 0
    compactions: int = 0
    events: int = 0
    malformed_lines: int = 0
    oversized_lines: int = 0
    stdout_closed: bool = False
    exit: ProcessExited | None = None
    deadline_s: float | None = None
    cancel_reason: str | None = None
    stderr_tail: str = ""
    tool_results: int = 0
    tool_error: str | None = None
    """The error text of the latest run of identical failing tool results (``None`` when
    the latest tool result succeeded)."""
    tool_error_run: int = 0
    """How long that run is: identical failing tool results in a row."""
    compact_post_tokens: int | None = None
    """The context size after the latest compaction (``compact_boundary``)."""
    required_mcp_servers: tuple[str, ...] = ()
    """MCP servers the turn cannot do without (the permission gate's)."""
    gate_error: str | None = None
    """Set when the init frame shows a required MCP server not connected."""
    messages: tuple[MessageSpend, ...] = ()
    """The usage of each API message so far, in order (one entry per message id)."""
    estimated_usage: Usage = attrs.field(factory=Usage)
    """The sum of :attr:`messages`: the turn's tokens so far, before its result frame."""
    estimated_cost_usd: float = 0.0
    """What :attr:`messages` cost at the price table's rates (an estimate)."""
    stopping_at_result: str | None = None
    """How the turn was being stopped when its result came: ``cancelled`` or ``deadline``
    (``None``: it was not)."""

    @property
    def finished(self) -> bool:
        """The process is gone and its stdout fully read (or it never started)."""
        return self.phase is Phase.FINISHED


INITIAL_STATE = TurnState()


def reduce(state: TurnState, event: Event) -> TurnState:
    """Fold one event into the turn state (pure; see the module docstring for the rules)."""
    return reduce_all(state, (event,))


def reduce_all(state: TurnState, events: Iterable[Event]) -> TurnState:
    """Fold ``events`` into the turn state, in order: the same as :func:`reduce` of each in
    turn, at a fraction of the cost for a batch of frames (each run of line events is folded
    into local variables, and one new state is made of it: :func:`_fold_lines`)."""
    remaining = iter(events)
    while True:
        state, engine_event = _fold_lines(state, remaining)
        if engine_event is None:
            return state
        state = _reduce_engine(state, engine_event)


def _reduce_engine(state: TurnState, event: EngineEvent) -> TurnState:
    match event:
        case Spawned(pid=pid):
            if state.phase is not Phase.PENDING:
                return state
            return attrs.evolve(state, phase=Phase.RUNNING, pid=pid)
        case SpawnFailed(reason=reason):
            # Once a result frame is in, the outcome is decided (rule 3): a late spawn
            # failure must not turn it into an escalation.
            if state.phase is not Phase.PENDING or state.result is not None:
                return state
            return attrs.evolve(state, phase=Phase.FINISHED, spawn_error=reason)
        case StdoutClosed():
            if state.stdout_closed:
                return state
            return _settle(attrs.evolve(state, stdout_closed=True))
        case ProcessExited():
            if state.exit is not None:
                return state
            return _settle(attrs.evolve(state, exit=event))
        case DeadlineHit(timeout_s=timeout_s):
            if state.deadline_s is not None:
                return state
            return attrs.evolve(state, deadline_s=timeout_s)
        case Cancelled(reason=reason):
            if state.cancel_reason is not None:
                return state
            return attrs.evolve(state, cancel_reason=reason)
        case StderrTail(text=text):
            return attrs.evolve(state, stderr_tail=text)
    raise AssertionError(f"not an engine event: {event!r}")  # pragma: no cover


_ENGINE_EVENTS: Final = (
    Spawned,
    SpawnFailed,
    StdoutClosed,
    ProcessExited,
    DeadlineHit,
    Cancelled,
    StderrTail,
)


# "pending" is still connecting: not a failure we can name yet.
_USABLE_MCP_STATUSES = frozenset({"connected", "pending"})


def _missing_server(state: TurnState, init: SystemInit) -> str | None:
    statuses = {server.name: server.status for server in init.mcp_servers}
    for name in state.required_mcp_servers:
        status = statuses.get(name)
        if status not in _USABLE_MCP_STATUSES:
            shown = "not listed" if status is None else status or "unknown"
            return f"permission gate unavailable: MCP server {name!r} is {shown}"
    return None


def _settle(state: TurnState) -> TurnState:
    if state.stdout_closed and state.exit is not None and state.phase is not Phase.FINISHED:
        return attrs.evolve(state, phase=Phase.FINISHED)
    return state


def _fold_lines(state: TurnState, events: Iterator[Event]) -> tuple[TurnState, EngineEvent | None]:
    """Fold the line events of ``events`` (rules 1-3 of the module docstring) until its
    first engine event, which is returned (``None`` once ``events`` is exhausted) with the
    state before it.

    The fields line events change are local variables while a run of them is folded: a
    frame costs a few of their updates, one record is made per run. The frequent frames are
    read through their ``digest`` (what a lazily built frame is built with). The messages'
    spend is copied only when a frame changes it, and its cost summed once per run (the same
    ``math.fsum`` of the same list as frame by frame).
    """
    count = state.events
    malformed = state.malformed_lines
    oversized = state.oversized_lines
    result = state.result
    session_id = state.session_id
    init = state.init
    gate_error = state.gate_error
    last_text = state.last_text
    last_tool = state.last_tool
    tool_uses = state.tool_uses
    context_tokens = state.context_tokens
    api_retries = state.api_retries
    compactions = state.compactions
    compact_post_tokens = state.compact_post_tokens
    tool_results = state.tool_results
    tool_error = state.tool_error
    tool_error_run = state.tool_error_run
    estimated_usage = state.estimated_usage
    spend: Sequence[MessageSpend] = state.messages
    copied: list[MessageSpend] | None = None  # spend, once a frame changed it
    engine_event: EngineEvent | None = None
    last_usage = None
    for event in events:
        # By exact type (the records are final), the most frequent first.
        if type(event) is AssistantMessage:
            count += 1
            if result is not None:
                continue
            sid, message_id, model, text, tools = event.digest
            if sid:
                session_id = sid
            if text is not None:
                last_text = text
            if tools:
                last_tool = tools[-1]
                tool_uses += len(tools)
            usage = event.usage
            if usage is None:
                continue
            if usage is not last_usage:  # a message's frames repeat one usage record
                context_tokens = usage.context_tokens
                last_usage = usage
            if spend and message_id is not None:
                latest = spend[-1]
                if (
                    latest.message_id == message_id
                    and (not model or model == latest.model)
                    and (usage is latest.usage or usage == latest.usage)
                ):
                    continue  # the usual repeat of a message's usage: nothing changes
            change = _spend(spend, message_id, model, usage)
            if change is None:
                continue
            index, entry, old_usage = change
            if copied is None:
                spend = copied = list(spend)
            if index is None:
                copied.append(entry)
            else:
                copied[index] = entry
            estimated_usage = _minus(estimated_usage + entry.usage, old_usage)
        elif type(event) is StreamEvent or type(event) is SystemStatus:
            count += 1
            if result is None:
                sid = event.session_id
                if sid:
                    session_id = sid
        elif type(event) is UserMessage:
            count += 1
            if result is not None:
                continue
            sid, outcomes = event.digest
            if sid:
                session_id = sid
            for is_error, content in outcomes:
                tool_results += 1
                if not is_error:
                    tool_error, tool_error_run = None, 0
                    continue
                text = tool_error_text(content)
                tool_error_run = tool_error_run + 1 if text == tool_error else 1
                tool_error = text
        elif isinstance(event, _ENGINE_EVENTS):
            engine_event = event
            break
        elif isinstance(event, MalformedLine):
            count += 1
            malformed += 1
        elif isinstance(event, OversizedLine):
            count += 1
            oversized += 1
        else:  # any other frame
            count += 1
            if result is not None:
                continue
            session_id = event.session_id or session_id
            if isinstance(event, Result):
                result = event
            elif isinstance(event, SystemInit):
                init = event
                gate_error = gate_error or _missing_server(state, event)
            elif isinstance(event, ApiRetry):
                api_retries += 1
            elif isinstance(event, CompactBoundary):
                compactions += 1
                compact_post_tokens = event.post_tokens
    if count == state.events:
        return state, engine_event  # nothing was folded
    changed: dict[str, Any] = {}
    if copied is not None:
        changed = {
            "messages": tuple(copied),
            "estimated_usage": estimated_usage,
            "estimated_cost_usd": math.fsum(m.cost_usd for m in copied),
        }
    if result is not None and state.result is None:
        if state.cancel_reason is not None:
            changed["stopping_at_result"] = "cancelled"
        elif state.deadline_s is not None:
            changed["stopping_at_result"] = "deadline"
    state = attrs.evolve(
        state,
        events=count,
        malformed_lines=malformed,
        oversized_lines=oversized,
        result=result,
        session_id=session_id,
        init=init,
        gate_error=gate_error,
        last_text=last_text,
        last_tool=last_tool,
        tool_uses=tool_uses,
        context_tokens=context_tokens,
        api_retries=api_retries,
        compactions=compactions,
        compact_post_tokens=compact_post_tokens,
        tool_results=tool_results,
        tool_error=tool_error,
        tool_error_run=tool_error_run,
        **changed,
    )
    return state, engine_event


def _spend(
    messages: Sequence[MessageSpend], message_id: str | None, model: str | None, usage: Usage
) -> tuple[int | None, MessageSpend, Usage] | None:
    """How an assistant frame's usage changes the messages' spend: the index of its
    message's entry (``None``: a new one to add), the new entry, and the usage it replaces;
    ``None`` when nothing changes (it repeats what its message's earlier frames said)."""
    known = None
    if message_id is not None:
        # Latest first: a message's frames come together.
        for index in range(len(messages) - 1, -1, -1):
            if messages[index].message_id == message_id:
                known = index
                break
    old = MessageSpend(message_id, None, Usage()) if known is None else messages[known]
    model = model or old.model
    if known is not None and model == old.model and (usage is old.usage or usage == old.usage):
        return None  # the usual repeat: no new record to make
    largest = _largest(old.usage, usage)
    if known is not None and (model, largest) == (old.model, old.usage):
        return None
    return known, MessageSpend(message_id, model, largest, estimate_cost(model, largest)), old.usage


def _minus(a: Usage, b: Usage) -> Usage:
    """``a`` less ``b``, count by count (``b`` is part of ``a``)."""
    return Usage(
        input_tokens=a.input_tokens - b.input_tokens,
        output_tokens=a.output_tokens - b.output_tokens,
        cache_read_input_tokens=a.cache_read_input_tokens - b.cache_read_input_tokens,
        cache_creation_input_tokens=a.cache_creation_input_tokens - b.cache_creation_input_tokens,
    )


def _largest(a: Usage, b: Usage) -> Usage:
    """Each count at the larger of the two (a later frame of a message never lowers one):
    one of them when it is the larger in every count (the usual case: no new record)."""
    if (
        b.input_tokens >= a.input_tokens
        and b.output_tokens >= a.output_tokens
        and b.cache_read_input_tokens >= a.cache_read_input_tokens
        and b.cache_creation_input_tokens >= a.cache_creation_input_tokens
    ):
        return b
    return Usage(
        input_tokens=max(a.input_tokens, b.input_tokens),
        output_tokens=max(a.output_tokens, b.output_tokens),
        cache_read_input_tokens=max(a.cache_read_input_tokens, b.cache_read_input_tokens),
        cache_creation_input_tokens=max(
            a.cache_creation_input_tokens, b.cache_creation_input_tokens
        ),
    )


def turn_spend(state: TurnState) -> tuple[Usage, float]:
    """The turn's tokens and cost so far: the result frame's once it came (its usage, and
    its cost when it reports one), else what the assistant frames reported, the cost
    estimated. What a turn that never printed a result still spent. The result of a turn
    we interrupted (:func:`_interrupted_by_us`) may leave out the message it cut short:
    each count is then the larger of the two, so a stop never lowers what was seen."""
    result = state.result
    if result is None:
        return state.estimated_usage, state.estimated_cost_usd
    if _interrupted_by_us(state, result):
        usage, cost = _result_spend(state, result)
        return _largest(usage, state.estimated_usage), max(cost, state.estimated_cost_usd)
    return _result_spend(state, result)


def _result_spend(state: TurnState, result: Result) -> tuple[Usage, float]:
    """The result frame's usage and cost (the cumulative cost, or the estimate, when it
    reports no per-run figure)."""
    run_cost = result.run_cost_usd
    if run_cost is not None:
        return result.usage, run_cost
    # Without the per-run figure, the cumulative one is the best we have (older CLIs).
    cumulative = result.total_cost_usd
    return result.usage, cumulative if cumulative is not None else state.estimated_cost_usd


TOOL_ERROR_CHARS = 500
"""How much of a failing tool result's text identifies the error (for stuck detection)."""


def tool_error_text(content: object) -> str:
    """The text of a tool result's content (a string, or text blocks), cut to a bounded
    prefix: what two errors must share to count as the same."""
    if isinstance(content, str):
        text = content
    elif isinstance(content, list):
        parts = [
            item["text"]
            for item in content
            if isinstance(item, dict) and isinstance(item.get("text"), str)
        ]
        text = "\n".join(parts)
    else:
        text = "" if content is None else str(content)
    return text.strip()[:TOOL_ERROR_CHARS]


# --------------------------------------------------------------------------- classify

# Statuses worth another try: rate limits, timeouts, server errors, "overloaded".
RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504, 529})
_TRANSIENT_TEXT = re.compile(
    r"overloaded|rate.?limit|timed? ?out|timeout|connection|ECONNRESET|ETIMEDOUT|ECONNREFUSED"
    r"|socket hang up|fetch failed|network",
    re.IGNORECASE,
)
_PROMPT_TOO_LONG = re.compile(r"prompt is too long|prompt too long", re.IGNORECASE)
_SESSION_INVALID = re.compile(
    r"no conversation found|requires a valid session|invalid session|session (id )?not found",
    re.IGNORECASE,
)
SLEEP_MARKER = "__nexo_sleep__"
# Greedy and stripped afterwards: a lazy body followed by ``\s*`` is quadratic on long runs
# of whitespace, and the text is whatever the model wrote.
_FENCE = re.compile(r"^```(?:json)?(.*)```$", re.DOTALL)


def classify(state: TurnState) -> TurnOutcome:
    """Decide the turn's outcome from its state (pure; rules in the module docstring)."""
    summary = _summary(state)
    result = state.result
    if state.spawn_error is not None:
        return TurnOutcome(
            kind=TurnKind.ESCALATE,
            cause=Cause.SPAWN_FAILED,
            reason=f"could not start claude: {state.spawn_error}",
            **summary,
        )
    if state.gate_error is not None:
        return TurnOutcome(
            kind=TurnKind.ESCALATE, cause=Cause.GATE_UNAVAILABLE, reason=state.gate_error, **summary
        )
    if result is not None and not _interrupted_by_us(state, result):
        return _classify_result(result, summary)
    if state.cancel_reason is not None and state.stopping_at_result != "deadline":
        return TurnOutcome(
            kind=TurnKind.CANCELLED, cause=Cause.CANCELLED, reason=state.cancel_reason, **summary
        )
    if state.deadline_s is not None:
        return TurnOutcome(
            kind=TurnKind.CONTINUE,
            cause=Cause.TIMEOUT,
            reason=f"turn timeout after {state.deadline_s:g}s",
            **summary,
        )
    exit_ = state.exit
    if exit_ is not None and exit_.killed_signal is not None:
        return TurnOutcome(
            kind=TurnKind.CONTINUE,
            cause=Cause.INTERRUPTED,
            reason=f"interrupted: claude was killed by {signal_name(exit_.killed_signal)}",
            **summary,
        )
    if exit_ is None or exit_.exit_code == 0:
        return TurnOutcome(
            kind=TurnKind.CONTINUE,
            cause=Cause.NO_RESULT,
            reason="stream ended without result",
            **summary,
        )
    tail = state.stderr_tail.strip()
    reason = f"claude exited with code {exit_.exit_code} without a result"
    return TurnOutcome(
        kind=TurnKind.CONTINUE,
        cause=Cause.EXIT_ERROR,
        reason=f"{reason}: {tail}" if tail else reason,
        **summary,
    )


def _interrupted_by_us(state: TurnState, result: Result) -> bool:
    """Whether ``result`` is how the CLI ended a turn we were stopping (cancelled or past
    its deadline) on our ``interrupt`` request (the stdio transport): Claude Code 2.1.332
    answers it with an ``error_during_execution`` result, its session intact. The stop
    then decides the outcome, not the error; a turn that ended well in the meantime keeps
    its result."""
    return state.stopping_at_result is not None and result.subtype == "error_during_execution"


def _summary(state: TurnState) -> dict[str, Any]:
    result = state.result
    exit_ = state.exit
    usage, cost = turn_spend(state)
    cumulative = None
    final_text = state.last_text
    num_turns = None
    api_status = None
    denials: tuple[Any, ...] = ()
    if result is not None:
        cumulative = result.total_cost_usd
        if result.result is not None:
            final_text = result.result
        num_turns = result.num_turns
        api_status = result.api_error_status
        denials = result.permission_denials
    return {
        "session_id": state.session_id,
        "final_text": final_text,
        "usage": usage,
        "cost_usd": cost,
        "cumulative_cost_usd": cumulative,
        "context_tokens": state.context_tokens,
        "num_turns": num_turns,
        "api_error_status": api_status,
        "exit_code": exit_.exit_code if exit_ is not None else None,
        "exit_signal": exit_.signal if exit_ is not None else None,
        "permission_denials": denials,
        "tool_uses": state.tool_uses,
        "tool_results": state.tool_results,
        "tool_error": state.tool_error,
        "tool_error_run": state.tool_error_run,
        "compact_post_tokens": state.compact_post_tokens,
        "malformed_lines": state.malformed_lines,
        "oversized_lines": state.oversized_lines,
        "events": state.events,
    }


def _error_texts(result: Result) -> list[str]:
    """The error messages of a result frame: ``errors[]``, else legacy ``message``/``result``."""
    texts = [e for e in result.errors if e]
    if not texts:
        legacy = result.raw.get("message")
        if isinstance(legacy, str) and legacy:
            texts.append(legacy)
        if result.result:
            texts.append(result.result)
    return texts


def _classify_result(result: Result, summary: dict[str, Any]) -> TurnOutcome:
    subtype = result.subtype or ""
    if subtype == "success" and not result.is_error:
        return _classify_success(result, summary)
    texts = _error_texts(result)
    joined = "; ".join(texts)
    if any(_SESSION_INVALID.search(t) for t in texts):
        return TurnOutcome(
            kind=TurnKind.CONTINUE,
            cause=Cause.SESSION_INVALID,
            reason=f"session invalid: {joined}",
            session_invalid=True,
            **summary,
        )
    if subtype == "success" or result.api_error_status is not None:
        return _classify_api_error(result, joined, summary)
    if subtype == "error_max_turns":
        return TurnOutcome(
            kind=TurnKind.ESCALATE,
            cause=Cause.MAX_TURNS,
            reason=f"claude reached its max turns: {joined}" if joined else "max turns reached",
            **summary,
        )
    if subtype == "error_max_budget_usd":
        return TurnOutcome(
            kind=TurnKind.ESCALATE,
            cause=Cause.MAX_BUDGET,
            reason=f"claude reached its budget: {joined}" if joined else "max budget reached",
            **summary,
        )
    if subtype == "error_during_execution":
        return TurnOutcome(
            kind=TurnKind.ESCALATE,
            cause=Cause.EXECUTION_ERROR,
            reason=f"error during execution: {joined}" if joined else "error during execution",
            **summary,
        )
    if not result.is_error and not subtype.startswith("error"):
        # A success-like subtype we don't know yet: acceptance will judge the work.
        return _classify_success(result, summary)
    return TurnOutcome(
        kind=TurnKind.ESCALATE,
        cause=Cause.RESULT_ERROR,
        reason=f"{subtype or 'error'}: {joined}" if joined else (subtype or "error result"),
        **summary,
    )


def _classify_api_error(result: Result, joined: str, summary: dict[str, Any]) -> TurnOutcome:
    status = result.api_error_status
    text = joined or "API error"
    label = text
    if status is not None and not text.lower().startswith("api error"):
        label = f"API error {status}: {text}"
    if result.terminal_reason == "prompt_too_long" or _PROMPT_TOO_LONG.search(text):
        return TurnOutcome(
            kind=TurnKind.CONTINUE,
            cause=Cause.PROMPT_TOO_LONG,
            reason=label,
            hint=COMPACT_HINT,
            **summary,
        )
    if status is None:
        retryable = bool(_TRANSIENT_TEXT.search(text))
    else:
        retryable = status in RETRYABLE_STATUSES or "overloaded" in text.lower()
    return TurnOutcome(
        kind=TurnKind.CONTINUE if retryable else TurnKind.ESCALATE,
        cause=Cause.API_ERROR_RETRYABLE if retryable else Cause.API_ERROR,
        reason=label,
        **summary,
    )


def _classify_success(result: Result, summary: dict[str, Any]) -> TurnOutcome:
    text = result.result or ""
    request = parse_sleep_request(text)
    if request is None:
        return TurnOutcome(kind=TurnKind.CLAIMED_DONE, cause=Cause.COMPLETED, **summary)
    if isinstance(request, str):
        return TurnOutcome(
            kind=TurnKind.CONTINUE, cause=Cause.INVALID_SLEEP, reason=request, **summary
        )
    duration_ms, reason = request
    return TurnOutcome(
        kind=TurnKind.SLEEP,
        cause=Cause.SLEEP_REQUESTED,
        reason=reason,
        sleep_ms=duration_ms,
        **summary,
    )


def parse_sleep_request(text: str) -> tuple[int, str | None] | str | None:
    """Read a sleep request from a result text.

    Returns ``None`` when the text is not a sleep request, ``(duration_ms, reason)`` when it
    is a valid one, and an error message when it is marked as one but malformed.
    """
    if SLEEP_MARKER not in text:
        return None
    body = text.strip()
    fenced = _FENCE.match(body)
    if fenced:
        body = fenced.group(1).strip()
    try:
        obj = json.loads(body)
    except (ValueError, RecursionError):  # deep nesting exhausts json's recursion
        return None
    if not isinstance(obj, dict) or obj.get(SLEEP_MARKER) is not True:
        return None
    duration = obj.get("duration_ms")
    if isinstance(duration, bool) or not isinstance(duration, int) or duration < 0:
        return (
            f"invalid sleep request: duration_ms must be a non-negative integer, got {duration!r}"
        )
    reason = obj.get("reason")
    return duration, reason if isinstance(reason, str) else None
