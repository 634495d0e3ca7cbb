"""The judges of commands that read: the read allow-list, and readers with options that
write or run.

:data:`READ_ONLY_COMMANDS` only read, whatever their options (their output goes to stdout).
``sort``, ``shuf``, ``uniq``, ``xxd``, ``tree``, ``less``, ``rg``, ``fd``, ``file``, ``date``
and ``man`` (:data:`READERS`) read, unless given a file to write (``sort -o``, ``tree -o``,
``uniq IN OUT``: judged as writes, see :mod:`~nexo_trio.core.targets`) or an option that runs
a program or changes the system (``rg --pre``, ``fd -x``, ``man -P``, ``date -s``, ``less``
commands: unknown). ``hostname`` only reads without an operand, ``history`` without options,
``hash`` without ``-p``.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from nexo_trio.core.invocation import Arg, Cmd, Ctx, names
from nexo_trio.core.options import OptionSpec, parse_options
from nexo_trio.core.shell_syntax import Redir
from nexo_trio.core.targets import targets_effect
from nexo_trio.core.verdicts import EffectVerdict, cmdline, read, unknown

__all__ = [
    "READERS",
    "READ_ONLY_COMMANDS",
    "judge_hash",
    "judge_history",
    "judge_hostname",
    "judge_reader",
]

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


@attrs.frozen
class _Reader:
    spec: OptionSpec
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
    spec = OptionSpec(letters, short_arg, names(runs) | names(outputs), names(long_arg))
    return _Reader(spec, names(outputs), names(runs), written_operand)


READERS: dict[str, _Reader] = {
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


def judge_reader(cmd: Cmd, redirs: Sequence[Redir], ctx: Ctx) -> EffectVerdict:
    name = cmd.name or ""
    reader = READERS[name]
    parsed = parse_options(cmd.args, reader.spec)
    line = cmdline(cmd)
    runs = [o for o, _ in parsed.opts if o in reader.runs]
    if runs or (parsed.bad is not None and any(parsed.bad.startswith(r) for r in reader.runs)):
        what = runs[0] if runs else parsed.bad
        return unknown(
            "runs-program", f"{name} {what} runs a program or changes the system: {line}", line
        )
    if name == "less" and any(
        a.value is not None and a.value.startswith("+") and ("!" in a.value or "|" in a.value)
        for a in cmd.args
    ):
        return unknown("runs-program", f"less commands can run programs: {line}", line)
    outputs: list[Arg] = [v for o, v in parsed.opts if o in reader.outputs and v is not None]
    if reader.written_operand is not None and len(parsed.operands) > reader.written_operand:
        outputs.append(parsed.operands[reader.written_operand])
    if not outputs:
        return read("read-only-command", f"{name} only reads", line)
    return targets_effect(cmd, ctx, outputs, name, "write")


def judge_hostname(cmd: Cmd, redirs: Sequence[Redir], ctx: Ctx) -> EffectVerdict:
    line = cmdline(cmd)
    values = [a.value for a in cmd.args]
    if all(
        v is not None and v.startswith("-") and v not in ("-F", "--file", "-b", "--boot")
        for v in values
    ):
        return read("read-only-command", "hostname only prints the host name", line)
    return unknown(
        "system-setting", f"hostname with an operand changes the host name: {line}", line
    )


def judge_history(cmd: Cmd, redirs: Sequence[Redir], ctx: Ctx) -> EffectVerdict:
    values = [a.value for a in cmd.args]
    line = cmdline(cmd)
    if not values or (len(values) == 1 and (values[0] or "").isdigit()):
        return read("read-only-command", "history only prints", line)
    return unknown("unknown-option", f"history with options reads or writes files: {line}", line)


def judge_hash(cmd: Cmd, redirs: Sequence[Redir], ctx: Ctx) -> EffectVerdict:
    line = cmdline(cmd)
    if any(a.value is None or (a.value.startswith("-") and "p" in a.value) for a in cmd.args):
        return unknown("shell-state", f"hash -p maps a command name to any program: {line}", line)
    return read("shell-state", "hash only remembers where commands are", line)
