"""Permission requests and decisions (pure data), and the reason a denied call gives.

Every tool call Claude Code would prompt for reaches a decider as a
:class:`PermissionRequest`; the decider returns a :class:`Decision`. Only the two allow
outcomes allow: ``deny``, ``unavailable`` and ``cancelled`` all go out as a deny with a
reason (the gate fails closed). ``abstain`` lets a chain ask its next decider; a chain that
ends abstaining denies. :mod:`nexo_trio.wire.gate_frames` puts a decision on the wire.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import json
import secrets
from typing import Any

import attrs


class DecisionOutcome(enum.Enum):
    """What a decider decided."""

    ALLOW_ONCE = "allow_once"
    ALLOW_SESSION = "allow_session"
    DENY = "deny"
    UNAVAILABLE = "unavailable"
    CANCELLED = "cancelled"
    ABSTAIN = "abstain"


ALLOWING = frozenset({DecisionOutcome.ALLOW_ONCE, DecisionOutcome.ALLOW_SESSION})


@attrs.frozen
class PermissionRequest:
    """One tool call waiting for permission."""

    goal_id: str
    tool_name: str
    input: dict[str, Any] = attrs.field(factory=dict)
    tool_use_id: str | None = None
    workspace: str | None = None
    goal_description: str = ""
    scratch: str | None = None
    """The goal's own scratch directory (its turns' ``TMPDIR``), when it has one."""
    confined: bool = False
    """The turn runs in a sandbox that bounds what any command can write."""
    blocked_path: str | None = None
    """The path the CLI's own permission check stopped at, when it says (the ``stdio``
    transport's asks do; ``mcp`` ones never)."""
    cli_reason: str | None = None
    """Why the CLI asks, in its own words, when it says (``stdio`` only)."""

    @functools.cached_property
    def digest(self) -> str:
        """A stable short digest of tool + canonical input (for caches and the ledger).

        Cached: it serialises the whole input, which can be megabytes (a Write)."""
        return input_digest(self.tool_name, self.input)


@attrs.frozen
class Decision:
    """A decider's answer. ``updated_input`` replaces the tool's input when allowing."""

    outcome: DecisionOutcome
    message: str | None = None
    updated_input: dict[str, Any] | None = None
    scope: str | None = None
    """For ``allow_session``: what the permission covers (e.g. ``tool`` or ``tool+input``)."""
    decider: str = ""
    rationale: str | None = None
    """Why (the decider's own words)."""
    effect: str | None = None
    """What the call would do, when the decider classified it (``read``, ``workspace``,
    ``destructive``, ``unknown``: see :mod:`nexo_trio.core.effects`)."""
    rule: str | None = None
    """The short stable name of the rule that classified it (``rm-outside-workspace``…)."""
    subject: str | None = None
    """The command or path the classification decided on."""

    @property
    def allowed(self) -> bool:
        """Whether the tool call may run."""
        return self.outcome in ALLOWING

    def with_decider(self, name: str) -> Decision:
        """The same decision, naming who made it (kept if already named)."""
        return self if self.decider else attrs.evolve(self, decider=name)


def allow(decider: str = "", *, updated_input: dict[str, Any] | None = None) -> Decision:
    """Allow this call once."""
    return Decision(DecisionOutcome.ALLOW_ONCE, decider=decider, updated_input=updated_input)


def deny(message: str, decider: str = "", *, rationale: str | None = None) -> Decision:
    """Deny with a message Claude will read."""
    return Decision(DecisionOutcome.DENY, message=message, decider=decider, rationale=rationale)


def unavailable(reason: str, decider: str = "") -> Decision:
    """The decider could not decide (timeout, transport error...): goes out as a deny."""
    return Decision(DecisionOutcome.UNAVAILABLE, message=reason, decider=decider)


def abstain(decider: str = "", reason: str | None = None) -> Decision:
    """No opinion: a chain asks its next decider."""
    return Decision(DecisionOutcome.ABSTAIN, message=reason, decider=decider)


def deny_message(decision: Decision) -> str:
    """The reason Claude reads for a call that is not allowed (never blank)."""
    given = decision.message if decision.message and decision.message.strip() else None
    match decision.outcome:
        case DecisionOutcome.UNAVAILABLE:
            why = f" ({given})" if given else ""
            return f"Permission denied: the permission decider is unavailable{why}"
        case DecisionOutcome.CANCELLED:
            return "Permission denied: the goal was cancelled"
        case DecisionOutcome.ABSTAIN:
            return "Permission denied: no rule or decider allows this tool call"
        case _:
            return given or "Permission denied"


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=str)
"""``json.dumps(..., sort_keys=True, separators=(",", ":"), default=str)``, made once."""


CLI_NOTE_CHARS = 500
"""The most characters of each part of :func:`cli_note` (they come from the turn)."""


def cli_note(request: PermissionRequest) -> str | None:
    """What the CLI's own check said about ``request``, for a decider's prompt (``None``
    when it said nothing). It is the turn's data, as untrusted as the input."""
    parts = []
    if request.blocked_path:
        parts.append(f"it stopped at the path {request.blocked_path[:CLI_NOTE_CHARS]}")
    if request.cli_reason:
        parts.append(f"it says: {request.cli_reason[:CLI_NOTE_CHARS]}")
    return "; ".join(parts) if parts else None


def input_digest(tool_name: str, tool_input: dict[str, Any]) -> str:
    """sha256 of the tool name and its canonical (sorted-keys) JSON input, 16 hex chars.

    An input nested too deep to encode (the CLI's JSON reader takes more depth than
    Python's encoder) gets a digest of its own, equal to no other: a cache never matches
    it, so no decision made on another input is ever reused for it."""
    try:
        canonical = _CANONICAL.encode([tool_name, tool_input])
    except RecursionError:
        canonical = f"unencodable:{tool_name}:{secrets.token_hex(16)}"
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]
