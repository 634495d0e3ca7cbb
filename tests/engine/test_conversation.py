"""``run_turn`` on the stdio transport (``engine/conversation.py``) against the fake claude
in stream-json mode: the asks answered by the conversation's answerer, stdin closed at the
result, a failing answerer denied, stops that interrupt first (and escalate when the CLI does
not end), and operator messages mid-turn (delivered once echoed; one that races the result
is not)."""

from __future__ import annotations

import json
import stat
import sys
from pathlib import Path
from typing import Any

import pytest
import trio
from trio.testing import wait_all_tasks_blocked

from nexo_trio.core.command import ClaudeCommand
from nexo_trio.core.events import (
    AssistantMessage,
    Cancelled,
    ControlRequest,
    ProcessExited,
    Spawned,
    StdoutClosed,
)
from nexo_trio.core.outcome import Cause, TurnKind
from nexo_trio.core.permission import Decision, allow, deny
from nexo_trio.core.stdio_control import Reply, StdioControl, ToolAsk
from nexo_trio.core.turn import INITIAL_STATE, TurnState, classify, reduce, reduce_all
from nexo_trio.engine import TurnResult, run_turn
from nexo_trio.engine.conversation import Conversation
from nexo_trio.testing.scenario import bash, hang, init, result, sleep, text, turn
from nexo_trio.wire.stdio_frames import encode_message
from nexo_trio.wire.stream_json import StreamDecoder
from tests.engine.conftest import FakeClaudeFactory, is_gone

TIMEOUT = 20.0


def answering(decide: Any) -> Any:
    """An answerer deciding with ``decide(ask) -> Decision`` (no gate, no record)."""

    async def answer(control: StdioControl, ask: ToolAsk) -> bytes:
        decision: Decision = decide(ask)
        return encode_message(control.answer(ask, decision))

    return answer


async def converse(command: ClaudeCommand, conversation: Conversation, **kw: Any) -> TurnResult:
    kw.setdefault("timeout", TIMEOUT)
    kw.setdefault("kill_grace", 1.0)
    return await run_turn(command, conversation=conversation, **kw)


async def test_an_allowed_call_runs_and_stdin_closes_at_the_result(
    make_fake: FakeClaudeFactory, tmp_path: Path
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    fake = make_fake(turn(init(), bash("echo hi > hello.txt"), text("Done."), result("Done.")))
    asked: list[ToolAsk] = []

    def decide(ask: ToolAsk) -> Decision:
        asked.append(ask)
        return allow("test")

    conversation = Conversation("Create hello.txt", answering(decide))
    res = await converse(
        fake.command("Create hello.txt", cwd=work, stream_input=True), conversation
    )
    assert res.outcome.kind is TurnKind.CLAIMED_DONE, res.outcome
    assert res.outcome.exit_code == 0
    assert res.stop_actions == ()
    assert (work / "hello.txt").read_text() == "hi\n"
    (ask,) = asked
    assert (ask.tool_name, ask.input) == ("Bash", {"command": "echo hi > hello.txt"})
    (invocation,) = fake.invocations()
    assert invocation["prompt"] == "Create hello.txt"
    assert "--permission-prompt-tool=stdio" in invocation["argv"]
    assert [r.subtype for r in conversation.responses] == ["initialize"]
    assert conversation.asks == 1


async def test_an_answerer_that_fails_is_a_deny(
    make_fake: FakeClaudeFactory, tmp_path: Path
) -> None:
    fake = make_fake(turn(init(), bash("touch no.txt"), text("Denied."), result("Done.")))

    async def broken(control: StdioControl, ask: ToolAsk) -> bytes:
        raise RuntimeError("the gate broke")

    res = await converse(
        fake.command("p", cwd=tmp_path, stream_input=True), Conversation("p", broken)
    )
    assert res.outcome.kind is TurnKind.CLAIMED_DONE
    assert not (tmp_path / "no.txt").exists()
    (exchange,) = fake.permission_log()
    assert exchange["outcome"] == "deny"
    assert "gate error" in exchange["answer"]


async def test_replies_without_the_decider_are_reported(
    make_fake: FakeClaudeFactory, tmp_path: Path
) -> None:
    """An ask that comes while the turn is ending is denied by the protocol's rules and
    reported for the record; so is every other reply made without the decider."""
    fake = make_fake(turn(init(), bash("touch x.txt"), result("Done.")))
    replies: list[Reply] = []

    async def on_reply(reply: Reply) -> None:
        replies.append(reply)

    conversation = Conversation("p", answering(lambda ask: allow()), on_reply=on_reply)
    conversation.control.ending = True  # as after an interrupt: asks are denied at once
    res = await converse(fake.command("p", cwd=tmp_path, stream_input=True), conversation)
    assert res.outcome.kind is TurnKind.CLAIMED_DONE
    assert not (tmp_path / "x.txt").exists()
    assert [(r.tool_name, r.why) for r in replies] == [("Bash", "the turn is ending")]


async def test_a_stop_interrupts_and_the_turn_ends_with_its_session(
    make_fake: FakeClaudeFactory, tmp_path: Path
) -> None:
    fake = make_fake(turn(init(), text("Working."), hang()))
    stop = trio.Event()
    conversation = Conversation("p", answering(lambda ask: allow()))

    async def stop_once_working(state: Any, batch: Any) -> None:
        if any(isinstance(e, AssistantMessage) for e in batch):
            stop.set()  # the turn runs: its hang comes next

    res = await converse(
        fake.command("p", cwd=tmp_path, stream_input=True),
        conversation,
        stop=stop,
        kill_grace=5.0,
        on_events=stop_once_working,
    )
    assert res.outcome.kind is TurnKind.CANCELLED
    assert res.outcome.cause is Cause.CANCELLED
    assert res.stop_actions == ("interrupt",)
    assert res.outcome.exit_code == 1
    assert res.state.result is not None
    assert res.state.result.subtype == "error_during_execution"
    (invocation,) = fake.invocations()
    assert res.outcome.session_id == invocation["session_id"]
    assert res.duration_s < 5.0
    assert [r.subtype for r in conversation.responses] == ["initialize", "interrupt"]


async def test_the_deadline_interrupts_too(make_fake: FakeClaudeFactory, tmp_path: Path) -> None:
    fake = make_fake(turn(init(), sleep(30)))
    res = await converse(
        fake.command("p", cwd=tmp_path, stream_input=True),
        Conversation("p", answering(lambda ask: allow())),
        timeout=1.0,
        kill_grace=5.0,
    )
    assert res.outcome.kind is TurnKind.CONTINUE
    assert res.outcome.cause is Cause.TIMEOUT
    assert res.outcome.reason == "turn timeout after 1s"
    assert res.stop_actions == ("interrupt",)
    assert res.outcome.session_id is not None


async def test_a_cli_deaf_to_the_interrupt_gets_the_signals(tmp_path: Path) -> None:
    """A CLI that reads nothing: the interrupt goes unanswered for ``kill_grace``, then the
    usual SIGTERM ends it."""
    script = tmp_path / "deaf"
    script.write_text("#!/bin/sh\nexec sleep 60\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    command = ClaudeCommand(prompt="p", binary=str(script), stream_input=True)
    res = await converse(
        command,
        Conversation("p", answering(lambda ask: allow())),
        timeout=0.5,
        kill_grace=0.5,
    )
    assert res.outcome.cause is Cause.TIMEOUT
    assert res.stop_actions[:2] == ("interrupt", "SIGTERM")
    assert res.pid is not None
    assert is_gone(res.pid)


async def test_a_message_mid_turn_is_delivered_once_echoed(
    make_fake: FakeClaudeFactory, tmp_path: Path
) -> None:
    fake = make_fake(turn(init(), text("One."), sleep(1.0), text("Two."), result("Done.")))
    delivered: list[str] = []

    async def on_delivered(message: str) -> None:
        delivered.append(message)

    conversation = Conversation("p", answering(lambda ask: allow()), on_delivered=on_delivered)

    said: list[str] = []

    async def say_once_working(state: Any, batch: Any) -> None:
        # "One." came: the fake sleeps, then takes the message before its next frame.
        if not said and any(isinstance(e, AssistantMessage) for e in batch):
            said.append("OPERATOR: hurry")
            assert conversation.say(said[0])

    res = await converse(
        fake.command("p", cwd=tmp_path, stream_input=True),
        conversation,
        on_events=say_once_working,
    )
    assert res.outcome.kind is TurnKind.CLAIMED_DONE
    assert delivered == ["OPERATOR: hurry"]
    assert conversation.undelivered == []
    (message,) = fake.messages()
    assert (message["text"], message["taken"], message["replayed"]) == (
        "OPERATOR: hurry",
        True,
        True,
    )
    assert not conversation.say("too late")  # the turn is over


CLI_HEAD = """\
import json, sys
def out(obj):
    sys.stdout.write(json.dumps(obj) + "\\n"); sys.stdout.flush()
lines = iter(sys.stdin)
next(lines); next(lines)  # initialize, the prompt
out({"type": "system", "subtype": "init", "session_id": "s1"})
"""
"""The start of each scripted CLI below: it takes our opening lines and says its init."""


def scripted_cli(tmp_path: Path, name: str, script: str) -> Path:
    """An executable CLI playing ``script`` (Python)."""
    path = tmp_path / name
    path.write_text(f"#!{sys.executable}\n{script}")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


RACING_CLI = (
    CLI_HEAD
    + """\
out({"type": "assistant", "session_id": "s1", "message": {"id": "m1", "role": "assistant",
     "content": [{"type": "text", "text": "One."}]}})
next(lines)  # the operator's message: it came too late for this query
out({"type": "result", "subtype": "success", "is_error": False, "result": "Done.",
     "session_id": "s1"})
for _ in lines:  # it would run the message as a query of its own
    pass
"""
)


async def test_a_message_that_races_the_result_is_undelivered_and_the_cli_stopped(
    tmp_path: Path,
) -> None:
    """Written while the CLI ends its query (it prints its result without taking it): it
    is reported undelivered (the goal keeps it for the next turn), and the CLI, which
    would run it as a query of its own, is stopped at once."""
    script = scripted_cli(tmp_path, "racing", RACING_CLI)
    conversation = Conversation("p", answering(lambda ask: allow()))

    async def on_events(state: Any, batch: Any) -> None:
        if any(isinstance(e, AssistantMessage) for e in batch):
            assert conversation.say("late")

    res = await run_turn(
        ClaudeCommand(prompt="p", binary=str(script), stream_input=True),
        timeout=TIMEOUT,
        kill_grace=1.0,
        conversation=conversation,
        on_events=on_events,
    )
    assert conversation.delivered == []
    assert conversation.undelivered == ["late"]
    assert conversation.raced
    assert res.stop_actions[0] == "a mid-turn message came after the result"
    assert res.outcome.kind is TurnKind.CLAIMED_DONE  # the result stands
    assert res.outcome.final_text == "Done."


async def test_a_conversation_needs_a_stream_input_command() -> None:
    with pytest.raises(ValueError, match="stream_input"):
        await run_turn(
            ClaudeCommand(prompt="p"),
            timeout=1.0,
            conversation=Conversation("p", answering(lambda ask: deny("x"))),
        )


# --------------------------------------------------------------------------- recordings

RECORDINGS = Path(__file__).parents[1] / "fixtures" / "claude-cli-2.1.332" / "stdio-control"


class Stdin(trio.abc.SendStream):
    """The CLI's stdin, kept: every line written, and whether it was closed."""

    def __init__(self) -> None:
        self.lines: list[dict[str, Any]] = []
        self.closed = False

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await trio.lowlevel.checkpoint()
        self.lines += [json.loads(line) for line in bytes(data).splitlines() if line.strip()]

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        self.closed = True
        await trio.lowlevel.checkpoint()


def recording(name: str) -> list[tuple[str, dict[str, Any]]]:
    rows = [json.loads(line) for line in (RECORDINGS / name).read_text().splitlines()]
    return [(row["dir"], row["msg"]) for row in rows]


async def replay(
    name: str, *, interrupt_after_answer: bool = False, say_after_answer: str | None = None
) -> tuple[Conversation, Stdin, list[dict[str, Any]], TurnState]:
    """Play a recorded conversation's CLI side (``out``) into a Conversation: what it writes
    (answers allow), the recorded ``in`` lines, and the reducer's state of the turn."""
    rows = recording(name)
    conversation = Conversation(rows[1][1]["message"]["content"], answering(lambda a: allow()))
    stdin = Stdin()
    decoder = StreamDecoder()
    state = reduce(INITIAL_STATE, Spawned(pid=1, argv=("claude",)))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conversation.serve, stdin)
        await wait_all_tasks_blocked()
        for direction, message in rows:
            if direction != "out":
                continue
            events = decoder.feed(json.dumps(message).encode() + b"\n")
            state = reduce_all(state, events)
            conversation.on_frames(events)
            await wait_all_tasks_blocked()  # the answers' tasks run, the writer writes
            if isinstance(events[0], ControlRequest) and interrupt_after_answer:
                state = reduce(state, Cancelled(reason="stop requested"))
                assert conversation.interrupt()
                await wait_all_tasks_blocked()
            if isinstance(events[0], ControlRequest) and say_after_answer is not None:
                assert conversation.say(say_after_answer)
                await wait_all_tasks_blocked()
        await wait_all_tasks_blocked()
        assert stdin.closed  # the writer closed it at the result
    recorded_in = [message for direction, message in rows if direction == "in"]
    return conversation, stdin, recorded_in, state


async def test_the_recorded_interrupt_replays_as_a_cancel_with_its_session() -> None:
    """Claude Code 2.1.332 interrupted mid-tool (recorded offline): we write what was
    written, line for line, and the turn reads as cancelled by us, its session kept."""
    conversation, stdin, recorded_in, state = await replay(
        "interrupt_mid_tool.frames.jsonl", interrupt_after_answer=True
    )
    assert stdin.lines == recorded_in
    assert [(r.subtype, r.error) for r in conversation.responses if r.subtype] == [
        ("initialize", None),
        ("interrupt", None),
    ]
    outcome = classify(reduce_all(state, [StdoutClosed(), ProcessExited.from_returncode(1)]))
    assert outcome.kind is TurnKind.CANCELLED
    assert state.result is not None
    assert outcome.session_id == state.result.session_id is not None


async def test_the_recorded_mid_turn_message_replays_as_delivered() -> None:
    """A message written after an answer (recorded offline): the CLI's echo of it comes
    before the result, so it is delivered; what we wrote equals what was written."""
    rows = recording("replayed_message.frames.jsonl")
    said = [m["message"]["content"] for d, m in rows if d == "in" and m["type"] == "user"][1]
    conversation, stdin, recorded_in, state = await replay(
        "replayed_message.frames.jsonl", say_after_answer=said
    )
    assert stdin.lines == recorded_in
    assert conversation.delivered == [said]
    assert conversation.undelivered == []
    assert state.result is not None
    assert state.result.subtype == "success"


WITHDRAWING_CLI = (
    CLI_HEAD
    + """\
out({"type": "control_request", "request_id": "ask-1", "request": {
     "subtype": "can_use_tool", "tool_name": "Bash", "input": {"command": "ls"}}})
out({"type": "control_cancel_request", "request_id": "ask-1"})
out({"type": "result", "subtype": "success", "is_error": False, "result": "Done.",
     "session_id": "s1"})
for _ in lines:
    pass
"""
)


async def test_an_ask_the_cli_withdraws_stops_being_decided(tmp_path: Path) -> None:
    script = scripted_cli(tmp_path, "withdrawing", WITHDRAWING_CLI)
    cancelled = trio.Event()

    async def slow(control: StdioControl, ask: ToolAsk) -> bytes:
        try:
            await trio.sleep_forever()
        finally:
            cancelled.set()
        raise AssertionError("unreachable")  # pragma: no cover

    res = await run_turn(
        ClaudeCommand(prompt="p", binary=str(script), stream_input=True),
        timeout=TIMEOUT,
        kill_grace=1.0,
        conversation=Conversation("p", slow),
    )
    assert cancelled.is_set()
    assert res.outcome.kind is TurnKind.CLAIMED_DONE
    assert res.outcome.exit_code == 0
    assert res.stop_actions == ()


GARBLING_CLI = (
    CLI_HEAD
    + """\
sys.stdout.write('{"type":"control_request","request_id":"ask-9","request":{"input":NaN}}\\n')
sys.stdout.flush()
for line in lines:  # the answer to ask-9, then the end of stdin
    answer = json.loads(line)
    if answer.get("type") == "control_response":
        print(json.dumps(answer), file=sys.stderr)
        out({"type": "result", "subtype": "success", "is_error": False, "result": "Done.",
             "session_id": "s1"})
"""
)


OVERSIZED_CLI = (
    CLI_HEAD
    + """\
out({"type": "control_request", "request_id": "ask-big", "request": {
    "subtype": "can_use_tool", "tool_name": "Write",
    "input": {"file_path": "/tmp/x", "content": "x" * 200_000}}})
for line in lines:  # the answer to ask-big, then the end of stdin
    answer = json.loads(line)
    if answer.get("type") == "control_response":
        print(json.dumps(answer), file=sys.stderr)
        out({"type": "result", "subtype": "success", "is_error": False, "result": "Done.",
             "session_id": "s1"})
"""
)


async def test_an_ask_past_the_line_cap_is_denied_and_recorded(tmp_path: Path) -> None:
    """An ask longer than the turn's line cap is skipped unread, but denied by the id read
    from its start (not left to the turn's timeout), and the deny goes to the recorder."""
    script = scripted_cli(tmp_path, "oversized", OVERSIZED_CLI)
    replies: list[Reply] = []

    async def on_reply(reply: Reply) -> None:
        replies.append(reply)

    res = await run_turn(
        ClaudeCommand(prompt="p", binary=str(script), stream_input=True),
        timeout=TIMEOUT,
        kill_grace=1.0,
        line_cap=64 * 1024,
        conversation=Conversation("p", answering(lambda ask: allow()), on_reply=on_reply),
    )
    assert res.outcome.kind is TurnKind.CLAIMED_DONE, res.outcome
    answer = json.loads(res.stderr_tail.strip().splitlines()[-1])
    assert answer["response"]["request_id"] == "ask-big"
    assert answer["response"]["response"]["behavior"] == "deny"
    assert "too large" in answer["response"]["response"]["message"]
    assert [(r.request_id, r.tool_name) for r in replies] == [("ask-big", "Write")]
    assert res.duration_s < 5


async def test_an_unreadable_ask_is_denied_not_left_hanging(tmp_path: Path) -> None:
    script = scripted_cli(tmp_path, "garbling", GARBLING_CLI)
    res = await run_turn(
        ClaudeCommand(prompt="p", binary=str(script), stream_input=True),
        timeout=TIMEOUT,
        kill_grace=1.0,
        conversation=Conversation("p", answering(lambda ask: allow())),
    )
    assert res.outcome.kind is TurnKind.CLAIMED_DONE, res.outcome
    assert res.outcome.malformed_lines == 1
    answer = json.loads(res.stderr_tail.strip().splitlines()[-1])
    assert answer["response"]["request_id"] == "ask-9"
    assert answer["response"]["response"]["behavior"] == "deny"
    assert res.duration_s < 5
