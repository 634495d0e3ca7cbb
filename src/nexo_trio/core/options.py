"""Options, GNU style: how the judges read an allow-listed command's arguments.

A command's options are an :class:`OptionSpec` (:func:`option_spec`): short flags, short
options taking a value, long flags, long options taking a value. :func:`parse_options` splits
the arguments into options (anywhere before ``--``) and operands; :func:`gnu_operands` keeps
only the operands. Long options are matched abbreviated too (``rm --recur``, ``git reset
--har``: :func:`long_matches`). An option not known here, an ambiguous one, or one missing
its value makes the command ``unknown`` (:func:`unknown_option`): its effect is not read.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import attrs

from nexo_trio.core.invocation import Arg, Cmd, names, option_width
from nexo_trio.core.verdicts import EffectVerdict, cmdline, unknown

__all__ = [
    "OptionSpec",
    "ParsedOptions",
    "gnu_operands",
    "long_matches",
    "option_spec",
    "parse_options",
    "unknown_option",
]


@attrs.frozen
class OptionSpec:
    """A command's options: short flags, short options taking a value, long flags (an
    ``=value`` is allowed), long options taking a value."""

    short: str = ""
    short_arg: str = ""
    long: frozenset[str] = frozenset()
    long_arg: frozenset[str] = frozenset()


@attrs.frozen
class ParsedOptions:
    opts: tuple[tuple[str, Arg | None], ...]
    operands: tuple[Arg, ...]
    bad: str | None = None
    """An option that is not known (or is ambiguous): the command's effect is not read."""

    def has(self, *names_: str) -> bool:
        return any(name in names_ for name, _ in self.opts)

    def values(self, *names_: str) -> list[Arg | None]:
        return [value for name, value in self.opts if name in names_]


def long_matches(key: str, known: Iterable[str]) -> list[str]:
    """The known long options ``key`` names (exactly, or as an abbreviation)."""
    known = list(known)
    if key in known:
        return [key]
    return [k for k in known if k.startswith(key)] if len(key) > 2 else []


def parse_options(args: Sequence[Arg], spec: OptionSpec) -> ParsedOptions:
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
            found = long_matches(key, spec.long | spec.long_arg)
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
    return ParsedOptions(tuple(opts), tuple(operands), bad)


def option_spec(
    short: str = "", short_arg: str = "", long: str = "", long_arg: str = ""
) -> OptionSpec:
    return OptionSpec(short, short_arg, names(long + " --help --version"), names(long_arg))


def unknown_option(cmd: Cmd, parsed: ParsedOptions) -> EffectVerdict:
    line = cmdline(cmd)
    return unknown(
        "unknown-option", f"{cmd.name} {parsed.bad} is not an option the rules know: {line}", line
    )


def gnu_operands(
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
