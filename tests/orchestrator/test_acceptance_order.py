"""Acceptance that reads like a build: checks run in the order written and stop at the first
failing required check (``acceptance_mode: sequential``, the default), or all at once
(``parallel``); skipped checks are reported as not run and are no failures."""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest
import trio

from nexo_trio.core.acceptance import NOT_RUN, CheckResult, Failure
from nexo_trio.core.attempt import attempt_outcome
from nexo_trio.core.goal import (
    DEFAULT_CHECK_TIMEOUT,
    CustomCheck,
    FileMatchCheck,
    LlmJudgeCheck,
    ShellCheck,
)
from nexo_trio.core.goal_events import AcceptanceChecked
from nexo_trio.core.outcome import Cause, TurnKind, TurnOutcome
from nexo_trio.core.prompt import FAILURES_HEADER, compose_prompt
from nexo_trio.core.settings import Config
from nexo_trio.orchestrator.acceptance import CheckContext, CustomResult, VerifierRegistry, evaluate
from nexo_trio.testing import turn

from .conftest import Harness, orchestrator
from .test_goal_loop import does_it

pytestmark = pytest.mark.usefixtures("procs")


def test_the_defaults_are_sequential_and_five_minutes() -> None:
    assert Config().acceptance_mode == "sequential"
    assert DEFAULT_CHECK_TIMEOUT == 300.0
    assert ShellCheck("true").timeout_s == 300.0
    assert LlmJudgeCheck("r", command="true").timeout_s == 300.0
    with pytest.raises(ValueError, match="acceptance_mode: expected one of sequential, parallel"):
        Config(acceptance_mode="serial")  # type: ignore[arg-type]


async def test_build_then_test_never_race(tmp_path: Path) -> None:
    # The second check reads what the first makes, after a sleep: run at once, it would not
    # find it.
    verdict = await evaluate(
        [
            ShellCheck("sleep 0.3 && echo built > out.txt", label="make build"),
            ShellCheck("grep -qx built out.txt", label="make test"),
        ],
        workspace=tmp_path,
    )
    assert verdict.met, [r.message for r in verdict.results]
    assert [r.skipped for r in verdict.results] == [False, False]


async def test_the_first_failing_required_check_stops_the_rest(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("content\n")
    verdict = await evaluate(
        [
            ShellCheck("true", label="lint"),
            ShellCheck("echo 'error: no rule' >&2; exit 2", label="make build"),
            ShellCheck("touch test-ran", label="make test"),
            FileMatchCheck("f", "content", required=False),
        ],
        workspace=tmp_path,
        mode="sequential",
    )
    lint, build, test, optional = verdict.results
    assert lint.passed
    assert not lint.skipped
    assert not build.passed
    assert not build.skipped
    assert not (tmp_path / "test-ran").exists()  # never started
    assert test == CheckResult(
        index=2, label="make test", passed=False, required=True, message=NOT_RUN, skipped=True
    )
    assert (optional.skipped, optional.required, optional.message) == (True, False, NOT_RUN)
    assert not verdict.met
    assert verdict.skipped == (test, optional)
    # Only the real failure is a failure: it is what the next prompt shows, and counts.
    assert verdict.failures == (
        Failure(
            index=1,
            label="make build",
            message="exit code 2 (expected 0)",
            evidence="[stderr]\nerror: no rule\n",
        ),
    )
    turn_done = TurnOutcome(kind=TurnKind.CLAIMED_DONE, cause=Cause.COMPLETED)
    assert attempt_outcome(turn_done, verdict).reason == "1 acceptance check failed"
    prompt = compose_prompt("Build it.", failures=verdict.failures)
    assert "1. make build: exit code 2 (expected 0)" in prompt
    assert "make test" not in prompt
    assert NOT_RUN not in prompt


async def test_a_failing_check_that_is_not_required_does_not_stop_the_sequence(
    tmp_path: Path,
) -> None:
    (tmp_path / "f").write_text("content\n")
    verdict = await evaluate(
        [
            FileMatchCheck("f", "absent", required=False, label="nice to have"),
            ShellCheck("touch after"),
        ],
        workspace=tmp_path,
    )
    optional, after = verdict.results
    assert not optional.passed
    assert not optional.skipped
    assert after.passed
    assert (tmp_path / "after").exists()
    assert verdict.met
    assert verdict.failures == ()
    assert verdict.skipped == ()


def concurrency_probe() -> tuple[VerifierRegistry, list[int]]:
    """A ``probe`` verifier that records how many probes run at once when each starts."""
    running = 0
    seen: list[int] = []

    async def probe(ctx: CheckContext) -> CustomResult:
        nonlocal running
        running += 1
        seen.append(running)
        await trio.sleep(0.05)
        running -= 1
        return CustomResult(bool(ctx.args.get("ok", True)), "probed")

    return VerifierRegistry({"probe": probe}), seen


async def test_sequential_checks_never_overlap(tmp_path: Path) -> None:
    registry, seen = concurrency_probe()
    verdict = await evaluate([CustomCheck("probe")] * 4, workspace=tmp_path, registry=registry)
    assert verdict.met
    assert seen == [1, 1, 1, 1]


async def test_parallel_runs_them_all_at_once(tmp_path: Path) -> None:
    # A barrier: each check waits for all of them to have started, so this ends only if
    # they run at once (and the failing first one stops nothing).
    arrived = 0
    all_in = trio.Event()

    async def meet(ctx: CheckContext) -> CustomResult:
        nonlocal arrived
        arrived += 1
        if arrived == 3:
            all_in.set()
        await all_in.wait()
        return CustomResult(bool(ctx.args["ok"]), "met")

    checks = [CustomCheck("meet", args={"ok": ok}) for ok in (False, True, True)]
    with trio.fail_after(5):
        verdict = await evaluate(
            checks, workspace=tmp_path, registry=VerifierRegistry({"meet": meet}), mode="parallel"
        )
    assert [r.passed for r in verdict.results] == [False, True, True]
    assert [r.skipped for r in verdict.results] == [False, False, False]
    assert [f.index for f in verdict.failures] == [0]


async def test_an_unknown_mode_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="mode must be one of sequential, parallel"):
        await evaluate([], workspace=tmp_path, mode="both")  # type: ignore[arg-type]


# ------------------------------------------------------------------- through a goal run


async def run_failing_build(h: Harness, config: Config) -> tuple[AcceptanceChecked, str]:
    """A goal whose build check fails and whose test check leaves a mark: one turn; its
    acceptance event and the second prompt."""
    fake = h.fake(turn(*does_it()), turn(*does_it()))
    goal = h.goal(
        acceptance=(
            ShellCheck("exit 1", label="make build"),
            ShellCheck("touch test-ran", label="make test"),
        ),
        max_turns=2,
    )
    async with orchestrator(attrs.evolve(config, claude=h.config(fake).claude)) as (orch, rec):
        await orch.run_goal(goal)
    first = rec.of(AcceptanceChecked)[0]
    return first, fake.invocations()[1]["prompt"]


async def test_the_goal_run_runs_its_checks_in_order_by_default(h: Harness) -> None:
    checked, prompt = await run_failing_build(h, h.config())
    build, test = checked.results
    assert not build.passed
    assert test.skipped
    assert test.message == NOT_RUN
    assert not (h.workspace() / "test-ran").exists()
    assert FAILURES_HEADER in prompt
    assert "1. make build:" in prompt
    assert "make test" not in prompt


async def test_the_goal_run_passes_the_configs_parallel_mode(h: Harness) -> None:
    checked, prompt = await run_failing_build(h, h.config(acceptance_mode="parallel"))
    build, test = checked.results
    assert not build.passed
    assert test.passed
    assert not test.skipped
    assert (h.workspace() / "test-ran").exists()
    assert "1. make build:" in prompt
