"""The trio shell around one turn: spawn the CLI, read it, watch it, stop it."""

from nexo_trio.core.command import ClaudeCommand
from nexo_trio.engine.supervisor import TurnResult, run_turn

__all__ = ["ClaudeCommand", "TurnResult", "run_turn"]
