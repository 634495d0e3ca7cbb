"""nexo-trio: drive the Claude Code CLI turn by turn toward a goal, on trio.

The names below load lazily, so ``import nexo_trio.core`` (pure, sans-IO) does not pull
in trio or any I/O module.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "reduce": "nexo_trio.core.turn",
    "classify": "nexo_trio.core.turn",
    "TurnState": "nexo_trio.core.turn",
    "TurnOutcome": "nexo_trio.core.outcome",
    "TurnKind": "nexo_trio.core.outcome",
    "Cause": "nexo_trio.core.outcome",
    "ClaudeCommand": "nexo_trio.core.command",
    "run_turn": "nexo_trio.engine.supervisor",
    "TurnResult": "nexo_trio.engine.supervisor",
}

if TYPE_CHECKING:
    from nexo_trio.core.command import ClaudeCommand
    from nexo_trio.core.outcome import Cause, TurnKind, TurnOutcome
    from nexo_trio.core.turn import TurnState, classify, reduce
    from nexo_trio.engine.supervisor import TurnResult, run_turn

__all__ = [
    "Cause",
    "ClaudeCommand",
    "TurnKind",
    "TurnOutcome",
    "TurnResult",
    "TurnState",
    "__version__",
    "classify",
    "reduce",
    "run_turn",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'nexo_trio' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
