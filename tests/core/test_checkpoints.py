"""The pure half of the git layer: ref names (against ``git check-ref-format`` itself), the
environment of git calls, and the parsers of git's ``-z`` outputs on generated outputs."""

from __future__ import annotations

import os
import shutil
import subprocess

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nexo_trio.core.checkpoints import (
    Checkpoint,
    DiffStat,
    GitTarget,
    WorkspaceProblem,
    checkpoint_ref,
    default_branch,
    git_argv,
    git_env,
    goal_id_problem,
    parse_checkpoints,
    parse_diff_stat,
    parse_worktrees,
    ref_problem,
)

SHA = "0123456789abcdef0123456789abcdef01234567"


@pytest.mark.parametrize("goal_id", ["g1", "fix-login", "a.b_c-d", "0d6c5e", "_x", "A"])
def test_a_valid_goal_id_names_refs(goal_id: str) -> None:
    assert goal_id_problem(goal_id) is None
    assert checkpoint_ref(goal_id, 3) == f"refs/nexo/{goal_id}/3"
    assert default_branch(goal_id) == f"nexo/{goal_id}"


@pytest.mark.parametrize(
    "goal_id",
    ["", ".hidden", "-opt", "a..b", "x.lock", "a/b", "a b", "a~1", "a^", "a:b", "end.", "a@{1}",
     "tab\t", "a*", "a?", "a[", "a\\b", "é"],
)  # fmt: skip
def test_an_invalid_goal_id_is_refused(goal_id: str) -> None:
    problem = goal_id_problem(goal_id)
    assert problem is not None
    assert "\n" not in problem
    with pytest.raises(ValueError, match="cannot name a git ref"):
        checkpoint_ref(goal_id, 1)


@pytest.mark.parametrize("turn", [-1, True, 1.0])
def test_a_turn_is_a_non_negative_int(turn: object) -> None:
    with pytest.raises(ValueError, match="turn"):
        checkpoint_ref("g", turn)  # type: ignore[arg-type]


_ref_chars = st.sampled_from([*"ab.-_/@{}~^:?*[\\ \t\x7fé", "lock", "..", "x"])


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_ref_chars, min_size=1, max_size=8).map(lambda parts: "refs/" + "".join(parts)))
def test_ref_problem_agrees_with_git_check_ref_format(name: str) -> None:
    done = subprocess.run(["git", "check-ref-format", name], capture_output=True, check=False)
    assert (ref_problem(name) is None) == (done.returncode == 0), name


def test_git_env_scrubs_redirects() -> None:
    env = git_env(
        {"GIT_DIR": "/x", "GIT_WORK_TREE": "/y", "GIT_INDEX_FILE": "/z", "PATH": "/bin",
         "GIT_CONFIG_GLOBAL": "/c", "PAGER": "less"},
        index_file="/tmp/i",
    )  # fmt: skip
    assert env["PATH"] == "/bin"
    assert env["GIT_INDEX_FILE"] == "/tmp/i"
    assert env["GIT_CONFIG_NOSYSTEM"] == "1"
    assert "GIT_DIR" not in env
    assert "GIT_WORK_TREE" not in env
    assert "GIT_CONFIG_GLOBAL" not in env
    assert "PAGER" not in env
    assert "GIT_INDEX_FILE" not in git_env({"GIT_INDEX_FILE": "/z"})


def test_git_argv_names_the_git_dir_and_work_tree_and_disables_hooks() -> None:
    argv = git_argv(GitTarget("/g", "/w"), "add", "-A", identity=True)
    assert argv[:2] == ["git", "--no-pager"]
    assert "core.hooksPath=/dev/null" in argv
    assert "user.name=nexo-trio" in argv
    assert argv[-4:] == ["--git-dir=/g", "--work-tree=/w", "add", "-A"]
    assert git_argv(None, "status", cwd_repo="/r")[-3:] == ["-C", "/r", "status"]


def test_values_are_validated() -> None:
    with pytest.raises(ValueError, match="absolute"):
        GitTarget("relative", "/w")
    with pytest.raises(ValueError, match="one non-empty line"):
        WorkspaceProblem("two\nlines")
    with pytest.raises(ValueError, match="files_changed"):
        DiffStat(files_changed=2, insertions=0, deletions=0, added=("a",))
    with pytest.raises(ValueError, match="sorted"):
        DiffStat(files_changed=2, insertions=0, deletions=0, added=("b", "a"))
    with pytest.raises(ValueError, match="must match"):
        Checkpoint(turn=1, sha="nope")
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        GitTarget("/g", "/w").git_dir = "/h"  # type: ignore[misc]


# -- diff stat --------------------------------------------------------------------------------

_paths = st.binary(min_size=1, max_size=12).filter(lambda b: b"\0" not in b) | st.sampled_from(
    [b"with space", b"new\nline", b"tab\there", b"\xff\xfe latin", "é.txt".encode(), b"a/b/c"]
)


@st.composite
def _diffs(draw: st.DrawFn) -> tuple[list[tuple[str, bytes, bytes | None, int, int]], bool]:
    """Records (status, path, rename source or None, insertions, deletions; -1 binary)."""
    paths = draw(st.lists(_paths, unique=True, max_size=12))
    records = []
    for path in paths:
        status = draw(st.sampled_from(["A", "D", "M", "T", "R"]))
        binary = draw(st.booleans())
        ins = -1 if binary else draw(st.integers(0, 10_000))
        dels = -1 if binary else draw(st.integers(0, 10_000))
        source = None
        if status == "R":
            source = path + b".old"
            if source in paths:
                status = "M"
                source = None
        records.append((status, path, source, ins, dels))
    return records, draw(st.booleans())


def _render(records: list[tuple[str, bytes, bytes | None, int, int]]) -> tuple[bytes, bytes]:
    numstat = b""
    names = b""
    for status, path, source, ins, dels in records:
        counts = b"-\t-\t" if ins < 0 else f"{ins}\t{dels}\t".encode()
        if source is not None:
            numstat += counts + b"\0" + source + b"\0" + path + b"\0"
            names += b"R100\0" + source + b"\0" + path + b"\0"
        else:
            numstat += counts + path + b"\0"
            names += status.encode() + b"\0" + path + b"\0"
    return numstat, names


Record = tuple[str, bytes, bytes | None, int, int]


@given(_diffs())
def test_parse_diff_stat_of_generated_outputs(drawn: tuple[list[Record], bool]) -> None:
    records, _ = drawn
    stat = parse_diff_stat(*_render(records))
    added = {os.fsdecode(p) for s, p, _, _, _ in records if s in ("A", "R")}
    deleted = {os.fsdecode(p) for s, p, _, _, _ in records if s == "D"}
    deleted |= {os.fsdecode(src) for _, _, src, _, _ in records if src is not None}
    modified = {os.fsdecode(p) for s, p, _, _, _ in records if s in ("M", "T")}
    assert stat.added == tuple(sorted(added))
    assert stat.deleted == tuple(sorted(deleted))
    assert stat.modified == tuple(sorted(modified))
    assert stat.files_changed == len(added) + len(deleted) + len(modified)
    assert stat.insertions == sum(r[3] for r in records if r[3] >= 0)
    assert stat.deletions == sum(r[4] for r in records if r[4] >= 0)
    assert stat.binary == sum(1 for r in records if r[3] < 0)
    for path in (*stat.added, *stat.deleted, *stat.modified):
        assert os.fsdecode(os.fsencode(path)) == path  # non-UTF-8 bytes survive


def test_parse_diff_stat_of_nothing_is_empty() -> None:
    assert parse_diff_stat(b"", b"").empty


@pytest.mark.parametrize(
    ("numstat", "names"),
    [(b"garbage\0", b""), (b"x\ty\tp\0", b""), (b"", b"Q\0p\0"), (b"", b"A\0"), (b"", b"R1\0a\0")],
)
def test_parse_diff_stat_rejects_what_git_does_not_print(numstat: bytes, names: bytes) -> None:
    with pytest.raises(ValueError, match=r"not|without"):
        parse_diff_stat(numstat, names)


# -- listings ---------------------------------------------------------------------------------


def test_parse_checkpoints_by_turn() -> None:
    other = "f" * 40
    out = (
        f"refs/nexo/g/10 {SHA}\nrefs/nexo/g/2 {other}\nrefs/nexo/g/x {SHA}\n"
        f"refs/nexo/g/02 {SHA}\nrefs/nexo/gg/1 {SHA}\n"
    ).encode()
    assert parse_checkpoints(out, "g") == (Checkpoint(2, other), Checkpoint(10, SHA))


def test_parse_worktrees() -> None:
    out = (
        b"worktree /repo\0HEAD " + SHA.encode() + b"\0branch refs/heads/main\0\0"
        b"worktree /ws/a b\nc\0HEAD " + SHA.encode() + b"\0detached\0\0"
        b"worktree /gone\0HEAD " + SHA.encode() + b"\0branch refs/heads/nexo/g\0prunable gitdir"
        b" file points to non-existent location\0\0"
    )
    main, odd, gone = parse_worktrees(out)
    assert (main.path, main.branch) == ("/repo", "refs/heads/main")
    assert (odd.path, odd.branch, odd.head) == ("/ws/a b\nc", None, SHA)
    assert gone.prunable
    assert gone.branch == "refs/heads/nexo/g"
