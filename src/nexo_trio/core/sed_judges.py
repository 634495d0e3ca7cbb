"""The judge of ``sed``: it reads, unless it edits in place (``-i``), writes files (``w``,
``W``, ``s///w``) or runs commands (``e``, ``s///e``: destructive, text run as a shell
command).

Its script is read command by command: one that cannot be read, or resolved, or that comes
from a file is unknown; ``--sandbox`` turns ``e`` and ``w`` off. The files it writes, and
those it edits in place, are judged on where they land (see :mod:`~nexo_trio.core.targets`);
``sed -i`` writes a new file in a link's place, unless told to follow links.
"""

from __future__ import annotations

from collections.abc import Sequence

from nexo_trio.core.invocation import Arg, Cmd, Ctx
from nexo_trio.core.options import option_spec, parse_options, unknown_option
from nexo_trio.core.shell_syntax import Redir, Word
from nexo_trio.core.targets import path_effect
from nexo_trio.core.verdicts import (
    EffectVerdict,
    cmdline,
    destructive,
    is_destructive,
    read,
    unknown,
    worse,
)

__all__ = ["judge_sed"]

_SED = option_spec(
    "nErsuzb",
    "efl",
    "--quiet --silent --regexp-extended --separate --unbuffered --null-data --posix --debug"
    " --sandbox --follow-symlinks --binary --in-place",
    "--expression --file --line-length",
)


def judge_sed(cmd: Cmd, redirs: Sequence[Redir], ctx: Ctx) -> EffectVerdict:
    """``sed``: reads, unless it edits in place (``-i``), writes files (``w``, ``W``,
    ``s///w``) or runs commands (``e``, ``s///e``: destructive, text run as a command)."""
    line = cmdline(cmd)
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
    parsed = parse_options(args, _SED)
    if parsed.bad is not None:
        return unknown_option(cmd, parsed)
    in_place = in_place or parsed.has("--in-place")
    if parsed.has("-f", "--file"):
        return unknown("sed-script-file", f"sed reads its script from a file: {line}", line)
    scripts = [v for v in parsed.values("-e", "--expression") if v is not None]
    operands = list(parsed.operands)
    if not scripts:
        if not operands:
            return read("read-only-command", "sed with no script fails", line)
        scripts, operands = [operands[0]], operands[1:]
    if any(s.value is None for s in scripts):
        return unknown("sed-script", f"sed's script cannot be resolved statically: {line}", line)
    program = "\n".join(s.value or "" for s in scripts)
    runs, written, readable = _sed_program(program)
    sandbox = parsed.has("--sandbox")
    if not readable:
        return unknown("sed-script", f"sed's script cannot be read by the rules: {line}", line)
    if runs and not sandbox:
        return destructive(
            "sed-exec", f"sed's e command runs text as a shell command: {line}", line
        )
    verdict: EffectVerdict | None = None
    if not sandbox:
        for target in written:
            word = Word((("q", target),))
            verdict = worse(
                verdict, path_effect(ctx, cmd.cwd, Arg(word, target, target), "sed w", "write")
            )
    if in_place and not is_destructive(verdict):
        # sed -i writes a new file in the link's place, unless told to follow links.
        follows = parsed.has("--follow-symlinks")
        for a in operands:
            found = path_effect(ctx, cmd.cwd, a, "sed -i", "write", follow=follows)
            verdict = worse(verdict, found)
            if is_destructive(verdict):
                break
    return verdict or read("read-only-command", "sed only reads", line)


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
