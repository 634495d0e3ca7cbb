"""The effect classifier: what a tool call Claude wants to make would do (pure).

:func:`classify_call` puts every tool call in one of four effects
(:data:`~nexo_trio.core.judges.EFFECTS`), as an :class:`EffectVerdict` (the effect, a reason
Claude can act on, the short stable name of the rule that decided, the command or path
decided on):

* ``read``: it only reads: the read-only tools (:data:`READ_ONLY_TOOLS`), Bash commands that
  only read (see :mod:`~nexo_trio.core.judges`);
* ``workspace``: it writes only inside the scope (:class:`Scope`: the workspace, the goal's
  scratch directory, the extra writable directories): file tools (:data:`FILE_WRITE_TOOLS`)
  whose path lands there, Bash commands whose every target lands there;
* ``destructive``: it is known to harm (the reason names the rule): writes, deletes, moves,
  truncations aimed outside the scope, wholesale deletions of the workspace, history-losing
  git forms, downloads run as code, fork bombs…; and malformed input of ``Bash`` or a file
  tool (no command string, no path), so that the gate fails closed;
* ``unknown``: its effect cannot be read statically: interpreters, scripts, build tools,
  package managers, network clients, containers, ``eval`` of computed text, anything not on
  the allow-lists, and the tools whose effect is outside this model (``WebFetch``,
  ``WebSearch``, ``Task``, ``mcp__*``, tools not known here).

There is no global scratch place: ``/tmp`` is outside unless it holds the scope's scratch.
Every path judged goes through ``resolve`` (absolute path, ``..`` unfolded, to real path,
symlinks followed; the default is the identity): a link inside the workspace pointing
outside is outside, and the workspace reached through a differently spelled link is still
the workspace (the scope's paths are real paths). A resolver on the file system lives in the
gate (:mod:`nexo_trio.gate.resolve`); this module does no I/O.
"""

from __future__ import annotations

from typing import Any

from nexo_trio.core.judges import EFFECTS, Effect, EffectVerdict, command_effect, worse
from nexo_trio.core.path_model import PathResolver, Scope, World, hint, locate

__all__ = [
    "EFFECTS",
    "FILE_WRITE_TOOLS",
    "READ_ONLY_TOOLS",
    "Effect",
    "EffectVerdict",
    "PathResolver",
    "Scope",
    "classify_call",
    "worse",
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
"""Tools that never change anything outside the CLI session. ``WebFetch`` and
``WebSearch`` are not here: what they send (a URL, a query) can carry the workspace's secrets
out, and a URL can reach internal services."""

FILE_WRITE_TOOLS: dict[str, str] = {
    "Write": "file_path",
    "Edit": "file_path",
    "MultiEdit": "file_path",
    "NotebookEdit": "notebook_path",
}
"""File-writing tools and the input key holding the path they write."""

_OTHER_TOOLS: dict[str, tuple[str, str]] = {
    "WebFetch": ("web", "WebFetch sends a request to a URL Claude chose"),
    "WebSearch": ("web", "WebSearch sends a query out of the machine"),
    "Task": ("subagent", "Task starts a subagent, whose tool calls are judged on their own"),
}


def classify_call(
    tool_name: str,
    tool_input: dict[str, Any],
    scope: Scope,
    resolve: PathResolver | None = None,
) -> EffectVerdict:
    """The effect of one tool call in ``scope`` (see the module docstring)."""
    if tool_name in READ_ONLY_TOOLS:
        return EffectVerdict("read", f"{tool_name} only reads", "read-only-tool", tool_name)
    raw: object = tool_input
    if tool_name == "Bash":
        command = raw.get("command") if isinstance(raw, dict) else None
        if not isinstance(command, str):
            return EffectVerdict(
                "destructive", "malformed Bash input: no command string", "malformed-input", "Bash"
            )
        return command_effect(command, scope, resolve)
    key = FILE_WRITE_TOOLS.get(tool_name)
    if key is not None:
        path = raw.get(key) if isinstance(raw, dict) else None
        if not isinstance(path, str) or not path:
            return EffectVerdict(
                "destructive",
                f"malformed {tool_name} input: no {key} string",
                "malformed-input",
                tool_name,
            )
        return _file_write(tool_name, path, scope, resolve)
    if tool_name in _OTHER_TOOLS:
        rule, reason = _OTHER_TOOLS[tool_name]
        return EffectVerdict("unknown", reason, rule, tool_name)
    if tool_name.startswith("mcp__"):
        return EffectVerdict(
            "unknown",
            f"{tool_name} is an MCP tool, whose effect is its server's",
            "mcp-tool",
            tool_name,
        )
    return EffectVerdict(
        "unknown",
        f"{tool_name} is not a tool whose effect the rules know",
        "unknown-tool",
        tool_name,
    )


def _file_write(tool: str, path: str, scope: Scope, resolve: PathResolver | None) -> EffectVerdict:
    """A file tool writing ``path`` (absolute, or relative to the workspace)."""
    world = World.of(scope, resolve)
    if world.workspace is None and not path.startswith(("/", "~")):
        return EffectVerdict(
            "unknown",
            f"{tool} of a relative path with no workspace known: {path}",
            "unknown-directory",
            path,
        )
    place = locate(path, world.workspace or (), world)
    at = f"{path}{hint(path, place.comps)}"
    if place.kind == "safe_device":
        return EffectVerdict(
            "read", f"{tool} writes only to a pseudo-device: {at}", "safe-device", path
        )
    if place.kind in ("root", "outside", "home", "escaped", "device"):
        return EffectVerdict(
            "destructive", f"{tool} outside the workspace: {at}", "write-outside-workspace", path
        )
    if place.unresolved is not None:
        return EffectVerdict(
            "unknown", f"{tool}: {place.unresolved}: {path}", "unresolvable-path", path
        )
    if ".git" in place.comps:
        return EffectVerdict(
            "unknown",
            f"{tool} writes into a .git directory, which can make git run programs: {at}",
            "write-git-control",
            path,
        )
    area = "workspace" if place.kind in ("workspace", "inside") else "scratch directory"
    rule = "write-inside-workspace" if area == "workspace" else "write-inside-scratch"
    return EffectVerdict("workspace", f"{tool} writes only inside the {area}: {at}", rule, path)
