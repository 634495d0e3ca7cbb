"""``nexo-trio submit GOAL.yaml…`` queues goals in the store; ``nexo-trio worker`` runs them.

Any number of workers, on any number of hosts, share one PostgreSQL store
(``--store postgresql://…``); a goal is leased by one worker at a time, and a worker that
dies loses its leases after ``lease_timeout``, when another continues each goal from its
ledger (:mod:`nexo_trio.orchestrator.worker`). A SQLite store can be submitted to (and
its queue read), but workers need a store that hosts share.

Each worker keeps its own state directory (sockets, scratch, raw streams, the goals'
local locks): on one host, give each worker its own ``--state-dir``.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import attrs
import click
import trio

from nexo_trio.cli.common import (
    EXIT_CANCELLED,
    STATE_DIR_ERRORS,
    UserError,
    read_config,
    state_dir_option,
    store_error,
    store_location,
)
from nexo_trio.cli.run import print_outcome
from nexo_trio.cli.run_inputs import goal_files, read_goals
from nexo_trio.core.goal import BUILTIN_CHECKS, Goal
from nexo_trio.core.goal_outcome import GoalOutcome
from nexo_trio.core.settings import Config
from nexo_trio.gate.socket_server import GateSocketError
from nexo_trio.orchestrator.orchestrator import LayoutError, Orchestrator, SandboxUnavailable
from nexo_trio.orchestrator.worker import Worker
from nexo_trio.store.base import QueuedGoal, shared_store
from nexo_trio.wire.files import FileFormatError, goal_from_spec, goal_to_spec


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@state_dir_option
def submit(paths: tuple[Path, ...], config_file: Path | None, state_dir: Path | None) -> None:
    """Queue the goals in PATHS (goal files, or directories of them) in the store, for
    workers to run; print each goal's id. A goal already queued (or running) stays as it
    is (said on stderr); a finished one is queued again and goes on from its ledger.

    Every file is read and checked before any goal is queued. A relative workspace is
    made absolute from the goal file, as `run` does: on other hosts it must exist at that
    path (or leave `workspace` out: each worker then uses its own workspace root).
    """
    config = read_config(config_file, state_dir=state_dir)
    goals = read_goals(goal_files(list(paths), config_file=config_file))
    location = store_location(config)

    async def main() -> list[tuple[Goal, bool]]:
        try:
            async with location.open() as store:
                return [(goal, await store.submit(goal.id, goal_to_spec(goal))) for goal in goals]
        except STATE_DIR_ERRORS as exc:
            raise store_error(location, exc) from None

    for goal, queued in trio.run(main):
        click.echo(goal.id)
        if not queued:
            click.echo(f"{goal.id}: already queued, left as it is", err=True)


def load_queued(row: QueuedGoal) -> Goal:
    """The goal of a queue row (``ValueError`` naming what is wrong if it is not one)."""
    try:
        return goal_from_spec(
            row.spec, source=f"queued goal {row.goal_id}", known_checks=BUILTIN_CHECKS
        )
    except FileFormatError as exc:
        raise ValueError(str(exc)) from None


@click.command()
@state_dir_option
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    default=None,
    help="Goals run at once (default: the config's max_concurrent_goals).",
)
@click.option(
    "--workspace-root",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where goals without a workspace get theirs (overrides the config).",
)
@click.option("--claude-bin", help="The claude executable (overrides the config).")
@click.option("--until-empty", is_flag=True, help="Exit once nothing is queued or running.")
@click.option("--json", "as_json", is_flag=True, help="Print each finished GoalOutcome as JSON.")
def worker(  # noqa: PLR0917 - click passes every option by position
    config_file: Path | None,
    state_dir: Path | None,
    concurrency: int | None,
    workspace_root: Path | None,
    claude_bin: str | None,
    until_empty: bool,
    as_json: bool,
) -> None:
    """Run goals from the store's queue until stopped (or, --until-empty, until the queue
    is empty), CONCURRENCY at once, under a lease each (renewed every lease_timeout/3).

    SIGTERM or Ctrl-C: stop claiming, stop the running turns (kill_grace), record their
    goals' end and release their leases: they stay queued, and another worker goes on
    from their ledgers. A second signal stops at once. Exit codes: 0 stopped or empty,
    2 a usage or config error (a store hosts cannot share, say), 130 stopped at once.
    """
    config = read_config(config_file, state_dir=state_dir)
    location = store_location(config)
    if not location.is_postgres:
        raise UserError(
            f"a worker needs a store that hosts share: --store postgresql://... "
            f"(the store is the SQLite file {location})"
        )
    if concurrency is not None:
        config = attrs.evolve(config, max_concurrent_goals=concurrency)
    if workspace_root is not None:
        config = attrs.evolve(config, workspace_root=str(workspace_root))
    if claude_bin:
        config = attrs.evolve(config, claude=attrs.evolve(config.claude, binary=claude_bin))
    try:
        orchestrator = Orchestrator(config)
    except (ValueError, ImportError) as exc:
        raise UserError(f"permission: {exc}") from None
    code = trio.run(lambda: _work(orchestrator, config, until_empty=until_empty, as_json=as_json))
    sys.exit(code)


async def _work(orch: Orchestrator, config: Config, *, until_empty: bool, as_json: bool) -> int:
    async def finished(outcome: GoalOutcome) -> None:
        print_outcome(outcome, as_json=as_json)

    async def claimed(row: QueuedGoal) -> None:
        click.echo(f"claimed {row.goal_id} (claim {row.claims})", err=True)

    hard_stop = False
    with trio.CancelScope() as scope:
        try:
            async with orch:
                store = orch.store
                assert orch.leases is not None
                shared = shared_store(store)
                assert shared is not None  # the location is PostgreSQL
                work = Worker(
                    orch,
                    shared,
                    concurrency=config.max_concurrent_goals,
                    load_goal=load_queued,
                    until_empty=until_empty,
                    on_finished=finished,
                    on_claimed=claimed,
                )
                click.echo(f"worker {orch.owner} on {store_location(config)}", err=True)
                async with trio.open_nursery() as nursery:

                    async def on_signals() -> None:
                        nonlocal hard_stop
                        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                            count = 0
                            async for signum in signals:
                                count += 1
                                if count == 1:
                                    work.stop(f"stopped by {signal.Signals(signum).name}")
                                else:
                                    hard_stop = True
                                    scope.cancel()

                    nursery.start_soon(on_signals)
                    await work.run()
                    nursery.cancel_scope.cancel()
        except STATE_DIR_ERRORS as exc:
            raise store_error(store_location(config), exc) from None
        except (SandboxUnavailable, LayoutError, GateSocketError) as exc:
            raise UserError(str(exc)) from None
    if hard_stop:
        return EXIT_CANCELLED
    report = work.report
    click.echo(
        f"worker {orch.owner}: {len(report.finished)} finished, "
        f"{len(report.handed_back)} handed back, {len(report.lost)} lost, "
        f"{len(report.refused)} refused",
        err=True,
    )
    return 0
