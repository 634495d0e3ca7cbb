"""Control a running goal from any terminal of the same user: ``nexo-trio approve|deny GOAL``
(answer the permission question its ``human`` decider waits on), ``pause|resume|cancel
GOAL``, ``interrupt GOAL "message"`` and ``max-turns GOAL N``.

The goal's process is found by :func:`running_pid` and reached through that process's
control socket (:mod:`nexo_trio.orchestrator.control_server`), which applies the request
with the orchestrator's own methods and answers once it is applied. Exit 0 when done, 1 when
it changed nothing (already paused, no question waiting...), 2 when the goal is not running
(no process runs it, or its process does not answer), the request is not valid (an empty
message, lowering max turns) or the state dir cannot be read.
"""

from __future__ import annotations

import getpass
import os
from pathlib import Path

import click
import trio

from nexo_trio.cli.common import (
    EXIT_NOT_DONE,
    STATE_DIR_ERRORS,
    UserError,
    read_config,
    state_dir_error,
    state_dir_option,
)
from nexo_trio.orchestrator.control_server import send_control
from nexo_trio.orchestrator.state_dir import StateDir
from nexo_trio.store.sqlite import open_sqlite_store
from nexo_trio.wire.control_frames import ControlFrameError, ControlReply, ControlRequest, Op


async def running_pid(layout: StateDir, goal_id: str) -> int | None:
    """The pid of the process running ``goal_id``, if one does.

    The one place that says which process runs a goal (every command that reaches or shows
    it asks here): today the ledger's word, the pid of the goal's latest ``goal_started``
    without a ``goal_completed`` after it (a crashed run's pid stays: its socket then does
    not answer)."""
    if not layout.database.exists():
        return None
    async with open_sqlite_store(layout.database) as store:
        entries = await store.events(goal_id)
    pid: int | None = None
    for entry in entries:
        if entry.kind == "goal_started":
            found = entry.data.get("pid")
            pid = found if isinstance(found, int) else None
        elif entry.kind == "goal_completed":
            pid = None
    return pid


def _not_running(goal_id: str, why: str) -> UserError:
    return UserError(f"goal {goal_id!r} is not running: {why}")


async def _ask(layout: StateDir, request: ControlRequest) -> ControlReply:
    goal_id = request.goal_id
    pid = await running_pid(layout, goal_id)
    if pid is None:
        raise _not_running(goal_id, f"no process runs it on the state dir {layout.root}")
    try:
        reply = await send_control(layout.control_socket(pid), request)
    except (OSError, trio.TooSlowError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else "no answer"
        raise _not_running(goal_id, f"its process {pid} does not answer ({why})") from None
    except ControlFrameError as exc:
        raise UserError(f"goal {goal_id!r}: the process {pid} answered garbage: {exc}") from None
    if reply.problem == "not_running":
        raise _not_running(goal_id, f"its process {pid} no longer runs it")
    return reply


def _answer(
    op: Op,
    goal_id: str,
    config: Path | None,
    state: Path | None,
    *,
    reason: str | None = None,
    message: str | None = None,
    max_turns: int | None = None,
) -> None:
    """Send the request to the goal's process and exit as its answer says."""
    layout = StateDir(Path(read_config(config, state_dir=state).state_dir).expanduser())
    request = ControlRequest(
        op,
        goal_id,
        reason,
        by=f"{getpass.getuser()} (pid {os.getpid()})",
        message=message,
        max_turns=max_turns,
    )
    try:
        reply = trio.run(_ask, layout, request)
    except STATE_DIR_ERRORS as exc:
        raise state_dir_error(layout.root, exc) from None
    if reply.ok:
        click.echo(reply.message)
        return
    if reply.problem == "invalid":
        raise UserError(reply.message)
    click.echo(reply.message, err=True)
    raise SystemExit(EXIT_NOT_DONE)


@click.command()
@click.argument("goal_id")
@state_dir_option
def approve(goal_id: str, config_file: Path | None, state_dir: Path | None) -> None:
    """Allow the tool call GOAL_ID's human decider is asking about (the oldest one)."""
    _answer("approve", goal_id, config_file, state_dir)


@click.command()
@click.argument("goal_id")
@click.option("--reason", help="Why: Claude reads it with the denial.")
@state_dir_option
def deny(
    goal_id: str, reason: str | None, config_file: Path | None, state_dir: Path | None
) -> None:
    """Deny the tool call GOAL_ID's human decider is asking about (the oldest one)."""
    _answer("deny", goal_id, config_file, state_dir, reason=reason)


@click.command()
@click.argument("goal_id")
@state_dir_option
def pause(goal_id: str, config_file: Path | None, state_dir: Path | None) -> None:
    """Pause GOAL_ID before its next turn (a running turn finishes).

    Exit 0 paused, 1 already paused, 2 not running."""
    _answer("pause", goal_id, config_file, state_dir)


@click.command()
@click.argument("goal_id")
@state_dir_option
def resume(goal_id: str, config_file: Path | None, state_dir: Path | None) -> None:
    """Resume GOAL_ID after a pause.

    Exit 0 resumed, 1 not paused, 2 not running."""
    _answer("resume", goal_id, config_file, state_dir)


@click.command()
@click.argument("goal_id")
@click.option("--reason", help="Why (recorded; default: who cancelled it).")
@state_dir_option
def cancel(
    goal_id: str, reason: str | None, config_file: Path | None, state_dir: Path | None
) -> None:
    """Cancel GOAL_ID: its running turn's whole process tree is stopped, and the goal ends
    ``cancelled`` (its ``nexo-trio run`` exits 130; running it again goes on from there).

    Exit 0 cancelling, 1 already being cancelled, 2 not running."""
    _answer("cancel", goal_id, config_file, state_dir, reason=reason)


@click.command()
@click.argument("goal_id")
@click.argument("message")
@state_dir_option
def interrupt(goal_id: str, message: str, config_file: Path | None, state_dir: Path | None) -> None:
    """Give GOAL_ID's next work turn MESSAGE (an [OPERATOR INTERRUPT] block of its prompt);
    a sleeping goal wakes up for it.

    Exit 0 queued, 2 not running or an empty message."""
    if not message.strip():
        raise UserError("interrupt: the message is empty")
    _answer("interrupt", goal_id, config_file, state_dir, message=message)


@click.command("max-turns")
@click.argument("goal_id")
@click.argument("max_turns", metavar="N", type=click.IntRange(min=1))
@state_dir_option
def max_turns(
    goal_id: str, max_turns: int, config_file: Path | None, state_dir: Path | None
) -> None:
    """Raise GOAL_ID's turn budget to N (it can only be raised).

    Exit 0 raised, 2 not running or N below the current budget."""
    _answer("max_turns", goal_id, config_file, state_dir, max_turns=max_turns)
