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
    NEUTRAL_ATTRIBUTES,
    NEUTRAL_CONFIG,
    NEUTRAL_HEAD,
    Checkpoint,
    DiffStat,
    GitTarget,
    WorkspaceProblem,
    checkpoint_ref,
    default_branch,
    git_argv,
    git_env,
    goal_id_problem,
    neutral_argv,
    neutral_config_text,
    parse_checkpoints,
    parse_diff_stat,
    parse_gitdir_file,
    parse_paths,
    parse_refnames,
    parse_worktrees,
    ref_argv,
    ref_problem,
)

SHA = "0123456789abcdef0123456789abcdef01234567"


@pytest.mark.parametrize("goal_id", ["g1", "fix-login", "a.b_c-d", "0d6c5e", "_x", "A"])
def test_a_valid_goal_id_names_refs(goal_id: str) -> None:
    assert goal_id_problem(goal_id) is None
    assert checkpoint_ref(goal_id, 3) == f"refs/nexo/{goal_id}/3"
    assert checkpoint_ref(goal_id, 3, after=True) == f"refs/nexo/{goal_id}/3-after"
    assert ref_problem(checkpoint_ref(goal_id, 3, after=True)) is None
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


_REDIRECTS = {
    "GIT_DIR": "/x", "GIT_WORK_TREE": "/y", "GIT_INDEX_FILE": "/z", "GIT_OBJECT_DIRECTORY": "/o",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES": "/a", "GIT_COMMON_DIR": "/c", "GIT_CONFIG": "/cfg",
    "GIT_CONFIG_PARAMETERS": "'filter.x.clean'='touch /p'", "GIT_CONFIG_COUNT": "1",
    "GIT_CONFIG_KEY_0": "core.fsmonitor", "GIT_CONFIG_VALUE_0": "touch /p", "GIT_EXEC_PATH": "/e",
    "GIT_EXTERNAL_DIFF": "touch /p", "GIT_SSH_COMMAND": "touch /p", "GIT_ATTR_SOURCE": "HEAD",
    "GIT_NAMESPACE": "n", "GIT_CEILING_DIRECTORIES": "/", "GIT_TRACE": "/t", "HOME": "/home/u",
}  # fmt: skip
_OURS = {"GIT_CONFIG_NOSYSTEM", "GIT_TERMINAL_PROMPT", "GIT_OPTIONAL_LOCKS", "GIT_PAGER"}


def test_git_env_lets_through_exactly_the_git_variables_it_sets() -> None:
    assert {k for k in git_env(_REDIRECTS) if k.startswith("GIT_")} == _OURS
    env = git_env(_REDIRECTS, index_file="/i", object_directory="/objects", common_dir="/common")
    assert {k for k in env if k.startswith("GIT_")} == _OURS | {
        "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY", "GIT_COMMON_DIR"
    }  # fmt: skip
    assert (env["GIT_INDEX_FILE"], env["GIT_OBJECT_DIRECTORY"], env["GIT_COMMON_DIR"]) == (
        "/i", "/objects", "/common"
    )  # fmt: skip
    assert env["HOME"] == "/home/u"


def test_a_neutral_call_never_names_the_targets_git_dir() -> None:
    target = GitTarget("/repo/.git", "/repo")
    argv = neutral_argv(target, "/tmp/n/git", "add", "-A", identity=True)
    assert argv[-4:] == ["--git-dir=/tmp/n/git", "--work-tree=/repo", "add", "-A"]
    assert not any("/repo/.git" in a for a in argv)
    for setting in NEUTRAL_CONFIG:
        assert setting in argv
    assert "core.hooksPath=/dev/null" in argv
    assert "user.name=nexo-trio" in argv
    ref = ref_argv(target, "update-ref", "refs/nexo/g/1", SHA)
    assert ref[-4:] == ["--git-dir=/repo/.git", "update-ref", "refs/nexo/g/1", SHA]
    assert not any(a.startswith("--work-tree") for a in ref)


def test_the_neutral_git_dir_files() -> None:
    assert NEUTRAL_HEAD == "ref: refs/heads/neutral\n"
    assert neutral_config_text("sha1") == ""
    assert "objectformat = sha256" in neutral_config_text("sha256")
    with pytest.raises(ValueError, match="object format"):
        neutral_config_text("md5")
    line = NEUTRAL_ATTRIBUTES.split()
    assert line[0] == "*"
    assert {"-text", "-filter", "-ident", "!eol", "!working-tree-encoding"} <= set(line)


def test_target_paths() -> None:
    plain = GitTarget("/r/.git", "/r")
    assert (plain.common, plain.object_directory, plain.exclude_file) == (
        "/r/.git", "/r/.git/objects", "/r/.git/info/exclude"
    )  # fmt: skip
    assert plain.cache_index_file == "/r/.git/nexo-trio.index"
    assert plain.index_file == "/r/.git/index"
    wt = GitTarget("/r/.git/worktrees/w", "/w", common_dir="/r/.git", object_format="sha256")
    assert (wt.common, wt.object_directory, wt.index_file) == (
        "/r/.git", "/r/.git/objects", "/r/.git/worktrees/w/index"
    )  # fmt: skip
    assert wt.cache_index_file == "/r/.git/worktrees/w/nexo-trio.index"
    assert plain.head_ref == "HEAD"
    assert wt.head_ref == "worktrees/w/HEAD"
    ref = ref_argv(wt, "rev-parse", wt.head_ref)
    assert ref[-3:] == ["--git-dir=/r/.git", "rev-parse", "worktrees/w/HEAD"]
    assert not any("worktrees/w" in a for a in ref[:-1])
    with pytest.raises(ValueError, match="worktrees/<id>"):
        GitTarget("/elsewhere/w", "/w", common_dir="/r/.git")
    shadow = GitTarget("/state/shadow", "/w", private=True)
    assert shadow.cache_index_file == shadow.index_file == "/state/shadow/index"
    with pytest.raises(ValueError, match="absolute path or None"):
        GitTarget("/g", "/w", common_dir="relative")
    with pytest.raises(ValueError, match="object_format"):
        GitTarget("/g", "/w", object_format="md5")


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


def test_parse_refnames_and_paths() -> None:
    out = b"refs/nexo/g/2\nrefs/nexo/g/1\nrefs/nexo/g/x/y\nrefs/nexo/gg/1\n"
    assert parse_refnames(out, "refs/nexo/g/") == (
        "refs/nexo/g/1",
        "refs/nexo/g/2",
        "refs/nexo/g/x/y",
    )
    assert parse_refnames(b"", "refs/nexo/g/") == ()
    names = b"b.txt\0a dir/x\ny\0" + b"\xff.bin\0b.txt\0"
    assert parse_paths(names) == tuple(sorted({"a dir/x\ny", "b.txt", os.fsdecode(b"\xff.bin")}))
    assert parse_paths(b"") == ()


def test_parse_gitdir_file() -> None:
    admin = "/r/.git/worktrees/w"
    assert parse_gitdir_file(b"/ws/w/.git\n", admin) == "/ws/w"
    assert parse_gitdir_file(b"/ws/w/.git\r\n", admin) == "/ws/w"
    assert parse_gitdir_file(b"../../../../ws/w/.git\n", admin) == "/ws/w"
    assert parse_gitdir_file(b"", admin) is None
    assert parse_gitdir_file(b"\n/ws/w/.git\n", admin) is None
