"""``nexo-trio run GOAL.yaml [GOAL.yaml | DIR/ ...]``: run goals to their end.

Many goals run in one process, at most ``max_concurrent_goals`` at once, in one live table;
many processes may run goals from one state dir, but a goal runs in one process at a time
(a second run of it exits 2: ``goal X is running in process N since T``; on a PostgreSQL
store, which many hosts share, also ``goal X is running on HOST:PID:… (lease until T)``).

Exit codes: 0 done (every goal), 1 ended not done (budget, escalation), 2 usage or config
error (before anything runs), 130 cancelled (Ctrl-C or SIGTERM: every goal is cancelled,
the running turns' process trees are stopped and the ledger records the cancellations; a
second Ctrl-C stops at once: SIGKILL to every process this one started, no kill grace).
With many goals the code is the worst: 130 if one was cancelled, else 1 unless all are done.
"""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Sequence
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
    state_dir_error,
    store_option,
)
from nexo_trio.cli.progress import Progress
from nexo_trio.cli.run_inputs import Overrides, goal_files, read_goals
from nexo_trio.cli.stores import open_error
from nexo_trio.cli.transcript import (
    Attempt,
    attempts,
    cost_text,
    goal_rows,
    seconds_text,
    since_restart,
    tokens_text,
    typed_events,
)
from nexo_trio.core.checkpoints import DiffStat
from nexo_trio.core.goal import Goal
from nexo_trio.core.goal_events import AcceptanceChecked, GoalStarted
from nexo_trio.core.goal_outcome import GoalEndKind, GoalOutcome
from nexo_trio.core.settings import Config
from nexo_trio.gate.human import HumanDecider, TerminalPrompter
from nexo_trio.gate.socket_server import GateSocketError
from nexo_trio.orchestrator.goal_lock import GoalLocked
from nexo_trio.orchestrator.goal_run import GoalHandle
from nexo_trio.orchestrator.leases import GoalLeased
from nexo_trio.orchestrator.orchestrator import LayoutError, Orchestrator, SandboxUnavailable
from nexo_trio.orchestrator.state_dir import StateDir
from nexo_trio.store.base import LedgerEntry
from nexo_trio.store.location import StoreLocation
from nexo_trio.wire.goal_json import goal_outcome_to_json
from nexo_trio.wire.outcome_json import dumps


def exit_code(outcome: GoalOutcome) -> int:
    """The process exit code of a goal outcome."""
    if outcome.kind is GoalEndKind.DONE:
        return EXIT_DONE
    if outcome.kind is GoalEndKind.CANCELLED:
        return EXIT_CANCELLED
    return EXIT_NOT_DONE


def overall_exit_code(outcomes: list[GoalOutcome]) -> int:
    """The exit code of a run of many goals: 0 when all are done, else 130 when one was
    cancelled, else 1."""
    codes = {exit_code(outcome) for outcome in outcomes}
    if codes <= {EXIT_DONE}:
        return EXIT_DONE
    if EXIT_CANCELLED in codes:
        return EXIT_CANCELLED
    return EXIT_NOT_DONE


def print_outcome(outcome: GoalOutcome, *, as_json: bool, details: str | None = None) -> None:
    """Print the outcome on stdout: one JSON object, or the :func:`summary` line.
    ``details`` (a :func:`run_summary`) replaces that line, or follows the JSON on stderr."""
    if as_json:
        sys.stdout.buffer.write(dumps(goal_outcome_to_json(outcome)) + b"\n")
        sys.stdout.flush()
        if details:
            click.echo(details, err=True)
    else:
        click.echo(details or summary(outcome))


def summary(outcome: GoalOutcome) -> str:
    """One line saying how the goal ended."""
    why = f": {outcome.reason}" if outcome.reason else ""
    return (
        f"{outcome.kind.value}{why} — {outcome.total_turns} turn(s), "
        f"{outcome.usage.total_tokens} tokens, ${outcome.cost_usd:.4f}, "
        f"{outcome.elapsed_s:.1f}s"
    )


def run_summary(
    outcome: GoalOutcome,
    rows: Sequence[LedgerEntry],
    *,
    state_dir: Path | None = None,
    store: str | None = None,
) -> str:
    """What ``nexo-trio run`` says at the end of a goal, for people (numbers rounded): how
    it ended and why; each turn since the goal last started over, with its outcome, tokens,
    cost and time and its acceptance checks (which failed, and why); the files the goal
    changed where its workspace is on git; and the command showing its transcript (with
    ``--store store`` when given). ``rows`` are the goal's ledger rows (none: the first
    line and the command only)."""
    why = f": {outcome.reason}" if outcome.reason else ""
    lines = [
        f"{outcome.kind.value}{why} — {outcome.total_turns} turn(s), "
        f"{tokens_text(outcome.usage.total_tokens)} tokens, {cost_text(outcome.cost_usd)}, "
        f"{seconds_text(outcome.wall_time_s or outcome.elapsed_s)}"
    ]
    events = since_restart(typed_events(rows))
    changes: list[DiffStat] = []
    for attempt in attempts(events):
        lines.append("  " + _attempt_summary(attempt))
        completed = attempt.completed
        if completed is not None and completed.changes is not None:
            changes.append(completed.changes)
    on_git = bool(changes) or any(
        isinstance(e, GoalStarted) and e.git is not None and e.git.target is not None
        for e in events
    )
    if on_git:
        lines.append("  " + _changes_summary(outcome.goal_id, changes))
    where = f" --state-dir {state_dir}" if state_dir is not None else ""
    where += f" --store {store}" if store is not None else ""
    lines.append(f"  transcript: nexo-trio transcript {outcome.goal_id}{where}")
    return "\n".join(lines)


def _attempt_summary(attempt: Attempt) -> str:
    """One turn in a line: ``turn 2: claimed_done, 1.2k tokens, $0.01, 4.1s; checks ...``."""
    started = attempt.started
    label = f"turn {started.turn}" + (" (compact)" if started.compact else "")
    label += f" (attempt {attempt.number})" if attempt.number > 1 else ""
    completed = attempt.completed
    if completed is None:
        return f"{label}: no end recorded (the run stopped during it)"
    text = f"{label}: {completed.kind}"
    if completed.reason and completed.kind != "claimed_done":
        reason = completed.reason.splitlines()[0] if completed.reason.strip() else ""
        text += f" ({reason[:77] + '...' if len(reason) > 80 else reason})"
    text += (
        f", {tokens_text(completed.usage.total_tokens)} tokens, "
        f"{cost_text(completed.cost_usd)}, {seconds_text(completed.duration_s)}"
    )
    checked = attempt.of(AcceptanceChecked)
    if checked:
        verdict: AcceptanceChecked = checked[-1]
        passed = sum(1 for r in verdict.results if r.passed)
        if verdict.met:
            text += f"; checks met ({passed}/{len(verdict.results)})"
        else:
            failed = [
                f"{r.label} ({r.message})" if r.message else r.label
                for r in verdict.results
                if not r.passed and r.required and not getattr(r, "skipped", False)
            ]
            text += "; checks failed: " + ("; ".join(failed) or "none required")
    return text


def _changes_summary(goal_id: str, changes: Sequence[DiffStat], *, shown: int = 10) -> str:
    """The files the goal's turns changed, in one line."""
    paths = list(
        dict.fromkeys(p for stat in changes for p in (*stat.added, *stat.modified, *stat.deleted))
    )
    if not paths:
        return "files changed: none"
    more = f" and {len(paths) - shown} more" if len(paths) > shown else ""
    plus = sum(stat.insertions for stat in changes)
    minus = sum(stat.deletions for stat in changes)
    return (
        f"files changed: {len(paths)} (+{plus} -{minus}): {', '.join(paths[:shown])}{more}"
        f" — nexo-trio diff {goal_id}"
    )


def _ledger_rows(
    config: Config, location: StoreLocation, goal_id: str
) -> tuple[list[LedgerEntry], Path]:
    """The goal's ledger rows after its run, from the store at ``location``, for the
    summary (none when they cannot be read: the summary then says less), and the state
    dir's absolute path."""
    state_dir = Path(config.state_dir).expanduser().absolute()
    try:
        rows = goal_rows(location, goal_id, timeout_s=10.0)
    except (click.ClickException, *STATE_DIR_ERRORS):
        rows = None
    return rows or [], state_dir


def _store_hint(location: StoreLocation, state_dir: Path) -> str | None:
    """The ``--store`` a later command needs to find the goal's ledger again: ``None`` for
    the state dir's own file, or a URL with a password (not printed)."""
    path = location.path
    if path is not None:
        same = path.absolute() == StateDir(state_dir).database
        return None if same else str(path.absolute())
    return location.value if str(location) == location.value else None


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
    from its ledger. A state directory the orchestrator can't open, or a goal another
    process runs, raises :class:`UserError` (exit 2).
    """
    (outcome,) = await run_goals_with_progress(
        [goal], config, progress=progress, orchestrator=orchestrator, restart=restart
    )
    return outcome


async def run_goals_with_progress(
    goals: list[Goal],
    config: Config,
    *,
    progress: Progress,
    orchestrator: Orchestrator | None = None,
    restart: bool = False,
) -> list[GoalOutcome]:
    """Run ``goals`` in one orchestrator (at most ``max_concurrent_goals`` at once) showing
    their progress; their outcomes, in order. Ctrl-C/SIGTERM cancel them all (twice: stop
    at once).

    Every goal is checked before any starts: a goal that is not valid here or that another
    process runs raises :class:`UserError` (exit 2), and nothing runs. A goal another
    process took up in the moment between that check and its start is reported as not
    started (a line on the display) and ends ``escalated`` in the outcomes (not recorded:
    it is the other process's). ``restart`` starts every goal over.
    """
    orch = orchestrator or Orchestrator(config)
    for goal in goals:
        try:
            await orch.check_goal(goal)  # before the orchestrator's nurseries: one clear line
        except (LayoutError, GoalLocked, GoalLeased) as exc:
            raise UserError(str(exc)) from None
        except OSError as exc:  # the goal's lock file cannot be read
            raise state_dir_error(orch.state_dir, exc) from None
    handles: dict[str, GoalHandle] = {}
    outcomes: dict[str, GoalOutcome] = {}
    stop = _Stop()
    failure: UserError | None = None  # raised out of the nurseries (inside: as a group)
    with trio.CancelScope() as hard_stop:
        async with contextlib.AsyncExitStack() as stack:
            try:
                await stack.enter_async_context(orch)
            except STATE_DIR_ERRORS as exc:
                raise open_error(orch.store_location, orch.state_dir, exc) from None
            except (SandboxUnavailable, LayoutError, GateSocketError) as exc:
                raise UserError(str(exc)) from None
            nursery = await stack.enter_async_context(trio.open_nursery())
            if orch.human is not None:
                await _start_prompter(nursery, orch.human, progress, [g.id for g in goals])
            events = orch.subscribe()
            progress.expect([goal.id for goal in goals])
            nursery.start_soon(progress.run, events)
            nursery.start_soon(_cancel_on_signals, orch, stop, hard_stop)
            for goal in goals:
                if stop.reason is not None:
                    break  # cancelled before it started: it never runs
                try:
                    handles[goal.id] = await orch.start_goal(goal, restart=restart)
                except STATE_DIR_ERRORS as exc:  # its lock file cannot be made, or its lease
                    failure = open_error(orch.store_location, orch.state_dir, exc)
                except (LayoutError, GoalLocked, GoalLeased) as exc:
                    if len(goals) == 1:
                        failure = UserError(str(exc))
                    else:
                        progress.note(f"[{goal.id[:12]}] not started: {exc}")
                        reason = f"not started: {exc}"
                        outcomes[goal.id] = GoalOutcome(
                            goal_id=goal.id, kind=GoalEndKind.ESCALATED, reason=reason
                        )
                if failure is not None:
                    for goal_id in orch.running():
                        await orch.cancel_goal(goal_id, f"not run: {failure.message}")
                    break
            for handle in handles.values():
                await handle.wait()
            # Let the display catch up with the last events, then stop it.
            while True:
                try:
                    progress.update(events.receive_nowait())
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
            nursery.cancel_scope.cancel()
    if failure is not None:
        raise failure
    for goal in goals:
        started = handles.get(goal.id)
        if started is not None and started.outcome is not None:
            outcomes[goal.id] = started.outcome
        elif goal.id not in outcomes:
            outcomes[goal.id] = GoalOutcome(
                goal_id=goal.id, kind=GoalEndKind.CANCELLED, reason="stopped"
            )
    return [outcomes[goal.id] for goal in goals]


@attrs.define
class _Stop:
    """Why the run is being stopped (a signal's name), once it is."""

    reason: str | None = None


async def _start_prompter(
    nursery: trio.Nursery, human: HumanDecider, progress: Progress, goal_ids: list[str]
) -> None:
    """Ask the human decider's questions on the terminal, if there is one (the live table
    gives way to plain lines, which do not redraw over a question)."""
    try:
        prompter = TerminalPrompter.open_tty()
    except OSError:
        goal_id = goal_ids[0] if len(goal_ids) == 1 else "GOAL"
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


async def _cancel_on_signals(orch: Orchestrator, stop: _Stop, scope: trio.CancelScope) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        count = 0
        async for signum in signals:
            count += 1
            if count == 1:
                name = signal.Signals(signum).name
                stop.reason = f"cancelled by {name}"  # goals not started yet never start
                for goal_id in orch.running():
                    await orch.cancel_goal(goal_id, stop.reason)
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
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
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
@store_option
@click.option(
    "--json", "as_json", is_flag=True, help="Print each GoalOutcome as one JSON object per line."
)
@click.option(
    "--restart",
    is_flag=True,
    help="Start the goals over: a new session and a fresh budget (the ledger says so).",
)
@click.option("--max-turns", metavar="N", help="Every goal's budget.max_turns.")
@click.option("--max-cost", metavar="USD", help="Every goal's budget.max_cost_usd.")
@click.option("--model", metavar="M", help="The model (claude.model of the config).")
@click.option(
    "--decider", metavar="D", help="The permission decider (permission.decider of the config)."
)
@click.option(
    "--turn-timeout", metavar="DURATION", help="The turn timeout, e.g. 90s or 10m (config)."
)
def run(  # noqa: PLR0917 - click passes every option by position
    paths: tuple[Path, ...],
    config_file: Path | None,
    claude_bin: str | None,
    state_dir: Path | None,
    as_json: bool,
    restart: bool,
    max_turns: str | None,
    max_cost: str | None,
    model: str | None,
    decider: str | None,
    turn_timeout: str | None,
) -> None:
    """Run the goals in PATHS (goal files, or directories: every *.yaml and *.yml
    file in them, sorted) until their acceptance checks pass or they end otherwise, at most
    max_concurrent_goals at once. A goal runs in one process at a time: a goal another
    process runs is refused (exit 2, naming the process; on a PostgreSQL --store, the
    host and process holding its lease).

    A goal the state dir knows continues where it was: after a crash, a cancel or an
    escalation it goes on with its session, turns and spend (what a crashed run's turn
    left running is stopped first); a goal that ended done (or on a budget it still
    exhausts) reports that outcome again without running a turn. A relative workspace in
    the goal file is taken relative to the goal file; a goal file without an id gets one
    derived from its path. --max-turns, --max-cost, --model, --decider and --turn-timeout
    override the goals' budgets and the config.

    Exit codes: 0 done (all goals), 1 ended not done, 2 a usage or config error, 3 the
    state dir stayed unwritable (the outcomes are printed first), 130 cancelled (one
    goal cancelled is enough). Each turn's raw stdout is kept in STATE_DIR/streams/GOAL/;
    a summary of each goal ends the run, and `nexo-trio transcript GOAL` shows its turns.
    """
    overrides = Overrides.parse(
        max_turns=max_turns,
        max_cost=max_cost,
        model=model,
        decider=decider,
        turn_timeout=turn_timeout,
    )
    config = overrides.config(read_config(config_file, state_dir=state_dir))
    if claude_bin:
        config = attrs.evolve(config, claude=attrs.evolve(config.claude, binary=claude_bin))
    goals = [
        overrides.goal(goal)
        for goal in read_goals(goal_files(list(paths), config_file=config_file))
    ]
    progress = Progress(sys.stderr)
    try:
        orchestrator = Orchestrator(config)
    except (ValueError, ImportError) as exc:  # e.g. the LLM decider's API key is not set
        raise UserError(f"permission: {exc}") from None
    outcomes = trio.run(
        lambda: run_goals_with_progress(
            goals, config, progress=progress, orchestrator=orchestrator, restart=restart
        )
    )
    location = orchestrator.store_location
    for outcome in outcomes:
        rows, where = _ledger_rows(config, location, outcome.goal_id)
        details = run_summary(outcome, rows, state_dir=where, store=_store_hint(location, where))
        if len(outcomes) > 1:
            details = f"{outcome.goal_id}: {details}"
        print_outcome(outcome, as_json=as_json, details=details)
    unwritable = orchestrator.store_unwritable
    if unwritable is not None:
        # The outcomes above are what happened; the ledger may not know all of it.
        click.echo(f"Error: state dir unwritable: {unwritable}", err=True)
        sys.exit(EXIT_STATE_UNWRITABLE)
    sys.exit(overall_exit_code(outcomes))
