"""``nexo-trio check GOAL.yaml`` (the acceptance checks once, no Claude: exit 0 met, 1 not
met, 2 invalid) and ``nexo-trio init`` (a goal and a config to start from, never written
over existing files)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from nexo_trio.cli.init import CONFIG_TEMPLATE, GOAL_TEMPLATE
from nexo_trio.core.checkpoints import git_env
from nexo_trio.core.goal import BUILTIN_CHECKS
from nexo_trio.core.settings import Config
from nexo_trio.testing.scenario import bash, init, result, turn
from tests.cli.helpers import invoke, make_setup, single_json, write_yaml

HI = turn(init(), bash("echo hi > hello.txt"), result("Done."))


def test_init_writes_files_that_load_and_check(tmp_path: Path) -> None:
    from nexo_trio.wire.files import load_config, load_goal

    project = tmp_path / "project"
    r = invoke("init", project)
    assert r.exit_code == 0, r.output
    assert f"nexo-trio check {project / 'goal.yaml'}" in r.stdout
    goal = load_goal(project / "goal.yaml", known_checks=BUILTIN_CHECKS)
    config = load_config(project / "nexo.yaml")
    assert goal.description == "Create hello.txt containing the word hi."
    assert [type(c).__name__ for c in goal.acceptance] == ["FileMatchCheck", "ShellCheck"]
    assert goal.budget.max_turns == 8
    assert config.permission.decider == "rules"
    assert (config.state_dir, config.claude.binary) == ("./.nexo", "claude")
    assert config == Config()  # it shows the defaults
    for template in (GOAL_TEMPLATE, CONFIG_TEMPLATE):  # commented
        assert sum(line.lstrip().startswith("#") for line in template.splitlines()) > 15
    assert (project / "work").is_dir()

    args: list[str | Path] = [project / "goal.yaml", "--config", project / "nexo.yaml"]
    unmet = invoke("check", *args)
    assert unmet.exit_code == 1, unmet.output
    assert "✗ file_match: hello.txt ~ /^hi$/: no such file: hello.txt" in unmet.stdout
    assert "- shell: grep -qx hi hello.txt: not run" in unmet.stdout
    assert unmet.stdout.splitlines()[-1].startswith("not met: 1 required check(s) failed")
    (project / "work" / "hello.txt").write_text("hi\n")
    met = invoke("check", *args)
    assert met.exit_code == 0, met.output
    assert met.stdout.splitlines()[-1] == "met: 2/2 required passed"
    assert not (tmp_path / "cwd" / ".nexo").exists()  # a check records nothing


def uncommented(template: str) -> list[str]:
    """Each variant of ``template`` with one commented-out ``# key: value`` line taken: in
    place of the line of the same key when there is one, else where it is."""
    lines = template.splitlines()
    variants = []
    for i, line in enumerate(lines):
        found = re.match(r"^(\s*)# ([a-z_]+):(.*)$", line)
        if found is None:
            continue
        indent, key, rest = found.groups()
        same = [j for j, other in enumerate(lines) if re.match(rf"^{indent}{key}:", other)]
        variant = list(lines)
        variant[same[0] if same else i] = f"{indent}{key}:{rest}"
        if same:
            del variant[i]
        variants.append("\n".join(variant) + "\n")
    return variants


def test_every_commented_alternative_of_the_templates_loads() -> None:
    from nexo_trio.wire.files import parse_config, parse_goal

    goals, configs = uncommented(GOAL_TEMPLATE), uncommented(CONFIG_TEMPLATE)
    assert len(goals) >= 8
    assert len(configs) >= 15
    for variant in goals:
        parse_goal(variant, source="goal.yaml", default_id="g", known_checks=BUILTIN_CHECKS)
    for variant in configs:
        parse_config(variant, source="nexo.yaml", environ={})


def test_init_never_overwrites(tmp_path: Path) -> None:
    (tmp_path / "nexo.yaml").write_text("mine\n")
    r = invoke("init", tmp_path)
    assert r.exit_code == 2
    assert r.stderr == f"Error: {tmp_path / 'nexo.yaml'} already exists: not overwritten\n"
    assert not (tmp_path / "goal.yaml").exists()
    assert (tmp_path / "nexo.yaml").read_text() == "mine\n"
    here = invoke("init")  # the current directory by default
    assert here.exit_code == 0, here.output
    again = invoke("init")
    assert again.exit_code == 2
    assert "goal.yaml and nexo.yaml already exist" in again.stderr


def test_check_prints_each_result_with_its_evidence(tmp_path: Path) -> None:
    s = make_setup(tmp_path, [])
    checks: list[dict[str, Any]] = [
        {"kind": "shell", "command": "echo one; echo two; exit 3", "label": "noisy"},
        {"kind": "file_match", "path": "x.txt", "pattern": "x", "required": False},
    ]
    goal = s.goal(acceptance=checks)
    r = invoke("check", goal, "--config", s.config)
    assert r.exit_code == 1, r.output
    lines = r.stdout.splitlines()
    assert lines[0] == f"goal g1: 2 check(s) in {tmp_path / 'goals' / 'ws-g1'}"
    assert lines[1].startswith("✗ noisy: exit code 3 (expected 0) [")
    assert lines[2:4] == ["    one", "    two"]
    data = single_json(invoke("check", goal, "--config", s.config, "--json").stdout)
    assert data["met"] is False
    assert [r["passed"] for r in data["results"]] == [False, False]
    assert data["results"][0]["evidence"] == "one\ntwo\n"
    assert len(s.fake.invocations()) == 0  # no Claude

    (tmp_path / "goals" / "ws-g1" / "x.txt").write_text("x\n")
    optional = invoke("check", s.goal(acceptance=checks[1:]), "--config", s.config)
    assert optional.exit_code == 0, optional.output
    assert "✓ file_match: x.txt ~ /x/ (optional): x.txt matches /x/" in optional.stdout


@pytest.mark.parametrize(
    ("goal", "message"),
    [
        ({"description": "d", "budget": {"max_turns": 0}}, "budget.max_turns: must be at least 1"),
        ({"description": "d", "acceptance": [{"kind": "custom", "name": "nope"}]}, "unknown"),
        ({"description": "d", "workspace": "./missing"}, "does not exist"),
        ({"description": "d", "id": "g9"}, "workspace /"),  # the default: not made yet
    ],
)
def test_check_refuses_an_invalid_goal_with_exit_2(
    tmp_path: Path, goal: dict[str, object], message: str
) -> None:
    s = make_setup(tmp_path, [])
    path = write_yaml(tmp_path / "bad.yaml", goal)
    r = invoke("check", path, "--config", s.config)
    assert r.exit_code == 2, r.output
    assert message in r.stderr
    assert len(r.stderr.splitlines()) == 1
    assert "Traceback" not in r.output
    assert not (tmp_path / "workspaces").exists()  # nothing made for a check


def test_check_refuses_an_invalid_config(tmp_path: Path) -> None:
    s = make_setup(tmp_path, [], config={"turn_timeout": "soon"})
    r = invoke("check", s.goal(), "--config", s.config)
    assert r.exit_code == 2
    assert "turn_timeout" in r.stderr


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_a_worktree_goal_is_checked_only_once_its_worktree_exists(tmp_path: Path) -> None:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-c", "user.name=T", "-c", "user.email=t@example.com", "-C", str(repo), *args],
            capture_output=True,
            check=True,
            env=git_env(os.environ),
            text=True,
        ).stdout

    repo = tmp_path / "repo"
    repo.mkdir()
    git("init", "-q", "-b", "main")
    (repo / "README").write_text("hello\n")
    git("add", "-A")
    git("commit", "-q", "-m", "first")
    s = make_setup(tmp_path, [HI])
    goal = write_yaml(
        tmp_path / "goals" / "tree.yaml",
        {
            "id": "tree",
            "description": "Create hello.txt containing the word hi.",
            "acceptance": [{"kind": "file_match", "path": "hello.txt", "pattern": "^hi$"}],
            "workspace": {"repo": "../repo"},
        },
    )
    worktrees = git("worktree", "list")
    early = invoke("check", goal, "--config", s.config)
    assert early.exit_code == 2, early.output
    assert "its worktree" in early.stderr
    assert "does not exist yet (`nexo-trio run` makes it)" in early.stderr
    assert git("worktree", "list") == worktrees  # not made for the check
    assert git("branch", "--list") == "* main\n"

    ran = invoke("run", goal, "--config", s.config)
    assert ran.exit_code == 0, ran.output
    checked = invoke("check", goal, "--config", s.config, "--json")
    assert checked.exit_code == 0, checked.output
    data = json.loads(checked.stdout)
    assert data["workspace"] == str((tmp_path / "workspaces" / "tree").resolve())
    assert data["met"] is True
