"""``nexo-trio transcript GOAL [--turn N] [--raw]``: what happened in a goal's turns.

Read from the ledger: per turn, the prompt, Claude's texts, each tool call with its
permission decision and the size of its result (or that it failed), the turn's outcome and
what it spent, what it changed (checkpointed workspaces), the acceptance checks and how the
goal went on. ``--raw`` writes the turn's raw stdout instead (decompressed), which
``nexo-trio replay -`` classifies exactly as the run did::

    nexo-trio transcript GOAL --turn 1 --raw | nexo-trio replay -

The numbers are rounded for people (``tokens_text``, ``cost_text``, ... are shared with
``nexo-trio run``'s summary); ``nexo-trio events GOAL --json`` has them exact.
"""

from __future__ import annotations

import datetime
import json
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import attrs
import click
import trio

from nexo_trio.cli.common import (
    UserError,
    read_config,
    state_dir_option,
    store_error,
    store_location,
)
from nexo_trio.cli.replay import StreamNotes, stream_chunks
from nexo_trio.cli.stores import STORE_ERRORS, NothingRecorded, opened
from nexo_trio.core.checkpoints import DiffStat
from nexo_trio.core.goal_events import (
    AcceptanceChecked,
    AssistantText,
    AttemptCompleted,
    AttemptStarted,
    BudgetExhausted,
    CancelRequested,
    CheckpointFailed,
    DecisionMade,
    Escalated,
    GoalCompleted,
    GoalEvent,
    GoalPaused,
    GoalRestarted,
    GoalResumed,
    GoalStarted,
    InterruptDelivered,
    InterruptQueued,
    MaxTurnsRaised,
    ReplayDecided,
    RolledBack,
    SessionBound,
    Sleeping,
    StuckDetected,
    ToolCalled,
    WokeUp,
    WorkspaceCleaned,
)
from nexo_trio.core.outcome import Cause
from nexo_trio.core.record import STOPPED_FRAME
from nexo_trio.gate.goal_gate import call_subject
from nexo_trio.orchestrator.state_dir import StateDir
from nexo_trio.store.base import LedgerEntry
from nexo_trio.store.location import StoreLocation
from nexo_trio.wire.goal_json import event_from_ledger

INDENT = "    "
INPUT_CHARS = 300
"""How much of a tool call's input (as JSON) a transcript line shows, when it names no
command, path or URL."""
EVIDENCE_LINES = 12
"""How many lines of a failed check's evidence a transcript shows (its last ones)."""
ENGINE_CAUSES = frozenset({Cause.TIMEOUT, Cause.CANCELLED, Cause.GATE_UNAVAILABLE})
"""Outcomes the engine decided (a deadline, a stop, the gate's server) that a replay of the
stream alone cannot see..."""
STOP_CAUSES = frozenset({Cause.TIMEOUT, Cause.CANCELLED})
"""...but for these when the copy marks where the engine began the stop (copies made since
the mark exists do)."""
EXIT_CAUSES = frozenset({Cause.EXIT_ERROR, Cause.INTERRUPTED})
"""Outcomes of a stream without a result frame, judged by how the CLI exited (a replay
needs ``--exit-code``)."""

# --------------------------------------------------------------------------- numbers


def tokens_text(tokens: int) -> str:
    """A token count for people: ``950``, ``12.3k``, ``1.2M``."""
    if tokens < 1000:
        return str(tokens)
    if tokens < 999_950:
        return f"{tokens / 1000:.1f}k".replace(".0k", "k")
    return f"{tokens / 1_000_000:.1f}M".replace(".0M", "M")


def cost_text(usd: float) -> str:
    """Money for people: ``$1.23``, ``$0.05``, ``$0.0012`` (two significant digits under a
    cent), ``$0``."""
    if usd <= 0:
        return "$0"
    if usd >= 0.01:
        return f"${usd:.2f}"
    return f"${usd:.2g}" if usd >= 1e-4 else "<$0.0001"


def seconds_text(seconds: float) -> str:
    """A duration for people: ``0.4s``, ``42s``, ``3m 12s``, ``1h 5m``."""
    if seconds < 10:
        return f"{seconds:.1f}s"
    if seconds < 60:
        return f"{seconds:.0f}s"
    whole = round(seconds)
    if whole < 3600:
        return f"{whole // 60}m {whole % 60}s"
    return f"{whole // 3600}h {whole % 3600 // 60}m"


def bytes_text(size: int) -> str:
    """A size for people: ``512 B``, ``1.2 KiB``, ``3.4 MiB``."""
    value = float(size)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024:
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def changes_text(stat: DiffStat, *, paths: int = 8) -> str:
    """What a turn changed, in one line: counts, then the paths by how they changed."""
    files = "1 file" if stat.files_changed == 1 else f"{stat.files_changed} files"
    text = f"{files}, +{stat.insertions} -{stat.deletions}"
    parts = []
    for verb, names in (
        ("added", stat.added),
        ("modified", stat.modified),
        ("deleted", stat.deleted),
    ):
        if names:
            shown = ", ".join(names[:paths])
            more = f" and {len(names) - paths} more" if len(names) > paths else ""
            parts.append(f"{verb} {shown}{more}")
    return f"{text}: {'; '.join(parts)}" if parts else text


def when_text(at: float) -> str:
    """A recorded time, local: ``2025-01-31 14:05:09``."""
    return datetime.datetime.fromtimestamp(at).strftime("%Y-%m-%d %H:%M:%S")


# --------------------------------------------------------------------------- the ledger


def goal_rows(
    location: StoreLocation, goal_id: str, *, timeout_s: float = 30.0
) -> list[LedgerEntry] | None:
    """The goal's ledger rows in the store at ``location`` (``None``: a SQLite file that
    does not exist, nothing was ever recorded there). Raises :class:`UserError` for a
    store that cannot be read (in ``timeout_s``)."""

    async def read() -> list[LedgerEntry]:
        with trio.fail_after(timeout_s):
            async with opened(location) as store:
                return await store.events(goal_id)

    try:
        return trio.run(read)
    except NothingRecorded:
        return None
    except trio.TooSlowError:
        raise UserError(f"cannot read the ledger in {location}: timed out") from None
    except STORE_ERRORS as exc:
        raise store_error(location, exc) from None


def typed_events(rows: Iterable[LedgerEntry]) -> list[GoalEvent]:
    """The rows as goal events (kinds this version does not know left out)."""
    found = []
    for row in rows:
        event = event_from_ledger(row.kind, row.data, at=row.at)
        if event is not None:
            found.append(event)
    return found


def since_restart(events: Sequence[GoalEvent]) -> list[GoalEvent]:
    """The events since the goal last started over (``--restart``), or all of them."""
    for index in range(len(events) - 1, -1, -1):
        if isinstance(events[index], GoalRestarted):
            return list(events[index + 1 :])
    return list(events)


@attrs.define
class Attempt:
    """One run of the CLI: its ``attempt_started`` and what was recorded until the next."""

    started: AttemptStarted
    number: int
    """Which attempt of its turn number this is (1: the first; retries and compactions
    count)."""
    events: list[GoalEvent] = attrs.Factory(list)

    @property
    def completed(self) -> AttemptCompleted | None:
        """How it ended (``None``: it never did, a crash interrupted it)."""
        return next((e for e in self.events if isinstance(e, AttemptCompleted)), None)

    def of(self, kind: type[Any]) -> list[Any]:
        """Its events of one type."""
        return [e for e in self.events if isinstance(e, kind)]


Block = Attempt | GoalEvent


def blocks(events: Iterable[GoalEvent]) -> list[Block]:
    """The events grouped: each attempt with what followed it, the runs' beginnings and
    ends (and a restart) on their own."""
    found: list[Block] = []
    current: Attempt | None = None
    counts: dict[int, int] = {}
    for event in events:
        if isinstance(event, AttemptStarted):
            counts[event.turn] = counts.get(event.turn, 0) + 1
            current = Attempt(event, counts[event.turn])
            found.append(current)
        elif isinstance(event, GoalStarted | GoalCompleted | GoalRestarted):
            current = None
            found.append(event)
            if isinstance(event, GoalRestarted):
                counts = {}
        elif current is not None:
            current.events.append(event)
        else:
            found.append(event)
    return found


def attempts(events: Iterable[GoalEvent]) -> list[Attempt]:
    """Every attempt, in order."""
    return [b for b in blocks(events) if isinstance(b, Attempt)]


# --------------------------------------------------------------------------- rendering


def _block(label: str, text: str) -> list[str]:
    lines = text.splitlines() or [""]
    if len(lines) == 1 and len(label) + len(lines[0]) < 100:
        return [f"{label}: {lines[0]}"]
    return [f"{label}:", *(f"{INDENT}{line}" if line else "" for line in lines)]


def call_text(call: ToolCalled) -> str:
    """A tool call in one line: its name and what it is about (the command, the path), or
    its input as JSON."""
    subject = call_subject(call.name, call.input)
    if subject is None:
        subject = json.dumps(call.input, ensure_ascii=False, default=str) if call.input else ""
        if len(subject) > INPUT_CHARS:
            subject = subject[:INPUT_CHARS] + "…"
    first, *rest = subject.splitlines() or [""]
    more = f" (+{len(rest)} lines)" if rest else ""
    return f"{call.name} {first}{more}".rstrip()


def decision_text(decision: DecisionMade) -> str:
    """A permission decision in one line: the outcome, who decided, on what grounds."""
    how = [decision.effect, decision.rule]
    grounds = ", ".join(h for h in how if h)
    text = f"permission {decision.outcome} by {decision.decider}"
    text += f" [{grounds}]" if grounds else ""
    return text + (f": {decision.reason}" if decision.reason else "")


def result_text(call: ToolCalled) -> str:
    """A tool call's result in brief: its size, or that it failed, or that none came."""
    if call.result_bytes is None:
        return "no result (the turn ended first)"
    size = bytes_text(call.result_bytes)
    return f"error, {size}" if call.is_error else size


def pair_decisions(attempt: Attempt) -> tuple[dict[int, DecisionMade], set[int]]:
    """Which permission decision goes with which tool call, by position in
    ``attempt.events``: the one naming the call's tool use (or, recorded without one, the
    earliest unpaired decision on the same tool); and the positions of the decisions paired."""
    by_id: dict[str, int] = {}
    waiting: dict[str, list[int]] = {}
    paired: dict[int, DecisionMade] = {}
    taken: set[int] = set()
    for index, event in enumerate(attempt.events):
        if isinstance(event, DecisionMade):
            if event.tool_use_id:
                by_id[event.tool_use_id] = index
            else:
                waiting.setdefault(event.tool_name, []).append(index)
        elif isinstance(event, ToolCalled):
            found = by_id.pop(event.tool_use_id, None)
            if found is None and waiting.get(event.name):
                found = waiting[event.name].pop(0)
            if found is not None:
                decision = attempt.events[found]
                assert isinstance(decision, DecisionMade)
                paired[index] = decision
                taken.add(found)
    return paired, taken


def render_attempt(attempt: Attempt, streams: Path | None) -> list[str]:
    """The lines of one attempt's transcript."""
    started = attempt.started
    kind = " (compact)" if started.compact else ""
    again = ", again after a crash" if started.redo else ""
    nth = f", attempt {attempt.number}" if attempt.number > 1 else ""
    session = started.resume_session or "new session"
    lines = [f"── turn {started.turn}{kind}{nth}{again} · {when_text(started.at)} · {session}"]
    lines += _block("prompt", started.prompt)
    for message in started.interrupts:
        lines += _block("operator message delivered", message)
    paired, taken = pair_decisions(attempt)
    for index, event in enumerate(attempt.events):
        if index in taken:
            continue  # shown with its tool call
        lines += _event_lines(event, paired.get(index))
    if attempt.completed is None:
        lines.append("outcome: none recorded (the run stopped during the turn)")
    if streams is not None and started.stream:
        path = streams / started.stream
        lines.append(f"raw stream: {path}" + ("" if path.exists() else " (no longer there)"))
    return lines


def _event_lines(event: GoalEvent, decision: DecisionMade | None = None) -> list[str]:
    match event:
        case AssistantText(text=text, parent_tool_use_id=parent):
            return _block("subagent" if parent else "claude", text)
        case ToolCalled():
            lines = [f"tool {call_text(event)}"]
            if decision is not None:
                lines.append(INDENT + decision_text(decision))
            lines.append(f"{INDENT}→ {result_text(event)}")
            return lines
        case DecisionMade():
            what = f" {event.subject}" if event.subject else ""
            return [f"{event.tool_name}{what}: {decision_text(event)}"]
        case SessionBound(session_id=session_id):
            return [f"session {session_id}"]
        case AttemptCompleted():
            return _completed_lines(event)
        case AcceptanceChecked():
            return _acceptance_lines(event)
        case ReplayDecided(action=action, reason=reason) if action != "proceed":
            return [f"then: {action}" + (f" ({reason})" if reason else "")]
        case RolledBack(sha=sha, turn=turn, by=by):
            before = f" (before turn {turn})" if turn is not None else ""
            return [f"rolled back to {sha[:12]}{before} by {by}"]
        case CheckpointFailed(reason=reason):
            return [f"checkpoint failed: {reason}"]
        case StuckDetected(reason=reason, action=action):
            return [f"stuck: {reason} → {action.replace('_', ' ')}"]
        case Sleeping(duration_ms=ms, reason=reason):
            return [f"sleeping {seconds_text(ms / 1000)}" + (f": {reason}" if reason else "")]
        case WokeUp(early=early):
            return ["woken up by an operator message" if early else "woke up"]
        case InterruptQueued(message=message):
            return _block("operator message queued", message)
        case InterruptDelivered(message=message):
            return _block("operator message taken mid-turn", message)
        case GoalPaused():
            return ["operator: pause"]
        case GoalResumed():
            return ["operator: resume"]
        case CancelRequested(reason=reason):
            return [f"cancel: {reason}"]
        case MaxTurnsRaised(max_turns=n):
            return [f"operator: max turns {n}"]
        case BudgetExhausted(axis=axis, reason=reason):
            return [f"budget exhausted ({axis}): {reason}"]
        case Escalated(reason=reason):
            return [f"escalated: {reason}"]
        case WorkspaceCleaned(removed=removed, by=by):
            return [f"workspace cleaned by {by}: {', '.join(removed)}"]
        case GoalStarted():
            confined = "confined" if event.confined else "unconfined"
            after = f"; the run before {event.resumed_after}" if event.resumed_after else ""
            return [
                f"══ run {event.run} · {when_text(event.at)} · {event.workspace} "
                f"({confined}, pid {event.pid}){after}"
            ]
        case GoalRestarted(reason=reason):
            return [f"══ goal restarted: {reason}"]
        case GoalCompleted(outcome=outcome):
            why = f": {outcome.reason}" if outcome.reason else ""
            return [
                f"══ goal {outcome.kind.value}{why} · {outcome.total_turns} turn(s), "
                f"{tokens_text(outcome.usage.total_tokens)} tokens, "
                f"{cost_text(outcome.cost_usd)}, {seconds_text(outcome.wall_time_s)}"
            ]
        case _:
            return []


def _completed_lines(event: AttemptCompleted) -> list[str]:
    spent = (
        f"{tokens_text(event.usage.total_tokens)} tokens, {cost_text(event.cost_usd)}, "
        f"{seconds_text(event.duration_s)}"
    )
    exit_code = f", exit {event.exit_code}" if event.exit_code is not None else ""
    stopped = f", stopped with {'+'.join(event.stop_actions)}" if event.stop_actions else ""
    lines = [f"outcome: {event.kind} ({event.cause}) — {spent}{exit_code}{stopped}"]
    if event.reason:
        lines += _block(f"{INDENT}reason", event.reason)
    if event.changes is not None:
        lines.append("changes: " + ("none" if event.changes.empty else changes_text(event.changes)))
    return lines


def _acceptance_lines(event: AcceptanceChecked) -> list[str]:
    passed = sum(1 for r in event.results if r.passed)
    verdict = "met" if event.met else "not met"
    lines = [f"acceptance: {verdict} ({passed} of {len(event.results)} passed)"]
    for r in sorted(event.results, key=lambda r: r.index):
        if getattr(r, "skipped", False):
            lines.append(f"{INDENT}- {r.label}: not run")
            continue
        mark = "✓" if r.passed else ("✗" if r.required else "✗ (optional)")
        message = f": {r.message}" if r.message and not r.passed else ""
        lines.append(f"{INDENT}{mark} {r.label}{message}")
        if not r.passed and r.evidence:
            evidence = r.evidence.splitlines()[-EVIDENCE_LINES:]
            lines += [f"{INDENT * 2}{line}" for line in evidence]
    return lines


def render_transcript(
    goal_id: str, events: Sequence[GoalEvent], *, turn: int | None, streams: Path | None
) -> str:
    """The transcript of a goal's events (``turn``: only that turn's attempts, since the
    last restart)."""
    lines: list[str] = []
    started = next((e for e in events if isinstance(e, GoalStarted)), None)
    head = f"goal {goal_id}"
    lines.append(f"{head}: {started.description}" if started is not None else head)
    if turn is not None:
        chosen = [a for a in attempts(since_restart(events)) if a.started.turn == turn]
        for attempt in chosen:
            lines += ["", *render_attempt(attempt, streams)]
        return "\n".join(lines)
    for block in blocks(events):
        lines.append("")
        if isinstance(block, Attempt):
            lines += render_attempt(block, streams)
        else:
            shown = _event_lines(block)
            if not shown:
                lines.pop()
            lines += shown
    return "\n".join(lines)


# --------------------------------------------------------------------------- raw streams


def stream_of(attempt: Attempt, streams: Path) -> Path | None:
    """The file keeping an attempt's raw stdout (``None``: none was kept). Attempts
    recorded before the ledger named the file: the latest one of that turn."""
    started = attempt.started
    if started.stream:
        return streams / started.stream
    kind = "-compact" if started.compact else ""
    found = sorted(
        p
        for p in streams.glob(f"turn-{started.turn}{kind}-*")
        if started.compact or not p.name.startswith(f"turn-{started.turn}-compact")
    )
    return found[-1] if found else None


def _pick(chosen: list[Attempt]) -> Attempt:
    """The attempt ``--raw`` writes: the last work turn among ``chosen``, else the last."""
    work = [a for a in chosen if not a.started.compact]
    return (work or chosen)[-1]


_STOP_MARK = f'"{STOPPED_FRAME}"'.encode()


def write_raw(path: Path, out: Any) -> StreamNotes:
    """Copy the stream at ``path`` to ``out`` (a binary file), decompressed."""
    notes = StreamNotes()
    tail = b""  # the end of the chunk before: a mark may span two chunks
    with path.open("rb") as f:
        for chunk in stream_chunks(f, notes):
            out.write(chunk)
            if not notes.stop_marked:
                notes.stop_marked = _STOP_MARK in tail + chunk
                tail = chunk[-len(_STOP_MARK) :]
    out.flush()
    return notes


def _replay_hints(attempt: Attempt, notes: StreamNotes) -> list[str]:
    """What ``replay`` needs to be told to judge the stream as the run did."""
    completed = attempt.completed
    if completed is None:
        return ["the turn has no recorded end (the run stopped during it)"]
    hints = []
    try:
        cause = Cause(completed.cause)
    except ValueError:
        cause = None
    if cause in STOP_CAUSES and notes.stop_marked:
        pass  # the copy says where the engine stopped the turn: replay reads it so
    elif cause in ENGINE_CAUSES:
        hints.append(
            f"the turn ended {completed.kind} ({completed.cause}) by the engine: a replay of "
            "the stream alone does not see that"
        )
    elif cause in EXIT_CAUSES and completed.exit_code not in (None, 0):
        hints.append(
            f"no result frame, and the CLI exited with {completed.exit_code}: replay with "
            f"--exit-code {completed.exit_code}"
        )
    elif cause is Cause.INTERRUPTED:
        hints.append(
            "no result frame, and the CLI was killed by a signal: replay with --exit-code "
            "-N (N: the signal, e.g. -9)"
        )
    return hints


# --------------------------------------------------------------------------- the command


@click.command()
@click.argument("goal_id")
@click.option("--turn", type=click.IntRange(min=1), help="Only this turn (its attempts).")
@click.option(
    "--raw",
    is_flag=True,
    help="Write the turn's raw stdout stream (decompressed) instead, for `nexo-trio replay -`"
    " (the last attempt of the turn; without --turn, of the goal).",
)
@state_dir_option
def transcript(
    goal_id: str, turn: int | None, raw: bool, config_file: Path | None, state_dir: Path | None
) -> None:
    """Print what happened in GOAL_ID's turns: prompts, Claude's texts, tool calls with their
    permission decisions and results, outcomes, changes and acceptance checks."""
    config = read_config(config_file, state_dir=state_dir)
    root = Path(config.state_dir).expanduser().absolute()
    location = store_location(config)
    rows = goal_rows(location, goal_id)
    if rows is None:
        raise NothingRecorded(location)
    if not rows:
        raise UserError(f"no events recorded for goal {goal_id!r}")
    events = typed_events(rows)
    streams = StateDir(root).streams(goal_id)
    current = attempts(since_restart(events))
    chosen = current if turn is None else [a for a in current if a.started.turn == turn]
    if not chosen:
        turns = sorted({a.started.turn for a in current})
        known = f" (its turns: {', '.join(map(str, turns))})" if turns else " (it ran no turn)"
        what = f"turn {turn}" if turn is not None else "turn"
        raise UserError(f"goal {goal_id!r} has no {what}{known}")
    if not raw:
        click.echo(render_transcript(goal_id, events, turn=turn, streams=streams))
        return
    attempt = _pick(chosen)
    path = stream_of(attempt, streams)
    label = f"turn {attempt.started.turn}" + (
        f" (attempt {attempt.number})" if attempt.number > 1 else ""
    )
    if path is None or not path.exists():
        where = f": {path} is not there" if path is not None else ""
        raise UserError(f"no raw stream kept for {label} of goal {goal_id!r}{where}")
    if turn is None:
        click.echo(f"note: the raw stream of {label}, the goal's last", err=True)
    elif len(chosen) > 1:
        click.echo(f"note: the raw stream of {label}, the last of {len(chosen)}", err=True)
    try:
        notes = write_raw(path, sys.stdout.buffer)
    except BrokenPipeError:
        return  # the reader had enough (`| head`)
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}") from None
    for note in [*notes.problems(), *_replay_hints(attempt, notes)]:
        click.echo(f"note: {note}", err=True)
