"""What ``nexo-trio run`` is given: the goal files (files and directories of them) and the
overrides of the common keys (``--max-turns``, ``--max-cost``, ``--model``, ``--decider``,
``--turn-timeout``). Every mistake is a :class:`~nexo_trio.cli.common.UserError`: one
line, exit 2, before anything runs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

import attrs

from nexo_trio.cli.common import UserError, read_goal
from nexo_trio.core.goal import Budget, Goal
from nexo_trio.core.settings import DECIDER_NAMES, Config, DeciderName, PermissionSettings
from nexo_trio.wire.files import parse_duration

GOAL_SUFFIXES: Final = (".yaml", ".yml")
"""What a goal file in a directory given to ``nexo-trio run`` is named."""


def goal_files(paths: Sequence[Path], *, config_file: Path | None = None) -> list[Path]:
    """The goal files ``paths`` name, in order: a file as it is, a directory as every
    ``*.yaml`` and ``*.yml`` file in it (not in its subdirectories; not hidden files, nor
    the ``--config`` file), sorted by name. A file named twice (directly or through its
    directory) and a directory without goal files are user errors."""
    config = config_file.resolve() if config_file is not None else None
    files: list[Path] = []
    seen: dict[Path, Path] = {}
    for path in paths:
        if path.is_dir():
            found = sorted(
                entry
                for entry in path.iterdir()
                if entry.suffix in GOAL_SUFFIXES
                and not entry.name.startswith(".")
                and entry.is_file()
                and entry.resolve() != config
            )
            if not found:
                raise UserError(f"{path}: no goal files (*.yaml, *.yml) in the directory")
        else:
            found = [path]
        for file in found:
            real = file.resolve()
            if real in seen:
                raise UserError(f"{file}: goal file given twice")
            seen[real] = file
            files.append(file)
    return files


def read_goals(files: Sequence[Path]) -> list[Goal]:
    """The goals of ``files``; two files of the same goal id are a user error."""
    goals: list[Goal] = []
    by_id: dict[str, Path] = {}
    for file in files:
        goal = read_goal(file)
        other = by_id.get(goal.id)
        if other is not None:
            raise UserError(f"{file}: goal id {goal.id!r} is also the id of {other}")
        by_id[goal.id] = file
        goals.append(goal)
    return goals


@attrs.frozen
class Overrides:
    """What the command line sets over the goals' budgets and the config (``None``: kept)."""

    max_turns: int | None = None
    max_cost_usd: float | None = None
    model: str | None = None
    decider: DeciderName | None = None
    turn_timeout_s: float | None = None

    @classmethod
    def parse(
        cls,
        *,
        max_turns: str | None = None,
        max_cost: str | None = None,
        model: str | None = None,
        decider: str | None = None,
        turn_timeout: str | None = None,
    ) -> Overrides:
        """The overrides of the options' texts; a value an option cannot take is a user
        error naming the option."""
        return cls(
            max_turns=None if max_turns is None else _max_turns(max_turns),
            max_cost_usd=None if max_cost is None else _max_cost(max_cost),
            model=None if model is None else _model(model),
            decider=None if decider is None else _decider(decider),
            turn_timeout_s=None if turn_timeout is None else _turn_timeout(turn_timeout),
        )

    def config(self, config: Config) -> Config:
        """``config`` with the model, decider and turn timeout set."""
        if self.model is not None:
            config = attrs.evolve(config, claude=attrs.evolve(config.claude, model=self.model))
        if self.decider is not None:
            permission = attrs.evolve(config.permission, decider=self.decider)
            config = attrs.evolve(config, permission=permission)
        if self.turn_timeout_s is not None:
            config = attrs.evolve(config, turn_timeout_s=self.turn_timeout_s)
        return config

    def goal(self, goal: Goal) -> Goal:
        """``goal`` with its budget's ``max_turns`` and ``max_cost_usd`` set."""
        budget = goal.budget
        if self.max_turns is not None:
            budget = attrs.evolve(budget, max_turns=self.max_turns)
        if self.max_cost_usd is not None:
            budget = attrs.evolve(budget, max_cost_usd=self.max_cost_usd)
        return goal if budget is goal.budget else attrs.evolve(goal, budget=budget)


def _max_turns(text: str) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise UserError(f"--max-turns: expected a whole number, got {text!r}") from None
    _check("--max-turns", lambda: Budget(max_turns=value))
    return value


def _max_cost(text: str) -> float:
    given = text.strip().removeprefix("$")
    try:
        value = float(given)
    except ValueError:
        raise UserError(f"--max-cost: expected an amount in USD like 2.50, got {text!r}") from None
    if not math.isfinite(value):
        raise UserError(f"--max-cost: expected an amount in USD like 2.50, got {text!r}")
    _check("--max-cost", lambda: Budget(max_cost_usd=value))
    return value


def _model(text: str) -> str:
    if not text.strip():
        raise UserError("--model: must not be empty")
    return text.strip()


def _decider(text: str) -> DeciderName:
    name = next((known for known in DECIDER_NAMES if known == text), None)
    if name is None:
        raise UserError(f"--decider: expected one of {', '.join(DECIDER_NAMES)}, got {text!r}")
    _check("--decider", lambda: PermissionSettings(decider=name))
    return name


def _turn_timeout(text: str) -> float:
    try:
        value = parse_duration(text)
    except ValueError as exc:
        raise UserError(f"--turn-timeout: {exc}") from None
    _check("--turn-timeout", lambda: Config(turn_timeout_s=value))
    return value


def _check(option: str, build: Callable[[], object]) -> None:
    """Build the record the value goes into: its own validation, worded for the option."""
    try:
        build()
    except ValueError as exc:
        # "max_turns: must be at least 1, got 0" -> "--max-turns: must be at least 1, got 0"
        message = str(exc)
        _, sep, rest = message.partition(": ")
        raise UserError(f"{option}: {rest if sep else message}") from None
