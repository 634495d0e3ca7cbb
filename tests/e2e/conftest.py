"""Fixtures of the end-to-end tests: the real Claude Code CLI against a scripted Messages API.

Every test here is marked ``real_claude`` and runs offline: the CLI's ``ANTHROPIC_BASE_URL``
points at a :class:`~nexo_trio.testing.messages_api.ScriptedMessagesAPI` on loopback. Each
test gets its own ``HOME``, workspace and state directory under its ``tmp_path``, and a
process guard: every process started for it carries a marker in its environment, and a test
that leaves one behind fails (whatever it left is killed).

The binary is ``$NEXO_CLAUDE_BIN``, else ``.cache/claude-code/node_modules/.bin/claude`` in
the repository (``nox -s e2e`` installs it there); without it the tests skip, saying how to
get it.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import attrs
import psutil
import pytest
import trio

from nexo_trio.core.command import ClaudeCommand
from nexo_trio.core.goal import Budget, Criterion, Goal
from nexo_trio.core.goal_events import GoalEvent, SessionBound
from nexo_trio.core.goal_outcome import GoalOutcome
from nexo_trio.core.settings import ClaudeSettings, Config, PermissionTransport, ReplaySettings
from nexo_trio.engine.supervisor import TurnResult, run_turn
from nexo_trio.orchestrator.orchestrator import Orchestrator
from nexo_trio.store.base import Binding, LedgerEntry
from nexo_trio.testing.messages_api import ScriptedMessagesAPI
from nexo_trio.wire.goal_json import event_to_ledger
from tests.engine.conftest import ProcessGuard, is_gone, live_descendants

REPO_ROOT = Path(__file__).resolve().parents[2]
CLAUDE_CODE_VERSION = "2.1.332"
DEFAULT_CLAUDE_BIN = REPO_ROOT / ".cache" / "claude-code" / "node_modules" / ".bin" / "claude"
MARKER_VAR = "NEXO_E2E_MARKER"
"""Set (to a fresh id per test) in the environment of every process a test starts; the CLI's
children (Bash tools, MCP servers) inherit it, so even an orphan is recognised."""
LEFTOVER_GRACE = 3.0
"""How long a process that is being stopped or reaped gets before it counts as left behind."""

E = TypeVar("E")


def claude_binary() -> Path:
    """The real CLI's binary; skips the test, saying how to get it, when it is missing."""
    configured = os.environ.get("NEXO_CLAUDE_BIN")
    path = Path(configured) if configured else DEFAULT_CLAUDE_BIN
    if not (path.is_file() and os.access(path, os.X_OK)):
        where = "NEXO_CLAUDE_BIN" if configured else "the default location"
        pytest.skip(
            f"the real Claude Code CLI is not at {path} ({where}): run `nox -s e2e`, which "
            f"installs it, or `npm install @anthropic-ai/claude-code@{CLAUDE_CODE_VERSION}` "
            f"in {DEFAULT_CLAUDE_BIN.parents[2]} (or point NEXO_CLAUDE_BIN at a claude binary)"
        )
    return path


@pytest.fixture(scope="session")
def claude_bin() -> Path:
    """The real Claude Code CLI (see :func:`claude_binary`)."""
    return claude_binary()


# ----------------------------------------------------------------------------- processes


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def marked_processes(marker: str) -> dict[int, psutil.Process]:
    """Every live process (zombies left out) whose environment carries ``marker``."""
    me = os.getpid()
    found: dict[int, psutil.Process] = {}
    needle = f"{MARKER_VAR}={marker}".encode()
    for proc in psutil.process_iter():
        if proc.pid == me:
            continue
        try:
            # Read raw: psutil.Process.environ() parses, which is slower and can fail.
            with open(f"/proc/{proc.pid}/environ", "rb") as f:
                environ = f.read()
        except OSError:
            continue
        if needle in environ.split(b"\0") and _alive(proc):
            found[proc.pid] = proc
    return found


def describe(proc: psutil.Process) -> str:
    """``pid [cmdline]`` (or just the pid once it is gone)."""
    try:
        return f"{proc.pid} {proc.cmdline()}"
    except psutil.Error:
        return str(proc.pid)


@attrs.define
class E2EGuard:
    """The engine tests' :class:`ProcessGuard` (new descendants, watched pids) plus every
    process carrying this test's marker, wherever it was reparented."""

    base: ProcessGuard
    marker: str

    def leftovers(self) -> list[psutil.Process]:
        """Every process of this test still running."""
        found = {p.pid: p for p in self.base.leftovers()}
        for pid, proc in marked_processes(self.marker).items():
            found.setdefault(pid, proc)
        return list(found.values())

    def watch(self, pid: int) -> None:
        """Watch one more pid."""
        self.base.watch(pid)

    def kill_leftovers(self) -> list[str]:
        """SIGKILL every leftover; describe what was killed."""
        procs = self.leftovers()
        killed = [describe(p) for p in procs]
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        psutil.wait_procs(procs, timeout=2)
        return killed


@pytest.fixture(autouse=True)
def procs() -> Iterator[E2EGuard]:
    """No test leaves a process behind: the CLI, its MCP server, a Bash tool's command."""
    base = ProcessGuard(started_at=time.time(), before=frozenset(live_descendants()))
    guard = E2EGuard(base=base, marker=uuid.uuid4().hex)
    yield guard
    deadline = time.monotonic() + LEFTOVER_GRACE
    while guard.leftovers() and time.monotonic() < deadline:
        time.sleep(0.05)
    killed = guard.kill_leftovers()
    assert not killed, f"processes left behind: {killed}"


@attrs.define
class ProcessWatch:
    """Records every process carrying the test's marker while it runs (a trio task)."""

    marker: str
    seen: dict[int, tuple[float, list[str]]] = attrs.Factory(dict)
    """pid -> (create time, latest command line) of each marked process ever seen. The
    latest: a child seen between its fork and its exec still shows its parent's."""

    def scan(self) -> None:
        """Record the marked processes running now."""
        for pid, proc in marked_processes(self.marker).items():
            try:
                self.seen[pid] = (proc.create_time(), proc.cmdline())
            except psutil.Error:
                continue

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Scan every 50 ms until cancelled."""
        task_status.started()
        while True:
            self.scan()
            await trio.sleep(0.05)

    def matching(self, predicate: Callable[[list[str]], bool]) -> list[int]:
        """Pids of the processes seen whose command line satisfies ``predicate``."""
        return [pid for pid, (_, cmdline) in self.seen.items() if predicate(cmdline)]

    def still_running(self) -> list[str]:
        """The processes seen that are still running (pid reuse ruled out)."""
        alive = []
        for pid, (created, cmdline) in self.seen.items():
            try:
                proc = psutil.Process(pid)
                if proc.create_time() == created and not is_gone(pid):
                    alive.append(f"{pid} {cmdline}")
            except psutil.NoSuchProcess:
                continue
        return alive


# ----------------------------------------------------------------------------- a goal run


@attrs.frozen
class GoalRun:
    """What one goal run left: its outcome, every event (live ones too), the ledger, the
    bindings (invalid rows too) and each turn's :class:`TurnResult`."""

    outcome: GoalOutcome
    events: list[GoalEvent]
    ledger: list[LedgerEntry]
    bindings: list[Binding]
    turns: list[TurnResult]

    def of(self, kind: type[E]) -> list[E]:
        """The events of one type, in order."""
        return [e for e in self.events if isinstance(e, kind)]

    def ledger_kinds(self) -> list[str]:
        """The kinds of the ledger rows, in order."""
        return [entry.kind for entry in self.ledger]

    def rows(self, kind: str) -> list[dict[str, Any]]:
        """The data of the ledger rows of one kind."""
        return [entry.data for entry in self.ledger if entry.kind == kind]


@attrs.define
class E2E:
    """One test's world: a scripted API, the real CLI, and directories under ``root``."""

    root: Path
    claude_bin: Path
    api: ScriptedMessagesAPI
    guard: E2EGuard
    turns: list[TurnResult] = attrs.Factory(list)
    transport: PermissionTransport | None = None
    """The permission transport of every config made (``None``: the default)."""

    @property
    def home(self) -> Path:
        """The CLI's ``HOME`` (its settings, sessions and transcripts land there)."""
        return self.root / "home"

    @property
    def workspace(self) -> Path:
        """The goal's workspace."""
        return self.root / "ws"

    @property
    def state_dir(self) -> Path:
        """The orchestrator's state directory (SQLite ledger, gate socket, MCP configs)."""
        return self.root / "state"

    @property
    def marker(self) -> str:
        """The marker every process of this test carries in its environment."""
        return self.guard.marker

    def claude_env(self, **extra: str) -> dict[str, str]:
        """The CLI's environment: the scripted API (offline, dummy key, no telemetry), this
        test's ``HOME`` and the process marker, plus ``extra``."""
        env = self.api.claude_env(home=self.home)
        env[MARKER_VAR] = self.marker
        env.update(extra)
        return env

    def config(self, *, env: dict[str, str] | None = None, **overrides: Any) -> Config:
        """A config running the real CLI against the scripted API; ``overrides`` replace
        fields of :class:`Config`."""
        config = Config(
            claude=ClaudeSettings(binary=str(self.claude_bin), env=self.claude_env(**env or {})),
            turn_timeout_s=45.0,
            kill_grace_s=3.0,
            state_dir=str(self.state_dir),
            workspace_root=str(self.root / "workspaces"),
            replay=ReplaySettings(max_retries=3),
        )
        config = attrs.evolve(config, **overrides)
        if self.transport is not None and self.transport != config.permission.transport:
            permission = attrs.evolve(config.permission, transport=self.transport)
            config = attrs.evolve(config, permission=permission)
        return config

    def goal(
        self,
        description: str,
        acceptance: Sequence[Criterion],
        *,
        goal_id: str = "g1",
        **budget: Any,
    ) -> Goal:
        """A goal in :attr:`workspace`; ``budget`` replaces fields of :class:`Budget`."""
        limits: dict[str, Any] = {"max_turns": 4, "max_wall_time_s": 50.0, **budget}
        return Goal(
            id=goal_id,
            description=description,
            acceptance=tuple(acceptance),
            workspace=str(self.workspace),
            budget=Budget(**limits),
        )

    async def turn_runner(self, command: ClaudeCommand, **kwargs: Any) -> TurnResult:
        """``run_turn``, recording each turn's result (argv, pid, final state)."""
        result = await run_turn(command, **kwargs)
        self.turns.append(result)
        return result

    async def run(
        self,
        goal: Goal,
        config: Config | None = None,
        *,
        environ: dict[str, str] | None = None,
        bindings: Sequence[str] = (),
        during: Callable[[Orchestrator], Any] | None = None,
        decider: Any = None,
    ) -> GoalRun:
        """Run ``goal`` through an :class:`Orchestrator` with the SQLite store of
        :attr:`state_dir`. ``bindings`` are session ids put for the goal first (the last one
        is current); ``during(orch)`` runs as a task next to the goal; ``decider`` replaces the
        config's."""
        orch = Orchestrator(
            config or self.config(), turn_runner=self.turn_runner, environ=environ, decider=decider
        )
        first_turn = len(self.turns)
        async with orch:
            for session_id in bindings:
                # As an earlier run left it: the binding, and the ledger's record of it.
                await orch.store.put_binding(goal.id, session_id, workspace=str(self.workspace))
                bound = event_to_ledger(SessionBound(goal.id, session_id))
                await orch.store.append_events(goal.id, [bound])
            events = orch.subscribe()
            async with trio.open_nursery() as nursery:
                if during is not None:
                    nursery.start_soon(during, orch)
                outcome = await orch.run_goal(goal)
                nursery.cancel_scope.cancel()
            seen: list[GoalEvent] = []
            while True:
                try:
                    seen.append(events.receive_nowait())
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
            ledger = await orch.store.events(goal.id)
            rows = await orch.store.list_bindings(include_invalid=True)
        return GoalRun(outcome, seen, ledger, rows, self.turns[first_turn:])


@pytest.fixture
async def e2e(
    nursery: trio.Nursery,
    tmp_path: Path,
    claude_bin: Path,
    procs: E2EGuard,
    request: pytest.FixtureRequest,
) -> E2E:
    """A scripted Messages API serving (add replies with ``e2e.api.add``) and the
    directories of one end-to-end test. A test module's ``E2E_TRANSPORT`` is the
    permission transport of its configs (default: the config's default)."""
    api: ScriptedMessagesAPI = await nursery.start(ScriptedMessagesAPI().serve)
    transport = getattr(request.module, "E2E_TRANSPORT", None)
    world = E2E(root=tmp_path, claude_bin=claude_bin, api=api, guard=procs, transport=transport)
    world.home.mkdir()
    world.workspace.mkdir()
    return world
