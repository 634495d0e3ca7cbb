"""The judges: what a Bash command does, as an effect (:func:`command_effect`).

How Bash commands are read: the text is parsed into simple commands
(:mod:`~nexo_trio.core.shell_syntax`), each of which is brace-expanded, unwrapped from its
prefixes (``sudo``, ``env``, ``xargs``…), resolved against the variables and the virtual
current directory (:mod:`~nexo_trio.core.invocation`) and judged by name; every path it
writes, deletes or moves is placed with :mod:`~nexo_trio.core.path_model` (symlinks resolved
by the resolver given). Command strings run by ``sh -c``/``bash -c``/…, ``eval``, ``su -c``,
``trap``, ``env -S``, ``watch``, wrappers' ``-c`` and shells fed a heredoc are analysed
recursively; command substitutions (in words, redirections, heredocs, arithmetic, ``for``
and ``case`` words) are analysed as commands (they run). Quoted text is data, not a command:
``echo "rm -rf /"`` only reads. Fork bombs are spotted in the raw text
(:mod:`~nexo_trio.core.fork_bomb`).

Every simple command gets an effect, and a compound command the worst of its parts
(``destructive`` > ``unknown`` > ``workspace`` > ``read``; the first part with the worst
effect names the reason):

* ``read``: commands on the read allow-list (:data:`READ_ONLY_COMMANDS`, and ``sort``,
  ``uniq``, ``tree``, ``less``, ``rg``, ``fd``, ``file``, ``date``, ``hostname``, ``man``,
  ``history``, ``hash``, ``sed`` and ``find`` without their writing or program-running
  options, ``awk`` whose program cannot run commands or write files), ``git`` subcommands
  that only read (:data:`GIT_READ`), shell state (``cd``, ``export`` of harmless names,
  ``set``, ``read``…), version queries (``python3 --version``), writes to ``/dev/null`` and
  its friends.
* ``workspace``: the write allow-list (``mkdir``, ``touch``, ``cp``, ``mv``, ``ln``,
  ``install``, ``rm``, ``rmdir``, ``unlink``, ``tee``, ``truncate``, ``shred``, ``dd``,
  ``chmod``/``chown``/``chgrp``, ``sed -i`` and ``sed``'s ``w``, ``mktemp``, redirections,
  output options of the readers) when every target lands inside the workspace, the scratch
  directory or a writable directory; ``git`` subcommands that change only the workspace's
  repository (:data:`GIT_WORKSPACE`).
* ``destructive`` (with the rule that fired): recursive ``rm`` of ``/``, ``~``, the
  workspace itself or all of it (``rm -rf .``/``*``, also a plain ``rm *``), a path that
  cannot be resolved; deleting or moving a ``.git`` directory or what is in it (a stale
  ``*.lock`` aside), or a pattern matching it (``rm -rf .[!.]*``); any write, delete, move,
  truncation, permission change aimed outside the workspace, scratch and writable
  directories or at a device (redirections, ``/dev/tcp`` too, ``tee``, ``dd of=``,
  ``cp``/``mv``/``ln``/``install``/``rsync``, ``sed -i``, ``sed w``, ``touch``, ``mkdir``,
  ``curl -o``, ``mv`` of a path away from outside…); ``git reset --hard``, forced or
  deleting ``git push`` (``--mirror`` too), ``git clean``, wholesale discards (``git checkout
  -- .``, ``-f``, ``git restore .``, magic pathspecs ``:/``, ``:!x``, ``:(glob)*``), ``git
  branch -D``/``-M``, ``git stash drop|clear``, ``git reflog expire|delete``, ``git gc
  --prune=…``, ``git prune``, ``git filter-branch``, ``git update-ref -d``, ``git rm`` of
  everything, changing a repository outside the workspace (``git -C /elsewhere commit``);
  ``sed``'s ``e`` command and ``s///e``; ``mkfs*``/``mkswap``/``wipefs``; fork bombs;
  downloads run as code (``curl … | sh``, ``curl … | xargs sh -c``, ``bash <(curl …)``,
  ``sh -c "$(curl …)"``); ``find … -delete``/``-exec rm`` from outside or of the whole
  workspace, ``find``/``ls``/``echo`` piped into ``xargs rm``; machine power, runlevels;
  ``kill -1``/``kill 1``, ``killall``/``pkill``; ``crontab -r``. Long options are matched
  abbreviated too (``rm --recur``, ``git reset --har``).
* ``unknown``: everything else, named by a rule: code run by an interpreter or a script,
  build tools, package managers, network clients, containers, remote shells, editors,
  ``eval`` of computed text, a command name or a write target that cannot be resolved, a
  change of an environment-like variable (``PATH=…; ls``: upper case, or exported, and not
  on the harmless list) or a command run with one set (``LD_PRELOAD=… ls``), opaque
  wrappers, functions called, ``kill``, targets read from standard input (``xargs``),
  writes into a ``.git`` directory (git would run what is planted there), paths an earlier
  part of the command may have made links, paths the resolver cannot resolve, any option of
  an allow-listed writer that is not known here, any command not on the allow-lists.

Known limits (a static judge can only read what is written):

* Each call is judged from the workspace root. Claude Code keeps the shell's current
  directory from call to call, but only inside the project: a deeper directory only moves
  relative paths further inside (``rm -rf *`` in ``src`` is judged as the whole workspace:
  stricter, never milder).
* The repository a ``git`` command changes is taken to be the workspace's when its current
  directory is inside the workspace (a workspace inside a larger repository, or a worktree,
  changes that repository's ``.git``). Hooks and configuration already in the repository,
  and the user's own shell aliases and functions, are trusted (``git commit`` runs hooks).
* Command names are the system's commands: ``PATH`` is trusted (but a change of it in the
  command is not).
* ``cd`` is assumed to succeed, and the shell syntax is read approximately in places (see
  :mod:`~nexo_trio.core.shell_syntax`): ``[[ a > b ]]`` is judged as a write to ``b``.
* Hard links cannot be told from files by path; the resolver on the file system refuses
  to resolve a multiply linked file (see :mod:`nexo_trio.gate.resolve`).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Literal, TypeAlias, TypeGuard, overload

import attrs

from nexo_trio.core.fork_bomb import fork_bomb
from nexo_trio.core.invocation import (
    Arg,
    Cmd,
    Ctx,
    Text,
    arg,
    assign,
    expand_braces,
    names,
    option_width,
    render,
    unwrap,
)
from nexo_trio.core.path_model import (
    CWD,
    HOME,
    Comps,
    Kind,
    PathResolver,
    Scope,
    World,
    anchored,
    classify,
    components,
    hint,
    locate,
    show,
)
from nexo_trio.core.shell_syntax import (
    NAME_RE,
    Group,
    Pipeline,
    Redir,
    Simple,
    TooDeep,
    Word,
    assignment,
    dq_parts,
    parse,
    simple_nodes,
)

__all__ = [
    "EFFECTS",
    "GIT_READ",
    "GIT_WORKSPACE",
    "READ_ONLY_COMMANDS",
    "Effect",
    "EffectVerdict",
    "command_effect",
    "worse",
]

Effect: TypeAlias = Literal["read", "workspace", "unknown", "destructive"]
EFFECTS: tuple[Effect, ...] = ("read", "workspace", "unknown", "destructive")
"""The effects, mildest first."""
_RANK: dict[Effect, int] = {effect: rank for rank, effect in enumerate(EFFECTS)}


@attrs.frozen
class EffectVerdict:
    """What a tool call does: its ``effect``; ``reason``, a sentence Claude can act on;
    ``rule``, the short stable name of the rule that decided; ``subject``, the command or
    path it decided on."""

    effect: Effect
    reason: str
    rule: str
    subject: str


@overload
def worse(a: EffectVerdict | None, b: EffectVerdict) -> EffectVerdict: ...
@overload
def worse(a: EffectVerdict, b: EffectVerdict | None) -> EffectVerdict: ...
@overload
def worse(a: EffectVerdict | None, b: EffectVerdict | None) -> EffectVerdict | None: ...
def worse(a: EffectVerdict | None, b: EffectVerdict | None) -> EffectVerdict | None:
    """The worse of two verdicts (``None``: nothing happened); the first one on a tie."""
    if a is None:
        return b
    if b is None or _RANK[b.effect] <= _RANK[a.effect]:
        return a
    return b


def _read(rule: str, reason: str, subject: str) -> EffectVerdict:
    return EffectVerdict("read", reason, rule, subject)


def _workspace(rule: str, reason: str, subject: str) -> EffectVerdict:
    return EffectVerdict("workspace", reason, rule, subject)


def _unknown(rule: str, reason: str, subject: str) -> EffectVerdict:
    return EffectVerdict("unknown", reason, rule, subject)


def _destructive(rule: str, reason: str, subject: str) -> EffectVerdict:
    return EffectVerdict("destructive", reason, rule, subject)


def _bad(v: EffectVerdict | None) -> TypeGuard[EffectVerdict]:
    return v is not None and v.effect == "destructive"


def command_effect(
    command: str, scope: Scope, resolve: PathResolver | None = None
) -> EffectVerdict:
    """The effect of the Bash ``command`` run in ``scope`` (see the module docstring).

    ``resolve`` maps an absolute path to its real path (symlinks followed); without one no
    links are known.
    """
    ctx = Ctx.start(World.of(scope, resolve))
    try:
        verdict = _text(command, ctx)
    except RecursionError:  # quotes and substitutions nested thousands deep: fail closed
        verdict = _destructive("too-deep", _TOO_DEEP, _clip(command))
    return verdict or _read("no-command", "the command runs nothing", _clip(command))


def _clip(text: str, limit: int = 120) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --------------------------------------------------------------------------------------------
# Walking a command: lists, pipelines, groups, simple commands, redirections

_MAX_DEPTH = 16
_TOO_DEEP = "command nested too deeply to analyse"


def _text(text: str, ctx: Ctx) -> EffectVerdict | None:
    if ctx.depth > _MAX_DEPTH:
        return _destructive("too-deep", _TOO_DEEP, _clip(text))
    bomb = fork_bomb(text)
    if bomb:
        return _destructive("fork-bomb", bomb, _clip(text))
    try:
        pipelines = parse(text)
    except TooDeep:
        return _destructive("too-deep", _TOO_DEEP, _clip(text))
    return _list(pipelines, ctx)


def _nested(text: str, ctx: Ctx) -> EffectVerdict | None:
    """Text the current shell runs (``eval``): judged in ``ctx`` itself, one level deeper."""
    ctx.depth += 1
    try:
        return _text(text, ctx)
    finally:
        ctx.depth -= 1


def _list(pipelines: Sequence[Pipeline], ctx: Ctx) -> EffectVerdict | None:
    verdict: EffectVerdict | None = None
    for pipeline in pipelines:
        verdict = worse(verdict, _pipeline(pipeline, ctx))
        if _bad(verdict):
            break
    return verdict


_Seen: TypeAlias = tuple[Cmd, tuple[Redir, ...], Ctx]


def _pipeline(pipeline: Pipeline, ctx: Ctx) -> EffectVerdict | None:
    # Every part of a multi-command pipeline runs in its own subshell.
    single = len(pipeline) == 1
    seen: list[_Seen] = []
    verdict: EffectVerdict | None = None
    for node in pipeline:
        nctx = ctx if single else ctx.child()
        if isinstance(node, Group):
            found = _group(node, nctx)
            # A group's commands take part in the pipeline: `(curl x) | bash`, `curl x | (sh)`.
            for inner in simple_nodes(node.body):
                if inner.role == "command":
                    cmd = unwrap(_args(inner.words, nctx), nctx)
                    if isinstance(cmd, Cmd):
                        seen.append((cmd, inner.redirs + node.redirs, nctx))
        else:
            found, cmd_found = _simple(node, nctx)
            if cmd_found is not None:
                seen.append((cmd_found, node.redirs, nctx))
        verdict = worse(verdict, found)
        if _bad(verdict):
            return verdict
    return verdict if single else worse(verdict, _pipeline_rules(seen))


def _group(node: Group, ctx: Ctx) -> EffectVerdict | None:
    verdict = _redirs(node.redirs, ctx)
    if node.function is not None:
        # Judged where it is defined (a function is defined to be called); a call is not
        # followed (it runs wherever and with whatever arguments the call has).
        verdict = worse(verdict, _list(node.body, ctx.child()))
        ctx.functions.add(node.function)
        return verdict
    return worse(verdict, _list(node.body, ctx.child() if node.subshell else ctx))


def _args(words: Iterable[Word], ctx: Ctx) -> list[Arg]:
    """The words, brace-expanded (assignments are not), resolved in ``ctx``."""
    out: list[Arg] = []
    for word in words:
        for expanded in [word] if assignment(word) else expand_braces(word):
            out.append(arg(expanded, ctx))
    return out


def _commands_in(parts: Iterable[tuple[str, str]], depth: int = 0) -> Iterator[str]:
    """The command texts substituted into word parts: ``$( )``/backticks, and those nested
    in arithmetic and in ``${…}`` operators (``${x:-$(cmd)}``), which the shell runs too."""
    for kind, text in parts:
        if kind == "sub":
            yield text
        elif kind in ("arith", "var") and ("$" in text or "`" in text) and depth < _MAX_DEPTH:
            inner, _ = dq_parts(text, 0, closing=False)
            yield from _commands_in(inner, depth + 1)


def _subs(words: Iterable[Word], ctx: Ctx) -> EffectVerdict | None:
    """Command substitutions in ``words``: they run first."""
    verdict: EffectVerdict | None = None
    for word in words:
        for text in _commands_in(word.parts):
            verdict = worse(verdict, _text(text, ctx.child()))
            if _bad(verdict):
                return verdict
    return verdict


def _simple(node: Simple, ctx: Ctx) -> tuple[EffectVerdict | None, Cmd | None]:
    verdict = _subs(node.words, ctx)
    if node.role == "for" and len(node.words) > 1:
        name = "".join(text for _, text in node.words[1].parts)
        ctx.env[name] = None
        return worse(verdict, _assigned(name, ctx, "for", exported=False)), None
    if node.role != "command" or _bad(verdict):
        return verdict, None
    verdict = worse(verdict, _redirs(node.redirs, ctx))
    if _bad(verdict):
        return verdict, None
    words = list(node.words)
    if all(assignment(w) for w in words):
        for w in words:
            found_name = assign(w, ctx)
            verdict = worse(verdict, _assigned(found_name, ctx, f"{found_name}=", exported=False))
        return verdict, None
    unwrapped = unwrap(_args(words, ctx), ctx)
    if isinstance(unwrapped, Text):
        inner = _text(unwrapped.text, ctx.child())
        subject = _clip(unwrapped.text)
        return worse(verdict, _around(inner, unwrapped.wrappers, unwrapped.env, ctx, subject)), None
    if unwrapped is None:
        return verdict, None
    found: EffectVerdict | None = _command(unwrapped, node.redirs, ctx)
    found = _around(found, unwrapped.wrappers, unwrapped.env, ctx, _cmdline(unwrapped))
    reader = unwrapped.name in READ_ONLY_COMMANDS or unwrapped.name in _READERS
    if (
        unwrapped.via_xargs
        and found is not None
        and found.effect in ("read", "workspace")
        and not (found.effect == "read" and reader)
    ):
        found = _unknown(
            "xargs-targets",
            f"{unwrapped.name} gets its targets from standard input, which cannot be read"
            f" statically: {_cmdline(unwrapped)}",
            _cmdline(unwrapped),
        )
    return worse(verdict, found), unwrapped


def _around(
    verdict: EffectVerdict | None,
    wrappers: Sequence[str],
    env: Sequence[tuple[str, str | None]],
    ctx: Ctx,
    subject: str,
) -> EffectVerdict | None:
    """A command's verdict, made at least unknown by what runs it differently: opaque
    wrappers, or environment variables set for it that are not harmless."""
    if _bad(verdict):
        return verdict
    if wrappers:
        verdict = worse(
            verdict,
            _unknown(
                "wrapper",
                f"{wrappers[0]} changes where, as whom or when the command runs: {subject}",
                subject,
            ),
        )
    risky = [n for n, value in env if not _harmless_env(n, value)]
    if risky:
        verdict = worse(
            verdict,
            _unknown(
                "environment",
                f"sets {risky[0]} for the command, which can change what it runs: {subject}",
                subject,
            ),
        )
    return verdict


_HARMLESS_ENV = names(
    "LANG LANGUAGE TZ TERM COLUMNS LINES NO_COLOR FORCE_COLOR CLICOLOR CLICOLOR_FORCE COLORTERM"
    " CI PYTHONUNBUFFERED PYTHONDONTWRITEBYTECODE PYTHONIOENCODING PYTHONHASHSEED GREP_COLORS"
    " LS_COLORS TERM_PROGRAM DEBIAN_FRONTEND"
)
_PAGERS = names("PAGER GIT_PAGER MANPAGER SYSTEMD_PAGER")


def _harmless_env(name: str, value: str | None) -> bool:
    """Environment variables no allow-listed command runs anything from (an allow-list)."""
    if name in _HARMLESS_ENV or name.startswith("LC_"):
        return True
    return name in _PAGERS and value in ("", "cat", "less", "more")


def _assigned(name: str | None, ctx: Ctx, what: str, *, exported: bool) -> EffectVerdict | None:
    """A variable was set (its value, if known, is in ``ctx.env`` already). Exported, or
    named like an environment variable (upper case: it may be one already, and be passed on
    to every later command), and not harmless: unknown (``PATH=.:$PATH; ls``)."""
    if not name or not NAME_RE.fullmatch(name):
        return None
    if name not in ctx.env:
        ctx.env[name] = None
    looks_exported = exported or not any(c.islower() for c in name)
    if looks_exported and not _harmless_env(name, ctx.env.get(name)):
        return _unknown(
            "environment",
            f"{what} sets {name}, which may be an environment variable that changes what later"
            " commands do",
            name,
        )
    return None


def _redirs(redirs: Sequence[Redir], ctx: Ctx) -> EffectVerdict | None:
    verdict: EffectVerdict | None = None
    for redir in redirs:
        if redir.target is not None:
            verdict = worse(verdict, _subs([redir.target], ctx))
        if redir.body is not None and redir.body_expands:
            parts, _ = dq_parts(redir.body, 0, closing=False)
            for inner in _commands_in(parts):
                verdict = worse(verdict, _text(inner, ctx.child()))
        if _bad(verdict) or redir.target is None:
            continue
        target = arg(redir.target, ctx)
        writes = redir.op in (">", ">>", ">|", "&>", "&>>", "<>")
        if redir.op == ">&" and target.value is not None:
            writes = not (target.value.isdigit() or target.value in ("-", "1-", "2-"))
        if writes:
            verdict = worse(verdict, _path(ctx, ctx.cwd, target, "redirection", "write"))
        if _bad(verdict):
            return verdict
    return verdict


# --- where a target lands ---------------------------------------------------------------------

_Mode: TypeAlias = Literal["write", "perm", "delete", "recursive", "prune", "take"]
"""``write``: created or changed (a link is followed); ``perm``: its permissions or owner
changed; ``delete``/``recursive``: removed (alone, or with all below it); ``prune``: some of
what is below it removed (``find -delete``); ``take``: moved away (``mv``'s sources)."""
_OUTSIDE_KINDS: frozenset[Kind] = frozenset({"root", "outside", "home", "escaped"})


def _path(
    ctx: Ctx, cwd: Comps, target: Arg, what: str, mode: _Mode, *, follow: bool | None = None
) -> EffectVerdict:
    """The effect of ``what`` acting on ``target`` taken from ``cwd`` (see :data:`_Mode`);
    ``follow``: whether a link at the end is followed (by default: for writes)."""
    shown = target.shown
    value = target.value
    if value is None:
        if mode == "recursive":
            return _destructive(
                "rm-unresolvable",
                f"{what} of a path the rules cannot resolve statically: {shown}",
                shown,
            )
        return _unknown(
            "unresolvable-target",
            f"{what} acts on a path that cannot be resolved statically: {shown}",
            shown,
        )
    if follow is None:
        follow = mode in ("write", "perm", "prune")
    follow = follow or value.endswith(("/", "/."))
    place = locate(value, cwd, ctx.world, follow=follow, pattern=target.pattern)
    kind, comps = place.kind, place.comps
    at = f"{shown}{hint(shown, comps)}"
    found = _place_verdict(kind, comps, what, mode, at)
    if found is not None:
        return found
    history = _git_history(comps, mode, pattern=target.pattern)
    if history is not None:
        return _destructive("rm-git-history", f"{what} {history}: {at}", shown)
    if kind in ("cwd", "below_cwd"):
        return _unknown(
            "unknown-directory",
            f"{what} acts on a path in a directory the rules cannot place: {at}",
            shown,
        )
    if place.unresolved is not None:
        return _unknown("unresolvable-path", f"{what}: {place.unresolved}: {shown}", shown)
    if any(comps[: len(c)] == c for c in ctx.changed):
        return _unknown(
            "changed-path",
            f"{what} acts on {at}, which an earlier part of the command may have made a link",
            shown,
        )
    if mode in ("write", "perm") and ".git" in comps:
        return _unknown(
            "write-git-control",
            f"{what} writes into a .git directory, which can make git run programs: {at}",
            shown,
        )
    area = "workspace" if kind in ("workspace", "inside") else "scratch"
    writes = mode in ("write", "perm")
    verb = "writes" if writes else "moves" if mode == "take" else "deletes"
    return _workspace(
        f"{'write' if writes else 'delete'}-inside-{area}",
        f"{what} {verb} only inside the {area if area == 'workspace' else 'scratch directory'}:"
        f" {at}",
        shown,
    )


def _git_history(comps: Comps, mode: _Mode, *, pattern: bool) -> str | None:
    """Deleting or moving a ``.git`` directory, or what is inside it (but a stale ``*.lock``
    file), or a pattern that matches ``.git`` (``rm -rf .[!.]*``), loses the history."""
    if mode in ("write", "perm") or not comps:
        return None
    if ".git" in comps[:-1] or comps[-1] == ".git":
        if mode == "delete" and comps[-1].endswith(".lock") and comps[-1] != ".git":
            return None
        return "of a git repository's history"
    last = comps[-1]
    if pattern and mode != "take" and last.startswith(".") and fnmatch.fnmatchcase(".git", last):
        return "of a pattern that matches a git repository's history"
    return None


_RM_WHAT: dict[Kind, tuple[str, str]] = {
    "root": ("rm-root", "of the root directory"),
    "workspace": ("rm-workspace", "of the whole workspace"),
    "cwd": ("rm-workspace", "of the whole current directory"),
    "outside": ("rm-outside-workspace", "outside the workspace"),
    "home": ("rm-outside-workspace", "outside the workspace"),
    "device": ("rm-outside-workspace", "outside the workspace"),
    "safe_device": ("rm-outside-workspace", "outside the workspace"),
    "escaped": ("rm-outside-workspace", "outside the current directory"),
}


def _place_verdict(
    kind: Kind, comps: Comps, what: str, mode: _Mode, at: str
) -> EffectVerdict | None:
    """The destructive (or harmless device) verdicts of a place; ``None``: judge further."""
    subject = at
    if mode == "write":
        if kind == "safe_device":
            return _read("safe-device", f"{what} writes only to a pseudo-device: {at}", subject)
        if kind == "device":
            return _destructive("write-device", f"{what} writes to a device: {at}", subject)
        if kind in _OUTSIDE_KINDS:
            return _destructive(
                "write-outside-workspace", f"{what} writes outside the workspace: {at}", subject
            )
        return None
    if mode == "perm":
        if kind in _OUTSIDE_KINDS or kind in ("device", "safe_device"):
            where = "of the root directory" if kind == "root" else "outside the workspace"
            return _destructive("perm-outside-workspace", f"{what} {where}: {at}", subject)
        return None
    if mode in ("take", "prune"):
        if kind in _OUTSIDE_KINDS or kind in ("device", "safe_device"):
            where = "takes away a path" if mode == "take" else "deletes"
            return _destructive(
                "move-from-outside" if mode == "take" else "find-delete-outside",
                f"{what} {where} outside the workspace: {at}",
                subject,
            )
        return None
    found = _RM_WHAT.get(kind)
    if kind == "home" and comps == (HOME,):
        found = ("rm-home", "of the home directory")
    if found is None:
        return None
    return _destructive(found[0], f"{what} {found[1]}: {at}", subject)


# --- judging one command ----------------------------------------------------------------------

_SHELLS = frozenset(
    {"sh", "bash", "rbash", "zsh", "dash", "ksh", "mksh", "ash", "yash", "fish", "csh", "tcsh"}
)
_INTERPRETER_RE = re.compile(
    r"(python|pypy)[0-9.]*|perl[0-9.]*|ruby[0-9.]*|node|nodejs|php[0-9.]*|lua(jit)?[0-9.]*"
    r"|deno|bun|[gmn]?awk|busybox-awk|Rscript|julia|tclsh[0-9.]*|wish|expect|osascript|dc"
    r"|irb|ts-node|tsx|groovy|scala|kotlin|elixir|erl|escript|guile|racket|sbcl|clisp|gawk"
)
# Interpreter flags that run code given on the command line (so stdin is data, not code).
_INLINE_CODE_FLAGS = frozenset({"-c", "-e", "-E", "-m", "-r", "-p", "--eval", "--print"})
_INTERPRETER_ARG = frozenset({"-W", "-X", "-I", "--require", "--import", "--loader"})
_DOWNLOADERS = frozenset({"curl", "wget", "fetch", "http", "https", "xh", "aria2c"})
_FORMATTERS = frozenset({"mke2fs", "mkswap", "wipefs", "mkntfs", "mkdosfs", "mkexfatfs"})
_POWER = frozenset({"shutdown", "reboot", "halt", "poweroff", "kexec"})
_SYSTEMCTL_POWER = names(
    "poweroff reboot halt kexec emergency rescue suspend hibernate hybrid-sleep soft-reboot"
)
_SYSTEMCTL_READ = names(
    "status show cat list-units list-unit-files list-timers list-sockets list-jobs"
    " list-dependencies list-machines is-active is-enabled is-failed is-system-running"
    " get-default show-environment help"
)
# Kill by name can hit processes far outside the goal: the orchestrator, other goals' agents,
# the user's own programs.
_KILL_BY_NAME = frozenset({"killall", "killall5", "pkill"})
_DELETERS = frozenset({"rm", "unlink", "rmdir", "shred", "truncate"})
_PERMS = frozenset({"chmod", "chown", "chgrp"})

READ_ONLY_COMMANDS: frozenset[str] = names(
    "ls dir vdir exa eza lsd cat tac nl head tail more wc stat du df pwd echo printf which"
    " whereis type basename dirname realpath readlink md5sum sha1sum sha224sum sha256sum"
    " sha384sum sha512sum b2sum cksum sum base32 base64 basenc od hexdump hd strings cut paste"
    " join comm tr fold fmt pr column expand unexpand rev seq yes true false : test [ [[ sleep"
    " whoami id groups uname arch nproc uptime free printenv locale tty logname users who w"
    " cmp diff diff3 grep egrep fgrep zgrep zcat bzcat xzcat zstdcat jq tsort numfmt factor"
    " expr getconf getent lsblk lscpu lsusb lspci lsmod ps pgrep pidof lsof ss netstat vmstat"
    " iostat mpstat cal bc nm objdump readelf size lsattr getfacl namei findmnt tput clear"
    " dirs jobs wait fg bg disown times help compgen complete caller ulimit umask shopt exit"
    " return break continue shift unalias look ag ack bat batcat locate plocate diffstat"
)
"""Commands that only read, whatever their options (their output goes to stdout)."""

_BUILD_TOOLS = names(
    "make gmake cmake ninja meson bazel bazelisk buck just task mvn gradle gradlew ant sbt"
    " scons tox nox pytest py.test jest vitest mocha karma cargo go rustc rustup gcc g++ cc"
    " c++ clang clang++ ld javac java tsc esbuild webpack vite rollup parcel swift swiftc"
    " dotnet msbuild xcodebuild ruff black isort mypy pyright pylint flake8 eslint prettier"
    " rubocop gofmt rustfmt clang-format pre-commit"
)
_PACKAGE_MANAGERS = names(
    "npm npx pnpm pnpx yarn corepack pip pip3 pipx uv uvx poetry pdm hatch conda mamba"
    " micromamba gem bundle bundler composer apt apt-get aptitude dpkg yum dnf rpm zypper apk"
    " pacman yay brew port nix nix-env snap flatpak nuget cpan cpanm luarocks opam stack cabal"
    " mix rebar3 conan vcpkg"
)
_NETWORK = names(
    "curl wget fetch http https xh aria2c nc ncat netcat socat telnet ftp lftp sftp scp rsync"
    " ping ping6 dig nslookup host traceroute tracepath mtr whois openssl gh hub glab"
)
_REMOTE_SHELLS = names("ssh mosh rsh rlogin autossh sshpass")
_CONTAINERS = names(
    "docker podman kubectl helm nerdctl buildah lxc lxd vagrant minikube kind k3s crictl ctr"
    " docker-compose compose skopeo"
)
_EDITORS = names("vi vim nvim view ex ed emacs nano pico micro joe mcedit code subl")
_UNKNOWN_CLASSES: tuple[tuple[frozenset[str], str, str], ...] = (
    (_BUILD_TOOLS, "build-tool", "runs build or test code the rules cannot read"),
    (_PACKAGE_MANAGERS, "package-manager", "installs or runs packages' code"),
    (_REMOTE_SHELLS, "remote-shell", "runs commands on another machine"),
    (_NETWORK, "network-client", "talks to the network"),
    (_CONTAINERS, "container", "drives containers or clusters"),
    (_EDITORS, "editor", "is an editor, which can run commands"),
)
_VERSION_ARGS = frozenset({"--version", "-V", "--help", "version", "-version"})


def _is_interpreter(name: str) -> bool:
    return name in _SHELLS or bool(_INTERPRETER_RE.fullmatch(name))


def _cmdline(cmd: Cmd, limit: int = 120) -> str:
    return _clip(" ".join([cmd.head.shown, *(a.shown for a in cmd.args)]), limit)


def _command(cmd: Cmd, redirs: Sequence[Redir], ctx: Ctx) -> EffectVerdict:
    name = cmd.name
    line = _cmdline(cmd)
    if name is None:
        # `$(echo rm) -rf /`, `$RM -rf /`: judged as rm when the arguments look like rm -rf.
        if any(_recursive_flag(a.value) for a in cmd.args):
            found = _rm(cmd, ctx)
            if found.effect == "destructive":
                return attrs.evolve(
                    found,
                    reason=f"{found.reason} (the command name is not resolvable: {cmd.head.shown})",
                )
        return _unknown(
            "unresolvable-command", f"the command name cannot be resolved statically: {line}", line
        )
    if name in ctx.functions:
        ctx.cwd = (CWD,)  # the function may have changed directory
        return _unknown(
            "function-call",
            f"calls {name}, a function defined in this command, whose effect where it is"
            f" called is not followed: {line}",
            line,
        )
    judge = _JUDGES.get(name)
    if judge is not None:
        found = judge(cmd, redirs, ctx)
    elif name in READ_ONLY_COMMANDS:
        found = _read("read-only-command", f"{name} only reads", line)
    elif _is_interpreter(name):
        found = _interpreter(cmd, ctx)
    elif name.startswith("mkfs") or name in _FORMATTERS:
        found = _destructive(
            "format-filesystem", f"{name} formats or wipes a filesystem: {line}", line
        )
    elif name in _POWER:
        found = _destructive("power", f"{name} stops or restarts the machine: {line}", line)
    elif name in _KILL_BY_NAME:
        found = _destructive(
            "kill-by-name", f"{name} kills processes by name, beyond this goal: {line}", line
        )
    else:
        found = _unknown_command(cmd, ctx)
    if cmd.by_path and found.effect != "destructive":
        return _unknown("program-path", f"runs a program named by its path: {line}", line)
    return found


def _unknown_command(cmd: Cmd, ctx: Ctx) -> EffectVerdict:
    name = cmd.name or ""
    line = _cmdline(cmd)
    for members, rule, what in _UNKNOWN_CLASSES:
        if name in members:
            if [a.value for a in cmd.args] and all(a.value in _VERSION_ARGS for a in cmd.args):
                return _read("version-query", f"{name} only prints its version or help", line)
            if rule == "network-client":
                found = _downloader_outputs(cmd, ctx)
                if found is not None:
                    return found
            return _unknown(rule, f"{name} {what}: {line}", line)
    return _unknown(
        "unknown-command", f"{name} is not a command whose effect the rules know: {line}", line
    )


# --- options, GNU style -----------------------------------------------------------------------


@attrs.frozen
class _Spec:
    """A command's options: short flags, short options taking a value, long flags (an
    ``=value`` is allowed), long options taking a value."""

    short: str = ""
    short_arg: str = ""
    long: frozenset[str] = frozenset()
    long_arg: frozenset[str] = frozenset()


@attrs.frozen
class _Parsed:
    opts: tuple[tuple[str, Arg | None], ...]
    operands: tuple[Arg, ...]
    bad: str | None = None
    """An option that is not known (or is ambiguous): the command's effect is not read."""

    def has(self, *names_: str) -> bool:
        return any(name in names_ for name, _ in self.opts)

    def values(self, *names_: str) -> list[Arg | None]:
        return [value for name, value in self.opts if name in names_]


def _long(key: str, known: Iterable[str]) -> list[str]:
    """The known long options ``key`` names (exactly, or as an abbreviation)."""
    known = list(known)
    if key in known:
        return [key]
    return [k for k in known if k.startswith(key)] if len(key) > 2 else []


def _parse(args: Sequence[Arg], spec: _Spec) -> _Parsed:
    """Options (anywhere before ``--``) and operands; an unknown or ambiguous option, or a
    value missing, sets ``bad``."""
    opts: list[tuple[str, Arg | None]] = []
    operands: list[Arg] = []
    bad: str | None = None
    i = 0
    end = False
    while i < len(args):
        a = args[i]
        v = a.value
        i += 1
        if end or v is None or v == "-" or not v.startswith("-"):
            operands.append(a)
        elif v == "--":
            end = True
        elif v.startswith("--"):
            key, eq, given = v.partition("=")
            found = _long(key, spec.long | spec.long_arg)
            if len(found) != 1:
                bad = bad or v
                continue
            name = found[0]
            if name in spec.long_arg and not eq:
                if i >= len(args):
                    bad = bad or v
                    continue
                opts.append((name, args[i]))
                i += 1
            else:
                opts.append((name, Arg(a.word, given, given) if eq else None))
        else:
            letters = v[1:]
            for k, ch in enumerate(letters):
                if ch in spec.short_arg:
                    rest = letters[k + 1 :]
                    if rest:
                        opts.append((f"-{ch}", Arg(a.word, rest, rest)))
                    elif i < len(args):
                        opts.append((f"-{ch}", args[i]))
                        i += 1
                    else:
                        bad = bad or v
                    break
                if ch in spec.short:
                    opts.append((f"-{ch}", None))
                else:
                    bad = bad or v
                    break
    return _Parsed(tuple(opts), tuple(operands), bad)


def _spec(short: str = "", short_arg: str = "", long: str = "", long_arg: str = "") -> _Spec:
    return _Spec(short, short_arg, names(long + " --help --version"), names(long_arg))


def _unknown_option(cmd: Cmd, parsed: _Parsed) -> EffectVerdict:
    line = _cmdline(cmd)
    return _unknown(
        "unknown-option", f"{cmd.name} {parsed.bad} is not an option the rules know: {line}", line
    )


def _targets(cmd: Cmd, ctx: Ctx, targets: Iterable[Arg], what: str, mode: _Mode) -> EffectVerdict:
    """The worst of ``targets`` (none: the command only reads)."""
    verdict: EffectVerdict | None = None
    for t in targets:
        verdict = worse(verdict, _path(ctx, cmd.cwd, t, what, mode))
        if _bad(verdict):
            break
    return verdict or _read("read-only-command", f"{what} changes nothing here", _cmdline(cmd))


# --- the write allow-list ---------------------------------------------------------------------

_RM = _spec("fiIrRdv", long="--force --interactive --one-file-system --no-preserve-root"
            " --preserve-root --recursive --dir --verbose")  # fmt: skip
_RMDIR = _spec("pv", long="--ignore-fail-on-non-empty --parents --verbose")
_MKDIR = _spec("pvZ", "m", "--parents --verbose --context", "--mode")
_TOUCH = _spec("acfhm", "drt", "--no-create --no-dereference", "--date --reference --time")
_TEE = _spec("aip", long="--append --ignore-interrupts --output-error")
_TRUNCATE = _spec("co", "rs", "--no-create --io-blocks", "--reference --size")
_SHRED = _spec("fuvxz", "ns", "--force --remove --verbose --exact --zero",
               "--iterations --random-source --size")  # fmt: skip
_OWN = _spec("cfvhRHLP", long="--changes --silent --quiet --verbose --dereference"
             " --no-dereference --no-preserve-root --preserve-root --recursive",
             long_arg="--from --reference")  # fmt: skip
_MKTEMP = _spec("dqut", "p", "--directory --dry-run --quiet --tmpdir", "--suffix")
_COPY_SPECS: dict[str, _Spec] = {
    "cp": _spec(
        "abdfHilLnPpRrsTuvxZ",
        "St",
        "--archive --attributes-only --backup --copy-contents --debug --force --interactive"
        " --link --dereference --no-clobber --no-dereference --preserve --parents --recursive"
        " --reflink --remove-destination --strip-trailing-slashes --symbolic-link"
        " --no-target-directory --update --verbose --one-file-system --context"
        " --keep-directory-symlink",
        "--suffix --target-directory --no-preserve --sparse",
    ),
    "mv": _spec(
        "bfinTuvZ",
        "St",
        "--backup --debug --exchange --force --interactive --no-clobber --no-copy"
        " --strip-trailing-slashes --no-target-directory --update --verbose --context",
        "--suffix --target-directory",
    ),
    "ln": _spec(
        "bdFfinLPrsTv",
        "St",
        "--backup --directory --force --interactive --logical --no-dereference --physical"
        " --relative --symbolic --no-target-directory --verbose",
        "--suffix --target-directory",
    ),
    "install": _spec(
        "bcCdDpsTvZ",
        "gmoSt",
        "--backup --compare --directory --preserve-timestamps --strip --no-target-directory"
        " --verbose --preserve-context --context --debug",
        "--group --mode --owner --suffix --target-directory --strip-program",
    ),
}
# cp options that may copy links as links (so the destination may become one).
_COPY_LINKS = names("-a -d -P -R -r -s -l --archive --no-dereference --recursive --link"
                    " --symbolic-link")  # fmt: skip


def _rm(cmd: Cmd, ctx: Ctx) -> EffectVerdict:
    parsed = _parse(cmd.args, _RMDIR if cmd.name == "rmdir" else _RM)
    if parsed.bad is not None and not _recursive_flag(parsed.bad):
        return _unknown_option(cmd, parsed)
    recursive = parsed.has("-r", "-R", "--recursive") or (
        parsed.bad is not None and _recursive_flag(parsed.bad)
    )
    label = "rm -rf" if recursive else cmd.name or "rm"
    return _targets(cmd, ctx, parsed.operands, label, "recursive" if recursive else "delete")


def _recursive_flag(value: str | None) -> bool:
    if value is None or not value.startswith("-") or value == "-":
        return False
    if value.startswith("--"):
        return bool(_long(value.partition("=")[0], ["--recursive"]))
    return "r" in value or "R" in value


def _writes(cmd: Cmd, redirs: Sequence[Redir], ctx: Ctx) -> EffectVerdict:
    """``mkdir``, ``touch``, ``tee``, ``truncate``, ``shred``, ``sudoedit``: every operand
    is written."""
    name = cmd.name or ""
    spec = {"mkdir": _MKDIR, "touch": _TOUCH, "tee": _TEE, "truncate": _TRUNCATE}.get(name)
    spec = spec or (_SHRED if name == "shred" else _Spec())
    parsed = _parse(cmd.args, spec)
    if parsed.bad is not None:
        return _unknown_option(cmd, parsed)
    operands = [a for a in parsed.operands if not (name == "tee" and a.value == "-")]
    return _targets(cmd, ctx, operands, name, "write")


def _copy(cmd: Cmd, redirs: Sequence[Redir], ctx: Ctx) -> EffectVerdict:
    """``cp``/``mv``/``ln``/``install``: the destination is written (a device, outside…),
    ``mv`` takes its sources away; a destination that may become a link is remembered."""
    name = cmd.name or "cp"
    parsed = _parse(cmd.args, _COPY_SPECS[name])
    if parsed.bad is not None:
        return _unknown_option(cmd, parsed)
    line = _cmdline(cmd)
    if parsed.has("--strip-program"):
        return _unknown("runs-program", f"install --strip-program runs a program: {line}", line)
    ops = list(parsed.operands)
    given = [v for v in parsed.values("-t", "--target-directory") if v is not None]
    if name == "install" and parsed.has("-d", "--directory"):
        dests, sources = ops, []
    elif given:
        dests, sources = given[-1:], ops
    elif len(ops) >= 2:
        dests, sources = ops[-1:], ops[:-1]
    elif name == "ln" and ops and ops[0].value is not None:
        # `ln -s TARGET`: the link is made in the current directory.
        base = ops[0].value.rstrip("/").rpartition("/")[2] or ops[0].value
        dests, sources = [Arg(ops[0].word, base, base)], ops
    else:
        return _read("read-only-command", f"{name} with no destination fails", line)
    verdict = _targets(cmd, ctx, dests, name, "write")
    if name == "mv" and not _bad(verdict):
        verdict = worse(verdict, _targets(cmd, ctx, sources, name, "take")) or verdict
    if name in ("ln", "mv") or (name == "cp" and any(parsed.has(o) for o in _COPY_LINKS)):
        for dest in dests:
            if dest.value is not None:
                ctx.changed.append(components(dest.value, cmd.cwd))
    return verdict


def _rsync(cmd: Cmd, redirs: Sequence[Redir], ctx: Ctx) -> EffectVerdict:
    """rsync: a local destination outside the workspace is destructive; rsync is otherwise
    unknown (remote ends, ``-e`` programs, filters: too many options to read)."""
    line = _cmdline(cmd)
    ops = _operands(cmd.args, frozenset("efT"), names("--rsh --filter --exclude --include"))
    dest = ops[-1] if len(ops) > 1 else None
    if dest is not None and dest.value is not None and ":" not in dest.value.partition("/")[0]:
        found = _path(ctx, cmd.cwd, dest, "rsync", "write")
        if found.effect == "destructive":
            return found
    return _unknown(
        "network-client", f"rsync can reach other machines and run programs: {line}", line
    )


def _dd(cmd: Cmd, redirs: Sequence[Redir], ctx: Ctx) -> EffectVerdict:
    keys = names("if of bs ibs obs cbs count skip seek iseek oseek conv iflag oflag status")
    line = _cmdline(cmd)
    targets: list[Arg] = []
    for a in cmd.args:
        v = a.value
        if v in ("--help", "--version"):
            continue
        key, eq, rest = (v or "").partition("=")
        if v is None or not eq or key not in keys:
            return _unknown(
                "unknown-option", f"dd {a.shown} is not an operand the rules know", line
            )
        if key == "of":
            targets.append(Arg(a.word, rest, a.shown.removeprefix("of=")))
    return _targets(cmd, ctx, targets, "dd", "write")


def _perm(cmd: Cmd, redirs: Sequence[Redir], ctx: Ctx) -> EffectVerdict:
    """chmod/chown/chgrp: any target outside the workspace (or ``/``) is destructive."""
    name = cmd.name or "chmod"
    args = list(cmd.args)
    if name == "chmod":
        # chmod's own letters; anything else after a dash is a mode (-w, -x, -r…).
        args = [
            Arg(a.word, "MODE", a.shown)
            if a.value is not None
            and a.value.startswith("-")
            and not a.value.startswith("--")
            and not set(a.value[1:]) <= set("Rcfv")
            else a
            for a in args
        ]
    parsed = _parse(args, _OWN)
    if parsed.bad is not None:
        return _unknown_option(cmd, parsed)
    recursive = parsed.has("-R", "--recursive")
    targets = parsed.operands if parsed.has("--reference") else parsed.operands[1:]
    return _targets(cmd, ctx, targets, f"recursive {name}" if recursive else name, "perm")


def _mktemp(cmd: Cmd, redirs: Sequence[Redir], ctx: Ctx) -> EffectVerdict:
    """mktemp creates a file in ``-p DIR``, in ``$TMPDIR`` (``-t``, or no template: the
    scratch directory when the scope has one) or where its template says."""
    parsed = _parse(cmd.args, _MKTEMP)
    if parsed.bad is not None:
        return _unknown_option(cmd, parsed)
    if parsed.has("-u", "--dry-run"):
        return _read("read-only-command", "mktemp --dry-run creates nothing", _cmdline(cmd))
    template = parsed.operands[0] if parsed.operands else None
    dirs = [v for v in parsed.values("-p", "--tmpdir") if v is not None and v.value != ""]
    if not dirs and template is not None and not parsed.has("-t", "--tmpdir"):
        return _targets(cmd, ctx, [template], "mktemp", "write")
    if dirs:
        base = dirs[-1]
    else:
        tmp = ctx.env.get("TMPDIR")
        base = Arg(Word((("var", "TMPDIR"),)), tmp, "$TMPDIR")
    leaf = (template.value or "tmp") if template is not None else "tmp.XXXXXXXXXX"
    value = None if base.value is None else f"{base.value.rstrip('/')}/{leaf}"
    return _path(ctx, cmd.cwd, Arg(base.word, value, f"{base.shown}/{leaf}"), "mktemp", "write")


# --- readers with writing options -------------------------------------------------------------


@attrs.frozen
class _Reader:
    spec: _Spec
    outputs: frozenset[str] = frozenset()
    """Options whose value is a file the command writes."""
    runs: frozenset[str] = frozenset()
    """Options that make it run a program (or otherwise do more than read)."""
    written_operand: int | None = None
    """The operand it writes (``uniq IN OUT``, ``xxd IN OUT``)."""


def _reader(
    short_arg: str = "",
    long_arg: str = "",
    outputs: str = "",
    runs: str = "",
    written_operand: int | None = None,
) -> _Reader:
    # Readers' other options are all harmless: any letter is a known flag.
    letters = "".join(chr(c) for c in range(33, 127) if chr(c) not in short_arg)
    spec = _Spec(letters, short_arg, names(runs) | names(outputs), names(long_arg))
    return _Reader(spec, names(outputs), names(runs), written_operand)


_READERS: dict[str, _Reader] = {
    "sort": _reader(
        "kotST",
        "--key --output --field-separator --buffer-size --temporary-directory --files0-from"
        " --random-source --batch-size --parallel --sort --compress-program",
        "-o --output -T --temporary-directory",
        "--compress-program",
    ),
    "shuf": _reader("ino", "--input-range --head-count --output --random-source", "-o --output"),
    "uniq": _reader("fsw", "--skip-fields --skip-chars --check-chars", written_operand=1),
    "xxd": _reader("cglosn", written_operand=1),
    "tree": _reader("LPIoHT", "--charset --filelimit --timefmt --sort", "-o"),
    "less": _reader("bhjkoOpPtTxyz#", "--log-file --LOG-FILE", "-o -O --log-file --LOG-FILE"),
    "rg": _reader(
        "ABCefgmMtTjEr", "--pre --pre-glob --replace --regexp --file --glob", runs="--pre"
    ),
    "fd": _reader("tedEcjxX", "--exec --exec-batch", runs="-x -X --exec --exec-batch"),
    "fdfind": _reader("tedEcjxX", "--exec --exec-batch", runs="-x -X --exec --exec-batch"),
    "file": _reader("mPeF", "--magic-file --parameter", runs="-C --compile"),
    "date": _reader("dfrsI", "--date --file --reference --set", runs="-s --set"),
    "man": _reader(
        "PHMLSmCBe", "--pager --html --browser", runs="-P --pager -H --html -B --browser"
    ),
}


def _read_with_outputs(cmd: Cmd, redirs: Sequence[Redir], ctx: Ctx) -> EffectVerdict:
    name = cmd.name or ""
    reader = _READERS[name]
    parsed = _parse(cmd.args, reader.spec)
    line = _cmdline(cmd)
    runs = [o for o, _ in parsed.opts if o in reader.runs]
    if runs or (parsed.bad is not None and any(parsed.bad.startswith(r) for r in reader.runs)):
        what = runs[0] if runs else parsed.bad
        return _unknown(
            "runs-program", f"{name} {what} runs a program or changes the system: {line}", line
        )
    if name == "less" and any(
        a.value is not None and a.value.startswith("+") and ("!" in a.value or "|" in a.value)
        for a in cmd.args
    ):
        return _unknown("runs-program", f"less commands can run programs: {line}", line)
    outputs: list[Arg] = [v for o, v in parsed.opts if o in reader.outputs and v is not None]
    if reader.written_operand is not None and len(parsed.operands) > reader.written_operand:
        outputs.append(parsed.operands[reader.written_operand])
    if not outputs:
        return _read("read-only-command", f"{name} only reads", line)
    return _targets(cmd, ctx, outputs, name, "write")


def _hostname(cmd: Cmd, redirs: Sequence[Redir], ctx: Ctx) -> EffectVerdict:
    line = _cmdline(cmd)
    values = [a.value for a in cmd.args]
    if all(
        v is not None and v.startswith("-") and v not in ("-F", "--file", "-b", "--boot")
        for v in values
    ):
        return _read("read-only-command", "hostname only prints the host name", line)
    return _unknown(
        "system-setting", f"hostname with an operand changes the host name: {line}", line
    )


def _history(cmd: Cmd, redirs: Sequence[Redir], ctx: Ctx) -> EffectVerdict:
    values = [a.value for a in cmd.args]
    line = _cmdline(cmd)
    if not values or (len(values) == 1 and (values[0] or "").isdigit()):
        return _read("read-only-command", "history only prints", line)
    return _unknown("unknown-option", f"history with options reads or writes files: {line}", line)


def _hash(cmd: Cmd, redirs: Sequence[Redir], ctx: Ctx) -> EffectVerdict:
    line = _cmdline(cmd)
    if any(a.value is None or (a.value.startswith("-") and "p" in a.value) for a in cmd.args):
        return _unknown("shell-state", f"hash -p maps a command name to any program: {line}", line)
    return _read("shell-state", "hash only remembers where commands are", line)


# --- shell state --------------------------------------------------------------------------------


def _cd(cmd: Cmd, redirs: Sequence[Redir], ctx: Ctx) -> EffectVerdict:
    if not cmd.via_xargs:
        ctx.cwd = _cd_target(cmd, ctx)
    return _read("shell-state", f"{cmd.name} only changes the current directory", _cmdline(cmd))


def _cd_target(cmd: Cmd, ctx: Ctx) -> Comps:
    if cmd.name == "popd":
        return (CWD,)
    operands = [a for a in cmd.args if not (a.value and a.value.startswith("-") and a.value != "-")]
    if not operands:
        return (HOME,) if cmd.name == "cd" else (CWD,)
    target = operands[0].value
    if target is None or target == "-" or target.startswith("+"):
        return (CWD,)
    return components(target, ctx.cwd)


def _declare(cmd: Cmd, redirs: Sequence[Redir], ctx: Ctx) -> EffectVerdict:
    """``export``/``declare``/``typeset``/``local``/``readonly``: assignments; exporting, or
    setting an environment-like name, that is not harmless is unknown (see
    :func:`_assigned`), and so is a nameref (``declare -n``: it can assign any variable)."""
    name = cmd.name or "export"
    exported = name == "export"
    line = _cmdline(cmd)
    verdict: EffectVerdict | None = None
    for a in cmd.args:
        v = a.value
        if v is not None and v.startswith(("-", "+")) and not assignment(a.word):
            if v.startswith("-") and "x" in v[1:]:
                exported = True
            if "n" in v[1:] and name != "export":
                verdict = worse(
                    verdict,
                    _unknown("environment", f"{name} -n makes a reference to any variable", line),
                )
            if "n" in v[1:] and name == "export":
                exported = False  # export -n removes the export
            continue
        found = assign(a.word, ctx)
        target = found or (v if v is not None and NAME_RE.fullmatch(v) else None)
        verdict = worse(verdict, _assigned(target, ctx, name, exported=exported))
    return verdict or _read("shell-state", f"{name} only sets shell variables", line)


def _reads_names(cmd: Cmd, redirs: Sequence[Redir], ctx: Ctx) -> EffectVerdict:
    """``read``/``mapfile``/``readarray``/``getopts``/``printf -v``/``let``/``unset``/
    ``set``: variables get values not known here (``set -a`` exports them all)."""
    name = cmd.name or "read"
    line = _cmdline(cmd)
    values = [a.value or "" for a in cmd.args]
    if name in ("mapfile", "readarray") and any(v.startswith("-") and "C" in v for v in values):
        return _unknown("runs-code", f"{name} -C runs a callback: {line}", line)
    if name == "set":
        if (
            any(v.startswith("-") and ("a" in v or "k" in v) for v in values)
            or "allexport" in values
        ):
            return _unknown(
                "environment", f"{line} exports every variable set after it to later commands", line
            )
        return _read("shell-state", "set only changes shell options", line)
    if name == "unset":
        for v in values:
            if NAME_RE.fullmatch(v):
                ctx.env[v] = None
        return _read("shell-state", "unset only removes shell variables", line)
    if name == "printf":
        targets = [values[k + 1] for k, v in enumerate(values[:-1]) if v == "-v"]
    elif name == "let":
        targets = [m.group() for v in values if "=" in v and (m := NAME_RE.match(v))]
    else:
        targets = [v for v in values if NAME_RE.fullmatch(v)]
    verdict: EffectVerdict | None = None
    for target in targets:
        ctx.env[target] = None
        verdict = worse(verdict, _assigned(target, ctx, name, exported=False))
    return verdict or _read("shell-state", f"{name} only prints or sets shell variables", line)


def _trap(cmd: Cmd, redirs: Sequence[Redir], ctx: Ctx) -> EffectVerdict:
    args = [a for a in cmd.args if a.value not in ("--",)]
    line = _cmdline(cmd)
    if not args or (args[0].value or "").startswith("-") or len(args) < 2:
        return _read("shell-state", "trap only lists or resets handlers", line)
    later = ctx.child()
    later.cwd = (CWD,)  # the handler runs later, wherever the shell is then
    found = _text(render(args[0].word, ctx), later)
    return found or _read("shell-state", "trap sets an empty handler", line)


def _unknown_state(cmd: Cmd, redirs: Sequence[Redir], ctx: Ctx) -> EffectVerdict:
    line = _cmdline(cmd)
    return _unknown(
        "shell-state", f"{cmd.name} changes how later commands are found or run: {line}", line
    )


# --- interpreters, shells, eval -----------------------------------------------------------------


def _interpreter(cmd: Cmd, ctx: Ctx) -> EffectVerdict:
    name = cmd.name or ""
    line = _cmdline(cmd)
    remote = _remote_code(cmd)
    if remote is not None:
        return remote
    values = [a.value for a in cmd.args]
    if values and all(v in _VERSION_ARGS for v in values):
        return _read("version-query", f"{name} only prints its version or help", line)
    inline = any(
        v is not None and (v in _INLINE_CODE_FLAGS or v[:2] in _INLINE_CODE_FLAGS) for v in values
    )
    if inline:
        return _unknown("interpreter", f"{name} runs code the rules do not read: {line}", line)
    if any(v is None or not v.startswith("-") for v in values):
        return _unknown("script", f"{name} runs a script the rules cannot read: {line}", line)
    return _unknown("interpreter", f"{name} runs code from its input: {line}", line)


def _shell(cmd: Cmd, redirs: Sequence[Redir], ctx: Ctx) -> EffectVerdict:
    """``sh -c STRING`` analyses STRING; a shell reading a heredoc or here-string analyses
    it; a script file, or commands on standard input, are unknown."""
    remote = _remote_code(cmd)
    if remote is not None:
        return remote
    line = _cmdline(cmd)
    name = cmd.name or "sh"
    args = cmd.args
    i = 0
    inline = False
    while i < len(args):
        v = args[i].value
        if v is None or v == "-" or len(v) < 2 or v[0] not in "-+":
            break
        if v == "--":
            i += 1
            break
        if v.startswith("--"):
            i += 2 if v in ("--rcfile", "--init-file") else 1
            continue
        inline = inline or "c" in v[1:]
        i += 2 if v[-1] in "oO" else 1  # -o OPTION, -O SHOPT
    if inline:
        if i >= len(args):
            if cmd.via_xargs:
                return _unknown("shell-stdin", f"{name} -c runs text from its input: {line}", line)
            return _read("no-command", f"{name} -c with no command string runs nothing", line)
        found = _text(render(args[i].word, ctx), ctx.child())
        if args[i].value is None:
            found = worse(
                found,
                _unknown("eval", f"{name} -c runs text computed at run time: {line}", line),
            )
        return found or _read("no-command", f"{name} -c runs nothing", line)
    if i < len(args) and args[i].value != "-":
        return _unknown("script", f"{name} runs a script the rules cannot read: {line}", line)
    nothing = _read("no-command", f"{name} gets no commands", line)
    verdict: EffectVerdict | None = None
    for redir in redirs:
        if redir.op in ("<<", "<<-") and redir.body is not None:
            verdict = worse(verdict, _text(redir.body, ctx.child()) or nothing)
        elif redir.op == "<<<" and redir.target is not None:
            verdict = worse(verdict, _text(render(redir.target, ctx), ctx.child()) or nothing)
        elif redir.op in ("<", "<>"):
            verdict = worse(
                verdict, _unknown("script", f"{name} runs a script from a file: {line}", line)
            )
    return verdict or _unknown("shell-stdin", f"{name} runs commands from its input: {line}", line)


def _eval(cmd: Cmd, redirs: Sequence[Redir], ctx: Ctx) -> EffectVerdict:
    line = _cmdline(cmd)
    remote = _remote_code(cmd)
    if remote is not None:
        return remote
    found: EffectVerdict | None = None
    if any(a.value is None for a in cmd.args):
        found = _unknown("eval", f"eval runs text computed at run time: {line}", line)
    found = worse(found, _nested(" ".join(render(a.word, ctx) for a in cmd.args), ctx))
    return found or _read("no-command", "eval of nothing", line)


def _source(cmd: Cmd, redirs: Sequence[Redir], ctx: Ctx) -> EffectVerdict:
    line = _cmdline(cmd)
    remote = _remote_code(cmd)
    if remote is not None:
        return remote
    return _unknown("script", f"{cmd.name} runs a script the rules cannot read: {line}", line)


_AWK = _spec("S", "Fv", "--sandbox", "--field-separator --assign")
_AWK_RUNS = re.compile(r"system|getline|[>|@]")


def _awk(cmd: Cmd, redirs: Sequence[Redir], ctx: Ctx) -> EffectVerdict:
    """awk only reads when its program cannot run commands or write files: no ``system``,
    ``getline``, ``>``, ``|`` or ``@`` directive in it (or ``--sandbox``), no options but
    ``-F``, ``-v`` and ``--sandbox``."""
    line = _cmdline(cmd)
    parsed = _parse(cmd.args, _AWK)
    if parsed.bad is not None:
        return _unknown(
            "interpreter", f"{cmd.name} {parsed.bad} loads or writes files: {line}", line
        )
    if not parsed.operands or parsed.operands[0].value is None:
        return _unknown(
            "interpreter", f"{cmd.name} runs a program the rules cannot read: {line}", line
        )
    program = parsed.operands[0].value
    if _AWK_RUNS.search(program) and not parsed.has("-S", "--sandbox"):
        return _unknown(
            "interpreter", f"{cmd.name}'s program may run commands or write files: {line}", line
        )
    return _read("read-only-command", f"{cmd.name}'s program only reads and prints", line)


def _su(cmd: Cmd, redirs: Sequence[Redir], ctx: Ctx) -> EffectVerdict:
    line = _cmdline(cmd)
    for k, a in enumerate(cmd.args):
        if a.value in ("-c", "--command") and k + 1 < len(cmd.args):
            found = _text(render(cmd.args[k + 1].word, ctx), ctx.child())
            return found or _read("no-command", "su -c runs nothing", line)
        if a.value is not None and a.value.startswith("--command="):
            found = _text(a.value.partition("=")[2], ctx.child())
            return found or _read("no-command", "su -c runs nothing", line)
    return _unknown("shell-stdin", f"su runs a shell reading its input: {line}", line)


def _downloads(text: str) -> bool:
    """Whether the command text runs a downloader (curl, wget...)."""
    try:
        pipelines = parse(text)
    except TooDeep:
        return True
    probe = Ctx(World(None, ()), (CWD,), {})
    for node in simple_nodes(pipelines):
        cmd = unwrap([arg(w, probe) for w in node.words], probe)
        if isinstance(cmd, Cmd) and cmd.name in _DOWNLOADERS:
            return True
    return False


def _remote_code(cmd: Cmd) -> EffectVerdict | None:
    """``bash <(curl …)``, ``sh -c "$(curl …)"``, ``eval "$(wget -O- …)"``."""
    for a in cmd.args:
        if any(_downloads(inner) for inner in _commands_in(a.word.parts)):
            return _destructive(
                "download-run", f"downloaded code is run by {cmd.name}: {a.shown}", _cmdline(cmd)
            )
    return None


def _runs_stdin(cmd: Cmd, redirs: Sequence[Redir]) -> bool:
    """Whether the command executes what arrives on its standard input."""
    if cmd.name is None or any(r.op in ("<", "<<", "<<-", "<<<", "<>") for r in redirs):
        return False
    values = [a.value for a in cmd.args]
    if cmd.name in ("source", "."):
        return bool(values) and values[0] in ("/dev/stdin", "-")
    if not _is_interpreter(cmd.name):
        return False
    if cmd.via_xargs:
        return True  # `… | xargs sh -c`, `… | xargs -I{} python -c {}`: the input is code
    shell = cmd.name in _SHELLS
    i = 0
    while i < len(values):
        v = values[i]
        if v is None:
            return False
        if v in ("-", "/dev/stdin"):
            return True
        if v == "--":
            i += 1
            continue
        if not v.startswith(("-", "+")) or len(v) < 2:
            return False  # a script file
        if shell and not v.startswith("--"):
            if "c" in v[1:]:
                return False
            if "s" in v[1:]:
                return True
            i += 2 if v[-1] in "oO" else 1
            continue
        if v in _INLINE_CODE_FLAGS or (not shell and v[:2] in _INLINE_CODE_FLAGS):
            return False
        i += 2 if v in _INTERPRETER_ARG else 1
    return True


def _pipeline_rules(seen: Sequence[_Seen]) -> EffectVerdict | None:
    """Rules about a whole pipeline: downloads piped into code; literal text piped into a
    shell; ``find``/``ls``/``echo`` piped into ``xargs rm``."""
    verdict: EffectVerdict | None = None
    for j, (cmd, redirs, ctx) in enumerate(seen):
        upstream = [c for c, _, _ in seen[:j]]
        if _runs_stdin(cmd, redirs):
            for up in upstream:
                if up.name in _DOWNLOADERS:
                    return _destructive(
                        "download-run",
                        f"{up.name} output piped into {cmd.name}: runs downloaded code",
                        _cmdline(up),
                    )
            if cmd.name in _SHELLS and j == 1 and upstream[0].name == "echo":
                verdict = worse(verdict, _echoed(upstream[0], ctx))
        if cmd.via_xargs and cmd.name in _DELETERS | _PERMS:
            for up in upstream:
                found = _xargs_upstream(up, cmd, ctx)
                if found is not None:
                    return found
    return verdict


def _echoed(echo: Cmd, ctx: Ctx) -> EffectVerdict | None:
    """``echo 'rm -rf /' | sh``: the literal text a shell is fed."""
    words = [a.value for a in echo.args]
    while words and words[0] in ("-n", "-e", "-E"):
        words = words[1:]
    if any(w is None for w in words):
        return None
    return _text(" ".join(w or "" for w in words), ctx.child())


def _xargs_upstream(up: Cmd, cmd: Cmd, ctx: Ctx) -> EffectVerdict | None:
    if up.name == "find":
        starts, expr = _find_parts(up)
        action = f"| xargs {cmd.name}"
        whole = not _find_expr(expr, ctx).filtered
        found = _find_starts(starts, up.cwd, ctx, action, whole=whole)
        if found is not None:
            return found
    if up.name in ("echo", "printf", "ls"):
        items = tuple(up.args)
        if up.name == "ls" and not [a for a in items if not (a.value or "").startswith("-")]:
            items = (Arg(Word((("lit", "*"),)), "*", "*"),)  # ls lists the current directory
        fake = Cmd(cmd.name, cmd.head, cmd.args + items, up.cwd)
        found = _rm(fake, ctx) if cmd.name in ("rm", "unlink") else None
        if found is not None and found.effect == "destructive":
            return attrs.evolve(found, reason=f"{up.name} piped into xargs: {found.reason}")
    return None


# --- find ---------------------------------------------------------------------------------------

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


def _find_parts(cmd: Cmd) -> tuple[list[Arg], list[Arg]]:
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
class _FindExpr:
    """What a find expression does: its first deleting action (``-delete``, ``-exec rm``),
    the commands it runs, the files it writes, whether it tests anything, an unknown
    primary."""

    action: str | None
    execs: tuple[tuple[str, tuple[Arg, ...]], ...]
    writes: tuple[Arg, ...]
    filtered: bool
    unknown: str | None


def _find_expr(expr: Sequence[Arg], ctx: Ctx) -> _FindExpr:
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
            if isinstance(inner, Cmd) and inner.name in _DELETERS | _PERMS:
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
            return _FindExpr(action, tuple(execs), tuple(writes), filtered, v)
        j += 1
    return _FindExpr(action, tuple(execs), tuple(writes), filtered, None)


def _find_starts(
    starts: Sequence[Arg], cwd: Comps, ctx: Ctx, action: str, *, whole: bool
) -> EffectVerdict | None:
    """Destructive starting points of a deleting find (``whole``: it selects everything)."""
    for start in starts:
        if start.value is None:
            return _destructive(
                "find-delete-unresolvable",
                f"find {action} from a path the rules cannot resolve statically: {start.shown}",
                start.shown,
            )
        place = locate(start.value, cwd, ctx.world)
        kind, comps = place.kind, place.comps
        at = f"{start.shown}{hint(start.shown, comps)}"
        if kind == "root":
            return _destructive(
                "find-delete-outside", f"find {action} from the root directory: {at}", start.shown
            )
        if kind in _OUTSIDE_KINDS or kind in ("device", "safe_device"):
            return _destructive(
                "find-delete-outside", f"find {action} outside the workspace: {at}", start.shown
            )
        if whole and kind in ("workspace", "cwd"):
            where = "the whole workspace" if kind == "workspace" else "the whole current directory"
            return _destructive(
                "find-delete-workspace", f"find {action} of {where}: {at}", start.shown
            )
    return None


def _with_found(word: Word, found: str) -> Word:
    """``word`` with ``{}`` (find's found path) replaced by ``found``."""
    return Word(
        tuple((k, t.replace("{}", found)) if k in ("lit", "q") else (k, t) for k, t in word.parts)
    )


def _find(cmd: Cmd, redirs: Sequence[Redir], ctx: Ctx) -> EffectVerdict:
    """``find``: reads, unless it deletes (``-delete``), runs commands (``-exec``…) or writes
    files (``-fprint``…); those are judged on where they act."""
    line = _cmdline(cmd)
    starts, expr = _find_parts(cmd)
    parsed = _find_expr(expr, ctx)
    if parsed.action is not None:
        found = _find_starts(starts, cmd.cwd, ctx, parsed.action, whole=not parsed.filtered)
        if found is not None:
            return found
    if parsed.unknown is not None:
        return _unknown(
            "unknown-option", f"find {parsed.unknown} is not a primary the rules know: {line}", line
        )
    verdict: EffectVerdict | None = None
    for target in parsed.writes:
        verdict = worse(verdict, _path(ctx, cmd.cwd, target, "find -fprint", "write"))
    for primary, words in parsed.execs:
        verdict = worse(verdict, _find_exec(primary, words, starts, cmd, ctx))
    if parsed.action == "-delete":
        for start in starts:
            verdict = worse(verdict, _path(ctx, cmd.cwd, start, "find -delete", "prune"))
    follows = any(a.value in ("-L", "-H", "-follow") for a in cmd.args)
    if (parsed.action or parsed.execs) and follows and not _bad(verdict):
        verdict = worse(
            verdict,
            _unknown(
                "find-follows-links",
                f"find follows links to act on what they point at: {line}",
                line,
            ),
        )
    return verdict or _read("read-only-command", "find only reads", line)


def _find_exec(
    primary: str, words: Sequence[Arg], starts: Sequence[Arg], cmd: Cmd, ctx: Ctx
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
        inner = unwrap(inner_args, sub_ctx)
        found: EffectVerdict | None
        if isinstance(inner, Text):
            found = _text(inner.text, sub_ctx.child())
            found = _around(found, inner.wrappers, inner.env, sub_ctx, _clip(inner.text))
        elif inner is not None:
            found = _command(inner, (), sub_ctx)
            found = _around(found, inner.wrappers, inner.env, sub_ctx, _cmdline(inner))
        else:
            found = None
        verdict = worse(verdict, found)
        if _bad(verdict):
            return verdict
    return verdict


# --- sed ----------------------------------------------------------------------------------------

_SED = _spec(
    "nErsuzb",
    "efl",
    "--quiet --silent --regexp-extended --separate --unbuffered --null-data --posix --debug"
    " --sandbox --follow-symlinks --binary --in-place",
    "--expression --file --line-length",
)


def _sed(cmd: Cmd, redirs: Sequence[Redir], ctx: Ctx) -> EffectVerdict:
    """``sed``: reads, unless it edits in place (``-i``), writes files (``w``, ``W``,
    ``s///w``) or runs commands (``e``, ``s///e``: destructive, text run as a command)."""
    line = _cmdline(cmd)
    # -i takes an optional suffix glued to it (-i.bak); -ie is suffix "e".
    args: list[Arg] = []
    in_place = False
    for a in cmd.args:
        v = a.value
        if v is not None and v.startswith("-") and not v.startswith("--") and "i" in v:
            head, _, _ = v.partition("i")
            in_place = True
            if head != "-":
                args.append(Arg(a.word, head, a.shown))
            continue
        args.append(a)
    parsed = _parse(args, _SED)
    if parsed.bad is not None:
        return _unknown_option(cmd, parsed)
    in_place = in_place or parsed.has("--in-place")
    if parsed.has("-f", "--file"):
        return _unknown("sed-script-file", f"sed reads its script from a file: {line}", line)
    scripts = [v for v in parsed.values("-e", "--expression") if v is not None]
    operands = list(parsed.operands)
    if not scripts:
        if not operands:
            return _read("read-only-command", "sed with no script fails", line)
        scripts, operands = [operands[0]], operands[1:]
    if any(s.value is None for s in scripts):
        return _unknown("sed-script", f"sed's script cannot be resolved statically: {line}", line)
    program = "\n".join(s.value or "" for s in scripts)
    runs, written, readable = _sed_program(program)
    sandbox = parsed.has("--sandbox")
    if not readable:
        return _unknown("sed-script", f"sed's script cannot be read by the rules: {line}", line)
    if runs and not sandbox:
        return _destructive(
            "sed-exec", f"sed's e command runs text as a shell command: {line}", line
        )
    verdict: EffectVerdict | None = None
    if not sandbox:
        for target in written:
            word = Word((("q", target),))
            verdict = worse(
                verdict, _path(ctx, cmd.cwd, Arg(word, target, target), "sed w", "write")
            )
    if in_place and not _bad(verdict):
        # sed -i writes a new file in the link's place, unless told to follow links.
        follows = parsed.has("--follow-symlinks")
        for a in operands:
            found = _path(ctx, cmd.cwd, a, "sed -i", "write", follow=follows)
            verdict = worse(verdict, found)
            if _bad(verdict):
                break
    return verdict or _read("read-only-command", "sed only reads", line)


_SED_SIMPLE = frozenset("=dDgGhHlnNpPxzFLqQ")


def _sed_program(script: str) -> tuple[bool, list[str], bool]:
    """Whether a sed script runs commands, the files it writes, and whether it could be
    read at all (anything not understood: ``False``)."""
    runs = False
    written: list[str] = []
    i, n = 0, len(script)

    def to_eol(k: int) -> tuple[str, int]:
        j = script.find("\n", k)
        j = n if j < 0 else j
        return script[k:j], j

    def regex_end(k: int, delim: str) -> int:
        while k < n and script[k] != delim:
            if script[k] == "\\":
                k += 1
            elif script[k] == "\n" and delim != "\n":
                return -1
            k += 1
        return k if k < n else -1

    while i < n:
        c = script[i]
        if c in " \t\n;}":
            i += 1
            continue
        if c == "#":
            _, i = to_eol(i)
            continue
        # addresses: N, $, /re/, \cREc, first~step, addr,addr, addr,+N, addr,~N, then !
        for _ in range(2):
            if i < n and script[i].isdigit():
                while i < n and (script[i].isdigit() or script[i] == "~"):
                    i += 1
            elif i < n and script[i] == "$":
                i += 1
            elif i < n and script[i] in "/\\":
                delim = script[i + 1] if script[i] == "\\" and i + 1 < n else "/"
                start = i + 2 if script[i] == "\\" else i + 1
                end = regex_end(start, delim)
                if end < 0:
                    return runs, written, False
                i = end + 1
                while i < n and script[i] in "IM":
                    i += 1
            if i < n and script[i] == "," and _ == 0:
                i += 1
                if i < n and script[i] in "+~":
                    i += 1
                continue
            break
        while i < n and script[i] in " \t!":
            i += 1
        if i >= n:
            break
        c = script[i]
        i += 1
        if c == "{":
            continue
        if c in _SED_SIMPLE:
            while i < n and script[i].isdigit():
                i += 1
        elif c in "aic":
            text, i = to_eol(i)
            while text.endswith("\\") and i < n:
                text, i = to_eol(i + 1)
        elif c in ":btTv":
            while i < n and script[i] not in ";\n":
                i += 1
        elif c in "rR":
            _, i = to_eol(i)
        elif c in "wW":
            name, i = to_eol(i)
            written.append(name.strip())
        elif c == "e":
            runs = True
            _, i = to_eol(i)
        elif c in "sy":
            if i >= n:
                return runs, written, False
            delim = script[i]
            if delim in "\n\\":
                return runs, written, False
            mid = regex_end(i + 1, delim)
            end = regex_end(mid + 1, delim) if mid >= 0 else -1
            if end < 0:
                return runs, written, False
            i = end + 1
            if c == "s":
                while i < n and script[i] not in ";\n}#":
                    flag = script[i]
                    if flag == "e":
                        runs = True
                    elif flag == "w":
                        name, i = to_eol(i + 1)
                        written.append(name.strip())
                        break
                    elif flag not in "gpiImM0123456789 \t":
                        return runs, written, False
                    i += 1
        else:
            return runs, written, False
    return runs, written, True


# --- git ----------------------------------------------------------------------------------------

GIT_READ = names(
    "status log diff show rev-parse rev-list ls-files ls-tree cat-file describe shortlog blame"
    " annotate grep show-ref for-each-ref merge-base name-rev count-objects verify-commit"
    " verify-tag var check-ignore check-attr check-ref-format cherry whatchanged range-diff"
    " diff-tree diff-index diff-files help version show-branch"
)
"""git subcommands that only read (unless given an output file)."""
GIT_WORKSPACE = names(
    "add commit checkout switch restore reset merge rebase cherry-pick revert am apply mv rm"
    " tag branch stash notes init gc repack fsck update-ref symbolic-ref bisect replace"
    " pack-refs sparse-checkout read-tree write-tree commit-tree hash-object update-index"
    " mktag mktree clean prune reflog remote config worktree format-patch archive bundle"
    " filter-branch"
)
"""git subcommands that change the repository they run in (some forms are judged further)."""
_GIT_NETWORK = names("fetch pull push clone ls-remote submodule send-email request-pull")
_GIT_GLOBAL_FLAGS = names(
    "-P -p --paginate --no-pager --no-optional-locks --literal-pathspecs --glob-pathspecs"
    " --noglob-pathspecs --icase-pathspecs --no-replace-objects --no-lazy-fetch --bare"
    " --no-advice"
)
_GIT_PRINTS = names("--version --help --html-path --man-path --info-path --exec-path")
_GIT_TREE_CHANGERS = names(
    "checkout switch restore reset merge rebase cherry-pick revert am apply stash bisect"
    " read-tree sparse-checkout"
)


def _git(cmd: Cmd, redirs: Sequence[Redir], ctx: Ctx) -> EffectVerdict:
    args = cmd.args
    line = _cmdline(cmd)
    cwd = cmd.cwd
    elsewhere: list[Arg] = []
    i = 0
    while i < len(args):
        a = args[i]
        v = a.value
        if v is None:
            return _unknown(
                "unresolvable-argument",
                f"git {a.shown} cannot be resolved statically: {line}",
                line,
            )
        if v == "-C" and i + 1 < len(args):
            where = args[i + 1].value
            cwd = components(where, cwd) if where is not None else (CWD,)
            i += 2
        elif v in ("--git-dir", "--work-tree") and i + 1 < len(args):
            elsewhere.append(args[i + 1])
            i += 2
        elif v.startswith(("--git-dir=", "--work-tree=")):
            value = v.partition("=")[2]
            elsewhere.append(Arg(a.word, value, value))
            i += 1
        elif v == "--namespace" or v.startswith("--namespace="):
            i += 1 if "=" in v else 2
        elif v in _GIT_GLOBAL_FLAGS:
            i += 1
        elif v in _GIT_PRINTS:
            return _read("read-only-command", f"git {v} only prints", line)
        elif v.startswith(("-c", "--config-env", "--exec-path=")):
            return _unknown(
                "git-config",
                f"git {v} changes configuration for this run, which can make git run"
                f" programs: {line}",
                line,
            )
        elif v.startswith("-"):
            return _unknown(
                "unknown-option", f"git {v} is not an option the rules know: {line}", line
            )
        else:
            break
    if i >= len(args):
        return _read("read-only-command", "git with no subcommand prints its help", line)
    sub = args[i].value or ""
    rest = list(args[i + 1 :])
    values = [a.value or "" for a in rest]
    found = _git_destructive(sub, values, rest, cwd, ctx)
    if found is not None:
        return found
    if sub in _GIT_NETWORK:
        return _unknown("network-client", f"git {sub} talks to a remote: {line}", line)
    kind = _git_form(sub, values)
    if kind == "unknown" or sub not in GIT_READ | GIT_WORKSPACE:
        return _unknown(
            "git-subcommand", f"git {sub} is not a form whose effect the rules know: {line}", line
        )
    outputs = _git_outputs(sub, rest)
    verdict: EffectVerdict | None = None
    for target in outputs:
        verdict = worse(verdict, _path(ctx, cwd, target, f"git {sub}", "write"))
    if _bad(verdict):
        return verdict
    if kind == "read":
        return worse(verdict, _read("git-read", f"git {sub} only reads", line))
    repo = _git_repo(sub, cwd, elsewhere, ctx, line)
    if repo.effect == "workspace" and sub in _GIT_TREE_CHANGERS:
        root = ctx.world.workspace if ctx.world.workspace is not None else cwd
        ctx.changed.append(root)
    return worse(verdict, repo)


def _git_repo(sub: str, cwd: Comps, elsewhere: Sequence[Arg], ctx: Ctx, line: str) -> EffectVerdict:
    """Where a changing git command acts: its repository must be the workspace's (or one
    in the scratch or writable directories)."""
    here = classify(cwd, ctx.world)[0] if anchored(cwd) else locate(show(cwd), (), ctx.world).kind
    places = [(show(cwd), here)]
    for a in elsewhere:
        if a.value is None:
            return _unknown(
                "unresolvable-target", f"git {sub}: {a.shown} cannot be resolved statically", line
            )
        places.append((a.shown, locate(a.value, cwd, ctx.world).kind))
    for shown, kind in places:
        if kind in _OUTSIDE_KINDS or kind in ("device", "safe_device"):
            return _destructive(
                "git-outside-workspace",
                f"git {sub} changes a repository outside the workspace: {shown}",
                line,
            )
        if kind in ("cwd", "below_cwd"):
            return _unknown(
                "unknown-directory",
                f"git {sub} changes a repository the rules cannot place: {line}",
                line,
            )
    return _workspace("git-workspace", f"git {sub} changes only the workspace's repository", line)


_GIT_BRANCH_CHANGES = (("d", "--delete"), ("m", "--move"), ("c", "--copy"),
                       ("u", "--set-upstream-to"))  # fmt: skip
_GIT_BRANCH_LISTS = (("l", "--list"), ("a", "--all"), ("r", "--remotes"), ("v", "--verbose"))
_GIT_TAG_CHANGES = (("d", "--delete"), ("a", "--annotate"), ("s", "--sign"), ("f", "--force"),
                    ("m", "--message"), ("e", "--edit"))  # fmt: skip
_GIT_LIST_OPTIONS = ("--contains", "--no-contains", "--merged", "--no-merged", "--points-at",
                     "--show-current", "--format", "--sort", "--column", "-n")  # fmt: skip
_GIT_CONFIG_CHANGES = ("--unset", "--add", "--replace", "--rename", "--remove", "--edit", "-e")
_GIT_REMOTE_CHANGES = names("add rename remove rm set-url set-head set-branches")


def _any_flag(flags: Sequence[str], options: Sequence[tuple[str, str]]) -> bool:
    return any(_git_flag(v, letter, long) for v in flags for letter, long in options)


def _git_form(sub: str, values: list[str]) -> Literal["read", "workspace", "unknown"]:
    """Whether a git subcommand (of :data:`GIT_READ` or :data:`GIT_WORKSPACE`) reads, changes
    the repository, or does something the rules do not follow."""
    flags = [v for v in values if v.startswith("-")]
    operands = [v for v in values if not v.startswith("-")]
    first = operands[0] if operands else ""
    if sub in GIT_READ:
        return (
            "unknown"
            if sub == "grep" and _any_flag(flags, [("O", "--open-files-in-pager")])
            else "read"
        )
    if sub in ("branch", "tag"):
        if any(v.startswith("--edit-description") for v in flags):
            return "unknown"
        changes = _any_flag(flags, _GIT_BRANCH_CHANGES if sub == "branch" else _GIT_TAG_CHANGES)
        changes = changes or any(
            v.startswith(("--unset-upstream", "--track", "--no-track")) for v in flags
        )
        listing = _any_flag(flags, _GIT_BRANCH_LISTS if sub == "branch" else [("l", "--list")])
        listing = listing or any(v.startswith(_GIT_LIST_OPTIONS) for v in flags)
        return "workspace" if changes or (operands and not listing) else "read"
    if sub == "stash":
        return "read" if first in ("list", "show") else "workspace"
    if sub == "reflog":
        return "read"  # expire/delete are destructive (judged before)
    if sub == "notes":
        return "read" if first in ("", "list", "show") else "workspace"
    if sub == "remote":
        if first in ("", "get-url"):
            return "read"
        return "workspace" if first in _GIT_REMOTE_CHANGES else "unknown"
    if sub == "config":
        if any(v.startswith(_GIT_CONFIG_CHANGES) for v in flags):
            return "unknown"
        if first in ("get", "list") or any(v.startswith(("--get", "--list", "-l")) for v in flags):
            return "read"
        return "read" if len(operands) == 1 and not flags else "unknown"
    if sub == "worktree":
        return "read" if first == "list" else "unknown"
    if sub == "apply" and any(v.startswith("--unsafe-paths") for v in flags):
        return "unknown"  # it may then write outside the working tree
    if sub == "rebase" and any(
        _git_flag(v, "i", "--interactive") or _git_flag(v, "x", "--exec") or v.startswith("--exec")
        for v in flags
    ):
        return "unknown"
    if sub == "bisect":
        if first in ("log", "visualize", "view"):
            return "read"
        return "unknown" if first == "run" else "workspace"
    if sub == "symbolic-ref":
        if any(_git_flag(v, "d", "--delete") for v in flags):
            return "unknown"
        return "read" if len(operands) <= 1 else "workspace"
    if sub in ("clean", "prune"):
        return "read"  # the deleting forms are destructive (judged before)
    if sub == "archive":
        return "unknown" if any(v.startswith("--remote") for v in flags) else "read"
    if sub == "bundle":
        return (
            "read"
            if first in ("verify", "list-heads")
            else "workspace"
            if first == "create"
            else "unknown"
        )
    if sub == "format-patch" and any(v == "--stdout" for v in flags):
        return "read"
    return "workspace"


def _git_outputs(sub: str, rest: Sequence[Arg]) -> list[Arg]:
    """Files a git subcommand is told to write (``--output``, ``-o``, ``bundle create F``,
    ``init DIR``)."""
    out: list[Arg] = []
    for k, a in enumerate(rest):
        v = a.value or ""
        key, eq, given = v.partition("=")
        nxt = rest[k + 1] if k + 1 < len(rest) else None
        if _long(key, ["--output", "--output-directory"]) and key.startswith("--ou"):
            if eq:
                out.append(Arg(a.word, given, given))
            elif nxt is not None:
                out.append(nxt)
        elif v == "-o" and sub in ("archive", "format-patch") and nxt is not None:
            out.append(nxt)
        elif key == "--separate-git-dir" and sub == "init":
            out.append(Arg(a.word, given, given) if eq else nxt or a)
    operands = [a for a in rest if not (a.value or "-").startswith("-")]
    if sub == "bundle" and len(operands) > 1 and operands[0].value == "create":
        out.append(operands[1])
    if sub == "init" and operands:
        out.append(operands[-1])
    return out


def _git_flag(value: str, letter: str, long: str, arg_letters: str = "") -> bool:
    """Whether ``value`` is ``long`` (or an abbreviation of it) or a short cluster holding
    ``letter`` (letters after one in ``arg_letters`` are that option's value)."""
    if value.startswith("--"):
        return bool(_long(value.partition("=")[0], [long]))
    if not value.startswith("-"):
        return False
    for ch in value[1:]:
        if ch == letter:
            return True
        if ch in arg_letters:
            return False
    return False


def _git_destructive(
    sub: str, values: list[str], rest: Sequence[Arg], cwd: Comps, ctx: Ctx
) -> EffectVerdict | None:
    """The git forms that destroy work or history (see the module docstring)."""
    flags = [v for v in values if v.startswith("-")]
    operands = [v for v in values if not v.startswith("-")]
    first = operands[0] if operands else ""
    subject = " ".join(["git", sub, *values])[:120]

    def bad(rule: str, reason: str) -> EffectVerdict:
        return _destructive(rule, reason, subject)

    if sub == "reset" and any(_git_flag(v, "", "--hard") for v in flags):
        return bad("git-reset-hard", "git reset --hard discards uncommitted changes")
    if sub == "push":
        reason = _git_push_reason(values)
        return bad("git-push-force", reason) if reason else None
    if sub == "clean":
        dry = any(_git_flag(v, "n", "--dry-run") for v in flags)
        if dry:
            return None
        if any(_git_flag(v, "f", "--force") for v in flags):
            return bad("git-clean", f"git clean -f deletes untracked files: {' '.join(flags)}")
        return bad(
            "git-clean", "git clean deletes untracked files (when clean.requireForce is off)"
        )
    if sub in ("checkout", "restore", "switch"):
        reason = _git_discard_reason(sub, values, rest, cwd, ctx)
        return bad("git-discard", reason) if reason else None
    if sub == "stash" and first in ("drop", "clear"):
        return bad(
            "git-stash-drop",
            f"git stash {first} drops {'every stash' if first == 'clear' else 'a stash'} for good",
        )
    if sub == "branch":
        force = any(_git_flag(v, "f", "--force") for v in flags)
        delete = any(_git_flag(v, "d", "--delete") for v in flags)
        if any(_git_flag(v, "D", "") for v in flags) or (force and delete):
            return bad(
                "git-branch-force-delete", "git branch -D deletes a branch even if it is not merged"
            )
        if any(_git_flag(v, "M", "") or _git_flag(v, "C", "") for v in flags) or (
            force and any(_git_flag(v, "m", "--move") or _git_flag(v, "c", "--copy") for v in flags)
        ):
            return bad("git-branch-force-delete", "git branch -M/-C overwrites an existing branch")
    if sub == "reflog" and first in ("expire", "delete"):
        return bad(
            "git-history", f"git reflog {first} drops the history that recovers lost commits"
        )
    if sub == "gc" and any(v.startswith("--prune") for v in flags):
        return bad("git-history", "git gc --prune deletes unreachable objects for good")
    if sub == "prune" and not any(_git_flag(v, "n", "--dry-run") for v in flags):
        return bad("git-history", "git prune deletes unreachable objects for good")
    if sub in ("filter-branch", "filter-repo"):
        return bad("git-history", f"git {sub} rewrites the whole history")
    if sub == "update-ref" and any(_git_flag(v, "d", "") for v in flags):
        return bad("git-history", "git update-ref -d deletes a ref")
    if sub == "rm" and not any(v.startswith("--cached") for v in flags):
        for spec, a in zip(values, rest, strict=True):
            if not spec.startswith("-") and _wholesale(spec, a, cwd, ctx) is True:
                return bad("git-discard", f"git rm deletes every file: {spec}")
    return None


def _git_push_reason(rest: list[str]) -> str | None:
    force: str | None = None
    delete: str | None = None
    dry = False
    positional: list[str] = []
    end = False
    j = 0
    push_long = ["--force", "--force-with-lease", "--mirror", "--delete", "--prune", "--dry-run"]
    while j < len(rest):
        v = rest[j]
        if not end and v == "--":
            end = True
        elif not end and v.startswith("--"):
            key = v.partition("=")[0]
            hits = _long(key, push_long)
            if any(h in ("--force", "--force-with-lease") for h in hits):
                force = force or v
            elif any(h in ("--mirror", "--delete", "--prune") for h in hits):
                delete = delete or v
            elif hits == ["--dry-run"]:
                dry = True
            elif key in ("--repo", "--receive-pack", "--exec", "--push-option") and "=" not in v:
                j += 1
        elif not end and v.startswith("-") and len(v) > 1:
            for k, ch in enumerate(v[1:]):
                if ch == "o":  # -o OPTION
                    j += 1 if k == len(v) - 2 else 0
                    break
                if ch == "f":
                    force = force or v
                elif ch == "d":
                    delete = delete or v
                elif ch == "n":
                    dry = True
        else:
            positional.append(v)
        j += 1
    for refspec in positional[1:]:
        if refspec.startswith("+"):
            force = force or refspec
        elif refspec.startswith(":") and len(refspec) > 1:
            delete = delete or refspec
    if dry:
        return None
    if force:
        return f"git push --force rewrites remote history: {force}"
    if delete:
        return f"git push deletes remote refs: {delete}"
    return None


_MAGIC = re.compile(r":(?:\((?P<long>[^)]*)\)|(?P<short>[/!^]*))")


def _wholesale(spec: str, a: Arg, cwd: Comps, ctx: Ctx) -> bool | None:
    """Whether a git pathspec covers every file (``.``, ``*``, ``:/``, ``:!x``,
    ``:(glob)**``); ``None``: it cannot be resolved statically."""
    if a.value is None:
        return None
    top = False
    if spec.startswith(":"):
        m = _MAGIC.match(spec)
        magic_words = (m.group("long") or "").split(",") if m else []
        short = (m.group("short") or "") if m else ""
        pattern = spec[m.end() :] if m else spec[1:]
        if "exclude" in magic_words or "!" in short or "^" in short:
            return True  # everything but some paths
        top = "top" in magic_words or "/" in short or spec == ":"
        if not pattern:
            return True
        spec = pattern
    base = ctx.world.workspace if top and ctx.world.workspace is not None else cwd
    kind, _ = classify(components(spec, base), ctx.world)
    return kind in ("root", "workspace", "cwd", "area", "outside", "home", "escaped")


def _git_discard_reason(
    sub: str, values: list[str], rest: Sequence[Arg], cwd: Comps, ctx: Ctx
) -> str | None:
    """Wholesale discards of uncommitted work: ``git checkout -- .``, ``git checkout -f``,
    ``git restore .``, ``git switch --discard-changes``. Pathspec-limited ones are normal."""
    arg_letters = {"checkout": "bBU", "restore": "s", "switch": "cC"}[sub]
    if any(_git_flag(v, "f", "--force", arg_letters) for v in values) and sub != "restore":
        return f"git {sub} --force discards local changes"
    if sub == "switch":
        if any(_git_flag(v, "", "--discard-changes") for v in values):
            return "git switch --discard-changes discards local changes"
        return None
    staged = any(_git_flag(v, "S", "--staged", arg_letters) for v in values)
    worktree = any(_git_flag(v, "W", "--worktree", arg_letters) for v in values)
    if sub == "restore" and staged and not worktree:
        return None  # only unstages
    end = False
    j = 0
    while j < len(values):
        v = values[j]
        if end or not v.startswith("-"):
            if _wholesale(v, rest[j], cwd, ctx) is True:
                return f"git {sub} discards every uncommitted change: {v}"
        elif v == "--":
            end = True
        elif v in ("-s", "--source", "-b", "-B", "--orphan", "--conflict"):
            j += 1
        j += 1
    return None


def _kill(cmd: Cmd, redirs: Sequence[Redir], ctx: Ctx) -> EffectVerdict:
    """``kill -9 -1`` (every process) or a kill of pid 1: destructive; any other kill is
    unknown (which processes get the signal cannot be read statically)."""
    values = [a.value for a in cmd.args]
    line = _cmdline(cmd)
    i = 0
    if values[:1] in (["-l"], ["-L"]):
        return _read("read-only-command", "kill -l only lists signals", line)
    if i < len(values) and values[i] in ("-s", "-n"):
        i += 2
    elif i < len(values) and (v := values[i]) is not None and v.startswith("-") and v != "--":
        i += 1  # -9, -KILL, -SIGKILL
    for v in values[i:]:
        if v == "-1":
            return _destructive(
                "kill-all", f"kill of every process the user may signal: {line}", line
            )
        if v == "1":
            return _destructive("kill-init", f"kill of init (pid 1): {line}", line)
    return _unknown("signal", f"kill signals processes the rules cannot tell apart: {line}", line)


def _systemctl(cmd: Cmd, redirs: Sequence[Redir], ctx: Ctx) -> EffectVerdict:
    line = _cmdline(cmd)
    verbs = [a.value for a in cmd.args if a.value and not a.value.startswith("-")]
    if verbs and verbs[0] in _SYSTEMCTL_POWER:
        return _destructive("power", f"systemctl {verbs[0]} stops or restarts the machine", line)
    if not verbs or verbs[0] in _SYSTEMCTL_READ:
        return _read("read-only-command", "systemctl only shows state", line)
    return _unknown("system-setting", f"systemctl {verbs[0]} changes services: {line}", line)


def _init(cmd: Cmd, redirs: Sequence[Redir], ctx: Ctx) -> EffectVerdict:
    line = _cmdline(cmd)
    if any(a.value in ("0", "6", "1", "s", "S") for a in cmd.args):
        return _destructive(
            "power", f"{cmd.name} changes the runlevel (halt/reboot/single-user): {line}", line
        )
    return _unknown("system-setting", f"{cmd.name} changes the runlevel: {line}", line)


def _crontab(cmd: Cmd, redirs: Sequence[Redir], ctx: Ctx) -> EffectVerdict:
    line = _cmdline(cmd)
    flags = [a.value for a in cmd.args if a.value and a.value.startswith("-")]
    if any(not f.startswith("--") and "r" in f[1:] for f in flags):
        return _destructive("crontab-remove", "crontab -r deletes every cron job", line)
    if flags and all(f == "-l" for f in flags):
        return _read("read-only-command", "crontab -l only lists", line)
    return _unknown("system-setting", f"crontab changes scheduled jobs: {line}", line)


_CURL_ARG = frozenset("AbcCdDeEFHKmoPQrtTuUwxXyYz")
_CURL_OUTPUTS = {"-o": "--output", "-D": "--dump-header", "-c": "--cookie-jar"}
_CURL_LONG_OUTPUTS = names(
    "--output --dump-header --cookie-jar --output-dir --trace --trace-ascii --stderr --libcurl"
)
_WGET_ARG = frozenset("eoaiBtOTwQPUlARDIXY")
_WGET_OUTPUTS = {"-O": "--output-document", "-P": "--directory-prefix", "-o": "--output-file",
                 "-a": "--append-output"}  # fmt: skip


def _downloader_outputs(cmd: Cmd, ctx: Ctx) -> EffectVerdict | None:
    """curl/wget writing a download, a log or a cookie jar outside the workspace (or onto a
    device): destructive. ``None``: nothing destructive found (they stay unknown)."""
    name = cmd.name
    if name not in ("curl", "wget"):
        return None
    short_arg = _CURL_ARG if name == "curl" else _WGET_ARG
    outputs = _CURL_OUTPUTS if name == "curl" else _WGET_OUTPUTS
    long_outputs = _CURL_LONG_OUTPUTS if name == "curl" else frozenset(outputs.values())
    targets: list[Arg] = []
    if name == "wget" or any(a.value in ("-O", "--remote-name") for a in cmd.args):
        targets.append(Arg(Word((("lit", "index.html"),)), "index.html", "the downloaded file"))
    args = cmd.args
    for k, a in enumerate(args):
        v = a.value or ""
        nxt = args[k + 1] if k + 1 < len(args) else None
        if v.startswith("--"):
            key, eq, given = v.partition("=")
            if _long(key, long_outputs):
                targets.append(Arg(a.word, given, given) if eq else nxt or a)
        elif v.startswith("-"):
            for j, ch in enumerate(v[1:]):
                if ch in short_arg:
                    if f"-{ch}" in outputs:
                        rest = v[j + 2 :]
                        targets.append(Arg(a.word, rest, rest) if rest else nxt or a)
                    break
    for t in targets:
        if t.value in ("-", None):
            continue
        found = _path(ctx, cmd.cwd, t, name, "write")
        if found.effect == "destructive":
            return found
    return None


def _operands(
    args: Sequence[Arg], with_arg: frozenset[str], long_with_arg: frozenset[str]
) -> list[Arg]:
    """The non-option arguments (options may come anywhere before ``--``, GNU style)."""
    out: list[Arg] = []
    i = 0
    end = False
    while i < len(args):
        v = args[i].value
        if end or v is None or v == "-" or not v.startswith("-"):
            out.append(args[i])
        elif v == "--":
            end = True
        else:
            i += option_width(args, i, with_arg, long_with_arg) - 1
        i += 1
    return out


def _rm_judge(cmd: Cmd, redirs: Sequence[Redir], ctx: Ctx) -> EffectVerdict:
    return _rm(cmd, ctx)


_Judge: TypeAlias = Callable[[Cmd, Sequence[Redir], Ctx], EffectVerdict]
_JUDGES: dict[str, _Judge] = {
    **dict.fromkeys(_SHELLS, _shell),
    "eval": _eval,
    "source": _source,
    ".": _source,
    "su": _su,
    "cd": _cd,
    "pushd": _cd,
    "popd": _cd,
    **dict.fromkeys(("export", "declare", "typeset", "local", "readonly"), _declare),
    **dict.fromkeys(
        ("unset", "read", "mapfile", "readarray", "getopts", "printf", "let", "set"), _reads_names
    ),
    "trap": _trap,
    **dict.fromkeys(("awk", "gawk", "mawk", "nawk"), _awk),
    **dict.fromkeys(("alias", "enable"), _unknown_state),
    "hash": _hash,
    "history": _history,
    "hostname": _hostname,
    **dict.fromkeys(("rm", "unlink", "rmdir"), _rm_judge),
    **dict.fromkeys(("mkdir", "touch", "tee", "truncate", "shred", "sudoedit"), _writes),
    **dict.fromkeys(("cp", "mv", "ln", "install"), _copy),
    "rsync": _rsync,
    "dd": _dd,
    **dict.fromkeys(_PERMS, _perm),
    "mktemp": _mktemp,
    **dict.fromkeys(_READERS, _read_with_outputs),
    "sed": _sed,
    "find": _find,
    "git": _git,
    "kill": _kill,
    "systemctl": _systemctl,
    "init": _init,
    "telinit": _init,
    "crontab": _crontab,
}
