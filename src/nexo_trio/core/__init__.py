"""The sans-IO core: events, the turn reducer, outcome classification and line framing.

Pure logic on the standard library and attrs only: no trio, no asyncio, no subprocess, no
sockets. A test keeps it that way.
"""

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
