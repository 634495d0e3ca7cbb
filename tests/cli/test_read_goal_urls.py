"""``read_goal`` and a worktree's ``repo``: a URL is kept as given (the run clones it), a path
is made absolute from the goal file's directory as before."""

from __future__ import annotations

from pathlib import Path

import pytest

from nexo_trio.cli.common import read_goal
from tests.cli.helpers import write_yaml


def goal_file(tmp_path: Path, repo: str) -> Path:
    return write_yaml(
        tmp_path / "goals" / "goal.yaml",
        {"id": "g1", "description": "Do it.", "workspace": {"repo": repo, "base": "main"}},
    )


@pytest.mark.parametrize(
    "url",
    [
        "https://github.com/o/r.git",
        "https://user:secret@host/r.git",
        "ssh://git@host:2222/o/r.git",
        "git://host/r.git",
        "file:///srv/git/r.git",
        "git@github.com:o/r.git",
    ],
)
def test_a_url_repo_is_kept_as_given(tmp_path: Path, url: str) -> None:
    goal = read_goal(goal_file(tmp_path, url))
    assert goal.worktree is not None
    assert goal.worktree.repo == url
    assert goal.worktree.base == "main"


def test_a_path_repo_is_taken_from_the_goal_files_directory(tmp_path: Path) -> None:
    goal = read_goal(goal_file(tmp_path, "../repo"))
    assert goal.worktree is not None
    assert goal.worktree.repo == str((tmp_path / "repo").resolve())
