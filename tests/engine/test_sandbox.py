"""Confined turns (issue #9): the pure bwrap plan, the probe and the preparation of its paths,
and ``run_turn(..., sandbox=plan)`` against the fake ``claude`` under the real bubblewrap.

Every test that runs bwrap skips, saying how to get it, where bubblewrap is missing or does
not work.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import psutil
import pytest
import trio

from nexo_trio.core.command import PROMPT_ARGV_LIMIT
from nexo_trio.core.events import (
    ProcessExited,
    Spawned,
    SpawnFailed,
    StderrTail,
    ToolResultBlock,
    UserMessage,
)
from nexo_trio.core.outcome import Cause, TurnKind, TurnOutcome
from nexo_trio.core.sandbox import CLI_DIR, CLI_FILE, Mount, SandboxPlan, bwrap_argv
from nexo_trio.engine import ClaudeCommand, TurnResult, process_tree, run_turn
from nexo_trio.engine.sandbox import clear_probe_cache, prepare_sandbox, probe_bwrap
from nexo_trio.testing.scenario import (
    FakeClaude,
    Step,
    api_error,
    bash,
    exit_with,
    hang,
    ignore_sigterm,
    init,
    kill_self,
    result,
    sleep,
    spawn,
    text,
    turn,
)
from tests.engine.conftest import FakeClaudeFactory, is_gone
from tests.engine.helpers import EventLog

TIMEOUT = 20.0
READ_ONLY = "Read-only file system"


# ----------------------------------------------------------------------------- the pure plan


def test_the_argv_of_a_plan() -> None:
    plan = SandboxPlan(
        workspace="/work/ws",
        scratch="/state/tmp/g1",
        writable=("/cache/pip",),
        cli_home="/home/u",
        readable=("/state/run/gate.sock",),
    )
    argv = bwrap_argv(plan, chdir="/work/ws", json_status_fd=7)
    assert argv == [
        "bwrap",
        "--json-status-fd", "7",
        "--ro-bind", "/", "/",
        "--dev", "/dev",
        "--proc", "/proc",
        "--tmpfs", "/tmp",
        "--bind", "/work/ws", "/work/ws",
        "--bind", "/cache/pip", "/cache/pip",
        "--ro-bind", "/state/run/gate.sock", "/state/run/gate.sock",
        "--bind", "/state/tmp/g1", "/state/tmp/g1",
        "--bind", "/home/u/.claude", "/home/u/.claude",
        "--bind", "/home/u/.claude.json", "/home/u/.claude.json",
        "--unshare-pid", "--die-with-parent", "--new-session", "--cap-drop", "ALL",
        "--chdir", "/work/ws",
        "--",
    ]  # fmt: skip
    # The home directory itself is never bound: only the CLI's two entries in it are.
    assert "/home/u" not in argv
    assert plan.env == {"TMPDIR": "/state/tmp/g1"}


def test_no_network_only_when_asked() -> None:
    with_net = bwrap_argv(SandboxPlan("/ws", "/scratch"))
    without = bwrap_argv(SandboxPlan("/ws", "/scratch", network=False))
    assert "--unshare-net" not in with_net
    assert without.count("--unshare-net") == 1
    assert [a for a in without if a != "--unshare-net"] == with_net


def test_binds_go_shallowest_first_so_the_most_specific_path_decides() -> None:
    plan = SandboxPlan(
        workspace="/state/workspaces/g1",  # writable, inside a read-only state dir
        scratch="/scratch",
        writable=("/repo",),
        readable=("/state", "/repo/secrets"),  # read-only, inside a writable repo
    )
    assert plan.mounts() == [
        Mount("/state", False),
        Mount("/scratch", True),
        Mount("/repo", True),
        Mount("/repo/secrets", False),
        Mount("/state/workspaces/g1", True),
    ]
    argv = bwrap_argv(plan)
    # The root bind and the fresh /dev, /proc and /tmp come before every bind.
    assert argv.index("--tmpfs") < argv.index("--bind")
    assert argv.index("/state") < argv.index("/state/workspaces/g1")
    assert argv.index("/repo") < argv.index("/repo/secrets")


def test_a_path_both_readable_and_writable_is_writable_and_bound_once() -> None:
    plan = SandboxPlan("/ws", "/scratch", writable=("/data",), readable=("/data", "/ws"))
    assert [m for m in plan.mounts() if m.path in ("/data", "/ws")] == [
        Mount("/data", True),
        Mount("/ws", True),
    ]
    assert plan.writable_paths() == ("/data", "/ws", "/scratch")


def test_no_private_tmp_when_asked() -> None:
    assert "--tmpfs" not in bwrap_argv(SandboxPlan("/ws", "/scratch", private_tmp=False))


@pytest.mark.parametrize("bad", ["relative/ws", "/ws/../etc", "/ws/", "//ws", "/", "", "/a\0b"])
def test_paths_must_be_absolute_and_normalised(bad: str) -> None:
    with pytest.raises(ValueError, match=r"^workspace must"):
        SandboxPlan(bad, "/scratch")
    with pytest.raises(ValueError, match=r"^writable must"):
        SandboxPlan("/ws", "/scratch", writable=(bad,))
    with pytest.raises(ValueError, match=r"^readable must"):
        SandboxPlan("/ws", "/scratch", readable=(bad,))


def test_a_plan_is_frozen_and_takes_a_single_path_as_a_tuple() -> None:
    plan = SandboxPlan("/ws", "/scratch", writable="/one", readable="/two")
    assert plan.writable == ("/one",)
    assert plan.readable == ("/two",)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        plan.network = False  # type: ignore[misc]


# ----------------------------------------------------------------------------- probe and setup


@pytest.fixture
def fresh_probes() -> Iterator[None]:
    clear_probe_cache()
    yield
    clear_probe_cache()


def fake_bwrap(path: Path, *, stderr: str, code: int) -> Path:
    """An executable standing in for bwrap: counts its runs, prints ``stderr``, exits."""
    path.write_text(
        f"#!/bin/sh\necho run >> {path}.runs\nprintf '%s\\n' {stderr!r} >&2\nexit {code}\n"
    )
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


async def test_probe_names_a_missing_bwrap_and_how_to_get_it(fresh_probes: None) -> None:
    reason = await probe_bwrap("/nonexistent/bwrap")
    assert reason == "/nonexistent/bwrap is not installed (apt-get install bubblewrap)"


async def test_probe_reports_a_bwrap_without_namespaces_once(
    fresh_probes: None, tmp_path: Path
) -> None:
    fake = fake_bwrap(
        tmp_path / "bwrap",
        stderr="bwrap: No permissions to create a new namespace, likely because the kernel "
        "does not allow non-privileged user namespaces.",
        code=1,
    )
    reason = await probe_bwrap(str(fake))
    assert reason is not None
    assert reason.startswith("bwrap cannot create a user namespace: No permissions to create")
    assert await probe_bwrap(str(fake)) == reason  # cached: bwrap ran once
    assert (tmp_path / "bwrap.runs").read_text().count("run") == 1


async def test_probe_reports_any_other_failure(fresh_probes: None, tmp_path: Path) -> None:
    fake = fake_bwrap(tmp_path / "bwrap", stderr="bwrap: Unknown option --cap-drop", code=1)
    assert await probe_bwrap(str(fake)) == "bwrap does not work here: Unknown option --cap-drop"


async def test_probe_is_bounded(fresh_probes: None, tmp_path: Path) -> None:
    slow = tmp_path / "bwrap"
    slow.write_text("#!/bin/sh\nexec sleep 30\n")
    slow.chmod(0o755)
    started = time.monotonic()
    reason = await probe_bwrap(str(slow), timeout=0.5)
    assert reason == f"{slow} did not finish a trial run within 0.5s"
    assert time.monotonic() - started < 5


async def test_probe_passes_where_bwrap_works(fresh_probes: None) -> None:
    await require_bwrap()
    assert await probe_bwrap(network=False) is None


def test_prepare_makes_the_paths_and_resolves_them(tmp_path: Path) -> None:
    real_ws = tmp_path / "real-ws"
    real_ws.mkdir()
    link = tmp_path / "ws-link"
    link.symlink_to(real_ws)
    home = tmp_path / "home"
    plan = prepare_sandbox(
        link,
        tmp_path / "state" / "tmp" / "g1",
        home=home,
        writable=[tmp_path / "missing", tmp_path],
        readable=[tmp_path / "no-socket-yet"],
        network=False,
    )
    assert plan.workspace == str(real_ws)
    scratch = Path(plan.scratch)
    assert scratch.is_dir()
    assert stat.S_IMODE(scratch.stat().st_mode) == 0o700
    assert plan.cli_home == str(home)
    assert stat.S_IMODE((home / CLI_DIR).stat().st_mode) == 0o700
    assert (home / CLI_FILE).read_text() == "{}"
    assert stat.S_IMODE((home / CLI_FILE).stat().st_mode) == 0o600
    assert plan.writable == (str(tmp_path),)  # the missing one is left out
    # The missing one is left out too; what is there is this interpreter and package, when
    # they live below /tmp (which the private /tmp would hide).
    assert str(tmp_path / "no-socket-yet") not in plan.readable
    assert all(path.startswith("/tmp/") for path in plan.readable)
    assert plan.network is False


def test_prepare_keeps_an_existing_cli_state_and_follows_symlinks(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    dotfiles = tmp_path / "dotfiles"
    dotfiles.mkdir()
    (dotfiles / "claude.json").write_text('{"numStartups": 3}')
    (home / CLI_FILE).symlink_to(dotfiles / "claude.json")
    ws = tmp_path / "ws"
    ws.mkdir()
    plan = prepare_sandbox(ws, tmp_path / "scratch", home=home)
    assert (dotfiles / "claude.json").read_text() == '{"numStartups": 3}'
    # A symlinked entry: its target is bound, not the home's name for it.
    assert plan.cli_home is None
    assert plan.writable == (str(home / CLI_DIR), str(dotfiles / "claude.json"))


def test_prepare_wants_an_existing_workspace(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"the workspace .* does not exist"):
        prepare_sandbox(tmp_path / "nope", tmp_path / "scratch")
    (tmp_path / "file").write_text("")
    with pytest.raises(NotADirectoryError):
        prepare_sandbox(tmp_path / "file", tmp_path / "scratch")


# ----------------------------------------------------------------------------- confined turns


async def require_bwrap() -> None:
    """Skip, saying how to get it, unless bubblewrap works here."""
    reason = await probe_bwrap()
    if reason is not None:
        pytest.skip(f"needs a working bubblewrap: {reason} (apt-get install bubblewrap)")


@attrs.define
class World:
    """A confined turn's directories, and the fake that plays it."""

    root: Path
    fake: FakeClaude
    private_tmp: bool = True

    @property
    def workspace(self) -> Path:
        return self.root / "ws"

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def outside(self) -> Path:
        """A directory the turn must not change."""
        return self.root / "outside"

    def plan(self, **overrides: Any) -> SandboxPlan:
        """The turn's plan. Under a private /tmp (these paths all live in /tmp), the fake's
        files, the home and the outside dir are bound read-only so the turn still sees them;
        the fake's state dir is writable (it keeps its sessions there)."""
        readable = [self.fake.directory, self.home, self.outside] if self.private_tmp else []
        plan = prepare_sandbox(
            self.workspace,
            self.root / "scratch",
            home=self.home,
            writable=[self.fake.state_dir],
            readable=readable,
            private_tmp=self.private_tmp,
        )
        return attrs.evolve(plan, **overrides)

    def command(self, prompt: str = "go", **options: Any) -> ClaudeCommand:
        env = {"HOME": str(self.home), **options.pop("env", {})}
        return self.fake.command(prompt, cwd=self.workspace, env=env, **options)

    async def run(
        self, log: EventLog | None = None, *, plan: SandboxPlan | None = None, **kw: Any
    ) -> TurnResult:
        kw.setdefault("timeout", TIMEOUT)
        kw.setdefault("kill_grace", 1.0)
        command = kw.pop("command", None) or self.command()
        return await run_turn(command, on_events=log, sandbox=plan or self.plan(), **kw)


@pytest.fixture
async def world(make_fake: FakeClaudeFactory, tmp_path: Path) -> World:
    await require_bwrap()
    w = World(root=tmp_path, fake=make_fake())
    for d in (w.workspace, w.home, w.outside):
        d.mkdir()
    (w.outside / "keep.txt").write_text("precious\n")
    (w.outside / "sub").mkdir()
    (w.outside / "sub" / "data.bin").write_bytes(bytes(range(256)))
    return w


def playing(world: World, *turns: Any) -> World:
    """The world with a fake playing ``turns`` (in a directory of its own)."""
    fake = FakeClaude.create(world.root / f"fake-{uuid.uuid4().hex[:8]}", turns, max_lifetime=20)
    return attrs.evolve(world, fake=fake)


def tree_digest(root: Path) -> dict[str, str]:
    """Every entry under ``root``: its mode, and its bytes' digest for files."""
    found: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
        found[str(path.relative_to(root))] = f"{oct(info.st_mode)} {digest}"
    return found


def tool_results(log: EventLog) -> list[ToolResultBlock]:
    """The tool results the fake fed back, in order."""
    return [
        block
        for event in log.events
        if isinstance(event, UserMessage)
        for block in event.content
        if isinstance(block, ToolResultBlock)
    ]


async def test_a_confined_turn_writes_its_workspace_and_claims_done(world: World) -> None:
    w = playing(world, turn(init(), bash("echo hi > hello.txt"), text("Done."), result("Done.")))
    log = EventLog()
    res = await w.run(log)
    assert res.outcome.kind is TurnKind.CLAIMED_DONE
    assert res.outcome.cause is Cause.COMPLETED
    assert res.outcome.exit_code == 0
    assert res.stop_actions == ()
    assert (w.workspace / "hello.txt").read_text() == "hi\n"
    assert [r.is_error for r in tool_results(log)] == [False]
    # The engine reports bwrap's argv and pid, and the events fold to the outcome.
    assert res.argv[0] == "bwrap"
    assert res.argv[res.argv.index("--") + 1 :] == tuple(w.command().argv())
    assert isinstance(log.events[0], Spawned)
    assert log.events[0].pid == res.pid
    assert isinstance(log.events[-1], StderrTail)
    assert log.replayed_outcome() == res.outcome
    [invocation] = w.fake.invocations()
    assert invocation["cwd"] == str(w.workspace)
    assert res.pid is not None
    assert is_gone(res.pid)


OUTSIDE_WRITES = {
    "python-open": "python3 -c \"open('{outside}/x', 'w')\"",
    "shell-redirect-in-home": "echo x > $HOME/x",
    "rm-rf": "rm -rf {outside}",
    "overwrite": "echo gone > {outside}/keep.txt",
    "touch-in-subdir": "touch {outside}/sub/new",
}


@pytest.mark.parametrize("private_tmp", [True, False], ids=["private-tmp", "host-tmp"])
@pytest.mark.parametrize("case", list(OUTSIDE_WRITES))
async def test_writing_outside_fails_read_only_and_changes_nothing(
    world: World, case: str, private_tmp: bool
) -> None:
    command = OUTSIDE_WRITES[case].format(outside=world.outside)
    w = attrs.evolve(
        playing(world, turn(init(), bash(command), text("Tried."), result("Tried."))),
        private_tmp=private_tmp,
    )
    plan = w.plan()
    outside_before = tree_digest(w.outside)
    home_before = tree_digest(w.home)
    log = EventLog()
    res = await w.run(log, plan=plan)
    assert res.outcome.kind is TurnKind.CLAIMED_DONE
    [tried] = tool_results(log)
    assert tried.is_error
    assert READ_ONLY in str(tried.content)
    assert tree_digest(w.outside) == outside_before
    assert not (w.home / "x").exists()
    # Only the CLI's own entries of the home may change (the fake writes none).
    assert tree_digest(w.home) == home_before


async def test_the_private_tmp_hides_the_hosts_and_is_thrown_away(world: World) -> None:
    host_file = Path("/tmp") / f"nexo-sandbox-test-{uuid.uuid4().hex}"
    host_file.write_text("host\n")
    try:
        w = playing(
            world,
            turn(
                init(),
                bash(f"cat {host_file}"),
                bash("echo private > /tmp/made-inside && cat /tmp/made-inside"),
                text("ok"),
                result("ok"),
            ),
        )
        log = EventLog()
        res = await w.run(log)
        assert res.outcome.kind is TurnKind.CLAIMED_DONE
        hidden, made = tool_results(log)
        assert hidden.is_error
        assert "No such file or directory" in str(hidden.content)
        assert not made.is_error
        assert "private" in str(made.content)
        assert not await trio.Path("/tmp/made-inside").exists()
        assert host_file.read_text() == "host\n"
    finally:
        host_file.unlink()


async def test_tmpdir_is_the_scratch_dir_and_writable(world: World) -> None:
    w = playing(
        world,
        turn(
            init(),
            bash('echo "$TMPDIR"; f=$(mktemp); echo made > "$f"; echo "$f"'),
            text("ok"),
            result("ok"),
        ),
    )
    plan = w.plan()
    log = EventLog()
    res = await w.run(log, plan=plan)
    assert res.outcome.kind is TurnKind.CLAIMED_DONE
    [made] = tool_results(log)
    assert not made.is_error
    tmpdir, path = str(made.content).split()
    assert tmpdir == plan.scratch
    assert Path(path).parent == Path(plan.scratch)
    assert await trio.Path(path).read_text() == "made\n"
    [invocation] = w.fake.invocations()
    assert invocation["env"].get("NEXO_TRIO_TURN")  # the engine's marker still gets in


async def test_a_long_prompt_on_stdin_reaches_the_confined_cli(world: World) -> None:
    w = playing(world, turn(init(), text("ok"), result("ok")))
    prompt = "x" * (PROMPT_ARGV_LIMIT + 10)
    res = await w.run(command=w.command(prompt))
    assert res.outcome.kind is TurnKind.CLAIMED_DONE
    [invocation] = w.fake.invocations()
    assert invocation["stdin"] == prompt


SAME_OUTCOME: dict[str, tuple[Step, ...]] = {
    "claimed-done": (init(), text("Done."), result("Done.")),
    "exit-3-no-result": (init(), text("hm"), exit_with(3)),
    "clean-exit-no-result": (init(), text("hm")),
    "killed-by-sigkill": (init(), text("hm"), kill_self("SIGKILL")),
    "api-error": (init(), api_error(529, "overloaded"), exit_with(1)),
    "execution-error": (
        init(),
        result(None, subtype="error_during_execution", is_error=True, errors=["disk full"]),
        exit_with(1),
    ),
}


def essentials(outcome: TurnOutcome) -> tuple[Any, ...]:
    """What the goal acts on: kind, cause, reason, final text, session found."""
    return (
        outcome.kind,
        outcome.cause,
        outcome.reason,
        outcome.final_text,
        outcome.session_id is not None,
    )


@pytest.mark.parametrize("case", list(SAME_OUTCOME))
async def test_a_confined_turn_is_classified_like_an_unconfined_one(
    world: World, make_fake: FakeClaudeFactory, case: str
) -> None:
    steps = SAME_OUTCOME[case]
    confined = await playing(world, turn(*steps)).run()
    plain_fake = make_fake(turn(*steps))
    plain = await run_turn(
        plain_fake.command("go", cwd=world.workspace), timeout=TIMEOUT, kill_grace=1.0
    )
    assert essentials(confined.outcome) == essentials(plain.outcome)
    assert confined.stop_actions == plain.stop_actions == ()


async def test_a_death_by_signal_is_reported_as_bwrap_reports_it(world: World) -> None:
    # bwrap passes a death by signal N on as exit code 128 + N; the reducer reads both.
    res = await playing(world, turn(init(), kill_self("SIGKILL"))).run()
    assert res.outcome.kind is TurnKind.CONTINUE
    assert res.outcome.cause is Cause.INTERRUPTED
    assert res.outcome.reason == "interrupted: claude was killed by SIGKILL"
    assert (res.outcome.exit_code, res.outcome.exit_signal) == (137, None)
    assert ProcessExited(exit_code=137).killed_signal == signal.SIGKILL


async def test_the_cli_itself_gets_the_sigterm_and_ends_its_turn(world: World) -> None:
    # The fake, like Claude Code, stops its children and exits 143 on SIGTERM: no SIGKILL
    # needed. Had the SIGTERM gone to bwrap, the CLI would have been SIGKILLed instead.
    w = playing(world, turn(init(), text("working"), hang()))
    started = time.monotonic()
    res = await w.run(timeout=1.0, kill_grace=5.0)
    assert time.monotonic() - started < 4.0
    assert res.outcome.kind is TurnKind.CONTINUE
    assert res.outcome.cause is Cause.TIMEOUT
    assert res.outcome.reason == "turn timeout after 1s"
    assert res.stop_actions == ("SIGTERM",)
    assert res.outcome.exit_code == 143


async def test_a_stop_request_cancels_a_confined_turn(world: World) -> None:
    w = playing(world, turn(init(), text("working"), hang()))
    stop = trio.Event()
    log = EventLog(on_batch=lambda state, batch: stop.set() if state.init is not None else None)
    res = await w.run(log, stop=stop)
    assert res.outcome.kind is TurnKind.CANCELLED
    assert res.outcome.reason == "stop requested"
    assert res.stop_actions == ("SIGTERM",)


async def test_a_cli_ignoring_sigterm_is_killed_after_the_grace(world: World) -> None:
    w = playing(world, turn(init(), ignore_sigterm(), text("stubborn"), hang()))
    started = time.monotonic()
    res = await w.run(timeout=1.0, kill_grace=0.5)
    elapsed = time.monotonic() - started
    assert res.outcome.kind is TurnKind.CONTINUE
    assert res.outcome.reason == "turn timeout after 1s"
    assert res.stop_actions == ("SIGTERM", "SIGKILL")
    assert res.outcome.exit_signal == signal.SIGKILL  # bwrap itself was SIGKILLed
    assert 1.4 < elapsed < 5.0


def marked(marker: str) -> list[psutil.Process]:
    """Running processes whose command line carries ``marker``."""
    found = []
    for proc in psutil.process_iter():
        try:
            if any(marker in arg for arg in proc.cmdline()) and not is_gone(proc.pid):
                found.append(proc)
        except psutil.Error:
            continue
    return found


def describe(proc: psutil.Process) -> str:
    """``pid [cmdline]``, or just the pid once it is gone."""
    try:
        return f"{proc.pid} {proc.cmdline()}"
    except psutil.Error:
        return str(proc.pid)


def daemon(marker: str, *, holds_stdout: bool = False) -> Step:
    """A grandchild in a session of its own with a scrubbed environment (no turn marker),
    recognisable by ``marker`` in its command line."""
    argv = ["setsid", "env", "-i", "sh", "-c", f"sleep 300; : {marker}"]
    return spawn(argv, inherit_stdout=holds_stdout)


async def wait_until_marked(marker: str, timeout: float = 5.0) -> None:
    with trio.fail_after(timeout):
        while not marked(marker):  # noqa: ASYNC110 - polls /proc, nothing to wait on
            await trio.sleep(0.02)


@pytest.mark.parametrize("ending", ["result", "holds-stdout", "timeout", "sigterm-ignored"])
async def test_nothing_the_turn_started_outlives_it(world: World, ending: str) -> None:
    marker = f"nexo-daemon-{uuid.uuid4().hex}"
    tail: tuple[Step, ...] = {
        "result": (sleep(0.3), text("left a daemon"), result("left a daemon")),
        "holds-stdout": (sleep(0.3), text("left a daemon"), result("left a daemon")),
        "timeout": (hang(),),
        "sigterm-ignored": (ignore_sigterm(), hang()),
    }[ending]
    w = playing(world, turn(init(), daemon(marker, holds_stdout=ending == "holds-stdout"), *tail))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait_until_marked, marker)
        res = await w.run(timeout=2.0, kill_grace=0.5)
    done = ending in ("result", "holds-stdout")
    expected = TurnKind.CLAIMED_DONE if done else TurnKind.CONTINUE
    assert res.outcome.kind is expected
    # Gone when run_turn returns (the namespace died with bwrap): no /proc hunt needed.
    with trio.fail_after(1.0):
        while marked(marker):  # noqa: ASYNC110
            await trio.sleep(0.02)
    assert "SIGKILL to the sandbox" not in res.stop_actions
    if done:  # the daemon died with the namespace, the moment the CLI exited
        assert res.stop_actions == ()


async def test_a_confined_turn_scans_no_proc(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def forbidden(name: str) -> Any:
        def record(*args: Any, **kwargs: Any) -> Any:
            calls.append(name)
            return []

        return record

    monkeypatch.setattr(process_tree, "find_strays", forbidden("find_strays"))
    monkeypatch.setattr(process_tree.ProcessTree, "snapshot", forbidden("snapshot"))
    marker = f"nexo-daemon-{uuid.uuid4().hex}"
    w = playing(world, turn(init(), daemon(marker), ignore_sigterm(), hang()))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait_until_marked, marker)
        res = await w.run(timeout=1.5, kill_grace=0.3)
    assert res.stop_actions == ("SIGTERM", "SIGKILL")
    assert calls == []
    with trio.fail_after(1.0):
        while marked(marker):  # noqa: ASYNC110
            await trio.sleep(0.02)


async def test_a_turn_longer_than_trios_idle_thread_lives_on(world: World) -> None:
    # --die-with-parent is PR_SET_PDEATHSIG, tied to the *thread* that forked bwrap: forked
    # from one of trio's worker threads, the sandbox was SIGKILLed when that thread exited
    # after 10 s idle. The engine forks confined turns from the trio thread.
    w = playing(world, turn(init(), sleep(11.0), text("slow"), result("slow")))
    res = await w.run(timeout=30.0)
    assert res.outcome.kind is TurnKind.CLAIMED_DONE, res.outcome
    assert res.outcome.final_text == "slow"


@pytest.mark.parametrize("network", [True, False], ids=["network", "no-network"])
async def test_no_network_means_not_even_the_hosts_loopback(world: World, network: bool) -> None:
    # What --unshare-net does to the Messages API too: a turn with network=False has only
    # a loopback of its own, so a server on the host (the API, a proxy) is out of reach.
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    probe = (
        "python3 -c \"import socket; s = socket.create_connection(('127.0.0.1', "
        f"{port}), 2); print('connected')\""
    )
    w = playing(world, turn(init(), bash(probe), text("ok"), result("ok")))
    log = EventLog()
    try:
        res = await w.run(log, plan=w.plan(network=network))
    finally:
        for listener in listeners:
            await listener.aclose()
    assert res.outcome.kind is TurnKind.CLAIMED_DONE
    [tried] = tool_results(log)
    if network:
        assert not tried.is_error
        assert "connected" in str(tried.content)
    else:
        assert tried.is_error
        assert "Connection refused" in str(tried.content)


# ----------------------------------------------------------------------------- bwrap failures


async def test_a_sandbox_that_cannot_be_set_up_escalates_saying_why(world: World) -> None:
    w = playing(world, turn(init(), result("never")))
    plan = attrs.evolve(w.plan(), readable=("/nonexistent/gate.sock",))
    log = EventLog()
    res = await w.run(log, plan=plan)
    assert res.outcome.kind is TurnKind.ESCALATE
    assert res.outcome.cause is Cause.SPAWN_FAILED
    assert res.outcome.reason == (
        "could not start claude: the sandbox could not be set up (bwrap: Can't find source "
        "path /nonexistent/gate.sock: No such file or directory)"
    )
    assert w.fake.invocations() == []
    kinds = [type(e) for e in log.events]
    assert kinds[0] is SpawnFailed
    assert Spawned not in kinds
    assert log.replayed_outcome() == res.outcome


async def test_a_missing_cli_binary_is_reported_like_unconfined(world: World) -> None:
    plan = world.plan()
    for binary in ("no-such-claude-anywhere", str(world.root / "no" / "claude")):
        command = ClaudeCommand(prompt="go", binary=binary, cwd=world.workspace)
        confined = await run_turn(command, timeout=5.0, sandbox=plan)
        plain = await run_turn(command, timeout=5.0)
        assert confined.outcome.cause is Cause.SPAWN_FAILED
        assert confined.outcome.reason == plain.outcome.reason
        assert "no such file (is Claude Code installed and on PATH?)" in str(
            confined.outcome.reason
        )


async def test_a_missing_bwrap_says_how_to_get_it(world: World) -> None:
    plan = attrs.evolve(world.plan(), bwrap="/nonexistent/bwrap")
    res = await world.run(plan=plan)
    assert res.outcome.kind is TurnKind.ESCALATE
    assert res.outcome.reason == (
        "could not start claude: /nonexistent/bwrap: bubblewrap is not installed "
        "(apt-get install bubblewrap)"
    )


async def test_a_missing_working_directory_is_reported_like_unconfined(world: World) -> None:
    command = world.fake.command("go", cwd=world.root / "gone")
    res = await run_turn(command, timeout=5.0, sandbox=world.plan())
    assert res.outcome.reason == (
        f"could not start claude: working directory {world.root / 'gone'} does not exist or "
        "is not a directory"
    )


# ----------------------------------------------------------------------------- kill -9


SUPERVISOR = textwrap.dedent(
    """
    import sys, trio
    from pathlib import Path
    from nexo_trio.engine import run_turn
    from nexo_trio.engine.sandbox import prepare_sandbox
    from nexo_trio.testing.scenario import FakeClaude, init, spawn, ignore_sigterm, text, hang, turn

    root, marker = Path(sys.argv[1]), sys.argv[2]
    fake = FakeClaude.create(root / "fake", [turn(
        init(),
        spawn(["setsid", "env", "-i", "sh", "-c", f"sleep 300; : {marker}"]),
        ignore_sigterm(),
        text("ready"),
        hang(),
    )], max_lifetime=60)
    plan = prepare_sandbox(
        root / "ws", root / "scratch", home=root / "home",
        writable=[fake.state_dir], readable=[fake.directory],
    )

    async def main():
        async def ready(state, batch):
            if state.last_text == "ready":
                (root / "ready").write_text("1")
        await run_turn(fake.command("go", cwd=root / "ws"), timeout=120, on_events=ready,
                       sandbox=plan)

    trio.run(main)
    """
)


async def test_a_sigkill_of_the_supervisor_leaves_nothing_of_the_turn(tmp_path: Path) -> None:
    await require_bwrap()
    (tmp_path / "ws").mkdir()
    script = tmp_path / "supervisor.py"
    script.write_text(SUPERVISOR)
    marker = f"nexo-daemon-{uuid.uuid4().hex}"
    supervisor = await trio.lowlevel.open_process(
        [sys.executable, str(script), str(tmp_path), marker], stdin=subprocess.DEVNULL
    )
    try:
        with trio.fail_after(15):
            while not (tmp_path / "ready").exists():  # noqa: ASYNC110
                await trio.sleep(0.02)
        fake_path = str(tmp_path / "fake")
        # The daemon's sh forks its sleep on its own time, maybe after "ready": wait for it.
        with trio.move_on_after(5):
            while len(psutil.Process(supervisor.pid).children(recursive=True)) < 5:  # noqa: ASYNC110
                await trio.sleep(0.02)
        turn_procs = psutil.Process(supervisor.pid).children(recursive=True)
        assert "bwrap" in {p.name() for p in turn_procs}
        assert marked(marker)  # the daemon runs, in a session of its own, env scrubbed
        assert marked(fake_path)  # and the fake CLI
        assert len(turn_procs) >= 5  # bwrap, its init, the fake, the daemon's sh and sleep

        supervisor.kill()
        await supervisor.wait()
        killed_at = time.monotonic()

        def survivors() -> list[psutil.Process]:
            return [p for p in turn_procs if not is_gone(p.pid)] + marked(marker)

        while survivors() and time.monotonic() - killed_at < 2.0:  # noqa: ASYNC110
            await trio.sleep(0.02)
        left = survivors()
        assert left == [], [describe(p) for p in left]
    finally:
        if supervisor.returncode is None:
            supervisor.kill()
            await supervisor.wait()
        for proc in marked(marker):
            proc.kill()


# ----------------------------------------------------------------------------- as a normal user


async def test_the_plans_flags_work_for_an_unprivileged_user() -> None:
    # The venv's interpreter lives under /root here, out of reach of another user: so this
    # runs the plan's own bwrap command line as ``nobody``, not the engine.
    await require_bwrap()
    if os.geteuid() != 0 or shutil.which("su") is None:
        pytest.skip("needs root and su to switch to another user")
    root = Path(tempfile.mkdtemp(prefix="nexo-sandbox-nobody-"))
    try:
        os.chmod(root, 0o777)
        for name in ("ws", "outside", "home"):
            (root / name).mkdir(mode=0o777)
            os.chmod(root / name, 0o777)
        plan = prepare_sandbox(
            root / "ws",
            root / "scratch",
            home=root / "home",
            readable=[root / "outside", root / "home"],
            network=False,
        )
        for path in (plan.scratch, *plan.cli_paths):
            os.chown(path, 65534, 65534)
        script = (
            "exec 2>&1; echo hi > ws/hello.txt; echo $TMPDIR > $TMPDIR/t;"
            " echo '{}' > $HOME/.claude.json; touch outside/x; echo x > $HOME/x; echo pid=$$;"
            " grep CapEff /proc/self/status; cat /proc/net/dev | grep -c :"
        )
        env = [f"HOME={root / 'home'}", f"TMPDIR={plan.scratch}"]
        argv = [*bwrap_argv(plan, chdir=str(root)), "env", *env, "sh", "-c", script]
        with trio.fail_after(30):
            ran = await trio.run_process(
                ["su", "-s", "/bin/sh", "nobody", "-c", " ".join(map(shlex.quote, argv))],
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
        assert ran.returncode == 0, ran.stderr
        stdout = ran.stdout.decode()
        assert (root / "ws" / "hello.txt").read_text() == "hi\n"
        assert (Path(plan.scratch) / "t").read_text() == f"{plan.scratch}\n"
        assert stdout.count(READ_ONLY) == 2  # outside/x and $HOME/x
        assert not (root / "outside" / "x").exists()
        assert not (root / "home" / "x").exists()
        assert "pid=2\n" in stdout  # its own PID namespace
        assert "CapEff:\t0000000000000000" in stdout
        assert stdout.rstrip().endswith("1")  # one network device: lo
    finally:
        shutil.rmtree(root, ignore_errors=True)
