"""Acceptance evaluation: shell, file_match and custom checks, their failures, concurrency,
and that no process of a check outlives it (timeout, stragglers, caller cancellation)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import trio
import trio.testing

from nexo_trio.core.acceptance import EVIDENCE_CHARS, CheckResult, Failure
from nexo_trio.core.goal import Criterion, CustomCheck, FileMatchCheck, ShellCheck
from nexo_trio.engine.capture import DEFAULT_STDERR_CAP, run_captured
from nexo_trio.orchestrator import acceptance
from nexo_trio.orchestrator.acceptance import (
    CheckContext,
    CustomResult,
    VerifierRegistry,
    default_registry,
    evaluate,
)
from tests.engine.conftest import is_gone

# A test that leaves a process running fails (and whatever it left is killed).
pytestmark = pytest.mark.usefixtures("procs")

# --------------------------------------------------------------------------- helpers


async def wait_gone(*pids: int, timeout: float = 2.0) -> None:
    """Wait (real time) until every pid is gone; fail (killing the survivors) otherwise."""
    with trio.move_on_after(timeout):
        while not all(is_gone(pid) for pid in pids):  # noqa: ASYNC110 - no event for this
            await trio.sleep(0.02)
    survivors = [pid for pid in pids if not is_gone(pid)]
    for pid in survivors:
        # Orphans are not children of the test process: the leak guard can't see them.
        os.kill(pid, signal.SIGKILL)
    assert not survivors, f"processes survived the check: {survivors}"


async def wait_for_pid(path: Path, timeout: float = 5.0) -> int:
    """The pid a check writes to ``path``, once it is there."""
    with trio.fail_after(timeout):
        while (pid := _read_pid(path)) is None:  # noqa: ASYNC110 - a file, no event
            await trio.sleep(0.02)
    return pid


def _read_pid(path: Path) -> int | None:
    text = path.read_text() if path.exists() else ""
    return int(text) if text.endswith("\n") else None  # a complete line: fully written


async def check_one(criterion: Criterion, workspace: Path) -> CheckResult:
    """Evaluate a single criterion and return its result."""
    verdict = await evaluate([criterion], workspace=workspace)
    assert len(verdict.results) == 1
    return verdict.results[0]


# --------------------------------------------------------------------------- shell


async def test_shell_passes_on_exit_zero_in_the_workspace(tmp_path: Path) -> None:
    (tmp_path / "marker").write_text("x")
    result = await check_one(ShellCheck("test -f marker && echo ok"), tmp_path)
    assert result.passed
    assert result.required
    assert result.index == 0
    assert result.label == "shell: test -f marker && echo ok"
    assert result.message == "exit code 0"
    assert result.evidence == "ok\n"
    assert result.duration_s >= 0


async def test_shell_fails_on_other_exit_code(tmp_path: Path) -> None:
    result = await check_one(ShellCheck("echo nope; echo bad >&2; exit 1", label="t"), tmp_path)
    assert not result.passed
    assert result.label == "t"
    assert result.message == "exit code 1 (expected 0)"
    assert result.evidence == "[stdout]\nnope\n\n[stderr]\nbad\n"


async def test_shell_expect_exit(tmp_path: Path) -> None:
    verdict = await evaluate(
        [ShellCheck("exit 3", expect_exit=3), ShellCheck("true", expect_exit=3)],
        workspace=tmp_path,
    )
    assert [r.passed for r in verdict.results] == [True, False]
    assert verdict.results[1].message == "exit code 0 (expected 3)"


async def test_shell_killed_by_a_signal_says_so(tmp_path: Path) -> None:
    result = await check_one(ShellCheck("kill -9 $$"), tmp_path)
    assert not result.passed
    assert result.message == "killed by SIGKILL (expected 0)"


async def test_shell_stdout_pattern(tmp_path: Path) -> None:
    verdict = await evaluate(
        [
            ShellCheck("echo hello world", stdout_pattern=r"wor.d"),
            ShellCheck("echo hello world", stdout_pattern=r"^bye"),
            # The pattern is searched in stdout only.
            ShellCheck("echo ok >&2", stdout_pattern="ok"),
            # Both must hold: the exit code and the pattern.
            ShellCheck("echo ok; exit 2", stdout_pattern="ok"),
        ],
        workspace=tmp_path,
        mode="parallel",
    )
    first, second, third, fourth = verdict.results
    assert first.passed
    assert first.message == "exit code 0, stdout matches /wor.d/"
    assert not second.passed
    assert second.message == "stdout does not match /^bye/"
    assert second.evidence == "hello world\n"
    assert not third.passed
    assert third.message == "stdout does not match /ok/"
    assert not fourth.passed
    assert fourth.message == "exit code 2 (expected 0)"


def test_a_bad_stdout_pattern_is_refused_when_the_check_is_built() -> None:
    with pytest.raises(
        ValueError, match=r"^stdout_pattern: invalid regular expression '\(unclosed'"
    ):
        ShellCheck("echo x", stdout_pattern="(unclosed")


async def test_shell_stdin_is_devnull(tmp_path: Path) -> None:
    # ``cat`` would wait forever on an open stdin.
    with trio.fail_after(10):
        result = await check_one(ShellCheck("cat; echo eof", timeout_s=5), tmp_path)
    assert result.passed
    assert result.evidence == "eof\n"


async def test_shell_missing_workspace_is_a_failure(tmp_path: Path) -> None:
    result = await check_one(ShellCheck("true"), tmp_path / "missing")
    assert not result.passed
    assert result.message.startswith("could not run the command in")


async def test_shell_megabytes_on_both_pipes_do_not_deadlock(tmp_path: Path) -> None:
    # 1 MB on stderr first (a reader of stdout alone would block the command on a full
    # stderr pipe), then 10 MB on stdout.
    command = (
        "head -c 1000000 /dev/zero | tr '\\0' e >&2; "
        "head -c 10000000 /dev/zero | tr '\\0' o; echo; echo END"
    )
    with trio.fail_after(30):
        result = await check_one(ShellCheck(command, stdout_pattern="END"), tmp_path)
    assert result.passed, result.message
    assert len(result.evidence) <= EVIDENCE_CHARS + 50
    assert result.evidence.startswith("[stdout]\n…ooo")
    assert "END\n\n[stderr]\n…eee" in result.evidence


async def test_run_captured_keeps_all_stdout_and_a_stderr_tail(tmp_path: Path) -> None:
    command = "head -c 1000000 /dev/zero | tr '\\0' e >&2; head -c 10000000 /dev/zero"
    captured = await run_captured(["/bin/sh", "-c", command], cwd=tmp_path, timeout=30)
    assert captured.exit_code == 0
    assert not captured.timed_out
    assert captured.stdout == bytes(10_000_000)
    assert not captured.stdout_truncated
    assert captured.stderr == b"e" * DEFAULT_STDERR_CAP
    assert captured.stderr_truncated
    assert captured.argv == ("/bin/sh", "-c", command)


async def test_run_captured_keeps_the_end_of_a_long_stdout(tmp_path: Path) -> None:
    captured = await run_captured(
        ["/bin/sh", "-c", "seq 1 100000"], cwd=tmp_path, timeout=10, stdout_cap=1000
    )
    assert captured.stdout_truncated
    assert len(captured.stdout) == 1000
    assert captured.stdout.endswith(b"99999\n100000\n")


async def test_run_captured_refuses_what_it_cannot_start(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        await run_captured([str(tmp_path / "no-such-program")], cwd=tmp_path, timeout=1)
    with pytest.raises(ValueError, match="timeout must be positive"):
        await run_captured(["true"], cwd=tmp_path, timeout=0)


async def test_shell_pattern_beyond_the_stdout_cap_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(acceptance, "STDOUT_CAP", 1000)
    result = await check_one(
        ShellCheck("echo FIRST; seq 1 10000", stdout_pattern="FIRST"), tmp_path
    )
    assert not result.passed
    assert "stdout does not match /FIRST/ (only the last" in result.message


async def test_shell_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    command = "echo $$ > sh.pid; sleep 300 & echo $! > bg.pid; sleep 30; echo never"
    started = time.monotonic()
    result = await check_one(ShellCheck(command, timeout_s=0.5), tmp_path)
    elapsed = time.monotonic() - started
    assert not result.passed
    assert result.message == "timed out after 0.5s"
    assert "never" not in result.evidence
    assert elapsed < 10.0  # not the 30 s of the sleep (a loaded machine may be slow)
    await wait_gone(
        await wait_for_pid(tmp_path / "sh.pid"), await wait_for_pid(tmp_path / "bg.pid")
    )


async def test_run_captured_escalates_to_sigkill(tmp_path: Path) -> None:
    # Ignored signals are inherited: neither the shell nor its sleep dies on SIGTERM.
    command = "trap '' TERM; sleep 300 & echo $! > bg.pid; sleep 30"
    captured = await run_captured(
        ["/bin/sh", "-c", command], cwd=tmp_path, timeout=0.3, kill_grace=0.2
    )
    assert captured.timed_out
    assert captured.exit_code == -9
    await wait_gone(await wait_for_pid(tmp_path / "bg.pid"))


async def test_shell_stragglers_do_not_outlive_the_check(tmp_path: Path) -> None:
    # One background job holds the pipes, the other doesn't: neither keeps the check
    # waiting, and neither survives it.
    command = (
        "sleep 300 & echo $! > held.pid; sleep 300 >/dev/null 2>&1 & echo $! > free.pid; echo done"
    )
    started = time.monotonic()
    result = await check_one(ShellCheck(command, timeout_s=20), tmp_path)
    assert result.passed
    assert result.evidence == "done\n"
    assert time.monotonic() - started < 10.0  # not the 20 s timeout (nor the 300 s sleeps)
    await wait_gone(
        await wait_for_pid(tmp_path / "held.pid"), await wait_for_pid(tmp_path / "free.pid")
    )


async def test_caller_cancellation_kills_the_checks_process_group(tmp_path: Path) -> None:
    command = "echo $$ > sh.pid; sleep 300 & echo $! > bg.pid; wait"
    finished: list[object] = []

    async def run() -> None:
        finished.append(await evaluate([ShellCheck(command)], workspace=tmp_path))

    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run)
            shell_pid = await wait_for_pid(tmp_path / "sh.pid")
            bg_pid = await wait_for_pid(tmp_path / "bg.pid")
            assert not is_gone(shell_pid)
            scope.cancel()
    assert scope.cancelled_caught
    assert finished == []  # the cancellation propagated out of evaluate
    assert is_gone(shell_pid)  # reaped before evaluate returned
    await wait_gone(bg_pid)


async def test_shell_checks_run_concurrently(tmp_path: Path) -> None:
    # A rendezvous: each check waits for the other two to have started. Run one after
    # another, the first would wait for them in vain and time out.
    wait_for_all = "while [ ! -e a ] || [ ! -e b ] || [ ! -e c ]; do sleep 0.01; done"
    checks = [ShellCheck(f"touch {name}; {wait_for_all}", timeout_s=5) for name in "abc"]
    verdict = await evaluate(checks, workspace=tmp_path, mode="parallel")
    assert verdict.met, [r.message for r in verdict.results]


# --------------------------------------------------------------------------- file_match


async def test_file_match_pass_and_fail(tmp_path: Path) -> None:
    (tmp_path / "hello.txt").write_text("hi there\n")
    verdict = await evaluate(
        [FileMatchCheck("hello.txt", "^hi"), FileMatchCheck("hello.txt", "bye")],
        workspace=tmp_path,
    )
    ok, bad = verdict.results
    assert ok.passed
    assert ok.message == "hello.txt matches /^hi/"
    assert ok.label == "file_match: hello.txt ~ /^hi/"
    assert not bad.passed
    assert bad.message == "hello.txt does not match /bye/"
    assert bad.evidence == "hi there\n"


async def test_file_match_missing_file_and_directory(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    verdict = await evaluate(
        [FileMatchCheck("nope.txt", "x"), FileMatchCheck("sub", "x")],
        workspace=tmp_path,
        mode="parallel",
    )
    missing, directory = verdict.results
    assert not missing.passed
    assert missing.message == "no such file: nope.txt"
    assert not directory.passed
    assert directory.message == "sub is a directory, not a file"


async def test_file_match_undecodable_bytes_are_replaced(tmp_path: Path) -> None:
    (tmp_path / "bin").write_bytes(b"\xff\xfe hi \x80")
    result = await check_one(FileMatchCheck("bin", r"\ufffd hi"), tmp_path)
    assert result.passed


async def test_file_match_reads_a_bounded_head(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(acceptance, "FILE_READ_CAP", 100)
    (tmp_path / "big").write_text("a" * 200 + "NEEDLE")
    result = await check_one(FileMatchCheck("big", "NEEDLE"), tmp_path)
    assert not result.passed
    assert result.message.startswith("big does not match /NEEDLE/ (only its first")
    assert result.evidence == "a" * 100


async def test_file_match_refuses_paths_outside_the_workspace(tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    (workspace / "sub").mkdir(parents=True)
    secret = tmp_path / "secret.txt"
    secret.write_text("TOKEN\n")
    (workspace / "out").symlink_to(secret)
    (workspace / "sub" / "outdir").symlink_to(tmp_path)
    (workspace / "in.txt").write_text("TOKEN\n")
    (workspace / "link-in").symlink_to(workspace / "in.txt")
    verdict = await evaluate(
        [
            FileMatchCheck("../secret.txt", "TOKEN"),
            FileMatchCheck(str(secret), "TOKEN"),
            FileMatchCheck("out", "TOKEN"),
            FileMatchCheck("sub/outdir/secret.txt", "TOKEN"),
            FileMatchCheck("sub/../in.txt", "TOKEN"),  # stays inside: fine
            FileMatchCheck("link-in", "TOKEN"),  # a symlink within the workspace: fine
        ],
        workspace=workspace,
        mode="parallel",
    )
    dotdot, absolute, link_out, dir_link_out, inside, link_in = verdict.results
    assert dotdot.message == "path ../secret.txt resolves outside the workspace: refused"
    assert absolute.message == (
        f"absolute path {secret} refused: paths are relative to the workspace"
    )
    assert link_out.message == "path out resolves outside the workspace: refused"
    assert dir_link_out.message == (
        "path sub/outdir/secret.txt resolves outside the workspace: refused"
    )
    for refused in (dotdot, absolute, link_out, dir_link_out):
        assert not refused.passed
        assert refused.evidence == ""  # nothing of the outside file is shown
    assert inside.passed
    assert link_in.passed


def test_a_bad_file_pattern_is_refused_when_the_check_is_built() -> None:
    with pytest.raises(ValueError, match=r"^pattern: invalid regular expression 'a\{2,1\}'"):
        FileMatchCheck("f", "a{2,1}")


async def test_optional_failures_do_not_break_met(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    verdict = await evaluate(
        [FileMatchCheck("f", "x"), FileMatchCheck("f", "y", required=False)], workspace=tmp_path
    )
    assert verdict.met
    assert verdict.failures == ()
    optional = verdict.results[1]
    assert not optional.passed
    assert not optional.required
    assert optional.message == "f does not match /y/"


# --------------------------------------------------------------------------- custom


async def test_custom_unknown_name(tmp_path: Path) -> None:
    result = await check_one(CustomCheck("nope"), tmp_path)
    assert not result.passed
    assert result.message == "unknown custom check 'nope' (known: git_clean, no_paths_touched)"
    empty = await evaluate([CustomCheck("nope")], workspace=tmp_path, registry=VerifierRegistry())
    assert empty.results[0].message == "unknown custom check 'nope' (known: none)"


async def test_custom_verifier_gets_its_context(tmp_path: Path) -> None:
    seen: list[CheckContext] = []
    registry = VerifierRegistry()

    @registry.register("probe")
    async def probe(ctx: CheckContext) -> CustomResult:
        seen.append(ctx)
        return CustomResult(passed=False, message="no", evidence="x" * 5000)

    verdict = await evaluate(
        [CustomCheck("probe", args={"k": 1}, label="my probe")],
        workspace=tmp_path,
        registry=registry,
        goal_id="g1",
    )
    assert seen == [CheckContext(workspace=tmp_path, args={"k": 1}, goal_id="g1")]
    (result,) = verdict.results
    assert (result.label, result.passed, result.message) == ("my probe", False, "no")
    assert result.evidence == "…" + "x" * EVIDENCE_CHARS
    assert registry.get("probe") is probe
    assert "probe" in registry


async def test_custom_verifier_raising_is_a_failure_and_others_still_run(tmp_path: Path) -> None:
    async def boom(ctx: CheckContext) -> CustomResult:
        raise ValueError("boom")

    async def wrong(ctx: CheckContext) -> CustomResult:
        return "yes"  # type: ignore[return-value]

    registry = default_registry()
    registry.register("boom", boom)
    registry.register("wrong", wrong)
    verdict = await evaluate(
        [CustomCheck("boom"), ShellCheck("sleep 0.2; true"), CustomCheck("wrong")],
        workspace=tmp_path,
        registry=registry,
        mode="parallel",
    )
    boomed, shell, wronged = verdict.results
    assert not boomed.passed
    assert boomed.message == "verifier 'boom' raised ValueError: boom"
    assert shell.passed
    assert not wronged.passed
    assert wronged.message == "verifier 'wrong' returned str, not a CustomResult"


async def test_registry_rejects_bad_names() -> None:
    registry = VerifierRegistry()
    with pytest.raises(ValueError, match="non-empty string"):
        registry.register("", acceptance.git_clean)
    with pytest.raises(TypeError, match="not callable"):
        registry.register("x", "git_clean")  # type: ignore[call-overload]
    assert registry.names == []


async def test_all_criteria_run_concurrently(tmp_path: Path) -> None:
    # Each verifier waits for all three to have started: this only ends if they run at once.
    arrived = 0
    all_in = trio.Event()

    async def meet(ctx: CheckContext) -> CustomResult:
        nonlocal arrived
        arrived += 1
        if arrived == 3:
            all_in.set()
        await all_in.wait()
        return CustomResult(True, "met")

    with trio.fail_after(5):
        verdict = await evaluate(
            [CustomCheck("meet")] * 3,
            workspace=tmp_path,
            registry=VerifierRegistry({"meet": meet}),
            mode="parallel",
        )
    assert verdict.met
    assert [r.index for r in verdict.results] == [0, 1, 2]


async def test_slow_checks_overlap_in_virtual_time(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async def slow(ctx: CheckContext) -> CustomResult:
        await trio.sleep(float(ctx.args["s"]))
        return CustomResult(True)

    started = trio.current_time()
    verdict = await evaluate(
        [CustomCheck("slow", args={"s": s}) for s in (10, 30, 20)],
        workspace=tmp_path,
        registry=VerifierRegistry({"slow": slow}),
        mode="parallel",
    )
    assert trio.current_time() - started == pytest.approx(30)
    assert [r.duration_s for r in verdict.results] == pytest.approx([10, 30, 20])


async def test_failures_keep_criterion_order_and_indexes(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("content\n")
    criteria: list[Criterion] = [
        ShellCheck("true"),
        ShellCheck("sleep 0.3; exit 4", label="slow fail"),  # finishes last
        FileMatchCheck("f", "content"),
        FileMatchCheck("f", "absent", label="fast fail"),
        FileMatchCheck("f", "absent too", required=False),
    ]
    verdict = await evaluate(criteria, workspace=tmp_path, mode="parallel")
    assert [r.index for r in verdict.results] == [0, 1, 2, 3, 4]
    assert [r.passed for r in verdict.results] == [True, False, True, False, False]
    assert not verdict.met
    assert verdict.failures == (
        Failure(index=1, label="slow fail", message="exit code 4 (expected 0)"),
        Failure(
            index=3, label="fast fail", message="f does not match /absent/", evidence="content\n"
        ),
    )


async def test_no_criteria_is_met(tmp_path: Path) -> None:
    verdict = await evaluate([], workspace=tmp_path)
    assert verdict.met
    assert verdict.results == ()


# --------------------------------------------------------------------------- git built-ins

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def git(cwd: Path, *args: str) -> None:
    """Run git for a test's setup, with an identity and no signing."""
    subprocess.run(
        [
            "git",
            "-c",
            "user.email=test@example.com",
            "-c",
            "user.name=Test",
            "-c",
            "init.defaultBranch=main",
            "-c",
            "commit.gpgsign=false",
            *args,
        ],
        cwd=cwd,
        check=True,
        capture_output=True,
    )


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A git repository with one commit: ``a.txt``, ``protected/p.txt``, ``sub/s.txt``."""
    # Repository discovery must not climb out of tmp_path (into a repo around it).
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    workspace = tmp_path / "repo"
    for name in ("protected", "sub"):
        (workspace / name).mkdir(parents=True)
    (workspace / "a.txt").write_text("a\n")
    (workspace / "protected" / "p.txt").write_text("p\n")
    (workspace / "sub" / "s.txt").write_text("s\n")
    git(workspace, "init", "-q")
    git(workspace, "add", "-A")
    git(workspace, "commit", "-q", "-m", "init")
    return workspace


@needs_git
async def test_git_clean_on_a_clean_repo(repo: Path) -> None:
    result = await check_one(CustomCheck("git_clean"), repo)
    assert result.passed, result.message
    assert result.message == "working tree clean"


@needs_git
async def test_git_clean_on_a_dirty_repo(repo: Path) -> None:
    (repo / "a.txt").write_text("changed\n")
    (repo / "new.txt").write_text("new\n")
    result = await check_one(CustomCheck("git_clean"), repo)
    assert not result.passed
    assert result.message == "2 uncommitted change(s) in the workspace"
    assert result.evidence == " M a.txt\n?? new.txt\n"


@needs_git
async def test_git_clean_is_scoped_to_a_workspace_inside_a_repo(repo: Path) -> None:
    (repo / "a.txt").write_text("changed outside the workspace\n")
    result = await check_one(CustomCheck("git_clean"), repo / "sub")
    assert result.passed, result.message
    (repo / "sub" / "s.txt").write_text("changed\n")
    result = await check_one(CustomCheck("git_clean"), repo / "sub")
    assert not result.passed
    assert result.evidence == " M sub/s.txt\n"


@needs_git
async def test_git_checks_outside_a_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    plain = tmp_path / "plain"
    plain.mkdir()
    verdict = await evaluate(
        [CustomCheck("git_clean"), CustomCheck("no_paths_touched", args={"paths": ["x"]})],
        workspace=plain,
        mode="parallel",
    )
    for result in verdict.results:
        assert not result.passed
        assert result.message == f"workspace {plain} is not a git repository"


@needs_git
async def test_no_paths_touched(repo: Path) -> None:
    check = CustomCheck("no_paths_touched", args={"paths": ["protected", "a.txt"]})
    clean = await check_one(check, repo)
    assert clean.passed, clean.message
    assert clean.message == "none of 2 protected path(s) touched"

    (repo / "sub" / "s.txt").write_text("allowed change\n")
    assert (await check_one(check, repo)).passed

    (repo / "protected" / "p.txt").write_text("forbidden change\n")
    (repo / "protected" / "new.txt").write_text("new\n")
    touched = await check_one(check, repo)
    assert not touched.passed
    assert touched.message == "2 protected path(s) touched"
    assert touched.evidence == " M protected/p.txt\n?? protected/new.txt\n"


@needs_git
async def test_no_paths_touched_bad_args(repo: Path) -> None:
    verdict = await evaluate(
        [
            CustomCheck("no_paths_touched"),
            CustomCheck("no_paths_touched", args={"paths": "a.txt"}),
            CustomCheck("no_paths_touched", args={"paths": []}),
            CustomCheck("no_paths_touched", args={"paths": ["a.txt", 3]}),
        ],
        workspace=repo,
        mode="parallel",
    )
    messages = [r.message for r in verdict.results]
    assert not any(r.passed for r in verdict.results)
    assert messages == [
        "no_paths_touched needs args.paths: a list of paths",
        "no_paths_touched: args.paths must be a list of non-empty strings, got 'a.txt'",
        "no_paths_touched: args.paths is empty",
        "no_paths_touched: args.paths must be a list of non-empty strings, got ['a.txt', 3]",
    ]


async def test_git_missing_is_a_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    result = await check_one(CustomCheck("git_clean"), tmp_path)
    assert not result.passed
    assert result.message == "git is not installed (not found on PATH)"
