"""The fake claude in stream-json input mode with the stdio permission protocol, the way
Claude Code 2.1.332 runs it (DESIGN.md §4; tests/fixtures/claude-cli-2.1.332/stdio-control):
the conversation on stdin, permission asked with ``can_use_tool`` control requests, an
interrupt that ends the turn, and no exit before stdin ends. Real subprocesses, driven by
hand (not by the library), so the fake is checked against the CLI's protocol itself."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import psutil
import pytest
import trio

from nexo_trio.testing.scenario import (
    FakeClaude,
    Step,
    bash,
    hang,
    init,
    result,
    sleep,
    text,
    turn,
)

ARGV = (
    "-p",
    "--input-format",
    "stream-json",
    "--output-format",
    "stream-json",
    "--verbose",
    "--permission-prompt-tool=stdio",
)
STEP_TIMEOUT = 5.0
"""No single wait of these tests takes longer (the fake itself is bounded by 20 s)."""

Frame = dict[str, Any]


def initialize(request_id: str = "nexo-1") -> Frame:
    return {
        "type": "control_request",
        "request_id": request_id,
        "request": {"subtype": "initialize", "hooks": None},
    }


def user(content: Any) -> Frame:
    return {
        "type": "user",
        "message": {"role": "user", "content": content},
        "parent_tool_use_id": None,
        "session_id": "default",
    }


def interrupt(request_id: str = "nexo-2") -> Frame:
    return {
        "type": "control_request",
        "request_id": request_id,
        "request": {"subtype": "interrupt"},
    }


def answer(ask: Frame, body: Frame) -> Frame:
    return {
        "type": "control_response",
        "response": {"subtype": "success", "request_id": ask["request_id"], "response": body},
    }


def is_ask(frame: Frame) -> bool:
    return frame.get("type") == "control_request"


def is_result(frame: Frame) -> bool:
    return frame.get("type") == "result"


def response_to(request_id: str) -> Callable[[Frame], bool]:
    def match(frame: Frame) -> bool:
        return (
            frame.get("type") == "control_response"
            and frame.get("response", {}).get("request_id") == request_id
        )

    return match


def tool_results(frames: Sequence[Frame]) -> list[Frame]:
    return [
        block
        for f in frames
        if f.get("type") == "user" and not f.get("isReplay")
        for block in f.get("message", {}).get("content", [])
        if isinstance(block, dict) and block.get("type") == "tool_result"
    ]


def replays(frames: Sequence[Frame]) -> list[Any]:
    return [f["message"]["content"] for f in frames if f.get("isReplay")]


class Cli:
    """One fake claude process: what we write on its stdin, the frames it printed."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.frames: list[Frame] = []
        self._buffer = b""
        self._seen = 0
        self._stdin_open = True

    async def send(self, *messages: Frame) -> None:
        await self.send_raw(b"".join(json.dumps(m).encode() + b"\n" for m in messages))

    async def send_raw(self, data: bytes) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.send_all(data)

    async def _read(self) -> bool:
        assert self.process.stdout is not None
        chunk = await self.process.stdout.receive_some(65536)
        if not chunk:
            return False
        self._buffer += chunk
        *lines, self._buffer = self._buffer.split(b"\n")
        self.frames += [json.loads(line) for line in lines if line.strip()]
        return True

    async def frame(self, match: Callable[[Frame], bool]) -> Frame:
        """The next frame (after the last one returned) that ``match`` accepts."""
        with trio.fail_after(STEP_TIMEOUT):
            while True:
                while self._seen < len(self.frames):
                    frame = self.frames[self._seen]
                    self._seen += 1
                    if match(frame):
                        return frame
                if not await self._read():
                    kinds = [f.get("type") for f in self.frames]
                    raise AssertionError(f"stdout ended without the frame; got {kinds}")

    async def close_stdin(self) -> None:
        assert self.process.stdin is not None
        if self._stdin_open:
            self._stdin_open = False
            await self.process.stdin.aclose()

    async def still_running_after(self, seconds: float) -> bool:
        await trio.sleep(seconds)
        return self.process.poll() is None

    async def exit_code(self) -> int:
        """Close stdin, read stdout to its end, and wait for the exit status."""
        await self.close_stdin()
        with trio.fail_after(STEP_TIMEOUT):
            while await self._read():
                pass
            return await self.process.wait()


@asynccontextmanager
async def started(fake: FakeClaude, cwd: Path, *flags: str) -> AsyncIterator[Cli]:
    await trio.Path(cwd).mkdir(parents=True, exist_ok=True)
    with (fake.directory / "stderr.txt").open("ab") as err:
        process = await trio.lowlevel.open_process(
            [str(fake.binary), *ARGV, *flags],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
            cwd=str(cwd),
            env={**os.environ, **fake.env},
        )
    try:
        yield Cli(process)
    finally:
        if process.returncode is None:
            process.kill()
        with trio.CancelScope(shield=True):
            await process.wait()
            if process.stdin is not None:
                await process.stdin.aclose()
            if process.stdout is not None:
                await process.stdout.aclose()


def live_members(group: int) -> list[int]:
    """The processes of a process group that are not dead yet (a killed child may stay a
    zombie a moment until its new parent reaps it)."""
    members = []
    for process in psutil.process_iter(["pid", "status"]):
        with contextlib.suppress(psutil.Error):
            if os.getpgid(process.pid) == group and process.status() != psutil.STATUS_ZOMBIE:
                members.append(process.pid)
    return members


def make_fake(tmp_path: Path, *steps: Step, prompt_contains: str | None = None) -> FakeClaude:
    return FakeClaude.create(
        tmp_path / "fake", [turn(*steps, prompt_contains=prompt_contains)], max_lifetime=20
    )


async def test_initialize_is_answered_and_the_prompt_message_picks_the_turn(
    tmp_path: Path,
) -> None:
    fake = FakeClaude.create(
        tmp_path / "fake",
        [
            turn(init(), result("alpha turn"), prompt_contains="alpha"),
            turn(init(), result("beta turn"), prompt_contains="beta"),
        ],
        max_lifetime=20,
    )
    async with started(fake, tmp_path / "ws") as cli:
        await cli.send(initialize(), user([{"type": "text", "text": "please do beta now"}]))
        response = await cli.frame(response_to("nexo-1"))
        assert response["response"]["subtype"] == "success"
        assert {"commands", "models"} <= set(response["response"]["response"])
        started_frame = await cli.frame(lambda f: f.get("subtype") == "init")
        final = await cli.frame(is_result)
        assert (final["subtype"], final["result"]) == ("success", "beta turn")
        assert final["session_id"] == started_frame["session_id"]
        assert await cli.exit_code() == 0
    assert replays(cli.frames) == []  # no --replay-user-messages: nothing echoed
    [record] = fake.invocations()
    assert record["prompt"] == "please do beta now"
    assert (record["turn"], record["input_format"], record["stdin"]) == (1, "stream-json", None)


async def test_an_allowed_bash_step_runs(tmp_path: Path) -> None:
    fake = make_fake(tmp_path, init(), bash("echo hi > a.txt"), text("Done."), result())
    async with started(fake, tmp_path / "ws") as cli:
        await cli.send(initialize(), user("Write a.txt"))
        tool_use = await cli.frame(lambda f: f.get("type") == "assistant")
        ask = await cli.frame(is_ask)
        block = tool_use["message"]["content"][0]
        assert ask["request"] == {
            "subtype": "can_use_tool",
            "tool_name": "Bash",
            "display_name": "Bash",
            "input": {"command": "echo hi > a.txt"},
            "tool_use_id": block["id"],
            "permission_suggestions": [],
            "description": "echo hi > a.txt",
        }
        assert not (tmp_path / "ws" / "a.txt").exists()  # not before the answer
        await cli.send(answer(ask, {"behavior": "allow"}))
        final = await cli.frame(is_result)
        assert (final["subtype"], final["is_error"], final["permission_denials"]) == (
            "success",
            False,
            [],
        )
        assert await cli.exit_code() == 0
    assert (tmp_path / "ws" / "a.txt").read_text() == "hi\n"
    assert [r["is_error"] for r in tool_results(cli.frames)] == [False]
    [entry] = fake.permission_log()
    assert (entry["outcome"], entry["request_id"]) == ("allow", ask["request_id"])


async def test_an_updated_input_runs_the_changed_command(tmp_path: Path) -> None:
    fake = make_fake(tmp_path, init(), bash("echo bad > out.txt"), result())
    async with started(fake, tmp_path / "ws") as cli:
        await cli.send(initialize(), user("Write out.txt"))
        ask = await cli.frame(is_ask)
        changed = {"command": "echo good > out.txt"}
        await cli.send(answer(ask, {"behavior": "allow", "updatedInput": changed}))
        await cli.frame(is_result)
        assert await cli.exit_code() == 0
    assert (tmp_path / "ws" / "out.txt").read_text() == "good\n"
    assert fake.permission_log()[0]["answer"] == changed


async def test_a_deny_is_an_error_tool_result_and_a_denial(tmp_path: Path) -> None:
    fake = make_fake(tmp_path, init(), bash("rm -rf x"), text("Denied."), result())
    async with started(fake, tmp_path / "ws") as cli:
        await cli.send(initialize(), user("Remove x"))
        ask = await cli.frame(is_ask)
        await cli.send(answer(ask, {"behavior": "deny", "message": "no rm here"}))
        final = await cli.frame(is_result)
        assert await cli.exit_code() == 0
    [denied] = tool_results(cli.frames)
    assert (denied["is_error"], denied["content"]) == (True, "no rm here")
    assert final["permission_denials"] == [
        {
            "tool_name": "Bash",
            "tool_use_id": ask["request"]["tool_use_id"],
            "tool_input": {"command": "rm -rf x"},
        }
    ]
    assert [(e["outcome"], e["answer"]) for e in fake.permission_log()] == [("deny", "no rm here")]


async def test_an_error_response_fails_the_tool_without_a_denial(tmp_path: Path) -> None:
    fake = make_fake(tmp_path, init(), bash("touch never.txt"), result())
    async with started(fake, tmp_path / "ws") as cli:
        await cli.send(initialize(), user("Touch"))
        ask = await cli.frame(is_ask)
        error = {"subtype": "error", "request_id": ask["request_id"], "error": "gate down"}
        await cli.send({"type": "control_response", "response": error})
        final = await cli.frame(is_result)
        assert await cli.exit_code() == 0
    [failed] = tool_results(cli.frames)
    assert failed["is_error"] is True
    assert "gate down" in failed["content"]
    assert final["permission_denials"] == []
    assert not (tmp_path / "ws" / "never.txt").exists()
    assert fake.permission_log()[0]["outcome"] == "error"


@pytest.mark.parametrize("step", [sleep(30), hang()], ids=["sleep", "hang"])
async def test_an_interrupt_ends_a_long_step_at_once(tmp_path: Path, step: Step) -> None:
    fake = make_fake(tmp_path, init(), text("Working."), step, text("Never."), result())
    began = trio.current_time()
    async with started(fake, tmp_path / "ws") as cli:
        await cli.send(initialize(), user("Take long"))
        await cli.frame(lambda f: f.get("type") == "assistant")
        await cli.send(interrupt("nexo-2"))
        response = await cli.frame(response_to("nexo-2"))
        assert response["response"]["subtype"] == "success"
        final = await cli.frame(is_result)
        assert (final["subtype"], final["is_error"], final["errors"]) == (
            "error_during_execution",
            True,
            [],
        )
        assert final["session_id"]
        assert await cli.still_running_after(0.3)  # no exit before stdin ends
        assert await cli.exit_code() == 1
    assert trio.current_time() - began < 5
    texts = [f for f in cli.frames if f.get("type") == "assistant"]
    assert len(texts) == 1  # "Never." was not printed


async def test_an_interrupt_kills_the_running_bash_command(tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    fake = make_fake(
        tmp_path, init(), bash("echo $$ > sh.pid; touch started; sleep 30; touch done"), result()
    )
    async with started(fake, workspace) as cli:
        await cli.send(initialize(), user("Sleep"))
        await cli.send(answer(await cli.frame(is_ask), {"behavior": "allow"}))
        with trio.fail_after(STEP_TIMEOUT):
            while not (workspace / "started").exists():  # noqa: ASYNC110 - the tool's file
                await trio.sleep(0.02)
        await cli.send(interrupt())
        final = await cli.frame(is_result)
        assert final["subtype"] == "error_during_execution"
        assert await cli.exit_code() == 1
    group = int((workspace / "sh.pid").read_text())
    with trio.fail_after(STEP_TIMEOUT):  # the command's whole process group is gone
        while live_members(group):  # noqa: ASYNC110 - polling the process table
            await trio.sleep(0.02)
    assert not (workspace / "done").exists()


async def test_an_interrupt_cuts_a_pending_permission_ask_short(tmp_path: Path) -> None:
    fake = make_fake(tmp_path, init(), bash("touch never.txt"), result())
    async with started(fake, tmp_path / "ws") as cli:
        await cli.send(initialize(), user("Touch"))
        await cli.frame(is_ask)
        await cli.send(interrupt())
        final = await cli.frame(is_result)
        assert (final["subtype"], final["is_error"]) == ("error_during_execution", True)
        assert await cli.exit_code() == 1
    assert not (tmp_path / "ws" / "never.txt").exists()
    assert fake.permission_log()[0]["outcome"] == "interrupted"


async def test_an_interrupt_written_with_the_prompt_ends_the_turn_before_its_steps(
    tmp_path: Path,
) -> None:
    fake = make_fake(tmp_path, init(), sleep(0.5), text("Never."), result())
    async with started(fake, tmp_path / "ws") as cli:
        await cli.send(initialize(), user("Go"), interrupt())
        final = await cli.frame(is_result)
        assert final["subtype"] == "error_during_execution"
        assert await cli.exit_code() == 1
    assert not [f for f in cli.frames if f.get("type") == "assistant"]


async def test_a_mid_turn_message_is_replayed_when_taken_and_logged(tmp_path: Path) -> None:
    fake = make_fake(tmp_path, init(), bash("echo one"), text("After."), result())
    async with started(fake, tmp_path / "ws", "--replay-user-messages") as cli:
        await cli.send(initialize(), user("Start"))
        ask = await cli.frame(is_ask)
        await cli.send(user("OPERATOR: also b"), answer(ask, {"behavior": "allow"}))
        await cli.frame(is_result)
        assert await cli.exit_code() == 0
    order = [
        "replay" if f.get("isReplay") else f.get("subtype") or f["type"]
        for f in cli.frames
        if f["type"] != "control_response"
    ]
    assert order == [
        "init",
        "replay",  # the prompt, right after the init frame
        "assistant",  # the tool_use
        "control_request",
        "user",  # the tool_result
        "replay",  # the operator's message, before the next request to the model
        "assistant",
        "success",
    ]
    assert replays(cli.frames) == ["Start", "OPERATOR: also b"]
    echo = next(f for f in cli.frames if f.get("isReplay"))
    assert echo["session_id"] == cli.frames[-1]["session_id"]
    assert echo["parent_tool_use_id"] is None
    assert echo["uuid"]
    [message] = fake.messages()
    assert (message["text"], message["taken"], message["replayed"]) == (
        "OPERATOR: also b",
        True,
        True,
    )


async def test_after_the_result_it_waits_for_stdin_to_end(tmp_path: Path) -> None:
    fake = make_fake(tmp_path, init(), text("Done."), result())
    async with started(fake, tmp_path / "ws") as cli:
        await cli.send(initialize(), user("Hi"))
        await cli.frame(is_result)
        assert await cli.still_running_after(0.5)
        await cli.send(user("too late"))  # after the result: not taken
        await cli.send_raw(b"this is not json\n")
        assert await cli.still_running_after(0.1)
        assert await cli.exit_code() == 0
    assert [(m["text"], m["taken"]) for m in fake.messages()] == [("too late", False)]
    assert "not JSON" in (fake.directory / "stderr.txt").read_text()


async def test_a_stdin_that_ends_early_lets_the_turn_finish(tmp_path: Path) -> None:
    fake = make_fake(tmp_path, init(), sleep(0.2), text("Done."), result("Finished."))
    async with started(fake, tmp_path / "ws") as cli:
        await cli.send(initialize(), user("Hi"))
        await cli.close_stdin()
        final = await cli.frame(is_result)
        assert (final["subtype"], final["result"]) == ("success", "Finished.")
        assert await cli.exit_code() == 0


async def test_unknown_control_requests_get_an_error_and_known_ones_an_answer(
    tmp_path: Path,
) -> None:
    fake = make_fake(tmp_path, init(), sleep(0.2), result())
    async with started(fake, tmp_path / "ws") as cli:
        await cli.send(initialize(), user("Hi"))
        await cli.frame(lambda f: f.get("subtype") == "init")
        unknown = {"subtype": "frobnicate"}
        mode = {"subtype": "set_permission_mode", "mode": "acceptEdits"}
        await cli.send(
            {"type": "control_request", "request_id": "nexo-2", "request": unknown},
            {"type": "control_request", "request_id": "nexo-3", "request": mode},
        )
        refused = (await cli.frame(response_to("nexo-2")))["response"]
        assert refused["subtype"] == "error"
        assert "frobnicate" in refused["error"]
        accepted = (await cli.frame(response_to("nexo-3")))["response"]
        assert (accepted["subtype"], accepted["response"]) == ("success", {"mode": "acceptEdits"})
        status = await cli.frame(lambda f: f.get("subtype") == "status")
        assert status["permissionMode"] == "acceptEdits"
        await cli.frame(is_result)
        assert await cli.exit_code() == 0
