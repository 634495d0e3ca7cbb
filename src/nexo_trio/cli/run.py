"""``nexo-trio run GOAL.yaml``: run one goal to its end.

Exit codes: 0 done, 1 ended not done (budget, escalation), 2 usage or config error,
130 cancelled (Ctrl-C or SIGTERM: the running turn's process tree is stopped and the ledger
records the cancellation; a second Ctrl-C stops at once: SIGKILL to every process this one
started, no kill grace).
"""

from __future__ import annotations

import contextlib
import signal
import sys
from pathlib import Path

import attrs
import click
import psutil
import trio

from nexo_trio.cli.common import (
    EXIT_CANCELLED,
    EXIT_DONE,
    EXIT_NOT_DONE,
    EXIT_STATE_UNWRITABLE,
    STATE_DIR_ERRORS,
    UserError,
    read_config,
    read_goal,
    state_dir_error,
)
from nexo_trio.cli.progress import Progress
from nexo_trio.core.goal import Goal
from nexo_trio.core.goal_outcome import GoalEndKind, GoalOutcome
from nexo_trio.core.settings import Config
from nexo_trio.gate.human import HumanDecider, TerminalPrompter
from nexo_trio.gate.socket_server import GateSocketError
from nexo_trio.orchestrator.orchestrator import LayoutError, Orchestrator, SandboxUnavailable
from nexo_trio.wire.goal_json import goal_outcome_to_json
from nexo_trio.wire.outcome_json import dumps


def exit_code(outcome: GoalOutcome) -> int:
    """The process exit code of a goal outcome."""
    if outcome.kind is GoalEndKind.DONE:
        return EXIT_DONE
    if outcome.kind is GoalEndKind.CANCELLED:
        return EXIT_CANCELLED
    return EXIT_NOT_DONE


def print_outcome(outcome: GoalOutcome, *, as_json: bool) -> None:
    """Print the outcome on stdout: one JSON object, or the :func:`summary` line."""
    if as_json:
        sys.stdout.buffer.write(dumps(goal_outcome_to_json(outcome)) + b"\n")
        sys.stdout.flush()
    else:
        click.echo(summary(outcome))


def summary(outcome: GoalOutcome) -> str:
    """One line saying how the goal ended."""
    why = f": {outcome.reason}" if outcome.reason else ""
    return (
        f"{outcome.kind.value}{why} — {outcome.total_turns} turn(s), "
        f"{outcome.usage.total_tokens} tokens, ${outcome.cost_usd:.4f}, "
        f"{outcome.elapsed_s:.1f}s"
    )


async def run_with_progress(
    goal: Goal,
    config: Config,
    *,
    progress: Progress,
    orchestrator: Orchestrator | None = None,
    restart: bool = False,
) -> GoalOutcome:
    """Run ``goal`` showing progress; Ctrl-C/SIGTERM cancel it (twice: stop at once).

    ``restart`` starts the goal over (new session, fresh budget) instead of continuing
    from its ledger. A state directory the orchestrator can't open raises
    :class:`UserError` (exit 2).
    """
    orch = orchestrator or Orchestrator(config)
    handle = None
    try:
        await orch.check_goal(goal)  # before the orchestrator's nurseries: one clear line
    except LayoutError as exc:
        raise UserError(str(exc)) from None
    with trio.CancelScope() as hard_stop:
        async with contextlib.AsyncExitStack() as stack:
            try:
                await stack.enter_async_context(orch)
            except STATE_DIR_ERRORS as exc:
                raise state_dir_error(orch.state_dir, exc) from None
            except (SandboxUnavailable, LayoutError, GateSocketError) as exc:
                raise UserError(str(exc)) from None
            nursery = await stack.enter_async_context(trio.open_nursery())
            if orch.human is not None:
                await _start_prompter(nursery, orch.human, progress, goal.id)
            events = orch.subscribe()
            nursery.start_soon(progress.run, events)
            nursery.start_soon(_cancel_on_signals, orch, goal.id, hard_stop)
            handle = await orch.start_goal(goal, restart=restart)
            await handle.wait()
            # Let the display catch up with the last events, then stop it.
            while True:
                try:
                    progress.update(events.receive_nowait())
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
            nursery.cancel_scope.cancel()
    if handle is not None and handle.outcome is not None:
        return handle.outcome
    return GoalOutcome(goal_id=goal.id, kind=GoalEndKind.CANCELLED, reason="stopped")


async def _start_prompter(
    nursery: trio.Nursery, human: HumanDecider, progress: Progress, goal_id: str
) -> None:
    """Ask the human decider's questions on the terminal, if there is one (the live table
    gives way to plain lines, which do not redraw over a question)."""
    try:
        prompter = TerminalPrompter.open_tty()
    except OSError:
        progress.note(
            f"no terminal to ask permission questions on: answer them with "
            f"`nexo-trio approve {goal_id}` or `nexo-trio deny {goal_id}`"
        )
        return
    progress.live = False

    async def ask() -> None:
        try:
            await prompter.run(human)
        finally:
            with trio.CancelScope(shield=True):
                await prompter.aclose()

    nursery.start_soon(ask)


async def _cancel_on_signals(orch: Orchestrator, goal_id: str, scope: trio.CancelScope) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        count = 0
        async for signum in signals:
            count += 1
            if count == 1:
                name = signal.Signals(signum).name
                await orch.cancel_goal(goal_id, f"cancelled by {name}")
            else:
                # The first signal's graceful stop may be waiting out the kill grace of a
                # CLI that ignores SIGTERM: don't wait any more.
                _kill_descendants()
                scope.cancel()


def _kill_descendants() -> None:
    """SIGKILL every process this one started, collected before any is killed (once a
    parent is dead, its children can no longer be found from it)."""
    try:
        tree = psutil.Process().children(recursive=True)
    except psutil.Error:
        return
    for proc in tree:
        with contextlib.suppress(psutil.Error):
            proc.kill()


@click.command()
@click.argument("goal_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Config file (YAML; ${VAR} and ${VAR:-default} are substituted).",
)
@click.option("--claude-bin", help="The claude executable (overrides the config).")
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the ledger and bindings live (overrides the config).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the GoalOutcome as one JSON object.")
@click.option(
    "--restart",
    is_flag=True,
    help="Start the goal over: a new session and a fresh budget (the ledger says so).",
)
def run(  # noqa: PLR0917 - click passes every option by position
    goal_file: Path,
    config_file: Path | None,
    claude_bin: str | None,
    state_dir: Path | None,
    as_json: bool,
    restart: bool,
) -> None:
    """Run the goal in GOAL_FILE until its acceptance checks pass or it ends otherwise.

    A goal the state dir knows continues where it was: after a crash, a cancel or an
    escalation it goes on with its session, turns and spend; a goal that ended done (or
    on a budget it still exhausts) reports that outcome again without running a turn.
    A relative workspace in the goal file is taken relative to the goal file; a goal file
    without an id gets one derived from its path.

    Exit codes: 0 done, 1 ended not done, 2 a usage or config error, 3 the state dir
    stayed unwritable (the outcome is printed first), 130 cancelled. Each turn's raw
    stdout is kept in STATE_DIR/streams/GOAL/.
    """
    config = read_config(config_file, state_dir=state_dir)
    if claude_bin:
        config = attrs.evolve(config, claude=attrs.evolve(config.claude, binary=claude_bin))
    goal = read_goal(goal_file)
    progress = Progress(sys.stderr)
    try:
        orchestrator = Orchestrator(config)
    except (ValueError, ImportError) as exc:  # e.g. the LLM decider's API key is not set
        raise UserError(f"permission: {exc}") from None
    outcome = trio.run(
        lambda: run_with_progress(
            goal, config, progress=progress, orchestrator=orchestrator, restart=restart
        )
    )
    print_outcome(outcome, as_json=as_json)
    unwritable = orchestrator.store_unwritable
    if unwritable is not None:
        # The outcome above is what happened; the ledger may not know all of it.
        click.echo(f"Error: state dir unwritable: {unwritable}", err=True)
        sys.exit(EXIT_STATE_UNWRITABLE)
    sys.exit(exit_code(outcome))
