"""Per-turn checkpoints of a 10 000-file workspace, beside the floor of git doing the work.

A repository of :data:`FILES` committed files in 100 directories; before each round
:data:`TOUCHED` files change and one is created, as a turn would. Each round runs every
variant once, interleaved (so drift on a shared machine hits all alike), and the figures are
medians over :data:`ROUNDS` rounds:

* ``checkpoint`` (repository): :func:`nexo_trio.orchestrator.git_workspace.checkpoint` on the
  repository itself: scratch index seeded from the real one, ``add -A``, ``write-tree``, an
  index commit, the checkpoint commit, ``update-ref``;
* ``checkpoint`` (shadow): the same workspace checkpointed by a private shadow git dir;
* after the turn: the ``-after`` checkpoint and the turn's diff stat against the checkpoint
  taken before it (what ``goal_run`` does when a turn ends); a turn costs both rows;
* floor: ``GIT_INDEX_FILE=<copy of the index> git add -A && git write-tree``, from a shell.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import trio

from benchmarks.suite import Row, Stat, markdown
from nexo_trio.core.checkpoints import GitTarget, WorkspaceProblem, git_env
from nexo_trio.orchestrator import git_workspace as gw

FILES = 10_000
TOUCHED = 10
ROUNDS = 11


def _git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=b", "-c", "user.email=b@b", "-C", str(repo), *args],
        check=True,
        capture_output=True,
        env=git_env(os.environ),
        timeout=300,
    )


def _make_repo(root: Path) -> Path:
    repo = root / "repo"
    for i in range(FILES):
        path = repo / f"d{i % 100:02d}" / f"f{i:05d}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"file {i}\n" * 4)
    _git(repo, "init", "-q")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "init")
    return repo


def _turn(repo: Path, round_: int) -> None:
    for i in range(TOUCHED):
        n = (round_ * TOUCHED + i) * 37 % FILES
        (repo / f"d{n % 100:02d}" / f"f{n:05d}.txt").write_text(f"round {round_}\n")
    (repo / f"new-{round_}.txt").write_text("new\n")


def _floor_ms(repo: Path, scratch: Path) -> float:
    index = scratch / "floor-index"
    start = time.perf_counter()
    shutil.copyfile(repo / ".git" / "index", index)
    env = git_env(os.environ, index_file=str(index))
    subprocess.run(
        ["sh", "-c", 'git -C "$1" add -A && git -C "$1" write-tree', "sh", str(repo)],
        check=True,
        capture_output=True,
        env=env,
        timeout=300,
    )
    return (time.perf_counter() - start) * 1000


async def _checkpoint_ms(target: GitTarget, turn: int) -> tuple[float, str]:
    start = time.perf_counter()
    sha = await gw.checkpoint(target, "bench", turn)
    elapsed = (time.perf_counter() - start) * 1000
    assert not isinstance(sha, WorkspaceProblem), sha
    return elapsed, sha


async def _after_ms(target: GitTarget, turn: int, before: str) -> float:
    start = time.perf_counter()
    after = await gw.checkpoint(target, "bench", turn, after=True)
    assert not isinstance(after, WorkspaceProblem), after
    stat = await gw.diff_stat(target, before, after)
    elapsed = (time.perf_counter() - start) * 1000
    assert not isinstance(stat, WorkspaceProblem), stat
    return elapsed


def rows(quick: bool = False) -> list[Row]:
    """Checkpoint rows (ms): medians of :data:`ROUNDS` interleaved rounds."""
    rounds = 2 if quick else ROUNDS
    with tempfile.TemporaryDirectory(prefix="nxb-ckpt-") as tmp:
        root = Path(tmp)
        repo = _make_repo(root)

        async def main() -> dict[str, list[float]]:
            repo_target = await gw.repository_target(str(repo))
            shadow = await gw.ensure_shadow(str(root / "shadow"), str(repo))
            assert isinstance(repo_target, GitTarget)
            assert isinstance(shadow, GitTarget)
            await _checkpoint_ms(repo_target, 0)  # warm the page cache
            await _checkpoint_ms(shadow, 0)  # and the shadow's first full hash
            times: dict[str, list[float]] = {"repo": [], "shadow": [], "after": [], "floor": []}
            _, before = await _checkpoint_ms(repo_target, 0)
            for round_ in range(1, rounds + 1):
                _turn(repo, round_)
                times["after"].append(await _after_ms(repo_target, round_ - 1, before))
                elapsed, before = await _checkpoint_ms(repo_target, round_)
                times["repo"].append(elapsed)
                times["shadow"].append((await _checkpoint_ms(shadow, round_))[0])
                times["floor"].append(_floor_ms(repo, root))
            return times

        times = trio.run(main)
    floor = Stat.of(times["floor"])
    note = f"{FILES} files; floor: git add -A && git write-tree on a copy of the index"
    return [
        Row(
            "workspace",
            "checkpoint before a turn (repository)",
            "ms",
            Stat.of(times["repo"]),
            floor=floor,
            better="lower",
            note=note,
        ),
        Row(
            "workspace",
            "checkpoint before a turn (shadow git dir)",
            "ms",
            Stat.of(times["shadow"]),
            floor=floor,
            better="lower",
        ),
        Row(
            "workspace",
            "after a turn: -after checkpoint + diff stat",
            "ms",
            Stat.of(times["after"]),
            floor=floor,
            better="lower",
        ),
    ]


if __name__ == "__main__":
    print(markdown(rows()))
