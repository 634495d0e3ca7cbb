"""``nexo-trio init [DIR]``: a commented ``goal.yaml`` and ``nexo.yaml`` to start from, and
the goal's workspace directory (``DIR/work``).

Existing files are never overwritten: when either file is there, nothing is written (exit 2).
Both files load as they are written (``nexo_trio.wire.files.load_goal`` / ``load_config``),
and ``nexo-trio check DIR/goal.yaml`` runs their acceptance checks.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

import click

from nexo_trio.cli.common import UserError

GOAL_FILE: Final = "goal.yaml"
CONFIG_FILE: Final = "nexo.yaml"
WORKSPACE: Final = "work"

GOAL_TEMPLATE: Final = """\
# A goal for nexo-trio: what Claude should achieve, how to check it, and what it may spend.
#   nexo-trio check goal.yaml --config nexo.yaml   # run the checks once, no Claude
#   nexo-trio run goal.yaml --config nexo.yaml     # drive Claude until they pass
# Relative paths in this file are taken from the directory of this file.

# id: hello                 # optional: letters, digits, . _ -; default: derived from this
#                           # file's path, so running the same file again continues the goal

description: Create hello.txt containing the word hi.

# Checked after every turn where Claude says it is done; their failures open the next prompt.
# They run in the order written, stopping at the first failing required check; with
# `acceptance_mode: parallel` in the config they all run at once.
acceptance:
  - kind: file_match        # a workspace-relative file, searched with a Python regex
    path: hello.txt
    pattern: "^hi$"
    # required: true        # false: reported, but not needed for done
  - kind: shell             # /bin/sh -c in the workspace; passes on the expected exit code
    command: grep -qx hi hello.txt
    timeout: 60s            # default 5m
    # expect_exit: 0
    # stdout_pattern: "ok"  # and its stdout must match this regex
  # - kind: custom          # built in: git_clean, no_paths_touched (args: {paths: [...]})
  #   name: git_clean
  # - kind: llm_judge       # a model judges the workspace against a rubric
  #   rubric: hello.txt greets the reader politely.
  #   paths: [hello.txt]

# Every limit is optional; a goal that reaches one ends budget_exhausted (exit 1).
budget:
  max_turns: 8
  max_wall_time: 30m
  # max_tokens: 500000
  # max_cost_usd: 5.0
  # max_consecutive_errors: 3
  # max_consecutive_denies: 5

# Where Claude works: a directory that must exist (made by `nexo-trio init`) ...
workspace: ./work
# ... or a git worktree of a repository, on a branch of its own (your checkout is untouched):
# workspace: {repo: ../myrepo, base: main, branch: nexo/hello}
# checkpoints: true         # per-turn checkpoints of a plain (non-git) directory

# metadata: {ticket: ABC-123}   # free-form, carried into the events
"""

CONFIG_TEMPLATE: Final = """\
# nexo-trio's config (all keys optional; the values shown commented out are the defaults).
# ${VAR} and ${VAR:-default} are replaced from the environment; $$ is a literal $.
# Relative paths are taken from the directory nexo-trio runs in.

claude:
  binary: claude            # the Claude Code CLI (a name on PATH or a path; --claude-bin)
  # model: null             # passed as --model when set
  # allowed_tools: [Read, Grep, Glob, LS]   # run without asking the permission gate
  # append_system_prompt: null
  # env: {}                 # extra environment of every turn

# turn_timeout: 10m         # one turn's wall time (never more than what max_wall_time leaves)
# kill_grace: 5s            # SIGTERM, then this long, then SIGKILL of the turn's whole tree

state_dir: ./.nexo          # the ledger (nexo.db), sockets, raw streams: private, never
                            # writable by a turn
workspace_root: ./.nexo/workspaces   # where worktrees and default workspaces go
# max_concurrent_goals: 4

permission:                 # what decides each tool call Claude wants to make
  decider: rules            # rules | allow_all | deny_all | llm | human | chain
  # chain: [rules, llm]
  # unknown: null           # allow | deny | defer a call no rule knows; null: allow when
  #                         # the turn is confined
  # allow: ["Bash(npm test:*)", "Edit(src/**)"]   # Claude Code's permission rule syntax
  # deny: []
  # transport: stdio       # stdio (the CLI's own control protocol: no server per turn,
  #                         # interrupts that keep the session, interrupt --now) | mcp
  # tool_timeout: 60s
  # llm: {base_url: null, model: claude-haiku-4-5, api_key_env: ANTHROPIC_API_KEY, timeout: 20s}

# compact: {context_window: 200000, threshold: 0.8, min_turns_between: 3}
# replay: {max_retries: 3, rollback_on_timeout: false}
# stuck: {after: 3, action: fresh_session_then_escalate}   # | escalate | off
# sandbox: {mode: auto, writable: [], network: true}       # auto | bwrap | none
# acceptance_mode: sequential                               # | parallel
"""


def write_starter(directory: Path) -> tuple[Path, Path, Path]:
    """Write ``goal.yaml`` and ``nexo.yaml`` into ``directory`` (made if missing) and make
    the goal's workspace ``work/``; refuses (:class:`UserError`) when either file exists,
    writing nothing. Returns the three paths."""
    goal, config, workspace = (
        directory / GOAL_FILE,
        directory / CONFIG_FILE,
        directory / WORKSPACE,
    )
    existing = [p for p in (goal, config) if os.path.lexists(p)]
    if existing:
        names = " and ".join(str(p) for p in existing)
        raise UserError(
            f"{names} already exist{'s' if len(existing) == 1 else ''}: not overwritten"
        )
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for path, text in ((goal, GOAL_TEMPLATE), (config, CONFIG_TEMPLATE)):
            with path.open("x", encoding="utf-8") as out:  # "x": never over a file made meanwhile
                out.write(text)
        workspace.mkdir(exist_ok=True)
    except FileExistsError as exc:
        raise UserError(f"{exc.filename} already exists: not overwritten") from None
    except OSError as exc:
        raise UserError(f"cannot write to {directory}: {exc.strerror or exc}") from None
    return goal, config, workspace


@click.command()
@click.argument(
    "directory", default=".", type=click.Path(file_okay=False, path_type=Path), metavar="[DIR]"
)
def init(directory: Path) -> None:
    """Write a commented goal.yaml and nexo.yaml into DIR (default: here) to start from, and
    the goal's workspace DIR/work. Existing files are not overwritten (exit 2)."""
    goal, config, workspace = write_starter(directory)
    click.echo(f"wrote {goal} and {config}; the goal works in {workspace}/")
    click.echo(f"next: nexo-trio check {goal} --config {config}")
    click.echo(f"      nexo-trio run {goal} --config {config}")
