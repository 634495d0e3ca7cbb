"""The README's Python example runs as written, importing only from ``nexo_trio``, with the
test kit's fake claude standing in for Claude Code on ``PATH``."""

from __future__ import annotations

import ast
import os
import re
import sys
from pathlib import Path

import trio

from nexo_trio.testing import FakeClaude, bash, init, result, text, turn

README = Path(__file__).resolve().parents[2] / "README.md"


def python_example(section: str) -> str:
    """The first ```python block after the heading ``section``."""
    body = README.read_text(encoding="utf-8").split(f"\n## {section}\n", 1)[1]
    match = re.search(r"```python\n(.*?)```", body, re.DOTALL)
    assert match is not None, f"no Python example under '## {section}'"
    return match.group(1)


def test_the_example_imports_only_from_nexo_trio() -> None:
    tree = ast.parse(python_example("From Python"))
    modules = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)} | {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    assert modules == {"nexo_trio", "trio"}


async def test_the_python_example_runs_as_written(tmp_path: Path) -> None:
    example = tmp_path / "example.py"
    example.write_text(python_example("From Python"))
    # Like the real CLI, the fake keeps its state in ~/.claude: writable in the sandbox
    # that confines each turn where bubblewrap works (the default, sandbox.mode auto).
    home = tmp_path / "home"
    fake = FakeClaude.create(
        tmp_path / "bin",
        [turn(init(), bash("echo hi > hello.txt"), text("Done."), result("Done."))],
        state_dir=home / ".claude" / "fake",
    )
    env = {
        **os.environ,
        **fake.env,
        "HOME": str(home),
        "PATH": f"{fake.directory}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    with trio.fail_after(60):
        proc = await trio.run_process(
            [sys.executable, str(example)],
            cwd=tmp_path,
            env=env,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout.decode() == "done 1 $0.0010\nGoalStarted ... GoalCompleted\n"
    assert (tmp_path / ".nexo" / "workspaces" / "hello" / "hello.txt").read_text() == "hi\n"
    assert (tmp_path / ".nexo" / "nexo.db").exists()
    (invocation,) = fake.invocations()
    assert invocation["cwd"] == str((tmp_path / ".nexo" / "workspaces" / "hello").resolve())
