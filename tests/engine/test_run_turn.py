"""``run_turn`` against the fake ``claude``: normal turns, what it feeds the reducer, resume."""

from __future__ import annotations

import io
import json
import os
import uuid
from pathlib import Path
from typing import Any

import pytest
import trio

from nexo_trio.cli.replay import replay_stream
from nexo_trio.core.command import PROMPT_ARGV_LIMIT
from nexo_trio.core.events import (
    AssistantMessage,
    ProcessExited,
    Result,
    Spawned,
    StderrTail,
    StdoutClosed,
    SystemInit,
    UserMessage,
)
from nexo_trio.core.outcome import Cause, TurnKind
from nexo_trio.engine import ClaudeCommand, TurnResult, run_turn
from nexo_trio.testing.scenario import (
    Step,
    bash,
    exit_with,
    frame,
    init,
    raw,
    result,
    text,
    turn,
)
from nexo_trio.wire.stream_json import StreamDecoder
from tests.engine.conftest import FakeClaudeFactory, is_gone
from tests.engine.helpers import EventLog

TIMEOUT = 20.0
"""Generous: these runs end by themselves in well under a second."""


async def run(command: ClaudeCommand, log: EventLog | None = None, **kw: Any) -> TurnResult:
    kw.setdefault("timeout", TIMEOUT)
    kw.setdefault("kill_grace", 1.0)
    return await run_turn(command, on_events=log, **kw)


# --------------------------------------------------------------------------- a normal turn


async def test_normal_turn_claims_done_and_really_ran_the_tool(
    make_fake: FakeClaudeFactory, tmp_path: Path
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    fake = make_fake(
        turn(
            init(),
            bash("echo hi > hello.txt"),
            text("Created hello.txt."),
            result("Created hello.txt.", cost_usd=0.0125),
        )
    )
    log = EventLog()
    res = await run(fake.command("Create hello.txt containing hi", cwd=work), log)

    out = res.outcome
    assert out.kind is TurnKind.CLAIMED_DONE
    assert out.cause is Cause.COMPLETED
    assert out.final_text == "Created hello.txt."
    assert out.reason is None
    assert (work / "hello.txt").read_text() == "hi\n"
    [invocation] = fake.invocations()
    assert out.session_id == invocation["session_id"]
    assert uuid.UUID(out.session_id)
    assert out.cost_usd == pytest.approx(0.0125)
    assert out.cumulative_cost_usd == pytest.approx(0.0125)
    assert out.usage.input_tokens == 100
    assert out.usage.output_tokens == 20
    assert out.tool_uses == 1
    assert out.exit_code == 0
    assert out.exit_signal is None
    assert out.malformed_lines == out.oversized_lines == 0
    assert out.events == 5  # init, tool_use, tool_result, text, result
    assert res.stop_actions == ()
    assert res.pid == invocation["pid"]
    assert res.argv == tuple(fake.command("Create hello.txt containing hi").argv())
    assert res.state.finished
    assert invocation["cwd"] == str(work)
    assert res.pid is not None
    assert is_gone(res.pid)

    kinds = [type(e) for e in log.events]
    assert kinds[0] is Spawned
    assert kinds[-1] is StderrTail
    assert kinds.count(StdoutClosed) == kinds.count(ProcessExited) == 1
    assert [type(e) for e in log.line_events()] == [
        SystemInit,
        AssistantMessage,
        UserMessage,
        AssistantMessage,
        Result,
    ]


async def test_outcome_is_exactly_the_reducer_over_the_reported_events(
    make_fake: FakeClaudeFactory,
) -> None:
    fake = make_fake(
        turn(init(), text("thinking"), raw(b"not json\n"), text("done"), result("done"))
    )
    log = EventLog()
    res = await run(fake.command("go"), log)
    assert res.outcome.kind is TurnKind.CLAIMED_DONE
    assert res.outcome.malformed_lines == 1
    # The engine only feeds the reducer: folding what on_events saw gives the same state.
    assert log.replayed_state() == res.state
    assert log.replayed_outcome() == res.outcome
    # Each callback got the state after its batch.
    assert log.states[-1] == res.state


def _deterministic_turn(*tail: Step) -> list[Step]:
    """Frames with no random ids, so two runs of the fake print the same bytes."""
    sid = "11111111-2222-4333-8444-555555555555"
    return [
        frame({"type": "system", "subtype": "init", "session_id": sid, "model": "m", "tools": []}),
        frame(
            {
                "type": "assistant",
                "session_id": sid,
                "message": {
                    "role": "assistant",
                    "content": [{"type": "text", "text": "working on it"}],
                    "usage": {"input_tokens": 7, "output_tokens": 3},
                },
            }
        ),
        raw(b"\xff\xfe not utf-8\n"),
        frame({"type": "mystery_frame", "session_id": sid, "payload": [1, 2]}),
        raw(b'{"type": "assistant", "message": {"content": [{"type": "text", "text": "x"}]}}\n'),
        *tail,
    ]


def _result_frame(**fields: Any) -> Step:
    body: dict[str, Any] = {
        "type": "result",
        "subtype": "success",
        "is_error": False,
        "result": "All done.",
        "session_id": "11111111-2222-4333-8444-555555555555",
        "num_turns": 2,
        "total_cost_usd": 0.75,
        "usage": {
            "input_tokens": 1000,
            "output_tokens": 50,
            "cache_read_input_tokens": 10,
            "cache_creation_input_tokens": 20,
        },
        "model_usage_since_last_result": {"m": {"costUSD": 0.25}},
    }
    body.update(fields)
    return frame(body)


REPLAY_CASES = {
    "claimed-done": (_deterministic_turn(_result_frame()), TurnKind.CLAIMED_DONE),
    "exit-3-no-result": (_deterministic_turn(exit_with(3)), TurnKind.CONTINUE),
    "clean-exit-no-result": (_deterministic_turn(), TurnKind.CONTINUE),
    "execution-error": (
        _deterministic_turn(
            _result_frame(subtype="error_during_execution", is_error=True, errors=["disk full"]),
            exit_with(1),
        ),
        TurnKind.ESCALATE,
    ),
    "api-error-529": (
        _deterministic_turn(
            _result_frame(is_error=True, result="API Error: 529 overloaded", api_error_status=529),
            exit_with(1),
        ),
        TurnKind.CONTINUE,
    ),
    "sleep-request": (
        _deterministic_turn(
            _result_frame(
                result=json.dumps(
                    {"__nexo_sleep__": True, "duration_ms": 60_000, "reason": "ci running"}
                )
            )
        ),
        TurnKind.SLEEP,
    ),
    "session-invalid": (
        _deterministic_turn(
            _result_frame(
                subtype="error_during_execution",
                is_error=True,
                errors=["No conversation found with session ID: 1234"],
            ),
            exit_with(1),
        ),
        TurnKind.CONTINUE,
    ),
}


@pytest.mark.parametrize("case", list(REPLAY_CASES))
async def test_run_turn_and_replay_agree_on_the_same_stdout(
    case: str, make_fake: FakeClaudeFactory
) -> None:
    steps, kind = REPLAY_CASES[case]
    # Two fakes playing the same deterministic scenario: one supervised by run_turn, one
    # run plainly so its stdout bytes can be captured and replayed.
    live = make_fake(turn(*steps))
    recorded = make_fake(turn(*steps))
    log = EventLog()
    res = await run(live.command("go"), log)

    command = recorded.command("go")
    plain = await trio.run_process(
        command.argv(), env=command.child_env(os.environ), capture_stdout=True, check=False
    )
    assert plain.stdout
    replayed = replay_stream(io.BytesIO(plain.stdout), exit_code=plain.returncode)

    assert res.outcome.kind is kind
    assert replayed == res.outcome
    assert log.replayed_outcome() == res.outcome
    # The events are the decoder's, one for one.
    decoder = StreamDecoder()
    assert log.line_events() == [*decoder.feed(plain.stdout), *decoder.close()]


async def test_events_arrive_in_batches_per_stdout_chunk(make_fake: FakeClaudeFactory) -> None:
    lines = b"".join(
        json.dumps(
            {
                "type": "assistant",
                "message": {"role": "assistant", "content": [{"type": "text", "text": f"{i}"}]},
            }
        ).encode()
        + b"\n"
        for i in range(50)
    )
    # 50 frames printed in one write: they reach the engine as one chunk or a few.
    fake = make_fake(turn(init(), raw(lines), result("ok")))
    log = EventLog()
    res = await run(fake.command("go"), log)
    assert res.outcome.kind is TurnKind.CLAIMED_DONE
    assert res.outcome.events == 52
    line_batches = [b for b in log.batches if any(isinstance(e, AssistantMessage) for e in b)]
    assert max(len(b) for b in line_batches) > 1
    assert len(line_batches) < 50
    assert log.replayed_outcome() == res.outcome


async def test_many_flushed_frames_are_all_delivered_in_order(
    make_fake: FakeClaudeFactory,
) -> None:
    fake = make_fake(turn(init(), *(text(f"step {i}") for i in range(50)), result("ok")))
    log = EventLog()
    res = await run(fake.command("go"), log)
    assert res.outcome.kind is TurnKind.CLAIMED_DONE
    seen = [
        block.text  # type: ignore[union-attr]
        for e in log.line_events()
        if isinstance(e, AssistantMessage)
        for block in e.content
    ]
    assert seen == [f"step {i}" for i in range(50)]
    assert sum(len(b) for b in log.batches) == len(log.events)


# --------------------------------------------------------------------------- stdin and env


@pytest.mark.parametrize(
    "prompt",
    [
        pytest.param("-x marks the spot", id="leading-dash"),
        pytest.param("line one\0line two", id="nul-byte"),
        pytest.param("long " * (PROMPT_ARGV_LIMIT // 5 + 10), id="over-100KiB"),
    ],
)
async def test_prompt_on_stdin_reaches_the_cli_and_stdin_is_closed(
    prompt: str, make_fake: FakeClaudeFactory
) -> None:
    fake = make_fake(turn(init(), result("ok")))
    command = fake.command(prompt)
    assert command.stdin_data() is not None
    with trio.fail_after(10):
        # The fake reads stdin to EOF: had stdin been left open, this would hang.
        res = await run(command)
    assert res.outcome.kind is TurnKind.CLAIMED_DONE
    assert res.outcome.cause is Cause.COMPLETED
    [invocation] = fake.invocations()
    assert invocation["stdin"] == prompt
    assert invocation["prompt"] == prompt
    assert prompt not in invocation["argv"]


async def test_prompt_in_argv_and_stdin_is_dev_null(
    make_fake: FakeClaudeFactory, tmp_path: Path
) -> None:
    fake = make_fake(turn(init(), bash("readlink /proc/self/fd/0 > stdin.txt"), result("ok")))
    res = await run(fake.command("plain prompt", cwd=tmp_path))
    assert res.outcome.kind is TurnKind.CLAIMED_DONE
    [invocation] = fake.invocations()
    assert invocation["stdin"] is None
    assert invocation["argv"][:2] == ["-p", "plain prompt"]
    # The fake's Bash child inherits the CLI's stdin.
    assert (tmp_path / "stdin.txt").read_text().strip() == "/dev/null"


async def test_claudecode_never_reaches_the_cli(
    make_fake: FakeClaudeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLAUDECODE", "1")
    monkeypatch.setenv("CLAUDE_CODE_ENTRYPOINT", "cli")
    fake = make_fake(turn(init(), result("ok")), turn(init(), result("ok")))
    res = await run(fake.command("one"))
    assert res.outcome.kind is TurnKind.CLAIMED_DONE
    res = await run(fake.command("two", env={"CLAUDECODE": "1", "ANTHROPIC_API_KEY": "k"}))
    assert res.outcome.kind is TurnKind.CLAIMED_DONE
    first, second = fake.invocations()
    for invocation in (first, second):
        assert "CLAUDECODE" not in invocation["env"]
        assert invocation["env"]["CLAUDE_CODE_ENTRYPOINT"] == "cli"  # the rest is inherited
    assert second["env"]["ANTHROPIC_API_KEY"] == "k"


async def test_environ_replaces_our_environment_as_the_cli_base(
    make_fake: FakeClaudeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NEXO_TEST_AMBIENT", "ambient")
    fake = make_fake(turn(init(), result("ok")), turn(init(), result("ok")))
    base = {
        "PATH": os.environ["PATH"],
        "NEXO_TEST_BASE": "base",
        "NEXO_TEST_OVERRIDDEN": "base",
        "CLAUDECODE": "1",
    }
    command = fake.command("one", env={"NEXO_TEST_OVERRIDDEN": "override"})
    res = await run(command, environ=base)
    assert res.outcome.kind is TurnKind.CLAIMED_DONE
    # Without ``environ``: our environment as it is when the turn starts.
    monkeypatch.setenv("NEXO_TEST_AMBIENT", "changed")
    res = await run(fake.command("two"))
    assert res.outcome.kind is TurnKind.CLAIMED_DONE
    first, second = (invocation["env"] for invocation in fake.invocations())
    assert first["NEXO_TEST_BASE"] == "base"
    assert first["NEXO_TEST_OVERRIDDEN"] == "override"  # the command's overrides still apply
    assert "NEXO_TEST_AMBIENT" not in first  # nothing of ours leaks in
    assert "CLAUDECODE" not in first  # dropped from any base
    assert first["NEXO_FAKE_CLAUDE_STATE"] == str(fake.state_dir)
    assert first["NEXO_TRIO_TURN"]  # the turn marker is the engine's, whatever the base
    assert second["NEXO_TEST_AMBIENT"] == "changed"
    assert "NEXO_TEST_BASE" not in second
    assert base["CLAUDECODE"] == "1", "the caller's mapping is not modified"


# --------------------------------------------------------------------------- sessions


async def test_resume_continues_the_session_and_reports_the_per_run_cost(
    make_fake: FakeClaudeFactory,
) -> None:
    fake = make_fake(
        turn(init(), text("first"), result("first", cost_usd=0.25)),
        turn(init(), text("second"), result("second", cost_usd=0.5)),
    )
    first = await run(fake.command("start"))
    assert first.outcome.kind is TurnKind.CLAIMED_DONE
    sid = first.outcome.session_id
    assert sid is not None
    assert first.outcome.cost_usd == pytest.approx(0.25)

    second = await run(fake.command("go on", resume=sid))
    out = second.outcome
    assert out.kind is TurnKind.CLAIMED_DONE
    assert out.session_id == sid
    assert out.final_text == "second"
    assert out.cumulative_cost_usd == pytest.approx(0.75)  # total_cost_usd carries over
    assert out.cost_usd == pytest.approx(0.5)  # ... the turn's own cost does not
    assert f"--resume={sid}" in second.argv
    assert fake.sessions()[sid]["prompts"] == ["start", "go on"]
    assert [i["resumed"] for i in fake.invocations()] == [False, True]


async def test_a_chosen_session_id_is_used(make_fake: FakeClaudeFactory) -> None:
    sid = str(uuid.uuid4())
    fake = make_fake(turn(init(), result("ok")))
    res = await run(fake.command("go", session_id=sid))
    assert res.outcome.kind is TurnKind.CLAIMED_DONE
    assert res.outcome.session_id == sid
    assert sid in fake.sessions()


@pytest.mark.parametrize(
    ("resume", "message"),
    [
        pytest.param(str(uuid.uuid4()), "No conversation found", id="unknown-uuid"),
        pytest.param("not-a-session", "--resume requires a valid session", id="not-a-uuid"),
    ],
)
async def test_resume_of_an_invalid_session_is_session_invalid(
    resume: str, message: str, make_fake: FakeClaudeFactory
) -> None:
    fake = make_fake(turn(init(), result("never played")))
    res = await run(fake.command("go on", resume=resume))
    out = res.outcome
    assert out.kind is TurnKind.CONTINUE
    assert out.cause is Cause.SESSION_INVALID
    assert out.session_invalid
    assert message in (out.reason or "")
    assert out.exit_code == 1
    assert message in res.stderr_tail
    assert fake.sessions() == {}
