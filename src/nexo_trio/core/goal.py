"""A goal: what Claude must achieve, how we check it, and what it may spend."""

from __future__ import annotations

from typing import Any, TypeAlias

import attrs


@attrs.frozen
class ShellCheck:
    """Passes when ``command`` (run with ``/bin/sh -c`` in the workspace) exits as expected.

    ``stdout_pattern``, when set, must also be found (Python regex, searched) in stdout.
    """

    command: str
    timeout_s: float = 60.0
    expect_exit: int = 0
    stdout_pattern: str | None = None
    label: str | None = None

    @property
    def title(self) -> str:
        """How failures name this check."""
        return self.label or f"shell: {self.command}"


@attrs.frozen
class FileMatchCheck:
    """Passes when the workspace file ``path`` exists and ``pattern`` is found in it."""

    path: str
    pattern: str
    required: bool = True
    label: str | None = None

    @property
    def title(self) -> str:
        """How failures name this check."""
        return self.label or f"file_match: {self.path} ~ /{self.pattern}/"


@attrs.frozen
class CustomCheck:
    """Passes when the named verifier of the registry says so."""

    name: str
    args: dict[str, Any] = attrs.field(factory=dict)
    label: str | None = None

    @property
    def title(self) -> str:
        """How failures name this check."""
        return self.label or f"custom: {self.name}"


Criterion: TypeAlias = ShellCheck | FileMatchCheck | CustomCheck


@attrs.frozen
class Budget:
    """Limits of one goal; ``None`` means no limit on that axis."""

    max_turns: int | None = 8
    max_wall_time_s: float | None = None
    max_tokens: int | None = None
    max_cost_usd: float | None = None
    max_consecutive_errors: int | None = 3
    max_consecutive_denies: int | None = 5


@attrs.frozen
class Goal:
    """One goal, as read from a goal file or built in code."""

    id: str
    description: str
    acceptance: tuple[Criterion, ...] = ()
    budget: Budget = attrs.field(factory=Budget)
    workspace: str | None = None
    metadata: dict[str, Any] = attrs.field(factory=dict)
