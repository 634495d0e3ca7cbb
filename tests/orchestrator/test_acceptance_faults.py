"""Acceptance under faults (issue #10): files that are not files, a file system that never
answers, and checks that leave daemons behind.

- ``file_match`` on a FIFO, a device node or a socket is refused at once, and a file system
  that hangs (a real FUSE mount whose server never answers) neither blocks the event loop
  nor a cancellation, nor a Ctrl-C of the process;
- nothing a ``shell`` check starts survives it, not even ``setsid env -i nohup ... &``: in
  bubblewrap (a PID namespace per check) and with the subreaper fallback; also when the
  evaluation is cancelled mid-check, when the process gets a SIGINT, and when it is SIGKILLed;
- a confined check may write the workspace and its scratch dir, and nothing else.

Processes are found by a unique marker in their argv (``sleep 300.123456``): pids recorded
inside a PID namespace would not be ours.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import attrs
import psutil
import pytest
import trio

from nexo_trio.core.acceptance import CheckResult
from nexo_trio.core.goal import Criterion, CustomCheck, FileMatchCheck, ShellCheck
from nexo_trio.core.sandbox import SandboxPlan
from nexo_trio.engine.sandbox import prepare_sandbox, probe_bwrap
from nexo_trio.orchestrator import acceptance
from nexo_trio.orchestrator.acceptance import evaluate

pytestmark = pytest.mark.usefixtures("procs")

READ_ONLY = "Read-only file system"
MS_NOSUID = 2
MS_NODEV = 4
MNT_DETACH = 2


# --------------------------------------------------------------------------- helpers


def new_marker() -> str:
    """A duration no other process uses: ``sleep MARKER`` is then found by its argv."""
    return f"300.{uuid.uuid4().int % 10**6:06d}"


def marked(marker: str) -> list[psutil.Process]:
    """Running processes with ``marker`` in their argv (inside PID namespaces too)."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        try:
            cmdline = proc.info["cmdline"] or []
            if proc.info["status"] != psutil.STATUS_ZOMBIE and any(marker in a for a in cmdline):
                found.append(proc)
        except psutil.Error:
            continue
    return found


def sleeping(marker: str) -> list[psutil.Process]:
    """Running ``sleep MARKER`` processes (not the shells or helpers naming the marker)."""
    return [p for p in marked(marker) if _cmdline(p) == ["sleep", marker]]


def _cmdline(proc: psutil.Process) -> list[str]:
    try:
        return proc.cmdline()
    except psutil.Error:
        return []


def kill_marked(marker: str) -> list[str]:
    """SIGKILL whatever carries ``marker``; describe it."""
    killed = []
    for proc in marked(marker):
        with contextlib.suppress(psutil.Error):
            killed.append(f"{proc.pid} {proc.cmdline()}")
            proc.kill()
    return killed


@pytest.fixture
def marker() -> Iterator[str]:
    """A marker for this test's processes; whatever still carries it at the end is killed."""
    value = new_marker()
    yield value
    kill_marked(value)


async def assert_none_survive(marker: str, within: float = 0.5) -> None:
    """Nothing carrying ``marker`` runs (after ``within`` seconds at most)."""
    with trio.move_on_after(within):
        while marked(marker):  # noqa: ASYNC110 - the death of a stranger raises no event
            await trio.sleep(0.02)
    survivors = kill_marked(marker)
    assert not survivors, f"processes of the check survived it: {survivors}"


async def wait_sleeping(marker: str, count: int, timeout: float = 10.0) -> None:
    """Wait until ``count`` processes ``sleep MARKER`` run."""
    with trio.fail_after(timeout):
        while len(sleeping(marker)) < count:  # noqa: ASYNC110
            await trio.sleep(0.02)


async def check_one(
    criterion: Criterion, workspace: Path, sandbox: SandboxPlan | None = None
) -> CheckResult:
    verdict = await evaluate([criterion], workspace=workspace, sandbox=sandbox)
    assert len(verdict.results) == 1
    return verdict.results[0]


def daemons(marker: str) -> str:
    """Shell that leaves two daemons behind, each in a session of its own, one with a
    scrubbed environment and no hold on the check's pipes."""
    return (
        f"setsid sleep {marker} & "
        f"setsid env -i nohup sleep {marker} >/dev/null 2>&1 & "
        # Both exec'd (not just forked) before the check ends: a race would prove nothing.
        f"while [ $(pgrep -xfc 'sleep {marker}') -lt 2 ]; do sleep 0.01; done"
    )


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    path = tmp_path / "ws"
    path.mkdir()
    return path


async def confined_plan(tmp_path: Path, workspace: Path) -> SandboxPlan:
    """The sandbox of a goal's turns, made ready; skip where bubblewrap does not work."""
    reason = await probe_bwrap()
    if reason is not None:
        pytest.skip(f"needs a working bubblewrap: {reason} (apt-get install bubblewrap)")
    return prepare_sandbox(workspace, tmp_path / "scratch")


@pytest.fixture
async def plan(tmp_path: Path, workspace: Path) -> SandboxPlan:
    return await confined_plan(tmp_path, workspace)


@pytest.fixture(params=["bwrap", "subreaper"])
async def sandbox(
    request: pytest.FixtureRequest, tmp_path: Path, workspace: Path
) -> SandboxPlan | None:
    """Each way a check is confined: bubblewrap, and the subreaper fallback (``None``)."""
    if request.param == "subreaper":
        return None
    return await confined_plan(tmp_path, workspace)


# --------------------------------------------------------------------------- not a file


@attrs.define
class Watchdog:
    """A real OS thread that runs ``action`` after ``delay`` unless cancelled: what keeps a
    test of a hang from hanging (before the fix, the event loop itself was blocked)."""

    delay: float
    action: Callable[[], object]
    timer: threading.Timer | None = None

    def __enter__(self) -> Watchdog:
        self.timer = threading.Timer(self.delay, self.action)
        self.timer.daemon = True
        self.timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.timer is not None
        self.timer.cancel()


def unblock_fifo_readers(path: Path, delay: float, done: threading.Event) -> None:
    """After ``delay`` seconds, open ``path`` for writing as soon as someone reads it (so a
    reader blocked in ``open`` goes on), until ``done`` is set."""
    if done.wait(delay):
        return
    while not done.is_set():
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:  # ENXIO: no reader (yet)
            time.sleep(0.02)
            continue
        os.close(fd)
        return


async def test_a_fifo_is_refused_at_once_and_the_loop_keeps_running(workspace: Path) -> None:
    fifo = workspace / "results.txt"
    os.mkfifo(fifo)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await trio.sleep(0.01)
            ticks += 1

    # Before the fix, open() blocked the event loop until a writer came: this thread is one.
    done = threading.Event()
    rescuer = threading.Thread(target=unblock_fifo_readers, args=(fifo, 2.0, done), daemon=True)
    rescuer.start()
    started = time.monotonic()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ticker)
        await trio.sleep(0.05)
        before = ticks
        result = await check_one(FileMatchCheck("results.txt", "ok"), workspace)
        elapsed = time.monotonic() - started
        await trio.sleep(0.05)
        nursery.cancel_scope.cancel()
    done.set()
    rescuer.join()
    assert not result.passed
    assert result.message == "results.txt is a FIFO, not a regular file: refused"
    assert result.evidence == ""
    assert elapsed < 1.0
    assert ticks > before  # the other task ran on


async def test_a_device_node_is_refused(workspace: Path) -> None:
    try:
        os.mknod(workspace / "zero", stat.S_IFCHR | 0o600, os.makedev(1, 5))  # /dev/zero
    except PermissionError as exc:
        pytest.skip(f"mknod needs CAP_MKNOD (root): {exc}")
    started = time.monotonic()
    result = await check_one(FileMatchCheck("zero", "x"), workspace)
    assert not result.passed
    assert result.message == "zero is a character device, not a regular file: refused"
    assert time.monotonic() - started < 1.0  # not 16 MiB of zeros read and searched


async def test_a_socket_and_a_link_to_a_fifo_are_refused(workspace: Path) -> None:
    os.mkfifo(workspace / "fifo")
    (workspace / "link").symlink_to(workspace / "fifo")
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(workspace / "sock"))
        verdict = await evaluate(
            [FileMatchCheck("sock", "x"), FileMatchCheck("link", "x")],
            workspace=workspace,
            mode="parallel",
        )
    sock, link = verdict.results
    assert sock.message == "sock is a socket, not a regular file: refused"
    assert link.message == "link is a FIFO, not a regular file: refused"


# --------------------------------------------------------------------------- a hung file system


@attrs.define
class HungFs:
    """A FUSE file system whose server never answers: every access below ``mountpoint``
    waits in the kernel, like a hard-mounted NFS share whose server is gone. Aborting it
    (closing the server's ``/dev/fuse``) makes every waiting access fail with ENOTCONN."""

    mountpoint: Path
    fd: int
    lock: threading.Lock = attrs.Factory(threading.Lock)

    def abort(self) -> None:
        with self.lock:
            if self.fd >= 0:
                os.close(self.fd)
                self.fd = -1


@pytest.fixture
def hung_fs(workspace: Path) -> Iterator[HungFs]:
    """A hung file system mounted at ``workspace/hung`` (root and /dev/fuse needed)."""
    if os.geteuid() != 0 or not os.path.exists("/dev/fuse"):
        pytest.skip("needs root and /dev/fuse to mount a FUSE file system")
    mountpoint = workspace / "hung"
    mountpoint.mkdir()
    fd = os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC)
    libc = ctypes.CDLL(None, use_errno=True)
    options = f"fd={fd},rootmode=40000,user_id=0,group_id=0".encode()
    target = os.fsencode(mountpoint)
    if libc.mount(b"nexo-hung", target, b"fuse.nexo-hung", MS_NOSUID | MS_NODEV, options):
        error = ctypes.get_errno()
        os.close(fd)
        pytest.skip(f"cannot mount a FUSE file system here: {os.strerror(error)}")
    hung = HungFs(mountpoint, fd)
    try:
        yield hung
    finally:
        hung.abort()
        libc.umount2(target, MNT_DETACH)


async def test_a_hung_file_system_times_the_check_out_without_blocking_the_loop(
    workspace: Path, hung_fs: HungFs, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(acceptance, "FILE_TIMEOUT", 0.5)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await trio.sleep(0.01)
            ticks += 1

    # Before the fix the event loop itself waited in the kernel: the watchdog (a thread)
    # aborts the file system after 3 s, so the test fails instead of hanging.
    with Watchdog(3.0, hung_fs.abort):
        started = time.monotonic()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ticker)
            result = await check_one(FileMatchCheck("hung/report.txt", "ok"), workspace)
            nursery.cancel_scope.cancel()
        elapsed = time.monotonic() - started
    assert not result.passed
    assert result.message == (
        "cannot read hung/report.txt: no answer from the file system within 0.5s "
        "(a hung network file system?): gave up"
    )
    assert elapsed < 2.0
    assert ticks >= 10  # the loop ran on while the read hung (0.5 s of 10 ms sleeps)
    hung_fs.abort()  # the abandoned thread's access fails now, and the thread ends


async def test_a_cancel_ends_an_evaluation_stuck_on_a_hung_file_system(
    workspace: Path, hung_fs: HungFs
) -> None:
    finished: list[object] = []
    with Watchdog(3.0, hung_fs.abort):
        started = time.monotonic()
        with trio.move_on_after(0.3) as scope:  # as a Ctrl-C would (FILE_TIMEOUT is 60 s)
            finished.append(await check_one(FileMatchCheck("hung/f", "x"), workspace))
        elapsed = time.monotonic() - started
    assert scope.cancelled_caught
    assert finished == []
    assert elapsed < 1.0
    hung_fs.abort()


EVALUATE_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    import trio
    from nexo_trio.core.goal import FileMatchCheck, ShellCheck
    from nexo_trio.engine.sandbox import prepare_sandbox
    from nexo_trio.orchestrator.acceptance import evaluate

    spec = json.load(open(sys.argv[1]))
    plan = None
    if spec["scratch"] is not None:
        plan = prepare_sandbox(spec["workspace"], spec["scratch"])
    if spec["command"] is not None:
        checks = [ShellCheck(spec["command"], timeout_s=60)]
    else:
        checks = [FileMatchCheck(spec["path"], "x")]

    async def main():
        print("evaluating", flush=True)
        await evaluate(checks, workspace=Path(spec["workspace"]), sandbox=plan)

    trio.run(main)
    """
)


def start_evaluation(
    tmp_path: Path,
    workspace: Path,
    *,
    command: str | None = None,
    path: str | None = None,
    confined: bool = False,
) -> subprocess.Popen[bytes]:
    """A process evaluating one check (the spec in a file, so no argv carries a marker)."""
    spec = tmp_path / f"spec-{uuid.uuid4().hex}.json"
    scratch = str(tmp_path / "scratch") if confined else None
    spec.write_text(
        json.dumps(
            {"workspace": str(workspace), "scratch": scratch, "command": command, "path": path}
        )
    )
    return subprocess.Popen(
        [sys.executable, "-c", EVALUATE_SCRIPT, str(spec)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


async def wait_exit(proc: subprocess.Popen[bytes], timeout: float) -> int | None:
    """The exit status of ``proc`` within ``timeout`` seconds, else ``None`` (killed)."""
    with trio.move_on_after(timeout):
        while proc.poll() is None:  # noqa: ASYNC110
            await trio.sleep(0.02)
    if proc.poll() is None:
        proc.kill()
        proc.wait()
        return None
    return proc.returncode


async def test_ctrl_c_ends_a_process_stuck_on_a_hung_file_system(
    tmp_path: Path, workspace: Path, hung_fs: HungFs
) -> None:
    proc = start_evaluation(tmp_path, workspace, path="hung/f")
    try:
        assert proc.stdout is not None
        assert await trio.to_thread.run_sync(proc.stdout.readline) == b"evaluating\n"
        await trio.sleep(0.5)  # into the read
        with Watchdog(5.0, hung_fs.abort):
            started = time.monotonic()
            proc.send_signal(signal.SIGINT)
            status = await wait_exit(proc, 10)
            elapsed = time.monotonic() - started
    finally:
        hung_fs.abort()
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    assert status is not None
    assert status != 0
    assert elapsed < 3.0  # not the watchdog's 5 s


# --------------------------------------------------------------------------- no survivors


async def test_nothing_a_check_starts_survives_it(
    workspace: Path, sandbox: SandboxPlan | None, marker: str
) -> None:
    result = await check_one(ShellCheck(daemons(marker), timeout_s=20), workspace, sandbox)
    assert result.passed, (result.message, result.evidence)
    await assert_none_survive(marker)


async def test_nothing_survives_a_timed_out_check(
    workspace: Path, sandbox: SandboxPlan | None, marker: str
) -> None:
    command = f"{daemons(marker)}; trap '' TERM; sleep {marker}"
    started = time.monotonic()
    result = await check_one(ShellCheck(command, timeout_s=1), workspace, sandbox)
    assert result.message == "timed out after 1s"
    assert time.monotonic() - started < 10
    await assert_none_survive(marker)


async def test_nothing_survives_a_cancelled_evaluation(
    workspace: Path, sandbox: SandboxPlan | None, marker: str
) -> None:
    command = f"{daemons(marker)}; sleep {marker}"
    finished: list[object] = []
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:

            async def run() -> None:
                finished.append(await check_one(ShellCheck(command), workspace, sandbox))

            nursery.start_soon(run)
            await wait_sleeping(marker, 3)
            started = time.monotonic()
            scope.cancel()  # a Ctrl-C during acceptance
    assert scope.cancelled_caught
    assert finished == []
    assert time.monotonic() - started < 5
    await assert_none_survive(marker)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
async def test_nothing_survives_the_end_of_the_evaluating_process(
    tmp_path: Path,
    workspace: Path,
    sandbox: SandboxPlan | None,
    marker: str,
    signum: signal.Signals,
) -> None:
    """Ctrl-C of ``nexo-trio run`` during acceptance, and even a SIGKILL of it."""
    command = f"{daemons(marker)}; sleep {marker}"
    proc = start_evaluation(tmp_path, workspace, command=command, confined=sandbox is not None)
    try:
        await wait_sleeping(marker, 3)
        proc.send_signal(signum)
        status = await wait_exit(proc, 10)
    finally:
        if proc.poll() is None:
            proc.kill()
        _, stderr = proc.communicate()
    assert status is not None, "the evaluating process did not end"
    assert status != 0, stderr
    # The subreaper helper notices the end of its lifeline, SIGTERMs, waits a grace (1 s).
    await assert_none_survive(marker, within=5.0)


# --------------------------------------------------------------------------- what a check may write


async def test_a_confined_check_writes_the_workspace_and_its_scratch_dir(
    workspace: Path, plan: SandboxPlan
) -> None:
    command = 'echo built > out.txt && echo tmp > "$TMPDIR/t" && cat out.txt "$TMPDIR/t"'
    result = await check_one(ShellCheck(command, stdout_pattern="built\ntmp"), workspace, plan)
    assert result.passed, (result.message, result.evidence)
    assert (workspace / "out.txt").read_text() == "built\n"
    assert (Path(plan.scratch) / "t").read_text() == "tmp\n"


async def test_a_confined_check_cannot_write_outside(
    tmp_path: Path, workspace: Path, plan: SandboxPlan
) -> None:
    name = f"nexo-acceptance-{uuid.uuid4().hex}"
    outside = Path("/var/tmp") / name
    beside = tmp_path / name  # beside the workspace, below the (private) /tmp
    try:
        result = await check_one(ShellCheck(f"touch {outside}"), workspace, plan)
        assert not result.passed
        assert READ_ONLY in result.evidence
        # Below /tmp it lands in the sandbox's private, throw-away /tmp: not on the host.
        await check_one(ShellCheck(f"touch {beside}"), workspace, plan)
    finally:
        outside.unlink(missing_ok=True)
        beside.unlink(missing_ok=True)
    assert not outside.exists()
    assert not beside.exists()


async def test_unconfined_checks_write_where_they_like(tmp_path: Path, workspace: Path) -> None:
    # The fallback kills what a check leaves, but confines nothing: the contrast to above.
    beside = tmp_path / "beside"
    result = await check_one(ShellCheck(f"touch {beside}"), workspace)
    assert result.passed
    assert beside.exists()


async def test_a_confined_check_reports_its_exit_and_output(
    workspace: Path, plan: SandboxPlan
) -> None:
    verdict = await evaluate(
        [
            ShellCheck("echo out; echo err >&2; exit 3"),
            ShellCheck("cat; echo eof", timeout_s=5),  # stdin is /dev/null in there too
        ],
        workspace=workspace,
        sandbox=plan,
        mode="parallel",
    )
    failed, stdin = verdict.results
    assert failed.message == "exit code 3 (expected 0)"
    assert failed.evidence == "[stdout]\nout\n\n[stderr]\nerr\n"
    assert stdin.passed
    assert stdin.evidence == "eof\n"


async def test_confined_start_failures_are_failed_checks(
    tmp_path: Path, workspace: Path, plan: SandboxPlan
) -> None:
    broken = attrs.evolve(plan, scratch=str(tmp_path / "no-such-scratch"))
    verdict = await evaluate([ShellCheck("true")], workspace=workspace, sandbox=broken)
    (result,) = verdict.results
    assert not result.passed
    assert result.message.startswith(
        f"could not run the command in {workspace}: the sandbox could not be set up (bwrap: "
    )
    missing = await check_one(ShellCheck("true"), workspace / "missing", plan)
    assert missing.message.startswith("could not run the command in")


needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


@needs_git
async def test_the_git_of_the_built_in_checks_runs_confined(
    tmp_path: Path, workspace: Path, plan: SandboxPlan, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    await trio.run_process(["git", "init", "-q"], cwd=workspace)
    (workspace / "new.txt").write_text("x\n")
    verdict = await evaluate(
        [CustomCheck("git_clean"), CustomCheck("no_paths_touched", args={"paths": ["new.txt"]})],
        workspace=workspace,
        sandbox=plan,
        mode="parallel",
    )
    dirty, touched = verdict.results
    assert dirty.message == "1 uncommitted change(s) in the workspace"
    assert dirty.evidence == "?? new.txt\n"
    assert touched.message == "1 protected path(s) touched"
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    missing = await check_one(CustomCheck("git_clean"), workspace, plan)
    assert missing.message == "git is not installed (not found on PATH)"
