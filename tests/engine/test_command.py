"""``ClaudeCommand``: the argv, stdin and environment of one ``claude -p`` run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nexo_trio.core.command import PROMPT_ARGV_LIMIT, ClaudeCommand

BASE_ARGV_TAIL = ["--output-format", "stream-json", "--verbose"]
SESSION = "0d6c2a43-5a3e-4a8e-9f3c-2b1d7e4f9a10"


def test_minimal_argv_is_print_mode_with_stream_json() -> None:
    cmd = ClaudeCommand(prompt="Create hello.txt")
    assert cmd.argv() == ["claude", "-p", "Create hello.txt", *BASE_ARGV_TAIL]
    assert cmd.stdin_data() is None
    assert not cmd.prompt_on_stdin


def test_argv_for_every_option_uses_the_equals_form() -> None:
    cmd = ClaudeCommand(
        prompt="do it",
        binary="/opt/claude/bin/claude",
        resume=SESSION,
        model="claude-sonnet-4-5",
        allowed_tools=["Read", "Bash(git *)"],
        disallowed_tools=("WebFetch",),
        permission_prompt_tool="mcp__nexo__permission",
        mcp_config="/tmp/mcp.json",
        add_dirs=["/srv/a", Path("/srv/b")],
        append_system_prompt="--be brief",
        max_turns=7,
        extra_args=["--permission-mode", "plan"],
    )
    assert cmd.argv() == [
        "/opt/claude/bin/claude",
        "-p",
        "do it",
        *BASE_ARGV_TAIL,
        f"--resume={SESSION}",
        "--model=claude-sonnet-4-5",
        "--allowedTools=Read,Bash(git *)",
        "--disallowedTools=WebFetch",
        "--permission-prompt-tool=mcp__nexo__permission",
        "--mcp-config=/tmp/mcp.json",
        "--strict-mcp-config",
        "--add-dir=/srv/a",
        "--add-dir=/srv/b",
        "--append-system-prompt=--be brief",
        "--max-turns=7",
        "--permission-mode",
        "plan",
    ]


def test_session_id_and_single_values_are_converted() -> None:
    cmd = ClaudeCommand(
        prompt="x",
        session_id=SESSION,
        allowed_tools="Read",
        add_dirs="/srv/only",
        extra_args="--debug",
        cwd="/tmp",
    )
    argv = cmd.argv()
    assert f"--session-id={SESSION}" in argv
    assert not any(a.startswith("--resume") for a in argv)
    assert "--allowedTools=Read" in argv
    assert "--add-dir=/srv/only" in argv
    assert argv[-1] == "--debug"
    assert cmd.cwd == Path("/tmp")


def test_a_value_that_looks_like_a_flag_stays_a_value() -> None:
    # The equals form keeps "--model=--dangerously..." one argument the CLI reads as a value.
    cmd = ClaudeCommand(prompt="x", model="--dangerously-skip-permissions")
    assert "--model=--dangerously-skip-permissions" in cmd.argv()
    assert "--dangerously-skip-permissions" not in cmd.argv()


@pytest.mark.parametrize(
    "prompt",
    [
        pytest.param("-rf everything", id="leading-dash"),
        pytest.param("--help", id="looks-like-a-flag"),
        pytest.param("before\0after", id="nul-byte"),
        pytest.param("x" * (PROMPT_ARGV_LIMIT + 1), id="longer-than-100KiB"),
        pytest.param("é" * (PROMPT_ARGV_LIMIT // 2 + 1), id="longer-than-100KiB-in-utf8"),
    ],
)
def test_prompts_unfit_for_argv_go_on_stdin(prompt: str) -> None:
    cmd = ClaudeCommand(prompt=prompt)
    assert cmd.prompt_on_stdin
    assert cmd.argv() == ["claude", "-p", *BASE_ARGV_TAIL]
    assert prompt not in cmd.argv()
    assert cmd.stdin_data() == prompt.encode("utf-8")


def test_a_prompt_of_exactly_100KiB_stays_in_argv() -> None:
    prompt = "y" * PROMPT_ARGV_LIMIT
    cmd = ClaudeCommand(prompt=prompt)
    assert not cmd.prompt_on_stdin
    assert cmd.argv()[2] == prompt
    assert cmd.stdin_data() is None


def test_a_dash_inside_the_prompt_is_fine_in_argv() -> None:
    cmd = ClaudeCommand(prompt="fix the --verbose flag handling")
    assert cmd.argv()[2] == "fix the --verbose flag handling"
    assert cmd.stdin_data() is None


def test_child_env_inherits_applies_overrides_and_drops_claudecode() -> None:
    base = {"PATH": "/usr/bin", "HOME": "/home/me", "CLAUDECODE": "1", "DROP_ME": "x"}
    cmd = ClaudeCommand(
        prompt="x",
        env={"ANTHROPIC_BASE_URL": "http://127.0.0.1:9", "HOME": "/tmp/h", "DROP_ME": None},
    )
    assert cmd.child_env(base) == {
        "PATH": "/usr/bin",
        "HOME": "/tmp/h",
        "ANTHROPIC_BASE_URL": "http://127.0.0.1:9",
    }
    assert base["CLAUDECODE"] == "1", "the base mapping must not be modified"


def test_child_env_drops_claudecode_even_when_passed_as_an_override() -> None:
    cmd = ClaudeCommand(prompt="x", env={"CLAUDECODE": "1"})
    assert "CLAUDECODE" not in cmd.child_env({"PATH": "/bin"})


def test_child_env_reads_only_its_base_not_our_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CLAUDECODE", "1")
    monkeypatch.setenv("NEXO_TEST_MARKER", "present")
    assert ClaudeCommand(prompt="x", env={"A": "2"}).child_env({"B": "1"}) == {"A": "2", "B": "1"}
    env = ClaudeCommand(prompt="x").child_env(os.environ)
    assert env["NEXO_TEST_MARKER"] == "present"
    assert "CLAUDECODE" not in env
    assert os.environ["CLAUDECODE"] == "1", "the base mapping must not be modified"


def test_removing_an_absent_variable_is_not_an_error() -> None:
    cmd = ClaudeCommand(prompt="x", env={"NOT_THERE": None})
    assert cmd.child_env({"A": "1"}) == {"A": "1"}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        pytest.param(
            {"resume": SESSION, "session_id": SESSION}, "resume or session_id", id="both-ids"
        ),
        pytest.param({"binary": ""}, "binary", id="empty-binary"),
        pytest.param({"max_turns": 0}, "max_turns must be at least 1, got 0", id="max-turns-0"),
        pytest.param({"max_turns": -3}, "max_turns must be at least 1", id="max-turns-neg"),
        pytest.param({"resume": ""}, "resume must not be empty", id="empty-resume"),
        pytest.param({"session_id": ""}, "session_id must not be empty", id="empty-session"),
    ],
)
def test_misuse_raises_a_clear_value_error(options: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ClaudeCommand(prompt="x", **options)  # type: ignore[arg-type]


def test_command_is_immutable_data() -> None:
    a = ClaudeCommand(prompt="x", allowed_tools=["Read"], env={"A": "1"})
    b = ClaudeCommand(prompt="x", allowed_tools=("Read",), env={"A": "1"})
    assert a == b
    with pytest.raises(AttributeError):
        a.prompt = "y"  # type: ignore[misc]
