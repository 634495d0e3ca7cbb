"""The ``human`` decider: questions, answers, deadlines, cancellation, two goals kept apart,
the terminal prompter over a pipe, and the decider in a chain."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

from nexo_trio.core.permission import (
    Decision,
    DecisionOutcome,
    PermissionRequest,
    abstain,
    deny_message,
)
from nexo_trio.core.settings import PermissionSettings
from nexo_trio.gate.deciders import (
    AllowAll,
    Chain,
    DenyAll,
    GuardedDecider,
    SessionCache,
    build_decider,
)
from nexo_trio.gate.human import (
    HumanDecider,
    Question,
    TerminalPrompter,
    parse_answer,
    printable,
    summarize,
)
from nexo_trio.gate.mcp_config import GateDeadlines

WS = "/work/ws"


def request(
    command: str = "npm test", *, goal_id: str = "g1", tool: str = "Bash", **kw: Any
) -> PermissionRequest:
    tool_input = kw.pop("tool_input", {"command": command})
    return PermissionRequest(goal_id=goal_id, tool_name=tool, input=tool_input, workspace=WS, **kw)


class Clock:
    """The questions' clock in tests: trio's (virtual) time."""

    def __call__(self) -> float:
        return trio.current_time()


def human(deadline_s: float = 30.0, **kw: Any) -> HumanDecider:
    return HumanDecider(deadline_s=deadline_s, clock=Clock(), **kw)


class Pending:
    """A decision being made in the background: call it for the decision (``None`` until
    it is made); ``done`` is set once it is."""

    def __init__(self) -> None:
        self.decision: Decision | None = None
        self.done = trio.Event()

    def __call__(self) -> Decision | None:
        return self.decision

    async def wait(self, timeout: float = 10) -> Decision:
        with trio.fail_after(timeout):
            await self.done.wait()
        assert self.decision is not None
        return self.decision


@asynccontextmanager
async def deciding(decider: Any, req: PermissionRequest, **kw: Any) -> AsyncIterator[Pending]:
    """Run ``decider.decide(req)`` in the background, until it decides."""
    pending = Pending()

    async def run() -> None:
        pending.decision = await decider.decide(req, **kw)
        pending.done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run)
        await trio.testing.wait_all_tasks_blocked()
        yield pending


class Abstains:
    """A decider with no opinion (and a reason)."""

    name = "stub"

    def __init__(self, reason: str = "unknown effect: npm test runs the test suite") -> None:
        self.reason = reason
        self.asked = 0

    async def decide(self, request: PermissionRequest) -> Decision:
        self.asked += 1
        return abstain(self.name, self.reason)


# --------------------------------------------------------------------------------------------
# Asking and answering


async def test_an_allow_answer(autojump_clock: trio.testing.MockClock) -> None:
    decider = human(deadline_s=30)
    async with deciding(decider, request("npm test -- -x")) as result:
        (question,) = decider.pending()
        assert question == Question(
            id=question.id,
            goal_id="g1",
            tool_name="Bash",
            summary="npm test -- -x",
            context=None,
            asked_at=question.asked_at,
            deadline=question.asked_at + 30,
        )
        await trio.sleep(3)
        assert result() is None
        assert decider.answer(question.id, True, None, "uid 1000 from another terminal")
    decision = result()
    assert decision is not None
    assert decision.outcome is DecisionOutcome.ALLOW_ONCE
    assert decision.allowed
    assert decision.decider == "human"
    assert decision.rationale == "approved by uid 1000 from another terminal"
    assert decider.pending() == []
    assert not decider.answer(question.id, False, None, "late")  # answered once only


async def test_a_deny_answer_tells_claude_why(autojump_clock: trio.testing.MockClock) -> None:
    decider = human()
    async with deciding(decider, request("git push --force")) as result:
        assert decider.answer(None, False, "  not on\nmain ", "uid 1000", goal_id="g1")
    decision = result()
    assert decision is not None
    assert decision.outcome is DecisionOutcome.DENY
    assert decision.decider == "human"
    assert decision.message == "Permission denied by uid 1000: not on main"
    assert decision.rationale == "denied by uid 1000: not on main"
    assert deny_message(decision) == "Permission denied by uid 1000: not on main"


async def test_nobody_answering_is_a_deny_at_the_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    decider = human(deadline_s=12.5)
    start = trio.current_time()
    decision = await decider.decide(request())
    assert trio.current_time() - start == pytest.approx(12.5)
    assert decision.outcome is DecisionOutcome.DENY
    assert decision.message == "Permission denied: nobody answered in 12.5 s"
    assert decision.decider == "human"
    assert decider.pending() == []
    assert not decider.answer(None, True, None, "too late", goal_id="g1")


async def test_two_goals_questions_are_kept_apart(autojump_clock: trio.testing.MockClock) -> None:
    decider = human()
    async with (
        deciding(decider, request("make", goal_id="g1")) as first,
        deciding(decider, request("make install", goal_id="g2")) as second,
        deciding(decider, request("make clean", goal_id="g1")) as third,
    ):
        assert [q.goal_id for q in decider.pending()] == ["g1", "g2", "g1"]
        assert [q.summary for q in decider.pending("g1")] == ["make", "make clean"]
        (g2_question,) = decider.pending("g2")
        g1_first = decider.pending("g1")[0]
        # A question id of another goal is not answered for this one.
        assert not decider.answer(g1_first.id, True, None, "x", goal_id="g2")
        assert not decider.answer(None, True, None, "x", goal_id="g3")
        assert not decider.answer("q999", True, None, "x")
        # The oldest question of g2 is g2's own.
        assert decider.answer(None, False, None, "uid 1", goal_id="g2")
        await trio.testing.wait_all_tasks_blocked()
        assert second() is not None
        assert first() is None
        assert third() is None
        assert decider.pending("g2") == []
        assert g2_question.id not in {q.id for q in decider.pending()}
        # The oldest of g1 is the first one asked.
        assert decider.answer(None, True, None, "uid 1", goal_id="g1")
        await trio.testing.wait_all_tasks_blocked()
        assert first() is not None
        assert third() is None
        assert decider.answer(None, True, None, "uid 1")  # any goal: the only one left
    decisions = [get() for get in (first, second, third)]
    assert [d is not None and d.allowed for d in decisions] == [True, False, True]


async def test_a_cancelled_caller_takes_its_question_away(
    autojump_clock: trio.testing.MockClock,
) -> None:
    decider = human(deadline_s=60)
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(decider.decide, request())
            await trio.sleep(5)
            assert len(decider.pending()) == 1
            scope.cancel()
    assert scope.cancelled_caught
    assert decider.pending() == []
    assert not decider.answer(None, True, None, "x", goal_id="g1")

    # A caller with a nearer deadline of its own gets the human's deny just before it.
    with trio.move_on_after(5) as scope:
        decision = await decider.decide(request())
    assert not scope.cancelled_caught
    assert decision.message == "Permission denied: nobody answered in 4.5 s"

    async with trio.open_nursery() as nursery:
        nursery.start_soon(decider.decide, request("a"))
        nursery.start_soon(decider.decide, request("b"))
        await trio.testing.wait_all_tasks_blocked()
        assert len(decider.pending()) == 2
        nursery.cancel_scope.cancel()
    assert decider.pending() == []


async def test_a_guarded_human_denies_with_its_own_reason_before_the_gate_gives_up(
    autojump_clock: trio.testing.MockClock,
) -> None:
    deadlines = GateDeadlines.from_tool_timeout(60)
    decider = HumanDecider.for_tool_timeout(60, clock=Clock())
    assert decider.deadline_s < deadlines.decider_timeout_s
    assert decider.deadline_s == pytest.approx(60 * 0.7 * 0.9)
    guarded = GuardedDecider(decider, timeout_s=deadlines.decider_timeout_s)
    decision = await guarded.decide(request())
    assert decision.outcome is DecisionOutcome.DENY  # not "unavailable": the human's deny
    assert decision.message == f"Permission denied: nobody answered in {decider.deadline_s:g} s"
    assert decision.decider == "human"


class Slow:
    """A decider that takes its time, then abstains."""

    name = "slow"

    async def decide(self, request: PermissionRequest) -> Decision:
        await trio.sleep(30)
        return abstain(self.name, "thought about it")


async def test_the_human_answers_within_the_time_a_chain_leaves_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    deadlines = GateDeadlines.from_tool_timeout(60)  # decider timeout 42 s, human 37.8 s
    decider = HumanDecider.for_tool_timeout(60, clock=Clock())
    guarded = GuardedDecider(Chain([Slow(), decider]), timeout_s=deadlines.decider_timeout_s)
    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(guarded.decide, request())
        await trio.sleep(31)
        (question,) = decider.pending()
        assert question.deadline - question.asked_at == pytest.approx(12 - 1.0)
    assert trio.current_time() - start == pytest.approx(41)
    decision = await guarded.decide(request())
    assert decision.outcome is DecisionOutcome.DENY
    assert decision.decider == "human"
    assert decision.message == "Permission denied: nobody answered in 11 s"


async def test_too_many_waiting_questions_are_denied_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    decider = human(max_pending=1)
    async with deciding(decider, request("a")):
        decision = await decider.decide(request("b"))
        assert decision.outcome is DecisionOutcome.DENY
        assert "1 questions are already waiting" in (decision.message or "")
        decider.answer(None, True, None, "x")


def test_bad_settings_are_refused() -> None:
    for bad in (0, -1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="positive number of seconds"):
            HumanDecider(deadline_s=bad)
    with pytest.raises(ValueError, match="max_pending"):
        HumanDecider(deadline_s=1, max_pending=0)


async def test_the_cli_s_own_check_is_on_the_question(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """On stdio the CLI says where its own check stopped: the person sees it, after any
    other note, made printable."""
    decider = human(context=lambda r: "rules: unknown")
    asked = request(blocked_path="/etc/x\x1b[2J", cli_reason="outside the allowed dirs")
    async with deciding(decider, asked):
        (question,) = decider.pending()
        assert question.context == (
            "rules: unknown; Claude Code's check: it stopped at the path /etc/x\\x1b[2J; "
            "it says: outside the allowed dirs"
        )
        decider.answer(question.id, True, None, "x")


async def test_the_note_on_a_question(autojump_clock: trio.testing.MockClock) -> None:
    decider = human(context=lambda r: f"classified: {r.tool_name}")
    async with deciding(decider, request()):
        (question,) = decider.pending()
        assert question.context == "classified: Bash"
        decider.answer(question.id, True, None, "x")
    async with deciding(decider, request(), context="given\x1b[2J by the caller"):
        (question,) = decider.pending()
        assert question.context == "given\\x1b[2J by the caller"
        decider.answer(question.id, True, None, "x")

    def broken(r: PermissionRequest) -> str:
        raise RuntimeError("boom")

    decider = human(context=broken)
    async with deciding(decider, request()):
        (question,) = decider.pending()
        assert question.context == "(no note: RuntimeError('boom'))"
        decider.answer(question.id, False, None, "x")


def test_summaries_are_printable_and_short() -> None:
    assert summarize("Bash", {"command": "echo \x1b]0;pwned\x07 \u202e"}) == (
        "echo \\x1b]0;pwned\\x07 \\u202e"
    )
    assert summarize("Bash", {"command": "a\nb\tc\r"}) == "a\nb\tc\\x0d"
    assert summarize("Edit", {"file_path": "/ws/a.py", "old_string": "x"}) == "/ws/a.py"
    assert summarize("NotebookEdit", {"notebook_path": "/ws/n.ipynb"}) == "/ws/n.ipynb"
    assert summarize("WebFetch", {"url": "https://example.com", "prompt": "p"}) == (
        "https://example.com"
    )
    assert summarize("Grep", {"pattern": "TODO", "path": "/ws/src"}) == "TODO  (in /ws/src)"
    assert summarize("Glob", {"pattern": "**/*.py"}) == "**/*.py"
    assert summarize("mcp__db__query", {"sql": "select 1", "db": "x"}) == (
        '{"db": "x", "sql": "select 1"}'
    )
    assert summarize("Bash", {"command": ""}) == '{"command": ""}'
    long = summarize("Bash", {"command": "x" * 5000})
    assert long == "x" * 2000 + "... (3000 more characters)"
    assert printable("\U000e0001 é ✓") == "\\U000e0001 é ✓"


# --------------------------------------------------------------------------------------------
# In a chain


async def test_a_chain_asks_the_human_only_what_the_others_abstain_on(
    autojump_clock: trio.testing.MockClock,
) -> None:
    decider = human()
    stub = Abstains()
    chain = Chain([decider.noting(stub), decider])
    async with deciding(chain, request()) as result:
        (question,) = decider.pending()
        assert question.context == "stub: unknown effect: npm test runs the test suite"
        assert decider.answer(question.id, True, None, "uid 7")
    decision = result()
    assert decision is not None
    assert (decision.outcome, decision.decider) == (DecisionOutcome.ALLOW_ONCE, "human")
    assert stub.asked == 1

    # A decider that decides: the human is not asked.
    for first, allowed in ((AllowAll(), True), (DenyAll(), False)):
        chain = Chain([decider.noting(first), decider])
        decision = await chain.decide(request())
        assert decision.allowed is allowed
        assert decision.decider == first.name
        assert decider.pending() == []
    await Chain([decider.noting(stub), decider]).aclose()


async def test_build_decider_chains_rules_and_the_shared_human(
    autojump_clock: trio.testing.MockClock,
) -> None:
    shared = human()
    settings = PermissionSettings(decider="chain", chain=("rules", "human"), unknown="defer")
    decider = build_decider(settings, environ={}, human=shared)
    assert isinstance(decider, SessionCache)
    assert isinstance(decider.inner, Chain)
    assert decider.inner.deciders[-1] is shared
    # A read-only tool: the rules allow it, nobody is asked.
    decision = await decider.decide(request(tool="Read", tool_input={"file_path": f"{WS}/a"}))
    assert decision.allowed
    assert decision.decider == "rules"
    # A tool the rules cannot judge: the human is asked.
    async with deciding(decider, request(tool="mcp__x__y", tool_input={"q": 1})) as result:
        question = await shared.next_question()  # once the rules (in a thread) deferred
        assert [q.id for q in shared.pending()] == [question.id]
        assert (question.tool_name, question.summary) == ("mcp__x__y", '{"q": 1}')
        shared.answer(question.id, False, "no", "uid 3")
    asked = result()
    assert asked is not None
    assert (asked.allowed, asked.decider, asked.message) == (
        False,
        "human",
        "Permission denied by uid 3: no",
    )


def test_build_decider_makes_a_human_when_none_is_given() -> None:
    settings = PermissionSettings(decider="human", tool_timeout_s=600)
    decider = build_decider(settings, environ={})
    assert isinstance(decider, SessionCache)
    assert isinstance(decider.inner, HumanDecider)
    assert decider.inner.deadline_s == pytest.approx(600 * 0.7 * 0.9)
    shared = HumanDecider(deadline_s=5)
    built = build_decider(settings, environ={}, human=shared)
    assert isinstance(built, SessionCache)
    assert built.inner is shared
    chain = build_decider(
        PermissionSettings(decider="chain", chain=("human", "deny_all", "human")), environ={}
    )
    assert isinstance(chain, SessionCache)
    assert isinstance(chain.inner, Chain)
    assert chain.inner.deciders[0] is chain.inner.deciders[2]  # one human per build


# --------------------------------------------------------------------------------------------
# The terminal prompter, over a pipe (real time: the pipe is real I/O)


class Terminal:
    """A prompter on a pipe (its input) and a memory stream (its output)."""

    def __init__(self) -> None:
        read_fd, write_fd = os.pipe()
        self.keyboard = trio.lowlevel.FdStream(write_fd)
        self.input = trio.lowlevel.FdStream(read_fd)
        self.screen_send, self.screen = trio.testing.memory_stream_one_way_pair()
        self.flushes = 0
        self.prompter = TerminalPrompter(
            self.input, self.screen_send, by="uid 1000 on the terminal", flush_input=self.flush
        )
        self.shown = ""

    def flush(self) -> None:
        self.flushes += 1

    async def type(self, text: str) -> None:
        await self.keyboard.send_all(text.encode())

    async def wait_for(self, needle: str, timeout: float = 10) -> str:
        with trio.fail_after(timeout):
            while needle not in self.shown:
                self.shown += (await self.screen.receive_some(65536)).decode()
        before, _, self.shown = self.shown.partition(needle)
        return before + needle

    async def aclose(self) -> None:
        await self.keyboard.aclose()
        await self.input.aclose()


@pytest.fixture
async def terminal() -> AsyncIterator[Terminal]:
    term = Terminal()
    try:
        yield term
    finally:
        await term.aclose()


async def test_the_prompter_asks_and_answers(terminal: Terminal) -> None:
    decider = HumanDecider(deadline_s=30)
    async with trio.open_nursery() as nursery:
        await nursery.start(terminal.prompter.run, decider)
        async with deciding(
            decider, request("npm test \x1b[31m&& ls"), context="rules: unknown effect"
        ) as result:
            screen = await terminal.wait_for("[y/n]")
            assert "goal g1 asks to use Bash:" in screen
            assert "    npm test \\x1b[31m&& ls" in screen
            assert "  note: rules: unknown effect" in screen
            await terminal.type("maybe\n")
            await terminal.wait_for("please answer y or n")
            await terminal.type("y\n")
            await result.wait()
        decision = result()
        assert decision is not None
        assert decision.allowed
        assert decision.rationale == "approved by uid 1000 on the terminal"

        async with deciding(decider, request("rm -rf build", goal_id="g2")) as result:
            screen = await terminal.wait_for("[y/n]")
            assert "goal g2 asks to use Bash:" in screen
            await terminal.type("n: keep the build\n")
            await result.wait()
        decision = result()
        assert decision is not None
        assert decision.message == "Permission denied by uid 1000 on the terminal: keep the build"
        nursery.cancel_scope.cancel()
    assert terminal.flushes >= 2  # typed-ahead input dropped before each question


async def test_the_prompter_moves_on_when_a_question_goes_away(terminal: Terminal) -> None:
    decider = HumanDecider(deadline_s=30)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(terminal.prompter.run, decider)
        async with (
            deciding(decider, request("first")) as first,
            deciding(decider, request("second")) as second,
        ):
            await terminal.wait_for("first")
            await terminal.wait_for("[y/n]")
            # Answered from another terminal while on screen.
            assert decider.answer(None, False, None, "uid 2 from another terminal", goal_id="g1")
            await terminal.wait_for("(answered elsewhere, or nobody answered in time)")
            await terminal.wait_for("second")
            await terminal.wait_for("[y/n]")
            await terminal.type("yes\n")
            await second.wait()
        results = [first(), second()]
        assert [d is not None and d.allowed for d in results] == [False, True]
        nursery.cancel_scope.cancel()


async def test_the_prompter_stops_at_the_end_of_its_input(terminal: Terminal) -> None:
    decider = HumanDecider(deadline_s=30)
    async with deciding(decider, request()):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(terminal.prompter.run, decider)
            await terminal.wait_for("[y/n]")
            await terminal.keyboard.aclose()
        # run() returned: the question is still there, for a remote answer.
        await terminal.wait_for("answer with nexo-trio approve|deny")
        assert len(decider.pending()) == 1
        assert decider.answer(None, True, None, "uid 2", goal_id="g1")


async def test_the_prompter_drops_input_typed_before_the_question(terminal: Terminal) -> None:
    decider = HumanDecider(deadline_s=30)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(terminal.prompter.run, decider)
        async with deciding(decider, request("first")) as first:
            await terminal.wait_for("[y/n]")
            await terminal.type("n\ny\n")  # one answer, and a stray line read with it
            await first.wait()
        async with deciding(decider, request("second")) as second:
            await terminal.wait_for("[y/n]")
            await trio.sleep(0.1)
            assert second() is None  # the stray "y" did not answer it
            assert decider.answer(None, False, None, "uid 2")
        nursery.cancel_scope.cancel()
    result = first()
    assert result is not None
    assert not result.allowed


@pytest.mark.parametrize(
    ("line", "answer"),
    [
        ("y", (True, None)),
        (" YES ", (True, None)),
        ("n", (False, None)),
        ("no: not on main", (False, "not on main")),
        ("n - risky", (False, "risky")),
        ("y ok then", (True, "ok then")),
        ("", None),
        ("maybe", None),
        ("yesterday", None),
        ("nope", None),
    ],
)
def test_parse_answer(line: str, answer: tuple[bool, str | None] | None) -> None:
    assert parse_answer(line) == answer


async def test_the_prompter_on_a_pseudo_terminal_drops_typed_ahead_lines() -> None:
    master, slave = os.openpty()
    prompter = TerminalPrompter.open_tty(os.ttyname(slave), by="uid 1000 on the terminal")
    keyboard = trio.lowlevel.FdStream(master)
    shown = b""

    async def wait_for(needle: bytes) -> None:
        nonlocal shown
        with trio.fail_after(10):
            while needle not in shown:
                shown += await keyboard.receive_some(65536)

    try:
        await keyboard.send_all(b"y\n")  # typed before any question: not an answer
        decider = HumanDecider(deadline_s=30)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(prompter.run, decider)
            async with deciding(decider, request("make deploy")) as result:
                await wait_for(b"[y/n]")
                await trio.sleep(0.2)
                assert result() is None
                await keyboard.send_all(b"n: not today\n")
                decision = await result.wait()
            nursery.cancel_scope.cancel()
        assert decision.message == "Permission denied by uid 1000 on the terminal: not today"
    finally:
        await prompter.aclose()
        await keyboard.aclose()
        os.close(slave)


async def test_open_tty_without_a_terminal() -> None:
    with pytest.raises(FileNotFoundError):
        TerminalPrompter.open_tty("/nonexistent/tty")
