"""One gated turn per permission transport, on the real Claude Code CLI offline: what
``permission.transport: stdio`` costs beside ``mcp``, per turn.

The same scripted work every time: the real CLI (``$NEXO_CLAUDE_BIN``, else
``.cache/claude-code/node_modules/.bin/claude``) against a loopback
:class:`~nexo_trio.testing.messages_api.ScriptedMessagesAPI`, whose model asks for one Bash
call (``echo hi > hello.txt``) and, once it has the tool's result, says ``Done.``. Four
variants, interleaved round by round (each warmed up once first, not counted):

- ``stdio`` and ``mcp`` (ours): one goal through
  :class:`~nexo_trio.orchestrator.orchestrator.Orchestrator` (``run_goal``), a fresh goal id
  and workspace each round, a state dir (SQLite ledger) per variant, ``sandbox.mode:
  none`` (the transports are compared, not bubblewrap), the default ``rules`` decider
  (which allows the call), acceptance ``test -f hello.txt``, one turn. On ``mcp`` the CLI
  starts the permission MCP server (``python -m nexo_trio.gate.mcp_stdio``) and it relays
  the ask over the gate's Unix socket; on ``stdio`` the CLI asks on its own
  stdout and gets the answer on its stdin, no server.
- ``claude-agent-sdk`` (the anchor): ``query()`` under trio with the same CLI,
  ``can_use_tool`` an async callback that allows (the SDK then passes
  ``--permission-prompt-tool stdio``), the same workspace, environment and turn; no
  ledger, no acceptance check.
- the floor: the bare CLI, no gate (``--allowedTools Bash``: root may not use
  ``--dangerously-skip-permissions``), prompt in argv, run with ``trio.run_process``.

Figures, per turn (medians):

- **wall of run_goal**: ours from ``run_goal``'s call to its return (gate admission, the
  turn, the ledger writes, the acceptance check); the SDK's and the floor's are spawn to
  exit, the whole of their job.
- **the turn's own duration**: ours the ``TurnResult.duration_s`` of the turn (the CLI's
  spawn to its exit, under the subreaper helper), beside the same SDK and floor figures.
- **CPU, all processes**: ``time.process_time()`` (our process, its worker threads too)
  plus ``resource.getrusage(RUSAGE_CHILDREN)`` (user + system) deltas over the same
  window. ``RUSAGE_CHILDREN`` counts only reaped descendants, and grandchildren only
  through parents that waited for them: our turn's CLI runs under the subreaper helper
  (``engine/reaper.py``), which we reap and which itself reaps everything below it
  (the CLI; on ``mcp`` the MCP server, which the CLI waits for or which is re-parented to
  the helper; the Bash tool and the shell snapshot the CLI takes), and the acceptance
  check runs under one too. The window closes only once no child of ours but the
  scripted API server is left (a bounded wait, a few ms at most), so nothing of a turn is
  reaped, hence counted, in the next one's. The scripted API runs in a process of its own,
  reaped after the last round: its CPU is in no figure. (A check that sampled every
  process of a turn with psutil found the sum of what it saw a little under the
  ``RUSAGE_CHILDREN`` delta, never over: the CLI some 0.9-1.1 s, on ``mcp`` the MCP
  server 50-70 ms, the helpers about 30 ms, the shells next to nothing.)
- **decision latency**: the ``latency_ms`` of the turn's one ``DecisionMade``: from the
  gate's admission of the request to the decision settled (the reply line encoded), the
  decider's work included. It does not cover the ask's way to us nor the answer's way
  back: on ``mcp`` it starts when the gate's socket server has read the request from the
  MCP server (not when the CLI asked: the CLI to MCP server hop, JSON-RPC over the
  server's stdin, and the server's hop to the socket are before it), on ``stdio`` when our
  reader has parsed the CLI's ``can_use_tool`` control request off its stdout; on both it
  ends before the ledger write that precedes the reply and before the reply is written.

``quick``: 2 rounds; full: 10. Without the real CLI the group's one row says skipped.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import attrs
import trio
from claude_agent_sdk import (
    ClaudeAgentOptions,
    PermissionResult,
    PermissionResultAllow,
    ResultMessage,
    ToolPermissionContext,
    query,
)

from benchmarks.suite import Row, Stat, interleave_async
from nexo_trio.core.command import ClaudeCommand
from nexo_trio.core.goal import Budget, Goal, ShellCheck
from nexo_trio.core.goal_events import DecisionMade, GoalEvent
from nexo_trio.core.settings import (
    ClaudeSettings,
    Config,
    PermissionSettings,
    PermissionTransport,
    ReplaySettings,
    SandboxSettings,
)
from nexo_trio.engine.reaper import children_of
from nexo_trio.engine.supervisor import TurnResult, run_turn
from nexo_trio.orchestrator.orchestrator import Orchestrator
from nexo_trio.testing.messages_api import (
    Reply,
    ScriptedMessagesAPI,
    always,
    last_message_has_tool_result,
    text,
    tool_use,
)

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CLAUDE_BIN = ROOT / ".cache" / "claude-code" / "node_modules" / ".bin" / "claude"
GROUP = "transport"
COMMAND = "echo hi > hello.txt"
PROMPT = "Create hello.txt saying hi."
TURN_TIMEOUT_S = 60.0
"""The turn's own timeout (ours); the round's bound is :data:`ROUND_BOUND_S`."""
ROUND_BOUND_S = 120.0
"""How long one variant's turn of a round may take, all of it."""
SETTLE_BOUND_S = 10.0
"""How long a turn's processes may take to be reaped after it."""
API_BOUND_S = 30.0
"""How long the scripted API's process may take to start, and to end."""
TRANSPORTS: tuple[PermissionTransport, ...] = ("stdio", "mcp")

Turn = Callable[["Window", Path, int], Awaitable["Extra"]]


@attrs.frozen
class Extra:
    """What a variant's turn tells besides its window: ours, the turn's own duration (s)
    and the decision's latency (ms)."""

    turn_s: float | None = None
    latency_ms: float | None = None


@attrs.define
class Window:
    """The measured stretch of one turn: wall, our CPU and our reaped children's CPU.

    ``async with window:`` opens it once no child but ``keep`` (the scripted API's
    process) is left, and closes it once that holds again; the wall ends at the block's
    end, before that wait."""

    keep: frozenset[int]
    wall_s: float = 0.0
    self_s: float = 0.0
    children_s: float = 0.0
    settle_s: float = 0.0
    _wall0: float = 0.0
    _self0: float = 0.0
    _children0: float = 0.0

    async def __aenter__(self) -> Window:
        await settle(self.keep)
        self._children0 = _children_cpu()
        self._self0 = time.process_time()
        self._wall0 = time.perf_counter()
        return self

    async def __aexit__(self, *exc: object) -> None:
        end = time.perf_counter()
        self.wall_s = end - self._wall0
        if exc[0] is not None:
            return
        await settle(self.keep)
        self.settle_s = time.perf_counter() - end
        self.self_s = time.process_time() - self._self0
        self.children_s = _children_cpu() - self._children0

    @property
    def cpu_s(self) -> float:
        """Ours and our children's CPU seconds."""
        return self.self_s + self.children_s


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


async def settle(keep: frozenset[int]) -> None:
    """Wait (bounded) until no child process of ours but those in ``keep`` (the scripted
    API's, and what earlier groups of the suite left running in this process) is left: the
    last turn's have been reaped, so their CPU is counted (``/proc`` read in a thread)."""
    me = os.getpid()
    with trio.fail_after(SETTLE_BOUND_S):
        while True:
            children = await trio.to_thread.run_sync(children_of, me)
            if set(children) <= keep:
                return
            await trio.sleep(0.005)


def claude_binary() -> Path | None:
    """The real Claude Code CLI, or ``None`` when it is not there."""
    configured = os.environ.get("NEXO_CLAUDE_BIN")
    path = Path(configured) if configured else DEFAULT_CLAUDE_BIN
    return path if path.is_file() and os.access(path, os.X_OK) else None


# ----------------------------------------------------------------------------- the API


async def _serve_api() -> None:
    """The scripted API, in this process: its port on stdout, served until stdin ends;
    then how many Messages requests it had, and how many no rule matched, as JSON."""
    api = ScriptedMessagesAPI(
        [
            Reply(last_message_has_tool_result(), text("Done."), times=None),
            Reply(always(), tool_use("Bash", {"command": COMMAND}), times=None),
        ]
    )
    stdin = trio.lowlevel.FdStream(os.dup(0))
    async with trio.open_nursery() as nursery:
        await nursery.start(api.serve)
        print(api.port, flush=True)
        async with stdin:
            while await stdin.receive_some():
                pass
        nursery.cancel_scope.cancel()
    counts = {"messages": len(api.message_requests()), "unmatched": len(api.unmatched)}
    print(json.dumps(counts), flush=True)


async def _first_line(stream: trio.abc.ReceiveStream) -> bytes:
    """The first line of ``stream`` (read byte by byte: nothing after it is taken)."""
    line = b""
    while not line.endswith(b"\n"):
        chunk = await stream.receive_some(1)
        if not chunk:
            raise RuntimeError("the scripted API ended before it served")
        line += chunk
    return line


@attrs.define
class ApiProcess:
    """The scripted API's process (see :func:`_serve_api`)."""

    process: trio.Process
    port: int
    base_url: str

    @classmethod
    async def start(cls) -> ApiProcess:
        """Start it and read its port."""
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "benchmarks.bench_transport", "--serve-api"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=ROOT,
        )
        assert process.stdout is not None
        try:
            with trio.fail_after(API_BOUND_S):
                line = await _first_line(process.stdout)
        except BaseException:
            process.kill()
            with trio.CancelScope(shield=True), trio.move_on_after(API_BOUND_S):
                await process.wait()
            raise
        port = int(line)
        return cls(process, port, f"http://127.0.0.1:{port}")

    def claude_env(self, home: Path) -> dict[str, str]:
        """What :meth:`ScriptedMessagesAPI.claude_env` gives, for this server."""
        return {
            "ANTHROPIC_BASE_URL": self.base_url,
            "ANTHROPIC_API_KEY": "dummy-key-for-scripted-api",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "DISABLE_TELEMETRY": "1",
            "HOME": str(home),
        }

    async def stop(self) -> dict[str, int]:
        """End it (its stdin closed); its counts."""
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        out = b""
        try:
            with trio.fail_after(API_BOUND_S):
                await self.process.stdin.aclose()
                while chunk := await self.process.stdout.receive_some(1 << 16):
                    out += chunk
                await self.process.wait()
        finally:
            if self.process.returncode is None:
                self.process.kill()
                with trio.CancelScope(shield=True), trio.move_on_after(API_BOUND_S):
                    await self.process.wait()
        counts: dict[str, int] = json.loads(out.decode().strip().splitlines()[-1])
        return counts


# ----------------------------------------------------------------------------- variants


def _workspace(base: Path, round_: int) -> Path:
    workspace = base / f"ws-{round_:03d}"
    workspace.mkdir(parents=True)
    return workspace


def _check_made(workspace: Path, who: str) -> None:
    made = workspace / "hello.txt"
    if not made.is_file() or made.read_text() != "hi\n":
        raise AssertionError(f"{who}: the turn did not write hello.txt")


def ours(binary: Path, api: ApiProcess, base: Path, transport: PermissionTransport) -> Turn:
    """One goal of one gated turn through the orchestrator, on ``transport``."""
    home = base / "home"
    home.mkdir(parents=True)
    config = Config(
        claude=ClaudeSettings(binary=str(binary), env=api.claude_env(home)),
        turn_timeout_s=TURN_TIMEOUT_S,
        kill_grace_s=3.0,
        state_dir=str(base / "state"),
        workspace_root=str(base / "workspaces"),
        permission=PermissionSettings(transport=transport),
        sandbox=SandboxSettings(mode="none"),
        replay=ReplaySettings(max_retries=0),
    )

    async def turn(window: Window, workspace: Path, round_: int) -> Extra:
        turns: list[TurnResult] = []

        async def runner(command: ClaudeCommand, **kwargs: Any) -> TurnResult:
            result = await run_turn(command, **kwargs)
            turns.append(result)
            return result

        goal = Goal(
            id=f"{transport}-{round_:03d}",
            description=PROMPT,
            acceptance=(ShellCheck("test -f hello.txt"),),
            workspace=str(workspace),
            budget=Budget(max_turns=1, max_wall_time_s=TURN_TIMEOUT_S),
        )
        async with Orchestrator(config, turn_runner=runner) as orch:
            events = orch.subscribe()
            async with window:
                outcome = await orch.run_goal(goal)
            seen: list[GoalEvent] = []
            while True:
                try:
                    seen.append(events.receive_nowait())
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
        if not outcome.done or outcome.total_turns != 1:
            raise AssertionError(f"{transport}: {outcome}")
        decisions = [e for e in seen if isinstance(e, DecisionMade)]
        if [(d.tool_name, d.outcome) for d in decisions] != [("Bash", "allow_once")]:
            raise AssertionError(f"{transport}: decisions {decisions}")
        (result,) = turns
        stdio = "--permission-prompt-tool=stdio" in result.argv
        if stdio is not (transport == "stdio"):
            raise AssertionError(f"{transport}: argv {result.argv}")
        _check_made(workspace, transport)
        return Extra(turn_s=result.duration_s, latency_ms=decisions[0].latency_ms)

    return turn


def sdk(binary: Path, api: ApiProcess, base: Path) -> Turn:
    """The same turn through ``claude_agent_sdk.query`` with an allowing ``can_use_tool``."""
    home = base / "home"
    home.mkdir(parents=True)
    env = api.claude_env(home)

    async def turn(window: Window, workspace: Path, round_: int) -> Extra:
        asked: list[str] = []

        async def allow(
            tool_name: str, tool_input: dict[str, Any], context: ToolPermissionContext
        ) -> PermissionResult:
            asked.append(tool_name)
            return PermissionResultAllow()

        options = ClaudeAgentOptions(
            cli_path=str(binary), can_use_tool=allow, cwd=str(workspace), env=env
        )
        result: ResultMessage | None = None
        async with window:
            async for message in query(prompt=PROMPT, options=options):
                if isinstance(message, ResultMessage):
                    result = message
        if result is None or result.is_error or asked != ["Bash"]:
            raise AssertionError(f"sdk: result {result}, asked {asked}")
        _check_made(workspace, "sdk")
        return Extra()

    return turn


def floor(binary: Path, api: ApiProcess, base: Path) -> Turn:
    """The bare CLI, no gate (``--allowedTools Bash``), prompt in argv."""
    home = base / "home"
    home.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if k != "CLAUDECODE"} | api.claude_env(home)
    argv = [
        str(binary),
        "-p",
        PROMPT,
        "--output-format",
        "stream-json",
        "--verbose",
        "--allowedTools",
        "Bash",
    ]

    async def turn(window: Window, workspace: Path, round_: int) -> Extra:
        async with window:
            done = await trio.run_process(
                argv,
                cwd=workspace,
                env=env,
                stdin=subprocess.DEVNULL,
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
        if done.returncode != 0:
            raise AssertionError(f"floor: exit {done.returncode}: {done.stderr[-500:]!r}")
        _check_made(workspace, "floor")
        return Extra()

    return turn


# ----------------------------------------------------------------------------- rows


@attrs.define
class Samples:
    """One variant's measured turns."""

    wall_s: list[float] = attrs.Factory(list)
    self_s: list[float] = attrs.Factory(list)
    children_s: list[float] = attrs.Factory(list)
    settle_s: list[float] = attrs.Factory(list)
    turn_s: list[float] = attrs.Factory(list)
    latency_ms: list[float] = attrs.Factory(list)

    def add(self, window: Window, extra: Extra) -> None:
        """Keep one turn's figures."""
        self.wall_s.append(window.wall_s)
        self.self_s.append(window.self_s)
        self.children_s.append(window.children_s)
        self.settle_s.append(window.settle_s)
        if extra.turn_s is not None:
            self.turn_s.append(extra.turn_s)
        if extra.latency_ms is not None:
            self.latency_ms.append(extra.latency_ms)

    def cpu_s(self) -> list[float]:
        """Ours and our children's CPU seconds of each turn."""
        return [a + b for a, b in zip(self.self_s, self.children_s, strict=True)]


async def measure(
    turns: Mapping[str, Turn], work: Path, keep: frozenset[int], rounds: int
) -> dict[str, Samples]:
    """Each variant's turns: one unmeasured, then ``rounds`` interleaved."""
    samples = {name: Samples() for name in turns}
    count = dict.fromkeys(turns, 0)

    async def once(name: str) -> Window:
        count[name] += 1
        workspace = _workspace(work / name, count[name])
        window = Window(keep)
        with trio.fail_after(ROUND_BOUND_S):
            extra = await turns[name](window, workspace, count[name])
        if count[name] > 1:  # the first is a warm-up
            samples[name].add(window, extra)
        return window

    def variant(name: str) -> Callable[[], Awaitable[float]]:
        async def one() -> float:
            return (await once(name)).wall_s

        return one

    for name in turns:  # first-time costs (a new HOME, the SDK's imports): not counted
        await once(name)
    await interleave_async({name: variant(name) for name in turns}, rounds)
    return samples


def _ms(values: list[float]) -> Stat:
    return Stat.of(values).scaled(1e3)


def _skipped(reason: str) -> list[Row]:
    return [Row(GROUP, "per-turn transports: skipped", "—", Stat(0, 0, 0, 0), note=reason)]


def table(samples: Mapping[str, Samples], rounds: int, api: Mapping[str, int]) -> list[Row]:
    """The rows (see the module docstring)."""
    sdk_wall, floor_wall = _ms(samples["sdk"].wall_s), _ms(samples["floor"].wall_s)
    sdk_cpu, floor_cpu = _ms(samples["sdk"].cpu_s()), _ms(samples["floor"].cpu_s())
    note = f"{rounds} rounds"

    def versus(figure: Callable[[Samples], list[float]], transport: str) -> str:
        if transport != "stdio":
            return ""
        stdio, mcp = Stat.of(figure(samples["stdio"])), Stat.of(figure(samples["mcp"]))
        return f"; stdio/mcp {stdio.median / mcp.median:.2f}x (mcp {mcp.median * 1e3:.0f} ms)"

    rows: list[Row] = []
    for transport in TRANSPORTS:
        rows.append(
            Row(
                GROUP,
                f"one gated turn, {transport}: wall of run_goal",
                "ms",
                _ms(samples[transport].wall_s),
                anchor=sdk_wall,
                floor=floor_wall,
                better="lower",
                note=f"{note}; sdk, floor: spawn to exit, no ledger, no acceptance check"
                + versus(lambda s: s.wall_s, transport),
            )
        )
    for transport in TRANSPORTS:
        rows.append(
            Row(
                GROUP,
                f"one gated turn, {transport}: the turn's own duration",
                "ms",
                _ms(samples[transport].turn_s),
                anchor=sdk_wall,
                floor=floor_wall,
                better="lower",
                note=f"{note}; TurnResult.duration_s: CLI spawn to exit"
                + versus(lambda s: s.turn_s, transport),
            )
        )
    for transport in TRANSPORTS:
        own = Stat.of(samples[transport].self_s).median * 1e3
        kids = Stat.of(samples[transport].children_s).median * 1e3
        rows.append(
            Row(
                GROUP,
                f"one gated turn, {transport}: CPU, all processes",
                "ms",
                _ms(samples[transport].cpu_s()),
                anchor=sdk_cpu,
                floor=floor_cpu,
                better="lower",
                note=f"{note}; ours {own:.0f} + reaped children {kids:.0f} (medians)"
                + versus(Samples.cpu_s, transport),
            )
        )
    for transport in TRANSPORTS:
        latency = Stat.of(samples[transport].latency_ms)
        extra = ""
        if transport == "stdio":
            mcp = Stat.of(samples["mcp"].latency_ms).median
            extra = f"; stdio/mcp {latency.median / mcp:.2f}x (mcp {mcp:.2f} ms)"
        rows.append(
            Row(
                GROUP,
                f"{transport}: decision latency (DecisionMade.latency_ms)",
                "ms",
                latency,
                better="lower",
                note=f"{note}; admission to decision settled, our side only" + extra,
            )
        )
    settles = [s for each in samples.values() for s in each.settle_s]
    if max(settles) > 0.05 or api["unmatched"]:
        rows[0] = attrs.evolve(
            rows[0],
            note=f"{rows[0].note}; max wait for reaping {max(settles) * 1e3:.0f} ms, "
            f"{api['unmatched']} unmatched API requests",
        )
    return rows


async def _rows(quick: bool) -> list[Row]:
    binary = claude_binary()
    if binary is None:
        where = os.environ.get("NEXO_CLAUDE_BIN") or str(DEFAULT_CLAUDE_BIN)
        return _skipped(f"no real Claude Code CLI at {where} (nox -s e2e installs it)")
    rounds = 2 if quick else 10
    with tempfile.TemporaryDirectory(prefix="bench-transport-") as tmp:
        work = Path(tmp)
        # Children of this process from before the group (a suite run's earlier groups)
        # are not this group's turns: a turn's window waits only for its own.
        before = frozenset(await trio.to_thread.run_sync(children_of, os.getpid()))
        api = await ApiProcess.start()
        try:
            turns: dict[str, Turn] = {
                transport: ours(binary, api, work / transport, transport)
                for transport in TRANSPORTS
            }
            turns["sdk"] = sdk(binary, api, work / "sdk")
            turns["floor"] = floor(binary, api, work / "floor")
            samples = await measure(turns, work, before | {api.process.pid}, rounds)
        finally:
            counts = await api.stop()
    expected = 2 * (rounds + 1) * len(turns)
    if counts["messages"] != expected:
        raise AssertionError(f"the scripted API had {counts}, not {expected} requests")
    return table(samples, rounds, counts)


def rows(quick: bool = False) -> list[Row]:
    """One gated turn per transport beside the SDK and the bare CLI (module docstring)."""
    return trio.run(_rows, quick)


if __name__ == "__main__":
    if sys.argv[1:] == ["--serve-api"]:
        trio.run(_serve_api)
    else:
        from benchmarks.suite import markdown

        print(markdown(rows(quick="--quick" in sys.argv)))
