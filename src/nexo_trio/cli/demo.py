"""``nexo-trio demo``: the main job end to end, offline, on the bundled fake claude.

The goal asks for ``hello.txt`` containing the word ``hi``. The fake Claude first writes
``hello`` and claims it is done; acceptance fails; the failure goes into the next prompt
(resuming the same session); the fake then writes ``hi`` and the goal ends done.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import click
import trio

from nexo_trio.cli.progress import Progress
from nexo_trio.cli.run import exit_code, print_outcome, run_with_progress
from nexo_trio.core.goal import Budget, FileMatchCheck, Goal, ShellCheck
from nexo_trio.core.prompt import FAILURES_HEADER
from nexo_trio.core.settings import ClaudeSettings, Config, SandboxSettings
from nexo_trio.testing.scenario import FakeClaude, bash, init, result, text, turn

DEMO_GOAL_ID = "demo-hello"


def demo_setup(directory: Path) -> tuple[Goal, Config, FakeClaude]:
    """Write the fake claude and its scenario into ``directory``; return goal and config."""
    fake = FakeClaude.create(
        directory / "fake-claude",
        [
            turn(
                init(),
                bash("echo hello > hello.txt"),
                text("I created hello.txt. The goal is done."),
                result("I created hello.txt. The goal is done."),
            ),
            turn(
                init(),
                bash("cat hello.txt"),
                bash("echo hi > hello.txt"),
                text("hello.txt now holds the word hi. Done."),
                result("hello.txt now holds the word hi. Done."),
                prompt_contains=FAILURES_HEADER,
            ),
        ],
    )
    (directory / "workspace").mkdir(parents=True, exist_ok=True)
    goal = Goal(
        id=DEMO_GOAL_ID,
        description="Create hello.txt containing the word hi.",
        acceptance=(
            ShellCheck(command="grep -qx hi hello.txt", label="hello.txt says hi"),
            FileMatchCheck(path="hello.txt", pattern="^hi$"),
        ),
        budget=Budget(max_turns=4, max_wall_time_s=120),
        workspace=str(directory / "workspace"),
    )
    config = Config(
        claude=ClaudeSettings(binary=str(fake.binary), env=fake.env),
        # Confined where bubblewrap works; the fake keeps its records in its own directory.
        sandbox=SandboxSettings(writable=(str(fake.state_dir),)),
        turn_timeout_s=60,
        kill_grace_s=2,
        state_dir=str(directory / "state"),
    )
    return goal, config, fake


@click.command()
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    help="Keep the demo's files here (default: a temporary directory, removed afterwards).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the GoalOutcome as one JSON object.")
def demo(directory: Path | None, as_json: bool) -> None:
    """Run a goal end to end with the bundled fake Claude (no network, no API key)."""
    if directory is not None:
        directory.mkdir(parents=True, exist_ok=True)
        code = _demo(directory.resolve(), as_json)
    else:
        with tempfile.TemporaryDirectory(prefix="nexo-demo-") as tmp:
            code = _demo(Path(tmp), as_json)
    sys.exit(code)


def _demo(directory: Path, as_json: bool) -> int:
    goal, config, fake = demo_setup(directory)
    err = sys.stderr
    click.echo(f"goal: {goal.description}", err=True)
    progress = Progress(sys.stderr)
    outcome = trio.run(lambda: run_with_progress(goal, config, progress=progress))
    invocations = fake.invocations()
    prompts = [i["prompt"] for i in invocations]
    sessions = {i["session_id"] for i in invocations}
    if len(prompts) >= 2:
        err.write("\nThe second prompt Claude received (the acceptance failure, fed back):\n")
        for line in prompts[1].splitlines():
            err.write(f"  | {line}\n")
        err.write(f"Both turns ran in the same session: {len(sessions) == 1}\n")
    print_outcome(outcome, as_json=as_json)
    return exit_code(outcome)
