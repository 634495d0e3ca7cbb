"""``nexo-trio``: the command group. Exit codes: 0 ok, 1 goal not done, 2 usage, 130 cancel.

Subcommands load lazily: ``nexo-trio permission-mcp`` is spawned by Claude Code on every
turn, so it must not pay for importing trio, rich and the orchestrator.
"""

from __future__ import annotations

import importlib

import click

from nexo_trio import __version__

_COMMANDS = {
    "run": ("nexo_trio.cli.run", "run"),
    "demo": ("nexo_trio.cli.demo", "demo"),
    "replay": ("nexo_trio.cli.replay", "replay"),
    "transcript": ("nexo_trio.cli.transcript", "transcript"),
    "status": ("nexo_trio.cli.state", "status"),
    "events": ("nexo_trio.cli.state", "events"),
    "bindings": ("nexo_trio.cli.state", "bindings"),
    "diff": ("nexo_trio.cli.workspace", "diff"),
    "rollback": ("nexo_trio.cli.workspace", "rollback"),
    "worktrees": ("nexo_trio.cli.workspace", "worktrees"),
    "cleanup": ("nexo_trio.cli.workspace", "cleanup"),
    "approve": ("nexo_trio.cli.control", "approve"),
    "deny": ("nexo_trio.cli.control", "deny"),
    "pause": ("nexo_trio.cli.control", "pause"),
    "resume": ("nexo_trio.cli.control", "resume"),
    "cancel": ("nexo_trio.cli.control", "cancel"),
    "interrupt": ("nexo_trio.cli.control", "interrupt"),
    "max-turns": ("nexo_trio.cli.control", "max_turns"),
    "watch": ("nexo_trio.cli.watch", "watch"),
    "check": ("nexo_trio.cli.check", "check"),
    "init": ("nexo_trio.cli.init", "init"),
    "permission-mcp": ("nexo_trio.cli.permission_mcp", "permission_mcp"),
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = _COMMANDS.get(cmd_name)
        if target is None:
            return None
        module, attribute = target
        command = getattr(importlib.import_module(module), attribute)
        assert isinstance(command, click.Command)
        return command


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="nexo-trio")
def main() -> None:
    """Drive the Claude Code CLI turn by turn toward a goal."""
