"""The ``llm_judge`` check, against the scripted Messages API: the judge's strict JSON answer
is the verdict and its reasoning the evidence; every failure to get one is a failed check."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import hypothesis.strategies as st
import pytest
import trio
from hypothesis import given

from nexo_trio.core.acceptance import Judgement, Verdict, parse_judgement
from nexo_trio.core.goal import Criterion, LlmJudgeCheck, ShellCheck
from nexo_trio.core.settings import LlmSettings
from nexo_trio.orchestrator.acceptance import (
    JUDGE_FILE_CAP,
    JUDGE_SYSTEM_PROMPT,
    evaluate,
)
from nexo_trio.testing.messages_api import Reply, ScriptedMessagesAPI, always, error, text

pytestmark = pytest.mark.usefixtures("procs")

KEY_ENV = "NEXO_TEST_JUDGE_KEY"
RUBRIC = "README.md explains how to install the tool."


@pytest.fixture
async def api(nursery: trio.Nursery) -> ScriptedMessagesAPI:
    server: ScriptedMessagesAPI = await nursery.start(ScriptedMessagesAPI().serve)
    return server


def settings(api: ScriptedMessagesAPI, timeout: float = 5.0) -> LlmSettings:
    return LlmSettings(
        base_url=api.base_url, model="claude-judge-test", api_key_env=KEY_ENV, timeout_s=timeout
    )


async def judge(
    api: ScriptedMessagesAPI,
    workspace: Path,
    *checks: Criterion,
    timeout: float = 5.0,
    environ: dict[str, str] | None = None,
) -> Verdict:
    return await evaluate(
        checks or [LlmJudgeCheck(RUBRIC, paths=("README.md",))],
        workspace=workspace,
        llm=settings(api, timeout),
        environ={KEY_ENV: "sk-judge"} if environ is None else environ,
    )


def verdict_text(passed: bool, reasoning: str) -> str:
    return json.dumps({"passed": passed, "reasoning": reasoning})


async def test_a_pass(api: ScriptedMessagesAPI, tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("# Tool\n\nInstall with `pip install tool`.\n")
    api.add(Reply(always(), text(verdict_text(True, "It says pip install tool."))))
    verdict = await judge(api, tmp_path)
    (result,) = verdict.results
    assert verdict.met
    assert result.passed
    assert result.label == f"llm_judge: {RUBRIC}"
    assert result.message == "the LLM judge (claude-judge-test) found the rubric met"
    assert result.evidence == "It says pip install tool."
    (sent,) = api.message_requests()
    prompt = sent.last_user_text()
    assert RUBRIC in prompt
    assert "Install with `pip install tool`." in prompt
    assert "File README.md:" in prompt
    assert sent.system_text() == JUDGE_SYSTEM_PROMPT
    assert sent.json["model"] == "claude-judge-test"
    assert "sk-judge" in json.dumps(sent.headers)
    assert not sent.stream


async def test_a_fail_has_the_reasoning_as_evidence(
    api: ScriptedMessagesAPI, tmp_path: Path
) -> None:
    (tmp_path / "README.md").write_text("# Tool\n")
    reasoning = "The README has a title and no install instructions."
    api.add(Reply(always(), text("```json\n" + verdict_text(False, reasoning) + "\n```")))
    verdict = await judge(api, tmp_path, LlmJudgeCheck(RUBRIC, paths=("README.md",), label="docs"))
    assert not verdict.met
    (failure,) = verdict.failures
    assert failure.label == "docs"
    assert failure.message == "the LLM judge (claude-judge-test) found the rubric not met"
    assert failure.evidence == reasoning


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        ("I think it passes.", "the answer is not JSON"),
        ('Sure: {"passed": true, "reasoning": "ok"}', "the answer is not JSON"),
        ('{"passed": "yes", "reasoning": "ok"}', '"passed" must be true or false, got "yes"'),
        ('{"passed": true}', '"reasoning" must be a string, got null'),
        ("[true]", "the answer is JSON but not an object (list)"),
        ("", "the answer is empty"),
    ],
)
async def test_a_malformed_answer_fails_the_check(
    api: ScriptedMessagesAPI, tmp_path: Path, answer: str, problem: str
) -> None:
    api.add(Reply(always(), text(answer)))
    (result,) = (await judge(api, tmp_path)).results
    assert not result.passed
    assert result.message == (
        "the LLM judge (claude-judge-test) did not answer "
        f'{{"passed": true | false, "reasoning": "<why>"}}: {problem}'
    )
    assert result.evidence == answer  # what it said instead


async def test_a_timeout_fails_the_check_in_time(api: ScriptedMessagesAPI, tmp_path: Path) -> None:
    api.add(Reply(always(), text(verdict_text(True, "late")), delay=10))
    started = trio.current_time()
    (result,) = (await judge(api, tmp_path, timeout=0.3)).results
    assert trio.current_time() - started < 3.0
    assert not result.passed
    assert result.message == (
        "no verdict from the LLM judge (claude-judge-test): the LLM judge timed out after 0.3s"
    )


@pytest.mark.parametrize("environ", [{}, {KEY_ENV: " "}])
async def test_a_missing_api_key_fails_the_check_without_a_request(
    api: ScriptedMessagesAPI, tmp_path: Path, environ: dict[str, str]
) -> None:
    (tmp_path / "marker").write_text("")
    check = LlmJudgeCheck(RUBRIC, command="rm marker")
    (result,) = (await judge(api, tmp_path, check, environ=environ)).results
    assert not result.passed
    assert result.message == (
        f"an llm_judge check needs an API key in the environment variable {KEY_ENV} "
        "(permission.llm.api_key_env), which is not set"
    )
    assert api.requests == []
    assert (tmp_path / "marker").exists()  # nothing was run for a judge that cannot answer


async def test_an_http_error_fails_the_check(api: ScriptedMessagesAPI, tmp_path: Path) -> None:
    api.add(Reply(always(), error(529, "overloaded_error", "Overloaded")))
    (result,) = (await judge(api, tmp_path)).results
    assert not result.passed
    assert result.message == (
        "no verdict from the LLM judge (claude-judge-test): "
        "LLM request failed: HTTP 529 overloaded_error: Overloaded"
    )
    assert len(api.requests) == 1  # no retries


async def test_without_the_sdk_the_check_fails_with_the_install_hint(
    api: ScriptedMessagesAPI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "anthropic", None)
    (result,) = (await judge(api, tmp_path)).results
    assert not result.passed
    assert "pip install 'nexo-trio[llm]'" in result.message
    assert api.requests == []


async def test_the_judge_sees_the_commands_output_and_the_checks_model(
    api: ScriptedMessagesAPI, tmp_path: Path
) -> None:
    api.add(Reply(always(), text(verdict_text(True, "fine"))))
    check = LlmJudgeCheck(
        "The tests pass.", command="echo 3 passed; echo warning >&2; exit 1", model="claude-big"
    )
    (result,) = (await judge(api, tmp_path, check)).results
    assert result.passed
    assert result.message == "the LLM judge (claude-big) found the rubric met"
    (sent,) = api.message_requests()
    assert sent.json["model"] == "claude-big"
    prompt = sent.last_user_text()
    assert "Command `echo 3 passed; echo warning >&2; exit 1` ended with exit code 1" in prompt
    assert "[stdout]\n3 passed\n\n[stderr]\nwarning\n" in prompt


async def test_files_missing_refused_or_too_big(api: ScriptedMessagesAPI, tmp_path: Path) -> None:
    (tmp_path / "big.txt").write_text("a" * JUDGE_FILE_CAP + "THE-END")
    (tmp_path / "sub").mkdir()
    api.add(Reply(always(), text(verdict_text(False, "incomplete"))))
    check = LlmJudgeCheck(RUBRIC, paths=("big.txt", "missing.txt", "../outside", "/etc/passwd"))
    (result,) = (await judge(api, tmp_path, check)).results
    assert not result.passed
    prompt = api.message_requests()[0].last_user_text()
    assert f"File big.txt, only its first {JUDGE_FILE_CAP} characters:" in prompt
    assert "THE-END" not in prompt
    assert "File missing.txt: not shown (no such file: missing.txt)." in prompt
    assert "File ../outside: not shown (path ../outside resolves outside the workspace" in prompt
    assert "File /etc/passwd: not shown (absolute path /etc/passwd refused" in prompt
    assert "root:" not in prompt


async def test_a_command_that_times_out_is_not_judged(
    api: ScriptedMessagesAPI, tmp_path: Path
) -> None:
    check = LlmJudgeCheck(RUBRIC, command="echo started; sleep 30", timeout_s=0.3)
    (result,) = (await judge(api, tmp_path, check)).results
    assert not result.passed
    assert result.message == "the command timed out after 0.3s: not judged"
    assert "started" in result.evidence
    assert api.requests == []


async def test_a_failed_judge_that_is_not_required_stops_nothing(
    api: ScriptedMessagesAPI, tmp_path: Path
) -> None:
    api.add(Reply(always(), text(verdict_text(False, "meh"))))
    verdict = await judge(
        api, tmp_path, LlmJudgeCheck(RUBRIC, required=False), ShellCheck("touch after")
    )
    judged, after = verdict.results
    assert not judged.passed
    assert not judged.required
    assert after.passed
    assert verdict.met


def test_the_record_checks_its_fields() -> None:
    with pytest.raises(ValueError, match=r"^rubric: must not be empty$"):
        LlmJudgeCheck(" ")
    with pytest.raises(ValueError, match=r"^model: must not be empty$"):
        LlmJudgeCheck("r", model="")
    with pytest.raises(ValueError, match=r"^paths: must not be empty$"):
        LlmJudgeCheck("r", paths=("a", ""))
    with pytest.raises(ValueError, match=r"^timeout_s: "):
        LlmJudgeCheck("r", timeout_s=0)
    assert LlmJudgeCheck("r", paths="one.txt").paths == ("one.txt",)
    assert LlmJudgeCheck("x" * 100).title == "llm_judge: " + "x" * 59 + "…"


@given(st.booleans(), st.text())
def test_a_well_formed_answer_is_always_read(passed: bool, reasoning: str) -> None:
    answer = json.dumps({"passed": passed, "reasoning": reasoning, "extra": 1})
    assert parse_judgement(answer) == Judgement(passed, reasoning.strip())
    assert parse_judgement(f"```json\n{answer}\n```") == Judgement(passed, reasoning.strip())


@given(st.text())
def test_any_answer_is_a_judgement_or_a_problem(answer: str) -> None:
    outcome = parse_judgement(answer)
    assert isinstance(outcome, Judgement | str)
