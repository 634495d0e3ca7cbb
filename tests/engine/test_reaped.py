"""The subreaper helper as a turn uses it (``engine/reaped.py``, ``engine/reaper.py``): the
command's own process group, signalled on request only while it is the command's; the
leftovers kept (and found) until the lifeline ends; the environment the command was given,
whatever the helper's interpreter did to its own; and a turn whose helper is killed."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Sequence

import psutil
import trio

from nexo_trio.core.events import Event
from nexo_trio.core.outcome import Cause
from nexo_trio.core.turn import TurnState
from nexo_trio.engine import run_turn
from nexo_trio.engine.reaped import Reaped
from nexo_trio.testing.scenario import hang, init, result, sleep, text, turn
from tests.engine.conftest import FakeClaudeFactory, ProcessGuard, is_gone


async def _read_line(reaped: Reaped) -> str:
    """One line of the command's stdout."""
    data = b""
    assert reaped.stdout is not None
    with trio.fail_after(10):
        while b"\n" not in data:
            chunk = await reaped.stdout.receive_some(4096)
            assert chunk, f"stdout ended after {data!r}"
            data += chunk
    return data.decode().strip()


async def _end(reaped: Reaped) -> None:
    with trio.CancelScope(shield=True):
        await reaped.close()
        for stream in (reaped.stdin, reaped.stdout, reaped.stderr):
            if stream is not None:
                await stream.aclose()
        reaped.release()


async def _gone(pid: int) -> bool:
    with trio.move_on_after(5):
        while not is_gone(pid):  # noqa: ASYNC110 - not our child: no event for its end
            await trio.sleep(0.02)
    return is_gone(pid)


async def test_a_request_signals_the_commands_group_while_it_is_the_commands(
    procs: ProcessGuard,
) -> None:
    # The command leads a group of its own; its background child is in that group (told
    # once it is sleep, not a shell between its fork and its exec).
    script = (
        "trap 'exit 3' TERM; sleep 30 & child=$!; "
        'until [ "$(cat /proc/$child/comm)" = sleep ]; do :; done; echo $child; wait'
    )
    reaped = await Reaped.start(
        ["sh", "-c", script], cwd=None, env=None, grace=0.5, session=True, linger=True
    )
    try:
        await reaped.wait_started()
        assert reaped.command_pid is not None
        assert os.getpgid(reaped.command_pid) == reaped.command_pid
        member = int(await _read_line(reaped))
        procs.watch(member)
        assert os.getpgid(member) == reaped.command_pid
        assert reaped.signal_command(signal.SIGTERM)
        with trio.fail_after(10):
            assert await reaped.wait() == 3
        assert await _gone(member), "the group's member got no SIGTERM"
        assert not reaped.signal_command(signal.SIGKILL)  # reaped: nothing to signal
    finally:
        await _end(reaped)
    assert reaped.helper.returncode == 0
    assert reaped.survivors == 0


async def test_a_lingering_helper_keeps_the_leftovers_until_its_lifeline_ends(
    procs: ProcessGuard,
) -> None:
    script = "setsid sleep 30 </dev/null >/dev/null 2>&1 & echo $!"
    reaped = await Reaped.start(["sh", "-c", script], cwd=None, env=None, grace=0.5, linger=True)
    try:
        await reaped.wait_started()
        daemon = int(await _read_line(reaped))
        procs.watch(daemon)
        with trio.fail_after(10):
            assert await reaped.wait() == 0
        # The command is gone; its daemon (a session of its own) is the helper's now.
        await trio.sleep(0.2)
        assert not is_gone(daemon)
        assert psutil.Process(daemon).ppid() == reaped.helper.pid
        assert reaped.helper.returncode is None
    finally:
        await _end(reaped)
    assert is_gone(daemon)
    assert (reaped.helper.poll(), reaped.survivors) == (0, 0)


async def test_the_command_gets_the_environment_it_was_given_under_a_c_locale() -> None:
    # Python coerces a C LC_CTYPE to C.UTF-8 in its own environment at start (the helper's
    # too): the command must not inherit that.
    show = ["sh", "-c", 'echo "${LC_CTYPE-unset} ${LANG-unset}"']
    for given, expected in [({}, "unset C"), ({"LC_CTYPE": "C"}, "C C")]:
        env = {"PATH": os.environ["PATH"], "LANG": "C", **given}
        reaped = await Reaped.start(show, cwd=None, env=env, grace=0.5)
        try:
            await reaped.wait_started()
            assert await _read_line(reaped) == expected
        finally:
            await _end(reaped)


async def test_a_turn_whose_helper_is_killed_ends_and_its_cli_with_it(
    make_fake: FakeClaudeFactory,
) -> None:
    fake = make_fake(turn(init(), text("ready"), hang()))
    helper: list[int] = []

    async def kill_the_helper(state: TurnState, batch: Sequence[Event]) -> None:
        if not helper and state.pid is not None:  # the CLI runs: its parent is the helper
            helper.append(psutil.Process(state.pid).ppid())
            os.kill(helper[0], signal.SIGKILL)

    with trio.fail_after(10):
        res = await run_turn(
            fake.command("go"), timeout=30, kill_grace=0.5, on_events=kill_the_helper
        )
    assert len(helper) == 1
    assert helper[0] != os.getpid()
    # Nobody can reap the CLI any more: it is SIGKILLed by pid, which is its end.
    assert res.outcome.cause is Cause.INTERRUPTED
    assert res.outcome.exit_signal == signal.SIGKILL
    assert res.pid is not None
    assert is_gone(res.pid)


async def test_a_turn_whose_process_goes_silent_is_stopped_by_its_helper(
    make_fake: FakeClaudeFactory,
) -> None:
    """With a heartbeat, a turn outlives this process's silence only that long: here the
    event loop is blocked (as a SIGSTOP would stop it) past the bound, and the helper
    stops the CLI by itself; the result says why. While this process beats, a turn longer
    than the bound runs to its end."""
    fake = make_fake(turn(init(), text("ready"), hang()))
    blocked: list[int] = []

    async def go_silent(state: TurnState, batch: Sequence[Event]) -> None:
        if not blocked and state.last_text == "ready":
            assert state.pid is not None
            blocked.append(state.pid)
            time.sleep(2.0)  # noqa: ASYNC251 - this process silent past the heartbeat

    with trio.fail_after(15):
        res = await run_turn(
            fake.command("go"), timeout=30, kill_grace=0.5, on_events=go_silent, heartbeat_s=0.5
        )
    assert blocked
    assert is_gone(blocked[0])
    assert res.stop_actions[-1] == "the helper stopped the turn: this process was silent for 0.5 s"
    assert res.outcome.cause is not Cause.COMPLETED

    alive = make_fake(turn(init(), sleep(1.5), text("Done."), result("Done.")))
    with trio.fail_after(15):
        res = await run_turn(alive.command("go"), timeout=30, kill_grace=0.5, heartbeat_s=0.5)
    assert res.outcome.cause is Cause.COMPLETED, res.outcome
    assert res.stop_actions == ()
