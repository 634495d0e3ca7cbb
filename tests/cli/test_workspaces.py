"""Workspaces on git, through the CLI with the fake claude on real repositories: a worktree
per goal that leaves the user's checkout byte for byte as it was, a checkpoint per turn,
``diff``, ``rollback``, ``worktrees`` and ``cleanup``."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from nexo_trio.testing import bash, init, result, text, turn
from tests.cli.helpers import (
    Setup,
    goal_lock_held,
    invoke,
    json_lines,
    make_setup,
    single_json,
    write_yaml,
)
from tests.git_repos import checkout_snapshot, git

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


TURN_1 = turn(
    init(),
    bash("echo one > a.txt && echo changed >> tracked.txt"),
    text("Done."),
    result("Done.", cost_usd=0.1),
)
TURN_2 = turn(
    init(),
    bash("echo two > b.txt && rm gone.txt && echo more >> a.txt"),
    text("Done."),
    result("Done.", cost_usd=0.1),
)
NEEDS_B = [{"kind": "file_match", "path": "b.txt", "pattern": "^two$"}]


def user_repo(root: Path) -> Path:
    """A repository with history, a dirty tracked file, a staged change and untracked files."""
    repo = root / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "tracked.txt").write_text("tracked\n")
    (repo / "gone.txt").write_text("to be deleted by turn 2\n")
    (repo / ".gitignore").write_text("*.log\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "first")
    (repo / "tracked.txt").write_text("tracked\nuser edit, not committed\n")
    (repo / "staged.txt").write_text("staged\n")
    git(repo, "add", "staged.txt")
    (repo / "untracked.txt").write_text("the user's own\n")
    (repo / "debug.log").write_text("ignored\n")
    return repo


def goal_file(tmp_path: Path, repo: str) -> Path:
    """The goal g1 (make b.txt) on a worktree of ``repo``."""
    return write_yaml(
        tmp_path / "goals" / "goal.yaml",
        {
            "id": "g1",
            "description": "Make a.txt and b.txt.",
            "acceptance": NEEDS_B,
            "budget": {"max_turns": 4, "max_wall_time": "60s"},
            "workspace": {"repo": repo},
        },
    )


def worktree_setup(tmp_path: Path, turns: list[Any]) -> tuple[Setup, Path, Path]:
    s = make_setup(tmp_path, turns)
    repo = user_repo(tmp_path)
    return s, repo, goal_file(tmp_path, "../repo")  # relative to the goal file


def events(s: Setup, goal_id: str = "g1") -> list[dict[str, Any]]:
    r = invoke("events", goal_id, "--state-dir", s.state_dir, "--json")
    assert r.exit_code == 0, r.output
    return json_lines(r.stdout)


def of_kind(s: Setup, kind: str) -> list[dict[str, Any]]:
    return [row["data"] for row in events(s) if row["kind"] == kind]


def test_a_worktree_goal_leaves_the_users_checkout_byte_for_byte_unchanged(
    tmp_path: Path,
) -> None:
    s, repo, goal = worktree_setup(tmp_path, [TURN_1, TURN_2])
    before = checkout_snapshot(repo)
    r = invoke("run", goal, "--config", s.config, "--json")
    assert r.exit_code == 0, r.output
    assert single_json(r.stdout)["total_turns"] == 2
    assert checkout_snapshot(repo) == before

    worktree = tmp_path / "workspaces" / "g1"
    assert [i["cwd"] for i in s.fake.invocations()] == [str(worktree)] * 2
    assert git(worktree, "rev-parse", "--abbrev-ref", "HEAD").strip() == "nexo/g1"
    # The worktree started from the base commit: the user's uncommitted work is not in it.
    assert (worktree / "tracked.txt").read_text() == "tracked\nchanged\n"
    assert not (worktree / "untracked.txt").exists()
    assert (worktree / "b.txt").read_text() == "two\n"

    started = of_kind(s, "attempt_started")
    assert [e["turn"] for e in started] == [1, 2]
    shas = [e["checkpoint"] for e in started]
    assert all(isinstance(sha, str) and len(sha) == 40 for sha in shas)
    refs = git(repo, "for-each-ref", "--format=%(refname) %(objectname)", "refs/nexo/g1/")
    assert f"refs/nexo/g1/1 {shas[0]}" in refs
    assert f"refs/nexo/g1/2 {shas[1]}" in refs
    assert "refs/nexo" not in git(repo, "branch", "--all")  # hidden: no branch shows them

    completed = of_kind(s, "attempt_completed")
    first, second = (e["changes"] for e in completed)
    assert (first["added"], first["modified"], first["deleted"]) == (
        ["a.txt"],
        ["tracked.txt"],
        [],
    )
    assert (second["added"], second["modified"], second["deleted"]) == (
        ["b.txt"],
        ["a.txt"],
        ["gone.txt"],
    )
    assert first["files_changed"] == 2
    assert first["insertions"] == 2
    # After the failed acceptance, the next prompt says what the last turn changed.
    prompt = s.fake.invocations()[1]["prompt"]
    assert "You said the goal was done" in prompt
    assert "Your last turn changed 2 files" in prompt
    assert "a.txt" in prompt

    started_run = of_kind(s, "goal_started")[0]
    assert started_run["git"]["kind"] == "worktree"
    assert started_run["git"]["branch"] == "nexo/g1"

    # A re-run of the done goal reuses the worktree and starts nothing.
    again = invoke("run", goal, "--config", s.config, "--json")
    assert again.exit_code == 0, again.output
    assert len(s.fake.invocations()) == 2
    assert checkout_snapshot(repo) == before


def test_diff_rollback_and_the_next_run_continuing_from_there(tmp_path: Path) -> None:
    third = turn(init(), bash("echo two > b.txt"), text("Done."), result("Done.", cost_usd=0.1))
    s, repo, goal = worktree_setup(tmp_path, [TURN_1, TURN_2, third])
    assert invoke("run", goal, "--config", s.config).exit_code == 0
    worktree = tmp_path / "workspaces" / "g1"
    before = checkout_snapshot(repo)

    one = invoke("diff", "g1", "--turn", "1", "--state-dir", s.state_dir)
    assert one.exit_code == 0, one.output
    assert "+++ b/a.txt" in one.stdout
    assert "+one" in one.stdout
    assert "b.txt" not in one.stdout  # turn 2's change is not turn 1's
    whole = invoke("diff", "g1", "--state-dir", s.state_dir)
    assert whole.exit_code == 0, whole.output
    assert "+++ b/b.txt" in whole.stdout
    assert "--- a/gone.txt" in whole.stdout

    back = invoke("rollback", "g1", "--turn", "2", "--state-dir", s.state_dir)
    assert back.exit_code == 0, back.output
    assert "before turn 2" in back.stdout
    # Exactly turn 1's files: b.txt (created by turn 2) gone, gone.txt (deleted by it) back.
    assert not (worktree / "b.txt").exists()
    assert (worktree / "gone.txt").read_text() == "to be deleted by turn 2\n"
    assert (worktree / "a.txt").read_text() == "one\n"
    assert checkout_snapshot(repo) == before
    rolled = of_kind(s, "rolled_back")
    assert len(rolled) == 1
    assert rolled[0]["turn"] == 2

    # The goal is open again: the next run continues, and its session is told.
    r = invoke("run", goal, "--config", s.config, "--json")
    assert r.exit_code == 0, r.output
    assert single_json(r.stdout)["total_turns"] == 3
    last = s.fake.invocations()[-1]
    assert last["resumed"]
    assert "[ROLLBACK]" in last["prompt"]
    assert "before turn 2" in last["prompt"]


def test_rollback_by_sha_and_the_mistakes_it_refuses(tmp_path: Path) -> None:
    s, _, goal = worktree_setup(tmp_path, [TURN_1, TURN_2])
    assert invoke("run", goal, "--config", s.config).exit_code == 0
    worktree = tmp_path / "workspaces" / "g1"
    first = of_kind(s, "attempt_started")[0]["checkpoint"]
    r = invoke("rollback", "g1", "--to", first[:10], "--state-dir", s.state_dir)
    assert r.exit_code == 0, r.output
    assert not (worktree / "a.txt").exists()  # before turn 1: nothing of the goal's
    for args, says in [
        (("--turn", "9"), "no checkpoint of turn 9"),
        (("--to", "deadbeef"), "is no checkpoint"),
        (("--to", "xyz"), "not a commit sha"),
        ((), "exactly one of"),
    ]:
        bad = invoke("rollback", "g1", *args, "--state-dir", s.state_dir)
        assert bad.exit_code == 2, bad.output
        assert says in bad.stderr
        assert len(bad.stderr.strip().splitlines()) == 1
    unknown = invoke("rollback", "nope", "--turn", "1", "--state-dir", s.state_dir)
    assert unknown.exit_code == 2
    assert "no events recorded" in unknown.stderr


def test_rollback_is_refused_while_the_goal_runs(tmp_path: Path) -> None:
    s, _, goal = worktree_setup(tmp_path, [TURN_1, TURN_2])
    assert invoke("run", goal, "--config", s.config).exit_code == 0
    # Another process holding the goal's lock is how a running goal looks.
    with goal_lock_held(s.state_dir, "g1") as holder:
        r = invoke("rollback", "g1", "--turn", "1", "--state-dir", s.state_dir)
        assert r.exit_code == 2
        assert f"is running in process {holder.pid}" in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
        c = invoke("cleanup", "g1", "--state-dir", s.state_dir)
        assert c.exit_code == 2
        assert "is running" in c.stderr
        many = invoke("cleanup", "--finished-before", "0s", "--state-dir", s.state_dir)
        assert many.exit_code == 0
        assert "g1: skipped: it is running" in many.stdout
    assert (tmp_path / "workspaces" / "g1" / "b.txt").exists()  # nothing was rolled back
    after = invoke("rollback", "g1", "--turn", "2", "--state-dir", s.state_dir)
    assert after.exit_code == 0, after.output  # the lock of a dead process is no lock


def test_worktrees_and_cleanup(tmp_path: Path) -> None:
    s, repo, goal = worktree_setup(tmp_path, [TURN_1, TURN_2])
    assert invoke("run", goal, "--config", s.config).exit_code == 0
    listed = invoke("worktrees", "--state-dir", s.state_dir, "--json")
    assert listed.exit_code == 0, listed.output
    (row,) = json_lines(listed.stdout)
    assert row["goal_id"] == "g1"
    assert row["branch"] == "nexo/g1"
    assert row["state"] == "done"
    assert row["last_checkpoint"]["turn"] == 2
    assert row["exists"]
    worktree = tmp_path / "workspaces" / "g1"

    cleaned = invoke("cleanup", "g1", "--state-dir", s.state_dir)
    assert cleaned.exit_code == 0, cleaned.output
    assert not worktree.exists()
    assert git(repo, "for-each-ref", "refs/nexo/") == ""
    # The branch has no commit beyond main's: nothing is lost, it is deleted.
    assert git(repo, "branch", "--list", "nexo/g1") == ""
    assert "deleted the branch nexo/g1" in cleaned.stdout
    again = invoke("cleanup", "g1", "--state-dir", s.state_dir)
    assert again.exit_code == 0, again.output
    assert "nothing left to clean up" in again.stdout
    assert git(repo, "worktree", "list", "--porcelain").count("worktree ") == 1


def test_cleanup_keeps_a_branch_with_unmerged_commits(tmp_path: Path) -> None:
    commits = turn(
        init(),
        bash("echo two > b.txt && git add -A && git commit -q -m work"),
        text("Done."),
        result("Done.", cost_usd=0.1),
    )
    s, repo, goal = worktree_setup(tmp_path, [commits])
    git(repo, "config", "user.name", "Claude")
    git(repo, "config", "user.email", "claude@example.com")
    r = invoke("run", goal, "--config", s.config)
    assert r.exit_code == 0, r.output
    kept = invoke("cleanup", "g1", "--state-dir", s.state_dir)
    assert kept.exit_code == 0, kept.output
    assert "kept the branch nexo/g1" in kept.stdout
    assert git(repo, "branch", "--list", "nexo/g1").strip() == "nexo/g1"
    assert not (tmp_path / "workspaces" / "g1").exists()


def test_a_plain_repository_and_a_shadow_get_checkpoints(tmp_path: Path) -> None:
    s = make_setup(tmp_path, [TURN_1, TURN_2, TURN_1, TURN_2])
    repo = user_repo(tmp_path)
    plain = s.goal("plain.yaml", goal_id="p1", acceptance=NEEDS_B, workspace="../repo")
    assert invoke("run", plain, "--config", s.config).exit_code == 0
    refs = git(repo, "for-each-ref", "--format=%(refname)", "refs/nexo/p1/")
    assert refs.split() == [
        "refs/nexo/p1/1",
        "refs/nexo/p1/1-after",
        "refs/nexo/p1/2",
        "refs/nexo/p1/2-after",
    ]
    assert git(repo, "rev-parse", "--abbrev-ref", "HEAD").strip() == "main"

    directory = tmp_path / "dir"
    directory.mkdir()
    (directory / "gone.txt").write_text("x\n")
    (directory / "tracked.txt").write_text("t\n")
    shadow = write_yaml(
        tmp_path / "goals" / "shadow.yaml",
        {
            "id": "s1",
            "description": "Make b.",
            "acceptance": NEEDS_B,
            "workspace": "../dir",
            "checkpoints": True,
        },
    )
    assert invoke("run", shadow, "--config", s.config).exit_code == 0
    assert not (directory / ".git").exists()  # the user's directory gets no .git
    assert (s.state_dir / "git" / "s1.git").is_dir()
    back = invoke("rollback", "s1", "--turn", "2", "--state-dir", s.state_dir)
    assert back.exit_code == 0, back.output
    assert (directory / "gone.txt").exists()
    assert not (directory / "b.txt").exists()


def test_a_plain_directory_without_checkpoints_says_so(tmp_path: Path) -> None:
    s = make_setup(tmp_path, [TURN_1])
    goal = s.goal(acceptance=[])
    assert invoke("run", goal, "--config", s.config).exit_code == 0
    r = invoke("diff", "g1", "--state-dir", s.state_dir)
    assert r.exit_code == 2
    assert "has no checkpoints" in r.stderr


@pytest.mark.parametrize(
    ("workspace", "says"),
    [
        ({"repo": "../nowhere"}, "does not exist"),
        ({"repo": "../plain"}, "not a git repository"),
        ({"repo": "../repo", "base": "no-such-ref"}, "no-such-ref"),
        ({"repo": "../repo", "branch": "main"}, "already checked out"),
        ({"repo": "../repo", "branch": "bad..name"}, "not a valid branch name"),
    ],
)
def test_worktree_mistakes_exit_2_with_one_line(
    tmp_path: Path, workspace: dict[str, str], says: str
) -> None:
    s = make_setup(tmp_path, [TURN_1])
    user_repo(tmp_path)
    (tmp_path / "plain").mkdir()
    goal = write_yaml(
        tmp_path / "goals" / "goal.yaml",
        {"id": "g1", "description": "x", "workspace": workspace},
    )
    r = invoke("run", goal, "--config", s.config)
    assert r.exit_code == 2, r.output
    assert says in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert s.fake.invocations() == []


def test_a_worktree_place_that_escapes_the_workspace_root_is_refused(tmp_path: Path) -> None:
    s, _, goal = worktree_setup(tmp_path, [TURN_1])
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "workspaces").mkdir()
    (tmp_path / "workspaces" / "g1").symlink_to(outside)
    r = invoke("run", goal, "--config", s.config)
    assert r.exit_code == 2, r.output
    assert "outside the workspace root" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert list(outside.iterdir()) == []
    assert s.fake.invocations() == []


def test_ignored_files_are_neither_checkpointed_nor_rolled_back(tmp_path: Path) -> None:
    noisy = turn(
        init(),
        bash("echo two > b.txt && echo build > out.log"),
        text("Done."),
        result("Done.", cost_usd=0.1),
    )
    s, _, goal = worktree_setup(tmp_path, [noisy])
    assert invoke("run", goal, "--config", s.config).exit_code == 0
    (changes,) = (e["changes"] for e in of_kind(s, "attempt_completed"))
    assert changes["added"] == ["b.txt"]  # out.log is ignored (*.log)
    back = invoke("rollback", "g1", "--turn", "1", "--state-dir", s.state_dir)
    assert back.exit_code == 0, back.output
    worktree = tmp_path / "workspaces" / "g1"
    assert not (worktree / "b.txt").exists()
    assert (worktree / "out.log").read_text() == "build\n"  # ignored: untouched


def test_cleanup_of_finished_goals_and_of_other_workspaces(tmp_path: Path) -> None:
    s = make_setup(tmp_path, [TURN_1, TURN_2, TURN_1, TURN_2])
    repo = user_repo(tmp_path)
    plain = s.goal("plain.yaml", goal_id="p1", acceptance=NEEDS_B, workspace="../repo")
    assert invoke("run", plain, "--config", s.config).exit_code == 0
    directory = tmp_path / "dir"
    directory.mkdir()
    (directory / "gone.txt").write_text("x\n")
    (directory / "tracked.txt").write_text("t\n")
    shadow = write_yaml(
        tmp_path / "goals" / "shadow.yaml",
        {"id": "s1", "description": "b", "acceptance": NEEDS_B, "workspace": "../dir",
         "checkpoints": True},
    )  # fmt: skip
    assert invoke("run", shadow, "--config", s.config).exit_code == 0
    recent = invoke("cleanup", "--finished-before", "1h", "--state-dir", s.state_dir)
    assert recent.exit_code == 0, recent.output
    assert git(repo, "for-each-ref", "refs/nexo/") != ""  # ended just now: kept
    everything = invoke("cleanup", "--finished-before", "0s", "--state-dir", s.state_dir)
    assert everything.exit_code == 0, everything.output
    assert git(repo, "for-each-ref", "refs/nexo/") == ""
    assert not (s.state_dir / "git" / "s1.git").exists()
    assert (directory / "b.txt").exists()  # the user's files stay
    assert (repo / "b.txt").exists()
    bad = invoke("cleanup", "--finished-before", "soon", "--state-dir", s.state_dir)
    assert bad.exit_code == 2
    assert "--finished-before" in bad.stderr
    neither = invoke("cleanup", "--state-dir", s.state_dir)
    assert neither.exit_code == 2


def test_diff_and_rollback_take_the_goal_file_too(tmp_path: Path) -> None:
    s, _, goal = worktree_setup(tmp_path, [TURN_1, TURN_2])
    assert invoke("run", goal, "--config", s.config).exit_code == 0
    shown = invoke("diff", goal, "--turn", "2", "--stat", "--config", s.config)
    assert shown.exit_code == 0, shown.output
    assert shown.stdout.splitlines() == [
        "A b.txt",
        "M a.txt",
        "D gone.txt",
        "3 file(s) changed, 2 insertion(s)(+), 1 deletion(s)(-)",
    ]


def test_a_run_after_cleanup_starts_from_a_fresh_worktree_and_is_told(tmp_path: Path) -> None:
    s, repo, goal = worktree_setup(tmp_path, [TURN_1, TURN_2])
    goal.write_text(goal.read_text().replace("max_turns: 4", "max_turns: 1"))
    assert invoke("run", goal, "--config", s.config).exit_code == 1  # out of turns
    assert invoke("cleanup", "g1", "--state-dir", s.state_dir).exit_code == 0
    assert [e["removed"] for e in of_kind(s, "workspace_cleaned")] == [
        [
            "deleted 2 checkpoint ref(s)",
            "removed the worktree " + str(tmp_path / "workspaces" / "g1"),
            "deleted the branch nexo/g1",
        ]
    ]
    goal.write_text(goal.read_text().replace("max_turns: 1", "max_turns: 2"))
    r = invoke("run", goal, "--config", s.config, "--json")
    assert r.exit_code == 0, r.output
    prompt = s.fake.invocations()[-1]["prompt"]
    assert "[ROLLBACK]" in prompt
    assert "cleaned up" in prompt
    started = of_kind(s, "attempt_started")[-1]
    refs = git(repo, "for-each-ref", "--format=%(refname) %(objectname)", "refs/nexo/g1/2")
    assert refs.split() == ["refs/nexo/g1/2", started["checkpoint"]]
    diff = invoke("diff", "g1", "--state-dir", s.state_dir)  # from the new first checkpoint
    assert diff.exit_code == 0, diff.output
    assert "+++ b/b.txt" in diff.stdout
    assert "tracked.txt" not in diff.stdout  # turn 1's change went with the old worktree


def remote_setup(tmp_path: Path, turns: list[Any]) -> tuple[Setup, Path, Path]:
    """A goal on a worktree of a remote (a bare repository by its ``file://`` URL)."""
    s = make_setup(tmp_path, turns)
    seed = user_repo(tmp_path)
    bare = tmp_path / "origin.git"
    git(tmp_path, "clone", "-q", "--bare", str(seed), str(bare))
    return s, bare, goal_file(tmp_path, bare.as_uri())


def test_cleanup_deletes_the_checkpoint_refs_on_the_remote_too(tmp_path: Path) -> None:
    """A remote's hidden refs of the goal (every worker's checkpoints) go with the local
    ones; the goal's branch on the remote is the people's and stays."""
    s, bare, goal = remote_setup(tmp_path, [TURN_1, TURN_2])
    assert invoke("run", goal, "--config", s.config).exit_code == 0
    pushed = git(bare, "for-each-ref", "--format=%(refname)", "refs/nexo/g1/").split()
    assert "refs/nexo/g1/1" in pushed
    assert "refs/nexo/g1/2-after" in pushed

    cleaned = invoke("cleanup", "g1", "--state-dir", s.state_dir)
    assert cleaned.exit_code == 0, cleaned.output
    assert f"g1: deleted {len(pushed)} checkpoint ref(s) on {bare.as_uri()}\n" in cleaned.stdout
    assert git(bare, "for-each-ref", "refs/nexo/") == ""
    assert git(bare, "branch", "--list", "nexo/g1").strip() == "nexo/g1"


def test_cleanup_with_the_remote_unreachable_cleans_here_and_says_what_it_kept(
    tmp_path: Path,
) -> None:
    s, bare, goal = remote_setup(tmp_path, [TURN_1, TURN_2])
    assert invoke("run", goal, "--config", s.config).exit_code == 0
    away = bare.with_name("away.git")
    bare.rename(away)
    cleaned = invoke("cleanup", "g1", "--state-dir", s.state_dir)
    assert cleaned.exit_code == 0, cleaned.output
    assert f"g1: kept the checkpoint refs on {bare.as_uri()}: " in cleaned.stdout
    assert "removed the worktree" in cleaned.stdout
    assert not (tmp_path / "workspaces" / "g1").exists()
    assert git(away, "for-each-ref", "refs/nexo/g1/") != ""
