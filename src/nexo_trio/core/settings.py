"""The orchestrator's configuration, as data (loaded from YAML by ``nexo_trio.wire.files``).

Every record checks its fields when built (:mod:`nexo_trio.core.validation`), so a config
made in Python is held to the same rules as one read from a file.
"""

from __future__ import annotations

from typing import Literal, TypeAlias, get_args

import attrs

from nexo_trio.core import validation as v
from nexo_trio.core.compact import CompactPolicy
from nexo_trio.core.framing import DEFAULT_LINE_CAP
from nexo_trio.core.permission_rules import rules_validator

DeciderName: TypeAlias = Literal["allow_all", "deny_all", "rules", "llm", "human", "chain"]
DECIDER_NAMES: tuple[DeciderName, ...] = get_args(DeciderName)

UnknownPolicy: TypeAlias = Literal["allow", "deny", "defer"]
UNKNOWN_POLICIES: tuple[UnknownPolicy, ...] = get_args(UnknownPolicy)

SandboxMode: TypeAlias = Literal["auto", "bwrap", "none"]
SANDBOX_MODES: tuple[SandboxMode, ...] = get_args(SandboxMode)

StuckAction: TypeAlias = Literal["fresh_session_then_escalate", "escalate", "off"]
STUCK_ACTIONS: tuple[StuckAction, ...] = get_args(StuckAction)

PermissionTransport: TypeAlias = Literal["mcp", "stdio"]
PERMISSION_TRANSPORTS: tuple[PermissionTransport, ...] = get_args(PermissionTransport)

AcceptanceMode: TypeAlias = Literal["sequential", "parallel"]
ACCEPTANCE_MODES: tuple[AcceptanceMode, ...] = get_args(AcceptanceMode)


def _str_tuple(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    return tuple(value)  # type: ignore[arg-type]


@attrs.frozen
class ClaudeSettings:
    """How to start Claude Code, and its default arguments."""

    binary: str = attrs.field(default="claude", validator=v.non_empty)
    model: str | None = None
    allowed_tools: tuple[str, ...] = attrs.field(
        default=("Read", "Grep", "Glob", "LS"), converter=_str_tuple
    )
    disallowed_tools: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple)
    append_system_prompt: str | None = None
    extra_args: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple)
    env: dict[str, str] = attrs.field(factory=dict)


@attrs.frozen
class LlmSettings:
    """The LLM decider's client settings."""

    base_url: str | None = None
    model: str = attrs.field(default="claude-haiku-4-5", validator=v.non_empty)
    api_key_env: str = attrs.field(default="ANTHROPIC_API_KEY", validator=v.non_empty)
    timeout_s: float = attrs.field(default=20.0, validator=v.positive_duration)


@attrs.frozen
class PermissionSettings:
    """Which decider answers the permission gate."""

    decider: DeciderName = attrs.field(default="rules", validator=v.one_of(DECIDER_NAMES))
    llm: LlmSettings = attrs.field(factory=LlmSettings)
    chain: tuple[DeciderName, ...] = attrs.field(
        default=("rules", "llm"), converter=_str_tuple, validator=v.each(v.one_of(DECIDER_NAMES))
    )
    transport: PermissionTransport = attrs.field(
        default="stdio", validator=v.one_of(PERMISSION_TRANSPORTS)
    )
    """How the CLI asks: ``stdio`` (the CLI's own control protocol on its stdin and stdout:
    no server, interrupts that keep the session, messages mid-turn) or ``mcp`` (a
    permission MCP server the CLI spawns each turn, relaying to the gate over a Unix
    socket)."""
    tool_timeout_s: float = attrs.field(default=60.0, validator=v.positive_duration)
    """The CLI's timeout for one permission call (the MCP server's ``timeout``); the gate
    answers well inside it, so Claude always gets a decision, never a failed call."""
    unknown: UnknownPolicy | None = attrs.field(
        default=None, validator=v.optional(v.one_of(UNKNOWN_POLICIES))
    )
    """What the ``rules`` decider does with a call whose effect it cannot read: ``allow``,
    ``deny`` or ``defer`` (to the next decider of a chain). ``None``: allow when the turn is
    confined (the sandbox bounds any effect), deny when it is not."""
    allow: tuple[str, ...] = attrs.field(
        default=(), converter=_str_tuple, validator=rules_validator
    )
    """Claude Code permission rules that allow (``Bash(npm test:*)``, ``Edit(src/**)``)."""
    deny: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple, validator=rules_validator)
    """Claude Code permission rules that deny; a deny wins over any allow."""


@attrs.frozen
class ReplaySettings:
    """Replay policy settings."""

    max_retries: int = attrs.field(default=3, validator=v.at_least(0))
    rollback_on_timeout: bool = attrs.field(
        default=False, validator=attrs.validators.instance_of(bool)
    )
    """Before retrying a turn that timed out, put its workspace back to the turn's
    checkpoint (only for a checkpointed workspace). Off by default: what the turn did
    stays for the retry to build on."""


@attrs.frozen
class StuckSettings:
    """Stuck detection: the same failed checks with the same evidence after ``after``
    claimed completions in a row, or the same tool error ``after`` times in a row.

    ``action``: ``fresh_session_then_escalate`` (one new conversation with the failures,
    and if that gets stuck too, escalate), ``escalate``, or ``off``.
    """

    after: int = attrs.field(default=3, validator=v.at_least(2))
    action: StuckAction = attrs.field(
        default="fresh_session_then_escalate", validator=v.one_of(STUCK_ACTIONS)
    )


@attrs.frozen
class SandboxSettings:
    """How each turn is confined.

    ``mode``: ``bwrap`` (bubblewrap; a turn fails to start without it), ``none``
    (unconfined), or ``auto`` (bwrap when it works here, else unconfined with a warning).
    ``writable``: directories a turn may write besides its workspace and scratch dir.
    ``network: false`` cuts the turn off the network but for the API.
    """

    mode: SandboxMode = attrs.field(default="auto", validator=v.one_of(SANDBOX_MODES))
    writable: tuple[str, ...] = attrs.field(
        default=(), converter=_str_tuple, validator=v.each(v.non_empty)
    )
    network: bool = True


@attrs.frozen
class Config:
    """Everything ``nexo-trio run`` and ``Orchestrator`` are configured with."""

    claude: ClaudeSettings = attrs.field(factory=ClaudeSettings)
    turn_timeout_s: float = attrs.field(default=600.0, validator=v.positive_duration)
    kill_grace_s: float = attrs.field(default=5.0, validator=v.non_negative_duration)
    line_cap: int = attrs.field(default=DEFAULT_LINE_CAP, validator=v.at_least(1))
    state_dir: str = attrs.field(default="./.nexo", validator=v.non_empty)
    store: str | None = attrs.field(default=None, validator=attrs.validators.optional(v.non_empty))
    """Where the ledger, the bindings and the goal queue are: a SQLite file (a path) or a
    PostgreSQL database (``postgresql://...``); ``None``: ``nexo.db`` in ``state_dir``."""
    lease_timeout_s: float = attrs.field(default=30.0, validator=v.positive_duration)
    """How long a goal's lease holds without a heartbeat: after that (its orchestrator died,
    its host was lost) another worker may take the goal over."""
    workspace_root: str = attrs.field(default="./.nexo/workspaces", validator=v.non_empty)
    max_concurrent_goals: int = attrs.field(default=4, validator=v.at_least(1))
    progress_every: int = attrs.field(default=5, validator=v.at_least(1))
    permission: PermissionSettings = attrs.field(factory=PermissionSettings)
    compact: CompactPolicy = attrs.field(factory=CompactPolicy)
    replay: ReplaySettings = attrs.field(factory=ReplaySettings)
    stuck: StuckSettings = attrs.field(factory=StuckSettings)
    sandbox: SandboxSettings = attrs.field(factory=SandboxSettings)
    acceptance_mode: AcceptanceMode = attrs.field(
        default="sequential", validator=v.one_of(ACCEPTANCE_MODES)
    )
    """How a goal's acceptance checks run: ``sequential`` (in the order written, stopping at
    the first failing required check; the rest are reported as not run) or ``parallel``
    (all at once)."""
