"""``nexo-trio status``, ``events GOAL_ID`` and ``bindings``: read the store (``--store``,
``NEXO_STORE`` or the config's ``store:``; else ``nexo.db`` in the state directory).

``events GOAL_ID --follow`` goes on printing new events as they are recorded, by any
process (:mod:`nexo_trio.cli.follow`)."""

from __future__ import annotations

import datetime
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from nexo_trio.cli.common import UserError, read_config, state_dir_option, store_location
from nexo_trio.cli.stores import NothingRecorded, open_state, with_store
from nexo_trio.store.base import GoalSummary, LedgerEntry, SharedStore
from nexo_trio.store.location import StoreLocation
from nexo_trio.wire.outcome_json import dumps

T = TypeVar("T")


def _location(config_file: Path | None, state_dir: Path | None) -> StoreLocation:
    return store_location(read_config(config_file, state_dir=state_dir))


def _with_store(location: StoreLocation, fn: Callable[[SharedStore], Awaitable[T]]) -> T | None:
    """``fn(store)``; ``None`` (said on stderr) when nothing was recorded there yet."""
    try:
        return with_store(location, fn)
    except NothingRecorded as exc:
        click.echo(exc.message, err=True)
        return None


def _when(at: float) -> str:
    return datetime.datetime.fromtimestamp(at).strftime("%Y-%m-%d %H:%M:%S")


@click.command()
@state_dir_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object per goal.")
def status(config_file: Path | None, state_dir: Path | None, as_json: bool) -> None:
    """List the goals in the ledger and how each ended (or that it is still open)."""
    config = read_config(config_file, state_dir=state_dir)
    location = store_location(config)
    root = Path(config.state_dir).expanduser()

    async def summaries(store: SharedStore) -> list[tuple[GoalSummary, str | None]]:
        found = []
        for g in await store.goals():
            running = None if g.outcome else await open_state(location, store, root, g.goal_id)
            found.append((g, running))
        return found

    goals = _with_store(location, summaries)
    for g, running in goals or []:
        if as_json:
            row = {
                "goal_id": g.goal_id,
                "first_at": g.first_at,
                "last_at": g.last_at,
                "events": g.events,
                "last_kind": g.last_kind,
                "outcome": g.outcome,
                "running": running,
            }
            sys.stdout.buffer.write(dumps(row) + b"\n")
        else:
            state = g.outcome or f"{running} (last: {g.last_kind})"
            click.echo(f"{g.goal_id}  {state:<28} {g.events:>5} events  last {_when(g.last_at)}")
    sys.stdout.flush()


@click.command()
@click.argument("goal_id")
@state_dir_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object per event (exact values).")
@click.option(
    "--follow",
    "-f",
    is_flag=True,
    help="Then print new events as they are recorded (by any process), until Ctrl-C.",
)
@click.option(
    "--until-done",
    is_flag=True,
    help="With --follow: stop once the goal's run records goal_completed.",
)
def events(  # noqa: PLR0917 - click passes every option by position
    goal_id: str,
    config_file: Path | None,
    state_dir: Path | None,
    as_json: bool,
    follow: bool,
    until_done: bool,
) -> None:
    """Print every recorded event of GOAL_ID, in order (numbers rounded; --json: exact)."""
    if until_done and not follow:
        raise UserError("--until-done goes with --follow")
    if follow:
        from nexo_trio.cli.follow import follow_events  # noqa: PLC0415 - only when following

        location = _location(config_file, state_dir)
        follow_events(location, goal_id, as_json=as_json, until_done=until_done)
        return
    entries = _with_store(_location(config_file, state_dir), lambda store: store.events(goal_id))
    if entries is None:
        return
    if not entries:
        raise UserError(f"no events recorded for goal {goal_id!r}")
    for e in entries:
        sys.stdout.buffer.write(event_line(e, as_json=as_json))
    sys.stdout.flush()


def event_line(entry: LedgerEntry, *, as_json: bool) -> bytes:
    """One recorded event as ``events`` prints it: a JSON object (exact values), or a line
    for people (rounded numbers, the failed checks of an ``acceptance_checked``)."""
    if as_json:
        row = {"seq": entry.seq, "at": entry.at, "kind": entry.kind, "data": entry.data}
        return dumps(row) + b"\n"
    brief = _brief(entry.data)
    return f"{entry.seq:>6} {_when(entry.at)} {entry.kind:<20} {brief}".rstrip().encode() + b"\n"


@click.command()
@state_dir_option
@click.option("--all", "include_invalid", is_flag=True, help="Include invalid bindings.")
def bindings(config_file: Path | None, state_dir: Path | None, include_invalid: bool) -> None:
    """List goal -> Claude Code session bindings, most recently active first."""
    rows = _with_store(
        _location(config_file, state_dir),
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
            text = _outcome_brief(value)  # a goal_completed event: its GoalOutcome
        else:
            text = _number(key, value) if isinstance(value, float) else str(value)
        parts.append(f"{key}={text if len(text) <= 80 else text[:77] + '...'}")
    usage = data.get("usage")
    if isinstance(usage, dict) and usage:
        parts.append(f"tokens={_tokens(usage)}")
    results = data.get("results")
    if isinstance(results, list) and results:
        parts.append(_checks_brief(results))
    return " ".join(parts)


def _number(key: str, value: float) -> str:
    """A float for people: money to 4 decimals, durations to 0.1 (s or ms), times as times."""
    if key.endswith("_usd"):
        return f"{value:.4f}"
    if key.endswith(("_s", "_ms")):
        return f"{value:.1f}"
    if key == "until":
        return _when(value)
    return f"{round(value, 4):g}"


def _tokens(usage: dict[str, Any]) -> int:
    return sum(v for k, v in usage.items() if k.endswith("_tokens") and isinstance(v, int))


def _outcome_brief(value: dict[str, Any]) -> str:
    end = value["outcome"]
    reason = f" ({end['reason']})" if end.get("reason") else ""
    given = value.get("usage")
    usage: dict[str, Any] = given if isinstance(given, dict) else {}
    cost, wall = usage.get("cost_usd"), usage.get("wall_time_s")
    spent = f", {_tokens(usage)} tokens"
    spent += f", ${cost:.4f}" if isinstance(cost, int | float) else ""
    spent += f", {wall:.1f}s" if isinstance(wall, int | float) else ""
    return f"{end.get('kind')}{reason} after {value.get('total_turns', 0)} turn(s){spent}"


def _checks_brief(results: list[Any]) -> str:
    """The checks of an ``acceptance_checked``: how many passed, and each failed one with
    why (its message, and the last line of its evidence)."""
    rows = [r for r in results if isinstance(r, dict)]
    passed = sum(1 for r in rows if r.get("passed"))
    parts = [f"passed={passed}/{len(rows)}"]
    skipped = sum(1 for r in rows if r.get("skipped"))
    if skipped:
        parts.append(f"skipped={skipped}")
    for r in rows:
        if r.get("passed") or r.get("skipped"):
            continue
        text = f"{r.get('label', '?')}: {r.get('message') or 'failed'}"
        lines = [line.strip() for line in str(r.get("evidence") or "").splitlines()]
        last = next((line for line in reversed(lines) if line), "")
        if last:
            text += f" ({last if len(last) <= 60 else last[:57] + '...'})"
        if r.get("required") is False:
            text += " [optional]"
        parts.append(f"✗ {text if len(text) <= 160 else text[:157] + '...'}")
    return " ".join(parts)
