"""The judges of commands that write, move, delete files or change their permissions.

The write allow-list: ``mkdir``, ``touch``, ``tee``, ``truncate``, ``shred``, ``sudoedit``
(every operand is written), ``cp``, ``mv``, ``ln``, ``install`` (the destination is written,
``mv``'s sources are taken away), ``rm``, ``rmdir``, ``unlink``, ``dd of=``, ``chmod``/
``chown``/``chgrp``, ``mktemp``: ``workspace`` when every target lands inside the workspace,
the scratch directory or a writable directory, ``destructive`` when one lands outside them
(see :mod:`~nexo_trio.core.targets`: recursive ``rm`` of ``/``, ``~`` or the whole
workspace, ``cp``/``mv``/``ln``/``install`` into ``/etc``, ``mv`` of a path away from
outside…), ``unknown`` with an option not known here. ``rsync`` can reach other machines
and run programs: unknown, but destructive with a local destination outside. A destination
``ln``, ``mv`` or a link-copying ``cp`` may make a link is remembered (what a later part of
the command does under it is unknown).
"""

from __future__ import annotations

from collections.abc import Sequence

from nexo_trio.core.invocation import Arg, Cmd, Ctx, names
from nexo_trio.core.options import (
    OptionSpec,
    gnu_operands,
    long_matches,
    option_spec,
    parse_options,
    unknown_option,
)
from nexo_trio.core.path_model import components
from nexo_trio.core.shell_syntax import Redir, Word
from nexo_trio.core.targets import path_effect, targets_effect
from nexo_trio.core.verdicts import EffectVerdict, cmdline, is_destructive, read, unknown, worse

__all__ = [
    "DELETERS",
    "PERMS",
    "judge_copy",
    "judge_dd",
    "judge_mktemp",
    "judge_perm",
    "judge_rm",
    "judge_rsync",
    "judge_writes",
    "recursive_flag",
]

DELETERS = frozenset({"rm", "unlink", "rmdir", "shred", "truncate"})
"""Commands that delete or destroy their operands."""
PERMS = frozenset({"chmod", "chown", "chgrp"})
"""Commands that change their operands' permissions or owner."""

_RM = option_spec("fiIrRdv", long="--force --interactive --one-file-system --no-preserve-root"
                  " --preserve-root --recursive --dir --verbose")  # fmt: skip
_RMDIR = option_spec("pv", long="--ignore-fail-on-non-empty --parents --verbose")
_MKDIR = option_spec("pvZ", "m", "--parents --verbose --context", "--mode")
_TOUCH = option_spec("acfhm", "drt", "--no-create --no-dereference", "--date --reference --time")
_TEE = option_spec("aip", long="--append --ignore-interrupts --output-error")
_TRUNCATE = option_spec("co", "rs", "--no-create --io-blocks", "--reference --size")
_SHRED = option_spec("fuvxz", "ns", "--force --remove --verbose --exact --zero",
                     "--iterations --random-source --size")  # fmt: skip
_OWN = option_spec("cfvhRHLP", long="--changes --silent --quiet --verbose --dereference"
                   " --no-dereference --no-preserve-root --preserve-root --recursive",
                   long_arg="--from --reference")  # fmt: skip
_MKTEMP = option_spec("dqut", "p", "--directory --dry-run --quiet --tmpdir", "--suffix")
_COPY_SPECS: dict[str, OptionSpec] = {
    "cp": option_spec(
        "abdfHilLnPpRrsTuvxZ",
        "St",
        "--archive --attributes-only --backup --copy-contents --debug --force --interactive"
        " --link --dereference --no-clobber --no-dereference --preserve --parents --recursive"
        " --reflink --remove-destination --strip-trailing-slashes --symbolic-link"
        " --no-target-directory --update --verbose --one-file-system --context"
        " --keep-directory-symlink",
        "--suffix --target-directory --no-preserve --sparse",
    ),
    "mv": option_spec(
        "bfinTuvZ",
        "St",
        "--backup --debug --exchange --force --interactive --no-clobber --no-copy"
        " --strip-trailing-slashes --no-target-directory --update --verbose --context",
        "--suffix --target-directory",
    ),
    "ln": option_spec(
        "bdFfinLPrsTv",
        "St",
        "--backup --directory --force --interactive --logical --no-dereference --physical"
        " --relative --symbolic --no-target-directory --verbose",
        "--suffix --target-directory",
    ),
    "install": option_spec(
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


def judge_rm(cmd: Cmd, redirs: Sequence[Redir], ctx: Ctx) -> EffectVerdict:
    """``rm``/``unlink``/``rmdir``: every operand is deleted (recursively with ``-r``)."""
    parsed = parse_options(cmd.args, _RMDIR if cmd.name == "rmdir" else _RM)
    if parsed.bad is not None and not recursive_flag(parsed.bad):
        return unknown_option(cmd, parsed)
    recursive = parsed.has("-r", "-R", "--recursive") or (
        parsed.bad is not None and recursive_flag(parsed.bad)
    )
    label = "rm -rf" if recursive else cmd.name or "rm"
    return targets_effect(cmd, ctx, parsed.operands, label, "recursive" if recursive else "delete")


def recursive_flag(value: str | None) -> bool:
    if value is None or not value.startswith("-") or value == "-":
        return False
    if value.startswith("--"):
        return bool(long_matches(value.partition("=")[0], ["--recursive"]))
    return "r" in value or "R" in value


def judge_writes(cmd: Cmd, redirs: Sequence[Redir], ctx: Ctx) -> EffectVerdict:
    """``mkdir``, ``touch``, ``tee``, ``truncate``, ``shred``, ``sudoedit``: every operand
    is written."""
    name = cmd.name or ""
    spec = {"mkdir": _MKDIR, "touch": _TOUCH, "tee": _TEE, "truncate": _TRUNCATE}.get(name)
    spec = spec or (_SHRED if name == "shred" else OptionSpec())
    parsed = parse_options(cmd.args, spec)
    if parsed.bad is not None:
        return unknown_option(cmd, parsed)
    operands = [a for a in parsed.operands if not (name == "tee" and a.value == "-")]
    return targets_effect(cmd, ctx, operands, name, "write")


def judge_copy(cmd: Cmd, redirs: Sequence[Redir], ctx: Ctx) -> EffectVerdict:
    """``cp``/``mv``/``ln``/``install``: the destination is written (a device, outside…),
    ``mv`` takes its sources away; a destination that may become a link is remembered."""
    name = cmd.name or "cp"
    parsed = parse_options(cmd.args, _COPY_SPECS[name])
    if parsed.bad is not None:
        return unknown_option(cmd, parsed)
    line = cmdline(cmd)
    if parsed.has("--strip-program"):
        return unknown("runs-program", f"install --strip-program runs a program: {line}", line)
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
        return read("read-only-command", f"{name} with no destination fails", line)
    verdict = targets_effect(cmd, ctx, dests, name, "write")
    if name == "mv" and not is_destructive(verdict):
        verdict = worse(verdict, targets_effect(cmd, ctx, sources, name, "take")) or verdict
    if name in ("ln", "mv") or (name == "cp" and any(parsed.has(o) for o in _COPY_LINKS)):
        for dest in dests:
            if dest.value is not None:
                ctx.changed.append(components(dest.value, cmd.cwd))
    return verdict


def judge_rsync(cmd: Cmd, redirs: Sequence[Redir], ctx: Ctx) -> EffectVerdict:
    """rsync: a local destination outside the workspace is destructive; rsync is otherwise
    unknown (remote ends, ``-e`` programs, filters: too many options to read)."""
    line = cmdline(cmd)
    ops = gnu_operands(cmd.args, frozenset("efT"), names("--rsh --filter --exclude --include"))
    dest = ops[-1] if len(ops) > 1 else None
    if dest is not None and dest.value is not None and ":" not in dest.value.partition("/")[0]:
        found = path_effect(ctx, cmd.cwd, dest, "rsync", "write")
        if found.effect == "destructive":
            return found
    return unknown(
        "network-client", f"rsync can reach other machines and run programs: {line}", line
    )


def judge_dd(cmd: Cmd, redirs: Sequence[Redir], ctx: Ctx) -> EffectVerdict:
    keys = names("if of bs ibs obs cbs count skip seek iseek oseek conv iflag oflag status")
    line = cmdline(cmd)
    targets: list[Arg] = []
    for a in cmd.args:
        v = a.value
        if v in ("--help", "--version"):
            continue
        key, eq, rest = (v or "").partition("=")
        if v is None or not eq or key not in keys:
            return unknown("unknown-option", f"dd {a.shown} is not an operand the rules know", line)
        if key == "of":
            targets.append(Arg(a.word, rest, a.shown.removeprefix("of=")))
    return targets_effect(cmd, ctx, targets, "dd", "write")


def judge_perm(cmd: Cmd, redirs: Sequence[Redir], ctx: Ctx) -> EffectVerdict:
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
    parsed = parse_options(args, _OWN)
    if parsed.bad is not None:
        return unknown_option(cmd, parsed)
    recursive = parsed.has("-R", "--recursive")
    targets = parsed.operands if parsed.has("--reference") else parsed.operands[1:]
    return targets_effect(cmd, ctx, targets, f"recursive {name}" if recursive else name, "perm")


def judge_mktemp(cmd: Cmd, redirs: Sequence[Redir], ctx: Ctx) -> EffectVerdict:
    """mktemp creates a file in ``-p DIR``, in ``$TMPDIR`` (``-t``, or no template: the
    scratch directory when the scope has one) or where its template says."""
    parsed = parse_options(cmd.args, _MKTEMP)
    if parsed.bad is not None:
        return unknown_option(cmd, parsed)
    if parsed.has("-u", "--dry-run"):
        return read("read-only-command", "mktemp --dry-run creates nothing", cmdline(cmd))
    template = parsed.operands[0] if parsed.operands else None
    dirs = [v for v in parsed.values("-p", "--tmpdir") if v is not None and v.value != ""]
    if not dirs and template is not None and not parsed.has("-t", "--tmpdir"):
        return targets_effect(cmd, ctx, [template], "mktemp", "write")
    if dirs:
        base = dirs[-1]
    else:
        tmp = ctx.env.get("TMPDIR")
        base = Arg(Word((("var", "TMPDIR"),)), tmp, "$TMPDIR")
    leaf = (template.value or "tmp") if template is not None else "tmp.XXXXXXXXXX"
    value = None if base.value is None else f"{base.value.rstrip('/')}/{leaf}"
    return path_effect(
        ctx, cmd.cwd, Arg(base.word, value, f"{base.shown}/{leaf}"), "mktemp", "write"
    )
