"""The stdio control protocol's rules (core/stdio_control.py) against the real CLI, offline
(issue 15 groundwork): a bare process driven by :class:`StdioControl`, before the engine
runs turns this way. Allow and deny, an updated input, an operator message mid-turn and an
interrupt, each as the CLI really takes it."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import pytest
import trio

from nexo_trio.core.permission import allow, deny
from nexo_trio.core.stdio_control import Reply, StdioControl, ToolAsk
from nexo_trio.testing.messages_api import (
    Reply as ApiReply,
)
from nexo_trio.testing.messages_api import (
    last_message_has_tool_result,
    nth,
    prompt_contains,
    text,
    tool_use,
)
from nexo_trio.wire.stdio_frames import encode_message
from tests.e2e.conftest import E2E

pytestmark = pytest.mark.real_claude

Decide = Callable[[ToolAsk], Any]


async def converse(
    e2e: E2E,
    prompt: str,
    decide: Decide,
    *,
    on_frame: Callable[[dict[str, Any], StdioControl], list[dict[str, Any]]] | None = None,
    during: Callable[[Callable[[dict[str, Any]], Any], StdioControl], Any] | None = None,
    timeout: float = 40,
) -> tuple[list[dict[str, Any]], StdioControl, int]:
    """Run the real CLI in stream-json input mode with the stdio permission tool; answer
    its asks with ``decide``; ``on_frame`` may write more lines for a frame. The frames it
    wrote, the control, its exit status."""
    control = StdioControl(prompt)
    argv = [
        str(e2e.claude_bin),
        "-p",
        "--input-format",
        "stream-json",
        "--output-format",
        "stream-json",
        "--verbose",
        "--permission-prompt-tool=stdio",
    ]
    full_env = {**os.environ, **e2e.claude_env()}
    full_env.pop("CLAUDECODE", None)
    frames: list[dict[str, Any]] = []
    proc = await trio.lowlevel.open_process(
        argv, stdin=-1, stdout=-1, stderr=-3, cwd=str(e2e.workspace), env=full_env
    )
    try:
        with trio.fail_after(timeout):
            assert proc.stdin is not None
            stdin = proc.stdin

            async def write(message: dict[str, Any]) -> None:
                await stdin.send_all(encode_message(message))

            for message in control.opening():
                await write(message)
            async with trio.open_nursery() as nursery:
                if during is not None:
                    nursery.start_soon(during, write, control)
                code = await read_all(
                    proc,
                    control=control,
                    decide=decide,
                    on_frame=on_frame,
                    write=write,
                    frames=frames,
                )
                nursery.cancel_scope.cancel()
    finally:
        if proc.returncode is None:
            proc.kill()
        with trio.CancelScope(shield=True):
            await proc.wait()
            if proc.stdin is not None:
                await proc.stdin.aclose()
            if proc.stdout is not None:
                await proc.stdout.aclose()
    return frames, control, code


async def read_all(
    proc: trio.Process,
    *,
    control: StdioControl,
    decide: Decide,
    on_frame: Callable[[dict[str, Any], StdioControl], list[dict[str, Any]]] | None,
    write: Callable[[dict[str, Any]], Any],
    frames: list[dict[str, Any]],
) -> int:
    """Read the CLI's frames to its end, answering its asks; its exit status."""
    assert proc.stdout is not None
    assert proc.stdin is not None
    buffer = b""
    closed = False
    async for chunk in proc.stdout:
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            if not line.strip():
                continue
            frame = json.loads(line)
            frames.append(frame)
            kind = frame.get("type")
            if kind == "control_request":
                got = control.on_request(
                    frame.get("request_id"),
                    frame.get("request", {}).get("subtype"),
                    frame.get("request", {}),
                )
                if isinstance(got, ToolAsk):
                    await write(control.answer(got, decide(got)))
                elif isinstance(got, Reply):
                    await write(got.message)
            elif kind == "control_response":
                control.on_response(frame.get("response", {}))
            elif kind == "result":
                control.on_result()
            if on_frame is not None:
                for message in on_frame(frame, control):
                    await write(message)
            if control.may_close() and not closed:
                closed = True
                await proc.stdin.aclose()
    return await proc.wait()


def kinds(frames: list[dict[str, Any]]) -> list[str]:
    return [str(f.get("type")) for f in frames]


def tool_results(frames: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        block
        for f in frames
        if f.get("type") == "user"
        for block in f.get("message", {}).get("content", [])
        if isinstance(block, dict) and block.get("type") == "tool_result"
    ]


async def test_allow_runs_the_tool_and_stdin_closes_after_the_result(e2e: E2E) -> None:
    e2e.api.add(
        ApiReply(nth(0), tool_use("Bash", {"command": "echo hi > hello.txt"}, id="toolu_a")),
        ApiReply(nth(1) & last_message_has_tool_result(), text("Done.")),
    )
    frames, control, code = await converse(e2e, "Create hello.txt", lambda ask: allow("test"))
    assert code == 0
    assert (e2e.workspace / "hello.txt").read_text() == "hi\n"
    assert kinds(frames).count("result") == 1
    assert control.waiting == []


async def test_deny_and_an_updated_input(e2e: E2E) -> None:
    e2e.api.add(
        ApiReply(nth(0), tool_use("Bash", {"command": "rm -rf /tmp/x"}, id="toolu_d")),
        ApiReply(
            nth(1) & last_message_has_tool_result(),
            tool_use("Bash", {"command": "echo bad > out.txt"}, id="toolu_u"),
        ),
        ApiReply(nth(2) & last_message_has_tool_result(), text("Done.")),
    )

    def decide(ask: ToolAsk) -> Any:
        if "rm" in ask.input.get("command", ""):
            return deny("no rm here", "test")
        return allow("test", updated_input={"command": "echo good > out.txt"})

    frames, _, code = await converse(e2e, "Do it", decide)
    assert code == 0
    results = tool_results(frames)
    assert results[0]["is_error"] is True
    assert "no rm here" in json.dumps(results[0]["content"])
    assert (e2e.workspace / "out.txt").read_text() == "good\n"


async def test_an_operator_message_mid_turn_reaches_the_model(e2e: E2E) -> None:
    """A user message written while the turn runs (during a tool's permission ask) is
    taken by the CLI into the same session: a later request carries it."""
    e2e.api.add(
        ApiReply(nth(0), tool_use("Bash", {"command": "echo one > a.txt"}, id="toolu_m")),
        ApiReply(nth(1), text("First part done.")),
        ApiReply(nth(2) & prompt_contains("OPERATOR: also write b.txt"), text("Noted.")),
    )
    sent: list[str] = []

    def on_frame(frame: dict[str, Any], control: StdioControl) -> list[dict[str, Any]]:
        if frame.get("type") == "control_request" and not sent:
            sent.append("yes")
            return [control.say("OPERATOR: also write b.txt")]
        return []

    frames, _, code = await converse(e2e, "Write a.txt", lambda ask: allow(), on_frame=on_frame)
    assert code == 0
    requests = e2e.api.message_requests()
    assert any("OPERATOR: also write b.txt" in json.dumps(r.messages) for r in requests)
    assert kinds(frames).count("result") >= 1


async def test_an_interrupt_mid_tool_ends_the_turn_with_its_session(e2e: E2E) -> None:
    """An ``interrupt`` control request while an allowed tool runs (a 30 s sleep) ends the
    turn at once: the CLI answers it, writes a result with the session (subtype
    ``error_during_execution``), and exits 1 by itself once stdin closes (no signal)."""
    e2e.api.add(
        ApiReply(nth(0), tool_use("Bash", {"command": "touch started && sleep 30"}, id="toolu_i")),
        ApiReply(nth(1), text("Stopped.")),
    )
    interrupted: list[dict[str, Any]] = []

    async def interrupt_once_started(write: Any, control: StdioControl) -> None:
        while not (e2e.workspace / "started").exists():  # noqa: ASYNC110 - the tool's file
            await trio.sleep(0.05)
        request = control.interrupt()
        interrupted.append(request)
        await write(request)

    began = trio.current_time()
    frames, _, code = await converse(
        e2e, "Sleep", lambda ask: allow(), during=interrupt_once_started
    )
    assert trio.current_time() - began < 25, "the sleep was not cut short"
    assert interrupted, kinds(frames)
    results = [f for f in frames if f.get("type") == "result"]
    assert results, kinds(frames)
    assert results[-1].get("session_id")
    responses = [
        f["response"]
        for f in frames
        if f.get("type") == "control_response"
        and f.get("response", {}).get("request_id") == interrupted[0]["request_id"]
    ]
    assert responses, "the CLI answered the interrupt"
    assert responses[0]["subtype"] == "success"
    # How 2.1.332 ends an interrupted turn: an error result (what the engine must read as
    # "stopped by us, session intact", not as a crash) and exit status 1.
    assert (results[-1]["subtype"], results[-1]["is_error"], code) == (
        "error_during_execution",
        True,
        1,
    )
