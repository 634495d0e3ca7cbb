"""``nexo-trio``: the command group. Exit codes: 0 ok, 1 goal not done, 2 usage, 130 cancel."""

from __future__ import annotations

import click

from nexo_trio import __version__
from nexo_trio.cli.demo import demo
from nexo_trio.cli.replay import replay
from nexo_trio.cli.run import run
from nexo_trio.cli.state import bindings, events, status


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="nexo-trio")
def main() -> None:
    """Drive the Claude Code CLI turn by turn toward a goal."""


for command in (run, demo, replay, status, events, bindings):
    main.add_command(command)
