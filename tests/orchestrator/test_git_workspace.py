"""The git layer on real repositories: worktrees that leave the user's checkout byte for byte
as it was, checkpoints on hidden refs, diff stats, exact restores, shadow repositories."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path
from typing import TypeVar

import pytest

from nexo_trio.core.checkpoints import GitTarget, WorkspaceProblem, Worktree, git_env
from nexo_trio.orchestrator import git_workspace as gw

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")

T = TypeVar("T")

ME = ("-c", "user.name=Tester", "-c", "user.email=tester@example.com")


def git(cwd: Path, *args: str, stdin: bytes = b"") -> bytes:
    done = subprocess.run(
        ["git", *ME, "-C", str(cwd), *args],
        input=stdin,
        capture_output=True,
        check=True,
        env=git_env(os.environ),  # GIT_OPTIONAL_LOCKS=0: status never rewrites an index
        timeout=30,
    )
    return done.stdout


def write(path: Path, text: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode() if isinstance(text, str) else text)


def files(root: Path, *, skip_ignored_in: Path | None = None) -> dict[str, str]:
    """Every file below ``root`` (``.git`` itself excluded) -> mode and content hash."""
    found: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != ".git"]
        for name in filenames:
            full = Path(dirpath, name)
            if name == ".git":
                continue
            mode = os.lstat(full).st_mode
            data = os.readlink(full).encode() if full.is_symlink() else full.read_bytes()
            found[os.fsdecode(full.relative_to(root))] = (
                f"{mode:o} {hashlib.sha256(data).hexdigest()}"
            )
    return found


def snapshot(repo: Path, *, ignore_refs: tuple[str, ...] = ()) -> dict[str, object]:
    """Everything of a checkout a worktree or checkpoint must not touch."""
    refs = [
        line
        for line in git(repo, "for-each-ref", "--format=%(refname) %(objectname)").splitlines()
        if not line.startswith(b"refs/nexo/") and line.split()[0].decode() not in ignore_refs
    ]
    return {
        "files": files(repo),
        "status": git(repo, "status", "--porcelain=v2", "-z", "--ignored", "-uall"),
        "index": (repo / ".git" / "index").read_bytes(),
        "HEAD": (repo / ".git" / "HEAD").read_bytes(),
        "head": git(repo, "rev-parse", "HEAD"),
        "refs": refs,
        "config": (repo / ".git" / "config").read_bytes(),
    }


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A repository with two commits' worth of history and a ``.gitignore`` (``*.log``)."""
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    write(repo / "a.txt", "one\ntwo\n")
    write(repo / "b.txt", "bee\n")
    write(repo / "dir" / "c.txt", "sea\n")
    write(repo / ".gitignore", "*.log\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "init")
    return repo


def dirty(repo: Path) -> None:
    """A modified tracked file, a staged change, an untracked and an ignored file."""
    write(repo / "a.txt", "one\ntwo\nuncommitted\n")
    write(repo / "b.txt", "bee staged\n")
    git(repo, "add", "b.txt")
    write(repo / "untracked.txt", "mine\n")
    write(repo / "debug.log", "ignored\n")


def ok(value: T | WorkspaceProblem) -> T:
    assert not isinstance(value, WorkspaceProblem), value
    return value


async def test_the_users_checkout_is_never_modified(repo: Path, tmp_path: Path) -> None:
    dirty(repo)
    before = snapshot(repo)
    wt = ok(await gw.ensure_worktree(str(repo), None, "nexo/g1", str(tmp_path / "ws" / "g1")))
    assert isinstance(wt, Worktree)
    assert wt.created
    work = Path(wt.path)
    # The worktree is the base (HEAD), not the user's uncommitted work.
    assert (work / "a.txt").read_text() == "one\ntwo\n"
    assert not (work / "untracked.txt").exists()
    first = ok(await gw.checkpoint(wt.target, "g1", 1))
    write(work / "a.txt", "one\nchanged\n")
    write(work / "new.txt", "new\n")
    (work / "b.txt").unlink()
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", "Claude's commit")
    claude = git(work, "rev-parse", "HEAD")
    write(work / "after.txt", "after\n")
    second = ok(await gw.checkpoint(wt.target, "g1", 2))
    assert git(work, "rev-parse", "HEAD") == claude  # checkpoints never move HEAD
    assert git(work, "rev-parse", f"{second}^1").strip() == claude.strip()
    assert ok(await gw.restore(wt.target, first)) is None
    assert git(work, "rev-parse", "HEAD") == claude  # nor does a restore
    assert git(repo, "rev-parse", "refs/heads/nexo/g1") == claude  # Claude's commit stays
    assert (work / "b.txt").read_text() == "bee\n"
    assert not (work / "new.txt").exists()
    assert not (work / "after.txt").exists()
    assert snapshot(repo, ignore_refs=("refs/heads/nexo/g1",)) == before


async def test_restore_gives_exactly_the_earlier_tree(repo: Path) -> None:
    dirty(repo)
    write(repo / "dir" / "deep" / "u2.txt", "untracked deep\n")
    target = ok(await gw.repository_target(str(repo)))
    assert isinstance(target, GitTarget)
    head = git(repo, "rev-parse", "HEAD")
    status = git(repo, "status", "--porcelain=v2", "-z", "-uall")
    tree = files(repo)
    sha = ok(await gw.checkpoint(target, "g", 1))
    # The turn: modifies, deletes (tracked and untracked), creates, touches ignored files.
    write(repo / "a.txt", "rewritten\n")
    (repo / "dir" / "c.txt").unlink()
    (repo / "untracked.txt").unlink()
    write(repo / "brand" / "new.txt", "new\n")
    write(repo / "created.txt", "created\n")
    write(repo / "debug.log", "ignored, changed later\n")
    write(repo / "later.log", "ignored, created later\n")
    git(repo, "add", "brand/new.txt")
    assert ok(await gw.restore(target, sha)) is None
    after = files(repo)
    assert after.pop("debug.log") != tree.pop("debug.log")  # ignored files are untouched
    assert after.pop("later.log")
    assert after == tree
    assert not (repo / "brand").exists()
    assert git(repo, "rev-parse", "HEAD") == head
    # The index is as it was: b.txt staged, a.txt modified unstaged, untracked untracked.
    assert git(repo, "status", "--porcelain=v2", "-z", "-uall") == status


async def test_diff_stat_counts(repo: Path) -> None:
    target = ok(await gw.repository_target(str(repo)))
    assert isinstance(target, GitTarget)
    sha = ok(await gw.checkpoint(target, "g", 1))
    assert ok(await gw.diff_stat(target, sha)).empty
    write(repo / "new.txt", "1\n2\n3\n")
    write(repo / "a.txt", "one\nTWO\n")
    (repo / "b.txt").unlink()
    write(repo / "blob.bin", b"\0\1\2\3")
    write(repo / "noise.log", "ignored\n" * 50)
    stat = ok(await gw.diff_stat(target, sha))
    assert stat.files_changed == 4
    assert (stat.insertions, stat.deletions, stat.binary) == (4, 2, 1)
    assert stat.added == ("blob.bin", "new.txt")
    assert stat.deleted == ("b.txt",)
    assert stat.modified == ("a.txt",)
    later = ok(await gw.checkpoint(target, "g", 2))
    assert ok(await gw.diff_stat(target, sha, later)) == stat
    text = ok(await gw.diff_text(target, sha))
    assert b"new file mode" in text
    assert b"deleted file mode" in text
    assert b"+TWO" in text
    assert b"\x1b[" not in text  # no color
    assert text == ok(await gw.diff_text(target, sha, later))


async def test_checkpoints_live_on_hidden_refs_only(repo: Path) -> None:
    target = ok(await gw.repository_target(str(repo)))
    assert isinstance(target, GitTarget)
    heads = git(repo, "for-each-ref", "refs/heads", "refs/tags")
    one = ok(await gw.checkpoint(target, "goal-1", 1))
    write(repo / "x.txt", "x\n")
    two = ok(await gw.checkpoint(target, "goal-1", 2))
    listed = ok(await gw.list_checkpoints(target, "goal-1"))
    assert [(c.turn, c.sha) for c in listed] == [(1, one), (2, two)]
    assert git(repo, "rev-parse", "refs/nexo/goal-1/2").decode().strip() == two
    assert git(repo, "branch", "--all", "--contains", two) == b""
    assert git(repo, "for-each-ref", "refs/heads", "refs/tags") == heads
    assert ok(await gw.list_checkpoints(target, "other")) == ()
    assert isinstance(await gw.checkpoint(target, "../bad", 1), WorkspaceProblem)


async def test_shadow_mode_leaves_no_git_in_the_directory(tmp_path: Path) -> None:
    work = tmp_path / "plain"
    write(work / "keep.txt", "keep\n")
    write(work / ".gitignore", "*.tmp\n")
    write(work / "cache.tmp", "ignored\n")
    assert await gw.repository_target(str(work)) is None
    target = ok(await gw.ensure_shadow(str(tmp_path / "state" / "shadow"), str(work)))
    assert isinstance(target, GitTarget)
    assert target.private
    tree = files(work)
    sha = ok(await gw.checkpoint(target, "g", 1))
    write(work / "keep.txt", "changed\n")
    write(work / "extra.txt", "extra\n")
    stat = ok(await gw.diff_stat(target, sha))
    assert (stat.added, stat.modified) == (("extra.txt",), ("keep.txt",))
    assert ok(await gw.restore(target, sha)) is None
    assert files(work) == tree
    assert not (work / ".git").exists()
    again = ok(await gw.ensure_shadow(str(tmp_path / "state" / "shadow"), str(work)))
    assert [c.sha for c in ok(await gw.list_checkpoints(again, "g"))] == [sha]
    write(tmp_path / "notgit" / "x", "x")
    problem = await gw.ensure_shadow(str(tmp_path / "notgit"), str(work))
    assert isinstance(problem, WorkspaceProblem)


ODD_NAMES = ["with space.txt", "new\nline.txt", "tab\there.txt", os.fsdecode(b"latin-\xff.txt")]


async def test_odd_paths(tmp_path: Path) -> None:
    work = tmp_path / "odd"
    for name in ODD_NAMES:
        write(work / name, f"{name!r}\n")
    target = ok(await gw.ensure_shadow(str(tmp_path / "shadow"), str(work)))
    tree = files(work)
    sha = ok(await gw.checkpoint(target, "g", 1))
    (work / ODD_NAMES[0]).unlink()
    write(work / ODD_NAMES[1], "changed\n")
    write(work / "dir with space" / ODD_NAMES[3], "new\n")
    stat = ok(await gw.diff_stat(target, sha))
    assert stat.deleted == (ODD_NAMES[0],)
    assert stat.modified == (ODD_NAMES[1],)
    assert stat.added == (f"dir with space/{ODD_NAMES[3]}",)
    assert ok(await gw.restore(target, sha)) is None
    assert files(work) == tree


async def test_a_rerun_reuses_the_worktree(repo: Path, tmp_path: Path) -> None:
    path = str(tmp_path / "ws" / "g")
    first = ok(await gw.ensure_worktree(str(repo), "main", "nexo/g", path))
    write(Path(path) / "progress.txt", "half done\n")
    again = ok(await gw.ensure_worktree(str(repo), "main", "nexo/g", path))
    assert isinstance(first, Worktree)
    assert isinstance(again, Worktree)
    assert (first.created, again.created) == (True, False)
    assert again.target == first.target
    assert (Path(path) / "progress.txt").read_text() == "half done\n"
    # The worktree directory lost (the branch stays): re-created on the same branch.
    git(Path(path), "add", "-A")
    git(Path(path), "commit", "-q", "-m", "progress")
    shutil.rmtree(path)
    third = ok(await gw.ensure_worktree(str(repo), "main", "nexo/g", path))
    assert isinstance(third, Worktree)
    assert third.created
    assert (Path(path) / "progress.txt").read_text() == "half done\n"


async def test_worktree_problems(repo: Path, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    write(tmp_path / "norepo" / "f", "f")
    cases = [
        (str(tmp_path / "norepo"), None, "nexo/a", ws / "a", "not a git repository"),
        (str(repo), "no-such-ref", "nexo/b", ws / "b", "is no commit"),
        (str(repo), None, "main", ws / "c", "already checked out"),
        (str(repo), None, "bad..name", ws / "d", "not a valid name"),
    ]
    write(ws / "occupied" / "file", "x")
    cases.append((str(repo), None, "nexo/e", ws / "occupied", "is not a worktree"))
    for repo_, base, branch, path, message in cases:
        problem = await gw.ensure_worktree(repo_, base, branch, str(path))
        assert isinstance(problem, WorkspaceProblem), (branch, problem)
        assert message in problem.message
        assert "\n" not in problem.message
    wt = ok(await gw.ensure_worktree(str(repo), None, "nexo/f", str(ws / "f")))
    assert isinstance(wt, Worktree)
    other = await gw.ensure_worktree(str(repo), None, "nexo/g", str(ws / "f"))
    assert isinstance(other, WorkspaceProblem)
    assert "not on nexo/g" in other.message
    assert git(repo, "branch", "--list", "nexo/a", "nexo/b", "nexo/e") == b""


async def test_a_subdirectory_of_a_repository_is_a_problem(repo: Path) -> None:
    problem = await gw.repository_target(str(repo / "dir"))
    assert isinstance(problem, WorkspaceProblem)
    assert "top level" in problem.message


async def test_git_timeouts_are_problems(repo: Path) -> None:
    target = ok(await gw.repository_target(str(repo)))
    assert isinstance(target, GitTarget)
    problem = await gw.checkpoint(target, "g", 1, timeout=0)
    assert isinstance(problem, WorkspaceProblem)
    assert "did not finish" in problem.message
