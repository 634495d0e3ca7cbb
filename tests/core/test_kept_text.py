"""What an event keeps of a text: secrets redacted, at most TEXT_CAP characters, and the
same record back when there is nothing to change."""

from __future__ import annotations

import attrs
from hypothesis import given
from hypothesis import strategies as st

from nexo_trio.core.acceptance import CheckResult
from nexo_trio.core.events import Usage
from nexo_trio.core.goal_events import (
    AcceptanceChecked,
    AttemptCompleted,
    GoalCompleted,
    GoalStarted,
)
from nexo_trio.core.goal_outcome import GoalEndKind, GoalOutcome
from nexo_trio.core.kept_text import TEXT_CAP, kept_event, kept_text
from nexo_trio.core.redact import MIN_PIECE, REDACTED

SECRET = "sk-ant-api03-abcdefghijklmnop"
SECRETS = (SECRET,)


def test_a_long_text_is_cut_and_says_how_much_was_not_kept() -> None:
    text = "x" * (TEXT_CAP + 1000)
    kept = kept_text(text)
    assert kept.startswith("x" * TEXT_CAP)
    assert kept.endswith("\n[... 1000 more characters not kept]")
    assert len(kept) < TEXT_CAP + 100


def test_a_secret_straddling_the_cut_is_not_kept_in_part() -> None:
    for offset in range(MIN_PIECE, len(SECRET)):
        text = "y" * (TEXT_CAP - offset) + SECRET + "z" * 10
        head = kept_text(text, SECRETS).split("\n[... ")[0]
        assert SECRET[:MIN_PIECE] not in head


def test_every_text_of_a_nested_record_is_kept_redacted() -> None:
    result = CheckResult(
        index=0, label="env", passed=False, message="exit 1", evidence=f"KEY={SECRET}"
    )
    checked = AcceptanceChecked("g1", 1, met=False, results=(result,))
    kept = kept_event(checked, SECRETS)
    assert SECRET not in repr(kept)
    assert kept.results[0].evidence == f"KEY={REDACTED}"
    assert kept.results[0].message == "exit 1"
    outcome = GoalOutcome(goal_id="g1", kind=GoalEndKind.ESCALATED, reason=f"dumped {SECRET}")
    completed = kept_event(GoalCompleted("g1", outcome), SECRETS)
    assert completed.outcome.reason == f"dumped {REDACTED}"
    assert completed.outcome.kind is GoalEndKind.ESCALATED  # a str enum stays an enum
    started = GoalStarted("g1", "d", "/w", metadata={"k": [f"a {SECRET}"], "n": 3})
    assert kept_event(started, SECRETS).metadata == {"k": [f"a {REDACTED}"], "n": 3}


def test_a_record_with_nothing_to_change_is_returned_as_it_is() -> None:
    event = AttemptCompleted(
        "g1", 1, False, "continue", "completed", None, None, Usage(), 0.0, 1.0, final_text="hi"
    )
    assert kept_event(event, SECRETS) is event


@given(st.text(max_size=300), st.integers(min_value=1, max_value=200))
def test_kept_text_is_bounded_redacted_and_stable(text: str, cap: int) -> None:
    full = text + SECRET + text
    kept = kept_text(full, SECRETS, cap=cap)
    assert SECRET not in kept
    assert SECRET[:8] not in kept
    assert len(kept) <= cap + len("\n[...  more characters not kept]") + 10
    if len(full) <= cap:
        assert kept_text(kept, SECRETS, cap=cap) == kept


def test_an_attrs_record_rebuilt_keeps_its_type() -> None:
    outcome = GoalOutcome(goal_id="g1", kind=GoalEndKind.DONE, final_text=SECRET)
    kept = kept_event(outcome, SECRETS)
    assert type(kept) is GoalOutcome
    assert attrs.evolve(kept, final_text=None) == attrs.evolve(outcome, final_text=None)


@given(st.text(min_size=0, max_size=40), st.integers(min_value=1, max_value=20))
def test_keeping_twice_keeps_once(text: str, cap: int) -> None:
    once = kept_text(text, (), cap)
    assert kept_text(once, (), cap) == once
