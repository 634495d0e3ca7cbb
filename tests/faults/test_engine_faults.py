"""The fault matrix, engine level: one test per fault of issue #10, unconfined and confined.

Each fault is played by the fake ``claude`` (or is a binary that cannot start) and run
``RUNS`` times in this one process; every run must show four things:

1. **the outcome** is the right one (kind, cause, reason);
2. **nothing survives**: no process carrying the run's marker (in its argv: the prompt, a
   grandchild's argument; or its environment) is alive once ``run_turn`` has returned
   (within ``GONE_WITHIN``: the kernel's tear-down of what was just killed). ``/proc`` is
   searched by marker, not by pid, since a confined turn has its own PID namespace;
3. **no file descriptor leaks**: this process has as many open after the last run as after
   the first (the first run may open what trio keeps for later);
4. **nothing is lost**: the events ``on_events`` saw are checked one by one: ``Spawned``
   first, each stdout line as the frame (or malformed / oversized line) it was, one
   ``StdoutClosed``, one ``ProcessExited``, a ``DeadlineHit`` only for a timeout, the
   ``StderrTail`` last; and folding them again gives the run's state exactly.

The huge-line faults also bound this process's peak memory (``VmHWM``, reset before the
run): a line above the cap is skipped, never held.

``NEXO_FAULT_RUNS`` sets the runs per fault: 2 in the default suite, 20 in ``nox -s faults``.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

import attrs
import pytest
import trio

from nexo_trio.core.command import ClaudeCommand
from nexo_trio.core.events import (
    DeadlineHit,
    ProcessExited,
    Spawned,
    SpawnFailed,
    StderrTail,
    StdoutClosed,
)
from nexo_trio.core.framing import DEFAULT_LINE_CAP
from nexo_trio.core.outcome import Cause, TurnKind
from nexo_trio.core.sandbox import SandboxPlan
from nexo_trio.engine import TurnResult, run_turn
from nexo_trio.engine.sandbox import prepare_sandbox, probe_bwrap
from nexo_trio.testing.scenario import (
    FakeClaude,
    Step,
    close_stdout,
    exit_with,
    hang,
    huge_line,
    ignore_sigterm,
    init,
    raw,
    result,
    spawn,
    stderr,
    text,
    turn,
)
from tests.faults.probes import (
    Recorder,
    Summary,
    kill_marked,
    marked_processes,
    open_fds,
    peak_rss_bytes,
    reset_peak_memory,
    rss_bytes,
    summary,
)

RUNS = max(2, int(os.environ.get("NEXO_FAULT_RUNS", "2")))
"""Runs per fault (at least 2: the descriptor count of the first is the reference)."""
TIMEOUT = 1.0
"""The turn timeout of the faults that end by it (long enough for a loaded CI machine to
start the fake and print its first frame)."""
KILL_GRACE = 0.5
GONE_WITHIN = 0.5
"""How long the marked processes get to be gone after ``run_turn`` returned."""
MIB = 1024 * 1024
SLEEPER = "import time; time.sleep(60)"
"""A grandchild's program: its argv carries the marker, whatever its environment."""


@attrs.frozen
class Expected:
    """What every run of a fault must show."""

    kind: TurnKind
    cause: Cause
    reason: str | re.Pattern[str] | None
    """The exact reason (``{binary}`` is the command's binary), or a pattern it matches."""
    lines: tuple[Summary, ...] = ()
    """The stdout line events, in order (see ``probes.summary``)."""
    timed_out: bool = False
    exit_code: int | None = None
    exit_signal: int | None = None
    stop_actions: tuple[str, ...] | None = None
    """Actions that must all be among the run's stop actions (``None``: not checked)."""
    final_text: str | None = None


@attrs.frozen
class Fault:
    """One row of the matrix."""

    name: str
    steps: Callable[[str], Sequence[Step]] | None
    """The fake's steps, given the run's marker; ``None`` for a binary that cannot start."""
    expected: Expected
    binary: Callable[[Path], Path] | None = None
    """Makes the binary that cannot start (given a fresh directory)."""
    timeout: float = 10.0
    peak_memory: int | None = None
    """The most this process's peak RSS may grow by during the run."""
    unconfined_gap: str | None = None
    """Why the unconfined run is known not to hold (then an ``xfail``, strict)."""


def _grandchild(marker: str, *, scrubbed: bool) -> Step:
    """A grandchild in a session of its own (the fake spawns it with ``setsid``), like a
    Bash-tool child; ``scrubbed``: behind ``setsid env -i``, so it keeps none of the turn's
    environment (no turn marker) and is not even the fake's child."""
    argv = [sys.executable, "-c", SLEEPER, marker]
    if scrubbed:
        argv = ["setsid", "env", "-i", *argv]
    return spawn(argv)


def _not_executable(directory: Path) -> Path:
    path = directory / "claude"
    path.write_text("#!/bin/sh\necho hi\n")
    path.chmod(0o644)
    return path


def _bad_interpreter(directory: Path) -> Path:
    path = directory / "claude"
    path.write_text("#!/no/such/python\nprint('hi')\n")
    path.chmod(0o755)
    return path


def _missing(directory: Path) -> Path:
    return directory / "not-installed" / "claude"


TIMEOUT_REASON = f"turn timeout after {TIMEOUT:g}s"
_INIT = ("init",)


def _timeout(
    *lines: Summary, exit_signal: int | None = None, stop_actions: tuple[str, ...] | None = None
) -> Expected:
    return Expected(
        TurnKind.CONTINUE,
        Cause.TIMEOUT,
        TIMEOUT_REASON,
        lines=lines,
        timed_out=True,
        exit_signal=exit_signal,
        stop_actions=stop_actions,
    )


def _done(final: str, *lines: Summary) -> Expected:
    return Expected(
        TurnKind.CLAIMED_DONE, Cause.COMPLETED, None, lines=lines, exit_code=0, final_text=final
    )


def _spawn_failed(reason: str) -> Expected:
    return Expected(TurnKind.ESCALATE, Cause.SPAWN_FAILED, f"could not start claude: {reason}")


SURROGATE_RESULT = "done \ud800 half a pair"
INVALID_UTF8 = b'{"type":"assistant","message":{"content":[{"type":"text","text":"\xff\xfe"}]}}\n'

FAULTS: tuple[Fault, ...] = (
    Fault(
        "sigterm-ignoring-cli",
        lambda m: [init(), ignore_sigterm(), text("stubborn"), hang()],
        _timeout(
            _INIT,
            ("assistant", "stubborn"),
            exit_signal=signal.SIGKILL,
            stop_actions=("SIGTERM", "SIGKILL"),
        ),
        timeout=TIMEOUT,
    ),
    Fault(
        "grandchild-own-session-cli-exits",
        lambda m: [init(), _grandchild(m, scrubbed=False), text("left"), result("left")],
        _done("left", _INIT, ("assistant", "left"), ("result", "success", "left")),
    ),
    Fault(
        "grandchild-own-session-cli-hangs",
        lambda m: [init(), _grandchild(m, scrubbed=False), text("ready"), hang()],
        _timeout(_INIT, ("assistant", "ready")),
        timeout=TIMEOUT,
    ),
    Fault(
        "grandchild-scrubbed-env-cli-exits",
        lambda m: [init(), _grandchild(m, scrubbed=True), text("left"), result("left")],
        _done("left", _INIT, ("assistant", "left"), ("result", "success", "left")),
    ),
    Fault(
        "grandchild-scrubbed-env-cli-hangs",
        lambda m: [init(), _grandchild(m, scrubbed=True), text("ready"), hang()],
        _timeout(_INIT, ("assistant", "ready")),
        timeout=TIMEOUT,
    ),
    Fault(
        "crash-mid-line",
        lambda m: [
            init(),
            text("working"),
            stderr("fatal: crashed\n"),
            raw(b'{"type":"assistant","mess'),
            exit_with(1),
        ],
        Expected(
            TurnKind.CONTINUE,
            Cause.EXIT_ERROR,
            "claude exited with code 1 without a result: fatal: crashed",
            lines=(_INIT, ("assistant", "working"), ("malformed", 3, "invalid JSON")),
            exit_code=1,
        ),
    ),
    Fault(
        "line-of-64-mib",
        # Exactly at the default cap: read, parsed and kept like any frame.
        lambda m: [init(), huge_line(DEFAULT_LINE_CAP), text("after"), result("ok")],
        _done(
            "ok", _INIT, ("assistant", None), ("assistant", "after"), ("result", "success", "ok")
        ),
        peak_memory=4 * DEFAULT_LINE_CAP,
    ),
    Fault(
        "line-of-200-mib",
        # Above the cap: reported oversized with its size, skipped without being held.
        lambda m: [init(), huge_line(200 * MIB), text("after"), result("ok")],
        _done(
            "ok",
            _INIT,
            ("oversized", 2, 200 * MIB),
            ("assistant", "after"),
            ("result", "success", "ok"),
        ),
        peak_memory=100 * MIB,
    ),
    Fault(
        "invalid-utf8-and-lone-surrogates",
        lambda m: [
            init(),
            raw(INVALID_UTF8),
            text("half \udc00 pair"),
            result(SURROGATE_RESULT),
        ],
        _done(
            "done \ufffd half a pair",
            _INIT,
            ("malformed", 2, "invalid UTF-8"),
            ("assistant", "half \ufffd pair"),
            ("result", "success", "done \ufffd half a pair"),
        ),
    ),
    Fault(
        "silent-hang",
        lambda m: [init(), hang()],
        _timeout(_INIT, stop_actions=("SIGTERM",)),
        timeout=TIMEOUT,
    ),
    Fault(
        "stdout-closed-while-alive",
        lambda m: [init(), text("bye"), close_stdout(), text("lost"), hang()],
        _timeout(_INIT, ("assistant", "bye")),
        timeout=TIMEOUT,
    ),
    Fault(
        "exit-0-without-output",
        lambda m: [exit_with(0)],
        Expected(TurnKind.CONTINUE, Cause.NO_RESULT, "stream ended without result", exit_code=0),
    ),
    Fault(
        "exit-3-without-output",
        lambda m: [exit_with(3)],
        Expected(
            TurnKind.CONTINUE,
            Cause.EXIT_ERROR,
            "claude exited with code 3 without a result",
            exit_code=3,
        ),
    ),
    Fault(
        "missing-binary",
        None,
        _spawn_failed("{binary}: no such file (is Claude Code installed and on PATH?)"),
        binary=_missing,
    ),
    Fault(
        "non-executable-binary",
        None,
        _spawn_failed("{binary}: permission denied (not executable?)"),
        binary=_not_executable,
    ),
    Fault(
        "bad-interpreter-binary",
        None,
        _spawn_failed("{binary}: its interpreter /no/such/python does not exist"),
        binary=_bad_interpreter,
    ),
)


# --------------------------------------------------------------------------- the runs


@attrs.define
class Bench:
    """Where a fault's runs happen: a root directory, confined or not."""

    root: Path
    confined: bool
    count: int = 0

    def fresh(self) -> Path:
        self.count += 1
        directory = self.root / f"run{self.count}"
        for sub in ("ws", "home"):
            (directory / sub).mkdir(parents=True)
        return directory

    def plan(self, directory: Path, fake: FakeClaude | None) -> SandboxPlan | None:
        if not self.confined:
            return None
        # These paths live in /tmp, which the sandbox replaces with a private one: the
        # fake's files are bound read-only, its state dir writable.
        return prepare_sandbox(
            directory / "ws",
            directory / "scratch",
            home=directory / "home",
            writable=[fake.state_dir] if fake is not None else [],
            readable=[fake.directory] if fake is not None else [],
        )


async def play(fault: Fault, bench: Bench) -> None:
    """One run of ``fault``, checked (outcome, survivors, events, memory)."""
    marker = f"nexo-fault-{uuid.uuid4().hex}"
    directory = bench.fresh()
    env = {"HOME": str(directory / "home"), "NEXO_FAULT_MARK": marker}
    fake = None
    if fault.steps is not None:
        fake = FakeClaude.create(directory / "fake", [turn(*fault.steps(marker))], max_lifetime=20)
        command = fake.command(f"fault {marker}", cwd=directory / "ws", env=env)
    else:
        assert fault.binary is not None
        binary = fault.binary(directory)
        command = ClaudeCommand(
            prompt=f"fault {marker}", binary=str(binary), cwd=directory / "ws", env=env
        )
    plan = bench.plan(directory, fake)
    log = Recorder()
    measured = fault.peak_memory is not None and reset_peak_memory()
    rss_before = rss_bytes()
    try:
        res = await run_turn(
            command, timeout=fault.timeout, kill_grace=KILL_GRACE, on_events=log, sandbox=plan
        )
        growth = peak_rss_bytes() - rss_before if measured else 0
        await check_nothing_survives(marker)
    finally:
        leftovers = kill_marked(marker)
    assert not leftovers, f"killed after the test: {leftovers}"
    check_outcome(fault, res, command)
    check_events(fault, res, log)
    if fault.peak_memory is not None:
        assert growth < fault.peak_memory, f"peak RSS grew by {growth / MIB:.0f} MiB"


async def check_nothing_survives(marker: str) -> None:
    with trio.move_on_after(GONE_WITHIN):
        while marked_processes(marker):  # noqa: ASYNC110 - polls /proc, nothing to wait on
            await trio.sleep(0.02)
    survivors = marked_processes(marker)
    assert not survivors, f"processes of the turn survived it: {survivors}"


def check_outcome(fault: Fault, res: TurnResult, command: ClaudeCommand) -> None:
    expected, out = fault.expected, res.outcome
    assert (out.kind, out.cause) == (expected.kind, expected.cause), out.reason
    if isinstance(expected.reason, re.Pattern):
        assert expected.reason.fullmatch(out.reason or ""), out.reason
    elif expected.reason is not None:
        assert out.reason == expected.reason.format(binary=command.binary)
    if expected.exit_code is not None:
        assert out.exit_code == expected.exit_code
    if expected.final_text is not None:
        assert out.final_text == expected.final_text
    if expected.exit_signal is not None:
        exit_ = res.state.exit
        assert exit_ is not None
        assert exit_.killed_signal == expected.exit_signal, exit_
    if expected.stop_actions is not None:
        assert set(expected.stop_actions) <= set(res.stop_actions), res.stop_actions


ONCE_EACH = (Spawned, StdoutClosed, ProcessExited, StderrTail)


def check_events(fault: Fault, res: TurnResult, log: Recorder) -> None:
    events = log.events
    assert log.replayed() == res.state, "the reported events do not explain the outcome"
    if fault.steps is None:  # nothing started: one event says why
        assert events == [SpawnFailed(reason=res.state.spawn_error or "")]
        assert res.pid is None
        return
    assert isinstance(events[0], Spawned), events[:3]
    assert events[0].pid == res.pid
    assert isinstance(events[-1], StderrTail)
    counts = {kind.__name__: sum(isinstance(e, kind) for e in events) for kind in ONCE_EACH}
    assert counts == dict.fromkeys(counts, 1), counts
    deadline_hits = sum(isinstance(e, DeadlineHit) for e in events)
    assert deadline_hits == (1 if fault.expected.timed_out else 0)
    lines = log.line_events()
    assert tuple(summary(e) for e in lines) == fault.expected.lines
    closed_at = next(i for i, e in enumerate(events) if isinstance(e, StdoutClosed))
    assert all(events.index(e) < closed_at for e in lines), "a line came after EOF"
    assert res.state.events == len(lines)


# --------------------------------------------------------------------------- the tests


def _cases() -> list[object]:
    cases: list[object] = []
    for fault in FAULTS:
        for confined in (False, True):
            gap = fault.unconfined_gap if not confined else None
            marks = [pytest.mark.xfail(reason=gap, strict=True)] if gap else []
            where = "confined" if confined else "unconfined"
            cases.append(pytest.param(fault, confined, id=f"{fault.name}-{where}", marks=marks))
    return cases


@pytest.mark.parametrize(("fault", "confined"), _cases())
async def test_fault(fault: Fault, confined: bool, tmp_path: Path) -> None:
    if confined and (reason := await probe_bwrap()) is not None:
        pytest.skip(f"confined runs need a working bubblewrap: {reason}")
    bench = Bench(root=tmp_path, confined=confined)
    await play(fault, bench)
    fds = open_fds()
    for _ in range(RUNS - 1):
        await play(fault, bench)
    assert open_fds() == fds, f"file descriptors leaked over {RUNS - 1} runs"
