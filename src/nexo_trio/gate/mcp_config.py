"""The per-goal MCP config that points Claude Code at our permission server.

Written outside the workspace (it must never land in the user's repository), one per goal,
fresh before each turn: it carries the turn's token (:func:`server_env`), which the goal's
gate checks on every request, so the server of an earlier turn (an orphan that outlived its
run) is denied. The deadlines nest so that Claude always gets an answer, never a failed call:
decider < gate request < MCP server < the CLI's per-server tool timeout.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Final

import attrs

from nexo_trio.gate.mcp_protocol import TOKEN_ENV

SERVER_NAME: Final = "nexo"
TOOL_NAME: Final = "permission_prompt"
PERMISSION_PROMPT_TOOL: Final = f"mcp__{SERVER_NAME}__{TOOL_NAME}"


@attrs.frozen
class GateDeadlines:
    """Nested deadlines, in seconds, derived from the CLI's tool timeout."""

    tool_timeout_s: float
    server_deadline_s: float
    gate_timeout_s: float
    decider_timeout_s: float

    @classmethod
    def from_tool_timeout(cls, tool_timeout_s: float) -> GateDeadlines:
        """Each layer answers at a fixed fraction of the one above it."""
        if tool_timeout_s <= 0:
            raise ValueError(f"the tool timeout must be positive, got {tool_timeout_s}")
        return cls(
            tool_timeout_s=tool_timeout_s,
            server_deadline_s=tool_timeout_s * 0.85,
            gate_timeout_s=tool_timeout_s * 0.75,
            decider_timeout_s=tool_timeout_s * 0.7,
        )


def server_command(socket_path: Path, goal_id: str, deadline_s: float) -> list[str]:
    """The absolute command line of the permission MCP server for one goal."""
    return [
        sys.executable,
        "-m",
        "nexo_trio.gate.mcp_stdio",
        "--socket",
        str(socket_path),
        "--goal-id",
        goal_id,
        "--deadline",
        f"{deadline_s:g}",
        "--tool-name",
        TOOL_NAME,
        "--server-name",
        SERVER_NAME,
    ]


def server_env(token: str) -> dict[str, str]:
    """The permission MCP server's environment additions: the turn's ``token`` goes in the
    environment rather than on the command line, which any user can read in ``/proc``."""
    return {"PYTHONDONTWRITEBYTECODE": "1", TOKEN_ENV: token}


def write_mcp_config(
    path: Path, *, socket_path: Path, goal_id: str, deadlines: GateDeadlines, token: str
) -> Path:
    """Write the MCP config of the goal's next turn (mode 0600); return its path. ``token``
    is that turn's (:meth:`nexo_trio.gate.goal_gate.GoalGate.begin_turn`)."""
    if not token:
        raise ValueError("a turn's MCP config needs the turn's token")
    command = server_command(socket_path, goal_id, deadlines.server_deadline_s)
    config = {
        "mcpServers": {
            SERVER_NAME: {
                "type": "stdio",
                "command": command[0],
                "args": command[1:],
                "env": server_env(token),
                "timeout": int(deadlines.tool_timeout_s * 1000),
            }
        }
    }
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(config, f, indent=2)
    tmp.replace(path)
    return path
