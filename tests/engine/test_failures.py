"""``run_turn`` when things go wrong: timeouts, stubborn and crashing CLIs, grandchildren,
bad output, stop requests, cancellation, spawn failures. Nothing may be left running."""

from __future__ import annotations

import os
import random
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from nexo_trio.core.events import Cancelled as CancelledEvent
from nexo_trio.core.events import (
    DeadlineHit,
    Event,
    MalformedLine,
    OversizedLine,
    Result,
    SpawnFailed,
    SystemInit,
)
from nexo_trio.core.outcome import Cause, TurnKind
from nexo_trio.core.turn import TurnState
from nexo_trio.engine import ClaudeCommand, TurnResult, run_turn
from nexo_trio.testing.scenario import (
    exit_with,
    hang,
    huge_line,
    ignore_sigterm,
    init,
    kill_self,
    raw,
    result,
    spawn,
    stderr,
    text,
    turn,
)
from tests.engine.conftest import FakeClaudeFactory, ProcessGuard, is_gone, open_fds
from tests.engine.helpers import EventLog, count, texts

GRANDCHILD = ("sleep", "30")
"""A grandchild that would outlive the test if the engine missed it (bounded, just in case)."""


QUIET_BEFORE_A_JUMP = 0.05
"""Seconds of real time every task must have been waiting before the virtual clock jumps."""


@pytest.fixture
def virtual_clock() -> trio.testing.MockClock:
    """Virtual time for a turn of real processes: it jumps to the next deadline only once they
    have been quiet a moment. A clock that jumps the instant all tasks wait races them: it
    would skip a stop's grace before the killed CLI's exit, reported by the subreaper helper
    a few milliseconds later, could be read."""
    return trio.testing.MockClock(autojump_threshold=QUIET_BEFORE_A_JUMP)


def assert_process_gone(res: TurnResult) -> None:
    assert res.pid is not None
    assert res.state.exit is not None, "the CLI's exit was never observed"
    assert is_gone(res.pid)


# --------------------------------------------------------------------------- timeouts


async def test_timeout_on_a_silent_child(
    virtual_clock: trio.testing.MockClock, make_fake: FakeClaudeFactory
) -> None:
    fake = make_fake(turn(init(), hang()))
    log = EventLog()
    res = await run_turn(fake.command("go"), timeout=30, kill_grace=5, on_events=log)
    out = res.outcome
    assert out.kind is TurnKind.CONTINUE
    assert out.cause is Cause.TIMEOUT
    assert out.reason == "turn timeout after 30s"
    assert "SIGTERM" in res.stop_actions
    assert count(log.events, DeadlineHit) == 1
    assert log.replayed_outcome() == out
    assert_process_gone(res)


async def test_timeout_on_a_child_that_ignores_sigterm(make_fake: FakeClaudeFactory) -> None:
    fake = make_fake(turn(init(), ignore_sigterm(), text("ready"), hang()))
    res = await run_turn(fake.command("go"), timeout=1.5, kill_grace=0.3)
    assert res.state.last_text == "ready", "the fake was not running when the deadline hit"
    out = res.outcome
    assert out.kind is TurnKind.CONTINUE
    assert out.cause is Cause.TIMEOUT
    assert res.stop_actions[:2] == ("SIGTERM", "SIGKILL")
    assert out.exit_signal == signal.SIGKILL
    assert_process_gone(res)


# --------------------------------------------------------------------------- grandchildren


def _stop_when(value: str, stop: trio.Event) -> EventLog:
    def on_batch(state: TurnState, batch: Sequence[Event]) -> None:
        if value in texts(batch):
            stop.set()

    return EventLog(on_batch=on_batch)


@pytest.mark.parametrize("stubborn", [False, True], ids=["cli-cleans-up", "cli-ignores-sigterm"])
async def test_grandchild_in_its_own_session_is_gone_after_a_timeout(
    stubborn: bool, make_fake: FakeClaudeFactory, procs: ProcessGuard, tmp_path: Path
) -> None:
    pidfile = procs.pidfile(tmp_path / "grandchild.pid")
    steps = [init(), *([ignore_sigterm()] if stubborn else [])]
    fake = make_fake(turn(*steps, spawn(GRANDCHILD, pidfile=pidfile), text("ready"), hang()))
    res = await run_turn(fake.command("go"), timeout=1.5, kill_grace=0.3)
    assert res.state.last_text == "ready", "the fake was not running when the deadline hit"
    assert res.outcome.cause is Cause.TIMEOUT
    grandchild = procs.read_pid(pidfile)
    assert is_gone(grandchild)
    assert_process_gone(res)
    assert procs.new_descendants() == []
    if stubborn:
        assert "SIGKILL" in res.stop_actions
        assert any("descendant" in a for a in res.stop_actions), res.stop_actions


async def test_grandchild_of_a_stubborn_cli_is_gone_after_stop(
    make_fake: FakeClaudeFactory, procs: ProcessGuard, tmp_path: Path
) -> None:
    pidfile = procs.pidfile(tmp_path / "grandchild.pid")
    fake = make_fake(
        turn(init(), ignore_sigterm(), spawn(GRANDCHILD, pidfile=pidfile), text("ready"), hang())
    )
    stop = trio.Event()
    res = await run_turn(
        fake.command("go"),
        timeout=30,
        kill_grace=0.2,
        stop=stop,
        on_events=_stop_when("ready", stop),
    )
    assert res.outcome.kind is TurnKind.CANCELLED
    assert "SIGKILL" in res.stop_actions
    assert is_gone(procs.read_pid(pidfile))
    assert_process_gone(res)
    assert procs.new_descendants() == []


async def test_grandchild_holding_stdout_after_the_cli_exits_is_stopped(
    make_fake: FakeClaudeFactory, procs: ProcessGuard, tmp_path: Path
) -> None:
    pidfile = procs.pidfile(tmp_path / "grandchild.pid")
    fake = make_fake(
        turn(
            init(),
            spawn(GRANDCHILD, pidfile=pidfile, inherit_stdout=True),
            result("Done, server left running."),
            exit_with(0),
        )
    )
    with trio.fail_after(10):
        res = await run_turn(fake.command("go"), timeout=30, kill_grace=0.3)
    out = res.outcome
    assert out.kind is TurnKind.CLAIMED_DONE
    assert out.final_text == "Done, server left running."
    assert out.exit_code == 0
    assert "stdout held open after exit" in res.stop_actions
    assert is_gone(procs.read_pid(pidfile))
    assert_process_gone(res)
    assert procs.new_descendants() == []


async def test_detached_grandchild_left_by_a_cli_that_exits_normally_is_stopped(
    make_fake: FakeClaudeFactory, procs: ProcessGuard, tmp_path: Path
) -> None:
    # Holds none of the turn's pipes and its parent exits at once (before any periodic
    # snapshot): only the turn marker in its environment ties it to the turn.
    pidfile = procs.pidfile(tmp_path / "grandchild.pid")
    fake = make_fake(
        turn(init(), spawn(GRANDCHILD, pidfile=pidfile), result("Done."), exit_with(0))
    )
    with trio.fail_after(10):
        res = await run_turn(fake.command("go"), timeout=30, kill_grace=0.3)
    assert res.outcome.kind is TurnKind.CLAIMED_DONE
    assert any("surviving descendant" in a for a in res.stop_actions), res.stop_actions
    assert is_gone(procs.read_pid(pidfile))
    assert procs.new_descendants() == []


async def test_grandchild_holding_only_stderr_after_the_cli_exits_is_stopped(
    make_fake: FakeClaudeFactory, procs: ProcessGuard, tmp_path: Path
) -> None:
    pidfile = procs.pidfile(tmp_path / "grandchild.pid")
    holds_stderr = ("sh", "-c", "exec sleep 30 >/dev/null")
    fake = make_fake(
        turn(
            init(),
            spawn(holds_stderr, pidfile=pidfile, inherit_stdout=True),
            result("Done."),
            exit_with(0),
        )
    )
    with trio.fail_after(10):
        res = await run_turn(fake.command("go"), timeout=30, kill_grace=0.3)
    assert res.outcome.kind is TurnKind.CLAIMED_DONE
    assert any("surviving descendant" in a for a in res.stop_actions), res.stop_actions
    assert is_gone(procs.read_pid(pidfile))
    assert procs.new_descendants() == []


# --------------------------------------------------------------------------- bad output


async def test_crash_mid_line_is_interrupted_and_the_partial_line_counted(
    make_fake: FakeClaudeFactory,
) -> None:
    fake = make_fake(turn(init(), text("working"), raw(b'{"type":"assis'), kill_self()))
    log = EventLog()
    res = await run_turn(fake.command("go"), timeout=20, kill_grace=1, on_events=log)
    out = res.outcome
    assert out.kind is TurnKind.CONTINUE
    assert out.cause is Cause.INTERRUPTED
    assert "SIGKILL" in (out.reason or "")
    assert out.exit_signal == signal.SIGKILL
    assert out.malformed_lines == 1
    [malformed] = [e for e in log.events if isinstance(e, MalformedLine)]
    assert malformed.line_no == 3
    assert '{"type":"assis' in malformed.excerpt
    assert res.stop_actions == ()


async def test_an_oversized_line_is_skipped_and_the_turn_goes_on(
    make_fake: FakeClaudeFactory,
) -> None:
    cap = 4096
    fake = make_fake(turn(init(), huge_line(300_000), text("after"), result("still fine")))
    log = EventLog()
    res = await run_turn(fake.command("go"), timeout=20, kill_grace=1, line_cap=cap, on_events=log)
    out = res.outcome
    assert out.oversized_lines == 1
    assert out.malformed_lines == 0
    assert out.kind is TurnKind.CLAIMED_DONE
    assert out.final_text == "still fine"
    [oversized] = [e for e in log.events if isinstance(e, OversizedLine)]
    assert oversized.line_no == 2
    assert oversized.size >= 300_000 - 1
    assert [type(e) for e in log.line_events()][-1] is Result


async def test_garbage_bytes_are_counted_and_a_later_result_still_counts(
    make_fake: FakeClaudeFactory,
) -> None:
    noise = bytes(b for b in random.Random(20240611).randbytes(600) if b != ord("\n"))
    fake = make_fake(turn(init(), raw(noise + b"\n"), result("ok")))
    res = await run_turn(fake.command("go"), timeout=20, kill_grace=1)
    assert res.outcome.malformed_lines == 1
    assert res.outcome.kind is TurnKind.CLAIMED_DONE
    assert res.outcome.events == 3


async def test_exit_code_with_stderr_and_no_result(make_fake: FakeClaudeFactory) -> None:
    fake = make_fake(turn(init(), stderr("Error: unknown option --frobnicate\n"), exit_with(2)))
    res = await run_turn(fake.command("go"), timeout=20, kill_grace=1)
    out = res.outcome
    assert out.kind is TurnKind.CONTINUE
    assert out.cause is Cause.EXIT_ERROR
    assert out.exit_code == 2
    assert "code 2" in (out.reason or "")
    assert "unknown option --frobnicate" in (out.reason or "")
    assert "unknown option --frobnicate" in res.stderr_tail


async def test_stderr_tail_is_bounded(make_fake: FakeClaudeFactory) -> None:
    from nexo_trio.engine.supervisor import STDERR_TAIL_BYTES

    noise = "".join(f"line {i}\n" for i in range(20_000))
    fake = make_fake(turn(init(), stderr(noise + "THE END\n"), exit_with(3)))
    res = await run_turn(fake.command("go"), timeout=20, kill_grace=1)
    assert res.outcome.cause is Cause.EXIT_ERROR
    assert len(res.stderr_tail.encode()) <= STDERR_TAIL_BYTES
    assert res.stderr_tail.endswith("THE END\n")


async def test_a_cli_that_lingers_after_its_result_is_stopped(
    make_fake: FakeClaudeFactory,
) -> None:
    fake = make_fake(turn(init(), text("done"), result("All done."), hang()))
    with trio.fail_after(10):
        res = await run_turn(fake.command("go"), timeout=30, kill_grace=0.3)
    out = res.outcome
    assert out.kind is TurnKind.CLAIMED_DONE
    assert out.final_text == "All done."
    assert "lingered after its result" in res.stop_actions
    assert "SIGTERM" in res.stop_actions
    assert res.duration_s < 5
    assert_process_gone(res)


# --------------------------------------------------------------------------- stop and cancel


async def test_stop_event_mid_stream_gives_a_cancelled_outcome(
    make_fake: FakeClaudeFactory,
) -> None:
    fake = make_fake(turn(init(), text("working"), hang()))
    stop = trio.Event()
    log = _stop_when("working", stop)
    with trio.fail_after(10):
        res = await run_turn(fake.command("go"), timeout=30, kill_grace=1, stop=stop, on_events=log)
    out = res.outcome
    assert out.kind is TurnKind.CANCELLED
    assert out.cause is Cause.CANCELLED
    assert out.reason == "stop requested"
    assert out.session_id is not None  # what was seen before the stop is kept
    assert "SIGTERM" in res.stop_actions
    assert count(log.events, CancelledEvent) == 1
    assert log.replayed_outcome() == out
    assert_process_gone(res)


async def test_stop_set_before_the_run_cancels_at_once(
    virtual_clock: trio.testing.MockClock, make_fake: FakeClaudeFactory
) -> None:
    fake = make_fake(turn(init(), hang()))
    stop = trio.Event()
    stop.set()
    res = await run_turn(fake.command("go"), timeout=600, kill_grace=1, stop=stop)
    assert res.outcome.kind is TurnKind.CANCELLED
    assert_process_gone(res)


def _cancel_when(predicate: str, scope: trio.CancelScope) -> EventLog:
    def on_batch(state: TurnState, batch: Sequence[Event]) -> None:
        hit = {
            "spawned": state.pid is not None and state.events == 0,
            "init": any(isinstance(e, SystemInit) for e in batch),
            "ready": "ready" in texts(batch),
            "result": any(isinstance(e, Result) for e in batch),
        }[predicate]
        if hit:
            scope.cancel()

    return EventLog(on_batch=on_batch)


@pytest.mark.parametrize("point", ["spawned", "init", "ready", "result"])
async def test_caller_cancellation_propagates_after_cleanup(
    point: str, make_fake: FakeClaudeFactory, procs: ProcessGuard, tmp_path: Path
) -> None:
    pidfile = procs.pidfile(tmp_path / "grandchild.pid")
    fake = make_fake(
        turn(
            init(),
            spawn(GRANDCHILD, pidfile=pidfile),
            text("ready"),
            result("done but not gone"),
            hang(),
        )
    )
    fds_before = open_fds()
    raised = False
    started = trio.current_time()
    with trio.CancelScope() as scope:
        log = _cancel_when(point, scope)
        try:
            await run_turn(fake.command("go"), timeout=30, kill_grace=1, on_events=log)
        except trio.Cancelled:
            raised = True
            raise
    assert raised
    assert scope.cancelled_caught
    assert trio.current_time() - started < 5
    [spawned, *_] = log.events
    pid = spawned.pid  # type: ignore[union-attr]
    assert is_gone(pid)
    # The grandchild may have been killed after creating its pidfile and before writing
    # its pid (a cancel at "init" races its start): then there is no pid to look at.
    if pidfile.exists() and pidfile.read_text().strip():
        assert is_gone(procs.read_pid(pidfile))
    assert procs.new_descendants() == []
    assert open_fds() == fds_before


async def test_caller_deadline_mid_stream_stops_the_tree(
    make_fake: FakeClaudeFactory, procs: ProcessGuard, tmp_path: Path
) -> None:
    pidfile = procs.pidfile(tmp_path / "grandchild.pid")
    fake = make_fake(
        turn(init(), ignore_sigterm(), spawn(GRANDCHILD, pidfile=pidfile), text("ready"), hang())
    )
    fds_before = open_fds()
    ready = trio.Event()

    def on_batch(state: TurnState, batch: Sequence[Event]) -> None:
        if "ready" in texts(batch):
            ready.set()

    async def supervised() -> None:
        await run_turn(
            fake.command("go"), timeout=30, kill_grace=0.2, on_events=EventLog(on_batch=on_batch)
        )

    with trio.move_on_after(10) as scope:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(supervised)
            await ready.wait()
            nursery.cancel_scope.cancel()
    assert not scope.cancelled_caught, "cleanup took too long"
    assert is_gone(procs.read_pid(pidfile))
    assert procs.new_descendants() == []
    assert open_fds() == fds_before


class CallbackError(Exception):
    pass


async def test_an_error_in_on_events_propagates_as_itself_after_cleanup(
    make_fake: FakeClaudeFactory, procs: ProcessGuard, tmp_path: Path
) -> None:
    pidfile = procs.pidfile(tmp_path / "grandchild.pid")
    fake = make_fake(turn(init(), spawn(GRANDCHILD, pidfile=pidfile), text("ready"), hang()))
    seen: list[int] = []

    def on_batch(state: TurnState, batch: Sequence[Event]) -> None:
        if state.pid is not None and not seen:
            seen.append(state.pid)
        if "ready" in texts(batch):
            raise CallbackError("the caller's callback failed")

    fds_before = open_fds()
    with pytest.raises(CallbackError, match="callback failed"):
        await run_turn(
            fake.command("go"), timeout=30, kill_grace=0.5, on_events=EventLog(on_batch=on_batch)
        )
    assert is_gone(seen[0])
    assert is_gone(procs.read_pid(pidfile))
    assert procs.new_descendants() == []
    assert open_fds() == fds_before


async def test_an_already_cancelled_caller_starts_nothing(make_fake: FakeClaudeFactory) -> None:
    fake = make_fake(turn(init(), hang()))
    with trio.CancelScope() as scope:
        scope.cancel()
        await run_turn(fake.command("go"), timeout=30)
    assert scope.cancelled_caught
    assert fake.invocations() == []


# --------------------------------------------------------------------------- spawn failures


def _not_executable(tmp_path: Path) -> Path:
    path = tmp_path / "claude"
    path.write_text("#!/bin/sh\necho hi\n")
    path.chmod(0o644)
    return path


def _no_interpreter(tmp_path: Path) -> Path:
    path = tmp_path / "claude"
    path.write_bytes(b"\x00\x01\x02 not a program")
    path.chmod(0o755)
    return path


SPAWN_FAILURES: dict[str, tuple[Any, str]] = {
    "missing": (lambda tmp: {"binary": str(tmp / "nope" / "claude")}, "no such file"),
    "on-path-missing": (lambda tmp: {"binary": "claude-does-not-exist-here"}, "no such file"),
    "not-executable": (lambda tmp: {"binary": str(_not_executable(tmp))}, "permission denied"),
    "directory": (lambda tmp: {"binary": str(tmp)}, "is a directory"),
    "not-a-program": (lambda tmp: {"binary": str(_no_interpreter(tmp))}, "not an executable"),
    "missing-cwd": (
        lambda tmp: {"binary": "/bin/true", "cwd": tmp / "gone"},
        "working directory",
    ),
}


@pytest.mark.parametrize("case", list(SPAWN_FAILURES))
async def test_spawn_failure_is_an_escalation_not_an_exception(case: str, tmp_path: Path) -> None:
    make_options, phrase = SPAWN_FAILURES[case]
    options = make_options(tmp_path)
    fds_before = open_fds()
    log = EventLog()
    res = await run_turn(ClaudeCommand(prompt="go", **options), timeout=5, on_events=log)
    out = res.outcome
    assert out.kind is TurnKind.ESCALATE
    assert out.cause is Cause.SPAWN_FAILED
    assert phrase in (out.reason or ""), out.reason
    where = str(options.get("cwd") or options["binary"])
    assert where in (out.reason or "")
    assert res.pid is None
    assert [type(e) for e in log.events] == [SpawnFailed]
    assert open_fds() == fds_before


@pytest.mark.parametrize(
    ("timeout", "kill_grace", "message"),
    [
        (0.0, 1.0, "timeout must be positive"),
        (-1.0, 1.0, "timeout must be positive"),
        (float("nan"), 1.0, "timeout must be positive"),
        (1.0, -0.1, "kill_grace must not be negative"),
    ],
)
async def test_bad_arguments_raise(timeout: float, kill_grace: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        await run_turn(
            ClaudeCommand(prompt="x", binary="/bin/true"), timeout=timeout, kill_grace=kill_grace
        )


def test_fd_counter_sees_new_descriptors() -> None:
    before = open_fds()
    r, w = os.pipe()
    try:
        assert open_fds() == before + 2
    finally:
        os.close(r)
        os.close(w)
