"""The permission gate's two transports on the real CLI, offline, through the orchestrator
(issue 15): ``permission.transport: mcp`` (a permission MCP server per turn, relaying over
the gate's Unix socket) and ``stdio`` (the CLI's own control protocol on its stdin and
stdout). The same scenarios on both: an allow, a deny by the rules, an allow that rewrites
the command, a cancel mid-tool, a turn timeout mid-tool; and on ``stdio`` what only it can
do: the stop is an ``interrupt`` that keeps the session (no signal), and an operator's
message reaches the running turn (``interrupt_goal(now=True)``)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio

from nexo_trio.core.goal import ShellCheck
from nexo_trio.core.goal_events import (
    AttemptStarted,
    DecisionMade,
    InterruptDelivered,
    InterruptQueued,
)
from nexo_trio.core.goal_outcome import GoalEndKind
from nexo_trio.core.permission import Decision, PermissionRequest, allow, deny
from nexo_trio.core.settings import PermissionTransport
from nexo_trio.orchestrator.orchestrator import Orchestrator
from nexo_trio.testing.messages_api import (
    Reply,
    last_message_has_tool_result,
    nth,
    prompt_contains,
    text,
    tool_use,
)
from tests.e2e.conftest import E2E, GoalRun, ProcessWatch
from tests.engine.conftest import is_gone

pytestmark = pytest.mark.real_claude

TRANSPORTS: tuple[PermissionTransport, ...] = ("mcp", "stdio")


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> PermissionTransport:
    """Each scenario runs on both transports."""
    value: PermissionTransport = request.param
    return value


def config(e2e: E2E, transport: PermissionTransport, **overrides: Any) -> Any:
    """``e2e``'s config on ``transport`` (``E2E.transport`` applies it over overrides)."""
    e2e.transport = transport
    return e2e.config(**overrides)


def assert_transport(run: GoalRun, transport: PermissionTransport) -> None:
    """Every turn ran the chosen transport's flags, and nothing of the other's."""
    for turn in run.turns:
        argv = turn.argv
        stdio = "--permission-prompt-tool=stdio" in argv
        assert stdio is (transport == "stdio"), argv
        assert ("--input-format" in argv) is stdio, argv
        assert any(a.startswith("--mcp-config") for a in argv) is (not stdio), argv
        names = [s.name for s in turn.state.init.mcp_servers] if turn.state.init else []
        assert names == ([] if stdio else ["nexo"]), names


def decisions(run: GoalRun) -> list[tuple[str, str, str]]:
    return [(d.tool_name, d.outcome, d.decider) for d in run.of(DecisionMade)]


def tool_results(e2e: E2E) -> list[dict[str, Any]]:
    return [
        block
        for request in e2e.api.message_requests()
        for message in request.messages
        if message["role"] == "user" and isinstance(message["content"], list)
        for block in message["content"]
        if block.get("type") == "tool_result"
    ]


async def test_an_allow_runs_the_tool(e2e: E2E, transport: PermissionTransport) -> None:
    e2e.api.add(
        Reply(nth(0), tool_use("Bash", {"command": "echo hi > hello.txt"}, id="toolu_t1")),
        Reply(nth(1) & last_message_has_tool_result(), text("Done.")),
    )
    goal = e2e.goal("Create hello.txt saying hi.", [ShellCheck("grep -qx hi hello.txt")])
    run = await e2e.run(goal, config(e2e, transport))
    assert run.outcome.kind is GoalEndKind.DONE, run.outcome
    assert run.outcome.total_turns == 1
    assert decisions(run) == [("Bash", "allow_once", "rules")]
    assert_transport(run, transport)
    (turn,) = run.turns
    assert turn.outcome.exit_code == 0
    assert turn.stop_actions == ()
    assert (e2e.workspace / "hello.txt").read_text() == "hi\n"


async def test_a_destructive_call_is_denied(e2e: E2E, transport: PermissionTransport) -> None:
    (e2e.workspace / "keep.txt").write_text("keep\n")
    e2e.api.add(
        Reply(nth(0), tool_use("Bash", {"command": "rm -rf *"}, id="toolu_t2")),
        Reply(nth(1) & last_message_has_tool_result(), text("I could not. Done.")),
    )
    goal = e2e.goal("Keep keep.txt.", [ShellCheck("test -f keep.txt")], max_turns=1)
    run = await e2e.run(goal, config(e2e, transport))
    assert (e2e.workspace / "keep.txt").read_text() == "keep\n"
    assert decisions(run) == [("Bash", "deny", "rules")]
    (result,) = tool_results(e2e)
    assert result["is_error"] is True
    (attempt,) = run.turns
    assert len(attempt.outcome.permission_denials) == 1
    assert_transport(run, transport)


class Rewriting:
    """A decider that allows every command rewritten to write ``good``."""

    async def decide(self, request: PermissionRequest) -> Decision:
        command = str(request.input.get("command", ""))
        if "bad" in command:
            return allow("test", updated_input={**request.input, "command": "echo good > out.txt"})
        return deny("not this", "test")

    async def aclose(self) -> None:
        return None


async def test_an_updated_input_runs_the_rewritten_command(
    e2e: E2E, transport: PermissionTransport
) -> None:
    e2e.api.add(
        Reply(nth(0), tool_use("Bash", {"command": "echo bad > out.txt"}, id="toolu_t3")),
        Reply(nth(1) & last_message_has_tool_result(), text("Done.")),
    )
    goal = e2e.goal("Write out.txt.", [ShellCheck("grep -qx good out.txt")])
    run = await e2e.run(goal, config(e2e, transport), decider=Rewriting())
    assert run.outcome.kind is GoalEndKind.DONE, run.outcome
    assert (e2e.workspace / "out.txt").read_text() == "good\n"
    assert decisions(run) == [("Bash", "allow_once", "test")]
    assert_transport(run, transport)


SLEEP = "touch started && sleep 30.5"
"""A tool that runs until stopped (Claude Code refuses a standalone ``sleep N``)."""


async def test_a_cancel_mid_tool(e2e: E2E, transport: PermissionTransport) -> None:
    """On stdio the CLI is interrupted (no signal) and ends the turn itself, its session
    kept; on mcp it gets SIGTERM. Either way the tool is stopped and nothing is left."""
    e2e.api.add(Reply(nth(0), tool_use("Bash", {"command": SLEEP}, id="toolu_t4")))
    goal = e2e.goal("Sleep.", [ShellCheck("true")])
    watch = ProcessWatch(e2e.marker)

    async def during(orch: Orchestrator) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch.run)
            while not (e2e.workspace / "started").exists():  # noqa: ASYNC110 - the tool's file
                await trio.sleep(0.05)
            await trio.sleep(0.3)
            await orch.cancel_goal(goal.id, "stop it")

    began = trio.current_time()
    run = await e2e.run(goal, config(e2e, transport, kill_grace_s=5.0), during=during)
    watch.scan()
    assert run.outcome.kind is GoalEndKind.CANCELLED, run.outcome
    (turn,) = run.turns
    assert turn.outcome.cause.value == "cancelled"
    assert trio.current_time() - began < 25
    if transport == "stdio":
        assert turn.stop_actions == ("interrupt",), turn.stop_actions
        assert turn.outcome.exit_code == 1
        assert turn.state.result is not None
        assert turn.state.result.subtype == "error_during_execution"
        assert turn.outcome.session_id == run.outcome.session_id is not None
    else:
        assert turn.stop_actions[0] == "SIGTERM"
    sleeps = watch.matching(lambda c: c[:2] == ["sleep", "30.5"])
    assert sleeps, watch.seen
    assert watch.still_running() == []
    assert all(is_gone(pid) for pid in sleeps)


async def test_a_turn_timeout_mid_tool_resumes_the_session(
    e2e: E2E, transport: PermissionTransport
) -> None:
    e2e.api.add(
        Reply(nth(0), tool_use("Bash", {"command": SLEEP}, id="toolu_t5")),
        Reply(nth(1), text("Resumed. Done.")),
    )
    goal = e2e.goal("Wait, then say done.", [ShellCheck("true")])
    run = await e2e.run(goal, config(e2e, transport, turn_timeout_s=5.0, kill_grace_s=3.0))
    assert run.outcome.kind is GoalEndKind.DONE, run.outcome
    first, second = run.turns
    assert first.outcome.cause.value == "timeout"
    assert first.outcome.reason == "turn timeout after 5s"
    session = first.outcome.session_id
    assert session is not None
    assert f"--resume={session}" in second.argv
    if transport == "stdio":
        assert first.stop_actions == ("interrupt",), first.stop_actions
        assert first.duration_s < 5.0 + 3.0
    else:
        assert first.stop_actions[0] == "SIGTERM"
    assert_transport(run, transport)


async def test_an_operator_message_now(e2e: E2E, transport: PermissionTransport) -> None:
    """``interrupt_goal(now=True)`` while a tool runs: on stdio the running turn takes it
    (the model's next request carries it; ``interrupt_delivered``, and the next prompt
    does not repeat it); on mcp it waits for the next turn's prompt."""
    note = "OPERATOR: also write b.txt"
    command = "touch started && sleep 2.5 && echo a > a.txt"
    if transport == "stdio":
        e2e.api.add(
            Reply(nth(0), tool_use("Bash", {"command": command}, id="toolu_t6")),
            Reply(nth(1) & prompt_contains(note), tool_use("Bash", {"command": "echo b > b.txt"})),
            Reply(nth(2), text("Both written. Done.")),
        )
    else:
        e2e.api.add(
            Reply(nth(0), tool_use("Bash", {"command": command}, id="toolu_t6")),
            Reply(nth(1), text("a written.")),
            Reply(nth(2) & prompt_contains(note), tool_use("Bash", {"command": "echo b > b.txt"})),
            Reply(nth(3), text("Both written. Done.")),
        )
    goal = e2e.goal("Write a.txt.", [ShellCheck("test -f a.txt && test -f b.txt")])

    async def during(orch: Orchestrator) -> None:
        while not (e2e.workspace / "started").exists():  # noqa: ASYNC110 - the tool's file
            await trio.sleep(0.05)
        assert orch.takes_messages(goal.id) is (transport == "stdio")
        assert await orch.interrupt_goal(goal.id, note, now=True)

    run = await e2e.run(goal, config(e2e, transport), during=during)
    assert run.outcome.kind is GoalEndKind.DONE, run.outcome
    assert (e2e.workspace / "b.txt").read_text() == "b\n"
    assert [q.message for q in run.of(InterruptQueued)] == [note]
    delivered = [d.message for d in run.of(InterruptDelivered)]
    starts = run.of(AttemptStarted)
    if transport == "stdio":
        assert delivered == [note]
        assert run.outcome.total_turns == 1
        assert all(note not in s.interrupts for s in starts)
        assert "interrupt_delivered" in run.ledger_kinds()
    else:
        assert delivered == []
        assert run.outcome.total_turns == 2
        assert starts[1].interrupts == (note,)
    requests = e2e.api.message_requests()
    assert sum(note in json.dumps(r.messages[-1]) for r in requests) == 1
