"""Faults of the permission gate (issue #10), through its real pieces: the MCP server as a
subprocess (spawned from the MCP config the orchestrator writes, token and all), the real
:class:`GateServer` on a Unix socket, the :class:`GateRouter` and a :class:`GoalGate`.

* Turns: a request that does not carry the goal's current turn's token (the server of an
  earlier turn, orphaned by a killed run; a server without a token; any request while no
  turn is open) is denied, and the denial recorded. Each process has its own gate socket.
* Recording: whatever a decider does (hang, block the event loop past the deadline, raise,
  return garbage, rewrite the input into something that cannot be sent), the reply the CLI
  got is the one decision recorded, once.
* The client going away mid-decision: recorded as abandoned, nothing hangs, no fd leaks.
* Garbage on the socket; a planted symlink at the socket directory; ``nexo-trio run`` when
  the gate's socket cannot be served (exit 2, one line).

Already covered elsewhere, and not repeated here: garbage on the MCP server's stdin
(``test_mcp_protocol``'s properties, ``test_mcp_stdio``), malformed, oversized and half
frames at the socket (``test_socket_server``), stale reply ids from a scripted orchestrator
(``test_mcp_stdio``'s ``stale-id`` case and ``test_mcp_protocol``).
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from nexo_trio.core.goal import Goal
from nexo_trio.core.goal_events import DecisionMade, GoalEvent
from nexo_trio.core.goal_machine import fold, initial_state
from nexo_trio.core.permission import (
    Decision,
    DecisionOutcome,
    PermissionRequest,
    allow,
)
from nexo_trio.gate.deciders import AllowAll, Decider, GuardedDecider
from nexo_trio.gate.goal_gate import NOT_THE_CURRENT_TURN, GateRouter, GoalGate
from nexo_trio.gate.mcp_config import GateDeadlines, write_mcp_config
from nexo_trio.gate.mcp_protocol import TOKEN_ENV
from nexo_trio.gate.socket_server import GateServer, GateSocketError, prepare_socket_path
from nexo_trio.orchestrator.state_dir import StateDir
from nexo_trio.wire import gate_frames
from nexo_trio.wire.gate_frames import DecisionFrame, ErrorFrame, PermissionFrame
from tests.gate.helpers import McpServer, assert_deny, run_server, text_json

GOAL_ID = "goal-faults"
DEADLINES = GateDeadlines.from_tool_timeout(10.0)
"""decider 7 s < gate request 7.5 s < MCP server 8.5 s < the CLI's 10 s."""
SHORT = GateDeadlines.from_tool_timeout(1.0)
"""decider 0.7 s < gate request 0.75 s < MCP server 0.85 s < the CLI's 1 s."""
NEXO_TRIO = Path(sys.executable).parent / "nexo-trio"


# ---------------------------------------------------------------------------- the harness


@attrs.define
class Harness:
    """A goal's gate served on its process's socket in a state dir, and what it recorded."""

    state_dir: Path
    socket_path: Path
    gate: GoalGate
    router: GateRouter
    server: GateServer
    events: list[GoalEvent] = attrs.Factory(list)
    turn: int = 0
    recorded: trio.Event = attrs.Factory(trio.Event)

    @property
    def decisions(self) -> list[DecisionMade]:
        """The DecisionMade events so far."""
        return [event for event in self.events if isinstance(event, DecisionMade)]

    def counts(self) -> tuple[int, int, int]:
        """(allowed, denied, consecutive denials): the goal machine's fold of the decisions."""
        state = fold(self.decisions, initial_state(GOAL_ID))
        return state.allowed, state.denied, state.consecutive_denies

    def begin_turn(self, deadlines: GateDeadlines = DEADLINES) -> Path:
        """Open the next turn as the orchestrator does: a fresh token for the gate, and the
        turn's MCP config carrying it; the config's path."""
        self.turn += 1
        token = self.gate.begin_turn()
        return write_mcp_config(
            self.state_dir / "gate" / f"{GOAL_ID}-turn-{self.turn}.mcp.json",
            socket_path=self.socket_path,
            goal_id=GOAL_ID,
            deadlines=deadlines,
            token=token,
        )

    async def wait_for_decisions(self, count: int, timeout: float = 10.0) -> None:
        """Until ``count`` decisions are recorded."""
        with trio.fail_after(timeout):
            while len(self.decisions) < count:
                await self.recorded.wait()


@asynccontextmanager
async def serving_gate(
    sock_dir: Path,
    decider: Decider,
    *,
    deadlines: GateDeadlines = DEADLINES,
    decider_timeout_s: float | None = None,
) -> AsyncIterator[Harness]:
    """A GateServer at this process's gate socket of a state dir in ``sock_dir``, routing
    to one goal's gate (no turn open yet)."""
    state_dir = sock_dir / "state"
    socket_path = StateDir(state_dir).gate_socket(os.getpid())
    workspace = sock_dir / "ws"
    workspace.mkdir()
    harness: Harness

    async def emit(event: GoalEvent) -> None:
        harness.events.append(event)
        harness.recorded.set()
        harness.recorded = trio.Event()

    gate = GoalGate(
        Goal(id=GOAL_ID, description="Survive the faults"),
        workspace=str(workspace),
        decider=decider,
        emit=emit,
        timeout_s=decider_timeout_s or deadlines.decider_timeout_s,
        current_turn=lambda: harness.turn or None,
    )
    router = GateRouter()
    router.register(gate)
    server = GateServer(socket_path, router, request_timeout_s=deadlines.gate_timeout_s)
    harness = Harness(state_dir, socket_path, gate, router, server)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        yield harness
        nursery.cancel_scope.cancel()
    assert not socket_path.exists()


@asynccontextmanager
async def spawn_from_config(config: Path, directory: Path) -> AsyncIterator[McpServer]:
    """The permission server as Claude Code starts it from ``config`` (command, args, the
    env added to its own); killed and reaped at the end if still running."""
    entry = json.loads(config.read_text())["mcpServers"]["nexo"]  # noqa: ASYNC240 - small
    stderr_path = directory / f"{config.stem}.stderr.log"
    with stderr_path.open("wb") as err:
        process = await trio.lowlevel.open_process(
            [entry["command"], *entry["args"]],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
            env={**os.environ, **entry["env"]},
        )
    server = McpServer(process, stderr_path)
    try:
        await server.handshake()
        yield server
    finally:
        with trio.CancelScope(shield=True):
            if process.returncode is None:
                process.send_signal(signal.SIGKILL)
            await process.wait()
            for pipe in (process.stdin, process.stdout):
                if pipe is not None:
                    await pipe.aclose()


async def ask(
    mcp: McpServer, rpc_id: int | str, tool_input: dict[str, Any], *, tool_name: str = "Bash"
) -> dict[str, Any]:
    """One permission_prompt tools/call; the JSON-RPC response (never an error)."""
    params = mcp.call_message(rpc_id, tool_input, tool_name=tool_name)["params"]
    response = await mcp.request("tools/call", params, rpc_id=rpc_id)
    assert "error" not in response, response
    return response


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def mode(path: Path) -> int:
    return path.lstat().st_mode & 0o7777


# ---------------------------------------------------------------------------- turns


async def test_only_the_current_turn_is_answered(sock_dir: Path) -> None:
    # The orphan case: the permission server of turn 1 lives on while turn 2 runs (a CLI
    # that outlived a killed run, say, resuming the same session). Its requests are denied.
    async with serving_gate(sock_dir, AllowAll()) as h:
        first_config = h.begin_turn()
        async with spawn_from_config(first_config, sock_dir) as first:
            assert text_json(await ask(first, 1, {"command": "ls"}))["behavior"] == "allow"
            second_config = h.begin_turn()
            async with spawn_from_config(second_config, sock_dir) as second:
                assert_deny(await ask(first, 2, {"command": "rm -rf ws"}), NOT_THE_CURRENT_TURN)
                assert text_json(await ask(second, 3, {"command": "ls"}))["behavior"] == "allow"
                h.gate.end_turn()
                assert_deny(await ask(second, 4, {"command": "ls"}), NOT_THE_CURRENT_TURN)
                assert_deny(await ask(first, 5, {"command": "ls"}), NOT_THE_CURRENT_TURN)
        # Every reply is recorded: the denials too (the CLI got them), asked by no turn of
        # this run.
        assert [(d.outcome, d.decider, d.turn) for d in h.decisions] == [
            ("allow_once", "allow_all", 1),
            ("deny", "gate", None),
            ("allow_once", "allow_all", 2),
            ("deny", "gate", None),
            ("deny", "gate", None),
        ]
        assert {d.reason for d in h.decisions if d.outcome == "deny"} == {NOT_THE_CURRENT_TURN}
        assert h.counts() == (2, 3, 2)
    # Each turn had its own token, in the server's environment, not on its command line.
    tokens = []
    for config in (first_config, second_config):
        entry = json.loads(config.read_text())["mcpServers"]["nexo"]
        token = entry["env"][TOKEN_ENV]
        assert len(token) >= 40
        assert all(token not in arg for arg in entry["args"])
        assert mode(config) == 0o600
        tokens.append(token)
    assert tokens[0] != tokens[1]


async def test_a_request_without_a_token_is_denied(sock_dir: Path) -> None:
    async with serving_gate(sock_dir, AllowAll()) as h:
        h.begin_turn()
        async with run_server(h.socket_path, sock_dir, goal_id=GOAL_ID) as tokenless:
            await tokenless.handshake()
            assert_deny(await ask(tokenless, 1, {"command": "ls"}), NOT_THE_CURRENT_TURN)
        wrong = "x" * 43
        async with run_server(
            h.socket_path, sock_dir, goal_id=GOAL_ID, extra=["--token", wrong]
        ) as guessing:
            assert_deny(await ask(guessing, 2, {"command": "ls"}), NOT_THE_CURRENT_TURN)
        assert [(d.outcome, d.reason) for d in h.decisions] == [
            ("deny", NOT_THE_CURRENT_TURN),
            ("deny", NOT_THE_CURRENT_TURN),
        ]


async def test_no_turn_open_denies_everything(sock_dir: Path) -> None:
    gate = GoalGate(
        Goal(id=GOAL_ID, description="x"),
        workspace=str(sock_dir),
        decider=AllowAll(),
        emit=_ignore,
        timeout_s=1.0,
    )
    request = PermissionRequest(goal_id=GOAL_ID, tool_name="Read", input={"file_path": "a"})
    assert not gate.turn_open
    assert (await gate.admit(request, token=None).decide()).message == NOT_THE_CURRENT_TURN
    token = gate.begin_turn("t-1")
    assert token == "t-1"
    assert bool(gate.turn_open)
    assert (await gate.admit(request, token="t-1").decide()).allowed
    for other in (None, "", "t-2", "t-1 ", "\udcff"):
        assert not (await gate.admit(request, token=other).decide()).allowed
    gate.end_turn()
    assert not (await gate.admit(request, token="t-1").decide()).allowed
    with pytest.raises(ValueError, match="must not be empty"):
        gate.begin_turn("")
    assert gate.begin_turn() != gate.begin_turn()


async def _ignore(event: GoalEvent) -> None:
    pass


def test_the_token_is_an_optional_field_of_the_request_frame() -> None:
    frame = PermissionFrame("r1", "g", "Bash", {"command": "ls"}, "toolu_1", "secret-1")
    line = gate_frames.encode_request(frame)
    assert json.loads(line)["token"] == "secret-1"
    assert gate_frames.decode_request(line.rstrip(b"\n")) == frame
    # A frame without a token (an older server) still decodes, and encodes as before.
    tokenless = frame._replace(token=None)
    old = gate_frames.encode_request(tokenless)
    assert "token" not in json.loads(old)
    assert gate_frames.decode_request(old.rstrip(b"\n")).token is None
    bad = json.loads(line)
    bad["token"] = 5
    with pytest.raises(gate_frames.FrameError, match="'token' must be a string"):
        gate_frames.decode_request(json.dumps(bad).encode())


def test_an_mcp_config_needs_a_token(sock_dir: Path) -> None:
    with pytest.raises(ValueError, match="token"):
        write_mcp_config(
            sock_dir / "m.json", socket_path=sock_dir / "s", goal_id="g", deadlines=SHORT, token=""
        )


async def test_each_process_has_its_own_gate_socket(sock_dir: Path) -> None:
    # A second process on the same state dir, or a leftover of a killed one, never blocks
    # a run; and the permission server of a turn of a process that is gone finds no gate.
    layout = StateDir(sock_dir / "state")
    earlier, later = layout.gate_socket(1001), layout.gate_socket(1002)
    assert earlier != later
    assert earlier.parent == later.parent == sock_dir / "state" / "run"
    assert earlier.name == "gate-1001.sock"
    async with trio.open_nursery() as nursery:
        stop_earlier = trio.CancelScope()

        async def serve_earlier(*, task_status: trio.TaskStatus[None]) -> None:
            with stop_earlier:
                await GateServer(earlier, GateRouter()).serve(task_status=task_status)

        await nursery.start(serve_earlier)
        await nursery.start(GateServer(later, GateRouter()).serve)  # both serve at once
        stop_earlier.cancel()
        await trio.testing.wait_all_tasks_blocked()
        async with run_server(earlier, sock_dir, goal_id=GOAL_ID) as orphan:
            await orphan.handshake()
            assert_deny(await ask(orphan, 1, {"command": "ls"}), "unavailable", "no socket at")
        nursery.cancel_scope.cancel()


def test_a_long_state_dir_keeps_one_gate_socket_per_process(sock_dir: Path) -> None:
    layout = StateDir(sock_dir / ("x" * 120))
    first, second = layout.gate_socket(1), layout.gate_socket(4_194_304)
    assert first != second
    assert first.parent == second.parent
    assert first.parent.name == f"nexo-trio-{os.getuid()}"
    assert len(os.fsencode(second)) <= 100


# ---------------------------------------------------------------------------- recording


class Blocking:
    """Blocks the event loop (a blocking call in ``decide``) on its first request, then
    allows; the first answer is ``answer``."""

    name = "blocking"

    def __init__(self, seconds: float, answer: Decision) -> None:
        self.seconds = seconds
        self.answer = answer
        self.calls = 0

    async def decide(self, request: PermissionRequest) -> Decision:
        self.calls += 1
        if self.calls == 1:
            time.sleep(self.seconds)  # noqa: ASYNC251 - the fault under test
            return self.answer
        return allow(self.name)


@pytest.mark.parametrize(
    "decider_timeout_s",
    [None, 30.0],
    ids=["guarded-decider-deadline", "gate-deadline-only"],
)
async def test_a_decider_that_blocks_the_loop_past_the_deadline_is_recorded_as_the_deny(
    sock_dir: Path, decider_timeout_s: float | None
) -> None:
    # The MCP server (another process) denies at its deadline while the orchestrator's loop
    # is blocked; when the loop comes back with an allow, that allow must not be what is
    # recorded, nor be sent: the reply is a deny, recorded once. With a decider deadline
    # beyond the gate's, only the gate's own deadline catches it.
    blocking = Blocking(1.2, allow("blocking"))
    async with serving_gate(
        sock_dir, blocking, deadlines=SHORT, decider_timeout_s=decider_timeout_s
    ) as h:
        async with spawn_from_config(h.begin_turn(SHORT), sock_dir) as mcp:
            assert_deny(await ask(mcp, 1, {"command": "ls"}), "no decision", "0.85s")
            await h.wait_for_decisions(1)
            (event,) = h.decisions
            assert event.outcome == "unavailable"
            assert event.decider == "gate"
            assert event.reason is not None
            assert "no decision within 0.75s" in event.reason
            assert "the event loop was blocked" in event.reason
            assert event.latency_ms >= 1200
            # The late reply reached the MCP server after its own deny: ignored, never
            # applied (the next call gets its own answer).
            answer = text_json(await ask(mcp, 2, {"command": "pwd"}))
            assert answer == {"behavior": "allow", "updatedInput": {"command": "pwd"}}
            assert "stale id" in mcp.stderr
        assert [d.outcome for d in h.decisions] == ["unavailable", "allow_once"]
        assert h.counts() == (1, 1, 0)


class Answers:
    """A decider returning a scripted value, whatever its type."""

    name = "scripted"

    def __init__(self, value: object) -> None:
        self.value = value

    async def decide(self, request: PermissionRequest) -> Decision:
        return self.value  # type: ignore[return-value]


class Raising:
    name = "raising"

    async def decide(self, request: PermissionRequest) -> Decision:
        raise RuntimeError("the policy file is corrupt")


class Hanging:
    name = "hanging"

    async def decide(self, request: PermissionRequest) -> Decision:
        await trio.sleep_forever()
        raise AssertionError("unreachable")


MISBEHAVING: list[Any] = [
    pytest.param(Hanging(), "unavailable", "timed out after 0.7s", id="hangs"),
    pytest.param(Raising(), "unavailable", "the policy file is corrupt", id="raises"),
    pytest.param(
        Answers("allow"), "unavailable", "decider returned str, not a Decision", id="a-string"
    ),
    pytest.param(Answers(None), "unavailable", "returned NoneType, not a Decision", id="none"),
    pytest.param(
        Answers({"behavior": "allow"}), "unavailable", "returned dict, not a Decision", id="dict"
    ),
    pytest.param(
        Answers(Decision("allow_once")),  # type: ignore[arg-type]
        "unavailable",
        "whose outcome is str",
        id="outcome-not-an-enum",
    ),
    pytest.param(
        Answers(Decision(DecisionOutcome.ALLOW_ONCE, updated_input=["ls"])),  # type: ignore[arg-type]
        "unavailable",
        "updated_input is list",
        id="updated-input-a-list",
    ),
    pytest.param(
        Answers(Decision(DecisionOutcome.DENY, message=7)),  # type: ignore[arg-type]
        "unavailable",
        "whose message is int",
        id="message-an-int",
    ),
    pytest.param(
        Answers(allow("rewriter", updated_input={"command": {1, 2}})),
        "unavailable",
        "the decision cannot be sent",
        id="updated-input-not-json",
    ),
    pytest.param(
        Answers(allow("rewriter", updated_input={"n": math.nan})),
        "unavailable",
        "the decision cannot be sent",
        id="updated-input-nan",
    ),
    pytest.param(
        Answers(allow("rewriter", updated_input={"c": "x" * gate_frames.MAX_FRAME_BYTES})),
        "unavailable",
        "too large to send",
        id="updated-input-over-the-frame-cap",
    ),
]


@pytest.mark.parametrize(("decider", "outcome", "needle"), MISBEHAVING)
async def test_a_misbehaving_decider_is_denied_and_recorded_as_denied_once(
    sock_dir: Path, decider: Decider, outcome: str, needle: str
) -> None:
    async with serving_gate(sock_dir, decider, deadlines=SHORT) as h:
        async with spawn_from_config(h.begin_turn(SHORT), sock_dir) as mcp:
            message = assert_deny(await ask(mcp, 1, {"command": "ls"}), needle)
            assert "Permission denied" in message
            await h.wait_for_decisions(1)
            await trio.sleep(0.05)
        (event,) = h.decisions  # once
        assert event.outcome == outcome
        assert event.reason is not None
        assert needle in event.reason
        assert event.turn == 1
        assert h.counts() == (0, 1, 1)


async def test_guarded_decider_turns_a_value_that_is_not_a_decision_into_unavailable() -> None:
    request = PermissionRequest(goal_id="g", tool_name="Read")
    for value, needle in [
        ("allow", "decider returned str, not a Decision"),
        (True, "decider returned bool, not a Decision"),
        (Decision(DecisionOutcome.ALLOW_ONCE, rationale=3), "whose rationale is int"),  # type: ignore[arg-type]
    ]:
        decision = await GuardedDecider(Answers(value), timeout_s=5).decide(request)
        assert decision.outcome is DecisionOutcome.UNAVAILABLE
        assert decision.message is not None
        assert needle in decision.message
        assert decision.decider == "scripted"


async def test_a_call_is_recorded_once() -> None:
    events: list[GoalEvent] = []

    async def emit(event: GoalEvent) -> None:
        events.append(event)

    gate = GoalGate(
        Goal(id=GOAL_ID, description="x"),
        workspace="/w",
        decider=AllowAll(),
        emit=emit,
        timeout_s=1,
    )
    token = gate.begin_turn()
    call = gate.admit(PermissionRequest(goal_id=GOAL_ID, tool_name="Read"), token=token)
    sent = await call.decide()
    await call.record(sent)
    await call.record(sent)
    assert len(events) == 1


# ---------------------------------------------------------------------------- the client gone


class Pending:
    """Never decides a Bash call (cancellations counted); allows anything else."""

    name = "pending"

    def __init__(self) -> None:
        self.entered = 0
        self.cancelled = 0
        self.changed = trio.Event()

    async def decide(self, request: PermissionRequest) -> Decision:
        if request.tool_name != "Bash":
            return allow(self.name)
        self.entered += 1
        self._wake()
        try:
            await trio.sleep_forever()
        finally:
            self.cancelled += 1
            self._wake()
        raise AssertionError("unreachable")

    def _wake(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    async def wait(self, attribute: str, count: int) -> None:
        with trio.fail_after(10):
            while getattr(self, attribute) < count:
                await self.changed.wait()


async def test_a_server_killed_mid_decision_is_recorded_as_abandoned_without_leaks(
    sock_dir: Path,
) -> None:
    pending = Pending()
    rounds, in_flight = 6, 3
    async with serving_gate(sock_dir, pending) as h:
        config = h.begin_turn()
        # Warm up (trio's thread cache, the first connection), then count.
        async with spawn_from_config(config, sock_dir) as mcp:
            assert text_json(await ask(mcp, 0, {"file_path": "a"}, tool_name="Read"))
        await h.wait_for_decisions(1)
        before = open_fds()
        for n in range(rounds):
            async with spawn_from_config(config, sock_dir) as mcp:
                for k in range(50):
                    answer = text_json(
                        await ask(mcp, f"r{k}", {"file_path": "a"}, tool_name="Read")
                    )
                    assert answer["behavior"] == "allow"
                for k in range(in_flight):
                    await mcp.send(mcp.call_message(f"b{k}", {"command": "sleep 100"}))
                await pending.wait("entered", (n + 1) * in_flight)
                mcp.process.send_signal(signal.SIGKILL)
                with trio.fail_after(5):
                    await mcp.process.wait()
            # Nothing hangs: the pending decisions are cancelled and recorded as abandoned.
            await pending.wait("cancelled", (n + 1) * in_flight)
            await h.wait_for_decisions(1 + (n + 1) * (50 + in_flight))
        with trio.fail_after(5):
            while open_fds() != before:  # noqa: ASYNC110 - no event tells of a closed fd
                await trio.sleep(0.01)
        abandoned = [d for d in h.decisions if d.tool_name == "Bash"]
        assert len(abandoned) == rounds * in_flight
        assert {(d.outcome, d.reason, d.decider, d.turn) for d in abandoned} == {
            ("cancelled", "decision abandoned", "gate", 1)
        }
        assert h.counts()[:2] == (1 + rounds * 50, rounds * in_flight)


# ---------------------------------------------------------------------------- garbage


async def test_random_bytes_on_the_socket_get_error_frames_and_the_gate_goes_on(
    sock_dir: Path,
) -> None:
    rng = random.Random(10)
    async with serving_gate(sock_dir, AllowAll()) as h:
        h.begin_turn()
        token = h.gate.begin_turn("known")
        stream = await trio.open_unix_socket(str(h.socket_path))
        async with stream:
            lines = 0
            for _ in range(200):
                chunk = bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 400)))
                lines += chunk.count(b"\n")
                await stream.send_all(chunk)
            await stream.send_all(b"\n")
            good = PermissionFrame("after", GOAL_ID, "Read", {"file_path": "a"}, None, token)
            await stream.send_all(gate_frames.encode_request(good))
            buffer, replies = b"", list[object]()
            with trio.fail_after(10):
                while not any(isinstance(r, DecisionFrame) for r in replies):
                    data = await stream.receive_some(65536)
                    assert data, "the gate hung up"
                    buffer += data
                    *complete, buffer = buffer.split(b"\n")
                    replies += [gate_frames.decode_reply(line) for line in complete]
        errors = [r for r in replies if isinstance(r, ErrorFrame)]
        (decision,) = [r for r in replies if isinstance(r, DecisionFrame)]
        assert decision == DecisionFrame("after", True, {"file_path": "a"})
        assert len(errors) + 1 == len(replies)
        assert len(errors) <= lines + 1
        # Garbage is never a request: the one decision recorded is the good one.
        assert [d.outcome for d in h.decisions] == ["allow_once"]


async def test_a_huge_line_then_a_hang_up_costs_nothing(sock_dir: Path) -> None:
    async with serving_gate(sock_dir, AllowAll()) as h:
        token = h.gate.begin_turn("known")
        before = open_fds()
        for _ in range(2):
            stream = await trio.open_unix_socket(str(h.socket_path))
            async with stream:
                head = b'{"v": 1, "type": "permission", "id": "huge", "goal_id": "goal-faults",'
                await stream.send_all(head + b'"input": {"c": "')
                chunk = b"x" * (1024 * 1024)
                for _ in range(gate_frames.MAX_FRAME_BYTES // len(chunk) + 4):  # past the cap
                    await stream.send_all(chunk)
        # A fresh connection is served at once.
        stream = await trio.open_unix_socket(str(h.socket_path))
        async with stream:
            good = PermissionFrame("ok", GOAL_ID, "Read", {"file_path": "a"}, None, token)
            await stream.send_all(gate_frames.encode_request(good))
            with trio.fail_after(10):
                line = await stream.receive_some(65536)
            assert gate_frames.decode_reply(line.rstrip(b"\n")) == DecisionFrame(
                "ok", True, {"file_path": "a"}
            )
        with trio.fail_after(5):
            while open_fds() != before:  # noqa: ASYNC110 - no event tells of a closed fd
                await trio.sleep(0.01)
        assert [d.outcome for d in h.decisions] == ["allow_once"]


# ---------------------------------------------------------------------------- the socket dir


@pytest.mark.parametrize("planted", ["symlink", "dangling-symlink", "file"])
def test_a_planted_socket_dir_is_refused_and_never_followed(sock_dir: Path, planted: str) -> None:
    victim = sock_dir / "victim"
    victim.mkdir()
    victim.chmod(0o755)
    directory = sock_dir / "run"
    if planted == "symlink":
        directory.symlink_to(victim)
    elif planted == "dangling-symlink":
        directory.symlink_to(sock_dir / "nowhere")
    else:
        directory.write_text("not a directory")
    kind = "not a directory" if planted == "file" else "a symlink"
    with pytest.raises(GateSocketError, match=f"is {kind}; refusing"):
        prepare_socket_path(directory / "gate-1.sock")
    assert mode(victim) == 0o755  # never chmod-ed through the link
    assert list(victim.iterdir()) == []
    assert not (sock_dir / "nowhere").exists()


async def test_a_symlink_planted_at_the_shared_fallback_dir_is_refused(
    sock_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A long state dir puts the socket in <tmp>/nexo-trio-<uid>: another user may plant a
    # symlink there first, pointing at a directory of ours (or of root's, if root runs).
    shared_tmp = sock_dir / "tmp"
    shared_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(shared_tmp))
    victim = sock_dir / "victim"
    victim.mkdir()
    victim.chmod(0o751)
    (shared_tmp / f"nexo-trio-{os.getuid()}").symlink_to(victim)
    path = StateDir(sock_dir / ("x" * 120)).gate_socket(os.getpid())
    assert path.parent == shared_tmp / f"nexo-trio-{os.getuid()}"
    server = GateServer(path, AllowAll().decide)
    with trio.fail_after(10), pytest.raises(GateSocketError, match="is a symlink"):
        await server.serve()
    assert mode(victim) == 0o751
    assert list(victim.iterdir()) == []


def test_run_exits_2_with_one_line_when_the_gate_socket_cannot_be_served(sock_dir: Path) -> None:
    state_dir = sock_dir / "state"
    state_dir.mkdir()
    victim = sock_dir / "victim"
    victim.mkdir()
    victim.chmod(0o755)
    (state_dir / "run").symlink_to(victim)
    goal = sock_dir / "goal.yaml"
    (goal.parent / "ws").mkdir(exist_ok=True)
    goal.write_text("id: g1\ndescription: Create hello.txt.\nworkspace: ./ws\n")
    config = sock_dir / "config.yaml"
    config.write_text("claude: {binary: /bin/true}\nsandbox: {mode: none}\n")
    proc = subprocess.run(
        [str(NEXO_TRIO), "run", str(goal), "--config", str(config), "--state-dir", str(state_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("Error: ")
    assert "is a symlink" in lines[0]
    assert mode(victim) == 0o755
