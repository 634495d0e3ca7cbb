"""What a simple command invokes, as far as it can be read statically.

:class:`Ctx` is what a walk over a command knows: the scope (:class:`World`), the virtual
current directory (it starts at the workspace and follows ``cd``/``pushd``, ``env -C``,
``sudo -D`` and ``git -C``), the variables assigned so far, the functions defined and the
paths earlier parts may have turned into links.
:func:`arg` resolves a word in it: ``$HOME`` and ``${HOME}`` are ``~``; ``$PWD`` is the
virtual current directory; ``$TMPDIR`` is the goal's scratch directory (when the scope has
one: the orchestrator sets it so); variables assigned earlier in the same command
(``D=build; rm -rf "$D"``) are substituted; any other variable or substitution is
unresolvable. :func:`expand_braces` expands ``{a,b}`` and ``{1..3}`` like the shell does
before anything else (``{rm,-rf,/}`` is ``rm -rf /``), within a bound.

:func:`unwrap` finds the command a simple command really runs (a :class:`Cmd`), past its
prefixes. Transparent ones change nothing about its effect: ``sudo``, ``doas``, ``env``,
``nohup``, ``time``, ``command``, ``exec``, ``builtin``, ``nice``, ``ionice``, ``timeout``,
``stdbuf``, ``setsid``, ``xargs``, ``watch``, ``busybox``, ``toybox``, ``unbuffer``,
``chronic`` and leading ``NAME=value`` assignments (named in :attr:`Cmd.env`). Opaque ones
(:data:`OPAQUE_WRAPPERS`: ``pkexec``, ``runuser``, ``chroot``, ``flock``, ``taskset``,
``unshare``, ``systemd-run``, ``script``, ``parallel``, ``strace``…) change where, as whom or
when it runs: the command under them is still found where their syntax allows (so a
destructive one is seen), and they are named in :attr:`Cmd.wrappers` (their effect is at
least unknown). ``env -S``, ``watch`` and the ``-c`` of some wrappers run a command string,
given back as :class:`Text` to be read as shell again.
"""

from __future__ import annotations

import itertools
import posixpath
import re
from collections.abc import Sequence

import attrs

from nexo_trio.core.path_model import CWD, Comps, World, components, show, show_pwd
from nexo_trio.core.shell_syntax import NAME_RE, PREFIX_WORDS, Part, Word, assignment

__all__ = [
    "OPAQUE_WRAPPERS",
    "Arg",
    "Cmd",
    "Ctx",
    "Text",
    "arg",
    "assign",
    "expand_braces",
    "names",
    "option_width",
    "render",
    "unwrap",
]

_GLOB = re.compile(r"[*?\[]")


@attrs.define
class Ctx:
    """What the analysis knows while walking a command (see the module docstring).
    ``env`` values ``None``: assigned, value unknown. ``changed`` is shared by every copy:
    the file system is one."""

    world: World
    cwd: Comps
    env: dict[str, str | None]
    depth: int = 0
    functions: set[str] = attrs.Factory(set)
    changed: list[Comps] = attrs.Factory(list)
    """Paths an earlier part may have made links (``ln``, ``mv``, ``cp -a``, ``git
    checkout``…): what lies at or below them cannot be resolved before the command runs."""

    @classmethod
    def start(cls, world: World) -> Ctx:
        ws = world.workspace
        env: dict[str, str | None] = {}
        if world.scratch is not None:
            env["TMPDIR"] = show(world.scratch)
        return cls(world, ws if ws is not None else (CWD,), env)

    def child(self) -> Ctx:
        """A copy for a subshell: its ``cd``, assignments and functions do not leak out."""
        return Ctx(
            self.world,
            self.cwd,
            dict(self.env),
            self.depth + 1,
            set(self.functions),
            self.changed,
        )


@attrs.frozen
class Arg:
    """A word as far as it resolves: ``value`` is ``None`` when it holds an expansion the
    rules cannot know; ``shown`` is how it was written (for reasons)."""

    word: Word
    value: str | None
    shown: str

    @property
    def pattern(self) -> bool:
        """Whether the word holds unquoted glob characters (the shell expands them)."""
        return any(kind == "lit" and _GLOB.search(text) for kind, text in self.word.parts)


@attrs.frozen
class Cmd:
    """A simple command after unwrapping its prefixes."""

    name: str | None  # basename of the command word; None if unresolvable
    head: Arg
    args: tuple[Arg, ...]
    cwd: Comps
    via_xargs: bool = False
    wrappers: tuple[str, ...] = ()
    """Opaque wrappers it runs under (see :data:`OPAQUE_WRAPPERS`)."""
    env: tuple[tuple[str, str | None], ...] = ()
    """Environment variables its prefixes set (``X=1 cmd``, ``env X=1 cmd``), with their
    values (``None``: not resolvable)."""
    by_path: bool = False
    """The program is named by a path outside the system's directories (``./ls``)."""


@attrs.frozen
class Text:
    """A command string a wrapper runs (``env -S``, ``watch``, ``flock -c``…)."""

    text: str
    wrappers: tuple[str, ...] = ()
    env: tuple[tuple[str, str | None], ...] = ()


def _resolve(word: Word, ctx: Ctx) -> str | None:
    out: list[str] = []
    for index, (kind, text) in enumerate(word.parts):
        if kind in ("lit", "q"):
            out.append(text)
        elif kind == "var" and text == "HOME" and (index == 0 or "".join(out).endswith("=")):
            out.append("~")  # `$HOME/x`, `of=$HOME/x` (the shell expands it there too)
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
        if kind in ("lit", "q", "opaque"):
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


def assign(word: Word, ctx: Ctx) -> str | None:
    """Record ``NAME=value`` in ``ctx``; the name assigned."""
    found = assignment(word)
    if not found:
        return None
    if found[0] not in ("HOME", "PWD"):
        ctx.env[found[0]] = _resolve(found[1], ctx)
    return found[0]


# --- brace expansion --------------------------------------------------------------------------

_MAX_BRACE_WORDS = 256
_MAX_BRACE_TEXT = 4096
_SEQUENCE = re.compile(r"(-?\d+|[A-Za-z])\.\.(-?\d+|[A-Za-z])(?:\.\.(-?\d+))?")
_Atom = tuple[str, str]  # ("c", one unquoted character) or a Part kept whole


class _TooMany(Exception):
    pass


def expand_braces(word: Word) -> list[Word]:
    """The words ``word`` becomes by brace expansion (``a{b,c}`` is ``ab ac``); more than the
    bound gives one opaque word (unresolvable)."""
    if not any(kind == "lit" and "{" in text for kind, text in word.parts):
        return [word]
    atoms: list[_Atom] = []
    for part in word.parts:
        if part[0] == "lit":
            atoms.extend(("c", ch) for ch in part[1])
        else:
            atoms.append(part)
    if len(atoms) > _MAX_BRACE_TEXT:
        return [Word((("opaque", render(word, None)),))]
    out: list[list[_Atom]] = []
    try:
        _expand(atoms, out)
    except _TooMany:
        return [Word((("opaque", render(word, None)),))]
    return [_word(atoms) for atoms in out]


def _word(atoms: list[_Atom]) -> Word:
    parts: list[Part] = []
    buf: list[str] = []
    for kind, text in atoms:
        if kind == "c":
            buf.append(text)
            continue
        if buf:
            parts.append(("lit", "".join(buf)))
            buf.clear()
        parts.append((kind, text))
    if buf:
        parts.append(("lit", "".join(buf)))
    return Word(tuple(parts))


def _expand(atoms: list[_Atom], out: list[list[_Atom]]) -> None:
    for start, atom in enumerate(atoms):
        if atom != ("c", "{"):
            continue
        alternatives = _alternatives(atoms, start)
        if alternatives is None:
            continue
        end, alts = alternatives
        for alt in alts:
            _expand(atoms[:start] + alt + atoms[end + 1 :], out)
            if len(out) > _MAX_BRACE_WORDS:
                raise _TooMany
        return
    out.append(atoms)


def _alternatives(atoms: list[_Atom], start: int) -> tuple[int, list[list[_Atom]]] | None:
    """For the ``{`` at ``start``: the index of its ``}`` and the alternatives inside, or
    ``None`` when it does not expand (no top-level comma, no sequence)."""
    depth = 0
    commas: list[int] = []
    for j in range(start, len(atoms)):
        atom = atoms[j]
        if atom == ("c", "{"):
            depth += 1
        elif atom == ("c", "}"):
            depth -= 1
            if depth == 0:
                if commas:
                    bounds = [start, *commas, j]
                    return j, [atoms[a + 1 : b] for a, b in itertools.pairwise(bounds)]
                inner = atoms[start + 1 : j]
                if all(kind == "c" for kind, _ in inner):
                    seq = _sequence("".join(text for _, text in inner))
                    if seq is not None:
                        return j, [[("c", ch) for ch in item] for item in seq]
                return None
        elif atom == ("c", ",") and depth == 1:
            commas.append(j)
    return None


def _sequence(text: str) -> list[str] | None:
    m = _SEQUENCE.fullmatch(text)
    if not m:
        return None
    first, last, step_text = m.group(1), m.group(2), m.group(3)
    step = abs(int(step_text)) if step_text else 1
    step = step or 1
    if first.lstrip("-").isdigit() and last.lstrip("-").isdigit():
        a, b = int(first), int(last)
        if abs(b - a) // step >= _MAX_BRACE_WORDS:
            raise _TooMany
        width = max(len(first), len(last)) if first.lstrip("-").startswith("0") else 0
        seq = range(a, b + 1, step) if a <= b else range(a, b - 1, -step)
        return [str(n).zfill(width) for n in seq]
    if first.isalpha() and last.isalpha():
        a, b = ord(first), ord(last)
        seq = range(a, b + 1, step) if a <= b else range(a, b - 1, -step)
        return [chr(n) for n in seq]
    return None


# --- unwrapping prefixes ----------------------------------------------------------------------


def names(text: str) -> frozenset[str]:
    """A set of space-separated names."""
    return frozenset(text.split())


_SYSTEM_DIRS = frozenset(
    {"/bin", "/usr/bin", "/sbin", "/usr/sbin", "/usr/local/bin", "/usr/local/sbin"}
)
_SUDO_ARG = frozenset("ugChprtUDTR")
_SUDO_LONG_ARG = names(
    "--user --group --close-from --host --prompt --role --type --other-user --chdir"
    " --command-timeout --chroot"
)
_SUDO_NO_COMMAND = frozenset("lvKV")  # list, validate, remove the timestamp, version
_XARGS_ARG = frozenset("adEILnPs")
_XARGS_LONG_ARG = names(
    "--arg-file --delimiter --max-lines --max-args --max-procs --max-chars --process-slot-var"
)
# Wrappers that run the rest of their arguments as a command and change nothing about its
# effect: name -> (short options taking a value, long options taking a value).
_SIMPLE_WRAPPERS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "nohup": (frozenset(), frozenset()),
    "builtin": (frozenset(), frozenset()),
    "setsid": (frozenset(), frozenset()),
    "unbuffer": (frozenset(), frozenset()),
    "chronic": (frozenset(), frozenset()),
    "busybox": (frozenset(), frozenset()),
    "toybox": (frozenset(), frozenset()),
    "time": (frozenset("f"), frozenset({"--format"})),
    "exec": (frozenset("a"), frozenset()),
    "nice": (frozenset("n"), frozenset({"--adjustment"})),
    "ionice": (frozenset("cn"), frozenset({"--class", "--classdata"})),
    "stdbuf": (frozenset("ioe"), frozenset({"--input", "--output", "--error"})),
}
# Options of a simple wrapper that make it do something else than run a command as is.
_SIMPLE_WRAPPER_OTHER: dict[str, frozenset[str]] = {
    "time": names("-o --output -a --append"),  # GNU time writes its report to a file
    "ionice": names("-p --pid -P --pgid -u --uid"),  # acts on running processes
}
OPAQUE_WRAPPERS: dict[str, tuple[frozenset[str], frozenset[str], int, str]] = {
    # name: (short options taking a value, long ones, operands before the command, the
    # short option whose value is a command string)
    "pkexec": (frozenset(), names("--user"), 0, ""),
    "runuser": (frozenset("ugGsw"), names("--user --group --supp-group --shell"), 0, "c"),
    "chroot": (frozenset(), names("--groups --userspec"), 1, ""),
    "flock": (frozenset("wE"), names("--timeout --conflict-exit-code"), 1, "c"),
    "taskset": (frozenset(), frozenset(), 1, ""),
    "unshare": (frozenset("wRSG"), names("--wd --root --setuid --setgid --propagation"), 0, ""),
    "systemd-run": (
        frozenset("pEuMH"),
        names("--property --setenv --unit --machine --host --uid --gid --working-directory"),
        0,
        "",
    ),
    "script": (frozenset("EItTBOm"), names("--echo --log-in --log-out --log-io"), 0, "c"),
    "nsenter": (frozenset("tSG"), names("--target --setuid --setgid"), 0, ""),
    "firejail": (frozenset(), frozenset(), 0, ""),
    "proot": (frozenset("rbwk"), names("--rootfs --bind --cwd --kernel-release"), 0, ""),
    "fakeroot": (frozenset("lsib"), names("--lib --faked"), 0, ""),
    "fakechroot": (frozenset("ecdsl"), names("--environment --config-dir"), 0, ""),
    "strace": (frozenset("oepsuEaIbPXOS"), names("--output --expr --pid --user --env"), 0, ""),
    "ltrace": (frozenset("oepsuaAlnEx"), names("--output --library"), 0, ""),
    "valgrind": (frozenset(), frozenset(), 0, ""),
    "setpriv": (frozenset(), names("--reuid --regid --groups --inh-caps --ambient-caps"), 0, ""),
    "prlimit": (frozenset("p"), names("--pid"), 0, ""),
    "chrt": (frozenset(), frozenset(), 1, ""),
    "numactl": (frozenset("CNmip"), names("--physcpubind --cpunodebind --membind"), 0, ""),
    "cgexec": (frozenset("g"), frozenset(), 0, ""),
    "sg": (frozenset(), frozenset(), 1, "c"),
    "daemonize": (frozenset("ceEoplu"), frozenset(), 0, ""),
    "nq": (frozenset(), frozenset(), 0, ""),
    "catchsegv": (frozenset(), frozenset(), 0, ""),
    "parallel": (frozenset("jSIaX"), names("--jobs --sshlogin --arg-file --delimiter"), 0, ""),
}
"""Wrappers that change where, as whom or when a command runs (see the module docstring)."""


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


def _command_string(args: Sequence[Arg], start: int, letter: str) -> Arg | str | None:
    """The command string of ``-LETTER TEXT``/``--command TEXT``/``--command=TEXT`` at or
    after ``args[start]`` (the first one)."""
    for k in range(start, len(args)):
        v = args[k].value or ""
        if v.startswith("--command="):
            return v.partition("=")[2]
        if v == "--command" or (
            v.startswith("-") and not v.startswith("--") and v.endswith(letter)
        ):
            return args[k + 1] if k + 1 < len(args) else None
    return None


def unwrap(args: list[Arg], ctx: Ctx) -> Cmd | Text | None:
    """The command a simple command really runs, past its prefixes (see module docstring).
    ``None``: nothing runs (only assignments, ``command -v``, ``sudo -l``...)."""
    i = 0
    cwd = ctx.cwd
    via_xargs = False
    wrappers: list[str] = []
    env: list[tuple[str, str | None]] = []

    def text(value: str) -> Text:
        return Text(value, tuple(wrappers), tuple(env))

    while True:
        while i < len(args) and (found := assignment(args[i].word)):
            env.append((found[0], _resolve(found[1], ctx)))
            i += 1
        if i >= len(args):
            return None
        head = args[i]
        if head.value is None:
            return Cmd(
                None, head, tuple(args[i + 1 :]), cwd, via_xargs, tuple(wrappers), tuple(env)
            )
        name = _basename(head.value)
        by_path = "/" in head.value and posixpath.dirname(head.value) not in _SYSTEM_DIRS
        i += 1
        if by_path:
            return Cmd(
                name, head, tuple(args[i:]), cwd, via_xargs, tuple(wrappers), tuple(env), True
            )
        if name in ("sudo", "doas"):
            shell = False  # sudo -s / -i with no command runs a shell reading stdin
            while i < len(args) and (v := args[i].value) is not None and v.startswith("-"):
                if v == "--":
                    i += 1
                    break
                short = set(v[1:]) if not v.startswith("--") else set()
                if v in ("--shell", "--login") or {"s", "i"} & short:
                    shell = True
                if v in ("--edit", "-e"):
                    name = "sudoedit"
                if short & _SUDO_NO_COMMAND or v in ("--list", "--validate", "--help"):
                    return None
                width = option_width(args, i, _SUDO_ARG, _SUDO_LONG_ARG)
                value = args[i + 1].value if width == 2 and i + 1 < len(args) else None
                if v in ("-D", "--chdir") or v.startswith("--chdir="):
                    target = value if width == 2 else v.partition("=")[2]
                    cwd = components(target, cwd) if target else (CWD,)
                elif v in ("-R", "--chroot") or v.startswith("--chroot="):
                    wrappers.append(f"{name} --chroot")
                i += width
            if name == "sudoedit":
                return Cmd(name, head, tuple(args[i:]), cwd, via_xargs, tuple(wrappers))
            if shell and all(assignment(a.word) for a in args[i:]):
                return Cmd("sh", head, (), cwd, via_xargs, tuple(wrappers), tuple(env))
        elif name == "env":
            while i < len(args) and (v := args[i].value) is not None and v.startswith("-"):
                if v in ("-", "--"):
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
                    given = v[2:] if v.startswith("-S") else v.partition("=")[2]
                    j = i + 1
                    if not given and j < len(args):
                        given = render(args[j].word, ctx)
                        j += 1
                    rest = " ".join(render(a.word, ctx) for a in args[j:])
                    return text(f"{given} {rest}")
                elif v in ("-u", "--unset"):
                    i += 2
                elif v in ("-i", "-0", "-v", "--ignore-environment", "--null", "--debug") or (
                    v.startswith("--unset=")
                ):
                    i += 1
                else:
                    wrappers.append(f"env {v}")  # signals, or an option not known here
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
            start = i
            i = _skip_options(args, i, _XARGS_ARG, _XARGS_LONG_ARG)
            if any((a.value or "").startswith(("-a", "--arg-file")) for a in args[start:i]):
                wrappers.append("xargs --arg-file")
        elif name == "watch":
            start = i
            i = _skip_options(args, i, frozenset("n"), frozenset({"--interval"}))
            if not any(a.value in ("-x", "--exec") for a in args[start:i]):
                return text(" ".join(render(a.word, ctx) for a in args[i:]))
        elif name in _SIMPLE_WRAPPERS:
            with_arg, long_with_arg = _SIMPLE_WRAPPERS[name]
            start = i
            i = _skip_options(args, i, with_arg, long_with_arg)
            other = _SIMPLE_WRAPPER_OTHER.get(name, frozenset())
            if any((a.value or "").partition("=")[0] in other for a in args[start:i]):
                wrappers.append(name)
        elif name in OPAQUE_WRAPPERS:
            wrappers.append(name)
            with_arg, long_with_arg, operands, letter = OPAQUE_WRAPPERS[name]
            string = _command_string(args, i, letter) if letter else None
            if string is not None:
                return text(string if isinstance(string, str) else render(string.word, ctx))
            i = _skip_options(args, i, with_arg, long_with_arg)
            if name == "parallel":
                items = [a for a in args[i:] if not (a.value or "").startswith(":::")]
                return Cmd(
                    _basename(items[0].value or "") if items and items[0].value else None,
                    items[0] if items else head,
                    tuple(items[1:]),
                    cwd,
                    True,
                    tuple(wrappers),
                    tuple(env),
                )
            i += operands
            if name == "sg" and i < len(args):
                return text(" ".join(render(a.word, ctx) for a in args[i:]))
            if i >= len(args):
                return Cmd(name, head, (), cwd, via_xargs, tuple(wrappers), tuple(env))
        elif name in PREFIX_WORDS:
            continue  # `then rm …` when a keyword ended up mid-command
        else:
            return Cmd(name, head, tuple(args[i:]), cwd, via_xargs, tuple(wrappers), tuple(env))
