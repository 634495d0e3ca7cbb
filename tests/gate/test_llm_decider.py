"""The LLM decider, against the scripted Messages API: it allows, denies, and fails closed."""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator
from typing import Any

import attrs
import pytest
import trio

from nexo_trio.core.permission import DecisionOutcome, PermissionRequest
from nexo_trio.core.settings import LlmSettings
from nexo_trio.gate.llm import (
    INSTALL_HINT,
    AnthropicClient,
    LlmDecider,
    decision_from_answer,
    parse_answer,
)
from nexo_trio.testing.messages_api import (
    Reply,
    ScriptedMessagesAPI,
    always,
    error,
    nth,
    text,
)
from tests.gate.helpers import behavior

GOAL = "Create hello.txt containing the word hi."
WORKSPACE = "/tmp/nexo-work/goal-1"


def request(
    tool: str = "Bash", tool_input: dict[str, Any] | None = None, goal_id: str = "goal-1"
) -> PermissionRequest:
    return PermissionRequest(
        goal_id=goal_id,
        tool_name=tool,
        input=tool_input if tool_input is not None else {"command": "echo hi > hello.txt"},
        tool_use_id="toolu_1",
        workspace=WORKSPACE,
        goal_description=GOAL,
    )


def answer(**fields: Any) -> str:
    return json.dumps(fields)


@pytest.fixture
async def api(nursery: trio.Nursery) -> ScriptedMessagesAPI:
    server: ScriptedMessagesAPI = await nursery.start(ScriptedMessagesAPI().serve)
    return server


def make_decider(api: ScriptedMessagesAPI, timeout: float = 5.0, **kwargs: Any) -> LlmDecider:
    client = AnthropicClient(
        model="claude-haiku-4-5", api_key="test-key", base_url=api.base_url, timeout=timeout
    )
    return LlmDecider(client, timeout=timeout, **kwargs)


@pytest.fixture
async def decider(api: ScriptedMessagesAPI) -> AsyncIterator[LlmDecider]:
    async with make_decider(api) as llm:
        yield llm


async def test_allow(api: ScriptedMessagesAPI, decider: LlmDecider) -> None:
    api.add(Reply(always(), text(answer(outcome="allow", rationale="writes in the workspace"))))
    decision = await decider.decide(request())
    assert decision.outcome is DecisionOutcome.ALLOW_ONCE
    assert decision.allowed
    assert decision.decider == "llm"
    assert decision.rationale == "writes in the workspace"
    assert decision.updated_input is None
    assert behavior(decision, {"command": "x"}) == {
        "behavior": "allow",
        "updatedInput": {"command": "x"},
    }


async def test_deny(api: ScriptedMessagesAPI, decider: LlmDecider) -> None:
    api.add(
        Reply(
            always(),
            text(answer(outcome="deny", message="Do not delete /etc.", rationale="destructive")),
        )
    )
    decision = await decider.decide(request(tool_input={"command": "rm -rf /etc"}))
    assert decision.outcome is DecisionOutcome.DENY
    assert not decision.allowed
    assert decision.message == "Do not delete /etc."
    assert decision.rationale == "destructive"
    assert behavior(decision, {}) == {"behavior": "deny", "message": "Do not delete /etc."}


async def test_allow_session(api: ScriptedMessagesAPI, decider: LlmDecider) -> None:
    api.add(
        Reply(nth(0), text(answer(outcome="allow_session", rationale="harmless"))),
        Reply(nth(1), text(answer(outcome="allow_session", scope="tool", rationale="read"))),
    )
    first = await decider.decide(request())
    second = await decider.decide(request("Read", {"file_path": "a"}))
    assert first.outcome is DecisionOutcome.ALLOW_SESSION
    assert first.scope == "tool+input"
    assert second.scope == "tool"
    assert first.allowed
    assert second.allowed


async def test_updated_input(api: ScriptedMessagesAPI, decider: LlmDecider) -> None:
    safer = {"command": "rm -ri ./build"}
    api.add(Reply(always(), text(answer(outcome="allow", updated_input=safer, rationale="ok"))))
    decision = await decider.decide(request(tool_input={"command": "rm -rf ./build"}))
    assert decision.outcome is DecisionOutcome.ALLOW_ONCE
    assert decision.updated_input == safer
    assert behavior(decision, {"command": "rm -rf ./build"})["updatedInput"] == safer


async def test_fenced_json(api: ScriptedMessagesAPI, decider: LlmDecider) -> None:
    fenced = 'Here is my decision:\n```json\n{"outcome": "deny", "message": "no"}\n```\n'
    api.add(Reply(always(), text(fenced)))
    decision = await decider.decide(request())
    assert decision.outcome is DecisionOutcome.DENY
    assert decision.message == "no"


async def test_prose_around_json(api: ScriptedMessagesAPI, decider: LlmDecider) -> None:
    prose = (
        "Thinking {about it}... I decide "
        '{"outcome": "allow", "message": "go", "rationale": "fine", "extra": {"nested": 1}}'
        " and that is final."
    )
    api.add(Reply(always(), text(prose)))
    decision = await decider.decide(request())
    assert decision.outcome is DecisionOutcome.ALLOW_ONCE
    assert decision.rationale == "fine"


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        ("Sure, go ahead!", "unparseable LLM answer"),
        ("", "unparseable LLM answer"),
        ("[1, 2, 3]", "unparseable LLM answer"),
        ('{"outcome": ' + "[" * 5000, "unparseable LLM answer"),  # nested too deeply
        (answer(outcome="maybe", message="hmm"), "unknown outcome 'maybe'"),
        (answer(message="no outcome"), "unknown outcome None"),
        (answer(outcome="allow", updated_input="rm -rf /"), "not an object"),
    ],
)
async def test_bad_answers_deny_with_the_reason(
    api: ScriptedMessagesAPI, decider: LlmDecider, reply: str, reason: str
) -> None:
    api.add(Reply(always(), text(reply)))
    decision = await decider.decide(request())
    assert decision.outcome is DecisionOutcome.UNAVAILABLE
    assert not decision.allowed
    assert decision.message is not None
    assert reason in decision.message
    assert behavior(decision, {})["behavior"] == "deny"


@pytest.mark.parametrize(("status", "kind"), [(500, "api_error"), (529, "overloaded_error")])
async def test_http_errors_deny_with_the_status(
    api: ScriptedMessagesAPI, decider: LlmDecider, status: int, kind: str
) -> None:
    api.add(Reply(always(), error(status, kind, "scripted failure")))
    decision = await decider.decide(request())
    assert decision.outcome is DecisionOutcome.UNAVAILABLE
    assert decision.message == f"LLM request failed: HTTP {status} {kind}: scripted failure"
    assert len(api.requests) == 1  # no SDK retries: the decider fails closed at once
    assert "unavailable" in behavior(decision, {})["message"]


async def test_timeout_denies_fast(api: ScriptedMessagesAPI) -> None:
    api.add(Reply(always(), text(answer(outcome="allow")), delay=10))
    async with make_decider(api, timeout=0.3) as decider:
        started = trio.current_time()
        decision = await decider.decide(request())
        elapsed = trio.current_time() - started
    assert decision.outcome is DecisionOutcome.UNAVAILABLE
    assert decision.message is not None
    assert "timed out after 0.3s" in decision.message
    assert elapsed < 2.0


async def test_connection_refused_denies() -> None:
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    await listener.aclose()  # nothing listens there now
    client = AnthropicClient(
        model="m", api_key="k", base_url=f"http://127.0.0.1:{port}", timeout=2.0
    )
    async with LlmDecider(client, timeout=2.0) as decider:
        decision = await decider.decide(request())
    assert decision.outcome is DecisionOutcome.UNAVAILABLE
    assert decision.message is not None
    assert "connection error" in decision.message


class RaisingClient:
    async def complete(self, *, system: str, prompt: str, max_tokens: int, timeout: float) -> str:
        raise RuntimeError("boom")


class HangingClient:
    async def complete(self, *, system: str, prompt: str, max_tokens: int, timeout: float) -> str:
        await trio.sleep_forever()
        raise AssertionError("unreachable")


async def test_any_client_exception_denies() -> None:
    decision = await LlmDecider(RaisingClient()).decide(request())
    assert decision.outcome is DecisionOutcome.UNAVAILABLE
    assert decision.message == "LLM client error: RuntimeError: boom"


async def test_cancellation_propagates() -> None:
    decider = LlmDecider(HangingClient(), timeout=30)
    with trio.move_on_after(0.05) as scope:
        await decider.decide(request())
        pytest.fail("decide returned under cancellation")
    assert scope.cancelled_caught


def test_the_prompt_shows_the_cli_s_own_check_only_when_it_said_something() -> None:
    decider = LlmDecider(client=None)  # type: ignore[arg-type]  # the prompt needs none
    asked = attrs.evolve(request(), blocked_path="/etc/passwd", cli_reason="outside the dirs")
    prompt = decider.build_prompt(asked)
    assert (
        "Claude Code's own permission check on this call: it stopped at the path "
        "/etc/passwd; it says: outside the dirs"
    ) in prompt
    assert prompt.index("Input (JSON") < prompt.index("own permission check")
    assert "permission check" not in decider.build_prompt(request())


async def test_the_prompt(api: ScriptedMessagesAPI) -> None:
    api.add(
        Reply(nth(0), text(answer(outcome="allow", rationale="first rationale"))),
        Reply(nth(1), text(answer(outcome="deny", message="nope", rationale="second rationale"))),
        Reply(always(), text(answer(outcome="allow")), times=None),
    )
    long_command = "echo " + "x" * 500 + " THE-END"
    async with make_decider(api, max_input_chars=200) as decider:
        await decider.decide(request(tool_input={"command": "ls -la"}))
        await decider.decide(request("Write", {"file_path": "/etc/passwd", "content": "x"}))
        await decider.decide(request(tool_input={"command": "echo other goal"}, goal_id="goal-2"))
        await decider.decide(request(tool_input={"command": long_command}))
    first, *_, last = api.message_requests()
    prompt = last.last_user_text()
    assert GOAL in prompt
    assert WORKSPACE in prompt
    assert "Tool: Bash" in prompt
    assert "echo xxx" in prompt
    assert "THE-END" not in prompt
    assert "truncated" in prompt
    assert "first rationale" in prompt
    assert "second rationale" in prompt
    assert "echo other goal" not in prompt  # another goal's decisions stay out
    assert prompt.index("first rationale") < prompt.index("second rationale")  # newest last
    assert "Recent decisions for this goal: none." in first.last_user_text()
    assert "JSON" in last.system_text()
    assert last.json["model"] == "claude-haiku-4-5"
    assert last.json["max_tokens"] == 512
    assert not last.stream


async def test_history_is_bounded_per_goal(api: ScriptedMessagesAPI) -> None:
    api.add(Reply(always(), text(answer(outcome="deny", message="no", rationale="r")), times=None))
    async with make_decider(api, history_size=2, max_goals=1) as decider:
        for n in range(3):
            await decider.decide(request(tool_input={"command": f"cmd {n}"}))
        entries = decider.history("goal-1")
        assert [e.input_summary for e in entries] == [
            '{"command": "cmd 1"}',
            '{"command": "cmd 2"}',
        ]
        assert [e.outcome for e in entries] == [DecisionOutcome.DENY] * 2
        assert entries[-1].reason == "r"
        await decider.decide(request(goal_id="goal-2"))
        assert decider.history("goal-1") == []  # at most max_goals goals are remembered
        assert len(decider.history("goal-2")) == 1


async def test_from_settings(api: ScriptedMessagesAPI) -> None:
    api.add(Reply(always(), text(answer(outcome="allow", rationale="ok"))))
    settings = LlmSettings(
        base_url=api.base_url, model="claude-test", api_key_env="NEXO_TEST_KEY", timeout_s=3.0
    )
    async with LlmDecider.from_settings(settings, {"NEXO_TEST_KEY": "sk-test"}) as decider:
        assert decider.timeout == 3.0
        decision = await decider.decide(request())
    assert decision.allowed
    sent = api.message_requests()[0]
    assert sent.json["model"] == "claude-test"
    assert "sk-test" in json.dumps(sent.headers)


@pytest.mark.parametrize("environ", [{}, {"NEXO_TEST_KEY": ""}])
def test_missing_api_key_is_a_clear_error(environ: dict[str, str]) -> None:
    settings = LlmSettings(api_key_env="NEXO_TEST_KEY")
    with pytest.raises(ValueError, match="NEXO_TEST_KEY"):
        LlmDecider.from_settings(settings, environ)


def test_missing_sdk_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "anthropic", None)
    with pytest.raises(ImportError, match=r"pip install 'nexo-trio\[llm\]'"):
        LlmDecider.from_settings(LlmSettings(), {"ANTHROPIC_API_KEY": "k"})
    assert "nexo-trio[llm]" in INSTALL_HINT


async def test_the_sdk_is_imported_lazily() -> None:
    code = "import sys, nexo_trio.gate.llm; assert 'anthropic' not in sys.modules"
    done = await trio.run_process([sys.executable, "-c", code], check=False)
    assert done.returncode == 0


def test_parse_answer() -> None:
    assert parse_answer('{"outcome": "allow"}') == {"outcome": "allow"}
    assert parse_answer('```\n{"outcome": "deny"}\n```') == {"outcome": "deny"}
    assert parse_answer('```json {"outcome": "deny"}```') == {"outcome": "deny"}
    assert parse_answer('a {b} c {"outcome": "allow"} d {"x": 1}') == {"outcome": "allow"}
    assert parse_answer("no json here") is None
    assert parse_answer('{"unterminated": ') is None
    assert parse_answer("[" * 5000) is None  # too deep for json: no answer, no RecursionError
    assert parse_answer('so {"a": ' + "[" * 5000) is None


def test_decision_from_answer_is_lenient_about_case_and_aliases() -> None:
    assert decision_from_answer('{"outcome": " ALLOW "}').outcome is DecisionOutcome.ALLOW_ONCE
    assert decision_from_answer('{"outcome": "allow_once"}').allowed
    denied = decision_from_answer('{"outcome": "deny"}')
    assert denied.outcome is DecisionOutcome.DENY
    assert denied.message == "Permission denied by the LLM decider"
