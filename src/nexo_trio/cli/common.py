"""What the commands share: user errors (exit 2), loading files, the state directory."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import attrs
import click

from nexo_trio.core.goal import BUILTIN_CHECKS, Goal
from nexo_trio.core.remotes import is_git_url
from nexo_trio.core.settings import Config
from nexo_trio.store.batched import StoreError
from nexo_trio.store.location import StoreLocation, StoreLocationError
from nexo_trio.wire.files import FileFormatError, load_config, load_goal

EXIT_DONE = 0
EXIT_NOT_DONE = 1
EXIT_USAGE = 2
EXIT_STATE_UNWRITABLE = 3
"""The state dir could not be written for good: the outcome is printed, not all recorded."""
EXIT_CANCELLED = 130


class UserError(click.ClickException):
    """A mistake of the user's (bad file, bad option): a message and exit code 2."""

    exit_code = EXIT_USAGE


STATE_DIR_ERRORS = (OSError, sqlite3.Error, StoreError)
"""What opening the state directory (its SQLite ledger, the gate's socket) or the store
(PostgreSQL: :class:`StoreError` naming the URL) can raise."""

STORE_META = "nexo_trio.store"
"""Where ``--store`` (or ``NEXO_STORE``) leaves its value in the click context."""


def state_dir_error(state_dir: Path, exc: BaseException) -> UserError:
    """A state directory that can't be used (not a directory, unwritable, not our database)."""
    if isinstance(exc, OSError) and exc.strerror:
        what = f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    else:
        what = str(exc) or type(exc).__name__
    return UserError(f"cannot use the state dir {state_dir}: {what}")


def store_error(location: StoreLocation, exc: BaseException) -> UserError:
    """A store that can't be used: the state dir's file (as :func:`state_dir_error`), or a
    PostgreSQL database (unreachable, refused, not ours)."""
    path = location.path
    if path is not None:
        return state_dir_error(path.parent, exc)
    what = str(exc) or type(exc).__name__
    prefix = f"{location}: "
    return UserError(f"cannot use the store {location}: {what.removeprefix(prefix)}")


def read_config(path: Path | None, *, state_dir: Path | None = None) -> Config:
    """The config from ``path`` (defaults when None), with ``--state-dir`` applied, and
    ``--store`` / ``NEXO_STORE`` when the command has them (checked: a bad value is a
    user error)."""
    try:
        config = load_config(path)
    except FileFormatError as exc:
        raise UserError(str(exc)) from None
    if state_dir is not None:
        config = attrs.evolve(config, state_dir=str(state_dir))
    context = click.get_current_context(silent=True)
    given = None if context is None else context.find_root().meta.get(STORE_META)
    if given is not None:
        config = attrs.evolve(config, store=given)
    store_location(config)  # refuse a bad value now, before anything runs
    return config


def store_location(config: Config) -> StoreLocation:
    """The store the config names (see :mod:`nexo_trio.store.location`)."""
    try:
        return StoreLocation.of(config.store, Path(config.state_dir))
    except StoreLocationError as exc:
        raise UserError(str(exc)) from None


def _remember_store(ctx: click.Context, _: click.Parameter, value: str | None) -> None:
    if value is not None:
        if not value.strip():
            raise click.BadParameter("is empty (a SQLite file path or a postgresql:// URL)")
        ctx.find_root().meta[STORE_META] = value


def store_option(fn: click.decorators.FC) -> click.decorators.FC:
    """``--store`` (also ``NEXO_STORE``): the store, over the config's ``store:``."""
    return click.option(
        "--store",
        envvar="NEXO_STORE",
        metavar="PATH|URL",
        expose_value=False,
        is_eager=True,
        callback=_remember_store,
        help="The store: a SQLite file or postgresql://... (default: the config's store, "
        "else nexo.db in the state dir; also NEXO_STORE).",
    )(fn)


def read_goal(path: Path) -> Goal:
    """The goal from ``path``; a relative workspace (or worktree repo) is taken relative to
    the goal file (a worktree repo that is a URL stays as given).

    Its custom checks must be built-in ones (the CLI has no others)."""
    try:
        goal = load_goal(path, known_checks=BUILTIN_CHECKS)
    except FileFormatError as exc:
        raise UserError(str(exc)) from None
    here = path.resolve().parent
    tree = goal.worktree
    # Whether they exist is checked with the rest (Orchestrator.check_goal): a workspace
    # that would be the state dir is refused as that, even before the state dir exists.
    if tree is not None and is_git_url(tree.repo):
        return goal  # cloned by the run
    if tree is not None:
        repo = _beside(here, tree.repo)
        if repo.exists() and not repo.is_dir():
            raise UserError(f"{path}: workspace.repo: {repo} exists and is not a directory")
        return attrs.evolve(goal, workspace=attrs.evolve(tree, repo=str(repo)))
    if isinstance(goal.workspace, str):
        workspace = _beside(here, goal.workspace)
        if workspace.exists() and not workspace.is_dir():
            raise UserError(f"{path}: workspace: {workspace} exists and is not a directory")
        goal = attrs.evolve(goal, workspace=str(workspace))
    return goal


def _beside(here: Path, given: str) -> Path:
    """``given`` (``~`` expanded) made absolute from ``here``, the goal file's directory."""
    path = Path(given).expanduser()
    return path if path.is_absolute() else (here / path).resolve()


def state_dir_option(fn: click.decorators.FC) -> click.decorators.FC:
    """``--state-dir``, ``--store`` and ``--config``, for the commands that read the state
    directory."""
    fn = store_option(fn)
    fn = click.option(
        "--state-dir",
        type=click.Path(file_okay=False, path_type=Path),
        help="The state directory (default: the config's state_dir, else ./.nexo).",
    )(fn)
    return click.option(
        "--config",
        "config_file",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help="Config file (YAML).",
    )(fn)
