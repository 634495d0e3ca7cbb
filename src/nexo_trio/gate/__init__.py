"""The permission gate: every tool call Claude Code would prompt for is decided here.

* :mod:`nexo_trio.gate.mcp_stdio` — the MCP stdio server Claude Code spawns on every turn
  (``--permission-prompt-tool mcp__nexo__permission_prompt``). Stdlib only, so it starts
  fast; it forwards each request over a Unix socket to the orchestrator and fails closed.
* The orchestrator's side: the socket server, the per-goal MCP config, the deciders.

This package's ``__init__`` imports nothing on purpose: the MCP server must not pull in
trio (or anything else) just because it lives in this package.
"""
