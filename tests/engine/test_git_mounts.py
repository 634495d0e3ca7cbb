"""The binds of a goal's git worktree (``engine/git_mounts.py``), under the real git and the
real bubblewrap: the turn commits on its branch and changes nothing else of the user's
repository, whether its refs are loose or packed and whether the branch has a directory
of its own under ``refs/heads/`` or not.

The tests that run bwrap skip, saying how to get it, where bubblewrap is missing or does
not work; all of them skip without git.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path

import attrs
import pytest
import trio

from nexo_trio.core.sandbox import SandboxPlan, bwrap_argv
from nexo_trio.engine.git_mounts import worktree_mounts
from tests.engine.test_sandbox import require_bwrap

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")

IDENTITY = {
    "GIT_AUTHOR_NAME": "Nexo Test",
    "GIT_AUTHOR_EMAIL": "nexo@example.invalid",
    "GIT_COMMITTER_NAME": "Nexo Test",
    "GIT_COMMITTER_EMAIL": "nexo@example.invalid",
}
ESCAPED = "ESCAPED: "


def git(cwd: Path, *args: str, home: Path) -> str:
    """Run git in ``cwd`` (no system or user config but ``home``'s); its stdout."""
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(home),
        "GIT_CONFIG_NOSYSTEM": "1",
        "LC_ALL": "C",
        **IDENTITY,
    }
    done = subprocess.run(
        ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


@attrs.frozen
class Repo:
    """A user's checkout and a goal's worktree of it, on ``branch``."""

    root: Path
    branch: str
    sibling: str
    """Another branch in the same directory under ``refs/heads/``."""

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def checkout(self) -> Path:
        return self.root / "user"

    @property
    def worktree(self) -> Path:
        return self.root / "ws" / self.branch.rsplit("/", 1)[-1]

    @property
    def common(self) -> str:
        return os.path.realpath(self.checkout / ".git")

    @property
    def admin(self) -> str:
        return os.path.realpath(self.git("rev-parse", "--absolute-git-dir", cwd=self.worktree))

    def git(self, *args: str, cwd: Path | None = None) -> str:
        return git(cwd or self.checkout, *args, home=self.home)

    def refs(self) -> str:
        """Every ref of the repository, with its value."""
        return self.git("for-each-ref", "--format=%(objectname) %(refname)")


def make_repo(root: Path, branch: str, *, packed: bool) -> Repo:
    """A checkout with a commit on main, an untracked and a modified file, a branch
    ``nexo/other``, a tag, a hidden ref, and a worktree on ``branch``; with ``packed``,
    every ref lives only in ``packed-refs`` (as after a ``git gc``)."""
    sibling = "nexo/other" if "/" in branch else "main"
    repo = Repo(root, branch, sibling)
    repo.home.mkdir(parents=True)
    repo.checkout.mkdir(parents=True)
    repo.git("init", "-q", "-b", "main")
    (repo.checkout / "tracked.txt").write_text("one\n")
    repo.git("add", "tracked.txt")
    repo.git("commit", "-q", "-m", "first")
    repo.git("branch", "nexo/other")
    repo.git("tag", "v1")
    repo.git("update-ref", "refs/nexo/g1/0", "HEAD")
    (repo.checkout / "untracked.txt").write_text("mine\n")
    (repo.checkout / "tracked.txt").write_text("one\ntwo, not staged\n")
    repo.git("worktree", "add", "-q", "-b", branch, str(repo.worktree), "main")
    if packed:
        repo.git("pack-refs", "--all")
    return repo


def snapshot(repo: Repo) -> dict[str, bytes | None]:
    """Every file (its bytes) and directory (``None``) of the user's checkout, with its
    ``.git``, but for what a commit on the branch may change: new objects, the worktree's
    own state, the branch's ref and reflog."""
    own_ref = f".git/refs/heads/{repo.branch}"
    allowed_files = {own_ref, f".git/logs/refs/heads/{repo.branch}"}
    admin = os.path.relpath(repo.admin, repo.checkout)
    kept_in_admin = {f"{admin}/{name}" for name in ("commondir", "gitdir", "config.worktree")}
    found: dict[str, bytes | None] = {}
    for top, dirs, files in os.walk(repo.checkout):
        for name in dirs:
            rel = os.path.relpath(os.path.join(top, name), repo.checkout)
            found[rel] = None
        for name in files:
            rel = os.path.relpath(os.path.join(top, name), repo.checkout)
            found[rel] = Path(top, name).read_bytes()

    def allowed(rel: str) -> bool:
        if rel in allowed_files:
            return True
        if rel.startswith((".git/objects/pack", ".git/objects/info")):
            return False
        if rel.startswith(".git/objects/"):
            return True
        return rel.startswith(admin + "/") and rel not in kept_in_admin

    return {rel: data for rel, data in found.items() if not allowed(rel)}


def attacks(repo: Repo) -> list[str]:
    """Shell commands, run in the worktree, each of which would change the user's
    repository beyond the branch."""
    c = shlex.quote(repo.common)
    user = shlex.quote(str(repo.checkout))
    sibling = shlex.quote(f"{repo.common}/refs/heads/{repo.sibling}")
    commondir = shlex.quote(f"{repo.admin}/commondir")
    return [
        "git branch -f main HEAD",
        "git update-ref refs/heads/main HEAD",
        "git update-ref refs/heads/nexo/other HEAD",
        f"git update-ref refs/heads/{repo.sibling} HEAD",
        f"git update-ref -d refs/heads/{repo.sibling}",
        "git update-ref refs/nexo/g1/1 HEAD",
        "git update-ref refs/nexo/g1/0 HEAD",
        "git tag t2",
        "git tag -d v1",
        "git config user.name evil",
        "git pack-refs --all",
        f"printf '#!/bin/sh\\n' > {c}/hooks/post-commit",
        f"git -C {user} add -A",
        f"git -C {user} reset --hard",
        f"echo changed >> {user}/tracked.txt",
        f"rm {user}/untracked.txt",
        f"echo /elsewhere > {commondir}",
        f"echo /elsewhere > {shlex.quote(repo.admin)}/gitdir",
        # Without git: a new file renamed over another branch's ref, or the ref removed and
        # written again (where it is packed, a loose ref written beside it wins).
        f"git rev-parse HEAD > {sibling}.new; mv -fT {sibling}.new {sibling}; r=$?;"
        f" rm -f {sibling}.new; exit $r",
        f"rm -rf {sibling} && git rev-parse HEAD > {sibling}",
        f"rm -rf {c}/refs/heads/nexo/other && git rev-parse HEAD > {c}/refs/heads/nexo/other",
        f"echo oops >> {c}/logs/refs/heads/{repo.sibling}",
        f"echo {c}/elsewhere > {c}/objects/info/alternates",
        f"rm -rf {c}/objects/pack",
        f"touch {c}/objects/pack/new.pack",
        f"echo 'ref: refs/heads/nexo/other' > {c}/HEAD",
        f"echo > {c}/packed-refs",
        # Outside the branch's directory, not even a new branch (inside it, one can be: see
        # the module's limits).
        *(["git branch elsewhere/new"] if "/" in repo.branch else []),
    ]


def script(repo: Repo, attempts: list[str]) -> str:
    """Commit (exit 97 if that fails, 98 if reading the history does), then try each of
    ``attempts``, printing those that succeed."""
    lines = [
        "echo new > new.txt && echo changed >> tracked.txt",
        "git add -A && git commit -q -m 'the turn' || exit 97",
        "git log --oneline > /dev/null && git diff HEAD~1 --stat > /dev/null || exit 98",
        "git status --short > /dev/null || exit 98",
    ]
    lines += [
        f"if sh -c {shlex.quote(a)} > /dev/null 2>&1; then {say(ESCAPED + a)}; fi" for a in attempts
    ]
    return "\n".join(lines)


def say(line: str) -> str:
    """A shell command that prints ``line`` as it is (``echo`` may expand backslashes)."""
    return f"printf '%s\\n' {shlex.quote(line)}"


async def run_confined(
    repo: Repo, plan: SandboxPlan, command: str
) -> subprocess.CompletedProcess[bytes]:
    """``sh -c command`` in the worktree under bwrap, with a git identity."""
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(repo.home),
        "GIT_CONFIG_NOSYSTEM": "1",
        "LC_ALL": "C",
        **IDENTITY,
        **plan.env,
    }
    argv = [*bwrap_argv(plan, chdir=str(repo.worktree)), "sh", "-c", command]
    with trio.fail_after(30):
        return await trio.run_process(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )


def plan_for(
    repo: Repo,
    writable: tuple[str, ...] = (),
    readonly: tuple[str, ...] = (),
    *,
    unprotected: bool = False,
) -> SandboxPlan:
    """The turn's plan; the checkout and the home are shown read-only under the private
    /tmp (where the test's files live) so that the attempts fail for the right reason.
    ``unprotected``: the whole checkout, with its ``.git``, is writable instead."""
    scratch = repo.root / "scratch"
    scratch.mkdir(exist_ok=True)
    checkout = os.path.realpath(repo.checkout)
    return SandboxPlan(
        workspace=os.path.realpath(repo.worktree),
        scratch=os.path.realpath(scratch),
        writable=(*writable, checkout) if unprotected else writable,
        readable=(checkout, os.path.realpath(repo.home), *readonly),
    )


@pytest.mark.parametrize("packed", [False, True], ids=["loose", "packed"])
@pytest.mark.parametrize("branch", ["nexo/g1", "fix-login"])
async def test_a_confined_turn_commits_on_its_branch_and_changes_nothing_else(
    tmp_path: Path, branch: str, packed: bool
) -> None:
    await require_bwrap()
    repo = make_repo(tmp_path, branch, packed=packed)
    refs = repo.refs()
    writable, readonly = await trio.to_thread.run_sync(
        worktree_mounts, repo.common, repo.admin, branch
    )
    assert repo.refs() == refs  # the placeholders for packed refs are invisible to git
    before = snapshot(repo)
    base = repo.git("rev-parse", "main")

    done = await run_confined(repo, plan_for(repo, writable, readonly), script(repo, attacks(repo)))

    stdout, stderr = done.stdout.decode(), done.stderr.decode()
    assert done.returncode == 0, stderr
    assert [line for line in stdout.splitlines() if line.startswith(ESCAPED)] == []
    # The branch moved to the turn's commit, on top of main; nothing else did.
    head = repo.git("rev-parse", branch)
    assert head != base
    assert repo.git("rev-parse", f"{branch}~1") == base
    assert repo.git("show", "-s", "--format=%s", branch) == "the turn"
    assert repo.git("show", f"{branch}:new.txt") == "new"
    assert repo.git("reflog", "-1", "--format=%gs", branch) == "commit: the turn"
    assert repo.refs() == refs.replace(f"{base} refs/heads/{branch}", f"{head} refs/heads/{branch}")
    after = snapshot(repo)
    assert sorted(set(after) ^ set(before)) == []
    assert [rel for rel in before if before[rel] != after[rel]] == []
    assert repo.git("status", "--porcelain") == "M tracked.txt\n?? untracked.txt"
    repo.git("fsck", "--no-progress")


@pytest.mark.parametrize("branch", ["nexo/g1", "fix-login"])
async def test_the_attempts_succeed_without_the_mounts(tmp_path: Path, branch: str) -> None:
    # Each attempt of the test above is a real attack: with the whole checkout writable
    # (no protection), each gets through (each in a repository of its own: some break it),
    # but for git's own refusal to force a branch checked out elsewhere.
    await require_bwrap()
    count = len(attacks(make_repo(tmp_path / "count", branch, packed=False)))
    held: list[str] = []
    for i in range(count):
        repo = make_repo(tmp_path / str(i), branch, packed=False)
        attempt = attacks(repo)[i]
        plan = plan_for(repo, unprotected=True)
        done = await run_confined(repo, plan, script(repo, [attempt]))
        assert done.returncode == 0, done.stderr.decode()
        if done.stdout.decode().strip() != ESCAPED + attempt:
            held.append(attempt)
    assert held == ["git branch -f main HEAD"]


async def test_a_commit_lands_where_git_left_no_reflog_and_no_ref_directory(
    tmp_path: Path,
) -> None:
    # The branch's directories under refs/ and logs/ are made when missing (git pack-refs
    # prunes an empty refs/heads/nexo/; a repository may log no ref updates).
    await require_bwrap()
    repo = without_branch_directories(make_repo(tmp_path, "nexo/g1", packed=True))
    writable, readonly = await trio.to_thread.run_sync(
        worktree_mounts, repo.common, repo.admin, "nexo/g1"
    )
    done = await run_confined(repo, plan_for(repo, writable, readonly), script(repo, attacks(repo)))
    assert done.returncode == 0, done.stderr.decode()
    assert ESCAPED not in done.stdout.decode()
    assert repo.git("show", "-s", "--format=%s", "nexo/g1") == "the turn"
    assert repo.git("rev-parse", "nexo/other") == repo.git("rev-parse", "main")


def without_branch_directories(repo: Repo) -> Repo:
    """``repo`` (its refs packed) without ``refs/heads/nexo/`` and ``logs/refs/heads/nexo/``."""
    shutil.rmtree(Path(repo.common, "logs/refs/heads/nexo"))
    assert not Path(repo.common, "refs/heads/nexo").exists()  # pruned by git pack-refs
    return repo


# ----------------------------------------------------------------------------- the binds


def test_the_binds_of_a_branch_in_a_directory(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, "nexo/g1", packed=False)
    repo.git("branch", "nexo/team/x")
    writable, readonly = worktree_mounts(repo.common, repo.admin, "nexo/g1")
    c, admin = repo.common, repo.admin
    assert writable == tuple(
        sorted((f"{c}/objects", admin, f"{c}/refs/heads/nexo", f"{c}/logs/refs/heads/nexo"))
    )
    assert readonly == tuple(
        sorted(
            (
                c,
                f"{c}/objects/info",
                f"{c}/objects/pack",
                f"{admin}/commondir",
                f"{admin}/gitdir",
                f"{admin}/config.worktree",
                f"{c}/refs/heads/nexo/other",
                f"{c}/refs/heads/nexo/team",
                f"{c}/logs/refs/heads/nexo/other",
                f"{c}/logs/refs/heads/nexo/team",
            )
        )
    )
    assert Path(admin, "config.worktree").read_bytes() == b""


def test_a_branch_only_packed_gets_a_placeholder(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, "fix-login", packed=True)
    repo.git("update-ref", "refs/heads/deep/down/x", "HEAD")
    repo.git("pack-refs", "--all")
    _, readonly = worktree_mounts(repo.common, repo.admin, "fix-login")
    heads = Path(repo.common, "refs/heads")
    assert sorted(p.name for p in heads.iterdir()) == ["deep", "main", "nexo"]
    assert all(p.is_dir() and not any(p.iterdir()) for p in heads.iterdir())
    for name in ("main", "nexo", "deep"):
        assert str(heads / name) in readonly
        assert f"{repo.common}/logs/refs/heads/{name}" in readonly
    assert not (heads / "fix-login").exists()  # the turn's commit writes it
    assert str(heads / "fix-login") not in readonly


@pytest.mark.parametrize(
    "branch", ["", "/abs", "a//b", "../x", "a/./b", "a/..", "x.lock", "a/.hidden", "a\\b"]
)
def test_a_branch_name_that_is_no_safe_path_is_refused(tmp_path: Path, branch: str) -> None:
    repo = make_repo(tmp_path, "nexo/g1", packed=False)
    with pytest.raises(ValueError, match="not a valid branch name"):
        worktree_mounts(repo.common, repo.admin, branch)


def test_paths_that_are_no_worktree_of_the_repository_are_refused(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, "nexo/g1", packed=False)
    c, admin = repo.common, repo.admin
    with pytest.raises(ValueError, match="absolute real path"):
        worktree_mounts(os.path.relpath(c), admin, "nexo/g1")
    with pytest.raises(ValueError, match="absolute real path"):
        worktree_mounts(c + "/.", admin, "nexo/g1")
    with pytest.raises(ValueError, match="not a worktree of"):
        worktree_mounts(c, c + "/refs", "nexo/g1")
    other = make_repo(tmp_path / "other", "nexo/g1", packed=False)
    with pytest.raises(ValueError, match="is not a worktree of"):
        worktree_mounts(c, other.admin, "nexo/g1")
    Path(admin, "commondir").write_text(other.common + "\n")
    with pytest.raises(ValueError, match="commondir names"):
        worktree_mounts(c, admin, "nexo/g1")


def test_a_reftable_repository_is_refused(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, "nexo/g1", packed=False)
    Path(repo.common, "reftable").mkdir()
    with pytest.raises(ValueError, match="reftable"):
        worktree_mounts(repo.common, repo.admin, "nexo/g1")


def test_the_checkpoints_cache_index_is_read_only_once_it_exists(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, "nexo/g1", packed=False)
    _, before = worktree_mounts(repo.common, repo.admin, "nexo/g1")
    assert f"{repo.admin}/nexo-trio.index" not in before
    Path(repo.admin, "nexo-trio.index").write_bytes(b"DIRC")
    _, after = worktree_mounts(repo.common, repo.admin, "nexo/g1")
    assert f"{repo.admin}/nexo-trio.index" in after
