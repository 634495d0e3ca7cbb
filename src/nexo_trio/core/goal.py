"""A goal: what Claude must achieve, how we check it, and what it may spend.

Every record checks its fields when built (:mod:`nexo_trio.core.validation`), so a goal made
in Python is held to the same rules as one read from a goal file.
"""

from __future__ import annotations

from typing import Any, Final, TypeAlias

import attrs

from nexo_trio.core import validation as v
from nexo_trio.core.checkpoints import default_branch, goal_id_problem, ref_problem

BUILTIN_CHECKS: Final = ("git_clean", "no_paths_touched")
"""The custom checks every verifier registry starts with."""
DEFAULT_CHECK_TIMEOUT: Final = 300.0
"""How long a check's command may run when its ``timeout`` is not given (5 minutes: a
build or a test suite, not a hung process)."""


@attrs.frozen
class ShellCheck:
    """Passes when ``command`` (run with ``/bin/sh -c`` in the workspace) exits as expected.

    ``stdout_pattern``, when set, must also be found (Python regex, searched) in stdout.
    """

    command: str = attrs.field(validator=v.non_empty)
    timeout_s: float = attrs.field(default=DEFAULT_CHECK_TIMEOUT, validator=v.positive_duration)
    expect_exit: int = attrs.field(default=0, validator=v.exit_code)
    stdout_pattern: str | None = attrs.field(default=None, validator=v.optional(v.regex))
    label: str | None = None

    @property
    def title(self) -> str:
        """How failures name this check."""
        return self.label or f"shell: {self.command}"


@attrs.frozen
class FileMatchCheck:
    """Passes when the workspace file ``path`` exists and ``pattern`` is found in it."""

    path: str = attrs.field(validator=v.non_empty)
    pattern: str = attrs.field(validator=v.regex)
    required: bool = True
    label: str | None = None

    @property
    def title(self) -> str:
        """How failures name this check."""
        return self.label or f"file_match: {self.path} ~ /{self.pattern}/"


@attrs.frozen
class CustomCheck:
    """Passes when the named verifier of the registry says so."""

    name: str = attrs.field(validator=v.non_empty)
    args: dict[str, Any] = attrs.field(factory=dict)
    label: str | None = None

    @property
    def title(self) -> str:
        """How failures name this check."""
        return self.label or f"custom: {self.name}"


def _str_tuple(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    return tuple(value)  # type: ignore[arg-type]


@attrs.frozen
class LlmJudgeCheck:
    """Passes when a language model judges that the work meets ``rubric``.

    The judge is shown the rubric, the contents of the workspace files ``paths`` (each
    capped; a file that is missing or refused is shown as such) and, when ``command`` is
    set, that command's exit code and output (run like a ``shell`` check, within
    ``timeout_s``). It is asked through the Messages API with the client settings of the
    config's ``permission.llm`` (``base_url``, ``api_key_env``, ``timeout``), under
    ``model`` or else ``permission.llm.model``. Its answer must be the JSON object
    ``{"passed": true|false, "reasoning": "..."}``; the reasoning is the check's evidence.
    """

    rubric: str = attrs.field(validator=v.non_empty)
    model: str | None = attrs.field(default=None, validator=v.optional(v.non_empty))
    paths: tuple[str, ...] = attrs.field(
        default=(), converter=_str_tuple, validator=v.each(v.non_empty)
    )
    command: str | None = attrs.field(default=None, validator=v.optional(v.non_empty))
    timeout_s: float = attrs.field(default=DEFAULT_CHECK_TIMEOUT, validator=v.positive_duration)
    required: bool = True
    label: str | None = None

    @property
    def title(self) -> str:
        """How failures name this check."""
        if self.label:
            return self.label
        first = self.rubric.strip().splitlines()[0]
        return f"llm_judge: {first if len(first) <= 60 else first[:59] + '…'}"


Criterion: TypeAlias = ShellCheck | FileMatchCheck | CustomCheck | LlmJudgeCheck


def _branch_name(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is None:
        return
    v.non_empty(_, attribute, value)
    problem = ref_problem(f"refs/heads/{value}")
    if problem is not None:
        raise v.FieldError(attribute.name, f"not a valid branch name: {problem}")


@attrs.frozen
class GitWorkspace:
    """A goal's workspace as a git worktree of ``repo``: at ``base`` (default ``HEAD``), on
    a new branch ``branch`` (default ``nexo/<goal id>``), placed under the config's
    ``workspace_root`` as ``<workspace_root>/<goal id>``. A re-run reuses the worktree and
    its branch. The user's checkout of ``repo`` is never modified."""

    repo: str = attrs.field(validator=v.non_empty)
    base: str | None = attrs.field(default=None, validator=v.optional(v.non_empty))
    branch: str | None = attrs.field(default=None, validator=_branch_name)


def _workspace(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is None or isinstance(value, GitWorkspace):
        return
    v.non_empty(_, attribute, value)


@attrs.frozen
class Budget:
    """Limits of one goal; ``None`` means no limit on that axis."""

    max_turns: int | None = attrs.field(default=8, validator=v.optional(v.at_least(1)))
    max_wall_time_s: float | None = attrs.field(
        default=None, validator=v.optional(v.positive_duration)
    )
    max_tokens: int | None = attrs.field(default=None, validator=v.optional(v.at_least(1)))
    max_cost_usd: float | None = attrs.field(default=None, validator=v.optional(v.positive))
    max_consecutive_errors: int | None = attrs.field(default=3, validator=v.optional(v.at_least(1)))
    max_consecutive_denies: int | None = attrs.field(default=5, validator=v.optional(v.at_least(1)))


def _criteria(value: object) -> tuple[Criterion, ...]:
    return tuple(value)  # type: ignore[arg-type]


def _is_criterion(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, ShellCheck | FileMatchCheck | CustomCheck | LlmJudgeCheck):
        raise v.FieldError(
            attribute.name,
            "expected ShellCheck, FileMatchCheck, CustomCheck or LlmJudgeCheck items, "
            f"got {v.shown(value)}",
        )


@attrs.frozen
class Goal:
    """One goal, as read from a goal file or built in code.

    ``id`` names the goal in the ledger, in file names and on command lines: letters,
    digits, ``.``, ``_`` and ``-``, not starting with ``.`` or ``-``.
    """

    id: str = attrs.field(validator=v.goal_id)
    description: str = attrs.field(validator=v.non_empty)
    acceptance: tuple[Criterion, ...] = attrs.field(
        default=(), converter=_criteria, validator=v.each(_is_criterion)
    )
    budget: Budget = attrs.field(factory=Budget)
    workspace: str | GitWorkspace | None = attrs.field(default=None, validator=_workspace)
    """A directory (created only when absent from the goal: ``<workspace_root>/<id>``), or a
    :class:`GitWorkspace`."""
    checkpoints: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))
    """Checkpoint every turn of a plain directory that is no git repository, in a private
    shadow repository in the state dir (a repository or a worktree is always checkpointed)."""
    metadata: dict[str, Any] = attrs.field(factory=dict)

    def __attrs_post_init__(self) -> None:
        if isinstance(self.workspace, GitWorkspace) and self.workspace.branch is None:
            problem = goal_id_problem(self.id)
            if problem is not None:
                raise v.FieldError("workspace", f"no default branch: {problem}")

    @property
    def worktree(self) -> GitWorkspace | None:
        """The goal's :class:`GitWorkspace`, when it works in a worktree."""
        return self.workspace if isinstance(self.workspace, GitWorkspace) else None

    @property
    def branch(self) -> str | None:
        """The branch of the goal's worktree (``None`` for a plain directory)."""
        tree = self.worktree
        if tree is None:
            return None
        return tree.branch or default_branch(self.id)

    def custom_check_names(self) -> list[str]:
        """The names of the goal's custom checks, in order."""
        return [c.name for c in self.acceptance if isinstance(c, CustomCheck)]
