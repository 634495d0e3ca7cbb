"""The judges of shell state: builtins that change only the shell running the command.

``cd``/``pushd``/``popd`` move the virtual current directory (a ``popd``, or a ``cd`` to
where the rules cannot follow, to an unknown one). ``export``, ``declare``, ``typeset``,
``local``, ``readonly``, ``read``, ``mapfile``, ``readarray``, ``getopts``, ``printf -v``,
``let``, ``unset``, ``set`` only set shell variables (``read``), unless they change an
environment-like variable (upper case, or exported, and not on the harmless list: ``PATH=…;
ls``; see :func:`assigned`), which is unknown, as are ``declare -n``, ``set -a``,
``mapfile -C``, ``alias`` and ``enable``. :func:`harmless_env` also says
which variables a command may be run with (``LANG=C ls``). ``trap``'s handler is judged as a
command (it runs later, from wherever the shell is then).
"""

from __future__ import annotations

from collections.abc import Sequence

from nexo_trio.core.invocation import Cmd, Ctx, assign, names, render
from nexo_trio.core.path_model import CWD, HOME, Comps, components
from nexo_trio.core.shell_syntax import NAME_RE, Redir, assignment
from nexo_trio.core.verdicts import EffectVerdict, TextJudge, cmdline, read, unknown, worse

__all__ = [
    "assigned",
    "harmless_env",
    "judge_cd",
    "judge_declare",
    "judge_reads_names",
    "judge_trap",
    "judge_unknown_state",
]

_HARMLESS_ENV = names(
    "LANG LANGUAGE TZ TERM COLUMNS LINES NO_COLOR FORCE_COLOR CLICOLOR CLICOLOR_FORCE COLORTERM"
    " CI PYTHONUNBUFFERED PYTHONDONTWRITEBYTECODE PYTHONIOENCODING PYTHONHASHSEED GREP_COLORS"
    " LS_COLORS TERM_PROGRAM DEBIAN_FRONTEND"
)
_PAGERS = names("PAGER GIT_PAGER MANPAGER SYSTEMD_PAGER")


def harmless_env(name: str, value: str | None) -> bool:
    """Environment variables no allow-listed command runs anything from (an allow-list)."""
    if name in _HARMLESS_ENV or name.startswith("LC_"):
        return True
    return name in _PAGERS and value in ("", "cat", "less", "more")


def assigned(name: str | None, ctx: Ctx, what: str, *, exported: bool) -> EffectVerdict | None:
    """A variable was set (its value, if known, is in ``ctx.env`` already). Exported, or
    named like an environment variable (upper case: it may be one already, and be passed on
    to every later command), and not harmless: unknown (``PATH=.:$PATH; ls``)."""
    if not name or not NAME_RE.fullmatch(name):
        return None
    if name not in ctx.env:
        ctx.env[name] = None
    looks_exported = exported or not any(c.islower() for c in name)
    if looks_exported and not harmless_env(name, ctx.env.get(name)):
        return unknown(
            "environment",
            f"{what} sets {name}, which may be an environment variable that changes what later"
            " commands do",
            name,
        )
    return None


def judge_cd(cmd: Cmd, redirs: Sequence[Redir], ctx: Ctx) -> EffectVerdict:
    if not cmd.via_xargs:
        ctx.cwd = _cd_target(cmd, ctx)
    return read("shell-state", f"{cmd.name} only changes the current directory", cmdline(cmd))


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


def judge_declare(cmd: Cmd, redirs: Sequence[Redir], ctx: Ctx) -> EffectVerdict:
    """``export``/``declare``/``typeset``/``local``/``readonly``: assignments; exporting, or
    setting an environment-like name, that is not harmless is unknown (see
    :func:`assigned`), and so is a nameref (``declare -n``: it can assign any variable)."""
    name = cmd.name or "export"
    exported = name == "export"
    line = cmdline(cmd)
    verdict: EffectVerdict | None = None
    for a in cmd.args:
        v = a.value
        if v is not None and v.startswith(("-", "+")) and not assignment(a.word):
            if v.startswith("-") and "x" in v[1:]:
                exported = True
            if "n" in v[1:] and name != "export":
                verdict = worse(
                    verdict,
                    unknown("environment", f"{name} -n makes a reference to any variable", line),
                )
            if "n" in v[1:] and name == "export":
                exported = False  # export -n removes the export
            continue
        found = assign(a.word, ctx)
        target = found or (v if v is not None and NAME_RE.fullmatch(v) else None)
        verdict = worse(verdict, assigned(target, ctx, name, exported=exported))
    return verdict or read("shell-state", f"{name} only sets shell variables", line)


def judge_reads_names(cmd: Cmd, redirs: Sequence[Redir], ctx: Ctx) -> EffectVerdict:
    """``read``/``mapfile``/``readarray``/``getopts``/``printf -v``/``let``/``unset``/
    ``set``: variables get values not known here (``set -a`` exports them all)."""
    name = cmd.name or "read"
    line = cmdline(cmd)
    values = [a.value or "" for a in cmd.args]
    if name in ("mapfile", "readarray") and any(v.startswith("-") and "C" in v for v in values):
        return unknown("runs-code", f"{name} -C runs a callback: {line}", line)
    if name == "set":
        if (
            any(v.startswith("-") and ("a" in v or "k" in v) for v in values)
            or "allexport" in values
        ):
            return unknown(
                "environment", f"{line} exports every variable set after it to later commands", line
            )
        return read("shell-state", "set only changes shell options", line)
    if name == "unset":
        for v in values:
            if NAME_RE.fullmatch(v):
                ctx.env[v] = None
        return read("shell-state", "unset only removes shell variables", line)
    if name == "printf":
        targets = [values[k + 1] for k, v in enumerate(values[:-1]) if v == "-v"]
    elif name == "let":
        targets = [m.group() for v in values if "=" in v and (m := NAME_RE.match(v))]
    else:
        targets = [v for v in values if NAME_RE.fullmatch(v)]
    verdict: EffectVerdict | None = None
    for target in targets:
        ctx.env[target] = None
        verdict = worse(verdict, assigned(target, ctx, name, exported=False))
    return verdict or read("shell-state", f"{name} only prints or sets shell variables", line)


def judge_trap(cmd: Cmd, redirs: Sequence[Redir], ctx: Ctx, *, run: TextJudge) -> EffectVerdict:
    args = [a for a in cmd.args if a.value not in ("--",)]
    line = cmdline(cmd)
    if not args or (args[0].value or "").startswith("-") or len(args) < 2:
        return read("shell-state", "trap only lists or resets handlers", line)
    later = ctx.child()
    later.cwd = (CWD,)  # the handler runs later, wherever the shell is then
    found = run(render(args[0].word, ctx), later)
    return found or read("shell-state", "trap sets an empty handler", line)


def judge_unknown_state(cmd: Cmd, redirs: Sequence[Redir], ctx: Ctx) -> EffectVerdict:
    line = cmdline(cmd)
    return unknown(
        "shell-state", f"{cmd.name} changes how later commands are found or run: {line}", line
    )
