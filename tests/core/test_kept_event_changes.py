"""``kept_event(..., changes=...)``: the record stamped and kept in one new record."""

from __future__ import annotations

import pytest

from nexo_trio.core.goal_events import DecisionMade
from nexo_trio.core.kept_text import kept_event
from nexo_trio.core.redact import REDACTED

KEY = "sk-ant-api03-0123456789abcdefghij"


def _decision(reason: str) -> DecisionMade:
    return DecisionMade(
        goal_id="g",
        tool_name="Bash",
        outcome="allow_once",
        reason=reason,
        decider="rules",
        latency_ms=1.0,
        subject=f"echo {reason}",
    )


def test_the_changes_and_the_redaction_in_one_record() -> None:
    event = _decision(f"uses {KEY}")
    kept = kept_event(event, (KEY,), changes={"at": 12.5})
    assert kept.at == 12.5
    assert kept.reason == f"uses {REDACTED}"
    assert kept.subject == f"echo uses {REDACTED}"
    assert event.at == 0.0  # the original untouched
    assert event.reason == f"uses {KEY}"


def test_only_the_changes_when_nothing_is_secret() -> None:
    event = _decision("read-only")
    kept = kept_event(event, (KEY,), changes={"at": 3.0})
    assert kept == DecisionMade(
        goal_id="g",
        tool_name="Bash",
        outcome="allow_once",
        reason="read-only",
        decider="rules",
        latency_ms=1.0,
        subject="echo read-only",
        at=3.0,
    )
    assert kept_event(event, (KEY,)) is event  # no changes, nothing to redact: the same


def test_an_unknown_change_fails() -> None:
    with pytest.raises(TypeError):
        kept_event(_decision("x"), (), changes={"nope": 1})
