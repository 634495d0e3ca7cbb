"""The fault matrix, goal level, in process: whole goals through one :class:`Orchestrator`
(its SQLite ledger a real file, the fake ``claude`` a real subprocess asking the real MCP
permission server over the real gate socket).

Each row asserts what applies of the four things of issue #10:

1. **the outcome**: the goal's end, its turns, its decision counts, the bindings;
2. **nothing survives**: no live process carries the test's directory (the fakes' argv,
   the environment every fake and its MCP server inherit) once the goal ended;
3. **no file descriptor leaks**: :func:`test_many_faulty_goals_leak_no_descriptors` runs
   rounds of these faults through one orchestrator and compares ``/proc/self/fd``;
4. **nothing is lost**: the ledger file, read back by a fresh connection, holds exactly the
   ledger events the orchestrator reported, event by event, in order, once each.

The rows: an invalid session (``replay.max_retries`` 0 and 3), the permission gate's
faults at the level of a goal (a decider that hangs, blocks the event loop past the gate's
deadline and so answers stale, raises, returns garbage; the MCP server gone mid-request),
and a disk that fills mid-turn and gets its space back before the end. The rows that need
``nexo-trio run`` as a process (exit codes, one-line messages, signals) are in
``test_cli_faults.py``.
"""

from __future__ import annotations

import os
import re
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import orjson
import psutil
import pytest
import trio

from nexo_trio.core.budget import BudgetAxis
from nexo_trio.core.command import ClaudeCommand
from nexo_trio.core.goal import FileMatchCheck, Goal
from nexo_trio.core.goal_events import (
    AttemptCompleted,
    DecisionMade,
    GoalEvent,
    ReplayDecided,
    SessionBound,
)
from nexo_trio.core.goal_outcome import GoalEndKind
from nexo_trio.core.permission import (
    Decision,
    DecisionOutcome,
    PermissionRequest,
    allow,
    deny_message,
)
from nexo_trio.core.settings import ClaudeSettings, PermissionSettings, ReplaySettings
from nexo_trio.engine import TurnResult, run_turn
from nexo_trio.orchestrator.state_dir import DB_NAME
from nexo_trio.testing.scenario import (
    FakeClaude,
    Turn,
    bash,
    init,
    result,
    text,
    turn,
)
from nexo_trio.wire.goal_json import event_to_ledger
from tests.engine.conftest import ProcessGuard, guard_processes
from tests.faults.probes import (
    FILL_RULE,
    Stored,
    assert_ledger_is,
    fill_command,
    kill_marked,
    mounted_tmpfs,
    open_fds,
    seed_binding,
    wait_unmarked,
)
from tests.orchestrator.conftest import DONE_FILE, Harness, orchestrator

BAD = "echo bad > bad.txt"
"""The call the faulty deciders fail on (it must never run)."""
GOOD = f"echo hi > {DONE_FILE}"
"""The call that does the goal (allowed)."""
TOOL_TIMEOUT = 3.0
"""``permission.tool_timeout_s``: decider 2.1 s < gate 2.25 s < MCP server 2.55 s < 3 s."""
FIFO_NAME = "results.txt"
BLOCK_S = 3.2
"""How long the blocking decider holds the event loop: past every deadline below the CLI's
own, so the MCP server has answered (denied) by the time the late reply comes."""


@pytest.fixture
def procs() -> Iterator[ProcessGuard]:
    """A test that leaves a process behind fails, and whatever it left is killed."""
    yield from guard_processes()


@pytest.fixture
def h(tmp_path: Path, procs: ProcessGuard) -> Iterator[Harness]:
    """Fakes, configs and goals under ``tmp_path``; afterwards no process may carry it."""
    harness = Harness(root=tmp_path, guard=procs)
    try:
        yield harness
    finally:
        harness.watch_fakes()
        killed = kill_marked(str(tmp_path))
    assert not killed, f"processes of the test survived it: {killed}"


def database(h: Harness) -> Path:
    return h.root / "state" / DB_NAME


def assert_nothing_survives(h: Harness) -> None:
    alive = wait_unmarked(str(h.root))
    assert not alive, f"processes of the goal survived it: {alive}"


def as_stored_rows(rows: list[tuple[str, dict[str, Any]]]) -> list[Stored]:
    """Ledger rows planted by hand, the way JSON stores them."""
    return [(kind, orjson.loads(orjson.dumps(data))) for kind, data in rows]


def resume_arg(argv: list[str]) -> str | None:
    values = [a.removeprefix("--resume=") for a in argv if a.startswith("--resume")]
    return values[0] if values else None


# --------------------------------------------------------------------------- 1. invalid session


@pytest.mark.parametrize("max_retries", [0, 3])
async def test_an_invalid_session_is_marked_and_a_fresh_session_does_the_goal(
    h: Harness, max_retries: int
) -> None:
    """The CLI does not know the goal's session ("No conversation found"): the binding is
    marked invalid; with retries the goal goes on in a fresh session at once, without
    them it escalates, and the re-run starts fresh instead of escalating again."""
    stale = str(uuid.uuid4())
    seeded = await seed_binding(database(h), "g1", stale)
    does_it = turn(init(), bash(GOOD), text("Done."), result("Done."))
    fake = h.fake(does_it, does_it)
    config = h.config(fake, replay=ReplaySettings(max_retries=max_retries))
    events: list[GoalEvent] = []
    async with orchestrator(config, sqlite=True) as (orch, rec):
        with trio.fail_after(30):
            first = await orch.run_goal(h.goal())
        events += rec.events()
        bindings = await orch.store.list_bindings(include_invalid=True)

    bad = fake.invocations()[0]
    assert resume_arg(bad["argv"]) == stale
    assert bad["resumed"]
    (decided,) = [e for e in events if isinstance(e, ReplayDecided) and e.action != "proceed"]
    assert decided.invalid_session == stale
    assert decided.reason is not None
    assert "No conversation found" in decided.reason
    causes = [a.cause for a in events if isinstance(a, AttemptCompleted)]
    assert causes[0] == "session_invalid"
    if max_retries == 0:
        assert first.kind is GoalEndKind.ESCALATED
        assert first.reason is not None
        assert "session invalid" in first.reason
        assert decided.action == "escalate"
        assert [(b.session_id, b.invalid) for b in bindings] == [(stale, True)]
        assert_nothing_survives(h)
        async with orchestrator(config, sqlite=True) as (orch, rec):
            with trio.fail_after(30):
                done = await orch.run_goal(h.goal())
            events += rec.events()
            bindings = await orch.store.list_bindings(include_invalid=True)
    else:
        done = first
        assert decided.action == "fresh_session"
        assert not decided.counted
    fresh = fake.invocations()[-1]
    assert len(fake.invocations()) == 2
    assert resume_arg(fresh["argv"]) is None
    assert not fresh["resumed"]
    assert done.kind is GoalEndKind.DONE
    assert done.session_id == fresh["session_id"] != stale
    # With retries the invalid turn is not counted; the escalation counted it (like any
    # escalating turn), and the re-run goes on from there.
    assert done.total_turns == (first.total_turns + 1 if max_retries == 0 else 1)
    assert [(b.session_id, b.invalid) for b in bindings] == [
        (fresh["session_id"], False),
        (stale, True),
    ]
    assert [e.session_id for e in events if isinstance(e, SessionBound)] == [fresh["session_id"]]
    assert (h.workspace() / DONE_FILE).exists()
    assert_nothing_survives(h)
    assert_ledger_is(database(h), events, "g1", before=seeded)


# --------------------------------------------------------------------------- 2. the gate


@attrs.frozen
class GateFault:
    """A way the permission decision of a call fails (at ``BAD``)."""

    name: str
    outcome: str
    """The outcome recorded for the failed call."""
    reason: str
    """What the recorded reason says (a pattern it matches whole)."""
    cli_got: tuple[str, str] | None = None
    """``(outcome, answer)`` the fake CLI logged for the failed call when it is not the
    recorded decision's deny message: the MCP server's own deny at its deadline, or a
    failed call (``error``: no answer at all)."""


GATE_FAULTS = [
    GateFault(
        "hangs", "unavailable", re.escape(f"decider timed out after {TOOL_TIMEOUT * 0.7:g}s")
    ),
    GateFault(
        "blocks-the-loop",
        "unavailable",
        re.escape(f"no decision within {TOOL_TIMEOUT * 0.75:g}s (one came after ")
        + r"[\d.]+s: the event loop was blocked\)",
        # The MCP server denied by its own deadline; the gate's late reply came after
        # that: stale, ignored (its stderr says so).
        (
            "deny",
            f"Permission denied: no decision from the orchestrator within {TOOL_TIMEOUT * 0.85:g}s",
        ),
    ),
    GateFault(
        "raises",
        "unavailable",
        re.escape("decider error: RuntimeError('the policy file is corrupt')"),
    ),
    GateFault("a-string", "unavailable", re.escape("decider returned str, not a Decision")),
    GateFault(
        "updated-input-not-json",
        "unavailable",
        re.escape("gate error: the decision cannot be sent (TypeError(") + ".*",
    ),
    GateFault(
        "client-gone",
        "cancelled",
        re.escape("decision abandoned"),
        ("error", "the server closed its stdout (during tools/call)"),
    ),
]


class Faulty:
    """A decider failing (as its fault says) on every call that writes ``bad.txt`` and
    allowing every other call; the blocking one blocks only once."""

    name = "faulty"

    def __init__(self, fault: str) -> None:
        self.fault = fault
        self.entered = trio.Event()
        self.failures = 0

    async def decide(self, request: PermissionRequest) -> Decision:
        command = request.input.get("command")
        if not isinstance(command, str) or "bad" not in command:
            await trio.lowlevel.checkpoint()
            return allow(self.name)
        self.failures += 1
        self.entered.set()
        match self.fault:
            case "hangs" | "client-gone":
                await trio.sleep_forever()
            case "blocks-the-loop":
                if self.failures == 1:
                    time.sleep(BLOCK_S)  # noqa: ASYNC251 - the fault under test
            case "raises":
                raise RuntimeError("the policy file is corrupt")
            case "a-string":
                return "allow"  # type: ignore[return-value]
            case "updated-input-not-json":
                return allow(self.name, updated_input={"command": {1, 2}})
        return allow(self.name)


def mcp_servers(goal_id: str) -> list[psutil.Process]:
    """The permission MCP servers of a goal's turns running now (this process's
    descendants: the fake's children)."""
    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            argv = proc.cmdline()
        except psutil.Error:
            continue
        if "nexo_trio.gate.mcp_stdio" in argv and goal_id in argv:
            found.append(proc)
    return found


async def kill_mcp_server(goal_id: str) -> None:
    """SIGKILL the goal's permission server (the gate socket's client) mid-request."""
    (server,) = mcp_servers(goal_id)
    server.send_signal(signal.SIGKILL)
    with trio.fail_after(5):
        while server.is_running() and server.status() != psutil.STATUS_ZOMBIE:  # noqa: ASYNC110
            await trio.sleep(0.02)  # another process: no event to wait on


def decisions_of(events: list[GoalEvent]) -> list[DecisionMade]:
    return [e for e in events if isinstance(e, DecisionMade)]


def what_the_cli_got(decision: DecisionMade, tool_input: dict[str, Any]) -> tuple[str, Any]:
    """``(outcome, answer)`` the fake CLI logs for a call the gate answered with
    ``decision``: the input for an allow, else the deny message Claude reads."""
    if decision.outcome.startswith("allow"):
        return "allow", tool_input
    sent = Decision(DecisionOutcome(decision.outcome), message=decision.reason)
    return "deny", deny_message(sent)


def calls(log: list[dict[str, Any]]) -> list[tuple[str, str, Any]]:
    """``(command, outcome, answer)`` of every permission call the fake CLI made."""
    return [(e["input"]["command"], e["outcome"], e["answer"]) for e in log]


@pytest.mark.parametrize("fault", GATE_FAULTS, ids=lambda f: f.name)
async def test_a_failed_decision_is_a_deny_recorded_as_the_cli_got_it(
    h: Harness, fault: GateFault
) -> None:
    """The decider fails on the first call: the CLI gets a deny (or, its server killed, no
    answer), the ledger records one decision for it, with its reason, counted as a denial;
    the next call is allowed and the goal ends done."""
    fake = h.fake(
        turn(init(), bash(BAD), bash(GOOD), text("Done."), result("Done.")),
        # Only played after the client-gone fault: the first turn's server is dead.
        turn(init(), bash(GOOD), text("Done."), result("Done.")),
    )
    config = h.config(fake, permission=PermissionSettings(tool_timeout_s=TOOL_TIMEOUT))
    decider = Faulty(fault.name)
    async with orchestrator(config, sqlite=True, decider=decider) as (orch, rec):
        handle = await orch.start_goal(h.goal())
        if fault.name == "client-gone":
            with trio.fail_after(10):
                await decider.entered.wait()
            await kill_mcp_server("g1")
        with trio.fail_after(30):
            outcome = await handle.wait()
        state = handle.state
        events = rec.events()

    gone = fault.name == "client-gone"
    assert outcome.kind is GoalEndKind.DONE
    assert outcome.total_turns == (2 if gone else 1)
    assert not (h.workspace() / "bad.txt").exists()
    assert (h.workspace() / DONE_FILE).exists()
    # Counted by the goal's state (the fold of the ledger): one denial, reset by the allow.
    assert (outcome.allowed, outcome.denied) == (1, 1)
    assert (state.allowed, state.denied, state.consecutive_denies) == (1, 1, 0)
    failed, allowed = decisions_of(events)
    assert (failed.subject, failed.outcome, failed.reason, failed.turn) == (
        BAD,
        fault.outcome,
        failed.reason,
        1,
    )
    assert failed.reason is not None
    assert re.fullmatch(fault.reason, failed.reason), failed.reason
    assert (allowed.subject, allowed.outcome, allowed.turn) == (
        GOOD,
        "allow_once",
        2 if gone else 1,
    )
    assert [d.turn for d in events if isinstance(d, AttemptCompleted)] == ([1, 2] if gone else [1])

    # What the CLI got for each call is what was recorded.
    got = fault.cli_got or what_the_cli_got(failed, {"command": BAD})
    expected = [(BAD, *got)]
    log = calls(fake.permission_log())
    if gone:
        # The second call of turn 1 never reached the gate (its server was dead): a failed
        # call, how it failed depending on when the pipe broke; no decision.
        command, outcome_, _ = log.pop(1)
        assert (command, outcome_) == (GOOD, "error")
    expected.append((GOOD, *what_the_cli_got(allowed, {"command": GOOD})))
    assert log == expected
    if fault.name == "blocks-the-loop":
        stderr = (fake.state_dir / "mcp-nexo.stderr").read_text()
        assert "ignoring a reply with unknown or stale id" in stderr

    assert_nothing_survives(h)
    assert_ledger_is(database(h), events, "g1")


class SlowToStop:
    """``run_turn``, the stop it is given passed on only ``delay_s`` later: a CLI that goes
    on for a while (asking for permissions) after its goal decided to stop it."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s

    async def __call__(
        self, command: ClaudeCommand, *, stop: trio.Event, **options: Any
    ) -> TurnResult:
        late = trio.Event()

        async def relay() -> None:
            await stop.wait()
            await trio.sleep(self.delay_s)
            late.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(relay)
            result = await run_turn(command, stop=late, **options)
            nursery.cancel_scope.cancel()
        return result


@pytest.mark.parametrize("fault", ["raises", "a-string", "updated-input-not-json"])
async def test_failed_decisions_count_towards_max_consecutive_denies(
    h: Harness, fault: str
) -> None:
    """Two failed decisions in a row reach ``max_consecutive_denies: 2``: the goal ends on
    that budget, and no call after them is allowed. Here the turn is slow to stop, so its
    next call comes in first: denied (``cancelled``: the goal is stopping it), never run,
    and not one more in the run of denials (the budget stopped the turn at its second); an
    allow would have run it and reset the count, and the goal would have gone on."""
    fake = h.fake(
        turn(
            init(),
            bash("echo bad one > bad.txt"),
            bash("echo bad two > bad.txt"),
            bash(GOOD),
            text("Done."),
            result("Done."),
        )
    )
    config = h.config(fake, permission=PermissionSettings(tool_timeout_s=TOOL_TIMEOUT))
    options: dict[str, Any] = {"decider": Faulty(fault), "turn_runner": SlowToStop(1.0)}
    async with orchestrator(config, sqlite=True, **options) as (orch, rec):
        handle = await orch.start_goal(h.goal(max_consecutive_denies=2))
        with trio.fail_after(30):
            outcome = await handle.wait()
        state = handle.state
        events = rec.events()

    recorded = decisions_of(events)
    assert [(d.subject, d.outcome) for d in recorded] == [
        ("echo bad one > bad.txt", "unavailable"),
        ("echo bad two > bad.txt", "unavailable"),
        (GOOD, "cancelled"),
    ]
    assert not (h.workspace() / "bad.txt").exists()
    assert not (h.workspace() / DONE_FILE).exists()
    assert (outcome.kind, outcome.axis) == (
        GoalEndKind.BUDGET_EXHAUSTED,
        BudgetAxis.CONSECUTIVE_DENIES,
    )
    assert outcome.reason == "max consecutive denials reached: 2 of 2"
    assert outcome.total_turns == 1
    assert (outcome.allowed, outcome.denied) == (0, 3)
    assert (state.denied, state.consecutive_denies) == (3, 2)
    answers = [(d.subject, *what_the_cli_got(d, {"command": d.subject})) for d in recorded]
    assert calls(fake.permission_log()) == answers
    assert answers[-1][2] == "Permission denied: the goal was cancelled"
    assert len(fake.invocations()) == 1
    assert_nothing_survives(h)
    assert_ledger_is(database(h), events, "g1")


# --------------------------------------------------------------------------- 3. disk full


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs of our own (skipped where mounting is not allowed)."""
    with mounted_tmpfs(tmp_path / "fs", size="2m") as mount_point:
        yield mount_point


async def test_a_disk_full_mid_turn_loses_nothing_once_space_comes_back(
    h: Harness, small_fs: Path
) -> None:
    """The state dir is on a small file system the turn fills: the events from then on
    are kept in memory; once the space is back (before the orchestrator closes), every
    one is written, in order, and nothing says unwritable."""
    filler = small_fs / "filler"
    fake = h.fake(
        turn(init(), bash(fill_command(filler)), bash(GOOD), text("Done."), result("Done."))
    )
    config = h.config(
        fake,
        state_dir=str(small_fs / "state"),
        claude=ClaudeSettings(binary=str(fake.binary), env=fake.env, allowed_tools=(FILL_RULE,)),
    )
    db = small_fs / "state" / DB_NAME
    async with orchestrator(config, sqlite=True) as (orch, rec):
        with trio.fail_after(30):
            outcome = await orch.run_goal(h.goal())
        store = orch.store
        # The goal went on while nothing could be written: a full disk.
        assert filler.stat().st_size > 0
        problem = store.write_problem
        assert problem is not None
        assert "full" in problem, problem
        kept = [e.kind for e in store.unwritten()]
        assert kept[-1] == "goal_completed"
        assert "decision_made" in kept  # from the middle of the turn
        assert orch.store_unwritable is None
        filler.unlink()
        with trio.fail_after(15):
            assert await store.wait_flushed(15.0)
        assert store.write_problem is None
        events = rec.events()
    assert orch.store_unwritable is None
    assert outcome.kind is GoalEndKind.DONE
    assert (outcome.allowed, outcome.denied) == (1, 0)
    assert_nothing_survives(h)
    assert_ledger_is(db, events, "g1")


# --------------------------------------------------------------------------- 4. descriptors


ROUNDS = max(3, int(os.environ.get("NEXO_FAULT_RUNS", "3")))
"""Rounds of the mixed faults through one orchestrator (the first one is the reference)."""


class ByGoal:
    """A decider factory: each goal's decider plays the fault its id names
    (``FAULT-ROUND``; a name that is no fault allows everything)."""

    def __init__(self) -> None:
        self.deciders: dict[str, Faulty] = {}

    def __call__(self, goal: Goal) -> Faulty:
        decider = self.deciders[goal.id] = Faulty(goal.id.rpartition("-")[0])
        return decider

    async def entered(self, goal_id: str) -> None:
        """Wait until the goal's decider was asked about the call it fails."""
        with trio.fail_after(10):
            while goal_id not in self.deciders:  # noqa: ASYNC110 - made when the run begins
                await trio.sleep(0.01)
            await self.deciders[goal_id].entered.wait()


async def test_many_faulty_goals_leak_no_descriptors(h: Harness) -> None:
    """Rounds of goals through one orchestrator, each round a mix of the faults above (an
    invalid session, deciders that raise, return garbage or cannot be sent, the MCP server
    killed mid-request, a file check on a FIFO), at once: this process's descriptors after
    the last round are those after the first, and every goal's ledger is what was
    reported."""
    does_it = turn(init(), bash(GOOD), text("Done."), result("Done."))
    fails_once = turn(init(), bash(BAD), bash(GOOD), text("Done."), result("Done."))
    claims = turn(init(), text("Done."), result("Done."))
    fix_fifo = turn(
        init(), bash(f"rm -f {FIFO_NAME} && echo hi > {FIFO_NAME}"), text("Done."), result("Done.")
    )
    kinds: dict[str, tuple[Turn, ...]] = {
        "session": (does_it, does_it),
        "raises": (fails_once,),
        "a-string": (fails_once,),
        "updated-input-not-json": (fails_once,),
        "client-gone": (fails_once, does_it),
        "fifo": (claims, fix_fifo),
    }
    fakes: dict[str, FakeClaude] = {}
    goals: list[list[Goal]] = []
    for n in range(ROUNDS):
        goals.append([])
        for kind, turns in kinds.items():
            goal_id = f"{kind}-{n}"
            fakes[goal_id] = h.fake(*turns, name=goal_id)
            goal = h.goal(goal_id)
            if kind == "fifo":
                os.makedirs(h.workspace(goal_id))
                os.mkfifo(h.workspace(goal_id) / FIFO_NAME)
                goal = attrs.evolve(goal, acceptance=(FileMatchCheck(FIFO_NAME, "^hi$"),))
            goals[-1].append(goal)
    first = next(iter(fakes.values()))
    config = h.config(
        first, permission=PermissionSettings(tool_timeout_s=TOOL_TIMEOUT), max_concurrent_goals=8
    )
    deciders = ByGoal()
    options: dict[str, Any] = {
        "decider": deciders,
        "goal_env": lambda goal: fakes[goal.id].env,
    }
    events: list[GoalEvent] = []
    seeded: dict[str, list[Stored]] = {}
    async with orchestrator(config, sqlite=True, **options) as (orch, rec):
        fds: list[int] = []
        for round_goals in goals:
            for goal in round_goals:
                if goal.id.startswith("session"):
                    # Bound to a session the CLI does not know (an earlier life's).
                    stale = str(uuid.uuid4())
                    bound = [event_to_ledger(SessionBound(goal.id, stale, at=time.time()))]
                    await orch.store.put_binding(goal.id, stale)
                    await orch.store.append_events(goal.id, bound)
                    seeded[goal.id] = as_stored_rows(bound)
            with trio.fail_after(60):
                handles = [await orch.start_goal(goal) for goal in round_goals]
                gone = next(goal.id for goal in round_goals if goal.id.startswith("client"))
                await deciders.entered(gone)
                await kill_mcp_server(gone)
                outcomes = [await handle.wait() for handle in handles]
            assert [o.kind for o in outcomes] == [GoalEndKind.DONE] * len(round_goals), outcomes
            assert [(o.allowed, o.denied) for o in outcomes] == [
                (1, 0),  # an invalid session
                (1, 1),  # three failed decisions
                (1, 1),
                (1, 1),
                (1, 1),  # the MCP server killed mid-request
                (1, 0),  # a FIFO: refused, then the turn replaces it
            ]
            assert_nothing_survives(h)
            fds.append(await settled_fds(fds[0] if fds else None))
        events += rec.events()
    assert fds[-1] == fds[0], f"file descriptors leaked over {ROUNDS - 1} rounds: {fds}"
    for round_goals in goals:
        for goal in round_goals:
            assert_ledger_is(database(h), events, goal.id, before=seeded.get(goal.id, []))


async def settled_fds(reference: int | None) -> int:
    """This process's open descriptors once closing ones have closed (at most 5 s for the
    count to come down to ``reference``)."""
    with trio.move_on_after(5):
        while reference is not None and open_fds() > reference:  # noqa: ASYNC110
            await trio.sleep(0.02)  # no event tells of a closed descriptor
    return open_fds()
