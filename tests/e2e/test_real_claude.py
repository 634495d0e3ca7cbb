"""The whole product against the real Claude Code CLI, offline (DESIGN.md §4, issue 5).

Each scenario runs goals through :class:`Orchestrator` (or the ``nexo-trio run`` console
script) with the real CLI talking to a scripted Messages API, and asserts on what Claude
sent (the recorded requests), on our events and SQLite ledger, on the file system and on
the processes left (none: the ``procs`` guard of conftest checks every test).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio
import yaml

import nexo_trio.gate.mcp_config
from nexo_trio.core.acceptance import Failure
from nexo_trio.core.compact import CompactPolicy
from nexo_trio.core.goal import FileMatchCheck, ShellCheck
from nexo_trio.core.goal_events import (
    AcceptanceChecked,
    AttemptCompleted,
    AttemptStarted,
    CompactScheduled,
    DecisionMade,
    Escalated,
    GoalCompleted,
    SessionBound,
    TurnActivity,
)
from nexo_trio.core.goal_outcome import GoalEndKind
from nexo_trio.core.prompt import FAILURES_HEADER, SYSTEM_PROMPT, compose_prompt, format_failures
from nexo_trio.core.settings import LlmSettings, PermissionSettings
from nexo_trio.engine.supervisor import TurnResult
from nexo_trio.gate.llm import SYSTEM_PROMPT as LLM_SYSTEM_PROMPT
from nexo_trio.gate.mcp_config import PERMISSION_PROMPT_TOOL
from nexo_trio.testing.messages_api import (
    Matcher,
    RecordedRequest,
    Reply,
    Usage,
    error,
    last_message_has_tool_result,
    nth,
    prompt_contains,
    system_contains,
    text,
    tool_use,
)
from tests.e2e.conftest import E2E, MARKER_VAR, GoalRun, ProcessWatch
from tests.engine.conftest import is_gone
from tests.goal_log import attempt_kinds, counted, judged

pytestmark = pytest.mark.real_claude


E2E_TRANSPORT = "mcp"
"""These scenarios check the MCP transport's own parts (its server, its config, its flags):
the ``e2e`` fixture's configs use it. test_transports_real.py runs the gate's scenarios on
both transports."""

NEXO_TRIO = Path(sys.executable).parent / "nexo-trio"
MCP_MODULE = "nexo_trio.gate.mcp_stdio"


# ----------------------------------------------------------------------------- helpers


def text_blocks(message: dict[str, Any] | None) -> list[str]:
    """The texts of a message's text blocks (a string content is one block)."""
    if message is None:
        return []
    content = message.get("content")
    if isinstance(content, str):
        return [content]
    return [str(b.get("text", "")) for b in content or () if b.get("type") == "text"]


def user_texts(request: RecordedRequest) -> list[str]:
    """Every text block of every user message of a request, in order."""
    return [t for m in request.messages if m.get("role") == "user" for t in text_blocks(m)]


def tool_uses(request: RecordedRequest) -> list[dict[str, Any]]:
    """Every ``tool_use`` block of the assistant messages of a request (its history)."""
    return [
        block
        for m in request.messages
        if m.get("role") == "assistant" and isinstance(m.get("content"), list)
        for block in m["content"]
        if block.get("type") == "tool_use"
    ]


def result_text(block: dict[str, Any]) -> str:
    """A ``tool_result`` block's content as text."""
    content = block.get("content")
    if isinstance(content, str):
        return content
    return "\n".join(str(part.get("text", "")) for part in content or ())


def tool_result_contains(fragment: str) -> Matcher:
    """The request's last message carries a tool result containing ``fragment``."""
    return Matcher(
        lambda r: any(fragment in result_text(b) for b in r.tool_results()),
        f"tool_result_contains({fragment!r})",
    )


def claude_requests(e2e: E2E) -> list[RecordedRequest]:
    """The Messages requests the CLI made (streaming; the LLM decider's are not)."""
    return [r for r in e2e.api.message_requests() if r.stream]


def assert_script_played(e2e: E2E) -> None:
    """Every request was answered by a rule, and every rule answered."""
    assert e2e.api.unmatched == [], [r.problem for r in e2e.api.unmatched]
    assert e2e.api.unused() == [], [r.describe() for r in e2e.api.unused()]


def cli_argv(result: TurnResult) -> tuple[str, ...]:
    """The CLI's own command line of a turn (inside bwrap's, when the turn was confined)."""
    argv = result.argv
    return argv[argv.index("--") + 1 :] if argv and argv[0].endswith("bwrap") else argv


def assert_turn_flags(run: GoalRun, index: int, *, resume: str | None) -> None:
    """Turn ``index`` ran our gate and prompt, and resumed ``resume`` (or nothing)."""
    argv = cli_argv(run.turns[index])
    assert f"--permission-prompt-tool={PERMISSION_PROMPT_TOOL}" in argv
    assert "--strict-mcp-config" in argv
    resumes = [a for a in argv if a.startswith("--resume")]
    assert resumes == ([] if resume is None else [f"--resume={resume}"])


def decisions(run: GoalRun) -> list[tuple[str, str, str]]:
    """(tool, outcome, decider) of each DecisionMade event."""
    return [(d.tool_name, d.outcome, d.decider) for d in run.of(DecisionMade)]


async def wait_until(predicate: Callable[[], bool], *, timeout: float) -> None:
    """Poll ``predicate`` until it holds; fail after ``timeout`` seconds."""
    with trio.fail_after(timeout):
        while not predicate():  # noqa: ASYNC110 - polls a counter, nothing to wait on
            await trio.sleep(0.01)


def is_mcp_server(cmdline: list[str], socket_dir: Path) -> bool:
    """The permission MCP server of this test (its socket is under the state dir)."""
    return MCP_MODULE in cmdline and any(str(socket_dir) in arg for arg in cmdline)


# ----------------------------------------------------------------------------- 1


async def test_bash_through_an_allow_decision_done_in_one_turn(e2e: E2E) -> None:
    e2e.api.add(
        Reply(nth(0), tool_use("Bash", {"command": "echo hi > hello.txt"}, id="toolu_e2e_1")),
        Reply(nth(1) & last_message_has_tool_result(), text("Created hello.txt. Done.")),
    )
    goal = e2e.goal(
        "Create hello.txt containing the word hi.",
        [ShellCheck("grep -qx hi hello.txt"), FileMatchCheck("hello.txt", "^hi$")],
    )

    run = await e2e.run(goal)

    assert run.outcome.kind is GoalEndKind.DONE, run.outcome
    assert run.outcome.total_turns == 1
    assert (run.outcome.allowed, run.outcome.denied) == (1, 0)
    assert run.outcome.final_text == "Created hello.txt. Done."
    assert (e2e.workspace / "hello.txt").read_text() == "hi\n"
    assert_script_played(e2e)

    # What Claude sent: the goal as the prompt, our system prompt, then the tool's result.
    first, second = e2e.api.message_requests()
    assert first.stream
    assert second.stream
    assert (first.method, first.path, first.query) == ("POST", "/v1/messages", "beta=true")
    assert compose_prompt(goal.description) in text_blocks(first.last_user_message())
    assert SYSTEM_PROMPT.splitlines()[0] in first.system_text()
    names = [tool["name"] for tool in first.json["tools"]]
    assert "Bash" in names
    assert PERMISSION_PROMPT_TOOL not in names  # the gate is the CLI's, not the model's
    (result,) = second.tool_results()
    assert result["tool_use_id"] == "toolu_e2e_1"
    assert result.get("is_error") is not True

    # One turn, one session, one allow decision by the rules, in events and ledger.
    assert len(run.turns) == 1
    assert_turn_flags(run, 0, resume=None)
    turn = run.turns[0]
    assert turn.state.init is not None
    assert [(s.name, s.status) for s in turn.state.init.mcp_servers] == [("nexo", "connected")]
    assert turn.outcome.exit_code == 0
    (bound,) = run.of(SessionBound)
    assert bound.session_id == turn.outcome.session_id == run.outcome.session_id
    assert decisions(run) == [("Bash", "allow_once", "rules")]
    assert [(d["tool_name"], d["outcome"]) for d in run.rows("decision_made")] == [
        ("Bash", "allow_once")
    ]
    (attempt,) = run.of(AttemptCompleted)
    assert attempt_kinds(run.events) == [(1, "done")]
    assert counted(run.events) == [(False, True)]
    assert attempt.permission_denials == 0
    assert attempt.usage.input_tokens == 20  # two scripted requests of 10
    assert any(a.last_tool == "Bash" and a.tool_uses == 1 for a in run.of(TurnActivity))
    assert run.ledger_kinds()[0] == "goal_started"
    assert run.ledger_kinds()[-1] == "goal_completed"
    assert "turn_activity" not in run.ledger_kinds()
    assert [(b.session_id, b.invalid) for b in run.bindings] == [(bound.session_id, False)]

    # The CLI ran offline with this test's HOME and the dummy key: its transcript is there.
    assert first.headers["x-api-key"] == e2e.claude_env()["ANTHROPIC_API_KEY"]
    assert list(e2e.home.glob(f".claude/projects/*/{bound.session_id}.jsonl"))


# ----------------------------------------------------------------------------- 2


async def test_acceptance_failure_fed_back_on_the_same_session(e2e: E2E) -> None:
    check = ShellCheck("grep -qx hi hello.txt", label="hello.txt says hi")
    goal = e2e.goal("Create hello.txt containing the word hi.", [check])
    first_prompt = compose_prompt(goal.description)
    e2e.api.add(
        # Turn 1: writes the wrong word, claims done.
        Reply(nth(0), tool_use("Bash", {"command": "echo bye > hello.txt"}, id="toolu_e2e_bye")),
        Reply(nth(1) & last_message_has_tool_result(), text("Wrote hello.txt. Done.")),
        # Turn 2: the failures are in the prompt; fixes it.
        Reply(
            nth(2) & prompt_contains(FAILURES_HEADER),
            tool_use("Bash", {"command": "echo hi > hello.txt"}, id="toolu_e2e_hi"),
        ),
        Reply(nth(3) & last_message_has_tool_result(), text("Fixed hello.txt. Done.")),
    )

    run = await e2e.run(goal)

    assert run.outcome.kind is GoalEndKind.DONE, run.outcome
    assert run.outcome.total_turns == 2
    assert (e2e.workspace / "hello.txt").read_text() == "hi\n"
    assert_script_played(e2e)

    # Acceptance failed after turn 1, passed after turn 2.
    checked = run.of(AcceptanceChecked)
    assert [(c.turn, c.met) for c in checked] == [(1, False), (2, True)]
    failures = tuple(
        Failure(index=r.index, label=r.label, message=r.message, evidence=r.evidence)
        for r in checked[0].results
    )
    assert failures[0].label == "hello.txt says hi"
    assert failures[0].message == "exit code 1 (expected 0)"
    feedback = format_failures(failures)
    second_prompt = compose_prompt(goal.description, failures=failures)
    started = run.of(AttemptStarted)
    assert [s.prompt for s in started] == [first_prompt, second_prompt]

    # Both requests of turn 2 carry the failures: the first in its last user message, the
    # second in the history before the tool result.
    requests = e2e.api.message_requests()
    assert len(requests) == 4
    turn2_first, turn2_second = requests[2], requests[3]
    assert second_prompt in text_blocks(turn2_first.last_user_message())
    assert feedback in turn2_first.last_user_text()
    assert "1. hello.txt says hi: " in turn2_first.last_user_text()
    assert second_prompt in user_texts(turn2_second)
    assert turn2_second.tool_results()[0]["tool_use_id"] == "toolu_e2e_hi"

    # Turn 2 resumed turn 1's session: its first request carries turn 1's history.
    assert first_prompt in user_texts(turn2_first)
    assert [t["id"] for t in tool_uses(turn2_first)] == ["toolu_e2e_bye"]
    assert any(
        "Wrote hello.txt. Done." in t
        for m in turn2_first.messages
        if m.get("role") == "assistant"
        for t in text_blocks(m)
    )
    assert FAILURES_HEADER not in "".join(user_texts(requests[1]))
    session = run.turns[0].outcome.session_id
    assert session is not None
    assert_turn_flags(run, 0, resume=None)
    assert_turn_flags(run, 1, resume=session)
    assert [a.session_id for a in run.of(AttemptCompleted)] == [session, session]
    assert attempt_kinds(run.events) == [(1, "needs_retry"), (2, "done")]
    assert [s.resume_session for s in started] == [None, session]
    assert [b.session_id for b in run.of(SessionBound)] == [session]
    assert run.outcome.session_id == session
    assert decisions(run) == [("Bash", "allow_once", "rules")] * 2


# ----------------------------------------------------------------------------- 3


async def test_rules_deny_a_destructive_command(e2e: E2E) -> None:
    # Outside the workspace and outside the scratch directories (the rules let Claude delete
    # below /tmp, where tmp_path is): in the CLI's HOME, which is this test's.
    canary = e2e.home / "canary"
    canary.mkdir()
    (canary / "keep.txt").write_text("precious\n")
    command = "rm -rf ~/canary"
    e2e.api.add(
        Reply(nth(0), tool_use("Bash", {"command": command}, id="toolu_e2e_rm")),
        Reply(
            nth(1) & tool_result_contains("Permission denied by rule"),
            text("I was not allowed to delete it, so I left it alone. Done."),
        ),
    )
    goal = e2e.goal(
        "Tidy up, without deleting anything outside the workspace.",
        [ShellCheck(f"test -f {canary}/keep.txt", label="the canary survives")],
    )

    run = await e2e.run(goal)

    # The file system is untouched.
    assert (canary / "keep.txt").read_text() == "precious\n"
    assert run.outcome.kind is GoalEndKind.DONE, run.outcome
    assert (run.outcome.allowed, run.outcome.denied) == (0, 1)
    assert_script_played(e2e)

    # Events: the rules denied it, saying why.
    (decision,) = run.of(DecisionMade)
    assert (decision.tool_name, decision.outcome, decision.decider) == ("Bash", "deny", "rules")
    assert decision.reason == "Permission denied by rule: rm -rf outside the workspace: ~/canary"

    # Ledger (SQLite): the decision and the attempt's denial count.
    (row,) = run.rows("decision_made")
    assert (row["tool_name"], row["outcome"], row["decider"]) == ("Bash", "deny", "rules")
    (attempt_row,) = run.rows("attempt_completed")
    assert attempt_row["permission_denials"] == 1

    # The CLI's own accounting: permission_denials in its result frame.
    (attempt,) = run.of(AttemptCompleted)
    assert attempt.permission_denials == 1
    assert (run.outcome.allowed, run.outcome.denied) == (0, 1)
    result = run.turns[0].state.result
    assert result is not None
    (denial,) = result.raw["permission_denials"]
    assert denial["tool_name"] == "Bash"
    assert denial["tool_use_id"] == "toolu_e2e_rm"
    assert denial["tool_input"]["command"] == command

    # What Claude was told: an error tool result carrying the rule's message.
    (tool_result,) = e2e.api.tool_results(1)
    assert tool_result["tool_use_id"] == "toolu_e2e_rm"
    assert tool_result["is_error"] is True
    assert decision.reason in result_text(tool_result)


# ----------------------------------------------------------------------------- 4


async def test_llm_decider_allows_one_call_and_denies_another(e2e: E2E) -> None:
    key_var = "NEXO_E2E_LLM_KEY"
    decider = system_contains(LLM_SYSTEM_PROMPT.splitlines()[0]) & Matcher(
        lambda r: not r.stream, "non-streaming"
    )
    claude = ~decider
    allow_answer = {"outcome": "allow", "rationale": "writes inside the workspace"}
    deny_answer = {"outcome": "deny", "message": "LLM-DENY: not needed for this goal"}
    e2e.api.add(
        Reply(claude & nth(0), tool_use("Bash", {"command": "echo allowed > a.txt"})),
        Reply(decider & prompt_contains("echo allowed > a.txt"), text(json.dumps(allow_answer))),
        Reply(
            claude & last_message_has_tool_result() & ~tool_result_contains("LLM-DENY"),
            tool_use("Bash", {"command": "echo forbidden > b.txt"}),
        ),
        Reply(decider & prompt_contains("echo forbidden > b.txt"), text(json.dumps(deny_answer))),
        Reply(claude & tool_result_contains("LLM-DENY"), text("b.txt was refused. Done.")),
    )
    goal = e2e.goal(
        "Write a.txt, and b.txt if you may.",
        [ShellCheck("grep -qx allowed a.txt"), ShellCheck("test ! -e b.txt")],
    )
    llm = LlmSettings(base_url=e2e.api.base_url, api_key_env=key_var, timeout_s=20.0)
    config = e2e.config(permission=PermissionSettings(decider="llm", llm=llm))

    run = await e2e.run(goal, config, environ={**os.environ, key_var: "dummy-decider-key"})
    # The goal's decider was closed with it: no connection to the API is left open (the
    # CLI's went with it, the decider's HTTP client's keep-alive one with the decider).
    await wait_until(lambda: e2e.api.connections_open == 0, timeout=5)

    assert run.outcome.kind is GoalEndKind.DONE, run.outcome
    assert (e2e.workspace / "a.txt").read_text() == "allowed\n"
    assert not (e2e.workspace / "b.txt").exists()
    assert (run.outcome.allowed, run.outcome.denied) == (1, 1)
    assert_script_played(e2e)

    # Two decider requests: non-streaming, our decider's prompt, the configured model and
    # key; each names the tool call it decides.
    requests = e2e.api.message_requests()
    asked = [r for r in requests if decider(r)]
    assert len(asked) == 2
    assert len(claude_requests(e2e)) == 3
    assert len(requests) == 5
    for request, fragment in zip(
        asked, ["echo allowed > a.txt", "echo forbidden > b.txt"], strict=True
    ):
        assert request.json["model"] == "claude-haiku-4-5"
        # The key from api_key_env (anthropic 2.x sends it as a bearer token).
        sent_key = {request.headers.get("x-api-key"), request.headers.get("authorization")}
        assert sent_key & {"dummy-decider-key", "Bearer dummy-decider-key"}, request.headers
        assert request.system_text() == LLM_SYSTEM_PROMPT
        assert "Tool: Bash" in request.last_user_text()
        assert fragment in request.last_user_text()
        assert f"Goal: {goal.description}" in request.last_user_text()
    # The second prompt shows the first decision as history.
    assert "-> allow_once" in asked[1].last_user_text()

    assert decisions(run) == [("Bash", "allow_once", "llm"), ("Bash", "deny", "llm")]
    denied = run.of(DecisionMade)[1]
    assert denied.reason == deny_answer["message"]
    assert [r["outcome"] for r in run.rows("decision_made")] == ["allow_once", "deny"]
    (attempt,) = run.of(AttemptCompleted)
    assert attempt.permission_denials == 1
    assert [d.turn for d in run.of(DecisionMade)] == [1, 1]
    # Claude read the denial message.
    (tool_result,) = claude_requests(e2e)[-1].tool_results()
    assert tool_result["is_error"] is True
    assert deny_answer["message"] in result_text(tool_result)


# ----------------------------------------------------------------------------- 5


async def test_unknown_stored_session_starts_a_fresh_one(e2e: E2E) -> None:
    stale = str(uuid.uuid4())
    e2e.api.add(
        Reply(nth(0), tool_use("Bash", {"command": "echo hi > hello.txt"})),
        Reply(nth(1) & last_message_has_tool_result(), text("Done.")),
    )
    goal = e2e.goal(
        "Create hello.txt containing the word hi.", [ShellCheck("grep -qx hi hello.txt")]
    )

    run = await e2e.run(goal, bindings=[stale])

    assert run.outcome.kind is GoalEndKind.DONE, run.outcome
    assert run.outcome.total_turns == 1  # the session-invalid run is not counted
    assert_script_played(e2e)

    # Turn 1 resumed the stale id; the CLI refused it without asking the API anything.
    assert len(run.turns) == 2
    assert_turn_flags(run, 0, resume=stale)
    invalid = run.turns[0].outcome
    assert invalid.session_invalid
    assert invalid.cause.value == "session_invalid"
    assert invalid.exit_code == 1
    assert run.turns[0].state.init is None  # no init frame: nothing is bound from this run
    result = run.turns[0].state.result
    assert result is not None
    assert result.subtype == "error_during_execution"
    assert any(f"No conversation found with session ID: {stale}" in e for e in result.errors)
    first_attempt, second_attempt = run.of(AttemptCompleted)
    assert first_attempt.cause == "session_invalid"
    assert counted(run.events)[0] == (False, False)
    (replay,) = judged(run.events)
    assert replay.action == "fresh_session"
    assert run.rows("replay_decided")[0]["action"] == "fresh_session"

    # Turn 2 started a fresh session (no --resume) and its requests are all there were.
    assert_turn_flags(run, 1, resume=None)
    fresh = run.turns[1].outcome.session_id
    assert fresh is not None
    assert fresh != stale
    assert [s.resume_session for s in run.of(AttemptStarted)] == [stale, None]
    assert [b.session_id for b in run.of(SessionBound)] == [fresh]
    assert second_attempt.session_id == fresh
    first_request = e2e.api.message_requests()[0]
    assert [m["role"] for m in first_request.messages if m["role"] != "system"] == ["user"]
    assert run.outcome.session_id == fresh

    # The stale binding is kept, invalid; the fresh one is current.
    rows = {b.session_id: b.invalid for b in run.bindings}
    assert rows == {stale: True, fresh: False}


# ----------------------------------------------------------------------------- 6


async def test_overloaded_api_is_retried_then_done(e2e: E2E) -> None:
    # CLAUDE_CODE_MAX_RETRIES=1: the CLI tries twice, both 529, and gives up with an
    # api_error result; our replay policy runs the turn again (resuming), which succeeds.
    e2e.api.add(
        Reply(nth(0) | nth(1), error(529), times=2),
        Reply(nth(2), text("All done.")),
    )
    goal = e2e.goal("Say you are done.", [ShellCheck("true", label="always")])
    config = e2e.config(env={"CLAUDE_CODE_MAX_RETRIES": "1"})

    run = await e2e.run(goal, config)

    assert run.outcome.kind is GoalEndKind.DONE, run.outcome
    assert run.outcome.total_turns == 2
    assert_script_played(e2e)
    requests = e2e.api.message_requests()
    assert [r.status for r in requests] == [529, 529, 200]
    # The CLI's retry re-sent the same request.
    assert requests[0].json["messages"] == requests[1].json["messages"]

    # Turn 1: one CLI-internal retry (a system/api_retry frame), then the error result.
    first, second = run.turns
    assert first.state.api_retries == 1
    assert first.outcome.cause.value == "api_error_retryable"
    assert first.outcome.api_error_status == 529
    assert first.outcome.exit_code == 1
    assert first.state.result is not None
    assert first.state.result.raw["api_error_status"] == 529
    assert first.state.result.raw["is_error"] is True
    (replay,) = judged(run.events)
    assert replay.action == "retry"
    assert replay.reason is not None
    assert "529" in replay.reason
    assert [(a.kind, a.cause) for a in run.of(AttemptCompleted)] == [
        ("continue", "api_error_retryable"),
        ("claimed_done", "completed"),
    ]
    assert counted(run.events) == [(False, True), (False, True)]
    assert attempt_kinds(run.events)[-1] == (2, "done")

    # Turn 2 resumed the session the failed turn had started.
    session = first.outcome.session_id
    assert session is not None
    assert_turn_flags(run, 1, resume=session)
    assert second.outcome.session_id == session
    assert second.state.api_retries == 0
    assert run.outcome.final_text == "All done."


# ----------------------------------------------------------------------------- 7

COMPACTION_REQUEST = prompt_contains(
    "Your task is to create a detailed summary of the conversation so far"
)
"""How Claude Code 2.1.332 asks for a ``/compact`` summary (its last user message)."""


async def test_policy_compaction_runs_compact_and_is_not_counted(e2e: E2E) -> None:
    summary = "SUMMARY-E2E: hello.txt must contain hi; nothing written yet."
    work = ~COMPACTION_REQUEST
    e2e.api.add(
        # Turn 1 claims done without doing anything, with a context over the threshold.
        Reply(work & nth(0), text("Done.", usage=Usage(input_tokens=9000, output_tokens=5))),
        Reply(
            COMPACTION_REQUEST & nth(1),
            text(f"<analysis>The goal needs hello.txt.</analysis>\n<summary>{summary}</summary>"),
        ),
        Reply(
            work & nth(2) & prompt_contains(FAILURES_HEADER),
            tool_use("Bash", {"command": "echo hi > hello.txt"}),
        ),
        Reply(work & nth(3) & last_message_has_tool_result(), text("Done for real.")),
    )
    goal = e2e.goal(
        "Create hello.txt containing the word hi.", [ShellCheck("grep -qx hi hello.txt")]
    )
    policy = CompactPolicy(context_window=10_000, threshold=0.5, min_turns_between=1)

    run = await e2e.run(goal, e2e.config(compact=policy))

    assert run.outcome.kind is GoalEndKind.DONE, run.outcome
    assert run.outcome.total_turns == 2  # the compact turn is not counted
    assert_script_played(e2e)

    (scheduled,) = run.of(CompactScheduled)
    assert scheduled.context_tokens >= 9000
    assert not scheduled.forced
    started = run.of(AttemptStarted)
    assert [(s.turn, s.compact) for s in started] == [(1, False), (1, True), (2, False)]
    assert started[1].prompt.startswith("/compact ")
    assert counted(run.events) == [(False, True), (True, False), (False, True)]
    assert attempt_kinds(run.events) == [(1, "needs_retry"), (2, "done")]

    # The compact turn: `/compact FOCUS` on the resumed session; the CLI asked the API for
    # a summary (with our focus) and reported the compact boundary.
    session = run.turns[0].outcome.session_id
    assert session is not None
    compact_turn = run.turns[1]
    assert cli_argv(compact_turn)[2] == started[1].prompt
    assert_turn_flags(run, 1, resume=session)
    assert compact_turn.state.compactions == 1
    assert compact_turn.outcome.exit_code == 0
    assert compact_turn.outcome.session_id == session
    assert compact_turn.state.result is not None
    assert compact_turn.state.result.raw.get("local_command") == "compact"
    summary_request = e2e.api.message_requests()[1]
    assert "Additional Instructions:" in summary_request.last_user_text()
    assert started[1].prompt.removeprefix("/compact ") in summary_request.last_user_text()
    assert compose_prompt(goal.description) in user_texts(summary_request)  # what it summarises

    # The session goes on from the summary: turn 2 resumes it, and its history is the
    # summary instead of turn 1's messages.
    assert_turn_flags(run, 2, resume=session)
    assert run.turns[2].outcome.session_id == session
    turn2 = e2e.api.message_requests()[2]
    assert summary in "\n".join(user_texts(turn2))
    assert compose_prompt(goal.description) not in user_texts(turn2)
    assert FAILURES_HEADER in turn2.last_user_text()
    assert {a.session_id for a in run.of(AttemptCompleted)} == {session}


# ----------------------------------------------------------------------------- 8


async def test_turn_timeout_kills_the_cli_its_mcp_server_and_the_tool(e2e: E2E) -> None:
    # Claude Code refuses a standalone `sleep N` (and `sleep N; more`): the sleep comes last.
    sleep = "echo waiting > wait.txt && sleep 600.5"
    e2e.api.add(
        Reply(nth(0), tool_use("Bash", {"command": sleep}, id="toolu_e2e_sleep")),
        # Turn 2 resumes the session after the kill, and finishes.
        Reply(nth(1), text("Resumed after the timeout. Done.")),
    )
    goal = e2e.goal("Wait a while, then say you are done.", [ShellCheck("true", label="always")])
    config = e2e.config(turn_timeout_s=6.0, kill_grace_s=3.0)
    watch = ProcessWatch(e2e.marker)
    socket_dir = e2e.state_dir

    async def during(_orch: object) -> None:
        await watch.run()

    run = await e2e.run(goal, config, during=during)
    watch.scan()

    # The policy: a timeout is retried (counted), and the next turn resumed the session.
    assert run.outcome.kind is GoalEndKind.DONE, run.outcome
    assert run.outcome.total_turns == 2
    assert_script_played(e2e)
    first, second = run.turns
    assert first.outcome.cause.value == "timeout"
    assert first.outcome.reason == "turn timeout after 6s"
    # SIGTERM was enough: the CLI exits 143 and stops its Bash tool and MCP server itself.
    assert first.stop_actions[0] == "SIGTERM"
    assert first.outcome.exit_code == 143
    assert 6.0 <= first.duration_s < 6.0 + 2 * config.kill_grace_s + 2
    (replay,) = judged(run.events)
    assert (replay.action, replay.reason) == ("retry", "turn timeout after 6s")
    session = first.outcome.session_id
    assert session is not None
    assert_turn_flags(run, 1, resume=session)
    assert decisions(run) == [("Bash", "allow_once", "rules")]
    # The resumed session shows the interrupted tool call with an error result: the one the
    # CLI recorded while stopping (its Bash child killed: "Exit code 137") or, when it had
    # no time to, one it makes up on resume ("[Tool call interrupted: ...]").
    resumed = e2e.api.message_requests()[1]
    assert [t["id"] for t in tool_uses(resumed)] == ["toolu_e2e_sleep"]
    (interrupted,) = [
        b
        for m in resumed.messages
        if m["role"] == "user" and isinstance(m["content"], list)
        for b in m["content"]
        if b.get("type") == "tool_result"
    ]
    assert interrupted["tool_use_id"] == "toolu_e2e_sleep"
    assert interrupted["is_error"] is True
    assert "Exit code 137" in result_text(interrupted) or result_text(interrupted).startswith(
        "[Tool call interrupted"
    )
    assert resumed.last_user_text().endswith(compose_prompt(goal.description))
    assert (e2e.workspace / "wait.txt").read_text() == "waiting\n"

    # Everything turn 1 started was seen running, and is gone.
    sleeps = watch.matching(lambda c: c[:2] == ["sleep", "600.5"])
    servers = watch.matching(lambda c: is_mcp_server(c, socket_dir))
    assert sleeps, watch.seen
    assert len(servers) == 2, watch.seen  # one per turn
    assert first.pid is not None
    assert first.pid in watch.seen
    assert second.pid is not None
    assert watch.still_running() == []
    for pid in [first.pid, *sleeps, *servers]:
        assert is_gone(pid)


# ----------------------------------------------------------------------------- 9


@pytest.mark.parametrize("transport", ["mcp", "stdio"])
async def test_cancel_mid_turn_with_sigint_exits_130_and_leaves_nothing(
    e2e: E2E, transport: str
) -> None:
    """Ctrl-C of ``nexo-trio run`` mid-tool: on mcp the CLI gets SIGTERM (and stops its MCP
    server itself); on stdio it is interrupted and ends the turn itself. Nothing is left."""
    sleep = "echo waiting > wait.txt && sleep 600.7"
    e2e.api.add(Reply(nth(0), tool_use("Bash", {"command": sleep})))
    goal_file = e2e.root / "goal.yaml"
    goal_file.write_text(
        yaml.safe_dump(
            {
                "id": "cancel-me",
                "description": "Wait for a long time.",
                "acceptance": [{"kind": "shell", "command": "true"}],
                "budget": {"max_turns": 3, "max_wall_time": "50s"},
                "workspace": str(e2e.workspace),
            }
        )
    )
    config_file = e2e.root / "config.yaml"
    config_file.write_text(
        yaml.safe_dump(
            {
                "claude": {"binary": str(e2e.claude_bin), "env": e2e.claude_env()},
                "turn_timeout": "45s",
                "kill_grace": "3s",
                "state_dir": str(e2e.state_dir),
                "permission": {"transport": transport},
            }
        )
    )
    watch = ProcessWatch(e2e.marker)
    env = {**os.environ, MARKER_VAR: e2e.marker}
    argv = [str(NEXO_TRIO), "run", str(goal_file), "--config", str(config_file), "--json"]
    stdout, stderr = e2e.root / "run.stdout", e2e.root / "run.stderr"
    with stdout.open("wb") as out, stderr.open("wb") as err:
        process = await trio.lowlevel.open_process(
            argv, cwd=e2e.root, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err
        )
    e2e.guard.watch(process.pid)
    try:
        with trio.fail_after(30):
            # Wait until Claude asked for the tool call, the gate allowed it and it runs.
            while not watch.matching(lambda c: c[:2] == ["sleep", "600.7"]):
                watch.scan()
                await trio.sleep(0.05)
        watch.scan()
        process.send_signal(signal.SIGINT)
        with trio.fail_after(20):
            code = await process.wait()
    finally:
        if process.returncode is None:  # failing already: don't leave it running
            process.kill()
            with trio.CancelScope(shield=True):
                await process.wait()
    assert code == 130, stderr.read_text()
    assert (e2e.workspace / "wait.txt").read_text() == "waiting\n"

    outcome = json.loads(stdout.read_text())
    assert outcome["goal_id"] == "cancel-me"
    assert outcome["outcome"]["kind"] == "cancelled"
    assert outcome["outcome"]["reason"] == "cancelled by SIGINT"
    assert outcome["decisions"] == {"allowed": 1, "denied": 0}

    # Nothing is left: not the CLI, not its MCP server, not the sleep.
    clis = watch.matching(lambda c: c[:2] == [str(e2e.claude_bin), "-p"])
    servers = watch.matching(lambda c: is_mcp_server(c, e2e.state_dir))
    sleeps = watch.matching(lambda c: c[:2] == ["sleep", "600.7"])
    assert clis, watch.seen
    assert bool(servers) is (transport == "mcp"), watch.seen
    assert sleeps, watch.seen
    assert watch.still_running() == []
    assert len(e2e.api.message_requests()) == 1

    # The ledger: the cancellation was asked for, and the goal ended cancelled.
    events_argv = [
        str(NEXO_TRIO),
        "events",
        "cancel-me",
        "--json",
        "--state-dir",
        str(e2e.state_dir),
    ]
    listed = await trio.run_process(events_argv, capture_stdout=True, capture_stderr=True)
    rows = [json.loads(line) for line in listed.stdout.decode().splitlines()]
    kinds = [row["kind"] for row in rows]
    assert "cancel_requested" in kinds
    assert kinds[-1] == "goal_completed"
    (cancel,) = [row for row in rows if row["kind"] == "cancel_requested"]
    assert cancel["data"]["reason"] == "cancelled by SIGINT"
    assert rows[-1]["data"]["outcome"]["outcome"]["kind"] == "cancelled"
    assert kinds.index("cancel_requested") < kinds.index("goal_completed")
    (decision,) = [row for row in rows if row["kind"] == "decision_made"]
    assert decision["data"]["outcome"] == "allow_once"
    (attempt,) = [row for row in rows if row["kind"] == "attempt_completed"]
    assert attempt["data"]["kind"] == "cancelled"
    if transport == "stdio":
        assert attempt["data"]["stop_actions"] == ["interrupt"]
        assert attempt["data"]["session_id"]


# ----------------------------------------------------------------------------- 10


async def test_permission_server_that_fails_to_start_escalates(
    e2e: E2E, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = e2e.root / "no-such-dir" / "nexo-permission-mcp"
    real_command = nexo_trio.gate.mcp_config.server_command

    def broken_command(socket_path: Path, goal_id: str, deadline_s: float) -> list[str]:
        return [str(missing), *real_command(socket_path, goal_id, deadline_s)[1:]]

    monkeypatch.setattr(nexo_trio.gate.mcp_config, "server_command", broken_command)
    # The CLI may get as far as asking for a tool call before it is stopped.
    e2e.api.add(
        Reply(nth(0), tool_use("Bash", {"command": "echo hi > hello.txt"}), times=None),
    )
    goal = e2e.goal("Create hello.txt containing the word hi.", [ShellCheck("true")])

    with trio.fail_after(20):
        run = await e2e.run(goal)

    assert run.outcome.kind is GoalEndKind.ESCALATED, run.outcome
    assert run.outcome.reason == "permission gate unavailable: MCP server 'nexo' is failed"
    assert run.outcome.total_turns == 1
    assert run.outcome.elapsed_s < 10
    assert not (e2e.workspace / "hello.txt").exists()  # no tool ran
    assert run.of(DecisionMade) == []
    assert e2e.api.unmatched == []
    assert len(e2e.api.message_requests()) <= 1

    # The real CLI's init frame reported the server failed; the engine stopped the CLI.
    (turn,) = run.turns
    assert turn.state.init is not None
    assert [(s.name, s.status) for s in turn.state.init.mcp_servers] == [("nexo", "failed")]
    assert turn.outcome.cause.value == "gate_unavailable"
    assert turn.stop_actions[0] == "permission gate unavailable"
    (escalated,) = run.of(Escalated)
    assert escalated.reason == run.outcome.reason
    (attempt,) = run.of(AttemptCompleted)
    assert (attempt.kind, attempt.cause) == ("escalate", "gate_unavailable")
    (completed,) = run.of(GoalCompleted)
    assert completed.outcome.kind is GoalEndKind.ESCALATED
    assert run.rows("goal_completed")[0]["outcome"]["outcome"]["kind"] == "escalated"
    # The per-goal MCP config is removed when the goal ends.
    assert list((e2e.state_dir / "gate").glob("*.mcp.json")) == []


# ----------------------------------------------------------------------------- 11


@pytest.mark.parametrize("mode", ["auto", "none"])
async def test_kill_9_mid_turn_leaves_no_orphan_and_the_rerun_finishes(e2e: E2E, mode: str) -> None:
    # Issue 10, defect 2: after `kill -9` of `nexo-trio run` mid-turn the CLI and its
    # children lived on, and the re-run refused to start ("another process is serving
    # …/gate.sock") or, once started, answered the orphan's permission requests.
    sleep = "echo waiting > wait.txt && sleep 600.9"
    e2e.api.add(Reply(nth(0), tool_use("Bash", {"command": sleep})))
    e2e.api.add(Reply(nth(1), tool_use("Bash", {"command": "echo hi > hello.txt"})))
    e2e.api.add(Reply(nth(2), text("Done.")))
    goal_file = e2e.root / "goal.yaml"
    goal_file.write_text(
        yaml.safe_dump(
            {
                "id": "killed",
                "description": "Create hello.txt containing hi.",
                "acceptance": [{"kind": "shell", "command": "grep -qx hi hello.txt"}],
                "budget": {"max_turns": 3, "max_wall_time": "100s"},
                "workspace": str(e2e.workspace),
            }
        )
    )
    config_file = e2e.root / "config.yaml"
    config_file.write_text(
        yaml.safe_dump(
            {
                "claude": {"binary": str(e2e.claude_bin), "env": e2e.claude_env()},
                "turn_timeout": "45s",
                "kill_grace": "3s",
                "state_dir": str(e2e.state_dir),
                "sandbox": {"mode": mode},
            }
        )
    )
    watch = ProcessWatch(e2e.marker)
    env = {**os.environ, MARKER_VAR: e2e.marker}
    argv = [str(NEXO_TRIO), "run", str(goal_file), "--config", str(config_file), "--json"]

    async def start(n: int) -> trio.Process:
        out = (e2e.root / f"run{n}.stdout").open("wb")
        err = (e2e.root / f"run{n}.stderr").open("wb")
        with out, err:
            process = await trio.lowlevel.open_process(
                argv, cwd=e2e.root, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err
            )
        e2e.guard.watch(process.pid)
        return process

    first = await start(1)
    try:
        with trio.fail_after(30):
            while not watch.matching(lambda c: c[:2] == ["sleep", "600.9"]):
                watch.scan()
                await trio.sleep(0.05)
        watch.scan()
        first.kill()
        await first.wait()
        # Nothing of the killed run's turn lives on: not the CLI, its MCP server, the tool.
        with trio.fail_after(10):
            while watch.still_running():
                await trio.sleep(0.05)
                watch.scan()
    finally:
        if first.returncode is None:
            first.kill()
            with trio.CancelScope(shield=True):
                await first.wait()
    assert watch.matching(lambda c: c[:2] == [str(e2e.claude_bin), "-p"]), watch.seen

    rerun_started = os.stat(e2e.workspace / "wait.txt").st_mtime
    second = await start(2)
    try:
        with trio.fail_after(60):
            code = await second.wait()
    finally:
        if second.returncode is None:
            second.kill()
            with trio.CancelScope(shield=True):
                await second.wait()
    stderr = (e2e.root / "run2.stderr").read_text()
    assert code == 0, stderr
    assert "another process" not in stderr
    outcome = json.loads((e2e.root / "run2.stdout").read_text())
    assert outcome["outcome"]["kind"] == "done"
    assert (e2e.workspace / "hello.txt").read_text() == "hi\n"
    assert os.stat(e2e.workspace / "wait.txt").st_mtime == rerun_started
    watch.scan()
    assert watch.still_running() == []

    # The ledger: the second run knows the first crashed mid-turn, and every decision it
    # recorded is one the re-run's own turn asked for.
    listed = await trio.run_process(
        [str(NEXO_TRIO), "events", "killed", "--json", "--state-dir", str(e2e.state_dir)],
        capture_stdout=True,
        capture_stderr=True,
    )
    rows = [json.loads(line) for line in listed.stdout.decode().splitlines()]
    starts = [row for row in rows if row["kind"] == "goal_started"]
    assert len(starts) == 2
    assert starts[1]["data"]["abandoned_turn"] == 1
    decided = [row["data"] for row in rows if row["kind"] == "decision_made"]
    # The abandoned turn runs again as the same turn (not counted twice).
    assert [(d["turn"], d["outcome"]) for d in decided] == [(1, "allow_once"), (1, "allow_once")]
    assert rows[-1]["kind"] == "goal_completed"
