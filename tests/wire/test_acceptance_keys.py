"""The goal and config keys of ordered acceptance: ``acceptance_mode``, ``kind: llm_judge``
and the 5m default check timeout, read, refused and written back."""

from __future__ import annotations

import pytest
import yaml

from nexo_trio.core.goal import LlmJudgeCheck, ShellCheck
from nexo_trio.wire.files import (
    FileFormatError,
    config_to_dict,
    goal_to_yaml,
    parse_config,
    parse_goal,
)

GOAL = """\
description: Build it and document it.
acceptance:
  - kind: shell
    command: make build
  - kind: llm_judge
    rubric: |
      README.md explains how to install.
      It names the supported Python versions.
    paths: [README.md, docs/install.md]
    command: git diff --stat
    model: claude-sonnet-4-5
    timeout: 2m
    required: false
    label: docs
  - kind: llm_judge
    rubric: The code is tidy.
"""


def test_an_llm_judge_and_the_default_timeout_are_read() -> None:
    goal = parse_goal(GOAL, source="goal.yaml", default_id="g")
    build, docs, tidy = goal.acceptance
    assert build == ShellCheck("make build", timeout_s=300.0)
    assert docs == LlmJudgeCheck(
        rubric="README.md explains how to install.\nIt names the supported Python versions.\n",
        paths=("README.md", "docs/install.md"),
        command="git diff --stat",
        model="claude-sonnet-4-5",
        timeout_s=120.0,
        required=False,
        label="docs",
    )
    assert tidy == LlmJudgeCheck("The code is tidy.")
    assert tidy.title == "llm_judge: The code is tidy."
    assert (tidy.paths, tidy.command, tidy.model, tidy.required) == ((), None, None, True)


def test_the_new_keys_round_trip() -> None:
    goal = parse_goal(GOAL, source="goal.yaml", default_id="g")
    text = goal_to_yaml(goal)
    assert parse_goal(text, source="again.yaml") == goal
    written = yaml.safe_load(text)["acceptance"]
    assert written[0]["timeout"] == 300.0
    assert written[1]["kind"] == "llm_judge"
    assert written[1]["timeout"] == 120.0
    assert written[1]["paths"] == ["README.md", "docs/install.md"]
    for mode in ("sequential", "parallel"):
        config = parse_config(f"acceptance_mode: {mode}\n", source="nexo.yaml")
        assert config.acceptance_mode == mode
        data = config_to_dict(config)
        assert data["acceptance_mode"] == mode
        assert parse_config(yaml.safe_dump(data), source="again.yaml") == config


def test_the_config_default_is_sequential() -> None:
    assert parse_config("", source="nexo.yaml").acceptance_mode == "sequential"
    assert config_to_dict(parse_config("", source="nexo.yaml"))["acceptance_mode"] == "sequential"
    assert parse_config(
        "acceptance_mode: ${MODE:-parallel}", source="c", environ={}
    ) == parse_config("acceptance_mode: parallel", source="c")


@pytest.mark.parametrize(
    ("text", "key_path", "message"),
    [
        ("acceptance_mode: serial", "acceptance_mode", "expected one of sequential, parallel"),
        ("acceptance_mode: true", "acceptance_mode", "expected one of sequential, parallel"),
    ],
)
def test_config_errors(text: str, key_path: str, message: str) -> None:
    with pytest.raises(FileFormatError) as info:
        parse_config(text, source="nexo.yaml")
    assert info.value.key_path == key_path
    assert message in info.value.message


@pytest.mark.parametrize(
    ("check", "key_path", "message"),
    [
        ("{kind: llm_judge}", "acceptance[0].rubric", "required key is missing"),
        ("{kind: llm_judge, rubric: ' '}", "acceptance[0].rubric", "must not be empty"),
        ("{kind: llm_judge, rubric: r, paths: a.txt}", "acceptance[0].paths", "expected a list"),
        ("{kind: llm_judge, rubric: r, paths: ['']}", "acceptance[0].paths", "must not be empty"),
        ("{kind: llm_judge, rubric: r, timeout: 0}", "acceptance[0].timeout", "longer than 0"),
        ("{kind: llm_judge, rubric: r, model: ''}", "acceptance[0].model", "must not be empty"),
        ("{kind: llm_judge, rubric: r, modle: m}", "acceptance[0].modle", "did you mean 'model'"),
        ("{kind: llm_judge, rubric: r, required: 'no'}", "acceptance[0].required", "true or false"),
    ],
)
def test_llm_judge_errors(check: str, key_path: str, message: str) -> None:
    with pytest.raises(FileFormatError) as info:
        parse_goal(f"description: d\nacceptance: [{check}]\n", source="goal.yaml")
    assert info.value.key_path == key_path
    assert message in info.value.message
