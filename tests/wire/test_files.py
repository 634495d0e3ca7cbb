"""Goal files and the config file: DESIGN.md §3 in, core records out, clear errors."""

from __future__ import annotations

import math
import string
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from nexo_trio.core.compact import CompactPolicy
from nexo_trio.core.goal import (
    Budget,
    CustomCheck,
    FileMatchCheck,
    Goal,
    LlmJudgeCheck,
    ShellCheck,
)
from nexo_trio.core.settings import (
    ClaudeSettings,
    Config,
    LlmSettings,
    PermissionSettings,
    ReplaySettings,
)
from nexo_trio.wire.files import (
    FileFormatError,
    config_to_dict,
    goal_id_for_path,
    goal_to_yaml,
    load_config,
    load_goal,
    parse_config,
    parse_duration,
    parse_goal,
    parse_size,
)

DESIGN_GOAL = """\
id: 0d6c9a2e            # optional; derived from the file path when absent
description: Create hello.txt containing the word hi.
acceptance:
  - kind: shell
    command: grep -q hi hello.txt
    timeout: 60s      # optional
  - kind: file_match
    path: hello.txt
    pattern: "^hi"    # Python regex, searched
    required: true
  - kind: custom
    name: git_clean
budget:
  max_turns: 8
  max_wall_time: 30m
  max_tokens: 500000
  max_cost_usd: 5.0
  max_consecutive_errors: 3
  max_consecutive_denies: 5
workspace: ./work     # optional
metadata: {}          # free-form, carried into events
"""

DESIGN_CONFIG = """\
claude:
  binary: claude          # or a path; `--claude-bin` overrides
  model: null             # passed as --model when set
  allowed_tools: [Read, Grep, Glob, LS]
  append_system_prompt: null
turn_timeout: 10m
kill_grace: 5s
state_dir: ./.nexo        # SQLite ledger, bindings, sockets, MCP configs
workspace_root: ./.nexo/workspaces
max_concurrent_goals: 4
permission:
  decider: rules          # allow_all | deny_all | rules | llm | chain
  llm: {base_url: null, model: claude-haiku-4-5, api_key_env: ANTHROPIC_API_KEY, timeout: 20s}
compact: {context_window: 200000, threshold: 0.8, min_turns_between: 3}
replay: {max_retries: 3}
"""


def goal(text: str) -> Goal:
    return parse_goal(text, source="goal.yaml")


def config(text: str, **environ: str) -> Config:
    return parse_config(text, source="config.yaml", environ=environ)


# --- the examples of DESIGN.md ------------------------------------------------------------


def test_design_goal_example() -> None:
    assert goal(DESIGN_GOAL) == Goal(
        id="0d6c9a2e",
        description="Create hello.txt containing the word hi.",
        acceptance=(
            ShellCheck(command="grep -q hi hello.txt", timeout_s=60.0),
            FileMatchCheck(path="hello.txt", pattern="^hi", required=True),
            CustomCheck(name="git_clean"),
        ),
        budget=Budget(
            max_turns=8,
            max_wall_time_s=1800.0,
            max_tokens=500_000,
            max_cost_usd=5.0,
            max_consecutive_errors=3,
            max_consecutive_denies=5,
        ),
        workspace="./work",
        metadata={},
    )


def test_design_config_example_is_the_default_config() -> None:
    assert config(DESIGN_CONFIG) == Config()


def test_every_config_key() -> None:
    text = """\
claude:
  binary: /opt/claude
  model: claude-sonnet-4-5
  allowed_tools: [Read, "Bash(git *)"]
  disallowed_tools: [WebFetch]
  append_system_prompt: Be brief.
  extra_args: [--debug]
  env: {DEBUG: "1"}
turn_timeout: 1h30m
kill_grace: 500ms
line_cap: 1MiB
state_dir: /var/nexo
workspace_root: /var/nexo/ws
max_concurrent_goals: 2
progress_every: 1
permission:
  decider: chain
  llm: {base_url: "http://localhost:8080", model: m, api_key_env: KEY, timeout: 2s}
  chain: [rules, llm, deny_all]
compact: {context_window: 1000, threshold: 1, min_turns_between: 0}
replay: {max_retries: 0}
"""
    assert config(text) == Config(
        claude=ClaudeSettings(
            binary="/opt/claude",
            model="claude-sonnet-4-5",
            allowed_tools=("Read", "Bash(git *)"),
            disallowed_tools=("WebFetch",),
            append_system_prompt="Be brief.",
            extra_args=("--debug",),
            env={"DEBUG": "1"},
        ),
        turn_timeout_s=5400.0,
        kill_grace_s=0.5,
        line_cap=1024 * 1024,
        state_dir="/var/nexo",
        workspace_root="/var/nexo/ws",
        max_concurrent_goals=2,
        progress_every=1,
        permission=PermissionSettings(
            decider="chain",
            llm=LlmSettings(
                base_url="http://localhost:8080", model="m", api_key_env="KEY", timeout_s=2.0
            ),
            chain=("rules", "llm", "deny_all"),
        ),
        compact=CompactPolicy(context_window=1000, threshold=1.0, min_turns_between=0),
        replay=ReplaySettings(max_retries=0),
    )


# --- defaults -----------------------------------------------------------------------------


def test_goal_defaults() -> None:
    g = goal("description: do it\n")
    assert (g.description, g.acceptance, g.budget, g.workspace, g.metadata) == (
        "do it",
        (),
        Budget(),
        None,
        {},
    )


def test_check_defaults() -> None:
    g = goal(
        "description: d\nacceptance:\n"
        "  - {kind: shell, command: 'true'}\n"
        "  - {kind: file_match, path: a, pattern: b}\n"
        "  - {kind: custom, name: no_paths_touched, args: {paths: [x]}, label: L}\n"
    )
    assert g.acceptance == (
        ShellCheck(command="true"),
        FileMatchCheck(path="a", pattern="b"),
        CustomCheck(name="no_paths_touched", args={"paths": ["x"]}, label="L"),
    )


def test_shell_check_every_key_and_exit_code_alias() -> None:
    g = goal(
        "description: d\nacceptance:\n"
        "  - {kind: shell, command: make, timeout: 2m, expect_exit: 2,"
        " stdout_pattern: 'ok\\b', label: build}\n"
        "  - {kind: shell, command: make, exit_code: 3}\n"
    )
    assert g.acceptance == (
        ShellCheck("make", timeout_s=120.0, expect_exit=2, stdout_pattern="ok\\b", label="build"),
        ShellCheck("make", expect_exit=3),
    )


def test_missing_budget_key_keeps_default_and_null_means_no_limit() -> None:
    g = goal("description: d\nbudget:\n  max_tokens: 1000\n  max_turns: null\n")
    assert g.budget == Budget(max_turns=None, max_tokens=1000)
    assert g.budget.max_consecutive_errors == Budget().max_consecutive_errors


def test_metadata_is_free_form() -> None:
    g = goal("description: d\nmetadata: {owner: me, tags: [a, b], n: 1, nested: {x: null}}\n")
    assert g.metadata == {"owner": "me", "tags": ["a", "b"], "n": 1, "nested": {"x": None}}


def test_config_defaults() -> None:
    assert load_config(None) == Config()
    assert config("") == Config()
    assert config("# nothing but a comment\n") == Config()
    assert config("turn_timeout: 30s\n") == Config(turn_timeout_s=30.0)


def test_load_from_files(tmp_path: Path) -> None:
    (tmp_path / "goal.yaml").write_text(DESIGN_GOAL, encoding="utf-8")
    (tmp_path / "config.yaml").write_text("max_concurrent_goals: ${N}\n", encoding="utf-8")
    assert load_goal(tmp_path / "goal.yaml") == goal(DESIGN_GOAL)
    assert load_config(tmp_path / "config.yaml", environ={"N": "9"}).max_concurrent_goals == 9


# --- ids ----------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["description: d\n", "id: null\ndescription: d\n", "id:\n"])
def test_id_is_a_fresh_uuid4_when_absent(text: str) -> None:
    text = text if "description" in text else text + "description: d\n"
    ids = {goal(text).id for _ in range(50)}
    assert len(ids) == 50
    assert all(uuid.UUID(i).version == 4 for i in ids)


def test_given_id_is_kept() -> None:
    assert goal("id: fix-bug_42.v2\ndescription: d\n").id == "fix-bug_42.v2"


# --- ${VAR} substitution ------------------------------------------------------------------


def test_env_substitution_with_values_and_defaults() -> None:
    text = """\
claude:
  binary: ${CLAUDE_BIN:-claude}
  model: ${MODEL:-}
  append_system_prompt: prefix ${WHO}-${WHO} suffix
turn_timeout: ${T:-10m}
max_concurrent_goals: ${N:-4}
state_dir: ${EMPTY:-/tmp/d}
"""
    c = config(text, WHO="me", N="7", EMPTY="")
    assert c.claude.binary == "claude"
    assert c.claude.model is None  # an unquoted empty result is YAML null
    assert c.claude.append_system_prompt == "prefix me-me suffix"
    assert c.turn_timeout_s == 600.0
    assert c.max_concurrent_goals == 7  # re-typed: an integer, as if written in the file
    assert c.state_dir == "/tmp/d"  # ${VAR:-default} also replaces an empty value

    c = config(text, WHO="x", CLAUDE_BIN="/bin/claude", MODEL="m", T="90s")
    assert (c.claude.binary, c.claude.model, c.turn_timeout_s) == ("/bin/claude", "m", 90.0)


def test_env_dollar_escapes_and_lone_dollars() -> None:
    c = config("claude:\n  append_system_prompt: costs $5, literal $${HOME}, $$$$\n")
    assert c.claude.append_system_prompt == "costs $5, literal ${HOME}, $$"


def test_env_quoted_reference_stays_a_string() -> None:
    assert config('claude: {model: "${M}"}\n', M="123").claude.model == "123"
    with pytest.raises(FileFormatError) as info:
        config('max_concurrent_goals: "${N}"\n', N="3")
    assert str(info.value) == "config.yaml: max_concurrent_goals: expected an integer, got '3'"
    # ...which durations and sizes accept.
    c = config('permission: {llm: {timeout: "${T:-3s}"}}\nline_cap: "${L}"\n', L="1KiB")
    assert (c.permission.llm.timeout_s, c.line_cap) == (3.0, 1024)


def test_env_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEXO_TEST_BIN", "/usr/local/bin/claude")
    c = parse_config("claude:\n  binary: ${NEXO_TEST_BIN}\n", source="c.yaml")
    assert c.claude.binary == "/usr/local/bin/claude"


def test_env_is_not_substituted_in_goal_files() -> None:
    assert goal("description: echo ${HOME} $$\n").description == "echo ${HOME} $$"


@pytest.mark.parametrize(
    ("text", "key_path", "fragment"),
    [
        ("claude:\n  binary: ${NOPE}\n", "claude.binary", "environment variable NOPE is not set"),
        ("claude:\n  extra_args: [a, '${NOPE}']\n", "claude.extra_args[1]", "NOPE is not set"),
        ("claude:\n  binary: x${A B}\n", "claude.binary", "invalid variable reference '${A B}'"),
        ("claude:\n  binary: ${1X}\n", "claude.binary", "invalid variable reference"),
        ("claude:\n  binary: x${A\n", "claude.binary", "unterminated '${'"),
    ],
)
def test_env_errors(text: str, key_path: str, fragment: str) -> None:
    with pytest.raises(FileFormatError) as info:
        config(text)
    assert info.value.key_path == key_path
    assert str(info.value).startswith(f"config.yaml: {key_path}: ")
    assert fragment in info.value.message


def test_env_reference_unquoted_in_flow_collection_gets_a_hint() -> None:
    with pytest.raises(FileFormatError) as info:
        config("permission:\n  llm: {timeout: ${T}}\n", T="1s")
    assert info.value.key_path == ""
    assert "line 2" in str(info.value)
    assert "put ${...} references in quotes" in str(info.value)


# --- errors -------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    for load in (load_goal, load_config):
        with pytest.raises(FileFormatError) as info:
            load(path)
        assert (info.value.source, info.value.key_path) == (str(path), "")
        assert str(info.value) == f"{path}: cannot read the file: No such file or directory"


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(FileFormatError) as info:
        load_goal(tmp_path)  # a directory
    assert str(info.value).startswith(f"{tmp_path}: cannot read the file: ")
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"description: \xff\xfe\n")
    with pytest.raises(FileFormatError) as info:
        load_goal(binary)
    assert str(info.value).startswith(f"{binary}: not UTF-8 text")


def test_invalid_yaml_names_the_line() -> None:
    with pytest.raises(FileFormatError) as info:
        goal("description: d\nacceptance:\n  - kind: shell\n   command: [x\n")
    assert info.value.key_path == ""
    assert str(info.value).startswith("goal.yaml: invalid YAML at line 4, column ")
    with pytest.raises(FileFormatError, match=r"^config\.yaml: invalid YAML at line 1"):
        config("a: b: c\n")
    with pytest.raises(FileFormatError, match="invalid YAML"):
        config("a: 1\n---\nb: 2\n")  # two documents


@pytest.mark.parametrize(
    ("text", "got"),
    [("- description: d\n", "a list"), ("just text\n", "'just text'"), ("42\n", "42")],
)
def test_top_level_must_be_a_mapping(text: str, got: str) -> None:
    for parse, source in ((goal, "goal.yaml"), (config, "config.yaml")):
        with pytest.raises(FileFormatError) as info:
            parse(text)
        assert str(info.value) == (
            f"{source}: expected a mapping of keys at the top level, got {got}"
        )


def test_empty_goal_file() -> None:
    with pytest.raises(FileFormatError, match=r"^goal\.yaml: the goal file is empty"):
        goal("# nothing\n")


GOAL_ERRORS = [
    # unknown keys (typos)
    ("descripton: d\n", "descripton", "unknown key; did you mean 'description'? allowed keys: id,"),
    ("description: d\nbudget: {max_turn: 3}\n", "budget.max_turn", "did you mean 'max_turns'?"),
    (
        "description: d\nbudget: {max_wall_time_s: 3}\n",
        "budget.max_wall_time_s",
        "allowed keys: max_turns, max_wall_time, max_tokens",
    ),
    (
        "description: d\nacceptance: [{kind: shell, command: x, timout: 1s}]\n",
        "acceptance[0].timout",
        "allowed keys: kind, command, timeout, expect_exit, stdout_pattern, label, exit_code",
    ),
    (
        "description: d\nacceptance: [{kind: file_match, path: a, pattern: b, command: c}]\n",
        "acceptance[0].command",
        "unknown key",
    ),
    # missing required keys
    ("id: x\n", "description", "required key is missing"),
    ("description: d\nacceptance: [{kind: shell}]\n", "acceptance[0].command", "required key"),
    (
        "description: d\nacceptance: [{kind: file_match, path: a}]\n",
        "acceptance[0].pattern",
        "required key",
    ),
    ("description: d\nacceptance: [{kind: custom}]\n", "acceptance[0].name", "required key"),
    (
        "description: d\nacceptance: [{command: x}]\n",
        "acceptance[0].kind",
        "required key is missing (one of shell, file_match, custom, llm_judge)",
    ),
    # bad enum values
    (
        "description: d\nacceptance: [{kind: custom, name: a}, {kind: shel, command: x}]\n",
        "acceptance[1].kind",
        "expected one of shell, file_match, custom, llm_judge, got 'shel'",
    ),
    # wrong types
    ("description: 5\n", "description", "expected a string, got 5 (quote it)"),
    ("description: ''\n", "description", "must not be empty"),
    ("description: d\nbudget: {max_turns: '5'}\n", "budget.max_turns", "expected an integer"),
    ("description: d\nbudget: {max_turns: 2.5}\n", "budget.max_turns", "got 2.5"),
    ("description: d\nbudget: {max_turns: 0}\n", "budget.max_turns", "must be at least 1, got 0"),
    ("description: d\nbudget: {max_cost_usd: 0}\n", "budget.max_cost_usd", "greater than 0"),
    ("description: d\nbudget: {max_cost_usd: x}\n", "budget.max_cost_usd", "expected a number"),
    ("description: d\nbudget: 8\n", "budget", "expected a mapping, got 8"),
    ("description: d\nacceptance: {kind: shell}\n", "acceptance", "expected a list, got a mapping"),
    ("description: d\nacceptance: [grep x]\n", "acceptance[0]", "expected a mapping with a 'kind'"),
    ("description: d\nmetadata: [a]\n", "metadata", "expected a mapping, got a list"),
    ("description: d\nmetadata: {1: a}\n", "metadata", "expected a string key, got 1"),
    (
        "description: d\nworkspace: [a]\n",
        "workspace",
        "expected a directory or a mapping {repo, base, branch}, got a list",
    ),
    (
        "description: d\nacceptance: [{kind: custom, name: a, args: [x]}]\n",
        "acceptance[0].args",
        "expected a mapping",
    ),
    (
        "description: d\nacceptance: [{kind: file_match, path: a, pattern: b, required: maybe}]\n",
        "acceptance[0].required",
        "expected true or false, got 'maybe'",
    ),
    # YAML booleans where integers are expected
    (
        "description: d\nbudget: {max_turns: yes}\n",
        "budget.max_turns",
        "expected an integer, got true (YAML reads yes/no/on/off/true/false as booleans)",
    ),
    (
        "description: d\nacceptance: [{kind: shell, command: x, expect_exit: no}]\n",
        "acceptance[0].expect_exit",
        "expected an integer, got false",
    ),
    (
        "description: d\nacceptance: [{kind: shell, command: yes}]\n",
        "acceptance[0].command",
        "expected a string, got true",
    ),
    # ranges and durations
    (
        "description: d\nacceptance: [{kind: shell, command: x, exit_code: 256}]\n",
        "acceptance[0].expect_exit",
        "expected an exit code from 0 to 255, got 256",
    ),
    (
        "description: d\nacceptance: [{kind: shell, command: x, exit_code: 1, expect_exit: 1}]\n",
        "acceptance[0].exit_code",
        "give either expect_exit or exit_code, not both",
    ),
    (
        "description: d\nacceptance:\n  - {kind: custom, name: a}\n"
        "  - {kind: shell, command: x, timeout: abc}\n",
        "acceptance[1].timeout",
        "expected a duration like 90s, 30m or 2h, got 'abc'",
    ),
    (
        "description: d\nacceptance: [{kind: shell, command: x, timeout: 0s}]\n",
        "acceptance[0].timeout",
        "must be longer than 0 seconds",
    ),
    ("description: d\nbudget: {max_wall_time: -1}\n", "budget.max_wall_time", "got -1"),
    ("description: d\nbudget: {max_wall_time: true}\n", "budget.max_wall_time", "got true"),
    # regular expressions are compiled at load time
    (
        "description: d\nacceptance: [{kind: file_match, path: a, pattern: '[a-'}]\n",
        "acceptance[0].pattern",
        "invalid regular expression '[a-': unterminated character set",
    ),
    (
        "description: d\nacceptance: [{kind: shell, command: x, stdout_pattern: '(?P<'}]\n",
        "acceptance[0].stdout_pattern",
        "invalid regular expression",
    ),
    # ids
    ("id: a b\ndescription: d\n", "id", "letters, digits, '.', '_' and '-', not starting"),
    ("id: a/b\ndescription: d\n", "id", "got 'a/b'"),
    ("id: ..\ndescription: d\n", "id", "got '..'"),
    ("id: .hidden\ndescription: d\n", "id", "got '.hidden'"),
    ("id: -x\ndescription: d\n", "id", "got '-x'"),
    (f"id: {'a' * 129}\ndescription: d\n", "id", "at most 128"),
    ("id: ''\ndescription: d\n", "id", "must be a non-empty string"),
    ("id: 42\ndescription: d\n", "id", "expected a string, got 42 (quote it)"),
    # YAML that would silently drop a value
    ("description: d\ndescription: e\n", "description", "duplicate key"),
    ("description: d\nbudget:\n  max_turns: 1\n  max_turns: 2\n", "budget.max_turns", "duplicate"),
]


@pytest.mark.parametrize(("text", "key_path", "message"), GOAL_ERRORS)
def test_goal_errors(text: str, key_path: str, message: str) -> None:
    with pytest.raises(FileFormatError) as info:
        goal(text)
    err = info.value
    assert (err.source, err.key_path) == ("goal.yaml", key_path)
    assert str(err).startswith(f"goal.yaml: {key_path}: ")
    assert message in err.message
    assert isinstance(err, ValueError)
    assert err.__cause__ is None
    assert err.__suppress_context__  # no cattrs or YAML traceback chained to it


CONFIG_ERRORS = [
    ("turn_timeot: 1m\n", "turn_timeot", "did you mean 'turn_timeout'?"),
    ("claude: {modle: x}\n", "claude.modle", "allowed keys: binary, model, allowed_tools,"),
    ("permission: {llm: {timeout_s: 1}}\n", "permission.llm.timeout_s", "did you mean 'timeout'"),
    ("compact: {window: 1}\n", "compact.window", "allowed keys: context_window, threshold,"),
    ("replay: {retries: 1}\n", "replay.retries", "allowed keys: max_retries"),
    (
        "permission: {decider: llms}\n",
        "permission.decider",
        "expected one of allow_all, deny_all, rules, llm, human, chain, got 'llms'",
    ),
    ("permission: {chain: [rules, ask]}\n", "permission.chain[1]", "got 'ask'"),
    ("permission: {chain: rules}\n", "permission.chain", "expected a list, got 'rules'"),
    ("claude: {allowed_tools: Read}\n", "claude.allowed_tools", "expected a list, got 'Read'"),
    ("claude: {allowed_tools: [Read, 5]}\n", "claude.allowed_tools[1]", "expected a string"),
    ("claude: {env: {DEBUG: 1}}\n", "claude.env.DEBUG", "expected a string, got 1 (quote it)"),
    ("claude: {binary: ''}\n", "claude.binary", "must not be empty"),
    ("claude: {model: 3.5}\n", "claude.model", "expected a string, got 3.5"),
    ("claude: claude\n", "claude", "expected a mapping, got 'claude'"),
    ("max_concurrent_goals: '4'\n", "max_concurrent_goals", "expected an integer, got '4'"),
    ("max_concurrent_goals: on\n", "max_concurrent_goals", "expected an integer, got true"),
    ("max_concurrent_goals: 0\n", "max_concurrent_goals", "must be at least 1, got 0"),
    ("progress_every: 0\n", "progress_every", "must be at least 1"),
    ("replay: {max_retries: -1}\n", "replay.max_retries", "must be at least 0, got -1"),
    ("turn_timeout: 10 minutes\n", "turn_timeout", "expected a duration like 90s, 30m or 2h"),
    ("turn_timeout: 0\n", "turn_timeout", "must be longer than 0 seconds, got 0"),
    ("kill_grace: -1s\n", "kill_grace", "got '-1s'"),
    ("permission: {llm: {timeout: 0s}}\n", "permission.llm.timeout", "longer than 0"),
    ("line_cap: lots\n", "line_cap", "expected a size in bytes like 65536, 64KiB or 64MiB"),
    ("line_cap: 0\n", "line_cap", "must be at least 1, got 0"),
    ("line_cap: yes\n", "line_cap", "got true"),
    ("compact: {threshold: 0}\n", "compact.threshold", "greater than 0 and at most 1, got 0"),
    ("compact: {threshold: 1.01}\n", "compact.threshold", "at most 1, got 1.01"),
    ("compact: {threshold: -0.5}\n", "compact.threshold", "got -0.5"),
    ("compact: {threshold: .nan}\n", "compact.threshold", "expected a finite number"),
    ("compact: {threshold: high}\n", "compact.threshold", "expected a number, got 'high'"),
    ("compact: {context_window: 0}\n", "compact.context_window", "must be at least 1"),
    ("state_dir: a\nstate_dir: b\n", "state_dir", "duplicate key"),
]


@pytest.mark.parametrize(("text", "key_path", "message"), CONFIG_ERRORS)
def test_config_errors(text: str, key_path: str, message: str) -> None:
    with pytest.raises(FileFormatError) as info:
        config(text)
    err = info.value
    assert (err.source, err.key_path) == ("config.yaml", key_path)
    assert str(err).startswith(f"config.yaml: {key_path}: ")
    assert message in err.message


def test_error_format() -> None:
    assert str(FileFormatError("g.yaml", "a[1].b", "bad")) == "g.yaml: a[1].b: bad"
    assert str(FileFormatError("g.yaml", "", "bad")) == "g.yaml: bad"


# --- durations and sizes ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("90s", 90.0),
        ("30m", 1800.0),
        ("2h", 7200.0),
        ("1d", 86400.0),
        ("500ms", 0.5),
        ("1h30m", 5400.0),
        ("1m30s", 90.0),
        ("1h0m5s250ms", 3605.25),
        ("1.5h", 5400.0),
        (".5s", 0.5),
        (" 10s ", 10.0),
        ("0s", 0.0),
        ("45", 45.0),
        ("2.5", 2.5),
        (90, 90.0),
        (0.25, 0.25),
    ],
)
def test_durations(value: object, seconds: float) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize(
    "value",
    ["abc", "", "10 s", "s", "1x", "1h 30m", "h1", "-5s", "-1", "1.2.3s", "10S", "inf"],
)
def test_bad_durations(value: object) -> None:
    with pytest.raises(ValueError, match="expected a duration like 90s, 30m or 2h"):
        parse_duration(value)


@pytest.mark.parametrize("value", [True, None, [1], -1, math.inf, math.nan])
def test_bad_duration_values(value: object) -> None:
    with pytest.raises(ValueError, match="expected a duration"):
        parse_duration(value)


@pytest.mark.parametrize(
    ("value", "size"),
    [
        (65536, 65536),
        ("65536", 65536),
        ("64MiB", 64 * 1024**2),
        ("64mib", 64 * 1024**2),
        ("1MB", 1_000_000),
        ("512KiB", 512 * 1024),
        ("2kb", 2000),
        ("1GiB", 1024**3),
        ("0.5KiB", 512),
        ("100 B", 100),
    ],
)
def test_sizes(value: object, size: int) -> None:
    assert parse_size(value) == size


@pytest.mark.parametrize("value", ["1.5B", "64 MiBs", "MiB", "1e3", True, 1.5, None, "-1"])
def test_bad_sizes(value: object) -> None:
    with pytest.raises(ValueError, match="expected a size in bytes"):
        parse_size(value)


# --- round trips --------------------------------------------------------------------------

SAFE = string.ascii_letters + string.digits + " _-.,:;#'\"!?()[]{}<>/@&*|%=+~`^$\\"
texts = st.text(alphabet=SAFE, max_size=30)
nonblank = texts.filter(lambda s: bool(s.strip()))
ids = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,35}", fullmatch=True)
patterns = st.sampled_from(["^hi", r"\d+", "a|b", "(?i)done", "x{2,}", ""]) | st.text(
    alphabet=string.ascii_letters, max_size=10
)
positive = st.floats(min_value=1e-6, max_value=1e9, allow_nan=False, allow_infinity=False)
counts = st.integers(min_value=1, max_value=10**9)
labels = st.none() | texts
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=8,
)
free_form = st.dictionaries(texts, json_values, max_size=4)

criteria = st.one_of(
    st.builds(
        ShellCheck,
        command=nonblank,
        timeout_s=positive,
        expect_exit=st.integers(0, 255),
        stdout_pattern=st.none() | patterns,
        label=labels,
    ),
    st.builds(
        FileMatchCheck, path=nonblank, pattern=patterns, required=st.booleans(), label=labels
    ),
    st.builds(CustomCheck, name=nonblank, args=free_form, label=labels),
    st.builds(
        LlmJudgeCheck,
        rubric=nonblank,
        model=st.none() | nonblank,
        paths=st.lists(nonblank, max_size=3).map(tuple),
        command=st.none() | nonblank,
        timeout_s=positive,
        required=st.booleans(),
        label=labels,
    ),
)
budgets = st.builds(
    Budget,
    max_turns=st.none() | counts,
    max_wall_time_s=st.none() | positive,
    max_tokens=st.none() | counts,
    max_cost_usd=st.none() | positive,
    max_consecutive_errors=st.none() | counts,
    max_consecutive_denies=st.none() | counts,
)
goals = st.builds(
    Goal,
    id=ids,
    description=nonblank,
    acceptance=st.lists(criteria, max_size=4).map(tuple),
    budget=budgets,
    workspace=st.none() | nonblank,
    metadata=free_form,
)


@settings(max_examples=100, deadline=None)
@given(goals)
def test_goal_round_trips_through_yaml(g: Goal) -> None:
    assert parse_goal(goal_to_yaml(g), source="round-trip.yaml") == g


def test_goal_to_yaml_is_readable() -> None:
    text = goal_to_yaml(goal(DESIGN_GOAL))
    data = yaml.safe_load(text)
    assert data["acceptance"][0] == {
        "kind": "shell",
        "command": "grep -q hi hello.txt",
        "timeout": 60.0,
        "expect_exit": 0,
        "stdout_pattern": None,
        "label": None,
    }
    assert data["budget"]["max_wall_time"] == 1800.0


def test_config_to_dict_shows_file_keys_and_round_trips() -> None:
    effective = config("turn_timeout: 90s\nclaude: {env: {A: b}}\npermission: {chain: [llm]}\n")
    data = config_to_dict(effective)
    assert data["turn_timeout"] == 90.0
    assert data["permission"]["llm"]["timeout"] == 20.0
    assert data["claude"]["allowed_tools"] == ["Read", "Grep", "Glob", "LS"]
    assert "turn_timeout_s" not in data
    assert config(yaml.safe_dump(data)) == effective


# --- nothing but FileFormatError ever escapes ---------------------------------------------

GOAL_KEYS = ["id", "description", "acceptance", "budget", "workspace", "metadata", "bogus"]
CHECK_KEYS = [
    "kind",
    "command",
    "timeout",
    "expect_exit",
    "exit_code",
    "stdout_pattern",
    "path",
    "pattern",
    "required",
    "name",
    "args",
    "label",
]
junk = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-3, 300)
    | st.floats(allow_nan=True)
    | st.sampled_from(["shell", "file_match", "custom", "90s", "[", "x", "", "0", "1h30m"]),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(CHECK_KEYS) | texts, inner, max_size=4)
    ),
    max_leaves=10,
)


@settings(max_examples=80, deadline=None)
@given(st.dictionaries(st.sampled_from(GOAL_KEYS), junk, max_size=6) | junk)
def test_any_goal_data_gives_a_goal_or_a_file_format_error(data: Any) -> None:
    message = "fuzz.yaml: ok"
    try:
        parse_goal(yaml.safe_dump(data), source="fuzz.yaml")
    except FileFormatError as e:
        message = str(e)
    assert message.startswith("fuzz.yaml: ")


CONFIG_KEYS = [
    "claude",
    "turn_timeout",
    "kill_grace",
    "line_cap",
    "max_concurrent_goals",
    "permission",
    "compact",
    "replay",
]
config_junk = st.recursive(
    junk,
    lambda inner: st.dictionaries(
        st.sampled_from(
            ["binary", "env", "decider", "llm", "chain", "threshold", "timeout", "max_retries"]
        ),
        inner,
        max_size=3,
    ),
    max_leaves=6,
)


@settings(max_examples=80, deadline=None)
@given(st.dictionaries(st.sampled_from(CONFIG_KEYS), config_junk, max_size=5))
def test_any_config_data_gives_a_config_or_a_file_format_error(data: Any) -> None:
    message = "fuzz.yaml: ok"
    try:
        parse_config(yaml.safe_dump(data), source="fuzz.yaml", environ={})
    except FileFormatError as e:
        message = str(e)
    assert message.startswith("fuzz.yaml: ")


# --------------------------------------------------------------------------- ids and checks


def test_a_goal_file_without_an_id_gets_a_stable_one_from_its_path(tmp_path: Path) -> None:
    first = tmp_path / "fix login!.yaml"
    first.write_text("description: d\n")
    other = tmp_path / "sub" / "fix login!.yaml"
    other.parent.mkdir()
    other.write_text("description: d\n")
    goal = load_goal(first)
    assert goal.id == load_goal(first).id == goal_id_for_path(first)
    assert goal.id.startswith("fix-login-")
    assert load_goal(other).id != goal.id  # same name, another file: another goal
    dotted = tmp_path / ".hidden.yaml"
    dotted.write_text("description: d\n")
    assert load_goal(dotted).id.startswith("hidden-")


def test_an_unknown_custom_check_is_refused_when_known_checks_are_given(tmp_path: Path) -> None:
    path = tmp_path / "goal.yaml"
    path.write_text(
        "description: d\nacceptance:\n  - {kind: custom, name: git_clean}\n"
        "  - {kind: custom, name: lint_clean}\n"
    )
    assert len(load_goal(path).acceptance) == 2  # no registry given: not checked here
    with pytest.raises(FileFormatError) as info:
        load_goal(path, known_checks=("git_clean", "no_paths_touched"))
    assert info.value.key_path == "acceptance[1].name"
    assert info.value.message == (
        "unknown custom check 'lint_clean' (known: git_clean, no_paths_touched)"
    )


def test_the_stuck_section(tmp_path: Path) -> None:
    config = parse_config("stuck: {after: 4, action: escalate}\n", source="c.yaml")
    assert (config.stuck.after, config.stuck.action) == (4, "escalate")
    with pytest.raises(FileFormatError, match=r"stuck\.after: must be at least 2, got 1"):
        parse_config("stuck: {after: 1}\n", source="c.yaml")
    with pytest.raises(FileFormatError, match=r"stuck\.action: expected one of fresh_session"):
        parse_config("stuck: {action: panic}\n", source="c.yaml")


# --- permission.allow / permission.deny: Claude Code's rule syntax ---------------------------


def test_permission_rules_are_read() -> None:
    c = config(
        "permission:\n"
        '  allow: ["Bash(npm test:*)", "Edit(src/**)", Read, "WebFetch(domain:example.com)"]\n'
        '  deny: ["Bash(rm:*)", "Read(~/.ssh/**)"]\n'
    )
    assert c.permission.allow == (
        "Bash(npm test:*)",
        "Edit(src/**)",
        "Read",
        "WebFetch(domain:example.com)",
    )
    assert c.permission.deny == ("Bash(rm:*)", "Read(~/.ssh/**)")
    assert config("permission: {decider: rules}\n").permission.allow == ()
    rules = config('permission: {allow: ["${RULE:-Bash(make:*)}"]}\n').permission.allow
    assert rules == ("Bash(make:*)",)
    data = config_to_dict(c)
    assert data["permission"]["allow"] == list(c.permission.allow)
    assert data["permission"]["deny"] == list(c.permission.deny)


@pytest.mark.parametrize(
    ("text", "key_path", "message"),
    [
        (
            'permission: {allow: [Read, "Bash(npm"]}\n',
            "permission.allow",
            "bad rule 'Bash(npm': missing ')'",
        ),
        (
            'permission: {deny: ["Bash(npm test:*"]}\n',
            "permission.deny",
            "bad rule 'Bash(npm test:*': missing ')'",
        ),
        ('permission: {deny: ["Grep(TODO)"]}\n', "permission.deny", "Grep rules take no '(...)'"),
        (
            'permission: {allow: ["WebFetch(https://example.com)"]}\n',
            "permission.allow",
            "WebFetch rules take 'domain:HOST'",
        ),
        ('permission: {allow: ["Read(../x)"]}\n', "permission.allow", "'..' is not supported"),
        ("permission: {allow: [Read, 5]}\n", "permission.allow[1]", "expected a string, got 5"),
        ("permission: {deny: Read}\n", "permission.deny", "expected a list, got 'Read'"),
        ("permission: {allow: ['']}\n", "permission.allow", "bad rule '': empty rule"),
    ],
)
def test_bad_permission_rules_name_the_rule(text: str, key_path: str, message: str) -> None:
    with pytest.raises(FileFormatError) as info:
        config(text)
    assert info.value.key_path == key_path
    assert message in info.value.message
    assert str(info.value).startswith(f"config.yaml: {key_path}: ")
