"""What a simple command invokes, as far as it can be read statically.

:class:`Ctx` is what a walk over a command knows: the workspace, the virtual current directory
(it starts at the workspace and follows ``cd``/``pushd``, ``env -C`` and ``git -C``) and the
variables assigned so far. :func:`arg` resolves a word in it: ``$HOME`` and ``${HOME}`` are
``~``; ``$PWD`` is the virtual current directory; variables assigned earlier in the same
command (``D=build; rm -rf "$D"``) are substituted; any other variable or substitution is
unresolvable.

:func:`unwrap` finds the command a simple command really runs (a :class:`Cmd`), past its
prefixes: ``sudo``, ``doas``, ``env``, ``nohup``, ``time``, ``command``, ``exec``,
``builtin``, ``nice``, ``ionice``, ``timeout``, ``stdbuf``, ``setsid``, ``xargs``, ``watch``,
``busybox`` and leading ``NAME=value`` assignments. ``env -S`` and ``watch`` run a command
string, given back as :class:`Text` to be read as shell again.
"""

from __future__ import annotations

import posixpath
from collections.abc import Sequence

import attrs

from nexo_trio.core.path_model import CWD, Comps, components, show_pwd
from nexo_trio.core.shell_syntax import NAME_RE, PREFIX_WORDS, Word, assignment

__all__ = [
    "Arg",
    "Cmd",
    "Ctx",
    "Text",
    "arg",
    "assign",
    "names",
    "option_width",
    "render",
    "unwrap",
]


@attrs.define
class Ctx:
    """What the analysis knows while walking a command: the workspace, the virtual current
    directory and the variables assigned so far (``None``: assigned, value unknown)."""

    workspace: Comps | None
    cwd: Comps
    env: dict[str, str | None]
    depth: int = 0

    def child(self) -> Ctx:
        """A copy for a subshell: its ``cd`` and assignments do not leak out."""
        return Ctx(self.workspace, self.cwd, dict(self.env), self.depth + 1)


@attrs.frozen
class Arg:
    """A word as far as it resolves: ``value`` is ``None`` when it holds an expansion the
    rules cannot know; ``shown`` is how it was written (for reasons)."""

    word: Word
    value: str | None
    shown: str


@attrs.frozen
class Cmd:
    """A simple command after unwrapping its prefixes."""

    name: str | None  # basename of the command word; None if unresolvable
    head: Arg
    args: tuple[Arg, ...]
    cwd: Comps
    via_xargs: bool = False


@attrs.frozen
class Text:
    """A command string a wrapper runs (``env -S``, ``watch``)."""

    text: str


def _resolve(word: Word, ctx: Ctx) -> str | None:
    out: list[str] = []
    for index, (kind, text) in enumerate(word.parts):
        if kind in ("lit", "q"):
            out.append(text)
        elif kind == "var" and text == "HOME" and index == 0:
            out.append("~")
        elif kind == "var" and text == "PWD":
            out.append(show_pwd(ctx.cwd))
        elif kind == "var" and text != "HOME" and ctx.env.get(text) is not None:
            out.append(ctx.env[text] or "")
        else:
            return None
    return "".join(out)


def render(word: Word, ctx: Ctx | None) -> str:
    """The word as the shell would pass it on, expansions the rules cannot resolve kept in
    their written form (``ctx`` ``None``: keep every expansion as written)."""
    out: list[str] = []
    for kind, text in word.parts:
        if kind in ("lit", "q"):
            out.append(text)
        elif kind == "var":
            known = ctx.env.get(text) if ctx is not None and text not in ("HOME", "PWD") else None
            if known is not None:
                out.append(known)
            else:
                out.append(
                    "$" + text if NAME_RE.fullmatch(text) or len(text) == 1 else f"${{{text}}}"
                )
        elif kind == "sub":
            out.append(f"$({text})")
        else:
            out.append(f"$(({text}))")
    return "".join(out)


def arg(word: Word, ctx: Ctx) -> Arg:
    return Arg(word, _resolve(word, ctx), render(word, None))


def assign(word: Word, ctx: Ctx) -> None:
    found = assignment(word)
    if found and found[0] not in ("HOME", "PWD"):
        ctx.env[found[0]] = _resolve(found[1], ctx)


# --- unwrapping prefixes ----------------------------------------------------------------------


def names(text: str) -> frozenset[str]:
    """A set of space-separated names."""
    return frozenset(text.split())


_SUDO_ARG = frozenset("ugChprtUDTR")
_SUDO_LONG_ARG = names(
    "--user --group --close-from --host --prompt --role --type --other-user --chdir"
    " --command-timeout --chroot"
)
_XARGS_ARG = frozenset("adEILnPs")
_XARGS_LONG_ARG = names(
    "--arg-file --delimiter --max-lines --max-args --max-procs --max-chars --process-slot-var"
)
# Wrappers that run the rest of their arguments as a command: name -> (short options taking a
# value, long options taking a value).
_SIMPLE_WRAPPERS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "nohup": (frozenset(), frozenset()),
    "builtin": (frozenset(), frozenset()),
    "setsid": (frozenset(), frozenset()),
    "unbuffer": (frozenset(), frozenset()),
    "chronic": (frozenset(), frozenset()),
    "busybox": (frozenset(), frozenset()),
    "toybox": (frozenset(), frozenset()),
    "time": (frozenset("fo"), frozenset({"--format", "--output"})),
    "exec": (frozenset("a"), frozenset()),
    "nice": (frozenset("n"), frozenset({"--adjustment"})),
    "ionice": (frozenset("cnt"), frozenset({"--class", "--classdata"})),
    "stdbuf": (frozenset("ioe"), frozenset({"--input", "--output", "--error"})),
}


def option_width(
    args: Sequence[Arg], i: int, with_arg: frozenset[str], long_with_arg: frozenset[str]
) -> int:
    """How many words the option at ``args[i]`` takes: 2 when its value is the next word."""
    v = args[i].value or ""
    if v.startswith("--"):
        return 2 if ("=" not in v and v in long_with_arg) else 1
    letters = v[1:]
    for k, ch in enumerate(letters):
        if ch in with_arg:
            return 2 if k == len(letters) - 1 else 1  # -u root, or -uroot
    return 1


def _skip_options(
    args: Sequence[Arg], i: int, with_arg: frozenset[str], long_with_arg: frozenset[str]
) -> int:
    """Index of the first operand at or after ``i``, skipping options (and their values)."""
    while i < len(args):
        v = args[i].value
        if v is None or v == "-" or not v.startswith("-"):
            return i
        if v == "--":
            return i + 1
        i += option_width(args, i, with_arg, long_with_arg)
    return i


def _basename(value: str) -> str:
    return posixpath.basename(value.rstrip("/")) or value


def unwrap(args: list[Arg], ctx: Ctx) -> Cmd | Text | None:
    """The command a simple command really runs, past its prefixes (see module docstring).
    ``None``: nothing runs (only assignments, ``command -v``...)."""
    i = 0
    cwd = ctx.cwd
    via_xargs = False
    while True:
        while i < len(args) and assignment(args[i].word):
            i += 1
        if i >= len(args):
            return None
        head = args[i]
        if head.value is None:
            return Cmd(None, head, tuple(args[i + 1 :]), cwd, via_xargs)
        name = _basename(head.value)
        i += 1
        if name in ("sudo", "doas"):
            shell = False  # sudo -s / -i with no command runs a shell reading stdin
            while i < len(args) and (v := args[i].value) is not None and v.startswith("-"):
                if v == "--":
                    i += 1
                    break
                if v in ("--shell", "--login") or (
                    not v.startswith("--") and {"s", "i"} & set(v[1:])
                ):
                    shell = True
                i += option_width(args, i, _SUDO_ARG, _SUDO_LONG_ARG)
            if shell and all(assignment(a.word) for a in args[i:]):
                return Cmd("sh", head, (), cwd, via_xargs)
        elif name == "env":
            while i < len(args) and (v := args[i].value) is not None and v.startswith("-"):
                if v == "--":
                    i += 1
                    break
                if v in ("-C", "--chdir") and i + 1 < len(args):
                    target = args[i + 1].value
                    cwd = components(target, cwd) if target is not None else (CWD,)
                    i += 2
                elif v.startswith("--chdir="):
                    cwd = components(v.partition("=")[2], cwd)
                    i += 1
                elif v in ("-S", "--split-string") or v.startswith(("-S", "--split-string=")):
                    text = v[2:] if v.startswith("-S") else v.partition("=")[2]
                    j = i + 1
                    if not text and j < len(args):
                        text = render(args[j].word, ctx)
                        j += 1
                    rest = " ".join(render(a.word, ctx) for a in args[j:])
                    return Text(f"{text} {rest}")
                elif v in ("-u", "--unset"):
                    i += 2
                else:
                    i += 1
        elif name == "command":
            if i < len(args) and args[i].value in ("-v", "-V"):
                return None  # only looks the name up
            i = _skip_options(args, i, frozenset(), frozenset())
        elif name == "timeout":
            i = _skip_options(args, i, frozenset("sk"), frozenset({"--signal", "--kill-after"}))
            i += 1  # the duration
        elif name == "xargs":
            via_xargs = True
            i = _skip_options(args, i, _XARGS_ARG, _XARGS_LONG_ARG)
        elif name == "watch":
            start = i
            i = _skip_options(args, i, frozenset("n"), frozenset({"--interval"}))
            if not any(a.value in ("-x", "--exec") for a in args[start:i]):
                return Text(" ".join(render(a.word, ctx) for a in args[i:]))
        elif name in _SIMPLE_WRAPPERS:
            with_arg, long_with_arg = _SIMPLE_WRAPPERS[name]
            i = _skip_options(args, i, with_arg, long_with_arg)
        elif name in PREFIX_WORDS:
            continue  # `then rm …` when a keyword ended up mid-command
        else:
            return Cmd(name, head, tuple(args[i:]), cwd, via_xargs)
