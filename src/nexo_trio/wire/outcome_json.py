"""TurnOutcome as JSON: the shape ``nexo-trio replay`` prints and the ledger stores.

::

    {"outcome": {"kind": "claimed_done", "reason": null, "cause": "completed", ...},
     "session_id": ..., "session_invalid": false, "final_text": ..., "usage": {...},
     "cost_usd": ..., "malformed_lines": 0, "events": 5, ...}
"""

from __future__ import annotations

from typing import Any, Final

import cattrs
import orjson

from nexo_trio.core.outcome import TurnOutcome

_OUTCOME_KEYS: Final = ("kind", "reason", "cause", "hint", "sleep_ms")


def _make_converter() -> cattrs.Converter:
    # Enums unstructure to their snake_case values; tuples to lists.
    return cattrs.Converter(unstruct_collection_overrides={tuple: list})


converter: Final = _make_converter()
"""The converter of the outcome JSON format."""


def turn_outcome_to_json(outcome: TurnOutcome) -> dict[str, Any]:
    """The JSON object of a turn outcome (``kind`` and friends nested under ``outcome``)."""
    flat: dict[str, Any] = converter.unstructure(outcome)
    nested = {key: flat.pop(key) for key in _OUTCOME_KEYS}
    return {"outcome": nested, **flat}


def turn_outcome_from_json(data: dict[str, Any]) -> TurnOutcome:
    """Read back what :func:`turn_outcome_to_json` wrote."""
    flat = {**data, **data.get("outcome", {})}
    flat.pop("outcome", None)
    return converter.structure(flat, TurnOutcome)


def dumps(obj: Any) -> bytes:
    """One JSON document, one line."""
    return orjson.dumps(obj)
