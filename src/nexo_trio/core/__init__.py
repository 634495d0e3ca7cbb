"""The sans-IO core: events, the turn reducer, outcome classification and line framing.

Pure logic on the standard library and attrs only: no trio, no asyncio, no subprocess, no
sockets. A test keeps it that way.

The names below load lazily (as in :mod:`nexo_trio`), so importing one core module, say
:mod:`nexo_trio.core.framing` from the permission MCP server, does not load the others and
attrs with them: that server is spawned on every turn and its imports are its start-up.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nexo_trio.core.lazy import lazy_exports

_EXPORTS = {
    "Event": "nexo_trio.core.events",
    "Frame": "nexo_trio.core.events",
    "Usage": "nexo_trio.core.events",
    "DEFAULT_LINE_CAP": "nexo_trio.core.framing",
    "LineFramer": "nexo_trio.core.framing",
    "Cause": "nexo_trio.core.outcome",
    "TurnKind": "nexo_trio.core.outcome",
    "TurnOutcome": "nexo_trio.core.outcome",
    "INITIAL_STATE": "nexo_trio.core.turn",
    "Phase": "nexo_trio.core.turn",
    "TurnState": "nexo_trio.core.turn",
    "classify": "nexo_trio.core.turn",
    "reduce": "nexo_trio.core.turn",
}

if TYPE_CHECKING:
    from nexo_trio.core.events import Event, Frame, Usage
    from nexo_trio.core.framing import DEFAULT_LINE_CAP, LineFramer
    from nexo_trio.core.outcome import Cause, TurnKind, TurnOutcome
    from nexo_trio.core.turn import INITIAL_STATE, Phase, TurnState, classify, reduce

__all__ = [
    "DEFAULT_LINE_CAP",
    "INITIAL_STATE",
    "Cause",
    "Event",
    "Frame",
    "LineFramer",
    "Phase",
    "TurnKind",
    "TurnOutcome",
    "TurnState",
    "Usage",
    "classify",
    "reduce",
]


__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
