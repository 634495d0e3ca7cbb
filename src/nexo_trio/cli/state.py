"""``nexo-trio status``, ``events GOAL_ID`` and ``bindings``: read the state directory."""

from __future__ import annotations

import datetime
import sys
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any, TypeVar

import click
import trio

from nexo_trio.cli.common import (
    STATE_DIR_ERRORS,
    UserError,
    read_config,
    state_dir_error,
    state_dir_option,
)
from nexo_trio.orchestrator.state_dir import StateDir
from nexo_trio.store.base import Store
from nexo_trio.store.sqlite import open_sqlite_store
from nexo_trio.wire.outcome_json import dumps

T = TypeVar("T")


def _db_path(config_file: Path | None, state_dir: Path | None) -> Path:
    config = read_config(config_file, state_dir=state_dir)
    return StateDir(Path(config.state_dir).expanduser()).database


def _with_store(db: Path, fn: Callable[[Store], Awaitable[T]]) -> T | None:
    if not db.exists():
        click.echo(f"nothing recorded yet: {db} does not exist", err=True)
        return None

    async def main() -> T:
        async with AsyncExitStack() as stack:
            try:
                store = await stack.enter_async_context(open_sqlite_store(db))
            except STATE_DIR_ERRORS as exc:
                raise state_dir_error(db.parent, exc) from None
            return await fn(store)

    return trio.run(main)


def _when(at: float) -> str:
    return datetime.datetime.fromtimestamp(at).strftime("%Y-%m-%d %H:%M:%S")


@click.command()
@state_dir_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object per goal.")
def status(config_file: Path | None, state_dir: Path | None, as_json: bool) -> None:
    """List the goals in the ledger and how each ended (or that it is still open)."""
    goals = _with_store(_db_path(config_file, state_dir), lambda store: store.goals())
    for g in goals or []:
        if as_json:
            row = {
                "goal_id": g.goal_id,
                "first_at": g.first_at,
                "last_at": g.last_at,
                "events": g.events,
                "last_kind": g.last_kind,
                "outcome": g.outcome,
            }
            sys.stdout.buffer.write(dumps(row) + b"\n")
        else:
            state = g.outcome or f"open (last: {g.last_kind})"
            click.echo(f"{g.goal_id}  {state:<28} {g.events:>5} events  last {_when(g.last_at)}")
    sys.stdout.flush()


@click.command()
@click.argument("goal_id")
@state_dir_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object per event.")
def events(goal_id: str, config_file: Path | None, state_dir: Path | None, as_json: bool) -> None:
    """Print every recorded event of GOAL_ID, in order."""
    entries = _with_store(_db_path(config_file, state_dir), lambda store: store.events(goal_id))
    if entries is None:
        return
    if not entries:
        raise UserError(f"no events recorded for goal {goal_id!r}")
    for e in entries:
        if as_json:
            row = {"seq": e.seq, "at": e.at, "kind": e.kind, "data": e.data}
            sys.stdout.buffer.write(dumps(row) + b"\n")
        else:
            click.echo(f"{e.seq:>6} {_when(e.at)} {e.kind:<20} {_brief(e.data)}")
    sys.stdout.flush()


@click.command()
@state_dir_option
@click.option("--all", "include_invalid", is_flag=True, help="Include invalid bindings.")
def bindings(config_file: Path | None, state_dir: Path | None, include_invalid: bool) -> None:
    """List goal -> Claude Code session bindings, most recently active first."""
    rows = _with_store(
        _db_path(config_file, state_dir),
        lambda store: store.list_bindings(include_invalid=include_invalid),
    )
    for b in rows or []:
        flag = "  INVALID" if b.invalid else ""
        click.echo(f"{b.goal_id}  {b.session_id}  active {_when(b.last_active_at)}{flag}")


def _brief(data: dict[str, Any]) -> str:
    skip = {"at", "goal_id", "prompt", "results", "metadata", "usage"}
    parts = []
    for key, value in data.items():
        if key in skip or value in (None, "", [], {}):
            continue
        if key == "outcome" and isinstance(value, dict) and isinstance(value.get("outcome"), dict):
            # A goal_completed event: its GoalOutcome, in brief.
            end = value["outcome"]
            reason = f" ({end['reason']})" if end.get("reason") else ""
            text = f"{end.get('kind')}{reason} after {value.get('total_turns', 0)} turn(s)"
        else:
            text = str(value)
        parts.append(f"{key}={text if len(text) <= 80 else text[:77] + '...'}")
    return " ".join(parts)
