"""The effect classifier against a real file system (:mod:`nexo_trio.gate.resolve`)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nexo_trio.core.effects import Effect
from nexo_trio.gate.resolve import (
    MultiplyLinked,
    RealPathResolver,
    TooManyPaths,
    classify_on_disk,
    real_scope,
)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """``ws/`` (with ``link -> ../precious`` and ``passwd -> ../precious/passwd``),
    ``precious/passwd``, ``scratch/``, and ``alias -> ws``."""
    (tmp_path / "ws" / "src").mkdir(parents=True)
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "passwd").write_text("keep\n")
    (tmp_path / "scratch").mkdir()
    (tmp_path / "ws" / "link").symlink_to(tmp_path / "precious")
    (tmp_path / "ws" / "passwd").symlink_to(tmp_path / "precious" / "passwd")
    (tmp_path / "alias").symlink_to(tmp_path / "ws")
    return tmp_path


def bash(tree: Path, command: str, *, workspace: str = "ws", max_paths: int = 256) -> Effect:
    verdict = classify_on_disk(
        "Bash",
        {"command": command},
        workspace=str(tree / workspace),
        scratch=str(tree / "scratch"),
        max_paths=max_paths,
    )
    return verdict.effect


@pytest.mark.parametrize(
    ("command", "effect"),
    [
        ("rm -rf link/", "destructive"),
        ("rm -rf link/*", "destructive"),
        ("rm link", "workspace"),
        ("echo x > passwd", "destructive"),
        ("echo x > link/new", "destructive"),
        ("cd link && rm -rf *", "destructive"),
        ("sed -i s/keep/gone/ passwd", "workspace"),  # sed -i replaces the link itself
        ("sed -i --follow-symlinks s/a/b/ link/passwd", "destructive"),
        ("touch src/a.py", "workspace"),
        ("rm -rf src", "workspace"),
        ("cat link/passwd", "read"),
        ("rm -rf ../precious", "destructive"),  # no /tmp exception: tmp_path is under /tmp
        ("echo x > ../scratch/a", "workspace"),
    ],
)
def test_links_are_judged_where_they_point(tree: Path, command: str, effect: Effect) -> None:
    assert bash(tree, command) == effect


def test_the_workspace_reached_through_a_link_is_the_workspace(tree: Path) -> None:
    alias = tree / "alias"
    assert bash(tree, f"echo x > {alias}/a.txt") == "workspace"
    assert bash(tree, "rm -rf src", workspace="alias") == "workspace"
    assert bash(tree, f"rm -rf {tree / 'ws'}", workspace="alias") == "destructive"
    write = classify_on_disk(
        "Write", {"file_path": str(alias / "passwd"), "content": "x"}, workspace=str(tree / "ws")
    )
    assert write.effect == "destructive"


def test_a_hard_link_is_not_resolved(tree: Path) -> None:
    os.link(tree / "precious" / "passwd", tree / "ws" / "hard")
    assert bash(tree, "echo x >> hard") == "unknown"
    assert bash(tree, "rm hard") == "workspace"  # removing a name changes no other name
    with pytest.raises(MultiplyLinked):
        RealPathResolver()(str(tree / "ws" / "hard"))


def test_the_resolver_is_bounded(tree: Path) -> None:
    resolve = RealPathResolver(max_paths=2)
    resolve(str(tree / "a"))
    resolve(str(tree / "a"))  # cached: not counted again
    resolve(str(tree / "b"))
    with pytest.raises(TooManyPaths):
        resolve(str(tree / "c"))
    assert bash(tree, "touch a b c d", max_paths=2) == "unknown"
    assert bash(tree, "touch a b c /etc/x", max_paths=2) == "destructive"


def test_the_scope_is_made_real(tree: Path) -> None:
    scope = real_scope(str(tree / "alias"), str(tree / "scratch"), [str(tree / "alias" / "src")])
    assert scope.workspace == str((tree / "ws").resolve())
    assert scope.writable == (str((tree / "ws" / "src").resolve()),)
    assert real_scope(None).workspace is None
