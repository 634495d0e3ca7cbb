"""``ClaudeCommand``: one ``claude -p`` invocation, as data, and the argv/stdin/env it means."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Final

import attrs

PROMPT_ARGV_LIMIT: Final = 100 * 1024
"""Prompts longer than this (in UTF-8 bytes) go on stdin: Linux caps one argv string at
128 KiB, and the rest of the command line needs room too."""

ENV_DROP: Final = ("CLAUDECODE",)
"""Variables never passed to the child: ``CLAUDECODE`` makes the CLI refuse to start,
believing it is nested inside another Claude Code session."""


def _tuple_of_str(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    return tuple(str(v) for v in value)  # type: ignore[attr-defined]


def _tuple_of_path(value: object) -> tuple[Path, ...]:
    if isinstance(value, (str, Path)):
        return (Path(value),)
    return tuple(Path(v) for v in value)  # type: ignore[attr-defined]


def _optional_path(value: object) -> Path | None:
    return None if value is None else Path(value)  # type: ignore[arg-type]


def _env(value: Mapping[str, str | None]) -> Mapping[str, str | None]:
    return dict(value)


@attrs.frozen(kw_only=True)
class ClaudeCommand:
    """Everything needed to start one Claude Code turn in print mode.

    ``resume`` continues a stored session; ``session_id`` starts a new one with a chosen id
    (they exclude each other). ``env`` overrides the inherited environment; a ``None``
    value removes a variable.
    """

    prompt: str
    binary: str = "claude"
    cwd: Path | None = attrs.field(default=None, converter=_optional_path)
    resume: str | None = None
    session_id: str | None = None
    model: str | None = None
    allowed_tools: tuple[str, ...] = attrs.field(default=(), converter=_tuple_of_str)
    disallowed_tools: tuple[str, ...] = attrs.field(default=(), converter=_tuple_of_str)
    permission_prompt_tool: str | None = None
    mcp_config: Path | None = attrs.field(default=None, converter=_optional_path)
    add_dirs: tuple[Path, ...] = attrs.field(default=(), converter=_tuple_of_path)
    append_system_prompt: str | None = None
    max_turns: int | None = None
    extra_args: tuple[str, ...] = attrs.field(default=(), converter=_tuple_of_str)
    stream_input: bool = False
    """The stdio control protocol (:mod:`nexo_trio.core.stdio_control`): input as JSON
    lines on a stdin that stays open (the prompt is a ``user`` message, not an argument),
    each user message the CLI takes echoed back, and permission asked on stdout
    (``--permission-prompt-tool=stdio`` unless another tool is named)."""
    # Compared but not hashed (a dict can't be): commands stay usable as dict keys.
    env: Mapping[str, str | None] = attrs.field(factory=dict, converter=_env, hash=False)

    def __attrs_post_init__(self) -> None:
        if not self.binary:
            raise ValueError("ClaudeCommand.binary must name the claude executable")
        if self.resume is not None and self.session_id is not None:
            raise ValueError("ClaudeCommand takes resume or session_id, not both")
        if self.max_turns is not None and self.max_turns < 1:
            raise ValueError(f"ClaudeCommand.max_turns must be at least 1, got {self.max_turns}")
        for name, value in (("resume", self.resume), ("session_id", self.session_id)):
            if value is not None and not value:
                raise ValueError(f"ClaudeCommand.{name} must not be empty")

    @property
    def prompt_on_stdin(self) -> bool:
        """Whether the prompt goes on stdin instead of argv.

        A prompt that starts with ``-`` would be read as a flag, a NUL byte can't be in
        argv at all, and a long one would hit the kernel's argv limits.
        """
        if self.stream_input:
            return False  # in a user message, not argv (nor raw on stdin)
        return (
            self.prompt.startswith("-")
            or "\0" in self.prompt
            or len(self.prompt.encode("utf-8", errors="surrogatepass")) > PROMPT_ARGV_LIMIT
        )

    def argv(self) -> list[str]:
        """The command line. Values go in ``--flag=value`` form so none can pass for a flag."""
        argv = [self.binary, "-p"]
        if self.stream_input:
            argv += ["--input-format", "stream-json", "--replay-user-messages"]
        elif not self.prompt_on_stdin:
            argv.append(self.prompt)
        argv += ["--output-format", "stream-json", "--verbose"]
        if self.resume is not None:
            argv.append(f"--resume={self.resume}")
        if self.session_id is not None:
            argv.append(f"--session-id={self.session_id}")
        if self.model is not None:
            argv.append(f"--model={self.model}")
        if self.allowed_tools:
            argv.append(f"--allowedTools={','.join(self.allowed_tools)}")
        if self.disallowed_tools:
            argv.append(f"--disallowedTools={','.join(self.disallowed_tools)}")
        prompt_tool = self.permission_prompt_tool
        if prompt_tool is None and self.stream_input:
            prompt_tool = "stdio"
        if prompt_tool is not None:
            argv.append(f"--permission-prompt-tool={prompt_tool}")
        if self.mcp_config is not None:
            argv += [f"--mcp-config={self.mcp_config}", "--strict-mcp-config"]
        argv += [f"--add-dir={d}" for d in self.add_dirs]
        if self.append_system_prompt is not None:
            argv.append(f"--append-system-prompt={self.append_system_prompt}")
        if self.max_turns is not None:
            argv.append(f"--max-turns={self.max_turns}")
        argv += self.extra_args
        return argv

    def stdin_data(self) -> bytes | None:
        """What to write on stdin before closing it; ``None`` means stdin is /dev/null (or,
        with ``stream_input``, the conversation's pipe)."""
        if not self.prompt_on_stdin:
            return None
        return self.prompt.encode("utf-8", errors="surrogatepass")

    def child_env(self, base: Mapping[str, str]) -> dict[str, str]:
        """The child's environment: ``base`` plus the overrides, minus ENV_DROP.

        ``base`` is the environment the CLI inherits (the shell passes ``os.environ``, or
        what its caller chose): reading the ambient environment is not the core's job.
        ``base`` itself is left unchanged.
        """
        env = dict(base)
        for key, value in self.env.items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
        for key in ENV_DROP:
            env.pop(key, None)
        return env
