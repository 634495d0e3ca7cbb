"""The orchestrator's configuration, as data (loaded from YAML by ``nexo_trio.wire.files``)."""

from __future__ import annotations

from typing import Literal, TypeAlias, get_args

import attrs

from nexo_trio.core.compact import CompactPolicy
from nexo_trio.core.framing import DEFAULT_LINE_CAP

DeciderName: TypeAlias = Literal["allow_all", "deny_all", "rules", "llm", "chain"]
DECIDER_NAMES: tuple[DeciderName, ...] = get_args(DeciderName)


@attrs.frozen
class ClaudeSettings:
    """How to start Claude Code, and its default arguments."""

    binary: str = "claude"
    model: str | None = None
    allowed_tools: tuple[str, ...] = ("Read", "Grep", "Glob", "LS")
    disallowed_tools: tuple[str, ...] = ()
    append_system_prompt: str | None = None
    extra_args: tuple[str, ...] = ()
    env: dict[str, str] = attrs.field(factory=dict)


@attrs.frozen
class LlmSettings:
    """The LLM decider's client settings."""

    base_url: str | None = None
    model: str = "claude-haiku-4-5"
    api_key_env: str = "ANTHROPIC_API_KEY"
    timeout_s: float = 20.0


@attrs.frozen
class PermissionSettings:
    """Which decider answers the permission gate."""

    decider: DeciderName = "rules"
    llm: LlmSettings = attrs.field(factory=LlmSettings)
    chain: tuple[DeciderName, ...] = ("rules", "llm")
    tool_timeout_s: float = 60.0
    """The CLI's timeout for one permission call (the MCP server's ``timeout``); the gate
    answers well inside it, so Claude always gets a decision, never a failed call."""


@attrs.frozen
class ReplaySettings:
    """Replay policy settings."""

    max_retries: int = 3


@attrs.frozen
class Config:
    """Everything ``nexo-trio run`` and ``Orchestrator`` are configured with."""

    claude: ClaudeSettings = attrs.field(factory=ClaudeSettings)
    turn_timeout_s: float = 600.0
    kill_grace_s: float = 5.0
    line_cap: int = DEFAULT_LINE_CAP
    state_dir: str = "./.nexo"
    workspace_root: str = "./.nexo/workspaces"
    max_concurrent_goals: int = 4
    progress_every: int = 5
    permission: PermissionSettings = attrs.field(factory=PermissionSettings)
    compact: CompactPolicy = attrs.field(factory=CompactPolicy)
    replay: ReplaySettings = attrs.field(factory=ReplaySettings)
