"""The outcome of one CLI run (one turn), before acceptance criteria are looked at."""

from __future__ import annotations

import enum

import attrs

from nexo_trio.core.events import PermissionDenial, Usage


class TurnKind(enum.Enum):
    """What the goal loop should do next, as far as this one run can tell."""

    CLAIMED_DONE = "claimed_done"
    """Claude says it is done; acceptance criteria decide whether it is."""
    SLEEP = "sleep"
    """Claude asked to be woken up later (``{"__nexo_sleep__": true, ...}``)."""
    CONTINUE = "continue"
    """The run did not finish the work; another turn may (see ``cause``)."""
    ESCALATE = "escalate"
    """Another turn will not help: a human (or the caller) must look."""
    CANCELLED = "cancelled"
    """The run was cancelled."""


class Cause(enum.Enum):
    """Why a turn ended the way it did: a machine-readable tag for policies."""

    COMPLETED = "completed"
    SLEEP_REQUESTED = "sleep_requested"
    INVALID_SLEEP = "invalid_sleep"
    API_ERROR_RETRYABLE = "api_error_retryable"
    API_ERROR = "api_error"
    PROMPT_TOO_LONG = "prompt_too_long"
    MAX_TURNS = "max_turns"
    MAX_BUDGET = "max_budget"
    SESSION_INVALID = "session_invalid"
    EXECUTION_ERROR = "execution_error"
    RESULT_ERROR = "result_error"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"
    NO_RESULT = "no_result"
    EXIT_ERROR = "exit_error"
    SPAWN_FAILED = "spawn_failed"
    GATE_UNAVAILABLE = "gate_unavailable"


COMPACT_HINT = "compact"
"""``TurnOutcome.hint`` when the context is too long and a ``/compact`` turn should come next."""


@attrs.frozen
class TurnOutcome:
    """The classified result of one turn.

    ``kind`` and ``reason`` say what happened; the other fields summarise the run (usage and
    cost come from the result frame; without one, from the assistant frames, the cost
    estimated at the price table's rates; ``cost_usd`` is this run's own cost, not the
    cumulative ``total_cost_usd`` that ``--resume`` carries over).
    """

    kind: TurnKind
    cause: Cause
    reason: str | None = None
    hint: str | None = None
    session_invalid: bool = False
    sleep_ms: int | None = None
    session_id: str | None = None
    final_text: str | None = None
    usage: Usage = attrs.field(factory=Usage)
    cost_usd: float = 0.0
    cumulative_cost_usd: float | None = None
    context_tokens: int = 0
    num_turns: int | None = None
    api_error_status: int | None = None
    exit_code: int | None = None
    exit_signal: int | None = None
    permission_denials: tuple[PermissionDenial, ...] = ()
    tool_uses: int = 0
    tool_results: int = 0
    tool_error: str | None = None
    """The error text of the turn's trailing run of identical failing tool results."""
    tool_error_run: int = 0
    compact_post_tokens: int | None = None
    """The context size after the turn's latest compaction, when it compacted."""
    malformed_lines: int = 0
    oversized_lines: int = 0
    events: int = 0
