"""``nexo-trio permission-mcp``: the MCP stdio permission server Claude Code spawns."""

from __future__ import annotations

import sys

import click


@click.command(
    "permission-mcp",
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    add_help_option=False,
)
@click.pass_context
def permission_mcp(ctx: click.Context) -> None:
    """MCP stdio server forwarding permission prompts to the orchestrator's socket.

    Options: --socket PATH --goal-id ID [--deadline SECONDS] [--tool-name NAME]
    [--server-name NAME]. Started by Claude Code (see the MCP config nexo-trio writes).
    """
    from nexo_trio.gate.mcp_stdio import main  # noqa: PLC0415 - keep other commands light

    sys.exit(main(list(ctx.args)))
