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


# -- a workspace whoever writes it cannot use to run anything ---------------------------------


def evil_script(marker: Path) -> Path:
    """An executable that touches ``marker`` and then acts as ``cat`` (a working filter,
    textconv or pager), next to the marker."""
    script = marker.with_name("evil.sh")
    write(script, f'#!/bin/sh\ntouch "{marker}"\nexec cat "$@"\n')
    script.chmod(0o755)
    return script


def hostile_config(marker: Path, *, include: Path | None = None) -> str:
    """Config that runs ``evil.sh`` (touching ``marker``) through every door git has."""
    evil = evil_script(marker)
    text = f"""
[core]
\tfsmonitor = {evil}
\thooksPath = hooks
\tpager = {evil}
\tsshCommand = {evil}
\teditor = {evil}
\tautocrlf = true
\talternateRefsCommand = {evil}
[filter "evil"]
\tclean = {evil}
\tsmudge = {evil}
\tprocess = {evil}
\trequired = true
[diff "evil"]
\ttextconv = {evil}
\tcommand = {evil}
[diff]
\texternal = {evil}
[commit]
\tgpgSign = true
[gpg]
\tprogram = {evil}
[submodule]
\trecurse = true
"""
    if include is not None:
        text += f"[include]\n\tpath = {include}\n"
    return text


def run_git(*argv: str) -> bytes:
    """A plain git call (no -C, no identity)."""
    done = subprocess.run(
        ["git", *argv], capture_output=True, check=True, env=git_env(os.environ), timeout=30
    )
    return done.stdout


def same(a: str | Path, b: str | Path) -> bool:
    return os.path.samefile(a, b)


def exists(path: Path) -> bool:
    return path.exists()


def arm(git_dir: Path, marker: Path, *, include: Path | None = None) -> None:
    """Write hostile config, hooks and attributes into ``git_dir`` (as Claude could)."""
    with (git_dir / "config").open("a") as config:
        config.write(hostile_config(marker, include=include))
    for hooks in (git_dir / "hooks", git_dir.parent / "hooks"):
        for hook in ("reference-transaction", "post-checkout", "pre-commit", "post-index-change"):
            write(hooks / hook, f'#!/bin/sh\ntouch "{marker}"\n')
            (hooks / hook).chmod(0o755)
    write(git_dir / "info" / "attributes", "* filter=evil diff=evil\n")


async def exercise(target: GitTarget, work: Path, goal: str = "g") -> None:
    """Every operation that reads the work tree or writes objects, with a real change between
    two checkpoints, ending in a byte-exact restore of the first."""
    before = files(work)
    first = ok(await gw.checkpoint(target, goal, 1))
    write(work / "a.txt", "one\nchanged\r\n")
    write(work / "fresh.txt", "fresh\n")
    second = ok(await gw.checkpoint(target, goal, 2))
    stat = ok(await gw.diff_stat(target, first))
    assert stat.modified == ("a.txt",)
    assert stat.added == ("fresh.txt",)
    assert ok(await gw.diff_stat(target, first, second)) == stat
    text = ok(await gw.diff_text(target, first))
    assert b"+changed\r" in text
    assert ok(await gw.changed_paths(target, first)) == ("a.txt", "fresh.txt")
    assert ok(await gw.work_tree_tree(target))
    assert ok(await gw.restore(target, first)) is None
    assert files(work) == before
    assert [c.turn for c in ok(await gw.list_checkpoints(target, goal))] == [1, 2]
    assert ok(await gw.delete_checkpoints(target, goal)) == 2


async def test_a_hostile_repository_config_runs_nothing(repo: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    target = ok(await gw.repository_target(str(repo)))
    assert isinstance(target, GitTarget)
    # Claude's turn: the repository's own config, hooks, attributes and an included file.
    included = repo / "evil.cfg"
    write(
        included,
        f'[core]\n\tfsmonitor = touch {marker}\n[filter "evil"]\n\tclean = touch {marker}\n',
    )
    arm(repo / ".git", marker, include=included)
    write(repo / ".gitattributes", "* filter=evil diff=evil\n*.txt text eol=crlf ident\n")
    write(repo / "sub" / "inner.txt", "$Id$\n")
    elsewhere = tmp_path / "elsewhere"
    write(elsewhere / "other.txt", "not the workspace\n")
    with (repo / ".git" / "config").open("a") as config:
        config.write(f"[core]\n\tworktree = {elsewhere}\n")
    await exercise(target, repo)
    assert not marker.exists()
    # The bytes are the file's, not a filter's or an ident expansion's.
    sha = ok(await gw.checkpoint(target, "g", 3))
    assert git(repo, "cat-file", "blob", f"{sha}:sub/inner.txt") == b"$Id$\n"
    assert b"other.txt" not in git(repo, "ls-tree", "-r", "--name-only", sha)
    assert not marker.exists()


async def test_a_textconv_driver_never_runs(repo: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    target = ok(await gw.repository_target(str(repo)))
    assert isinstance(target, GitTarget)
    with (repo / ".git" / "config").open("a") as config:
        config.write(f'[diff "x"]\n\ttextconv = {evil_script(marker)}\n')
    write(repo / ".gitattributes", "* diff=x\n")
    sha = ok(await gw.checkpoint(target, "g", 1))
    write(repo / "a.txt", "one\nthree\n")
    assert b"+three" in ok(await gw.diff_text(target, sha))
    assert ok(await gw.diff_stat(target, sha)).modified == ("a.txt",)
    assert not marker.exists()
    # The same attributes make a plain git call run it (the test is not vacuous).
    assert b"+three" in git(repo, "diff", "HEAD", "--", "a.txt")
    assert exists(marker)


async def test_a_rewritten_worktree_git_file_and_commondir_are_not_followed(
    repo: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    wt = ok(await gw.ensure_worktree(str(repo), None, "nexo/g", str(tmp_path / "ws" / "g")))
    assert isinstance(wt, Worktree)
    target = wt.target
    assert target.common_dir is not None
    assert same(target.common_dir, repo / ".git")
    assert same(os.path.dirname(target.git_dir), repo / ".git" / "worktrees")
    work = Path(wt.path)
    # Claude's turn: a hostile repository of its own, pointed at by the worktree's .git file
    # and by the admin dir's commondir file.
    evil = tmp_path / "evil"
    run_git("init", "-q", str(evil))
    arm(evil / ".git", marker)
    write(work / ".git", f"gitdir: {evil / '.git'}\n")
    write(Path(target.git_dir) / "commondir", f"{evil / '.git'}\n")
    write(work / ".gitattributes", "* filter=evil diff=evil\n")
    await exercise(target, work)
    assert not marker.exists()
    sha = ok(await gw.checkpoint(target, "g", 5))
    assert git(repo, "rev-parse", "refs/nexo/g/5").decode().strip() == sha
    assert run_git(f"--git-dir={evil / '.git'}", "for-each-ref") == b""
    # Found again from the repository's side, and removable although its .git lies.
    again = ok(await gw.ensure_worktree(str(repo), None, "nexo/g", str(work)))
    assert isinstance(again, Worktree)
    assert again.target == target
    assert ok(await gw.remove_worktree(str(repo), str(work))) is True
    assert not exists(work)
    assert not marker.exists()


CRLF_FILES = {
    "crlf.txt": b"one\r\ntwo\r\n",
    "lf.txt": b"one\ntwo\n",
    "mixed.txt": b"one\r\ntwo\nthree\r",
    "ident.id": b"$Id$\n",
    "utf16.enc": "d\u00e9j\u00e0\r\n".encode("utf-16"),
}


async def test_a_restore_is_byte_exact_whatever_the_eol_config(repo: Path) -> None:
    with (repo / ".git" / "config").open("a") as config:
        config.write("[core]\n\tautocrlf = true\n\tsafecrlf = false\n\teol = crlf\n")
    write(
        repo / ".gitattributes",
        "*.txt text eol=crlf\n*.id ident\n*.enc working-tree-encoding=UTF-16\n",
    )
    for name, data in CRLF_FILES.items():
        write(repo / name, data)
    git(repo, "add", "-A")  # the user's git normalises what it stores
    git(repo, "commit", "-q", "-m", "eol")
    target = ok(await gw.repository_target(str(repo)))
    assert isinstance(target, GitTarget)
    before = files(repo)
    first = ok(await gw.checkpoint(target, "g", 1))
    for name, data in CRLF_FILES.items():
        assert git(repo, "cat-file", "blob", f"{first}:{name}") == data
    for name in CRLF_FILES:
        write(repo / name, b"x\r\n")
    second = ok(await gw.checkpoint(target, "g", 2))  # the cache index now knows every file
    (repo / "lf.txt").unlink()
    assert ok(await gw.restore(target, first)) is None
    assert files(repo) == before
    for name, data in CRLF_FILES.items():
        assert (repo / name).read_bytes() == data
    assert ok(await gw.restore(target, second)) is None
    assert all((repo / name).read_bytes() == b"x\r\n" for name in CRLF_FILES)


# -- checkpoints: retries, clean-up, changed paths ---------------------------------------------


async def test_a_retry_can_keep_the_first_checkpoint_ref(repo: Path) -> None:
    target = ok(await gw.repository_target(str(repo)))
    assert isinstance(target, GitTarget)
    first = ok(await gw.checkpoint(target, "g", 1))
    write(repo / "a.txt", "retry\n")
    retry = ok(await gw.checkpoint(target, "g", 1, update_ref=False))
    assert retry != first
    assert git(repo, "cat-file", "-t", retry) == b"commit\n"
    assert git(repo, "rev-parse", "refs/nexo/g/1").decode().strip() == first
    assert ok(await gw.diff_stat(target, first, retry)).modified == ("a.txt",)
    end = ok(await gw.checkpoint(target, "g", 1, after=True))
    assert git(repo, "rev-parse", "refs/nexo/g/1-after").decode().strip() == end
    assert b"after turn 1" in git(repo, "cat-file", "commit", end)
    assert [c.sha for c in ok(await gw.list_checkpoints(target, "g"))] == [first]
    assert ok(await gw.delete_checkpoints(target, "g")) == 2
    assert isinstance(await gw.checkpoint(target, "g", -1), WorkspaceProblem)


async def test_delete_checkpoints(repo: Path, tmp_path: Path) -> None:
    target = ok(await gw.repository_target(str(repo)))
    assert isinstance(target, GitTarget)
    for turn in (1, 2):
        ok(await gw.checkpoint(target, "g", turn))
    ok(await gw.checkpoint(target, "gg", 1))
    head = git(repo, "rev-parse", "HEAD").decode().strip()
    git(repo, "update-ref", "refs/nexo/g/x/y", head)
    assert ok(await gw.delete_checkpoints(target, "g")) == 3
    assert git(repo, "for-each-ref", "--format=%(refname)", "refs/nexo/") == b"refs/nexo/gg/1\n"
    assert ok(await gw.delete_checkpoints(target, "g")) == 0
    assert ok(await gw.list_checkpoints(target, "g")) == ()
    assert isinstance(await gw.delete_checkpoints(target, "../x"), WorkspaceProblem)
    # A worktree's checkpoints live in the repository's refs.
    wt = ok(await gw.ensure_worktree(str(repo), None, "nexo/w", str(tmp_path / "ws" / "w")))
    assert isinstance(wt, Worktree)
    ok(await gw.checkpoint(wt.target, "w", 1))
    assert git(repo, "for-each-ref", "--format=%(refname)", "refs/nexo/w/") == b"refs/nexo/w/1\n"
    assert ok(await gw.delete_checkpoints(wt.target, "w")) == 1
    assert git(repo, "for-each-ref", "refs/nexo/w/") == b""
    # Once the worktree is gone, through the repository's own refs.
    ok(await gw.checkpoint(wt.target, "w", 2))
    assert ok(await gw.remove_worktree(str(repo), wt.path)) is True
    refs = ok(await gw.repository_refs(str(repo / "dir")))
    assert isinstance(refs, GitTarget)
    assert same(refs.git_dir, repo / ".git")
    assert [c.turn for c in ok(await gw.list_checkpoints(refs, "w"))] == [2]
    assert ok(await gw.delete_checkpoints(refs, "w")) == 1
    assert isinstance(await gw.repository_refs(str(tmp_path)), WorkspaceProblem)


async def test_changed_paths(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(repo / "protected" / "secret.txt", "secret\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "protected")
    target = ok(await gw.repository_target(str(repo)))
    assert isinstance(target, GitTarget)
    sha = ok(await gw.checkpoint(target, "g", 1))
    assert ok(await gw.changed_paths(target, sha)) == ()
    write(repo / "a.txt", "changed\n")
    (repo / "b.txt").unlink()
    write(repo / "new dir" / "new.txt", "new\n")
    write(repo / "noise.log", "ignored\n")
    write(repo / "protected" / "secret.txt", "leaked\n")
    git(repo, "add", "protected")
    git(repo, "commit", "-q", "-m", "changed and committed")
    monkeypatch.chdir(repo / "dir")  # pathspecs are relative to the top, wherever we are
    everything = ("a.txt", "b.txt", "new dir/new.txt", "protected/secret.txt")
    assert ok(await gw.changed_paths(target, sha)) == everything
    assert ok(await gw.changed_paths(target, sha, ["protected"])) == ("protected/secret.txt",)
    assert ok(await gw.changed_paths(target, sha, ("*.log", "dir"))) == ()
    assert ok(await gw.changed_paths(target, sha, [":(glob)**/new.txt", "b.txt"])) == (
        "b.txt", "new dir/new.txt"
    )  # fmt: skip
    later = ok(await gw.checkpoint(target, "g", 2))
    assert ok(await gw.changed_paths(target, sha, to_sha=later)) == everything
    assert ok(await gw.changed_paths(target, later)) == ()
    problem = await gw.changed_paths(target, "--output=/tmp/x")
    assert isinstance(problem, WorkspaceProblem)


# -- worktree and branch clean-up ---------------------------------------------------------------


async def test_remove_worktree(repo: Path, tmp_path: Path) -> None:
    path = tmp_path / "ws" / "g"
    wt = ok(await gw.ensure_worktree(str(repo), None, "nexo/g", str(path)))
    assert isinstance(wt, Worktree)
    write(path / "uncommitted.txt", "work\n")
    write(path / "a.txt", "modified\n")
    assert ok(await gw.remove_worktree(str(repo), str(path))) is True
    assert not path.exists()
    assert str(path).encode() not in git(repo, "worktree", "list", "--porcelain")
    assert git(repo, "rev-parse", "--verify", "refs/heads/nexo/g")  # the branch stays
    assert ok(await gw.remove_worktree(str(repo), str(path))) is False
    # Registered, its directory gone: pruned.
    gone = ok(await gw.ensure_worktree(str(repo), None, "nexo/h", str(tmp_path / "ws" / "h")))
    assert isinstance(gone, Worktree)
    shutil.rmtree(gone.path)
    assert ok(await gw.remove_worktree(str(repo), gone.path)) is True
    assert gone.path.encode() not in git(repo, "worktree", "list", "--porcelain")
    # Not a worktree of the repository, or its main one: never deleted.
    write(tmp_path / "other" / "keep.txt", "keep\n")
    for path_ in (tmp_path / "other", repo):
        problem = await gw.remove_worktree(str(repo), str(path_))
        assert isinstance(problem, WorkspaceProblem), path_
        assert path_.exists()
    assert (tmp_path / "other" / "keep.txt").exists()
    assert isinstance(
        await gw.remove_worktree(str(tmp_path / "other"), str(path)), WorkspaceProblem
    )


async def test_branch_merged_and_delete_branch(repo: Path, tmp_path: Path) -> None:
    path = tmp_path / "ws" / "g"
    wt = ok(await gw.ensure_worktree(str(repo), None, "nexo/g", str(path)))
    assert isinstance(wt, Worktree)
    assert ok(await gw.branch_merged(str(repo), "nexo/g")) is True
    write(path / "work.txt", "work\n")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "work")
    assert ok(await gw.branch_merged(str(repo), "nexo/g")) is False
    assert ok(await gw.branch_merged(str(repo), "nexo/g", "nexo/g")) is True
    assert ok(await gw.branch_merged(str(repo), "main", "nexo/g")) is True
    assert ok(await gw.branch_merged(str(repo), "no/such")) is True  # nothing to lose
    for bad in (("bad..name",), ("nexo/g", "no-such-rev"), ("nexo/g", "--output=/tmp/x")):
        assert isinstance(await gw.branch_merged(str(repo), *bad), WorkspaceProblem), bad
    assert isinstance(await gw.branch_merged(str(tmp_path), "nexo/g"), WorkspaceProblem)
    problem = await gw.delete_branch(str(repo), "nexo/g")
    assert isinstance(problem, WorkspaceProblem)
    assert "checked out" in problem.message
    main = await gw.delete_branch(str(repo), "main")
    assert isinstance(main, WorkspaceProblem)
    assert ok(await gw.remove_worktree(str(repo), str(path))) is True
    assert ok(await gw.delete_branch(str(repo), "nexo/g")) is True
    assert git(repo, "branch", "--list", "nexo/g") == b""
    assert ok(await gw.delete_branch(str(repo), "nexo/g")) is False
    assert isinstance(await gw.delete_branch(str(repo), "a b"), WorkspaceProblem)


# -- odd repositories ---------------------------------------------------------------------------


async def test_a_sha256_repository(tmp_path: Path) -> None:
    work = tmp_path / "sha256"
    work.mkdir()
    git(work, "init", "-q", "--object-format=sha256")
    write(work / "a.txt", "a\n")
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", "init")
    target = ok(await gw.repository_target(str(work)))
    assert isinstance(target, GitTarget)
    assert target.object_format == "sha256"
    before = files(work)
    sha = ok(await gw.checkpoint(target, "g", 1))
    assert len(sha) == 64
    write(work / "a.txt", "b\n")
    assert ok(await gw.changed_paths(target, sha)) == ("a.txt",)
    assert ok(await gw.restore(target, sha)) is None
    assert files(work) == before


async def test_a_split_index_is_recorded(repo: Path) -> None:
    dirty(repo)
    git(repo, "update-index", "--split-index")
    status = git(repo, "status", "--porcelain=v2", "-z", "-uall")
    target = ok(await gw.repository_target(str(repo)))
    assert isinstance(target, GitTarget)
    sha = ok(await gw.checkpoint(target, "g", 1))
    assert len(git(repo, "rev-list", "--no-walk", "--parents", sha).split()) == 3
    git(repo, "add", "-A")
    assert ok(await gw.restore(target, sha)) is None
    assert git(repo, "status", "--porcelain=v2", "-z", "-uall") == status


async def test_special_files_in_the_git_dir_are_not_read(repo: Path) -> None:
    target = ok(await gw.repository_target(str(repo)))
    assert isinstance(target, GitTarget)
    os.mkfifo(target.cache_index_file)
    (repo / ".git" / "info").mkdir(exist_ok=True)
    exclude = repo / ".git" / "info" / "exclude"
    exclude.unlink(missing_ok=True)
    os.mkfifo(exclude)
    sha = ok(await gw.checkpoint(target, "g", 1))  # would block on reading a FIFO
    write(repo / "a.txt", "x\n")
    assert ok(await gw.restore(target, sha)) is None
    assert (repo / "a.txt").read_text() == "one\ntwo\n"


async def test_a_plain_directory_that_is_a_linked_worktree(repo: Path, tmp_path: Path) -> None:
    work = tmp_path / "linked"
    git(repo, "worktree", "add", "-q", "-b", "side", str(work))
    target = ok(await gw.repository_target(str(work)))
    assert isinstance(target, GitTarget)
    assert target.common_dir is not None
    assert same(target.common_dir, repo / ".git")
    write(Path(target.git_dir) / "commondir", f"{tmp_path / 'nowhere'}\n")
    before = files(work)
    sha = ok(await gw.checkpoint(target, "g", 1))
    assert git(repo, "rev-parse", "refs/nexo/g/1").decode().strip() == sha
    assert git(repo, "rev-parse", f"{sha}^1") == git(repo, "rev-parse", "refs/heads/side")
    write(work / "a.txt", "changed\n")
    assert ok(await gw.restore(target, sha)) is None
    assert files(work) == before
