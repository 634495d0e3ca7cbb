"""Confinement through the orchestrator and ``nexo-trio run``: with the default config a
command the gate allowed still cannot write outside the workspace; a ``kill -9`` of
``nexo-trio run`` mid-turn leaves no process of the turn alive within 2 s; an unconfined run
says why; ``sandbox.mode: bwrap`` without bubblewrap is a clear error."""

from __future__ import annotations

import os
import signal
import uuid

import attrs
import psutil
import pytest
import trio

import nexo_trio.orchestrator.orchestrator as orchestrator_module
from nexo_trio.core.goal import ShellCheck
from nexo_trio.core.goal_events import DecisionMade, GoalStarted
from nexo_trio.core.goal_outcome import GoalEndKind
from nexo_trio.core.settings import ClaudeSettings, SandboxSettings
from nexo_trio.engine.sandbox import probe_bwrap
from nexo_trio.orchestrator.orchestrator import Orchestrator, SandboxUnavailable
from nexo_trio.testing import FakeClaude, Turn, bash, hang, init, result, spawn, text, turn

from .conftest import Harness, orchestrator
from .test_crash_resume import nexo_trio

pytestmark = pytest.mark.skipif(
    not os.path.exists("/usr/bin/bwrap") and not os.path.exists("/bin/bwrap"),
    reason="bubblewrap is not installed: apt-get install bubblewrap",
)


async def confined_fake(h: Harness, *turns: Turn) -> tuple[FakeClaude, dict[str, str]]:
    """A fake claude keeping its records in ~/.claude (writable in the sandbox), and the
    CLI environment that says where that home is."""
    if await probe_bwrap() is not None:
        pytest.skip(f"bubblewrap does not work here: {await probe_bwrap()}")
    home = h.root / "home"
    fake = FakeClaude.create(
        h.root / "fake", list(turns), state_dir=home / ".claude" / "fake", max_lifetime=20
    )
    h.fakes.append(fake)
    return fake, {**fake.env, "HOME": str(home)}


async def test_an_allowed_interpreter_still_cannot_write_outside(h: Harness) -> None:
    outside = h.root / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("keep\n")
    # Code run by an interpreter: unknown to the rules, allowed because the turn is confined.
    attack = f"python3 -c \"open('{outside}/keep.txt', 'w').write('gone')\"; echo wrote"
    fake, env = await confined_fake(
        h,
        turn(
            init(),
            bash(attack),
            bash('echo ok > ok.txt && echo t > "$TMPDIR/t.txt"'),
            text("Done."),
            result("Done."),
        ),
    )
    config = attrs.evolve(
        h.config(),
        claude=ClaudeSettings(binary=str(fake.binary), env=env),
        sandbox=SandboxSettings(),
    )
    async with orchestrator(config) as (orch, rec):
        outcome = await orch.run_goal(h.goal(acceptance=(ShellCheck("test -f ok.txt"),)))

    assert outcome.kind is GoalEndKind.DONE
    assert (outside / "keep.txt").read_text() == "keep\n"
    (started,) = rec.of(GoalStarted)
    assert (started.confined, started.warnings) == (True, ())
    python, echo = rec.of(DecisionMade)
    assert (python.outcome, python.effect) == ("allow_once", "unknown")
    assert python.subject == attack
    assert (echo.outcome, echo.effect) == ("allow_once", "workspace")
    # TMPDIR is the goal's scratch dir, writable in the sandbox.
    assert (orch.layout.scratch("g1") / "t.txt").read_text() == "t\n"


async def test_a_kill_9_of_nexo_trio_run_leaves_no_process_of_the_turn(h: Harness) -> None:
    tag = f"{uuid.uuid4().int % 10**6}.25"  # a sleep nobody else runs: the daemon's mark
    fake, env = await confined_fake(
        h,
        turn(
            init(),
            # A daemon in a session of its own with a scrubbed environment: stray
            # detection by environment or process group could never find it.
            spawn(["setsid", "env", "-i", "/bin/sleep", tag]),
            text("Working..."),
            hang(),
        ),
    )
    goal = h.root / "goal.yaml"
    (goal.parent / "work").mkdir(exist_ok=True)
    goal.write_text(
        "id: killed\ndescription: Work.\nworkspace: ./work\n"
        "acceptance: [{kind: shell, command: 'true'}]\n"
    )
    config = h.root / "nexo.yaml"
    home = env["HOME"]
    config.write_text(
        f"claude: {{binary: {fake.binary}, env: {{HOME: {home}}}}}\n"
        f"state_dir: {h.root / 'state'}\nturn_timeout: 60s\n"
    )
    run_env = {**os.environ, **env}
    process = await trio.lowlevel.open_process(
        [nexo_trio(), "run", str(goal), "--config", str(config)], env=run_env, cwd=h.root
    )
    try:
        with trio.fail_after(20):
            while not (daemons := _running(tag)):  # noqa: ASYNC110 - another process tree
                await trio.sleep(0.05)
        assert daemons
        turn_procs = [*_running(str(h.root)), *daemons]
        assert turn_procs
    finally:
        process.send_signal(signal.SIGKILL)
        await process.wait()
    with trio.move_on_after(2.0):
        while _alive(turn_procs):  # noqa: ASYNC110 - no event for another process's death
            await trio.sleep(0.05)
    assert _alive(turn_procs) == [], "processes of the turn survived the kill -9"


def _running(needle: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if needle in cmdline and proc.pid != os.getpid():
            found.append(proc)
    return found


def _alive(procs: list[psutil.Process]) -> list[str]:
    alive = []
    for proc in procs:
        try:
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                alive.append(f"{proc.pid} {proc.cmdline()}")
        except psutil.NoSuchProcess:
            continue
    return alive


async def test_auto_without_a_working_bwrap_runs_unconfined_and_says_why(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(**_: object) -> str:
        return "bwrap is not installed (apt-get install bubblewrap)"

    monkeypatch.setattr(orchestrator_module, "probe_bwrap", broken)
    fake = h.fake(turn(init(), bash("echo hi > ok.txt"), text("Done."), result("Done.")))
    config = h.config(fake, sandbox=SandboxSettings(mode="auto"))
    async with orchestrator(config) as (orch, rec):
        outcome = await orch.run_goal(h.goal())
    assert outcome.kind is GoalEndKind.DONE
    (started,) = rec.of(GoalStarted)
    assert not started.confined
    assert started.warnings == (
        "turns run unconfined: bwrap is not installed (apt-get install bubblewrap)",
    )
    with pytest.raises(SandboxUnavailable, match=r"sandbox\.mode is bwrap, but bwrap is not"):
        async with Orchestrator(h.config(fake, sandbox=SandboxSettings(mode="bwrap"))):
            pass


async def test_unconfined_the_rules_deny_what_they_cannot_read(h: Harness) -> None:
    command = "python3 -c \"print('hi')\""
    fake = h.fake(turn(init(), bash(command), bash("touch ok.txt"), text("Done."), result("Done.")))
    async with orchestrator(h.config(fake)) as (orch, rec):  # sandbox.mode: none
        outcome = await orch.run_goal(h.goal())
    assert outcome.kind is GoalEndKind.DONE
    python, touch = rec.of(DecisionMade)
    assert (python.outcome, python.effect) == ("deny", "unknown")
    assert python.reason is not None
    assert "not sandboxed" in python.reason
    assert (touch.outcome, touch.effect) == ("allow_once", "workspace")
