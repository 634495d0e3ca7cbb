"""The pure parts of "a goal runs in one process" and of the crash leftovers: the lock file's
record, the message of a second run, which process is which (``/proc/PID/stat``), and what
the goal machine keeps of a turn to find its processes after a crash."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from nexo_trio.core.goal import Goal
from nexo_trio.core.goal_events import AttemptStarted, GoalStarted, TurnSpawned
from nexo_trio.core.goal_lock import (
    UNKNOWN_HOLDER,
    LockHolder,
    lock_record,
    parse_lock_record,
    running_message,
)
from nexo_trio.core.goal_machine import Begin, crash_leftovers, fold, initial_state, run_started
from nexo_trio.core.processes import ProcessIdentity, parse_stat_start, same_process

identities = st.builds(
    ProcessIdentity,
    pid=st.integers(1, 2**22),
    start=st.integers(0, 2**63),
    boot=st.text(alphabet="0123456789abcdef-", max_size=36),
)
holders = st.builds(
    LockHolder,
    process=st.one_of(st.none(), identities),
    since=st.one_of(st.none(), st.floats(0, 4e9, allow_nan=False)),
)


@settings(max_examples=300, deadline=None)
@given(holders)
def test_a_lock_record_reads_back_as_its_holder(holder: LockHolder) -> None:
    text = lock_record(holder)
    assert text.endswith("\n")
    assert text.count("\n") == 1
    assert parse_lock_record(text) == holder


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_any_text_parses_to_a_holder_or_none(text: str) -> None:
    parse_lock_record(text)  # never raises


def test_a_record_being_written_or_of_another_shape_names_nobody() -> None:
    assert parse_lock_record("") is None
    assert parse_lock_record('{"pid":12,"sta') is None
    assert parse_lock_record("[1, 2]") is None
    assert parse_lock_record('{"pid": true, "start": 1, "boot": "", "since": 1}') is None
    assert parse_lock_record('{"pid": 0, "start": 1, "boot": "", "since": 1}') is None
    assert parse_lock_record('{"pid": 5, "start": 1, "boot": "", "since": "now"}') is None
    assert parse_lock_record('{"pid": 5, "start": 1, "boot": "", "since": NaN}') is None


def test_the_message_of_a_second_run() -> None:
    holder = LockHolder(process=ProcessIdentity(pid=4321, start=99), since=1_800_000_000.0)
    message = running_message("fix-login", holder)
    assert re.fullmatch(
        r"goal fix-login is running in process 4321 since \d{4}-\d\d-\d\d \d\d:\d\d:\d\d", message
    )
    assert "\n" not in message
    assert running_message("g", UNKNOWN_HOLDER) == "goal g is running in another process"


STAT = "4242 (claude) S 1 4242 4242 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 {start} 1 2 3"


@settings(max_examples=300, deadline=None)
@given(
    comm=st.text(alphabet=st.characters(blacklist_characters="\0\n"), max_size=16),
    start=st.integers(0, 2**63),
)
def test_the_start_time_is_field_22_whatever_the_command_name(comm: str, start: int) -> None:
    """The command name may hold spaces and parentheses: fields count from its last ``)``."""
    stat = f"4242 ({comm}) S 1 4242 4242 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 {start} 1 2 3"
    assert parse_stat_start(stat) == start


def test_a_stat_line_cut_short_has_no_start_time() -> None:
    assert parse_stat_start("") is None
    assert parse_stat_start("4242 (claude) S 1 2 3") is None
    assert parse_stat_start(STAT.format(start="x")) is None
    assert parse_stat_start(STAT.format(start=7)) == 7


@given(identities, identities)
def test_the_same_process_is_the_same_pid_start_time_and_boot(
    a: ProcessIdentity, b: ProcessIdentity
) -> None:
    assert same_process(a, a)
    assert not same_process(a, None)
    expected = (
        a.pid == b.pid and a.start == b.start and (not a.boot or not b.boot or a.boot == b.boot)
    )
    assert same_process(a, b) == expected


def test_a_reused_pid_is_another_process() -> None:
    recorded = ProcessIdentity(pid=100, start=5000, boot="b1")
    assert not same_process(recorded, ProcessIdentity(pid=100, start=5001, boot="b1"))
    assert not same_process(recorded, ProcessIdentity(pid=100, start=5000, boot="b2"))
    assert same_process(recorded, ProcessIdentity(pid=100, start=5000, boot=""))


# --------------------------------------------------------------------------- the goal machine

GOAL = Goal(id="g", description="Fix it.")


def started(turn: int, marker: str | None) -> AttemptStarted:
    return AttemptStarted("g", turn, False, None, "p", marker=marker, at=2.0)


def test_a_crashed_turn_keeps_its_marker_and_process() -> None:
    state = fold(
        [
            GoalStarted("g", "Fix it.", "/w", at=1.0),
            started(1, "m1"),
            TurnSpawned("g", 1, pid=77, start=1234, boot="b", at=3.0),
        ],
        initial_state("g"),
    )
    attempt = crash_leftovers(state)
    assert attempt is not None
    assert (attempt.marker, attempt.process) == ("m1", ProcessIdentity(77, 1234, "b"))
    # Another turn's process, or a turn that recorded nothing to find it by: nothing.
    other = fold([TurnSpawned("g", 2, pid=78, start=1, at=4.0)], state)
    assert other.attempt == state.attempt
    assert crash_leftovers(fold([started(2, None)], state)) is None
    assert crash_leftovers(initial_state("g")) is None


def test_goal_started_says_what_was_stopped() -> None:
    event = run_started(
        GOAL,
        Begin(resumed_after="crashed"),
        initial_state("g"),
        workspace="/w",
        pid=1,
        leftovers_stopped=("77 claude",),
    )
    assert event.leftovers_stopped == ("77 claude",)
