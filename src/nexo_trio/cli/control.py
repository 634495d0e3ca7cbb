"""Control a running goal from any terminal of the same user: ``nexo-trio approve|deny GOAL``
(answer the permission question its ``human`` decider waits on), ``pause|resume|cancel
GOAL``, ``interrupt GOAL "message"`` and ``max-turns GOAL N``.

On a SQLite store the goal's process is found by :func:`running_pid` and reached through
that process's control socket (:mod:`nexo_trio.orchestrator.control_server`), which
applies the request with the orchestrator's own methods and answers once it is applied. On
a PostgreSQL store the goal may run on any host: its lease says which orchestrator runs
it; one of this host is reached through its control socket, any other through a control
request left in the store, which it answers as its socket would (waited for at most
:data:`STORE_REPLY_TIMEOUT_S`).

Exit 0 when done, 1 when it changed nothing (already paused, no question waiting...), 2
when the goal is not running (no process runs it, or its process does not answer), the
request is not valid (an empty message, lowering max turns) or the store cannot be read.
"""

from __future__ import annotations

import getpass
import os
import socket
from pathlib import Path
from typing import Final

import click
import trio

from nexo_trio.cli.common import (
    EXIT_NOT_DONE,
    STATE_DIR_ERRORS,
    UserError,
    read_config,
    state_dir_option,
    store_error,
    store_location,
)
from nexo_trio.cli.stores import NothingRecorded, opened
from nexo_trio.orchestrator.control_server import send_control
from nexo_trio.orchestrator.state_dir import StateDir
from nexo_trio.store.base import CONTROLS, ControlMessage, Lease, SharedStore, Store
from nexo_trio.store.location import StoreLocation
from nexo_trio.wire.control_frames import (
    ControlFrameError,
    ControlReply,
    ControlRequest,
    Op,
    reply_from_data,
    to_data,
)

STORE_REPLY_TIMEOUT_S: Final = 15.0
"""How long a control request left in the store waits for its runner's reply."""
STORE_POLL_S: Final = 1.0
"""The longest wait for the store to change before the reply is looked for again."""


async def running_pid(store: Store, goal_id: str) -> int | None:
    """The pid of the process running ``goal_id``, if one does.

    The one place that says which local process runs a goal (every command that reaches or
    shows it asks here): today the ledger's word, the pid of the goal's latest
    ``goal_started`` without a ``goal_completed`` after it (a crashed run's pid stays: its
    socket then does not answer)."""
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


async def _ask(location: StoreLocation, layout: StateDir, request: ControlRequest) -> ControlReply:
    if location.is_postgres:
        return await _ask_shared(location, layout, request)
    goal_id = request.goal_id
    try:
        async with opened(location) as store:
            pid = await running_pid(store, goal_id)
    except NothingRecorded:
        pid = None
    if pid is None:
        raise _not_running(goal_id, f"no process runs it on the state dir {layout.root}")
    reply = await _ask_socket(layout, pid, request)
    assert reply is not None
    return reply


async def _ask_socket(
    layout: StateDir, pid: int, request: ControlRequest, *, absent_ok: bool = False
) -> ControlReply | None:
    """The answer of the process ``pid`` of this host, through its control socket;
    ``absent_ok``: ``None`` when nobody listens there (nothing was sent)."""
    goal_id = request.goal_id
    try:
        reply = await send_control(layout.control_socket(pid), request)
    except OSError as exc:
        if absent_ok and isinstance(exc, FileNotFoundError | ConnectionRefusedError):
            return None  # it could not connect: the request was not sent
        why = exc.strerror or "no answer"
        raise _not_running(goal_id, f"its process {pid} does not answer ({why})") from None
    except trio.TooSlowError:
        raise _not_running(goal_id, f"its process {pid} does not answer (no answer)") from None
    except ControlFrameError as exc:
        raise UserError(f"goal {goal_id!r}: the process {pid} answered garbage: {exc}") from None
    if reply.problem == "not_running":
        raise _not_running(goal_id, f"its process {pid} no longer runs it")
    return reply


def _local_pid(lease: Lease) -> int | None:
    """The pid of the lease's owner (``HOST:PID:RANDOM``) when it is a process of this
    host, else ``None``."""
    host, _, rest = lease.owner.partition(":")
    pid, _, _ = rest.partition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return None
    return int(pid)


async def _ask_shared(
    location: StoreLocation, layout: StateDir, request: ControlRequest
) -> ControlReply:
    """The answer of the orchestrator holding the goal's lease in a shared store: through
    its control socket when it is a process of this host on ``layout`` that answers,
    else through a control request left in the store."""
    goal_id = request.goal_id
    async with opened(location) as store:
        lease = await store.lease_of(goal_id)
        if lease is None:
            raise _not_running(goal_id, f"no orchestrator holds its lease in the store {location}")
        pid = _local_pid(lease)
        if pid is not None:
            # Not listening on this state dir's socket (another state dir): the store's way.
            reply = await _ask_socket(layout, pid, request, absent_ok=True)
            if reply is not None:
                return reply
        return await _ask_store(store, lease, request)


async def _ask_store(store: SharedStore, lease: Lease, request: ControlRequest) -> ControlReply:
    """Leave the request in the store for the lease's owner and wait (at most
    :data:`STORE_REPLY_TIMEOUT_S`) for its reply."""
    goal_id = request.goal_id
    mark = store.changes_seen()
    control_id = await store.post_control(goal_id, to_data(request), ttl_s=STORE_REPLY_TIMEOUT_S)
    message: ControlMessage | None = None
    # A little past the request's life: a runner that took it just before it expired
    # answers it (and its answer is printed).
    with trio.move_on_after(STORE_REPLY_TIMEOUT_S + STORE_POLL_S):
        while True:
            await store.wait_changed(STORE_POLL_S, (CONTROLS,), since=mark)
            mark = store.changes_seen()  # before the look: a reply meanwhile wakes us
            message = await store.control(control_id)
            if message is not None and message.reply is not None:
                break
    if message is None or message.reply is None:
        raise UserError(
            f"goal {goal_id!r}: its runner {lease.owner} did not answer within "
            f"{STORE_REPLY_TIMEOUT_S:.0f} s (the request expired unanswered: it is not applied)"
        )
    try:
        reply = reply_from_data(message.reply)
    except ControlFrameError as exc:
        raise UserError(f"goal {goal_id!r}: {lease.owner} answered garbage: {exc}") from None
    if reply.problem == "not_running":
        raise _not_running(goal_id, f"{lease.owner} no longer runs it")
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
    now: bool = False,
) -> None:
    """Send the request to the goal's process and exit as its answer says."""
    settings = read_config(config, state_dir=state)
    layout = StateDir(Path(settings.state_dir).expanduser())
    location = store_location(settings)
    request = ControlRequest(
        op,
        goal_id,
        reason,
        by=f"{getpass.getuser()} (pid {os.getpid()})",
        message=message,
        max_turns=max_turns,
        now=now,
    )
    try:
        reply = trio.run(_ask, location, layout, request)
    except STATE_DIR_ERRORS as exc:
        raise store_error(location, exc) from None
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
@click.option(
    "--now",
    is_flag=True,
    help="Also write MESSAGE into the running turn at once (permission.transport: stdio).",
)
@state_dir_option
def interrupt(
    goal_id: str, message: str, now: bool, config_file: Path | None, state_dir: Path | None
) -> None:
    """Give GOAL_ID's next work turn MESSAGE (an [OPERATOR INTERRUPT] block of its prompt);
    a sleeping goal wakes up for it. With --now, a running turn on the stdio transport
    gets it at once, as a user message mid-turn; it is queued for the next turn until the
    CLI takes it, so a turn that ends first leaves it for the next.

    Exit 0 queued (or sent), 2 not running or an empty message."""
    if not message.strip():
        raise UserError("interrupt: the message is empty")
    _answer("interrupt", goal_id, config_file, state_dir, message=message, now=now)


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
