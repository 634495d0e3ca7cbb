"""Sessions: ``nox`` runs lint, typecheck, tests and e2e; ``nox -s bench`` runs the benchmarks,
``nox -s fuzz`` the fuzz tests with 130 000 examples, ``nox -s deep`` the goal machine's
properties with more examples."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import nox

nox.options.sessions = ["lint", "typecheck", "tests", "e2e"]
nox.options.default_venv_backend = "venv"

PYPROJECT = nox.project.load_toml("pyproject.toml")

CLAUDE_CODE_PACKAGE = "@anthropic-ai/claude-code"
CLAUDE_CODE_VERSION = "2.1.332"
"""The Claude Code CLI the end-to-end tests run (DESIGN.md §4 was verified on it)."""
CLAUDE_CODE_DIR = Path(__file__).resolve().parent / ".cache" / "claude-code"
"""Where ``nox -s e2e`` installs it with npm (git-ignored)."""
CLAUDE_BIN = CLAUDE_CODE_DIR / "node_modules" / ".bin" / "claude"


def _group(name: str) -> list[str]:
    return list(nox.project.dependency_groups(PYPROJECT, name))


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite (warnings are errors, every test has a timeout). Installs bubblewrap
    for the sandbox tests when it is missing, as root (see :func:`_ensure_bubblewrap`)."""
    session.install("-e", ".", *_group("test"))
    _ensure_bubblewrap(session)
    _ensure_postgresql(session)
    # The real-CLI tests are the e2e session's. Exit code 5 means "no tests collected": not
    # a failure of the suite.
    session.run("pytest", "-m", "not real_claude", *session.posargs, success_codes=[0, 5])


def _installed_claude_code() -> str | None:
    """The version of the Claude Code CLI in CLAUDE_CODE_DIR, if its binary is there."""
    manifest = CLAUDE_CODE_DIR / "node_modules" / "@anthropic-ai" / "claude-code" / "package.json"
    try:
        version = json.loads(manifest.read_text())["version"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return str(version) if CLAUDE_BIN.exists() else None


def _ensure_bubblewrap(session: nox.Session) -> None:
    """Install bubblewrap (the turn sandbox) with apt-get when it is missing and we can:
    as root, with apt-get there. A failure is logged, not fatal: the sandbox tests then
    skip, saying how to get it."""
    if shutil.which("bwrap") is None:
        _apt_install(session, "bubblewrap", "bwrap is not installed", "the sandbox tests")


def _ensure_postgresql(session: nox.Session) -> None:
    """Install the PostgreSQL server (the PostgreSQL store's tests start a throwaway one, see
    tests/pg_server.py) with apt-get when it is missing and we can, as for bubblewrap."""
    debian = any(Path("/usr/lib/postgresql").glob("*/bin/initdb"))  # not on PATH there
    if os.environ.get("NEXO_PG_BIN") or debian or shutil.which("initdb") is not None:
        return
    _apt_install(
        session,
        "postgresql-15",
        "initdb is not installed",
        "the PostgreSQL tests",
        hint="apt-get install postgresql-15, or set NEXO_PG_BIN",
    )


def _apt_install(
    session: nox.Session, package: str, missing: str, tests: str, *, hint: str | None = None
) -> None:
    """``apt-get install -y PACKAGE`` (with ``apt-get update`` first if that fails), as
    root with apt-get there; otherwise, or if it fails, a warning that ``tests`` skip."""
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        session.warn(f"{missing}: {tests} will skip ({hint or f'apt-get install {package}'})")
        return
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    install = ("apt-get", "install", "-y", package)
    try:
        session.run(*install, external=True, env=env)
    except nox.command.CommandFailed:
        try:  # a fresh machine may not have the package lists yet
            session.run("apt-get", "update", external=True, env=env)
            session.run(*install, external=True, env=env)
        except nox.command.CommandFailed:
            session.warn(f"apt-get install {package} failed: {tests} will skip")


@nox.session
def e2e(session: nox.Session) -> None:
    """End-to-end tests against the real Claude Code CLI, offline (a scripted Messages API).

    Installs the pinned CLI with npm into .cache/claude-code (once), points the tests at it
    with NEXO_CLAUDE_BIN and runs the tests marked real_claude. A NEXO_CLAUDE_BIN already
    set is used as it is (nothing installed). Without npm the tests skip, saying why.
    Installs bubblewrap (the turn sandbox) with apt-get when it is missing, as root; without
    it the sandbox tests skip, saying how to get it.
    """
    session.install("-e", ".", *_group("test"))
    _ensure_bubblewrap(session)
    _ensure_postgresql(session)  # a goal moving hosts on a shared store
    env: dict[str, str] = {}
    wanted = f"{CLAUDE_CODE_PACKAGE}@{CLAUDE_CODE_VERSION}"
    if os.environ.get("NEXO_CLAUDE_BIN"):
        session.log(f"using NEXO_CLAUDE_BIN={os.environ['NEXO_CLAUDE_BIN']}")
    elif _installed_claude_code() == CLAUDE_CODE_VERSION:
        session.log(f"{wanted} is already installed in {CLAUDE_CODE_DIR}")
        env["NEXO_CLAUDE_BIN"] = str(CLAUDE_BIN)
    elif shutil.which("npm") is None:
        session.warn(
            f"npm is not installed, so the real Claude Code CLI can't be: the real_claude "
            f"tests will skip. Install Node.js 18+ with npm (https://nodejs.org, or your "
            f"package manager: apt install npm), then run `nox -s e2e` again, or install "
            f"{wanted} yourself and set NEXO_CLAUDE_BIN to its claude binary."
        )
    else:
        CLAUDE_CODE_DIR.mkdir(parents=True, exist_ok=True)
        session.run(
            "npm",
            "install",
            "--no-audit",
            "--no-fund",
            "--prefix",
            str(CLAUDE_CODE_DIR),
            wanted,
            external=True,
        )
        env["NEXO_CLAUDE_BIN"] = str(CLAUDE_BIN)
    session.run("pytest", "-m", "real_claude", *session.posargs, env=env, success_codes=[0, 5])


@nox.session
def lint(session: nox.Session) -> None:
    """ruff: lint and format check."""
    session.install(*_group("lint"))
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict over src, tests, benchmarks and this file."""
    session.install("-e", ".", *_group("typecheck"))
    session.run("mypy", *session.posargs)


@nox.session(default=False)
def deep(session: nox.Session) -> None:
    """The goal machine's properties with many more examples than the default suite runs."""
    session.install("-e", ".", *_group("test"))
    session.run(
        "pytest",
        "tests/core/test_goal_properties.py",
        "--timeout=3600",
        *session.posargs,
        env={"NEXO_GOAL_EXAMPLES": os.environ.get("NEXO_GOAL_EXAMPLES", "3000")},
    )


FUZZ_EXAMPLES = "130000"
"""``nox -s fuzz``'s default NEXO_FUZZ_EXAMPLES, some 10 minutes on 2 cores: 106 600 of them
are byte streams and JSON frames through the framer, the parser and the reducer (see
tests/fuzz/profile.py); the default suite runs the same tests with 2 000."""


@nox.session(default=False)
def fuzz(session: nox.Session) -> None:
    """The fuzz tests with 130 000 examples (NEXO_FUZZ_EXAMPLES), in one process.

    Arbitrary byte streams and JSON frames through the turn's framer, parser and reducer;
    garbage at the MCP permission server (its protocol and a real process) and at the gate's
    socket server. One process (``-p no:xdist``): the examples run are counted in-process
    and printed at the end. Each test runs for minutes: an hour's timeout per test."""
    session.install("-e", ".", *_group("test"))
    session.run(
        "pytest",
        "tests/fuzz",
        "-p",
        "no:xdist",
        "--timeout=3600",
        *session.posargs,
        env={"NEXO_FUZZ_EXAMPLES": os.environ.get("NEXO_FUZZ_EXAMPLES", FUZZ_EXAMPLES)},
    )


@nox.session(default=False)
def faults(session: nox.Session) -> None:
    """The fault matrix (tests/faults) in full: every engine fault run NEXO_FAULT_RUNS (20)
    times in one process, the descriptor-leak rounds as many times. The default tests
    session runs it with 2 runs per fault."""
    session.install("-e", ".", *_group("test"))
    _ensure_bubblewrap(session)
    runs = os.environ.get("NEXO_FAULT_RUNS", "20")
    session.run("pytest", "tests/faults", *session.posargs, env={"NEXO_FAULT_RUNS": runs})


@nox.session(default=False)
def bench(session: nox.Session) -> None:
    """Benchmarks, each printed next to the floor it is measured against."""
    session.install("-e", ".", *_group("bench"))
    session.run("python", "benchmarks/run.py", *session.posargs)
