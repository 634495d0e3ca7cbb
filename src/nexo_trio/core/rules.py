"""Static permission rules: read-only tools, destructive Bash commands, workspace paths.

Pure (stdlib + attrs): nothing here touches the filesystem, runs a process or knows trio.
The gate layer wraps :func:`evaluate_rules` in its ``rules`` decider.

What the rules decide (:func:`evaluate_rules`):

* tools in :data:`READ_ONLY_TOOLS` are allowed;
* ``Bash`` commands for which :func:`destructive_reason` finds a reason are denied;
* ``Write``/``Edit``/``MultiEdit``/``NotebookEdit`` whose path escapes the workspace (and is not
  in a scratch directory, see :mod:`~nexo_trio.core.path_model`) are denied; with no workspace
  known they abstain;
* everything else gets ``default``: ``allow`` for the standalone ``rules`` decider,
  ``abstain`` inside a chain, so the next decider (e.g. the LLM) decides.

The rules are built in layers, each module importing only the ones below it:

* :mod:`~nexo_trio.core.judges` — :func:`destructive_reason`: how a Bash command is read, the
  per-command judges (what is flagged) and the known limits;
* :mod:`~nexo_trio.core.fork_bomb` — fork bombs, spotted in the raw command text;
* :mod:`~nexo_trio.core.invocation` — what a simple command runs: its words resolved against
  the variables and the virtual current directory, its prefixes (``sudo``, ``env``,
  ``xargs``…) unwrapped;
* :mod:`~nexo_trio.core.shell_syntax` — the lexer and parser of Bash command text;
* :mod:`~nexo_trio.core.path_model` — where a path lands (:func:`path_escapes`), judged purely:
  anchors for unknown places, the workspace, scratch directories, devices.
"""

from __future__ import annotations

from typing import Any, Literal

import attrs

from nexo_trio.core.judges import destructive_reason
from nexo_trio.core.path_model import in_scratch, path_escapes

__all__ = [
    "FILE_WRITE_TOOLS",
    "READ_ONLY_TOOLS",
    "RuleVerdict",
    "destructive_reason",
    "evaluate_rules",
    "path_escapes",
]

READ_ONLY_TOOLS: frozenset[str] = frozenset(
    {
        # Reading files and listing directories (older CLIs have Grep/Glob/LS; newer ones
        # search through Bash). Reading outside the workspace is still only reading.
        "Read",
        "Grep",
        "Glob",
        "LS",
        "NotebookRead",
        # Web search runs on the API side with a query; it fetches nothing chosen by URL.
        # WebFetch is deliberately NOT here: it sends a GET to any URL Claude picks, which is
        # both an exfiltration channel (workspace secrets in the query string) and a way to
        # reach internal services (169.254.169.254, localhost admin endpoints): it gets the
        # default (allowed standalone, the LLM decides in a chain).
        "WebSearch",
        # Claude's own bookkeeping: the todo/task list lives in the CLI session, not on disk.
        "TodoRead",
        "TodoWrite",
        "TaskCreate",
        "TaskGet",
        "TaskList",
        "TaskUpdate",
        # Listing and reading what is already there: deferred tool schemas, agents,
        # scheduled jobs, background shell output, MCP resources.
        "ToolSearch",
        "ListAgents",
        "CronList",
        "BashOutput",
        "ListMcpResourcesTool",
        "ReadMcpResourceTool",
    }
)
"""Tools that never change anything outside the CLI session: always allowed."""

FILE_WRITE_TOOLS: dict[str, str] = {
    "Write": "file_path",
    "Edit": "file_path",
    "MultiEdit": "file_path",
    "NotebookEdit": "notebook_path",
}
"""File-writing tools and the input key holding the path they write."""


@attrs.frozen
class RuleVerdict:
    """What the static rules say about one tool call, and why."""

    outcome: Literal["allow", "deny", "abstain"]
    reason: str


def evaluate_rules(
    tool_name: str,
    tool_input: dict[str, Any],
    workspace: str | None,
    *,
    default: Literal["allow", "abstain"],
) -> RuleVerdict:
    """Judge one tool call with the static rules (see the module docstring).

    Malformed input for ``Bash`` or a file-writing tool (no command string, no path) is
    denied: the gate fails closed. Anything the rules do not know gets ``default``.
    """
    if tool_name in READ_ONLY_TOOLS:
        return RuleVerdict("allow", f"{tool_name} is read-only")
    raw: object = tool_input
    if tool_name == "Bash":
        command = raw.get("command") if isinstance(raw, dict) else None
        if not isinstance(command, str):
            return RuleVerdict("deny", "malformed Bash input: no command string")
        reason = destructive_reason(command, workspace)
        if reason is not None:
            return RuleVerdict("deny", reason)
        return RuleVerdict(default, "no rule flags this command")
    key = FILE_WRITE_TOOLS.get(tool_name)
    if key is not None:
        path = raw.get(key) if isinstance(raw, dict) else None
        if not isinstance(path, str) or not path:
            return RuleVerdict("deny", f"malformed {tool_name} input: no {key} string")
        if workspace is None:
            return RuleVerdict("abstain", f"no workspace is known to judge {tool_name} {path}")
        if path_escapes(path, workspace) and not in_scratch(path, workspace):
            return RuleVerdict("deny", f"{tool_name} outside the workspace: {path}")
        return RuleVerdict(default, f"{tool_name} stays inside the workspace")
    return RuleVerdict(default, f"no rule covers {tool_name}")
