"""The judges: whether a Bash command is destructive, and why (:func:`destructive_reason`).

How Bash commands are read: the text is parsed into simple commands
(:mod:`~nexo_trio.core.shell_syntax`), each of which is unwrapped from its prefixes
(``sudo``, ``env``, ``xargs``…), resolved against the variables and the virtual current
directory (:mod:`~nexo_trio.core.invocation`) and judged by name; paths are judged with
:mod:`~nexo_trio.core.path_model`. Command strings run by ``sh -c``/``bash -c``/…, ``eval``,
``su -c``, ``env -S``, ``watch`` and shells fed a heredoc are analysed recursively; command
substitutions are analysed as commands (they run). Quoted text is data, not a command:
``echo "rm -rf /"`` is harmless. Fork bombs are spotted in the raw text
(:mod:`~nexo_trio.core.fork_bomb`).

What is flagged (each reason names the rule and the offending part): recursive ``rm`` of
``/``, ``~``, the workspace itself or all of it (``rm -rf .``/``*``), anything outside it, a
``.git`` directory, or a path that cannot be resolved; plain ``rm``/``unlink`` outside;
``git reset --hard``, ``git push`` forcing (``-f``, ``--force[-with-lease]``, ``+refspec``) or
deleting (``--delete``, ``:ref``, ``--mirror``, ``--prune``), ``git clean -f``, wholesale
discards (``git checkout -- .``, ``git checkout -f``, ``git restore .``, ``git switch
--discard-changes``: they destroy uncommitted work just like ``reset --hard``; pathspec-limited
ones are ordinary), ``git stash clear``; ``mkfs*``/``mkswap``/``wipefs``; writes to devices
and to places outside the workspace by redirection, ``tee``, ``dd of=``, ``truncate``,
``shred``, ``sed -i``, ``cp``/``mv``/``ln``/``install``/``rsync`` (and ``mv`` taking a path away
from outside); fork bombs; downloads run as code (``curl … | sh``, ``bash <(curl …)``,
``sh -c "$(curl …)"``); recursive ``chmod``/``chown``/``chgrp`` outside the workspace (any of
them on ``/``); ``find … -delete``/``-exec rm`` from outside the workspace, or with no test at
all on the whole workspace; ``find``/``echo`` piped into ``xargs rm``; ``shutdown``,
``reboot``, ``halt``, ``poweroff``, ``init 0|6``, ``systemctl poweroff|reboot…``;
``kill -1``/``kill 1``, ``killall``/``pkill`` (by name: they can hit the orchestrator, other
goals or the user's programs); ``crontab -r``.

Known limits (a static detector can only read what is written):

* Symlinks are not resolved (see :mod:`~nexo_trio.core.path_model`).
* Obfuscation through evaluation is out of reach: ``eval "$(echo cm0gLXJmIC8= | base64 -d)"``
  (decoded at run time), ``$(echo rm) $(echo -rf) /`` (name and flags both computed),
  aliases, functions defined in earlier tool calls, ``$IFS`` tricks. What can be read is:
  variables assigned in the same command (``a=r; b=m; $a$b -rf /``), an unresolvable command
  name with literal ``rm -rf``-style flags (``$(echo rm) -rf /``, ``${!n} -rf /``) is judged as
  ``rm``, and ``rm -rf`` of an unresolvable path (``rm -rf "$DIR"``) is denied outright, since
  an empty variable is the classic way to ``rm -rf /``. An ``eval`` of computed text is left to
  the default (in a chain the LLM decides): ``eval "$(ssh-agent -s)"`` is an everyday idiom.
* Code run by other interpreters is not read: ``python -c "import shutil;
  shutil.rmtree('/')"``, ``perl -e 'unlink …'``, a script written to a file and then run
  (``curl -o x.sh … && bash x.sh``), ``make`` targets, ``npm`` scripts. Remote commands
  (``ssh host 'rm -rf /'``) are not judged either.
* Only the listed command families are recognised: ``git branch -D``, ``git filter-branch``,
  history-expiring ``git reflog``/``git gc``, ``tar -C /``, ``docker``/``kubectl``/cloud CLIs,
  package managers, database clients, ``iptables`` and ``fdisk``/``parted`` are not judged.
* ``cd`` is assumed to succeed (``cd x || rm -rf *`` is judged as if in ``x``), the shell
  syntax is read approximately in places (see :mod:`~nexo_trio.core.shell_syntax`), and a
  redirection to an unresolvable path (``> "$OUT"``) is not flagged.
* Non-recursive ``chmod``/``chown`` outside the workspace is only flagged on ``/`` itself.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from nexo_trio.core.fork_bomb import fork_bomb
from nexo_trio.core.invocation import (
    Arg,
    Cmd,
    Ctx,
    Text,
    arg,
    assign,
    names,
    option_width,
    render,
    unwrap,
)
from nexo_trio.core.path_model import (
    CWD,
    FLAGGED_OUTSIDE,
    HOME,
    Comps,
    Kind,
    classify,
    components,
    hint,
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

__all__ = ["destructive_reason"]


def destructive_reason(command: str, workspace: str | None) -> str | None:
    """Why the Bash ``command`` is destructive, or ``None`` if no rule flags it.

    The reason names the matched rule and the offending part, e.g.
    ``"rm -rf outside the workspace: /etc"``. See the module docstring for how the command
    is read and for the known limits (symlinks, eval/variable obfuscation, other
    interpreters).
    """
    ws = components(workspace, ()) if workspace and workspace.startswith("/") else None
    ctx = Ctx(workspace=ws, cwd=ws if ws is not None else (CWD,), env={})
    try:
        return _analyse_text(command, ctx)
    except RecursionError:  # quotes and substitutions nested thousands deep: fail closed
        return _TOO_DEEP


# --------------------------------------------------------------------------------------------
# Walking a command: lists, pipelines, simple commands, redirections

_MAX_DEPTH = 16
_TOO_DEEP = "command nested too deeply to analyse"


def _analyse_text(text: str, ctx: Ctx) -> str | None:
    if ctx.depth > _MAX_DEPTH:
        return _TOO_DEEP
    bomb = fork_bomb(text)
    if bomb:
        return bomb
    try:
        return _analyse_list(parse(text), ctx)
    except TooDeep:
        return _TOO_DEEP


def _analyse_list(pipelines: Sequence[Pipeline], ctx: Ctx) -> str | None:
    for pipeline in pipelines:
        reason = _analyse_pipeline(pipeline, ctx)
        if reason:
            return reason
    return None


def _analyse_pipeline(pipeline: Pipeline, ctx: Ctx) -> str | None:
    # Every part of a multi-command pipeline runs in its own subshell.
    single = len(pipeline) == 1
    seen: list[tuple[Cmd, tuple[Redir, ...], Ctx]] = []
    for node in pipeline:
        nctx = ctx if single else ctx.child()
        if isinstance(node, Group):
            reason = _redirs_reason(node.redirs, nctx) or _analyse_list(
                node.body, nctx.child() if node.subshell else nctx
            )
            # A group's commands take part in the pipeline: `(curl x) | bash`, `curl x | (sh)`.
            for inner in simple_nodes(node.body):
                cmd = unwrap([arg(w, nctx) for w in inner.words], nctx)
                if isinstance(cmd, Cmd):
                    seen.append((cmd, inner.redirs + node.redirs, nctx))
        else:
            reason, found = _analyse_simple(node, nctx)
            if found is not None:
                seen.append((found, node.redirs, nctx))
        if reason:
            return reason
    return None if single else _pipeline_reason(seen)


def _analyse_simple(node: Simple, ctx: Ctx) -> tuple[str | None, Cmd | None]:
    # Command substitutions run first, wherever they are.
    for word in node.words:
        for inner in word.subs():
            reason = _analyse_text(inner, ctx.child())
            if reason:
                return reason, None
    reason = _redirs_reason(node.redirs, ctx)
    if reason:
        return reason, None
    words = list(node.words)
    if all(assignment(w) for w in words):
        for w in words:
            assign(w, ctx)
        return None, None
    args = [arg(w, ctx) for w in words]
    unwrapped = unwrap(args, ctx)
    if isinstance(unwrapped, Text):
        return _analyse_text(unwrapped.text, ctx.child()), None
    if unwrapped is None:
        return None, None
    return _command_reason(unwrapped, node.redirs, ctx), unwrapped


def _redirs_reason(redirs: Sequence[Redir], ctx: Ctx) -> str | None:
    for redir in redirs:
        if redir.target is not None:
            for inner in redir.target.subs():
                reason = _analyse_text(inner, ctx.child())
                if reason:
                    return reason
        if redir.body is not None and redir.body_expands:
            parts, _ = dq_parts(redir.body, 0, closing=False)
            for kind, inner in parts:
                reason = _analyse_text(inner, ctx.child()) if kind == "sub" else None
                if reason:
                    return reason
        if redir.target is None:
            continue
        target = arg(redir.target, ctx)
        writes = redir.op in (">", ">>", ">|", "&>", "&>>", "<>")
        if redir.op == ">&" and target.value is not None:
            writes = not (target.value.isdigit() or target.value == "-")  # 2>&1 is no file
        if writes:
            reason = _write_reason("redirection", target, ctx.cwd, ctx.workspace)
            if reason:
                return reason
    return None


def _write_reason(what: str, target: Arg, cwd: Comps, ws: Comps | None) -> str | None:
    """Why writing to ``target`` is destructive: a device, or a place outside the workspace.
    An unresolvable target is not flagged (see the module's limits)."""
    if target.value is None:
        return None
    kind, comps = classify(components(target.value, cwd), ws)
    if kind == "device":
        return f"{what} writes to a device: {target.shown}"
    if kind in ("root", "outside", "home", "escaped"):
        return f"{what} writes outside the workspace: {target.shown}{hint(target.shown, comps)}"
    return None


# --- judging one command ----------------------------------------------------------------------

_SHELLS = frozenset(
    {"sh", "bash", "rbash", "zsh", "dash", "ksh", "mksh", "ash", "yash", "fish", "csh", "tcsh"}
)
_INTERPRETER_RE = re.compile(
    r"(python|pypy)[0-9.]*|perl[0-9.]*|ruby[0-9.]*|node|nodejs|php[0-9.]*|lua[0-9.]*"
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
# Kill by name can hit processes far outside the goal: the orchestrator, other goals' agents,
# the user's own programs. `kill <pid>` of a known process stays allowed.
_KILL_BY_NAME = frozenset({"killall", "killall5", "pkill"})
_DELETERS = frozenset({"rm", "unlink", "shred", "truncate"})
_PERMS = frozenset({"chmod", "chown", "chgrp"})


def _is_interpreter(name: str) -> bool:
    return name in _SHELLS or bool(_INTERPRETER_RE.fullmatch(name))


def _command_reason(cmd: Cmd, redirs: Sequence[Redir], ctx: Ctx) -> str | None:
    ws = ctx.workspace
    name = cmd.name
    if name is None:
        # `$(echo rm) -rf /`, `$RM -rf /`: judged as rm when the arguments look like rm -rf.
        if any(_recursive_flag(a.value) for a in cmd.args):
            reason = _rm_reason(cmd, ws)
            if reason:
                return f"{reason} (the command name is not resolvable: {cmd.head.shown})"
        return None
    if _is_interpreter(name) or name in ("eval", "source", "."):
        reason = _remote_code_reason(cmd, ctx)
        if reason:
            return reason
    if name in _SHELLS:
        return _shell_reason(cmd, redirs, ctx)
    if name == "eval":
        return _analyse_text(" ".join(render(a.word, ctx) for a in cmd.args), ctx.child())
    if name == "su":
        return _su_reason(cmd, ctx)
    if name in ("cd", "pushd", "popd"):
        if not cmd.via_xargs:
            ctx.cwd = _cd_target(cmd, ctx)
        return None
    if name in ("export", "declare", "typeset", "local", "readonly"):
        for a in cmd.args:
            assign(a.word, ctx)
        return None
    if name in ("unset", "read"):
        for a in cmd.args:
            if a.value and NAME_RE.fullmatch(a.value):
                ctx.env[a.value] = None
        return None
    if name in ("rm", "unlink"):
        return _rm_reason(cmd, ws)
    if name == "git":
        return _git_reason(cmd, ws)
    if name == "find":
        return _find_reason(cmd, ctx)
    if name in _PERMS:
        return _perm_reason(cmd, ws)
    if name == "dd":
        for a in cmd.args:
            if a.value is not None and a.value.startswith("of="):
                target = Arg(a.word, a.value[3:], a.shown.removeprefix("of="))
                reason = _write_reason("dd", target, cmd.cwd, ws)
                if reason:
                    return reason
        return None
    if name in ("tee", "truncate", "shred"):
        with_arg, long_with_arg = {
            "tee": (frozenset(), frozenset()),
            "truncate": (frozenset("sr"), frozenset({"--size", "--reference"})),
            "shred": (frozenset("ns"), frozenset({"--iterations", "--size", "--random-source"})),
        }[name]
        for a in _operands(cmd.args, with_arg, long_with_arg):
            reason = _write_reason(name, a, cmd.cwd, ws) if a.value != "-" else None
            if reason:
                return reason
        return None
    if name in ("cp", "mv", "ln", "install", "rsync"):
        return _copy_reason(cmd, ws)
    if name == "sed":
        return _sed_reason(cmd, ws)
    if name.startswith("mkfs") or name in _FORMATTERS:
        return f"{name} formats or wipes a filesystem: {_cmdline(cmd)}"
    if name in _POWER:
        return f"{name} stops or restarts the machine: {_cmdline(cmd)}"
    if name in ("init", "telinit") and any(a.value in ("0", "6", "1", "s", "S") for a in cmd.args):
        return f"{name} changes the runlevel (halt/reboot/single-user): {_cmdline(cmd)}"
    if name == "systemctl":
        verbs = [a.value for a in cmd.args if a.value and not a.value.startswith("-")]
        if verbs and verbs[0] in _SYSTEMCTL_POWER:
            return f"systemctl {verbs[0]} stops or restarts the machine"
        return None
    if name == "kill":
        return _kill_reason(cmd)
    if name in _KILL_BY_NAME:
        return f"{name} kills processes by name, beyond this goal: {_cmdline(cmd)}"
    if name == "crontab" and any(
        a.value and a.value.startswith("-") and "r" in a.value[1:] and not a.value.startswith("--")
        for a in cmd.args
    ):
        return "crontab -r deletes every cron job"
    return None


def _cmdline(cmd: Cmd, limit: int = 120) -> str:
    text = " ".join([cmd.head.shown, *(a.shown for a in cmd.args)])
    return text if len(text) <= limit else text[: limit - 1] + "…"


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


def _recursive_flag(value: str | None) -> bool:
    if value is None or not value.startswith("-") or value == "-":
        return False
    if value.startswith("--"):
        return value == "--recursive"
    return "r" in value or "R" in value


_RM_RECURSIVE: dict[Kind, str] = {
    "root": "of the root directory",
    "workspace": "of the whole workspace",
    "cwd": "of the whole current directory",
    "outside": "outside the workspace",
    "device": "outside the workspace",
    "safe_device": "outside the workspace",
    "escaped": "outside the current directory",
}
_RM_SINGLE: dict[Kind, str] = {
    "root": "of the root directory",
    "outside": "outside the workspace",
    "home": "outside the workspace",
    "device": "outside the workspace",
    "safe_device": "outside the workspace",
    "escaped": "outside the current directory",
}


def _rm_reason(cmd: Cmd, ws: Comps | None) -> str | None:
    recursive = False
    operands: list[Arg] = []
    end = False
    for a in cmd.args:
        v = a.value
        if not end and v == "--":
            end = True
        elif not end and v is not None and v.startswith("-") and v != "-":
            recursive = recursive or _recursive_flag(v)
        else:
            operands.append(a)
    label = "rm -rf" if recursive else cmd.name or "rm"
    for a in operands:
        if a.value is None:
            if recursive:
                return f"rm -rf of a path the rules cannot resolve statically: {a.shown}"
            continue
        kind, comps = classify(components(a.value, cmd.cwd), ws)
        if recursive:
            what = _RM_RECURSIVE.get(kind)
            if kind == "home":
                what = "of the home directory" if comps == (HOME,) else "outside the workspace"
            elif what is None and comps and comps[-1] == ".git":
                what = "of a git repository's history"
        else:
            what = _RM_SINGLE.get(kind)
        if what:
            return f"{label} {what}: {a.shown}{hint(a.shown, comps)}"
    return None


def _cd_target(cmd: Cmd, ctx: Ctx) -> Comps:
    if cmd.name == "popd":
        return (CWD,)
    operands = [a for a in cmd.args if not (a.value and a.value.startswith("-") and a.value != "-")]
    if not operands:
        return (HOME,) if cmd.name == "cd" else (CWD,)
    target = operands[0].value
    if target is None or target == "-":
        return (CWD,)
    return components(target, ctx.cwd)


def _shell_reason(cmd: Cmd, redirs: Sequence[Redir], ctx: Ctx) -> str | None:
    """``sh -c STRING`` analyses STRING; a shell reading a heredoc or here-string analyses it."""
    args = cmd.args
    i = 0
    inline = False
    while i < len(args):
        v = args[i].value
        if v is None or v in ("-", "--") or len(v) < 2 or v[0] not in "-+":
            break
        if v.startswith("--"):
            i += 2 if v in ("--rcfile", "--init-file") else 1
            continue
        inline = inline or "c" in v[1:]
        i += 2 if v[-1] in "oO" else 1  # -o OPTION, -O SHOPT
    if inline:
        if i < len(args):
            return _analyse_text(render(args[i].word, ctx), ctx.child())
        return None
    for redir in redirs:
        if redir.op in ("<<", "<<-") and redir.body is not None:
            reason = _analyse_text(redir.body, ctx.child())
        elif redir.op == "<<<" and redir.target is not None:
            reason = _analyse_text(render(redir.target, ctx), ctx.child())
        else:
            reason = None
        if reason:
            return reason
    return None


def _su_reason(cmd: Cmd, ctx: Ctx) -> str | None:
    for k, a in enumerate(cmd.args):
        if a.value in ("-c", "--command") and k + 1 < len(cmd.args):
            return _analyse_text(render(cmd.args[k + 1].word, ctx), ctx.child())
        if a.value is not None and a.value.startswith("--command="):
            return _analyse_text(a.value.partition("=")[2], ctx.child())
    return None


def _downloads(text: str) -> bool:
    """Whether the command text runs a downloader (curl, wget...)."""
    try:
        pipelines = parse(text)
    except TooDeep:
        return True
    probe = Ctx(None, (CWD,), {})
    for node in simple_nodes(pipelines):
        cmd = unwrap([arg(w, probe) for w in node.words], probe)
        if isinstance(cmd, Cmd) and cmd.name in _DOWNLOADERS:
            return True
    return False


def _remote_code_reason(cmd: Cmd, ctx: Ctx) -> str | None:
    """``bash <(curl …)``, ``sh -c "$(curl …)"``, ``eval "$(wget -O- …)"``."""
    for a in cmd.args:
        if any(_downloads(inner) for inner in a.word.subs()):
            return f"downloaded code is run by {cmd.name}: {a.shown}"
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


def _pipeline_reason(seen: Sequence[tuple[Cmd, tuple[Redir, ...], Ctx]]) -> str | None:
    """Rules about a whole pipeline: downloads piped into a shell; find/echo piped into
    ``xargs rm``."""
    for j, (cmd, redirs, ctx) in enumerate(seen):
        upstream = [c for c, _, _ in seen[:j]]
        if _runs_stdin(cmd, redirs):
            for up in upstream:
                if up.name in _DOWNLOADERS:
                    return f"{up.name} output piped into {cmd.name}: runs downloaded code"
        if cmd.via_xargs and cmd.name in _DELETERS | _PERMS:
            for up in upstream:
                reason = _xargs_upstream_reason(up, cmd, ctx)
                if reason:
                    return reason
    return None


def _xargs_upstream_reason(up: Cmd, cmd: Cmd, ctx: Ctx) -> str | None:
    if up.name == "find":
        starts, _ = _find_parts(up)
        reason = _find_starts_reason(starts, up.cwd, ctx.workspace, f"| xargs {cmd.name}")
        if reason:
            return reason
    if up.name in ("echo", "printf", "ls"):
        fake = Cmd(cmd.name, cmd.head, cmd.args + tuple(up.args), ctx.cwd)
        reason = _rm_reason(fake, ctx.workspace) if cmd.name in ("rm", "unlink") else None
        if reason:
            return f"{up.name} piped into xargs: {reason}"
    return None


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


def _find_starts_reason(
    starts: Sequence[Arg], cwd: Comps, ws: Comps | None, action: str
) -> str | None:
    for start in starts:
        if start.value is None:
            return f"find {action} from a path the rules cannot resolve statically: {start.shown}"
        kind, comps = classify(components(start.value, cwd), ws)
        if kind == "root":
            return f"find {action} from the root directory: {start.shown}"
        if kind in FLAGGED_OUTSIDE:
            return f"find {action} outside the workspace: {start.shown}{hint(start.shown, comps)}"
    return None


# find primaries that select nothing: with only these, -delete takes everything under START.
_FIND_NON_TESTS = names(
    "-delete -depth -d -maxdepth -mindepth -xdev -mount -print -print0 -ls -noleaf -follow"
    " -ignore_readdir_race -daystart -prune"
)


def _find_reason(cmd: Cmd, ctx: Ctx) -> str | None:
    """``find START… -delete`` / ``-exec rm …`` where a start lies outside the workspace, or
    with no test at all on the whole workspace; the command run by ``-exec`` is judged too."""
    starts, expr = _find_parts(cmd)
    action: str | None = None
    filtered = False
    j = 0
    while j < len(expr):
        v = expr[j].value
        if v == "-delete":
            action = action or "-delete"
        elif v in ("-exec", "-execdir", "-ok", "-okdir"):
            k = j + 1
            while k < len(expr) and expr[k].value not in (";", "+"):
                k += 1
            sub = list(expr[j + 1 : k])
            inner = unwrap(sub, ctx)
            if isinstance(inner, Text):
                reason = _analyse_text(inner.text, ctx.child())
            elif inner is not None:
                if inner.name in _DELETERS | _PERMS:
                    action = action or f"{v} {inner.name}"
                reason = _command_reason(inner, (), ctx.child())
            else:
                reason = None
            if reason:
                return reason
            j = k
        elif v is None or (v.startswith("-") and v not in _FIND_NON_TESTS) or v in ("!", "("):
            filtered = True
        elif v in ("-maxdepth", "-mindepth"):
            j += 1
        j += 1
    if action is None:
        return None
    reason = _find_starts_reason(starts, cmd.cwd, ctx.workspace, action)
    if reason or filtered:
        return reason
    for start in starts:
        kind, comps = classify(components(start.value or ".", cmd.cwd), ctx.workspace)
        if kind in ("workspace", "cwd"):
            where = "the whole workspace" if kind == "workspace" else "the whole current directory"
            return f"find {action} of {where}: {start.shown}{hint(start.shown, comps)}"
    return None


def _perm_reason(cmd: Cmd, ws: Comps | None) -> str | None:
    """Recursive chmod/chown/chgrp outside the workspace, or any of them on ``/``."""
    name = cmd.name or "chmod"
    # chmod's own letters; anything else after a dash is a mode (-w, -x, -r…).
    letters = set("Rcfv") if name == "chmod" else set("RcfvhHLP")
    recursive = False
    reference = False
    operands: list[Arg] = []
    end = False
    for a in cmd.args:
        v = a.value
        if end or v is None or not v.startswith("-") or v == "-":
            operands.append(a)
        elif v == "--":
            end = True
        elif v.startswith("--"):
            recursive = recursive or v == "--recursive"
            reference = reference or v.startswith("--reference")
        elif set(v[1:]) <= letters:
            recursive = recursive or "R" in v
        else:
            operands.append(a)
    targets = operands if reference else operands[1:]
    label = f"recursive {name}" if recursive else name
    for t in targets:
        if t.value is None:
            continue
        kind, comps = classify(components(t.value, cmd.cwd), ws)
        if kind == "root":
            return f"{label} of the root directory: {t.shown}{hint(t.shown, comps)}"
        if recursive and kind in FLAGGED_OUTSIDE:
            return f"{label} outside the workspace: {t.shown}{hint(t.shown, comps)}"
    return None


def _copy_reason(cmd: Cmd, ws: Comps | None) -> str | None:
    """``cp``/``mv``/``ln``/``install``/``rsync`` writing outside the workspace or onto a
    device (like a redirection), and ``mv`` taking a path away from outside the workspace."""
    name = cmd.name or "cp"
    target: str | None = None
    for k, a in enumerate(cmd.args):
        if a.value == "-t" and k + 1 < len(cmd.args):
            target = cmd.args[k + 1].value
        elif a.value is not None and a.value.startswith("--target-directory="):
            target = a.value.partition("=")[2]
    with_arg = frozenset("tS") if name != "rsync" else frozenset("efT")
    ops = _operands(cmd.args, with_arg, names("--target-directory --suffix --rsh --filter"))
    sources = ops if target is not None else ops[:-1]
    if target is None and len(ops) > 1:
        target = ops[-1].value
    # rsync and scp-style remote destinations (host:path) are not local writes.
    if target is not None and not (name == "rsync" and ":" in target.partition("/")[0]):
        dest = Arg(Word((("q", target),)), target, target)
        reason = _write_reason(name, dest, cmd.cwd, ws)
        if reason:
            return reason
    if name != "mv":
        return None
    for src in sources:
        if src.value is None:
            continue
        kind, comps = classify(components(src.value, cmd.cwd), ws)
        if kind in FLAGGED_OUTSIDE:
            return (
                f"mv takes away a path outside the workspace: {src.shown}{hint(src.shown, comps)}"
            )
    return None


def _sed_reason(cmd: Cmd, ws: Comps | None) -> str | None:
    """``sed -i`` edits its files in place: judged like writes."""
    in_place = False
    script_given = False
    operands: list[Arg] = []
    args = cmd.args
    i = 0
    while i < len(args):
        v = args[i].value
        if v is None or v == "-" or not v.startswith("-"):
            operands.append(args[i])
        elif v.startswith("--"):
            in_place = in_place or v.startswith("--in-place")
            if v.startswith(("--expression", "--file")):
                script_given = True
                i += 0 if "=" in v else 1
        else:
            for k, ch in enumerate(v[1:]):
                if ch == "i":
                    in_place = True
                    break  # the rest is the backup suffix (-i.bak; -ie is suffix "e")
                if ch in "ef":
                    script_given = True
                    i += 1 if k == len(v) - 2 else 0
                    break
        i += 1
    if not in_place:
        return None
    for a in operands if script_given else operands[1:]:
        reason = _write_reason("sed -i", a, cmd.cwd, ws)
        if reason:
            return reason
    return None


def _kill_reason(cmd: Cmd) -> str | None:
    """``kill -9 -1`` (every process) or a kill of pid 1."""
    values = [a.value for a in cmd.args]
    i = 0
    if i < len(values) and values[i] in ("-l", "-L"):
        return None
    if i < len(values) and values[i] in ("-s", "-n"):
        i += 2
    elif i < len(values) and (v := values[i]) is not None and v.startswith("-") and v != "--":
        i += 1  # -9, -KILL, -SIGKILL
    for v in values[i:]:
        if v == "-1":
            return f"kill of every process the user may signal: {_cmdline(cmd)}"
        if v == "1":
            return f"kill of init (pid 1): {_cmdline(cmd)}"
    return None


_GIT_GLOBAL_ARG = frozenset(
    {"-C", "-c", "--git-dir", "--work-tree", "--namespace", "--super-prefix", "--config-env"}
)
_GIT_TOP_PATHSPECS = frozenset({":/", ":", ":/*", ":(top)", ":(top)*", ":(top)."})


def _git_reason(cmd: Cmd, ws: Comps | None) -> str | None:
    args = cmd.args
    cwd = cmd.cwd
    i = 0
    while i < len(args):
        v = args[i].value
        if v is None:
            return None
        if v == "-C" and i + 1 < len(args):
            target = args[i + 1].value
            cwd = components(target, cwd) if target is not None else (CWD,)
        if v in _GIT_GLOBAL_ARG:
            i += 2
        elif v.startswith("-"):
            i += 1
        else:
            break
    if i >= len(args):
        return None
    sub = args[i].value
    rest = [a.value or "" for a in args[i + 1 :]]
    if sub == "reset" and "--hard" in rest:
        return "git reset --hard discards uncommitted changes"
    if sub == "push":
        return _git_push_reason(rest)
    if sub == "clean":
        forced = any(_git_flag(v, "f", "--force") for v in rest)
        dry = any(_git_flag(v, "n", "--dry-run") for v in rest)
        if forced and not dry:
            flags = " ".join(v for v in rest if v.startswith("-"))
            return f"git clean -f deletes untracked files: {flags}"
        return None
    if sub in ("checkout", "restore", "switch"):
        return _git_discard_reason(sub, rest, cwd, ws)
    if sub == "stash" and rest[:1] == ["clear"]:
        return "git stash clear drops every stash"
    return None


def _git_flag(value: str, letter: str, long: str, arg_letters: str = "") -> bool:
    """Whether ``value`` is ``long`` or a short cluster holding ``letter`` (letters after one
    in ``arg_letters`` are that option's value)."""
    if value == long:
        return True
    if not value.startswith("-") or value.startswith("--"):
        return False
    for ch in value[1:]:
        if ch == letter:
            return True
        if ch in arg_letters:
            return False
    return False


def _git_push_reason(rest: list[str]) -> str | None:
    force: str | None = None
    delete: str | None = None
    dry = False
    positional: list[str] = []
    end = False
    j = 0
    while j < len(rest):
        v = rest[j]
        if not end and v == "--":
            end = True
        elif not end and v.startswith("--"):
            key = v.partition("=")[0]
            if key in ("--force", "--force-with-lease"):
                force = force or v
            elif key in ("--mirror", "--delete", "--prune"):
                delete = delete or v
            elif key == "--dry-run":
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


def _git_discard_reason(sub: str, rest: list[str], cwd: Comps, ws: Comps | None) -> str | None:
    """Wholesale discards of uncommitted work: ``git checkout -- .``, ``git checkout -f``,
    ``git restore .``, ``git switch --discard-changes``. Pathspec-limited ones are normal."""
    arg_letters = {"checkout": "bBU", "restore": "s", "switch": "cC"}[sub]
    if any(_git_flag(v, "f", "--force", arg_letters) for v in rest) and sub != "restore":
        return f"git {sub} --force discards local changes"
    if sub == "switch":
        if "--discard-changes" in rest:
            return "git switch --discard-changes discards local changes"
        return None
    staged = any(_git_flag(v, "S", "--staged", arg_letters) for v in rest)
    worktree = any(_git_flag(v, "W", "--worktree", arg_letters) for v in rest)
    if sub == "restore" and staged and not worktree:
        return None  # only unstages
    pathspecs: list[str] = []
    end = False
    j = 0
    while j < len(rest):
        v = rest[j]
        if end or not v.startswith("-"):
            pathspecs.append(v)
        elif v == "--":
            end = True
        elif v in ("-s", "--source", "-b", "-B", "--orphan", "--conflict"):
            j += 1
        j += 1
    for spec in pathspecs:
        if spec in _GIT_TOP_PATHSPECS:
            return f"git {sub} discards every uncommitted change: {spec}"
        if spec.startswith(":"):
            continue
        kind, _ = classify(components(spec, cwd), ws)
        if kind in ("root", "workspace", "cwd", "outside", "home", "escaped"):
            return f"git {sub} discards every uncommitted change: {spec}"
    return None
