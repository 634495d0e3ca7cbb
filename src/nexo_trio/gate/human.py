"""The ``human`` decider: a person answers each permission question (attended runs).

:class:`HumanDecider` puts every request it is asked on a list of pending
:class:`Question` s and waits for an answer; one nobody answers is denied at its deadline
(``deadline_s``, which must stay below the gate's decider timeout so that the deny says why:
:meth:`HumanDecider.for_tool_timeout` takes 90 % of
:attr:`~nexo_trio.gate.mcp_config.GateDeadlines.decider_timeout_s`; and sooner when the
caller's own trio deadline is nearer, e.g. after slow deciders earlier in a chain). A caller
that is cancelled (the goal, the gate's deadline) takes its question away with it.

Answers come from anywhere in the same trio run, through :meth:`HumanDecider.answer`:

* :class:`TerminalPrompter` — a service that shows each pending question on the terminal
  (the tool, the command or path, the note a previous decider left) and reads ``y``/``n``.
  It reads a trio stream, never blocking the event loop: :meth:`TerminalPrompter.open_tty`
  opens the controlling terminal (``/dev/tty``, its own file description, so making it
  non-blocking does not touch the shell's stdin); tests give it a pipe.
* remote answers (``nexo-trio approve|deny GOAL``, through the control socket):
  :meth:`HumanDecider.pending` and :meth:`HumanDecider.answer` with ``question_id=None``
  (the oldest question of that goal).

Every decision names the decider (``human``) and says who answered in its ``rationale``
("approved by uid 1000 from another terminal"). In a chain (``[rules, llm, human]``) the
human is asked only what the others abstained on; wrap those with
:meth:`HumanDecider.noting` to show the human why they abstained.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import re
import termios
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any, Final

import attrs
import trio

from nexo_trio.core.permission import (
    Decision,
    DecisionOutcome,
    PermissionRequest,
    cli_note,
    deny,
)
from nexo_trio.gate.decider import Decider, close_decider
from nexo_trio.gate.mcp_config import GateDeadlines

__all__ = [
    "HumanDecider",
    "Question",
    "TerminalPrompter",
    "parse_answer",
    "printable",
    "summarize",
]

DEADLINE_SHARE: Final = 0.9
"""The share of the gate's decider timeout a human may take (the rest: answering Claude)."""
SUMMARY_LIMIT: Final = 2000
_SUMMARY_KEYS: Final = {
    "Bash": "command",
    "Read": "file_path",
    "Edit": "file_path",
    "Write": "file_path",
    "MultiEdit": "file_path",
    "NotebookEdit": "notebook_path",
    "NotebookRead": "notebook_path",
    "WebFetch": "url",
    "WebSearch": "query",
    "LS": "path",
    "Task": "description",
}
_NOTES_KEPT: Final = 64


def printable(text: str) -> str:
    """``text`` safe to print on a terminal: control and format characters (escape
    sequences, carriage returns, bidi overrides) are shown as ``\\x1b``-style escapes;
    newlines and tabs are kept."""
    out: list[str] = []
    for ch in text:
        if ch in "\n\t" or ch.isprintable():
            out.append(ch)
        elif ord(ch) <= 0xFF:
            out.append(f"\\x{ord(ch):02x}")
        elif ord(ch) <= 0xFFFF:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    return "".join(out)


def _clip(text: str, limit: int = SUMMARY_LIMIT) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit} more characters)"


def summarize(tool_name: str, tool_input: Mapping[str, Any]) -> str:
    """What a question shows of a call: the command, the path, the URL (printable, clipped);
    for other tools their input as compact JSON."""
    key = _SUMMARY_KEYS.get(tool_name)
    value = tool_input.get(key) if key is not None else None
    if tool_name in ("Grep", "Glob") and isinstance(tool_input.get("pattern"), str):
        where = tool_input.get("path")
        value = tool_input["pattern"] + (f"  (in {where})" if isinstance(where, str) else "")
    if not isinstance(value, str) or not value.strip():
        value = json.dumps(dict(tool_input), sort_keys=True, default=str, ensure_ascii=False)
    return _clip(printable(value))


@attrs.frozen
class Question:
    """A permission request waiting for a person. ``asked_at`` and ``deadline`` are on the
    decider's clock (wall-clock seconds since the epoch by default)."""

    id: str
    goal_id: str
    tool_name: str
    summary: str
    """The command, path or URL (printable, clipped)."""
    context: str | None
    """A note for the person: what a previous decider of the chain found, if anything."""
    asked_at: float
    deadline: float


@attrs.define
class _Pending:
    question: Question
    answered: trio.Event = attrs.Factory(trio.Event)
    decision: Decision | None = None


class HumanDecider:
    """Asks a person; denies at ``deadline_s`` when nobody answers.

    ``clock`` stamps the questions (``asked_at``, ``deadline``); the wait itself runs on
    trio's clock. ``context`` computes a question's note from its request (a previous
    decider's finding) when the caller gives none. At most ``max_pending`` questions wait at
    once; more are denied at once. Use it from the trio thread only.
    """

    name = "human"

    def __init__(
        self,
        *,
        deadline_s: float,
        clock: Callable[[], float] = time.time,
        context: Callable[[PermissionRequest], str | None] | None = None,
        max_pending: int = 64,
    ) -> None:
        if not (math.isfinite(deadline_s) and deadline_s > 0):
            raise ValueError(f"the deadline must be a positive number of seconds, got {deadline_s}")
        if max_pending < 1:
            raise ValueError(f"max_pending must be at least 1, got {max_pending}")
        self.deadline_s = deadline_s
        self.max_pending = max_pending
        self._clock = clock
        self._context = context
        self._ids = itertools.count(1)
        self._pending: dict[str, _Pending] = {}
        self._change = trio.Event()
        self._notes: OrderedDict[int, tuple[PermissionRequest, str]] = OrderedDict()

    @classmethod
    def for_tool_timeout(cls, tool_timeout_s: float, **options: Any) -> HumanDecider:
        """A decider whose deadline fits the gate's nested deadlines for this tool timeout
        (:data:`DEADLINE_SHARE` of the decider timeout)."""
        decider_timeout = GateDeadlines.from_tool_timeout(tool_timeout_s).decider_timeout_s
        return cls(deadline_s=decider_timeout * DEADLINE_SHARE, **options)

    def now(self) -> float:
        """The time on the questions' clock."""
        return self._clock()

    # -- the decider ---------------------------------------------------------------------

    async def decide(self, request: PermissionRequest, *, context: str | None = None) -> Decision:
        """Ask, wait for an answer, and return it; a deny when nobody answers in time."""
        if context is None:
            context = self._note_for(request)
        cli = cli_note(request)
        if cli is not None:
            cli = f"Claude Code's check: {cli}"
            context = f"{context}; {cli}" if context else cli
        if len(self._pending) >= self.max_pending:
            return deny(
                f"Permission denied: {self.max_pending} questions are already waiting for a "
                "person to answer",
                self.name,
            )
        limit = self._time_limit()
        asked_at = self._clock()
        question = Question(
            id=f"q{next(self._ids)}",
            goal_id=request.goal_id,
            tool_name=request.tool_name,
            summary=summarize(request.tool_name, request.input),
            context=_clip(printable(context), 500) if context else None,
            asked_at=asked_at,
            deadline=asked_at + limit,
        )
        entry = _Pending(question)
        self._pending[question.id] = entry
        self._changed()
        try:
            with trio.move_on_after(limit):
                await entry.answered.wait()
        finally:
            if self._pending.pop(question.id, None) is not None:
                self._changed()
        if entry.decision is not None:
            return entry.decision
        return deny(
            f"Permission denied: nobody answered in {limit:.3g} s",
            self.name,
            rationale="no answer before the deadline",
        )

    def _time_limit(self) -> float:
        """``deadline_s``, or less when the caller must have an answer sooner (the gate's
        guard, after earlier deciders of a chain took their time): the human's deny, which
        says why, then still comes first."""
        outer = trio.current_effective_deadline()
        if not math.isfinite(outer):
            return self.deadline_s
        room = outer - trio.current_time()
        return max(0.0, min(self.deadline_s, room - min(1.0, 0.1 * room)))

    def _note_for(self, request: PermissionRequest) -> str | None:
        noted = self._notes.pop(id(request), None)
        if noted is not None and noted[0] is request:
            return noted[1]
        if self._context is None:
            return None
        try:
            return self._context(request)
        except Exception as exc:  # a note is a courtesy: never a reason to fail the call
            return f"(no note: {exc!r})"

    def noting(self, inner: Decider) -> Decider:
        """``inner``, remembering why it abstained so that the question this decider asks
        next for the same request shows it (for a chain: ``[h.noting(rules), h]``)."""
        return _Noting(inner, self)

    def _remember(self, request: PermissionRequest, note: str) -> None:
        self._notes[id(request)] = (request, note)
        while len(self._notes) > _NOTES_KEPT:
            self._notes.popitem(last=False)

    # -- answering -----------------------------------------------------------------------

    def pending(self, goal_id: str | None = None) -> list[Question]:
        """The questions waiting for an answer (of one goal, if given), oldest first."""
        return [
            entry.question
            for entry in self._pending.values()
            if goal_id is None or entry.question.goal_id == goal_id
        ]

    def answer(
        self,
        question_id: str | None,
        allow: bool,
        reason: str | None = None,
        by: str = "someone",
        *,
        goal_id: str | None = None,
    ) -> bool:
        """Answer a question: ``question_id``, or (``None``) the oldest one of ``goal_id``
        (of any goal when that is ``None`` too). A question of another goal than ``goal_id``
        is not answered. ``by`` says who answered (``uid 1000 from another terminal``);
        ``reason`` goes to Claude with a deny. False when there is no such question."""
        entry = self._find(question_id, goal_id)
        if entry is None or entry.decision is not None:
            return False
        why = f": {' '.join(reason.split())}" if reason and reason.strip() else ""
        if allow:
            entry.decision = Decision(
                DecisionOutcome.ALLOW_ONCE, decider=self.name, rationale=f"approved by {by}{why}"
            )
        else:
            entry.decision = deny(
                f"Permission denied by {by}{why}", self.name, rationale=f"denied by {by}{why}"
            )
        entry.answered.set()
        del self._pending[entry.question.id]
        self._changed()
        return True

    def _find(self, question_id: str | None, goal_id: str | None) -> _Pending | None:
        if question_id is not None:
            entry = self._pending.get(question_id)
            if entry is None or (goal_id is not None and entry.question.goal_id != goal_id):
                return None
            return entry
        return next(
            (e for e in self._pending.values() if goal_id is None or e.question.goal_id == goal_id),
            None,
        )

    # -- waiting for questions (the prompter) --------------------------------------------

    def _changed(self) -> None:
        self._change.set()
        self._change = trio.Event()

    async def next_question(self) -> Question:
        """The oldest pending question, once there is one."""
        while not self._pending:
            await self._change.wait()
        return next(iter(self._pending.values())).question

    async def wait_gone(self, question_id: str) -> None:
        """Until the question is answered, expired or withdrawn."""
        while question_id in self._pending:
            await self._change.wait()


class _Noting:
    """A decider whose abstentions leave a note for the human decider."""

    def __init__(self, inner: Decider, human: HumanDecider) -> None:
        self.inner = inner
        self.human = human
        self.name = getattr(inner, "name", type(inner).__name__)

    async def aclose(self) -> None:
        await close_decider(self.inner)

    async def decide(self, request: PermissionRequest) -> Decision:
        decision = await self.inner.decide(request)
        if decision.outcome is DecisionOutcome.ABSTAIN and decision.message:
            self.human._remember(request, f"{decision.decider or self.name}: {decision.message}")
        return decision


# --------------------------------------------------------------------------------------------
# The terminal

_ANSWER: Final = re.compile(r"(y|yes|n|no)\b[\s:,.-]*(.*)", re.IGNORECASE | re.DOTALL)
_MAX_LINE: Final = 4096


def parse_answer(line: str) -> tuple[bool, str | None] | None:
    """``y``/``yes`` allows, ``n``/``no`` denies, text after it is the reason
    (``n: not on main``); anything else is no answer (``None``)."""
    match = _ANSWER.fullmatch(line.strip())
    if match is None:
        return None
    reason = match[2].strip() or None
    return match[1].lower().startswith("y"), reason


class _Lines:
    """Lines of a byte stream; bytes not yet part of a line stay buffered."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self.stream = stream
        self.buffer = bytearray()
        self.eof = False

    async def readline(self) -> str | None:
        """The next line without its newline; ``None`` at the end of the input."""
        while True:
            end = self.buffer.find(b"\n")
            if end >= 0:
                line = bytes(self.buffer[:end])
                del self.buffer[: end + 1]
                return line.decode(errors="replace").rstrip("\r")
            if self.eof:
                return None
            try:
                data = await self.stream.receive_some(_MAX_LINE)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                data = b""
            if not data:
                self.eof = True
                if self.buffer:
                    self.buffer += b"\n"
                continue
            self.buffer += data
            if len(self.buffer) > _MAX_LINE and b"\n" not in self.buffer:
                self.buffer.clear()
                return ""  # a line longer than any answer: not an answer


class _Gone:
    """The question went away while the prompt waited."""


_GONE: Final = _Gone()


class TerminalPrompter:
    """Shows each pending question of a :class:`HumanDecider` and answers it with ``y``/``n``.

    ``input`` and ``output`` are trio streams (the terminal, or pipes in tests). Before each
    question it discards what was typed ahead (``flush_input``: the terminal's own buffer;
    and what it had read), so a keystroke meant for one question never answers the next. A
    question answered elsewhere or expired while on screen is dropped from the prompt.
    ``run`` ends when the input does (questions can still be answered remotely).
    """

    def __init__(
        self,
        input: trio.abc.ReceiveStream,
        output: trio.abc.SendStream,
        *,
        by: str | None = None,
        flush_input: Callable[[], None] | None = None,
        closing: trio.abc.AsyncResource | None = None,
    ) -> None:
        self._lines = _Lines(input)
        self._output = output
        self.by = by or f"uid {os.getuid()} on the terminal"
        self._flush_input = flush_input
        self._closing = closing

    @classmethod
    def open_tty(cls, path: str = "/dev/tty", *, by: str | None = None) -> TerminalPrompter:
        """A prompter on the controlling terminal (``OSError`` when there is none)."""
        fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
        try:
            stream = trio.lowlevel.FdStream(fd)
        except BaseException:
            os.close(fd)
            raise

        def flush() -> None:
            # Not a terminal after all: nothing buffered to drop.
            with contextlib.suppress(OSError, termios.error):
                termios.tcflush(fd, termios.TCIFLUSH)

        return cls(stream, stream, by=by, flush_input=flush, closing=stream)

    async def aclose(self) -> None:
        """Close the terminal this prompter opened (nothing for streams it was given)."""
        if self._closing is not None:
            await self._closing.aclose()

    async def run(
        self,
        decider: HumanDecider,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Ask every question ``decider`` has, one at a time, oldest first, until cancelled
        or the input ends."""
        task_status.started()
        while True:
            question = await decider.next_question()
            if not await self._ask(decider, question):
                return

    async def _ask(self, decider: HumanDecider, question: Question) -> bool:
        """Ask one question; False when the terminal is gone."""
        self._discard_typed_ahead()
        if not await self._write(self._render(decider, question)):
            return False
        while True:
            line = await self._line_unless_gone(decider, question.id)
            if isinstance(line, _Gone):
                self._discard_typed_ahead()
                return await self._write("\n  (answered elsewhere, or nobody answered in time)\n")
            if line is None:
                await self._write("\n  (no terminal input: answer with nexo-trio approve|deny)\n")
                return False
            answer = parse_answer(line)
            if answer is None:
                if not await self._write("  please answer y or n (n: reason, to say why): "):
                    return False
                continue
            allow, reason = answer
            answered = decider.answer(question.id, allow, reason, self.by, goal_id=question.goal_id)
            if not answered:
                return await self._write("  (too late: answered elsewhere or expired)\n")
            return True

    def _render(self, decider: HumanDecider, question: Question) -> str:
        left = max(0.0, question.deadline - decider.now())
        lines = [
            "",
            f"nexo-trio: goal {printable(question.goal_id)} asks to use "
            f"{printable(question.tool_name)}:",
            *(f"    {line}" for line in question.summary.splitlines() or [""]),
        ]
        if question.context:
            lines.append(f"  note: {printable(question.context)}")
        lines.append(f"  allow it? [y/n] (denied in {left:.0f} s without an answer) ")
        return "\n".join(lines)

    def _discard_typed_ahead(self) -> None:
        self._lines.buffer.clear()
        if self._flush_input is not None:
            self._flush_input()

    async def _write(self, text: str) -> bool:
        try:
            await self._output.send_all(text.encode(errors="replace"))
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            return False
        return True

    async def _line_unless_gone(
        self, decider: HumanDecider, question_id: str
    ) -> str | _Gone | None:
        result: list[str | _Gone | None] = [_GONE]

        async with trio.open_nursery() as nursery:

            async def read() -> None:
                result[0] = await self._lines.readline()
                nursery.cancel_scope.cancel()

            async def watch() -> None:
                await decider.wait_gone(question_id)
                nursery.cancel_scope.cancel()

            nursery.start_soon(read)
            nursery.start_soon(watch)
        return result[0]
