"""``nexo-trio check GOAL.yaml``: validate a goal and the config, and run its acceptance
checks once in its workspace, with no Claude.

The workspace is the one ``nexo-trio run`` would use (:meth:`Orchestrator._open_workspace`:
the same resolution and the same refusals), but ``check`` creates nothing a run would make
first: a worktree goal whose worktree does not exist yet, or a goal whose default workspace
does not exist yet, is refused (exit 2); a ``checkpoints: true`` directory whose shadow
repository is not made yet is checked without one. The checks run as the run runs them (the
config's ``acceptance_mode``, and, for ``git_clean`` / ``no_paths_touched``, the goal's first
checkpoint when the ledger has one).

Exit codes: 0 every required check passed, 1 not met, 2 an invalid goal or config file or a
workspace that cannot be used.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import attrs
import click
import trio

from nexo_trio.cli.common import (
    EXIT_NOT_DONE,
    STATE_DIR_ERRORS,
    UserError,
    read_config,
    read_goal,
    store_option,
)
from nexo_trio.cli.stores import open_error
from nexo_trio.core.acceptance import CheckResult, Verdict
from nexo_trio.core.checkpoints import WorkspaceProblem
from nexo_trio.core.goal import Goal
from nexo_trio.core.goal_machine import apply, initial_state
from nexo_trio.core.settings import Config
from nexo_trio.orchestrator.acceptance import Baseline, evaluate
from nexo_trio.orchestrator.orchestrator import LayoutError, Orchestrator
from nexo_trio.orchestrator.workspace import GoalWorkspace, worktree_path
from nexo_trio.wire.goal_json import converter, event_from_ledger
from nexo_trio.wire.outcome_json import dumps


@attrs.frozen
class Checked:
    """What ``check`` found: where the checks ran, and their verdict."""

    goal: Goal
    workspace: Path
    verdict: Verdict


def _not_made_yet(orch: Orchestrator, goal: Goal) -> str | None:
    """Why the goal's workspace cannot be checked before a run made it, if so."""
    if goal.worktree is None and goal.workspace is not None:
        return None  # a directory of the user's: it must exist (open_workspace says so)
    path = worktree_path(orch._resolve(orch.config.workspace_root), goal.id)
    if os.path.lexists(path):
        return None
    what = "worktree" if goal.worktree is not None else "workspace"
    return (
        f"goal {goal.id!r}: its {what} {path} does not exist yet (`nexo-trio run` makes it); "
        "nothing to check"
    )


async def _baseline(orch: Orchestrator, goal: Goal, opened: GoalWorkspace) -> Baseline | None:
    """The goal's first checkpoint, as the ledger has it (what the run gives the checks)."""
    target = opened.info.target
    location = orch.store_location
    if target is None or not await location.exists():
        return None
    async with location.open() as store:
        entries = await store.events(goal.id)
    state = initial_state(goal.id)
    for entry in entries:
        event = event_from_ledger(entry.kind, entry.data, at=entry.at)
        if event is not None:
            state = apply(state, event)
    if not state.checkpoints:
        return None
    return Baseline(target=target, sha=state.checkpoints[0].sha)


async def check_goal(orch: Orchestrator, goal: Goal) -> Checked:
    """Run the goal's acceptance checks once in its workspace (raises :class:`UserError`
    for a workspace that cannot be used, or not yet)."""
    try:
        await orch._check_layout()
    except LayoutError as exc:
        raise UserError(str(exc)) from None
    problem = await trio.to_thread.run_sync(_not_made_yet, orch, goal)
    if problem is not None:
        raise UserError(problem)
    opening = goal
    if goal.checkpoints and goal.worktree is None:
        shadow = orch.layout.shadow(goal.id)
        if not await trio.to_thread.run_sync(shadow.exists):
            opening = attrs.evolve(goal, checkpoints=False)  # no shadow made for a check
    try:
        opened = await orch._open_workspace(opening)
    except OSError as exc:
        opened = WorkspaceProblem(f"{exc.strerror or exc}: {exc.filename}")
    if isinstance(opened, WorkspaceProblem):
        raise UserError(f"goal {goal.id!r}: cannot use the workspace: {opened.message}")
    verdict = await evaluate(
        goal.acceptance,
        workspace=opened.path,
        registry=orch.registry,
        goal_id=goal.id,
        baseline=await _baseline(orch, goal, opened),
        mode=orch.config.acceptance_mode,
        llm=orch.config.permission.llm,
        environ=orch.environ,
    )
    return Checked(goal, opened.path, verdict)


def _mark(result: CheckResult) -> str:
    if result.skipped:
        return "-"
    return "✓" if result.passed else "✗"


def report(checked: Checked) -> str:
    """The checks' results for people: one line each, its evidence indented below it, then
    the verdict."""
    verdict = checked.verdict
    lines = [f"goal {checked.goal.id}: {len(verdict.results)} check(s) in {checked.workspace}"]
    for result in verdict.results:
        optional = "" if result.required else " (optional)"
        took = "" if result.skipped else f" [{result.duration_s:.1f}s]"
        lines.append(f"{_mark(result)} {result.label}{optional}: {result.message}{took}")
        lines += [f"    {line}" for line in result.evidence.rstrip("\n").splitlines()]
    required = [r for r in verdict.results if r.required]
    if verdict.met:
        lines.append(f"met: {sum(r.passed for r in required)}/{len(required)} required passed")
    else:
        failed = len(verdict.failures)
        skipped = len(verdict.skipped)
        lines.append(
            f"not met: {failed} required check(s) failed"
            + (f", {skipped} not run" if skipped else "")
        )
    return "\n".join(lines)


def as_json(checked: Checked) -> dict[str, Any]:
    """The checks' results as one JSON object (exact values)."""
    return {
        "goal_id": checked.goal.id,
        "workspace": str(checked.workspace),
        "met": checked.verdict.met,
        "results": [converter.unstructure(r) for r in checked.verdict.results],
    }


@click.command()
@click.argument("goal_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Config file (YAML).",
)
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="The state directory (default: the config's state_dir, else ./.nexo).",
)
@store_option
@click.option("--json", "json_output", is_flag=True, help="Print the results as one JSON object.")
def check(
    goal_file: Path, config_file: Path | None, state_dir: Path | None, json_output: bool
) -> None:
    """Validate GOAL_FILE and the config, and run the goal's acceptance checks once in its
    workspace, with no Claude: each check's result and evidence.

    Exit codes: 0 met, 1 not met, 2 an invalid goal or config, or a workspace that cannot
    be used (a worktree goal's worktree is not made just for a check)."""
    config: Config = read_config(config_file, state_dir=state_dir)
    goal = read_goal(goal_file)
    try:
        orch = Orchestrator(config)
    except (ValueError, ImportError) as exc:  # e.g. the LLM decider's API key is not set
        raise UserError(f"permission: {exc}") from None
    try:
        checked = trio.run(check_goal, orch, goal)
    except STATE_DIR_ERRORS as exc:
        raise open_error(orch.store_location, orch.state_dir, exc) from None
    if json_output:
        sys.stdout.buffer.write(dumps(as_json(checked)) + b"\n")
        sys.stdout.flush()
    else:
        click.echo(report(checked))
    if not checked.verdict.met:
        sys.exit(EXIT_NOT_DONE)
