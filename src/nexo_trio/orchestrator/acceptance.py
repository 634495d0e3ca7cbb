"""Acceptance: run a goal's criteria against its workspace and give the verdict.

The verdict types are sans-IO (:mod:`nexo_trio.core.acceptance`); this is the trio shell.
The criteria run one after another in the order written (``mode="sequential"``, the
default), stopping at the first failing required check: the ones after it are reported as
not run (``skipped``, no failures: they prove nothing). ``mode="parallel"`` runs them all at
once. A check never breaks the evaluation: whatever goes wrong inside one (a timeout, a bad
regex, a verifier that raises, a judge that cannot be reached) becomes that check's failed
result, with the reason in its message. Only cancellation of the caller propagates, and it
leaves no process of a check behind.

Nothing a check starts outlives it. With ``evaluate(..., sandbox=plan)`` every command (a
``shell`` check, the ``git`` of the built-ins, a custom verifier's :meth:`CheckContext.run`)
runs in bubblewrap, in a PID namespace of its own that ends with the command, under the same
file system rules as a turn: only the workspace, the scratch dir and the plan's writable
paths can be written (a check is no way around the turn's confinement). Without a plan each
runs under a subreaper helper that kills whatever the command left, even a daemon in a
session of its own (:mod:`nexo_trio.engine.capture` says how).

No file access blocks the event loop: ``file_match`` resolves, opens and reads in a worker
thread, bounded by :data:`FILE_TIMEOUT`, and refuses what is not a regular file (a FIFO
would block an open or a read forever, a device never ends).

Kinds:

- ``shell``: ``/bin/sh -c COMMAND`` in the workspace, with a timeout; passes when it exits
  with the expected code and, if set, its stdout matches the regex.
- ``file_match``: a workspace file contains a regex. Paths leaving the workspace (absolute,
  ``..``, symlinks pointing out) are refused, and so is anything but a regular file.
- ``custom``: a named async verifier of a :class:`VerifierRegistry`; built-ins ``git_clean``
  and ``no_paths_touched``.
- ``llm_judge``: a language model judges a rubric against workspace files (read like
  ``file_match`` reads, each capped) and a command's output, through the Messages API with
  the client of the LLM decider (:func:`nexo_trio.gate.llm.client_from_settings`, the
  config's ``permission.llm``). Its strict JSON answer is the verdict, its reasoning the
  evidence; no key, no SDK, a timeout, an HTTP error or a malformed answer fail the check.
"""

from __future__ import annotations

import os
import re
import signal
import stat
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, TypeVar, assert_never, overload

import attrs
import trio

from nexo_trio.core.acceptance import (
    EVIDENCE_CHARS,
    JUDGE_ANSWER_SHAPE,
    NOT_RUN,
    CheckResult,
    Verdict,
    parse_judgement,
    tail,
)
from nexo_trio.core.checkpoints import GitTarget, WorkspaceProblem
from nexo_trio.core.goal import Criterion, CustomCheck, FileMatchCheck, LlmJudgeCheck, ShellCheck
from nexo_trio.core.sandbox import SandboxPlan
from nexo_trio.core.settings import ACCEPTANCE_MODES, AcceptanceMode, LlmSettings
from nexo_trio.engine.capture import Captured, run_captured
from nexo_trio.gate.llm import LlmFailure, ask, client_from_settings
from nexo_trio.orchestrator.git_workspace import changed_paths

__all__ = [
    "CheckContext",
    "CustomResult",
    "Verifier",
    "VerifierRegistry",
    "default_registry",
    "evaluate",
    "git_clean",
    "no_paths_touched",
]

FILE_READ_CAP: Final = 16 * 1024 * 1024
"""``file_match`` reads at most this much of a file (its beginning)."""
FILE_TIMEOUT: Final = 60.0
"""How long a ``file_match`` may take to resolve, open and read its file (a hung network
file system must not hang the goal)."""
FILE_THREADS: Final = 8
"""Worker threads ``file_match`` reads may hold at once (per ``trio.run``): a hung file
system strands at most these, never the threads the rest of the program needs."""
STDOUT_CAP: Final = 16 * 1024 * 1024
"""A ``shell`` check's stdout kept for its pattern (its end)."""
GIT_TIMEOUT: Final = 60.0
JUDGE_FILE_CAP: Final = 64 * 1024
"""Bytes of each of an ``llm_judge``'s files shown to the judge (its beginning)."""
JUDGE_MATERIAL_CAP: Final = 256 * 1024
"""Characters of material (files and output) an ``llm_judge`` shows in all."""
JUDGE_OUTPUT_CAP: Final = 64 * 1024
"""Characters of an ``llm_judge`` command's output shown to the judge (its end)."""
JUDGE_MAX_TOKENS: Final = 1024
JUDGE_SYSTEM_PROMPT: Final = f"""\
You are the acceptance judge of an autonomous coding agent's work. You are given a rubric \
and material from the agent's workspace: files, a command's output. Decide whether the work \
meets the rubric, from what you are shown only: what you are not shown is not met.

Answer with one JSON object and nothing else:
{JUDGE_ANSWER_SHAPE}
"reasoning" says, in a few sentences, what you saw that decided it."""

_GIT_REDIRECTS: Final = (
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_COMMON_DIR",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_NAMESPACE",
    "GIT_PREFIX",
)
"""Variables that would point git at another repository than the workspace's (set, say,
when the orchestrator itself runs from a git hook)."""


# ----------------------------------------------------------------------------- custom checks


@attrs.frozen
class Baseline:
    """The first checkpoint of a goal and the target holding it."""

    target: GitTarget
    sha: str


@attrs.frozen
class CheckContext:
    """What a custom verifier is given."""

    workspace: Path
    args: dict[str, Any]
    goal_id: str
    sandbox: SandboxPlan | None = None
    """The evaluation's confinement (``None``: the subreaper fallback); :meth:`run` uses it."""
    baseline: Baseline | None = None
    """The goal's first checkpoint (checkpointed workspaces): what the goal changed is the
    difference from it, commits included."""

    async def run(
        self, argv: Sequence[str], *, timeout: float, env: Mapping[str, str] | None = None
    ) -> Captured:
        """Run a command in the workspace the way the evaluation runs its checks: confined
        like them, and leaving nothing running (see :func:`run_captured`)."""
        return await run_captured(
            argv, cwd=self.workspace, timeout=timeout, env=env, sandbox=self.sandbox
        )


@attrs.frozen
class CustomResult:
    """What a custom verifier answers."""

    passed: bool
    message: str = ""
    evidence: str = ""


Verifier = Callable[[CheckContext], Awaitable[CustomResult]]
"""A custom check: an async function of the context."""

_V = TypeVar("_V", bound=Verifier)


class VerifierRegistry:
    """Named custom verifiers. Registering a name again replaces the earlier verifier."""

    def __init__(self, verifiers: Mapping[str, Verifier] | None = None) -> None:
        self._verifiers: dict[str, Verifier] = {}
        for name, fn in (verifiers or {}).items():
            self.register(name, fn)

    @overload
    def register(self, name: str, fn: _V) -> _V: ...

    @overload
    def register(self, name: str, fn: None = None) -> Callable[[_V], _V]: ...

    def register(self, name: str, fn: _V | None = None) -> _V | Callable[[_V], _V]:
        """Register ``fn`` under ``name``; without ``fn``, a decorator doing that."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"a verifier name must be a non-empty string, got {name!r}")

        def add(verifier: _V) -> _V:
            if not callable(verifier):
                raise TypeError(f"verifier {name!r} is not callable: {verifier!r}")
            self._verifiers[name] = verifier
            return verifier

        return add if fn is None else add(fn)

    def get(self, name: str) -> Verifier | None:
        """The verifier named ``name``, if any."""
        return self._verifiers.get(name)

    @property
    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._verifiers)

    def __contains__(self, name: object) -> bool:
        return name in self._verifiers


def default_registry() -> VerifierRegistry:
    """A new registry holding the built-in verifiers ``git_clean`` and ``no_paths_touched``."""
    return VerifierRegistry({"git_clean": git_clean, "no_paths_touched": no_paths_touched})


# ----------------------------------------------------------------------------- evaluation


async def evaluate(
    criteria: Sequence[Criterion],
    *,
    workspace: Path,
    registry: VerifierRegistry | None = None,
    goal_id: str = "",
    sandbox: SandboxPlan | None = None,
    baseline: Baseline | None = None,
    mode: AcceptanceMode = "sequential",
    llm: LlmSettings | None = None,
    environ: Mapping[str, str] | None = None,
) -> Verdict:
    """Evaluate the criteria in ``workspace``.

    ``mode="sequential"`` (the config's default): one after another, in order, stopping at
    the first failing required check; each later one is a failed result marked ``skipped``
    with the message :data:`~nexo_trio.core.acceptance.NOT_RUN` (not among the verdict's
    failures). A failing check that is not required does not stop the run.
    ``mode="parallel"``: all at once.

    Results come in criterion order (``index`` is the position). A failing or broken check
    is a failed result, never an exception; cancellation propagates. ``registry`` defaults
    to :func:`default_registry`.

    ``llm`` (default: ``LlmSettings()``) is the client of ``llm_judge`` checks, the config's
    ``permission.llm``; its API key is read from ``environ`` (default: ``os.environ``).

    ``sandbox`` confines every command of the evaluation (the plan of the goal's turns does:
    its ``api_proxy`` is dropped, so with ``network=False`` a check has no network at all);
    its paths must exist (``engine.sandbox.prepare_sandbox``). ``None``: each command runs
    under the subreaper helper instead. Either way nothing a check starts outlives it.

    ``baseline`` (the goal's first checkpoint) lets ``git_clean`` and ``no_paths_touched``
    judge the goal's own changes, commits included.
    """
    if mode not in ACCEPTANCE_MODES:
        raise ValueError(f"mode must be one of {', '.join(ACCEPTANCE_MODES)}, got {mode!r}")
    if registry is None:
        registry = default_registry()
    judge = _Judge(llm or LlmSettings(), os.environ if environ is None else environ)
    results: list[CheckResult | None] = [None] * len(criteria)

    async def run(index: int, criterion: Criterion) -> CheckResult:
        result = await _run_check(
            index,
            criterion,
            workspace=workspace,
            registry=registry,
            goal_id=goal_id,
            sandbox=sandbox,
            baseline=baseline,
            judge=judge,
        )
        results[index] = result
        return result

    if mode == "parallel":
        async with trio.open_nursery() as nursery:
            for index, criterion in enumerate(criteria):
                nursery.start_soon(run, index, criterion)
    else:
        stopped = False
        for index, criterion in enumerate(criteria):
            if stopped:
                results[index] = CheckResult(
                    index=index,
                    label=criterion.title,
                    passed=False,
                    required=_required(criterion),
                    message=NOT_RUN,
                    skipped=True,
                )
                continue
            result = await run(index, criterion)
            stopped = not result.passed and result.required
    done = tuple(r for r in results if r is not None)
    assert len(done) == len(criteria)  # each task stores its result or raises
    return Verdict(results=done)


@attrs.frozen
class _Outcome:
    passed: bool
    message: str
    evidence: str = ""


@attrs.frozen
class _Judge:
    """What an ``llm_judge`` check asks through: the client settings and the environment
    its API key is read from."""

    settings: LlmSettings
    environ: Mapping[str, str]


def _required(criterion: Criterion) -> bool:
    return criterion.required if isinstance(criterion, FileMatchCheck | LlmJudgeCheck) else True


async def _run_check(
    index: int,
    criterion: Criterion,
    *,
    workspace: Path,
    registry: VerifierRegistry,
    goal_id: str,
    sandbox: SandboxPlan | None,
    baseline: Baseline | None,
    judge: _Judge,
) -> CheckResult:
    started = trio.current_time()
    required = _required(criterion)
    context = CheckContext(
        workspace=workspace, args={}, goal_id=goal_id, sandbox=sandbox, baseline=baseline
    )
    try:
        outcome = await _check(criterion, context, registry, judge)
    except Exception as exc:
        # A broken check is a failed check, not a broken evaluation. (trio.Cancelled is a
        # BaseException, so cancellation still propagates.)
        outcome = _Outcome(False, f"check failed to run: {_describe_exception(exc)}")
    return CheckResult(
        index=index,
        label=criterion.title,
        passed=outcome.passed,
        required=required,
        message=outcome.message,
        evidence=outcome.evidence,
        duration_s=trio.current_time() - started,
    )


async def _check(
    criterion: Criterion, context: CheckContext, registry: VerifierRegistry, judge: _Judge
) -> _Outcome:
    if isinstance(criterion, ShellCheck):
        return await _shell(criterion, context.workspace, context.sandbox)
    if isinstance(criterion, FileMatchCheck):
        return await _file_match(criterion, context.workspace)
    if isinstance(criterion, CustomCheck):
        return await _custom(criterion, context, registry)
    if isinstance(criterion, LlmJudgeCheck):
        return await _llm_judge(criterion, context, judge)
    assert_never(criterion)


# ----------------------------------------------------------------------------- shell


async def _shell(check: ShellCheck, workspace: Path, sandbox: SandboxPlan | None) -> _Outcome:
    # The check validated its pattern when it was built.
    regex = re.compile(check.stdout_pattern) if check.stdout_pattern is not None else None
    try:
        captured = await run_captured(
            ["/bin/sh", "-c", check.command],
            cwd=workspace,
            timeout=check.timeout_s,
            stdout_cap=STDOUT_CAP,
            sandbox=sandbox,
        )
    except OSError as exc:
        return _Outcome(False, f"could not run the command in {workspace}: {exc}")
    evidence = _output_evidence(captured)
    if captured.timed_out:
        return _Outcome(False, f"timed out after {check.timeout_s:g}s", evidence)
    problems: list[str] = []
    notes: list[str] = []
    if captured.exit_code != check.expect_exit:
        problems.append(f"{_describe_exit(captured.exit_code)} (expected {check.expect_exit})")
    else:
        notes.append(f"exit code {captured.exit_code}")
    if regex is not None:
        if await _search(regex, captured.stdout_text):
            notes.append(f"stdout matches /{regex.pattern}/")
        else:
            problem = f"stdout does not match /{regex.pattern}/"
            if captured.stdout_truncated:
                problem += f" (only the last {_mib(STDOUT_CAP)} of stdout were kept)"
            problems.append(problem)
    if problems:
        return _Outcome(False, "; ".join(problems), evidence)
    return _Outcome(True, ", ".join(notes), evidence)


def _output_evidence(captured: Captured) -> str:
    """The tails of stdout and stderr, within about ``EVIDENCE_CHARS``."""
    # Decode only the ends: a tail needs at most 4 bytes per character.
    stdout = captured.stdout[-EVIDENCE_CHARS * 4 :].decode("utf-8", errors="replace")
    stderr = captured.stderr[-EVIDENCE_CHARS * 4 :].decode("utf-8", errors="replace")
    if not stderr.strip():
        return tail(stdout)
    if not stdout.strip():
        return "[stderr]\n" + tail(stderr)
    half = EVIDENCE_CHARS // 2
    return f"[stdout]\n{tail(stdout, half)}\n[stderr]\n{tail(stderr, half)}"


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "no exit status (the process could not be reaped)"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


# ----------------------------------------------------------------------------- file_match


async def _file_match(check: FileMatchCheck, workspace: Path) -> _Outcome:
    """Resolve, open and read (capped) in a worker thread, bounded; then search."""
    regex = re.compile(check.pattern)  # validated when the check was built
    outcome = await _read_workspace_file(check.path, workspace, FILE_READ_CAP + 1)
    if isinstance(outcome, _Outcome):
        return outcome
    data = outcome
    truncated = len(data) > FILE_READ_CAP
    text = data[:FILE_READ_CAP].decode("utf-8", errors="replace")
    if await _search(regex, text):
        return _Outcome(True, f"{check.path} matches /{check.pattern}/")
    message = f"{check.path} does not match /{check.pattern}/"
    if truncated:
        message += f" (only its first {_mib(FILE_READ_CAP)} were read)"
    return _Outcome(False, message, tail(text))


async def _read_workspace_file(path: str, workspace: Path, limit: int) -> bytes | _Outcome:
    """At most ``limit`` bytes of the workspace file ``path``, or why not: read in a worker
    thread, bounded by :data:`FILE_TIMEOUT`; only regular files inside the workspace."""
    if os.path.isabs(path):
        return _Outcome(False, f"absolute path {path} refused: paths are relative to the workspace")
    read = _FileRead(path, workspace, limit)
    outcome: bytes | _Outcome | None = None
    with trio.move_on_after(FILE_TIMEOUT):
        # abandon_on_cancel: a thread stuck in the kernel (a hung NFS server) cannot be
        # interrupted. On the timeout, or a cancellation (Ctrl-C), it is abandoned: left to
        # finish on its own, its result dropped and its file closed when the call returns,
        # so neither the goal nor the shutdown waits for it. It keeps one of FILE_THREADS.
        outcome = await trio.to_thread.run_sync(
            read.run, abandon_on_cancel=True, limiter=_file_limiter()
        )
    if outcome is None:
        return _Outcome(
            False,
            f"cannot read {path}: no answer from the file system within "
            f"{FILE_TIMEOUT:g}s (a hung network file system?): gave up",
        )
    return outcome


_FILE_LIMITER: Final = trio.lowlevel.RunVar[trio.CapacityLimiter]("nexo_file_match_limiter")


def _file_limiter() -> trio.CapacityLimiter:
    """The threads of ``file_match`` reads: their own, so a hung file system (threads that
    never return) cannot starve the default limiter the rest of the program uses."""
    try:
        return _FILE_LIMITER.get()
    except LookupError:
        limiter = trio.CapacityLimiter(FILE_THREADS)
        _FILE_LIMITER.set(limiter)
        return limiter


_NOT_REGULAR: Final = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


@attrs.frozen
class _FileRead:
    """The blocking part of a ``file_match``, for a worker thread: the bytes read (at most
    ``limit``), or why there are none."""

    path: str
    workspace: Path
    limit: int = FILE_READ_CAP + 1

    def run(self) -> bytes | _Outcome:
        try:
            root = self.workspace.resolve()
            # ``resolve`` follows symlinks, so a link pointing out of the workspace is caught.
            target = (root / self.path).resolve()
        except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop (Python < 3.13)
            return _Outcome(False, f"cannot resolve {self.path}: {exc}")
        if not target.is_relative_to(root):
            return _Outcome(False, f"path {self.path} resolves outside the workspace: refused")
        try:
            # Look before opening: opening a device or a FIFO can have effects of its own.
            refused = self._refuse(os.stat(target).st_mode)
            if refused is not None:
                return refused
            # Non-blocking, so not even a FIFO swapped in meanwhile blocks the open; not
            # following a symlink swapped in for the resolved name; no controlling tty.
            flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_NOCTTY | os.O_CLOEXEC
            fd = os.open(target, flags)
        except FileNotFoundError:
            return _Outcome(False, f"no such file: {self.path}")
        except OSError as exc:
            return _Outcome(False, f"cannot read {self.path}: {exc.strerror or exc}")
        try:
            # And look at what was opened: the name may have been swapped since the stat.
            refused = self._refuse(os.fstat(fd).st_mode)
            if refused is not None:
                return refused
            return _read_up_to(fd, self.limit)
        except OSError as exc:
            return _Outcome(False, f"cannot read {self.path}: {exc.strerror or exc}")
        finally:
            os.close(fd)

    def _refuse(self, mode: int) -> _Outcome | None:
        if stat.S_ISREG(mode):
            return None
        if stat.S_ISDIR(mode):
            return _Outcome(False, f"{self.path} is a directory, not a file")
        kind = next((name for test, name in _NOT_REGULAR if test(mode)), "not a file")
        return _Outcome(False, f"{self.path} is {kind}, not a regular file: refused")


def _read_up_to(fd: int, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        chunk = os.read(fd, min(limit - size, 1024 * 1024))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


# ----------------------------------------------------------------------------- custom


async def _custom(
    check: CustomCheck, context: CheckContext, registry: VerifierRegistry
) -> _Outcome:
    verifier = registry.get(check.name)
    if verifier is None:
        known = ", ".join(registry.names) or "none"
        return _Outcome(False, f"unknown custom check {check.name!r} (known: {known})")
    context = attrs.evolve(context, args=dict(check.args))
    try:
        result: object = await verifier(context)  # checked: verifiers are user code
    except Exception as exc:
        return _Outcome(False, f"verifier {check.name!r} raised {_describe_exception(exc)}")
    if not isinstance(result, CustomResult):
        return _Outcome(
            False,
            f"verifier {check.name!r} returned {type(result).__name__}, not a CustomResult",
        )
    return _Outcome(result.passed, result.message, tail(result.evidence))


async def git_clean(ctx: CheckContext) -> CustomResult:
    """Built-in ``git_clean``: the workspace has no uncommitted changes.

    Runs ``git status --porcelain -- .`` in the workspace: passes when it is empty. The
    ``.`` limits it to the workspace when the workspace is a subdirectory of a repository.
    Untracked files count as changes; ignored files don't.

    With a :class:`Baseline` (a checkpointed workspace) only the goal's changes count: a
    path that is uncommitted now and differs from the goal's first checkpoint. What was
    uncommitted before the goal began and is untouched is the user's, not the goal's.
    """
    status = await _git_status(ctx, ["."])
    if isinstance(status, CustomResult):
        return status
    lines = status.splitlines()
    if ctx.baseline is not None and lines:
        changed = await changed_paths(ctx.baseline.target, ctx.baseline.sha)
        if isinstance(changed, WorkspaceProblem):
            return CustomResult(False, f"cannot compare with the first checkpoint: {changed}")
        prefix = await _workspace_prefix(ctx)
        if isinstance(prefix, CustomResult):
            return prefix
        goals = set(changed)
        lines = [
            line
            for line in lines
            if any(p.removeprefix(prefix) in goals for p in _status_paths(line))
        ]
    if not lines:
        return CustomResult(True, "working tree clean")
    shown = "".join(f"{line}\n" for line in lines)
    return CustomResult(False, f"{len(lines)} uncommitted change(s) in the workspace", shown)


async def no_paths_touched(ctx: CheckContext) -> CustomResult:
    """Built-in ``no_paths_touched``: none of ``args["paths"]`` has uncommitted changes.

    ``paths`` are git pathspecs relative to the workspace (files, directories or globs).
    Passes when ``git status --porcelain -- PATHS`` is empty; a change already committed
    is not seen. With a :class:`Baseline` (a checkpointed workspace) a path counts as
    touched when it differs from the goal's first checkpoint, committed or not.
    """
    paths = ctx.args.get("paths")
    if paths is None:
        return CustomResult(False, "no_paths_touched needs args.paths: a list of paths")
    problem = f"no_paths_touched: args.paths must be a list of non-empty strings, got {paths!r}"
    if not isinstance(paths, list):
        return CustomResult(False, problem)
    if not paths:
        return CustomResult(False, "no_paths_touched: args.paths is empty")
    if not all(isinstance(p, str) and p for p in paths):
        return CustomResult(False, problem)
    if ctx.baseline is not None:
        changed = await changed_paths(ctx.baseline.target, ctx.baseline.sha, paths)
        if isinstance(changed, WorkspaceProblem):
            return CustomResult(False, f"cannot compare with the first checkpoint: {changed}")
        if not changed:
            return CustomResult(True, f"none of {len(paths)} protected path(s) touched")
        return CustomResult(
            False,
            f"{len(changed)} protected path(s) touched since the goal began",
            "".join(f"{path}\n" for path in changed),
        )
    status = await _git_status(ctx, paths)
    if isinstance(status, CustomResult):
        return status
    touched = status.splitlines()
    if not touched:
        return CustomResult(True, f"none of {len(paths)} protected path(s) touched")
    return CustomResult(False, f"{len(touched)} protected path(s) touched", status)


async def _git_status(ctx: CheckContext, pathspecs: Sequence[str]) -> str | CustomResult:
    """The porcelain status limited to ``pathspecs``, or the failure explaining why not."""
    workspace = ctx.workspace
    env = {k: v for k, v in os.environ.items() if k not in _GIT_REDIRECTS}
    # Messages in English, so "not a git repository" can be recognised; and no optional
    # locks, so a check never takes the index lock from under a git command of Claude's.
    env.update(LC_ALL="C", GIT_OPTIONAL_LOCKS="0")

    async def git(*args: str) -> Captured:
        return await ctx.run(["git", *args], timeout=GIT_TIMEOUT, env=env)

    try:
        probe = await git("rev-parse", "--is-inside-work-tree")
    except FileNotFoundError as exc:
        if exc.filename == "git":
            return CustomResult(False, "git is not installed (not found on PATH)")
        return CustomResult(False, f"cannot run git in {workspace}: {exc}")
    except OSError as exc:
        return CustomResult(False, f"cannot run git in {workspace}: {exc}")
    if probe.timed_out:
        return CustomResult(False, f"git rev-parse timed out after {GIT_TIMEOUT:g}s")
    if probe.exit_code != 0 or probe.stdout_text.strip() != "true":
        stderr = probe.stderr_text.strip()
        if "not a git repository" in stderr or probe.exit_code == 0:
            return CustomResult(False, f"workspace {workspace} is not a git repository")
        first_line = stderr.splitlines()[0] if stderr else _describe_exit(probe.exit_code)
        return CustomResult(False, f"git cannot use the workspace: {first_line}", tail(stderr))
    # quotePath: every unusual name comes C-quoted, whatever the user's config (see _unquote).
    status = await git(
        "-c", "core.quotePath=true", "status", "--porcelain", "--untracked-files=all", "--",
        *pathspecs,
    )  # fmt: skip
    if status.timed_out:
        return CustomResult(False, f"git status timed out after {GIT_TIMEOUT:g}s")
    if status.exit_code != 0:
        stderr = status.stderr_text.strip()
        return CustomResult(
            False, f"git status failed: {_describe_exit(status.exit_code)}", tail(stderr)
        )
    return status.stdout_text


def _status_paths(line: str) -> list[str]:
    """The paths of one ``git status --porcelain`` line (both of a rename), unquoted. A
    nested repository shows as a directory (``vendor/lib/``); a checkpoint has it as the
    path ``vendor/lib``: the slash is dropped."""
    rest = line[3:]
    parts = rest.split(" -> ") if " -> " in rest else [rest]
    return [_unquote(p).rstrip("/") for p in parts]


def _unquote(path: str) -> str:
    """A path as git prints it, C-quoted when it holds special bytes, back to ``str``."""
    if not (len(path) >= 2 and path.startswith('"') and path.endswith('"')):
        return path
    raw = path[1:-1].encode("latin-1", "backslashreplace").decode("unicode_escape")
    return os.fsdecode(raw.encode("latin-1"))


async def _workspace_prefix(ctx: CheckContext) -> str | CustomResult:
    """The workspace's path inside its repository (``git rev-parse --show-prefix``): status
    paths are the repository's, checkpoint paths the workspace's."""
    env = {k: v for k, v in os.environ.items() if k not in _GIT_REDIRECTS}
    env.update(LC_ALL="C", GIT_OPTIONAL_LOCKS="0")
    done = await ctx.run(["git", "rev-parse", "--show-prefix"], timeout=GIT_TIMEOUT, env=env)
    if done.timed_out or done.exit_code != 0:
        return CustomResult(False, "git rev-parse --show-prefix failed in the workspace")
    return done.stdout_text.strip()


# ----------------------------------------------------------------------------- llm_judge


async def _llm_judge(check: LlmJudgeCheck, context: CheckContext, judge: _Judge) -> _Outcome:
    """Gather the material, ask the judge (one bounded request), read its strict answer."""
    try:
        # First: without a key or the SDK, no command is worth running.
        client = client_from_settings(
            judge.settings, judge.environ, model=check.model, user="an llm_judge check"
        )
    except (ValueError, ImportError) as exc:
        return _Outcome(False, str(exc))
    async with client:
        material = await _judge_material(check, context)
        if isinstance(material, _Outcome):
            return material
        answer = await ask(
            client,
            system=JUDGE_SYSTEM_PROMPT,
            prompt=material,
            max_tokens=JUDGE_MAX_TOKENS,
            timeout=judge.settings.timeout_s,
            user="the LLM judge",
        )
    model = client.model
    if isinstance(answer, LlmFailure):
        return _Outcome(False, f"no verdict from the LLM judge ({model}): {answer.reason}")
    judgement = parse_judgement(answer)
    if isinstance(judgement, str):
        return _Outcome(
            False,
            f"the LLM judge ({model}) did not answer {JUDGE_ANSWER_SHAPE}: {judgement}",
            tail(answer),
        )
    verdict = "met" if judgement.passed else "not met"
    message = f"the LLM judge ({model}) found the rubric {verdict}"
    return _Outcome(judgement.passed, message, tail(judgement.reasoning))


async def _judge_material(check: LlmJudgeCheck, context: CheckContext) -> str | _Outcome:
    """The judge's prompt: the rubric, then each file (capped), then the command's output;
    an :class:`_Outcome` when the command cannot be run or times out."""
    parts = [f"Rubric:\n{check.rubric.strip()}"]
    room = JUDGE_MATERIAL_CAP
    for path in check.paths:
        if room <= 0:
            parts.append(f"File {path}: not shown (the material shown is capped).")
            continue
        cap = min(JUDGE_FILE_CAP, room)
        read = await _read_workspace_file(path, context.workspace, cap + 1)
        if isinstance(read, _Outcome):
            parts.append(f"File {path}: not shown ({read.message}).")
            continue
        text = read[:cap].decode("utf-8", errors="replace")
        room -= len(text)
        cut = f", only its first {len(text)} characters" if len(read) > cap else ""
        parts.append(f"File {path}{cut}:\n<<<\n{text}\n>>>")
    if check.command is not None:
        try:
            captured = await run_captured(
                ["/bin/sh", "-c", check.command],
                cwd=context.workspace,
                timeout=check.timeout_s,
                stdout_cap=JUDGE_OUTPUT_CAP,
                sandbox=context.sandbox,
            )
        except OSError as exc:
            return _Outcome(False, f"could not run the command in {context.workspace}: {exc}")
        if captured.timed_out:
            return _Outcome(
                False,
                f"the command timed out after {check.timeout_s:g}s: not judged",
                _output_evidence(captured),
            )
        output = _judge_output(captured, max(room, EVIDENCE_CHARS))
        parts.append(
            f"Command `{check.command}` ended with {_describe_exit(captured.exit_code)}; "
            f"its output:\n<<<\n{output}\n>>>"
        )
    parts.append(f"Judge the work against the rubric. Answer with {JUDGE_ANSWER_SHAPE} only.")
    return "\n\n".join(parts)


def _judge_output(captured: Captured, room: int) -> str:
    """The ends of a command's stdout and stderr, within ``room`` characters in all."""
    cap = min(JUDGE_OUTPUT_CAP, room)
    stdout, stderr = captured.stdout_text, captured.stderr_text
    if not stderr.strip():
        return tail(stdout, cap)
    if not stdout.strip():
        return "[stderr]\n" + tail(stderr, cap)
    return f"[stdout]\n{tail(stdout, cap // 2)}\n[stderr]\n{tail(stderr, cap // 2)}"


# ----------------------------------------------------------------------------- helpers


async def _search(regex: re.Pattern[str], text: str) -> bool:
    # In the event loop: ``re`` holds the GIL for the whole search, so a worker thread would
    # not free the loop anyway; the text is capped.
    await trio.lowlevel.checkpoint()
    return regex.search(text) is not None


def _describe_exception(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _mib(n: int) -> str:
    return f"{n / (1024 * 1024):g} MiB"
