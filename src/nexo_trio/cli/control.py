"""``nexo-trio approve GOAL`` / ``deny GOAL``: answer the permission question a goal's
``human`` decider is waiting on, from any terminal of the same user.

The goal's process is found through the ledger (the pid of its latest ``goal_started``
without a ``goal_completed`` after it) and reached through that process's control socket.
Exit 0 when answered, 1 when the goal had no question waiting, 2 when the goal is not
running (or the state dir cannot be read).
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
from nexo_trio.wire.control_frames import ControlFrameError, ControlRequest, Op


async def running_pid(layout: StateDir, goal_id: str) -> int | None:
    """The pid of the process running ``goal_id`` as the ledger says, if it runs."""
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


async def _ask(layout: StateDir, op: Op, goal_id: str, reason: str | None) -> tuple[bool, str]:
    pid = await running_pid(layout, goal_id)
    if pid is None:
        raise UserError(f"goal {goal_id!r} is not running (nothing in {layout.root} runs it)")
    request = ControlRequest(op, goal_id, reason, by=f"{getpass.getuser()} (pid {os.getpid()})")
    try:
        reply = await send_control(layout.control_socket(pid), request)
    except (OSError, trio.TooSlowError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else "no answer"
        raise UserError(
            f"goal {goal_id!r} is not running: its process {pid} does not answer ({why})"
        ) from None
    except ControlFrameError as exc:
        raise UserError(f"goal {goal_id!r}: the process {pid} answered garbage: {exc}") from None
    return reply.ok, reply.message


def _answer(
    op: Op, goal_id: str, reason: str | None, config: Path | None, state: Path | None
) -> None:
    layout = StateDir(Path(read_config(config, state_dir=state).state_dir).expanduser())
    try:
        ok, message = trio.run(_ask, layout, op, goal_id, reason)
    except STATE_DIR_ERRORS as exc:
        raise state_dir_error(layout.root, exc) from None
    click.echo(message, err=not ok)
    if not ok:
        raise SystemExit(EXIT_NOT_DONE)


@click.command()
@click.argument("goal_id")
@state_dir_option
def approve(goal_id: str, config_file: Path | None, state_dir: Path | None) -> None:
    """Allow the tool call GOAL_ID's human decider is asking about (the oldest one)."""
    _answer("approve", goal_id, None, config_file, state_dir)


@click.command()
@click.argument("goal_id")
@click.option("--reason", help="Why: Claude reads it with the denial.")
@state_dir_option
def deny(
    goal_id: str, reason: str | None, config_file: Path | None, state_dir: Path | None
) -> None:
    """Deny the tool call GOAL_ID's human decider is asking about (the oldest one)."""
    _answer("deny", goal_id, reason, config_file, state_dir)
