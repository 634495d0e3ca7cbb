"""Git for tests on real repositories: a call with a test identity, and a snapshot of
everything of a user's checkout a goal must leave as it was."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path
from typing import Any

from nexo_trio.core.checkpoints import git_env

ME = ("-c", "user.name=Tester", "-c", "user.email=tester@example.com")


def git(cwd: Path, *args: str) -> str:
    """Run git for a test (an identity, no ``GIT_*`` redirect); its stdout."""
    done = subprocess.run(
        ["git", *ME, "-C", str(cwd), *args],
        capture_output=True,
        check=True,
        env=git_env(os.environ),
        timeout=30,
    )
    return done.stdout.decode()


def checkout_snapshot(repo: Path) -> dict[str, Any]:
    """Every byte of the user's checkout a goal must not touch: its files (``.git`` aside),
    index, HEAD, config, the ``main`` branch, its tags and its status."""
    found: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(repo):
        dirnames[:] = [d for d in dirnames if d != ".git"]
        for name in filenames:
            full = Path(dirpath, name)
            found[str(full.relative_to(repo))] = hashlib.sha256(full.read_bytes()).hexdigest()
    dot_git = repo / ".git"
    return {
        "files": found,
        "index": hashlib.sha256((dot_git / "index").read_bytes()).hexdigest(),
        "HEAD": (dot_git / "HEAD").read_text(),
        "config": (dot_git / "config").read_text(),
        "main": git(repo, "rev-parse", "refs/heads/main"),
        "tags": git(repo, "tag", "--list"),
        "status": git(repo, "status", "--porcelain", "--untracked-files=all"),
    }
