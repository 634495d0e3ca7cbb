"""``nexo-trio``: the command group. Exit codes: 0 ok, 1 goal not done, 2 usage, 130 cancel."""

from __future__ import annotations

import click

from nexo_trio import __version__
from nexo_trio.cli.replay import replay


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="nexo-trio")
def main() -> None:
    """Drive the Claude Code CLI turn by turn toward a goal."""


main.add_command(replay)
