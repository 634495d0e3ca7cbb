"""The TurnOutcome JSON format: shape and round trip."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nexo_trio.cli.replay import replay_stream
from nexo_trio.core.events import PermissionDenial, Usage
from nexo_trio.core.outcome import Cause, TurnKind, TurnOutcome
from nexo_trio.wire.outcome_json import dumps, turn_outcome_from_json, turn_outcome_to_json
from tests.conftest import FIXTURES
from tests.core.strategies import json_objects, usages

STREAMS = FIXTURES / "stream-json"

opt_text: st.SearchStrategy[str | None] = st.none() | st.text(max_size=20)
opt_int: st.SearchStrategy[int | None] = st.none() | st.integers(
    min_value=-(2**31), max_value=2**53
)
finite: st.SearchStrategy[float] = st.floats(allow_nan=False, allow_infinity=False)

outcomes: st.SearchStrategy[TurnOutcome] = st.builds(
    TurnOutcome,
    kind=st.sampled_from(TurnKind),
    cause=st.sampled_from(Cause),
    reason=opt_text,
    hint=st.sampled_from([None, "compact"]),
    session_invalid=st.booleans(),
    sleep_ms=opt_int,
    session_id=opt_text,
    final_text=opt_text,
    usage=usages,
    cost_usd=finite,
    cumulative_cost_usd=st.none() | finite,
    context_tokens=st.integers(min_value=0, max_value=2**40),
    num_turns=opt_int,
    api_error_status=opt_int,
    exit_code=opt_int,
    exit_signal=opt_int,
    permission_denials=st.lists(
        st.builds(
            PermissionDenial, tool_name=opt_text, tool_use_id=opt_text, tool_input=json_objects
        ),
        max_size=3,
    ).map(tuple),
    tool_uses=st.integers(min_value=0, max_value=1000),
    malformed_lines=st.integers(min_value=0, max_value=1000),
    oversized_lines=st.integers(min_value=0, max_value=1000),
    events=st.integers(min_value=0, max_value=10**6),
)


@settings(max_examples=200, deadline=None)
@given(outcome=outcomes)
def test_round_trip(outcome: TurnOutcome) -> None:
    data = turn_outcome_to_json(outcome)
    assert turn_outcome_from_json(data) == outcome
    # Also through the bytes the CLI prints.
    assert turn_outcome_from_json(orjson.loads(dumps(data))) == outcome


@pytest.mark.parametrize("path", sorted(STREAMS.glob("*.ndjson")), ids=lambda p: p.name)
def test_round_trip_of_recorded_outcomes(path: Path) -> None:
    with path.open("rb") as f:
        outcome = replay_stream(f, exit_code=1)
    assert turn_outcome_from_json(orjson.loads(dumps(turn_outcome_to_json(outcome)))) == outcome


def test_shape() -> None:
    outcome = TurnOutcome(
        kind=TurnKind.CONTINUE,
        cause=Cause.SESSION_INVALID,
        reason="session invalid: gone",
        session_invalid=True,
        session_id="s",
        usage=Usage(1, 2, 3, 4),
        cost_usd=0.5,
        permission_denials=(PermissionDenial(tool_name="Bash", tool_input={"command": "ls"}),),
        events=3,
    )
    data = orjson.loads(dumps(turn_outcome_to_json(outcome)))
    assert data["outcome"] == {
        "kind": "continue",
        "reason": "session invalid: gone",
        "cause": "session_invalid",
        "hint": None,
        "sleep_ms": None,
    }
    assert data["session_id"] == "s"
    assert data["session_invalid"] is True
    assert data["usage"] == {
        "input_tokens": 1,
        "output_tokens": 2,
        "cache_read_input_tokens": 3,
        "cache_creation_input_tokens": 4,
    }
    assert data["cost_usd"] == 0.5
    assert data["events"] == 3
    assert data["malformed_lines"] == 0
    assert data["permission_denials"] == [
        {"tool_name": "Bash", "tool_use_id": None, "tool_input": {"command": "ls"}}
    ]
    for key in ("kind", "reason", "cause", "hint", "sleep_ms"):
        assert key not in data  # nested under "outcome" only
    assert dumps(data).count(b"\n") == 0
