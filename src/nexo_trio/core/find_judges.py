"""The judges of ``find``: it reads, unless it deletes, runs commands or writes files.

A deleting ``find`` (``-delete``, ``-exec rm`` or another deleter) is destructive from
outside the workspace, or of all of it (a ``find`` that tests nothing selects everything
below its starting points); ``-delete`` is judged on where it acts. The commands ``-exec``,
``-execdir``, ``-ok`` and ``-okdir`` run are judged as commands (by the walk, handed in as a
:data:`~nexo_trio.core.verdicts.WordsJudge`), ``{}`` a path found under each starting point;
``-fprint`` and its friends write files. A ``find`` following links to act on what they point
at is unknown, and so is a primary not known here. :func:`find_parts`, :func:`find_expr` and
:func:`find_starts` also judge ``find … | xargs rm`` (a rule of the pipeline).
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from nexo_trio.core.file_judges import DELETERS, PERMS
from nexo_trio.core.invocation import Arg, Cmd, Ctx, arg, names, render, unwrap
from nexo_trio.core.path_model import CWD, Comps, components, hint, locate
from nexo_trio.core.shell_syntax import Redir, Word
from nexo_trio.core.targets import OUTSIDE_KINDS, path_effect
from nexo_trio.core.verdicts import (
    EffectVerdict,
    WordsJudge,
    cmdline,
    destructive,
    is_destructive,
    read,
    unknown,
    worse,
)

__all__ = ["FindExpr", "find_expr", "find_parts", "find_starts", "judge_find"]

_FIND_ONE_ARG = names(
    "-name -iname -path -ipath -wholename -iwholename -regex -iregex -regextype -type -xtype"
    " -size -newer -anewer -cnewer -mtime -atime -ctime -mmin -amin -cmin -used -user -group"
    " -uid -gid -perm -links -inum -samefile -lname -ilname -fstype -context -maxdepth"
    " -mindepth -printf -files0-from"
)
"""find primaries that take one argument."""
# find primaries that select nothing: with only these, -delete takes everything under START.
_FIND_NON_TESTS = names(
    "-delete -depth -d -maxdepth -mindepth -xdev -mount -print -print0 -ls -noleaf -follow"
    " -ignore_readdir_race -noignore_readdir_race -daystart -prune -regextype -nowarn -warn"
    " -printf -files0-from -quit -help --help -version --version , -a -and -o -or )"
)
_FIND_TESTS = (
    names("-empty -readable -writable -executable -nouser -nogroup -true -false -not ! (")
    | _FIND_ONE_ARG
) - _FIND_NON_TESTS
_FIND_EXEC = names("-exec -execdir -ok -okdir")
_FIND_WRITES = {"-fprint": 1, "-fprint0": 1, "-fls": 1, "-fprintf": 2}


def judge_find(cmd: Cmd, redirs: Sequence[Redir], ctx: Ctx, *, run: WordsJudge) -> EffectVerdict:
    """``find``: reads, unless it deletes (``-delete``), runs commands (``-exec``…) or writes
    files (``-fprint``…); those are judged on where they act."""
    line = cmdline(cmd)
    starts, expr = find_parts(cmd)
    parsed = find_expr(expr, ctx)
    if parsed.action is not None:
        found = find_starts(starts, cmd.cwd, ctx, parsed.action, whole=not parsed.filtered)
        if found is not None:
            return found
    if parsed.unknown is not None:
        return unknown(
            "unknown-option", f"find {parsed.unknown} is not a primary the rules know: {line}", line
        )
    verdict: EffectVerdict | None = None
    for target in parsed.writes:
        verdict = worse(verdict, path_effect(ctx, cmd.cwd, target, "find -fprint", "write"))
    for primary, words in parsed.execs:
        verdict = worse(verdict, _find_exec(primary, words, starts, cmd, ctx, run=run))
    if parsed.action == "-delete":
        for start in starts:
            verdict = worse(verdict, path_effect(ctx, cmd.cwd, start, "find -delete", "prune"))
    follows = any(a.value in ("-L", "-H", "-follow") for a in cmd.args)
    if (parsed.action or parsed.execs) and follows and not is_destructive(verdict):
        verdict = worse(
            verdict,
            unknown(
                "find-follows-links",
                f"find follows links to act on what they point at: {line}",
                line,
            ),
        )
    return verdict or read("read-only-command", "find only reads", line)


def find_parts(cmd: Cmd) -> tuple[list[Arg], list[Arg]]:
    """A find's starting points and its expression."""
    args = list(cmd.args)
    i = 0
    while i < len(args) and (v := args[i].value) is not None:
        if v in ("-H", "-L", "-P") or v.startswith("-O"):
            i += 1
        elif v == "-D":
            i += 2
        else:
            break
    starts: list[Arg] = []
    while i < len(args):
        v = args[i].value
        if v is not None and (v.startswith("-") or v in ("(", "!", ")", ",")):
            break
        starts.append(args[i])
        i += 1
    if not starts:
        starts = [Arg(Word((("lit", "."),)), ".", ".")]
    return starts, args[i:]


@attrs.frozen
class FindExpr:
    """What a find expression does: its first deleting action (``-delete``, ``-exec rm``),
    the commands it runs, the files it writes, whether it tests anything, an unknown
    primary."""

    action: str | None
    execs: tuple[tuple[str, tuple[Arg, ...]], ...]
    writes: tuple[Arg, ...]
    filtered: bool
    unknown: str | None


def find_expr(expr: Sequence[Arg], ctx: Ctx) -> FindExpr:
    action: str | None = None
    execs: list[tuple[str, tuple[Arg, ...]]] = []
    writes: list[Arg] = []
    filtered = False
    j = 0
    while j < len(expr):
        v = expr[j].value
        if v is None or v in _FIND_TESTS or v.startswith("-newer"):
            filtered = True
            j += 1 if v is not None and (v in _FIND_ONE_ARG or v.startswith("-newer")) else 0
        elif v == "-delete":
            action = action or "-delete"
        elif v in _FIND_EXEC:
            k = j + 1
            while k < len(expr) and expr[k].value not in (";", "+"):
                k += 1
            words = tuple(expr[j + 1 : k])
            inner = unwrap(list(words), ctx.child())
            if isinstance(inner, Cmd) and inner.name in DELETERS | PERMS:
                action = action or f"{v} {inner.name}"
            execs.append((v, words))
            j = k
        elif v in _FIND_WRITES:
            if j + 1 < len(expr):
                writes.append(expr[j + 1])
            j += _FIND_WRITES[v]
        elif v in _FIND_ONE_ARG:
            j += 1
        elif v not in _FIND_NON_TESTS:
            return FindExpr(action, tuple(execs), tuple(writes), filtered, v)
        j += 1
    return FindExpr(action, tuple(execs), tuple(writes), filtered, None)


def find_starts(
    starts: Sequence[Arg], cwd: Comps, ctx: Ctx, action: str, *, whole: bool
) -> EffectVerdict | None:
    """Destructive starting points of a deleting find (``whole``: it selects everything)."""
    for start in starts:
        if start.value is None:
            return destructive(
                "find-delete-unresolvable",
                f"find {action} from a path the rules cannot resolve statically: {start.shown}",
                start.shown,
            )
        place = locate(start.value, cwd, ctx.world)
        kind, comps = place.kind, place.comps
        at = f"{start.shown}{hint(start.shown, comps)}"
        if kind == "root":
            return destructive(
                "find-delete-outside", f"find {action} from the root directory: {at}", start.shown
            )
        if kind in OUTSIDE_KINDS or kind in ("device", "safe_device"):
            return destructive(
                "find-delete-outside", f"find {action} outside the workspace: {at}", start.shown
            )
        if whole and kind in ("workspace", "cwd"):
            where = "the whole workspace" if kind == "workspace" else "the whole current directory"
            return destructive(
                "find-delete-workspace", f"find {action} of {where}: {at}", start.shown
            )
    return None


def _find_exec(
    primary: str,
    words: Sequence[Arg],
    starts: Sequence[Arg],
    cmd: Cmd,
    ctx: Ctx,
    *,
    run: WordsJudge,
) -> EffectVerdict | None:
    """The command a find runs, once for each start, ``{}`` a path found under it."""
    verdict: EffectVerdict | None = None
    for start in starts:
        sub_ctx = ctx.child()
        if primary in ("-execdir", "-okdir"):
            found_path = "./{}"
            sub_ctx.cwd = components(start.value, cmd.cwd) if start.value is not None else (CWD,)
        else:
            sub_ctx.cwd = cmd.cwd
            found_path = (start.value or "").rstrip("/") + "/{}"
        inner_args = [arg(_with_found(a.word, found_path), sub_ctx) for a in words]
        if start.value is None:  # `{}` is under a place that cannot be resolved
            inner_args = [
                Arg(a.word, None, a.shown) if "{}" in render(w.word, None) else a
                for a, w in zip(inner_args, words, strict=True)
            ]
        verdict = worse(verdict, run(inner_args, sub_ctx))
        if is_destructive(verdict):
            return verdict
    return verdict


def _with_found(word: Word, found: str) -> Word:
    """``word`` with ``{}`` (find's found path) replaced by ``found``."""
    return Word(
        tuple((k, t.replace("{}", found)) if k in ("lit", "q") else (k, t) for k, t in word.parts)
    )
