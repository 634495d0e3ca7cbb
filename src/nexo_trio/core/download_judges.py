"""The judges of downloads: what ``curl`` and ``wget`` write, and downloaded code run.

Downloaders (:data:`DOWNLOADERS`) are network clients (unknown); ``curl -o``, ``wget -O``,
their logs and cookie jars writing outside the workspace or onto a device are destructive
(:func:`downloader_outputs`), and so is downloaded code run by a shell, ``eval`` or
``source``: ``bash <(curl …)``, ``sh -c "$(curl …)"``, ``eval "$(wget -O- …)"``
(:func:`remote_code`; ``curl … | sh`` is a rule of the pipeline, in
:mod:`~nexo_trio.core.judges`).
"""

from __future__ import annotations

from nexo_trio.core.invocation import Arg, Cmd, Ctx, arg, names, unwrap
from nexo_trio.core.options import long_matches
from nexo_trio.core.path_model import CWD, World
from nexo_trio.core.shell_syntax import TooDeep, Word, parse, simple_nodes
from nexo_trio.core.substitutions import commands_in
from nexo_trio.core.targets import path_effect
from nexo_trio.core.verdicts import EffectVerdict, cmdline, destructive

__all__ = ["DOWNLOADERS", "downloader_outputs", "remote_code"]

DOWNLOADERS = frozenset({"curl", "wget", "fetch", "http", "https", "xh", "aria2c"})


def _downloads(text: str) -> bool:
    """Whether the command text runs a downloader (curl, wget...)."""
    try:
        pipelines = parse(text)
    except TooDeep:
        return True
    probe = Ctx(World(None, ()), (CWD,), {})
    for node in simple_nodes(pipelines):
        cmd = unwrap([arg(w, probe) for w in node.words], probe)
        if isinstance(cmd, Cmd) and cmd.name in DOWNLOADERS:
            return True
    return False


def remote_code(cmd: Cmd) -> EffectVerdict | None:
    """``bash <(curl …)``, ``sh -c "$(curl …)"``, ``eval "$(wget -O- …)"``."""
    for a in cmd.args:
        if any(_downloads(inner) for inner in commands_in(a.word.parts)):
            return destructive(
                "download-run", f"downloaded code is run by {cmd.name}: {a.shown}", cmdline(cmd)
            )
    return None


_CURL_ARG = frozenset("AbcCdDeEFHKmoPQrtTuUwxXyYz")
_CURL_OUTPUTS = {"-o": "--output", "-D": "--dump-header", "-c": "--cookie-jar"}
_CURL_LONG_OUTPUTS = names(
    "--output --dump-header --cookie-jar --output-dir --trace --trace-ascii --stderr --libcurl"
)
_WGET_ARG = frozenset("eoaiBtOTwQPUlARDIXY")
_WGET_OUTPUTS = {"-O": "--output-document", "-P": "--directory-prefix", "-o": "--output-file",
                 "-a": "--append-output"}  # fmt: skip


def downloader_outputs(cmd: Cmd, ctx: Ctx) -> EffectVerdict | None:
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
            if long_matches(key, long_outputs):
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
        found = path_effect(ctx, cmd.cwd, t, name, "write")
        if found.effect == "destructive":
            return found
    return None
