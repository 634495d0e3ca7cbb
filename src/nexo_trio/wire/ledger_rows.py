"""A ledger row's data as the stores keep it: one JSON object per event (orjson).

Light on purpose (no cattrs): the stores read and write rows without knowing the events;
:mod:`nexo_trio.wire.goal_json` turns the data into typed events and back.
"""

from __future__ import annotations

from typing import Any

import orjson


def encode_data(data: dict[str, Any]) -> bytes:
    """The ledger's JSON encoding of an event's data (raises ``TypeError`` if not JSON)."""
    return orjson.dumps(data)


def decode_data(raw: bytes | str) -> dict[str, Any]:
    """Inverse of :func:`encode_data`."""
    data = orjson.loads(raw)
    if not isinstance(data, dict):  # pragma: no cover - only written by encode_data
        raise TypeError(f"ledger data is not a JSON object: {data!r}")
    return data


def outcome_kind(data: dict[str, Any]) -> str | None:
    """The outcome kind of a ``goal_completed`` event's data, if it is a string.

    The orchestrator records ``GoalCompleted(goal_id, outcome)``, whose ``outcome`` is the
    GoalOutcome JSON (``{"goal_id", "outcome": {"kind", ...}, ...}``): the kind is at
    ``data["outcome"]["outcome"]["kind"]``. A bare ``data["outcome"]["kind"]`` is read too.
    """
    outcome = data.get("outcome")
    if isinstance(outcome, dict):
        nested = outcome.get("outcome")
        if isinstance(nested, dict):
            outcome = nested
        kind = outcome.get("kind")
        if isinstance(kind, str):
            return kind
    return None
