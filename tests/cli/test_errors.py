"""Bad files and options: exit 2, one clear line naming the file and the key, no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import Result

from tests.cli.helpers import invoke, make_setup, run_process, write_yaml

GOAL = {"id": "g1", "description": "Create hello.txt.", "workspace": "./ws"}


def error_line(stderr: str) -> str:
    """The one line that says what is wrong (click may print a usage hint above it)."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines, "nothing on stderr"
    last = lines[-1]
    assert last.startswith("Error: "), stderr
    return last


def assert_usage_error(r: Result, *needles: str) -> str:
    assert r.exit_code == 2, (r.exit_code, r.output, r.exception)
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    assert "Traceback" not in r.stderr
    assert r.stdout == ""
    line = error_line(r.stderr)
    for needle in needles:
        assert needle in line, line
    return line


def test_missing_goal_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    line = assert_usage_error(invoke("run", missing), str(missing))
    assert "does not exist" in line


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        ("description: [unclosed\n", ("invalid YAML at line",)),
        ("description: a\ndescription: b\n", ("description: duplicate key",)),
        ("- just\n- a list\n", ("expected a mapping of keys at the top level",)),
        ("", ("the goal file is empty",)),
        (
            "descripton: Create hello.txt.\n",
            ("descripton: unknown key", "did you mean 'description'?"),
        ),
        (
            "description: x\nbudget: {max_turns: 3, max_wall_time: soon}\n",
            ("budget.max_wall_time: expected a duration like 90s, 30m or 2h, got 'soon'",),
        ),
        (
            "description: x\nacceptance:\n  - {kind: shell, command: 'true', timeout: 5 min}\n",
            ("acceptance[0].timeout: expected a duration",),
        ),
        (
            "description: x\nbudget: {max_turns: yes}\n",
            ("budget.max_turns: expected an integer, got true",),
        ),
        (
            "description: x\nacceptance:\n  - {kind: regex, path: a}\n",
            ("acceptance[0].kind: expected one of shell, file_match, custom",),
        ),
        (
            "description: x\nacceptance:\n  - {kind: file_match, path: a, pattern: '(['}\n",
            ("acceptance[0].pattern: invalid regular expression",),
        ),
        ("id: g1\n", ("description: required key is missing",)),
        (
            "description: x\nacceptance:\n  - {kind: custom, name: lint_clean}\n",
            ("acceptance[0].name: unknown custom check 'lint_clean' (known: git_clean,",),
        ),
        ("id: ..\ndescription: x\n", ("id: must be a non-empty string", "got '..'")),
        ("id: .\ndescription: x\n", ("id: must be", "got '.'")),
        ("id: -x\ndescription: x\n", ("id: must be", "not starting with '.' or '-'")),
        ("id: -rf\ndescription: x\n", ("id: must be", "not starting with '.' or '-'")),
        ("id: a/b\ndescription: x\n", ("id: must be", "got 'a/b'")),
    ],
)
def test_bad_goal_file(tmp_path: Path, text: str, needles: tuple[str, ...]) -> None:
    goal = tmp_path / "goal.yaml"
    goal.write_text(text)
    line = assert_usage_error(invoke("run", goal), f"{goal}: ", *needles)
    assert line.count("\n") == 0


def test_missing_config_file(tmp_path: Path) -> None:
    goal = write_yaml(tmp_path / "goal.yaml", GOAL)
    missing = tmp_path / "missing-config.yaml"
    line = assert_usage_error(invoke("run", goal, "--config", missing), str(missing))
    assert "does not exist" in line


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        ("turn_timeout: ten minutes\n", ("turn_timeout: expected a duration",)),
        ("kill_grace: -1\n", ("kill_grace: expected a duration",)),
        ("max_concurrent_goals: 0\n", ("max_concurrent_goals: must be at least 1, got 0",)),
        ("permission: {decider: magic}\n", ("permission.decider: expected one of allow_all",)),
        ("compact: {threshold: 1.5}\n", ("compact.threshold: must be greater than 0",)),
        ("claude: {binray: claude}\n", ("claude.binray: unknown key", "did you mean 'binary'?")),
        ("line_cap: lots\n", ("line_cap: expected a size in bytes",)),
        ("state_dir: ${NEXO_TEST_UNSET_VARIABLE}\n", ("state_dir: environment variable",)),
        ("replay: {max_retries: -1}\n", ("replay.max_retries: must be at least 0",)),
    ],
)
def test_bad_config_file(tmp_path: Path, text: str, needles: tuple[str, ...]) -> None:
    goal = write_yaml(tmp_path / "goal.yaml", GOAL)
    config = tmp_path / "config.yaml"
    config.write_text(text)
    assert_usage_error(invoke("run", goal, "--config", config), f"{config}: ", *needles)
    assert not (Path.cwd() / ".nexo").exists()  # nothing ran


def test_a_bad_config_is_reported_before_a_bad_goal(tmp_path: Path) -> None:
    goal = tmp_path / "goal.yaml"
    goal.write_text("nonsense: 1\n")
    config = tmp_path / "config.yaml"
    config.write_text("turn_timeout: never\n")
    assert_usage_error(invoke("run", goal, "--config", config), str(config), "turn_timeout")


def test_state_commands_report_a_bad_config(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("state_dir: [a, b]\n")
    for args in (["status"], ["events", "g1"], ["bindings"]):
        assert_usage_error(
            invoke(*args, "--config", config), f"{config}: state_dir: expected a string"
        )


def test_unknown_option() -> None:
    r = invoke("run", "--frobnicate")
    assert r.exit_code == 2
    assert "No such option" in error_line(r.stderr)


def test_a_real_process_prints_one_line_and_no_traceback(tmp_path: Path) -> None:
    s = make_setup(tmp_path, [])
    goal = tmp_path / "goal.yaml"
    goal.write_text("description: x\nbudget: {max_wall_time: 3 days}\n")
    proc = run_process("run", goal, "--config", s.config)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr == (
        f"Error: {goal}: budget.max_wall_time: expected a duration like 90s, 30m or 2h, "
        "got '3 days'\n"
    )
    assert s.fake.invocations() == []


def test_a_state_dir_that_is_not_a_directory(tmp_path: Path) -> None:
    s = make_setup(tmp_path, [])
    (tmp_path / "a-file").write_text("")
    state = tmp_path / "a-file" / "state"
    assert_usage_error(
        invoke("run", s.goal(), "--config", s.config, "--state-dir", state),
        f"cannot use the state dir {state}: Not a directory",
    )
    assert s.fake.invocations() == []


@pytest.mark.parametrize("command", [["run", "GOAL"], ["status"], ["bindings"], ["events", "g1"]])
def test_a_state_dir_holding_something_else(tmp_path: Path, command: list[str]) -> None:
    s = make_setup(tmp_path, [])
    s.state_dir.mkdir()
    (s.state_dir / "nexo.db").write_text("not a database, but someone's notes\n" * 100)
    args = [str(s.goal()) if arg == "GOAL" else arg for arg in command]
    assert_usage_error(
        invoke(*args, "--config", s.config),
        f"cannot use the state dir {s.state_dir}: file is not a database",
    )
    assert s.fake.invocations() == []


def test_a_workspace_that_is_a_file(tmp_path: Path) -> None:
    s = make_setup(tmp_path, [])
    goal = s.goal(workspace="./notes.txt")
    (goal.parent / "notes.txt").write_text("")
    assert_usage_error(
        invoke("run", goal, "--config", s.config),
        f"{goal}: workspace: {goal.parent / 'notes.txt'} exists and is not a directory",
    )


@pytest.mark.parametrize(
    ("workspace", "words"),
    [("STATE", "is the state dir"), ("ROOT", "holds the state dir")],
)
def test_a_workspace_that_would_let_turns_write_the_state_dir(
    tmp_path: Path, workspace: str, words: str
) -> None:
    """Issue 10: a goal whose workspace is (above) the state dir never runs a turn."""
    s = make_setup(tmp_path, [])
    where = {"STATE": s.state_dir, "ROOT": tmp_path}[workspace]
    goal = s.goal(workspace=str(where))
    line = assert_usage_error(invoke("run", goal, "--config", s.config), words)
    assert line == (
        f"Error: goal 'g1': the workspace {where} {words} {s.state_dir}: turns could write it "
        "(put the state dir elsewhere: --state-dir, or state_dir in the config)"
    )
    assert s.fake.invocations() == []
