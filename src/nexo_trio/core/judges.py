"""The judges: what a Bash command does, as an effect (:func:`command_effect`).

How Bash commands are read: the text is parsed into simple commands
(:mod:`~nexo_trio.core.shell_syntax`), each of which is brace-expanded, unwrapped from its
prefixes (``sudo``, ``env``, ``xargs``…), resolved against the variables and the virtual
current directory (:mod:`~nexo_trio.core.invocation`) and judged by name; every path it
writes, deletes or moves is placed with :mod:`~nexo_trio.core.path_model` (symlinks resolved
by the resolver given, see :mod:`~nexo_trio.core.targets`). Command strings run by
``sh -c``/``bash -c``/…, ``eval``, ``su -c``, ``trap``, ``env -S``, ``watch``, wrappers'
``-c`` and shells fed a heredoc are analysed recursively; command substitutions (in words,
redirections, heredocs, arithmetic, ``for`` and ``case`` words) are analysed as commands
(they run, see :mod:`~nexo_trio.core.substitutions`). Quoted text is data, not a command:
``echo "rm -rf /"`` only reads. Fork bombs are spotted in the raw text
(:mod:`~nexo_trio.core.fork_bomb`).

Every simple command gets an effect, and a compound command the worst of its parts
(``destructive`` > ``unknown`` > ``workspace`` > ``read``; the first part with the worst
effect names the reason; see :mod:`~nexo_trio.core.verdicts`). This module walks the command
(lists, pipelines, groups, simple commands, redirections) and hands each simple command to
the judge of its name, one module per family:

* :mod:`~nexo_trio.core.reader_judges`: the read allow-list (:data:`READ_ONLY_COMMANDS`),
  and readers with options that write or run programs (``sort -o``, ``rg --pre``…);
* :mod:`~nexo_trio.core.file_judges`: the write allow-list, commands that write, move,
  delete files or change their permissions (``rm``, ``cp``, ``mv``, ``tee``, ``dd``,
  ``chmod``…);
* :mod:`~nexo_trio.core.sed_judges` and :mod:`~nexo_trio.core.find_judges`: ``sed`` and
  ``find``, which read unless told to write, delete or run commands;
* :mod:`~nexo_trio.core.git_judges`: ``git`` (:data:`GIT_READ`, :data:`GIT_WORKSPACE`,
  the forms that destroy work or history);
* :mod:`~nexo_trio.core.code_judges`: shells, interpreters, ``eval``, ``source``, ``awk``,
  build tools, package managers, network clients, containers, editors;
* :mod:`~nexo_trio.core.download_judges`: downloads written outside, downloaded code run;
* :mod:`~nexo_trio.core.shell_state_judges`: ``cd``, ``export``, ``set``, ``read``,
  ``trap``…;
* :mod:`~nexo_trio.core.system_judges`: processes, services, power, runlevels, cron,
  filesystems.

In short (the family modules say the rest; long options are matched abbreviated too, see
:mod:`~nexo_trio.core.options`):

* ``read``: the read allow-list, ``git`` subcommands that only read, ``sed`` and ``find``
  without their writing or program-running options, ``awk`` whose program cannot run
  commands or write files, shell state, version queries (``python3 --version``), writes to
  ``/dev/null`` and its friends.
* ``workspace``: the write allow-list, ``sed -i``, redirections, output options of the
  readers, when every target lands inside the workspace, the scratch directory or a writable
  directory; ``git`` subcommands that change only the workspace's repository.
* ``destructive`` (with the rule that fired): deleting ``/``, ``~`` or the whole workspace;
  losing a repository's ``.git``; any write, delete, move, truncation, permission change
  aimed outside the workspace, scratch and writable directories or at a device (redirections
  and ``/dev/tcp`` too); the ``git`` forms that destroy work or history; ``sed``'s ``e``;
  formatting filesystems; fork bombs; downloads run as code (``curl … | sh``, ``curl … |
  xargs sh -c``, ``bash <(curl …)``, ``sh -c "$(curl …)"``); a deleting ``find`` from
  outside or of the whole workspace, ``find``/``ls``/``echo`` piped into ``xargs rm``;
  machine power, runlevels; ``kill -1``/``kill 1``, ``killall``/``pkill``; ``crontab -r``.
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
* The repository a ``git`` command changes is taken to be the workspace's (see
  :mod:`~nexo_trio.core.git_judges`). Hooks and configuration already in the repository,
  and the user's own shell aliases and functions, are trusted (``git commit`` runs hooks).
* Command names are the system's commands: ``PATH`` is trusted (but a change of it in the
  command is not).
* ``cd`` is assumed to succeed, and the shell syntax is read approximately in places (see
  :mod:`~nexo_trio.core.shell_syntax`): ``[[ a > b ]]`` is judged as a write to ``b``.
* Hard links cannot be told from files by path; the resolver on the file system refuses
  to resolve a multiply linked file (see :mod:`nexo_trio.gate.resolve`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from functools import partial
from typing import TypeAlias

import attrs

from nexo_trio.core.code_judges import (
    SHELLS,
    UNKNOWN_CLASSES,
    VERSION_ARGS,
    is_interpreter,
    judge_awk,
    judge_eval,
    judge_interpreter,
    judge_shell,
    judge_source,
    judge_su,
    runs_stdin,
)
from nexo_trio.core.download_judges import DOWNLOADERS, downloader_outputs
from nexo_trio.core.file_judges import (
    DELETERS,
    PERMS,
    judge_copy,
    judge_dd,
    judge_mktemp,
    judge_perm,
    judge_rm,
    judge_rsync,
    judge_writes,
    recursive_flag,
)
from nexo_trio.core.find_judges import find_expr, find_parts, find_starts, judge_find
from nexo_trio.core.fork_bomb import fork_bomb
from nexo_trio.core.git_judges import GIT_READ, GIT_WORKSPACE, judge_git
from nexo_trio.core.invocation import Arg, Cmd, Ctx, Text, arg, assign, expand_braces, unwrap
from nexo_trio.core.path_model import CWD, PathResolver, Scope, World
from nexo_trio.core.reader_judges import (
    READ_ONLY_COMMANDS,
    READERS,
    judge_hash,
    judge_history,
    judge_hostname,
    judge_reader,
)
from nexo_trio.core.sed_judges import judge_sed
from nexo_trio.core.shell_state_judges import (
    assigned,
    harmless_env,
    judge_cd,
    judge_declare,
    judge_reads_names,
    judge_trap,
    judge_unknown_state,
)
from nexo_trio.core.shell_syntax import (
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
from nexo_trio.core.substitutions import MAX_DEPTH, commands_in
from nexo_trio.core.system_judges import (
    FORMATTERS,
    KILL_BY_NAME,
    POWER,
    judge_crontab,
    judge_init,
    judge_kill,
    judge_systemctl,
)
from nexo_trio.core.targets import path_effect
from nexo_trio.core.verdicts import (
    EFFECTS,
    Effect,
    EffectVerdict,
    clip,
    cmdline,
    destructive,
    is_destructive,
    read,
    unknown,
    worse,
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
        verdict = destructive("too-deep", _TOO_DEEP, clip(command))
    return verdict or read("no-command", "the command runs nothing", clip(command))


# --------------------------------------------------------------------------------------------
# Walking a command: lists, pipelines, groups, simple commands, redirections

_TOO_DEEP = "command nested too deeply to analyse"


def _text(text: str, ctx: Ctx) -> EffectVerdict | None:
    if ctx.depth > MAX_DEPTH:
        return destructive("too-deep", _TOO_DEEP, clip(text))
    bomb = fork_bomb(text)
    if bomb:
        return destructive("fork-bomb", bomb, clip(text))
    try:
        pipelines = parse(text)
    except TooDeep:
        return destructive("too-deep", _TOO_DEEP, clip(text))
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
        if is_destructive(verdict):
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
        if is_destructive(verdict):
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


def _subs(words: Iterable[Word], ctx: Ctx) -> EffectVerdict | None:
    """Command substitutions in ``words``: they run first."""
    verdict: EffectVerdict | None = None
    for word in words:
        for text in commands_in(word.parts):
            verdict = worse(verdict, _text(text, ctx.child()))
            if is_destructive(verdict):
                return verdict
    return verdict


def _simple(node: Simple, ctx: Ctx) -> tuple[EffectVerdict | None, Cmd | None]:
    verdict = _subs(node.words, ctx)
    if node.role == "for" and len(node.words) > 1:
        name = "".join(text for _, text in node.words[1].parts)
        ctx.env[name] = None
        return worse(verdict, assigned(name, ctx, "for", exported=False)), None
    if node.role != "command" or is_destructive(verdict):
        return verdict, None
    verdict = worse(verdict, _redirs(node.redirs, ctx))
    if is_destructive(verdict):
        return verdict, None
    words = list(node.words)
    if all(assignment(w) for w in words):
        for w in words:
            found_name = assign(w, ctx)
            verdict = worse(verdict, assigned(found_name, ctx, f"{found_name}=", exported=False))
        return verdict, None
    unwrapped = unwrap(_args(words, ctx), ctx)
    if isinstance(unwrapped, Text):
        inner = _text(unwrapped.text, ctx.child())
        subject = clip(unwrapped.text)
        return worse(verdict, _around(inner, unwrapped.wrappers, unwrapped.env, ctx, subject)), None
    if unwrapped is None:
        return verdict, None
    found: EffectVerdict | None = _command(unwrapped, node.redirs, ctx)
    found = _around(found, unwrapped.wrappers, unwrapped.env, ctx, cmdline(unwrapped))
    reader = unwrapped.name in READ_ONLY_COMMANDS or unwrapped.name in READERS
    if (
        unwrapped.via_xargs
        and found is not None
        and found.effect in ("read", "workspace")
        and not (found.effect == "read" and reader)
    ):
        found = unknown(
            "xargs-targets",
            f"{unwrapped.name} gets its targets from standard input, which cannot be read"
            f" statically: {cmdline(unwrapped)}",
            cmdline(unwrapped),
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
    if is_destructive(verdict):
        return verdict
    if wrappers:
        verdict = worse(
            verdict,
            unknown(
                "wrapper",
                f"{wrappers[0]} changes where, as whom or when the command runs: {subject}",
                subject,
            ),
        )
    risky = [n for n, value in env if not harmless_env(n, value)]
    if risky:
        verdict = worse(
            verdict,
            unknown(
                "environment",
                f"sets {risky[0]} for the command, which can change what it runs: {subject}",
                subject,
            ),
        )
    return verdict


def _redirs(redirs: Sequence[Redir], ctx: Ctx) -> EffectVerdict | None:
    verdict: EffectVerdict | None = None
    for redir in redirs:
        if redir.target is not None:
            verdict = worse(verdict, _subs([redir.target], ctx))
        if redir.body is not None and redir.body_expands:
            parts, _ = dq_parts(redir.body, 0, closing=False)
            for inner in commands_in(parts):
                verdict = worse(verdict, _text(inner, ctx.child()))
        if is_destructive(verdict) or redir.target is None:
            continue
        target = arg(redir.target, ctx)
        writes = redir.op in (">", ">>", ">|", "&>", "&>>", "<>")
        if redir.op == ">&" and target.value is not None:
            writes = not (target.value.isdigit() or target.value in ("-", "1-", "2-"))
        if writes:
            verdict = worse(verdict, path_effect(ctx, ctx.cwd, target, "redirection", "write"))
        if is_destructive(verdict):
            return verdict
    return verdict


# --- judging one command: the judge of its name -----------------------------------------------


def _command(cmd: Cmd, redirs: Sequence[Redir], ctx: Ctx) -> EffectVerdict:
    name = cmd.name
    line = cmdline(cmd)
    if name is None:
        # `$(echo rm) -rf /`, `$RM -rf /`: judged as rm when the arguments look like rm -rf.
        if any(recursive_flag(a.value) for a in cmd.args):
            found = judge_rm(cmd, (), ctx)
            if found.effect == "destructive":
                return attrs.evolve(
                    found,
                    reason=f"{found.reason} (the command name is not resolvable: {cmd.head.shown})",
                )
        return unknown(
            "unresolvable-command", f"the command name cannot be resolved statically: {line}", line
        )
    if name in ctx.functions:
        ctx.cwd = (CWD,)  # the function may have changed directory
        return unknown(
            "function-call",
            f"calls {name}, a function defined in this command, whose effect where it is"
            f" called is not followed: {line}",
            line,
        )
    judge = _JUDGES.get(name)
    if judge is not None:
        found = judge(cmd, redirs, ctx)
    elif name in READ_ONLY_COMMANDS:
        found = read("read-only-command", f"{name} only reads", line)
    elif is_interpreter(name):
        found = judge_interpreter(cmd, ctx)
    elif name.startswith("mkfs") or name in FORMATTERS:
        found = destructive(
            "format-filesystem", f"{name} formats or wipes a filesystem: {line}", line
        )
    elif name in POWER:
        found = destructive("power", f"{name} stops or restarts the machine: {line}", line)
    elif name in KILL_BY_NAME:
        found = destructive(
            "kill-by-name", f"{name} kills processes by name, beyond this goal: {line}", line
        )
    else:
        found = _unknown_command(cmd, ctx)
    if cmd.by_path and found.effect != "destructive":
        return unknown("program-path", f"runs a program named by its path: {line}", line)
    return found


def _unknown_command(cmd: Cmd, ctx: Ctx) -> EffectVerdict:
    name = cmd.name or ""
    line = cmdline(cmd)
    for members, rule, what in UNKNOWN_CLASSES:
        if name in members:
            if [a.value for a in cmd.args] and all(a.value in VERSION_ARGS for a in cmd.args):
                return read("version-query", f"{name} only prints its version or help", line)
            if rule == "network-client":
                found = downloader_outputs(cmd, ctx)
                if found is not None:
                    return found
            return unknown(rule, f"{name} {what}: {line}", line)
    return unknown(
        "unknown-command", f"{name} is not a command whose effect the rules know: {line}", line
    )


def _run_words(args: list[Arg], ctx: Ctx) -> EffectVerdict | None:
    """A command given as its resolved words (what ``find -exec`` runs), judged in ``ctx``."""
    inner = unwrap(args, ctx)
    if isinstance(inner, Text):
        found = _text(inner.text, ctx.child())
        return _around(found, inner.wrappers, inner.env, ctx, clip(inner.text))
    if inner is not None:
        found = _command(inner, (), ctx)
        return _around(found, inner.wrappers, inner.env, ctx, cmdline(inner))
    return None


# --- rules about a whole pipeline -------------------------------------------------------------


def _pipeline_rules(seen: Sequence[_Seen]) -> EffectVerdict | None:
    """Rules about a whole pipeline: downloads piped into code; literal text piped into a
    shell; ``find``/``ls``/``echo`` piped into ``xargs rm``."""
    verdict: EffectVerdict | None = None
    for j, (cmd, redirs, ctx) in enumerate(seen):
        upstream = [c for c, _, _ in seen[:j]]
        if runs_stdin(cmd, redirs):
            for up in upstream:
                if up.name in DOWNLOADERS:
                    return destructive(
                        "download-run",
                        f"{up.name} output piped into {cmd.name}: runs downloaded code",
                        cmdline(up),
                    )
            if cmd.name in SHELLS and j == 1 and upstream[0].name == "echo":
                verdict = worse(verdict, _echoed(upstream[0], ctx))
        if cmd.via_xargs and cmd.name in DELETERS | PERMS:
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
        starts, expr = find_parts(up)
        action = f"| xargs {cmd.name}"
        whole = not find_expr(expr, ctx).filtered
        found = find_starts(starts, up.cwd, ctx, action, whole=whole)
        if found is not None:
            return found
    if up.name in ("echo", "printf", "ls"):
        items = tuple(up.args)
        if up.name == "ls" and not [a for a in items if not (a.value or "").startswith("-")]:
            items = (Arg(Word((("lit", "*"),)), "*", "*"),)  # ls lists the current directory
        fake = Cmd(cmd.name, cmd.head, cmd.args + items, up.cwd)
        found = judge_rm(fake, (), ctx) if cmd.name in ("rm", "unlink") else None
        if found is not None and found.effect == "destructive":
            return attrs.evolve(found, reason=f"{up.name} piped into xargs: {found.reason}")
    return None


# --- the judges by command name ---------------------------------------------------------------

_Judge: TypeAlias = Callable[[Cmd, Sequence[Redir], Ctx], EffectVerdict]
_JUDGES: dict[str, _Judge] = {
    **dict.fromkeys(SHELLS, partial(judge_shell, run=_text)),
    "eval": partial(judge_eval, run=_nested),
    "source": judge_source,
    ".": judge_source,
    "su": partial(judge_su, run=_text),
    "cd": judge_cd,
    "pushd": judge_cd,
    "popd": judge_cd,
    **dict.fromkeys(("export", "declare", "typeset", "local", "readonly"), judge_declare),
    **dict.fromkeys(
        ("unset", "read", "mapfile", "readarray", "getopts", "printf", "let", "set"),
        judge_reads_names,
    ),
    "trap": partial(judge_trap, run=_text),
    **dict.fromkeys(("awk", "gawk", "mawk", "nawk"), judge_awk),
    **dict.fromkeys(("alias", "enable"), judge_unknown_state),
    "hash": judge_hash,
    "history": judge_history,
    "hostname": judge_hostname,
    **dict.fromkeys(("rm", "unlink", "rmdir"), judge_rm),
    **dict.fromkeys(("mkdir", "touch", "tee", "truncate", "shred", "sudoedit"), judge_writes),
    **dict.fromkeys(("cp", "mv", "ln", "install"), judge_copy),
    "rsync": judge_rsync,
    "dd": judge_dd,
    **dict.fromkeys(PERMS, judge_perm),
    "mktemp": judge_mktemp,
    **dict.fromkeys(READERS, judge_reader),
    "sed": judge_sed,
    "find": partial(judge_find, run=_run_words),
    "git": judge_git,
    "kill": judge_kill,
    "systemctl": judge_systemctl,
    "init": judge_init,
    "telinit": judge_init,
    "crontab": judge_crontab,
}
