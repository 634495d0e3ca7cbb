"""Setting up a turn's sandbox: is bubblewrap usable here (:func:`probe_bwrap`), and the
paths a :class:`~nexo_trio.core.sandbox.SandboxPlan` names made ready
(:func:`prepare_sandbox`). Running a turn inside it is ``run_turn(..., sandbox=plan)``
(:mod:`nexo_trio.engine.confined` says how it runs and stops).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Final

import attrs
import trio

from nexo_trio.core.sandbox import (
    BWRAP,
    BWRAP_INSTALL_HINT,
    CLI_DIR,
    CLI_FILE,
    ApiProxy,
    SandboxPlan,
    bwrap_argv,
)

PROBE_TIMEOUT: Final = 10.0
_NAMESPACE_WORDS: Final = ("namespace", "uid map", "uid_map", "setting up uid", "userns")

_probes: dict[tuple[str, bool], str | None] = {}


async def probe_bwrap(
    bwrap: str = BWRAP, *, network: bool = True, timeout: float = PROBE_TIMEOUT
) -> str | None:
    """``None`` when bubblewrap works here with the flags a turn's sandbox uses, else why
    not, in words (``"bwrap is not installed (apt-get install bubblewrap)"``,
    ``"bwrap cannot create a user namespace: ..."``, ...).

    Really runs ``bwrap <the flags of a plan> -- true`` (with ``--unshare-net`` when
    ``network`` is false), bounded by ``timeout``. The answer is cached per process, per
    executable and network setting (:func:`clear_probe_cache` forgets it).
    """
    resolved = shutil.which(bwrap)
    if resolved is None:
        return f"{bwrap} is not installed ({BWRAP_INSTALL_HINT})"
    key = (resolved, network)
    if key not in _probes:
        _probes[key] = await _probe(resolved, network=network, timeout=timeout)
    return _probes[key]


def clear_probe_cache() -> None:
    """Forget every probe's answer."""
    _probes.clear()


async def _probe(bwrap: str, *, network: bool, timeout: float) -> str | None:
    with tempfile.TemporaryDirectory(prefix="nexo-bwrap-probe-") as root:
        plan = _trial_plan(root, network=network, bwrap=bwrap)
        argv = [*bwrap_argv(plan, chdir=plan.workspace), "true"]
        try:
            with trio.move_on_after(timeout) as scope:
                done = await trio.run_process(
                    argv,
                    stdin=subprocess.DEVNULL,
                    capture_stdout=True,
                    capture_stderr=True,
                    check=False,
                )
        except OSError as exc:
            return f"{bwrap} could not be run: {exc.strerror or exc}"
    if scope.cancelled_caught:
        return f"{bwrap} did not finish a trial run within {timeout:g}s"
    if done.returncode == 0:
        return None
    stderr = done.stderr.decode("utf-8", errors="replace").strip()
    detail = next(
        (line for line in stderr.splitlines() if line.startswith("bwrap: ")), stderr
    ).removeprefix("bwrap: ")
    detail = detail or f"exit code {done.returncode}"
    if any(word in detail.lower() for word in _NAMESPACE_WORDS):
        return f"bwrap cannot create a user namespace: {detail}"
    return f"bwrap does not work here: {detail}"


def _trial_plan(root: str, *, network: bool, bwrap: str) -> SandboxPlan:
    """The plan of a probe: a workspace and a scratch dir in ``root``."""
    workspace = os.path.join(root, "ws")
    scratch = os.path.join(root, "tmp")
    os.mkdir(workspace)
    os.mkdir(scratch, 0o700)
    return SandboxPlan(
        workspace=os.path.realpath(workspace),
        scratch=os.path.realpath(scratch),
        network=network,
        bwrap=bwrap,
    )


def prepare_sandbox(
    workspace: str | os.PathLike[str],
    scratch: str | os.PathLike[str],
    *,
    home: str | os.PathLike[str] | None = None,
    writable: Iterable[str | os.PathLike[str]] = (),
    readable: Iterable[str | os.PathLike[str]] = (),
    network: bool = True,
    private_tmp: bool = True,
    bwrap: str = BWRAP,
    api_proxy: ApiProxy | None = None,
) -> SandboxPlan:
    """Make the paths of a turn's sandbox ready and return its plan (real paths only).

    * ``workspace`` must be an existing directory (``FileNotFoundError`` /
      ``NotADirectoryError`` otherwise);
    * ``scratch`` is created (with its parents) and made mode 0700;
    * ``home`` (the CLI's ``HOME``): ``home/.claude`` is created (0700) and
      ``home/.claude.json`` is created holding ``{}`` when missing (mode 0600): the CLI
      takes ``{}`` as a fresh state file (an *empty* file works too but makes it warn on
      stderr, and a missing one can't be bound). Only these two are writable in the
      sandbox (see ``core.sandbox.CLI_FILE`` for what the CLI then does with the file).
      When either is a symlink, its target is bound instead (the symlink resolves to it);
    * ``api_proxy`` (with ``network=False``: no network but the API): the directory of its
      socket is created (0700); the socket itself is the turn's to create;
    * ``writable`` and ``readable`` paths that do not exist are left out (bwrap would fail
      on them). A gate socket must therefore exist already, or name its directory.

    Blocking but quick (a few ``stat``/``mkdir`` calls).
    """
    if api_proxy is not None:
        os.makedirs(os.path.dirname(api_proxy.socket), mode=0o700, exist_ok=True)
    ws = Path(os.path.realpath(workspace))
    if not ws.exists():
        raise FileNotFoundError(f"the workspace {ws} does not exist")
    if not ws.is_dir():
        raise NotADirectoryError(f"the workspace {ws} is not a directory")
    tmp = Path(scratch)
    tmp.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp.chmod(0o700)
    extra_writable = [os.path.realpath(p) for p in writable if os.path.exists(p)]
    cli_home: str | None = None
    if home is not None:
        cli_dir, cli_file = _prepare_cli_home(Path(home))
        real_home = os.path.realpath(home)
        if cli_dir == os.path.join(real_home, CLI_DIR) and cli_file == os.path.join(
            real_home, CLI_FILE
        ):
            cli_home = real_home
        else:
            extra_writable += [cli_dir, cli_file]
    # The permission server the CLI spawns is this interpreter running this package: both
    # must stay visible when the private /tmp hides them (a venv or a checkout below /tmp);
    # elsewhere the read-only root shows them already.
    hidden = [p for p in _python_paths() if private_tmp and _below(p, "/tmp")]
    seen = [*readable, *hidden]
    return SandboxPlan(
        workspace=str(ws),
        scratch=os.path.realpath(tmp),
        writable=tuple(dict.fromkeys(extra_writable)),
        cli_home=cli_home,
        readable=tuple(dict.fromkeys(os.path.realpath(p) for p in seen if os.path.exists(p))),
        network=network,
        private_tmp=private_tmp,
        bwrap=bwrap,
        api_proxy=api_proxy,
    )


def with_binary(plan: SandboxPlan, binary: str, path: str | None) -> SandboxPlan:
    """``plan`` that also shows the CLI's binary (looked up in ``path`` when it is a bare
    name) where the private /tmp would hide it: the directories it lives in, as named and
    as resolved, and the ``node_modules`` it was installed into."""
    if not plan.private_tmp:
        return plan
    found = shutil.which(binary, path=path) if os.sep not in binary else binary
    if found is None:
        return plan
    named = Path(found).absolute()
    real = named.resolve()
    dirs = [str(named.parent), str(real.parent)]
    dirs += [str(parent) for parent in real.parents if parent.name == "node_modules"][:1]
    hidden = [d for d in dirs if _below(d, "/tmp") and os.path.isdir(d)]
    if not hidden:
        return plan
    readable = tuple(dict.fromkeys([*plan.readable, *map(os.path.realpath, hidden)]))
    return attrs.evolve(plan, readable=readable)


def _below(path: str, root: str) -> bool:
    real = os.path.realpath(path)
    return real == root or real.startswith(root.rstrip("/") + "/")


def _python_paths() -> list[str]:
    """Where this interpreter and this package live."""
    package = Path(__file__).resolve().parents[2]  # .../src or .../site-packages
    return [sys.prefix, sys.base_prefix, sys.exec_prefix, str(package)]


def _prepare_cli_home(home: Path) -> tuple[str, str]:
    """Create ``home/.claude`` and ``home/.claude.json`` if missing; their real paths."""
    home.mkdir(parents=True, exist_ok=True)
    cli_dir = home / CLI_DIR
    cli_dir.mkdir(mode=0o700, exist_ok=True)
    cli_file = home / CLI_FILE
    if not cli_file.exists():
        with contextlib.suppress(FileExistsError):  # another turn made it meanwhile
            fd = os.open(cli_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write("{}")
    return os.path.realpath(cli_dir), os.path.realpath(cli_file)
