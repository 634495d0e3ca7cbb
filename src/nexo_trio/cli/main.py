"""``nexo-trio``: the command group. Exit codes: 0 ok, 1 goal not done, 2 usage, 130 cancel.

Subcommands load lazily: ``nexo-trio permission-mcp`` is spawned by Claude Code on every
turn, so it must not pay for importing trio, rich and the orchestrator.
"""

from __future__ import annotations

import importlib

import click

from nexo_trio import __version__

_COMMANDS: dict[str, tuple[str, str, str]] = {
    "run": (
        "nexo_trio.cli.run",
        "run",
        "Run goals until their checks pass (or a budget ends them).",
    ),
    "submit": (
        "nexo_trio.cli.queue",
        "submit",
        "Queue goals in the store for workers to run.",
    ),
    "worker": (
        "nexo_trio.cli.queue",
        "worker",
        "Run queued goals (any number, on any hosts).",
    ),
    "demo": (
        "nexo_trio.cli.demo",
        "demo",
        "The main job offline, with the bundled fake Claude.",
    ),
    "replay": (
        "nexo_trio.cli.replay",
        "replay",
        "Classify a recorded stdout stream: its TurnOutcome.",
    ),
    "transcript": (
        "nexo_trio.cli.transcript",
        "transcript",
        "What happened in a goal's turns (--raw: the stream).",
    ),
    "status": (
        "nexo_trio.cli.state",
        "status",
        "The goals of the state dir and how each stands.",
    ),
    "events": (
        "nexo_trio.cli.state",
        "events",
        "A goal's recorded events (--follow: as they come).",
    ),
    "bindings": (
        "nexo_trio.cli.state",
        "bindings",
        "Goal -> Claude Code session bindings.",
    ),
    "diff": (
        "nexo_trio.cli.workspace",
        "diff",
        "What a goal (or one turn) changed, as git diff.",
    ),
    "rollback": (
        "nexo_trio.cli.workspace",
        "rollback",
        "Put a goal's workspace back as before a turn.",
    ),
    "worktrees": (
        "nexo_trio.cli.workspace",
        "worktrees",
        "Every goal's worktree: branch, base, checkpoint.",
    ),
    "cleanup": (
        "nexo_trio.cli.workspace",
        "cleanup",
        "Remove a goal's worktree, checkpoint refs, branch.",
    ),
    "approve": (
        "nexo_trio.cli.control",
        "approve",
        "Allow what a goal's human decider asks about.",
    ),
    "deny": (
        "nexo_trio.cli.control",
        "deny",
        "Deny what a goal's human decider asks about.",
    ),
    "pause": (
        "nexo_trio.cli.control",
        "pause",
        "Pause a running goal before its next turn.",
    ),
    "resume": (
        "nexo_trio.cli.control",
        "resume",
        "Resume a paused goal.",
    ),
    "cancel": (
        "nexo_trio.cli.control",
        "cancel",
        "Cancel a running goal (its turn's tree is stopped).",
    ),
    "interrupt": (
        "nexo_trio.cli.control",
        "interrupt",
        "A message for a running goal's next turn.",
    ),
    "max-turns": (
        "nexo_trio.cli.control",
        "max_turns",
        "Raise a running goal's turn budget.",
    ),
    "watch": (
        "nexo_trio.cli.watch",
        "watch",
        "A live table of the state dir's goals.",
    ),
    "check": (
        "nexo_trio.cli.check",
        "check",
        "Validate a goal and run its checks once, no Claude.",
    ),
    "init": (
        "nexo_trio.cli.init",
        "init",
        "Write a commented goal.yaml and nexo.yaml.",
    ),
    "permission-mcp": (
        "nexo_trio.cli.permission_mcp",
        "permission_mcp",
        "The permission server Claude Code starts.",
    ),
}
"""Each command: its module, its attribute, and its line in ``nexo-trio --help`` (written
here, so that the listing imports no command module)."""


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(_COMMANDS)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command list of ``--help`` from :data:`_COMMANDS`: no module is imported."""
        with formatter.section("Commands"):
            formatter.write_dl([(name, summary) for name, (_, _, summary) in _COMMANDS.items()])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = _COMMANDS.get(cmd_name)
        if target is None:
            return None
        module, attribute, summary = target
        command = getattr(importlib.import_module(module), attribute)
        assert isinstance(command, click.Command)
        command.short_help = summary  # one line for the listing, wherever it is shown
        return command


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="nexo-trio")
def main() -> None:
    """Drive the Claude Code CLI turn by turn toward a goal."""
