"""The judges of commands that run code: shells, interpreters, ``eval``, ``source``, ``su``,
``awk``, and the programs that run code the rules cannot read.

* ``sh -c STRING`` (``bash``, ``zsh``…: :data:`SHELLS`), ``eval`` and ``su -c`` have their
  command string analysed (by the walk, handed in as a
  :data:`~nexo_trio.core.verdicts.TextJudge`), and so has a heredoc or a here-string fed to a
  shell; a script file, or commands on standard input, are unknown, and so is text computed
  at run time. Downloaded code run is destructive (:mod:`~nexo_trio.core.download_judges`).
* Interpreters (``python``, ``perl``, ``node``…) run code the rules do not read: unknown, but
  for version queries (``python3 --version``: read). :func:`runs_stdin` says whether a
  command executes what arrives on its standard input (``… | sh``).
* ``awk`` only reads when its program cannot run commands or write files.
* Build tools, package managers, network clients, remote shells, containers and editors
  (:data:`UNKNOWN_CLASSES`) are unknown, named by their class.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from nexo_trio.core.download_judges import remote_code
from nexo_trio.core.invocation import Cmd, Ctx, names, render
from nexo_trio.core.options import option_spec, parse_options
from nexo_trio.core.shell_syntax import Redir
from nexo_trio.core.verdicts import EffectVerdict, TextJudge, cmdline, read, unknown, worse

__all__ = [
    "SHELLS",
    "UNKNOWN_CLASSES",
    "VERSION_ARGS",
    "is_interpreter",
    "judge_awk",
    "judge_eval",
    "judge_interpreter",
    "judge_shell",
    "judge_source",
    "judge_su",
    "runs_stdin",
]

SHELLS = frozenset(
    {"sh", "bash", "rbash", "zsh", "dash", "ksh", "mksh", "ash", "yash", "fish", "csh", "tcsh"}
)
_INTERPRETER_RE = re.compile(
    r"(python|pypy)[0-9.]*|perl[0-9.]*|ruby[0-9.]*|node|nodejs|php[0-9.]*|lua(jit)?[0-9.]*"
    r"|deno|bun|[gmn]?awk|busybox-awk|Rscript|julia|tclsh[0-9.]*|wish|expect|osascript|dc"
    r"|irb|ts-node|tsx|groovy|scala|kotlin|elixir|erl|escript|guile|racket|sbcl|clisp|gawk"
)
# Interpreter flags that run code given on the command line (so stdin is data, not code).
_INLINE_CODE_FLAGS = frozenset({"-c", "-e", "-E", "-m", "-r", "-p", "--eval", "--print"})
_INTERPRETER_ARG = frozenset({"-W", "-X", "-I", "--require", "--import", "--loader"})

VERSION_ARGS = frozenset({"--version", "-V", "--help", "version", "-version"})


def is_interpreter(name: str) -> bool:
    return name in SHELLS or bool(_INTERPRETER_RE.fullmatch(name))


def judge_interpreter(cmd: Cmd, ctx: Ctx) -> EffectVerdict:
    name = cmd.name or ""
    line = cmdline(cmd)
    remote = remote_code(cmd)
    if remote is not None:
        return remote
    values = [a.value for a in cmd.args]
    if values and all(v in VERSION_ARGS for v in values):
        return read("version-query", f"{name} only prints its version or help", line)
    inline = any(
        v is not None and (v in _INLINE_CODE_FLAGS or v[:2] in _INLINE_CODE_FLAGS) for v in values
    )
    if inline:
        return unknown("interpreter", f"{name} runs code the rules do not read: {line}", line)
    if any(v is None or not v.startswith("-") for v in values):
        return unknown("script", f"{name} runs a script the rules cannot read: {line}", line)
    return unknown("interpreter", f"{name} runs code from its input: {line}", line)


def judge_shell(cmd: Cmd, redirs: Sequence[Redir], ctx: Ctx, *, run: TextJudge) -> EffectVerdict:
    """``sh -c STRING`` analyses STRING; a shell reading a heredoc or here-string analyses
    it; a script file, or commands on standard input, are unknown."""
    remote = remote_code(cmd)
    if remote is not None:
        return remote
    line = cmdline(cmd)
    name = cmd.name or "sh"
    args = cmd.args
    i = 0
    inline = False
    while i < len(args):
        v = args[i].value
        if v is None or v == "-" or len(v) < 2 or v[0] not in "-+":
            break
        if v == "--":
            i += 1
            break
        if v.startswith("--"):
            i += 2 if v in ("--rcfile", "--init-file") else 1
            continue
        inline = inline or "c" in v[1:]
        i += 2 if v[-1] in "oO" else 1  # -o OPTION, -O SHOPT
    if inline:
        if i >= len(args):
            if cmd.via_xargs:
                return unknown("shell-stdin", f"{name} -c runs text from its input: {line}", line)
            return read("no-command", f"{name} -c with no command string runs nothing", line)
        found = run(render(args[i].word, ctx), ctx.child())
        if args[i].value is None:
            found = worse(
                found,
                unknown("eval", f"{name} -c runs text computed at run time: {line}", line),
            )
        return found or read("no-command", f"{name} -c runs nothing", line)
    if i < len(args) and args[i].value != "-":
        return unknown("script", f"{name} runs a script the rules cannot read: {line}", line)
    nothing = read("no-command", f"{name} gets no commands", line)
    verdict: EffectVerdict | None = None
    for redir in redirs:
        if redir.op in ("<<", "<<-") and redir.body is not None:
            verdict = worse(verdict, run(redir.body, ctx.child()) or nothing)
        elif redir.op == "<<<" and redir.target is not None:
            verdict = worse(verdict, run(render(redir.target, ctx), ctx.child()) or nothing)
        elif redir.op in ("<", "<>"):
            verdict = worse(
                verdict, unknown("script", f"{name} runs a script from a file: {line}", line)
            )
    return verdict or unknown("shell-stdin", f"{name} runs commands from its input: {line}", line)


def judge_eval(cmd: Cmd, redirs: Sequence[Redir], ctx: Ctx, *, run: TextJudge) -> EffectVerdict:
    line = cmdline(cmd)
    remote = remote_code(cmd)
    if remote is not None:
        return remote
    found: EffectVerdict | None = None
    if any(a.value is None for a in cmd.args):
        found = unknown("eval", f"eval runs text computed at run time: {line}", line)
    found = worse(found, run(" ".join(render(a.word, ctx) for a in cmd.args), ctx))
    return found or read("no-command", "eval of nothing", line)


def judge_source(cmd: Cmd, redirs: Sequence[Redir], ctx: Ctx) -> EffectVerdict:
    line = cmdline(cmd)
    remote = remote_code(cmd)
    if remote is not None:
        return remote
    return unknown("script", f"{cmd.name} runs a script the rules cannot read: {line}", line)


def judge_su(cmd: Cmd, redirs: Sequence[Redir], ctx: Ctx, *, run: TextJudge) -> EffectVerdict:
    line = cmdline(cmd)
    for k, a in enumerate(cmd.args):
        if a.value in ("-c", "--command") and k + 1 < len(cmd.args):
            found = run(render(cmd.args[k + 1].word, ctx), ctx.child())
            return found or read("no-command", "su -c runs nothing", line)
        if a.value is not None and a.value.startswith("--command="):
            found = run(a.value.partition("=")[2], ctx.child())
            return found or read("no-command", "su -c runs nothing", line)
    return unknown("shell-stdin", f"su runs a shell reading its input: {line}", line)


_AWK = option_spec("S", "Fv", "--sandbox", "--field-separator --assign")
_AWK_RUNS = re.compile(r"system|getline|[>|@]")


def judge_awk(cmd: Cmd, redirs: Sequence[Redir], ctx: Ctx) -> EffectVerdict:
    """awk only reads when its program cannot run commands or write files: no ``system``,
    ``getline``, ``>``, ``|`` or ``@`` directive in it (or ``--sandbox``), no options but
    ``-F``, ``-v`` and ``--sandbox``."""
    line = cmdline(cmd)
    parsed = parse_options(cmd.args, _AWK)
    if parsed.bad is not None:
        return unknown(
            "interpreter", f"{cmd.name} {parsed.bad} loads or writes files: {line}", line
        )
    if not parsed.operands or parsed.operands[0].value is None:
        return unknown(
            "interpreter", f"{cmd.name} runs a program the rules cannot read: {line}", line
        )
    program = parsed.operands[0].value
    if _AWK_RUNS.search(program) and not parsed.has("-S", "--sandbox"):
        return unknown(
            "interpreter", f"{cmd.name}'s program may run commands or write files: {line}", line
        )
    return read("read-only-command", f"{cmd.name}'s program only reads and prints", line)


def runs_stdin(cmd: Cmd, redirs: Sequence[Redir]) -> bool:
    """Whether the command executes what arrives on its standard input."""
    if cmd.name is None or any(r.op in ("<", "<<", "<<-", "<<<", "<>") for r in redirs):
        return False
    values = [a.value for a in cmd.args]
    if cmd.name in ("source", "."):
        return bool(values) and values[0] in ("/dev/stdin", "-")
    if not is_interpreter(cmd.name):
        return False
    if cmd.via_xargs:
        return True  # `… | xargs sh -c`, `… | xargs -I{} python -c {}`: the input is code
    shell = cmd.name in SHELLS
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


# --- programs that run code the rules cannot read --------------------------------------------

_BUILD_TOOLS = names(
    "make gmake cmake ninja meson bazel bazelisk buck just task mvn gradle gradlew ant sbt"
    " scons tox nox pytest py.test jest vitest mocha karma cargo go rustc rustup gcc g++ cc"
    " c++ clang clang++ ld javac java tsc esbuild webpack vite rollup parcel swift swiftc"
    " dotnet msbuild xcodebuild ruff black isort mypy pyright pylint flake8 eslint prettier"
    " rubocop gofmt rustfmt clang-format pre-commit"
)
_PACKAGE_MANAGERS = names(
    "npm npx pnpm pnpx yarn corepack pip pip3 pipx uv uvx poetry pdm hatch conda mamba"
    " micromamba gem bundle bundler composer apt apt-get aptitude dpkg yum dnf rpm zypper apk"
    " pacman yay brew port nix nix-env snap flatpak nuget cpan cpanm luarocks opam stack cabal"
    " mix rebar3 conan vcpkg"
)
_NETWORK = names(
    "curl wget fetch http https xh aria2c nc ncat netcat socat telnet ftp lftp sftp scp rsync"
    " ping ping6 dig nslookup host traceroute tracepath mtr whois openssl gh hub glab"
)
_REMOTE_SHELLS = names("ssh mosh rsh rlogin autossh sshpass")
_CONTAINERS = names(
    "docker podman kubectl helm nerdctl buildah lxc lxd vagrant minikube kind k3s crictl ctr"
    " docker-compose compose skopeo"
)
_EDITORS = names("vi vim nvim view ex ed emacs nano pico micro joe mcedit code subl")
UNKNOWN_CLASSES: tuple[tuple[frozenset[str], str, str], ...] = (
    (_BUILD_TOOLS, "build-tool", "runs build or test code the rules cannot read"),
    (_PACKAGE_MANAGERS, "package-manager", "installs or runs packages' code"),
    (_REMOTE_SHELLS, "remote-shell", "runs commands on another machine"),
    (_NETWORK, "network-client", "talks to the network"),
    (_CONTAINERS, "container", "drives containers or clusters"),
    (_EDITORS, "editor", "is an editor, which can run commands"),
)
"""The classes of programs whose effect is unknown: (their names, the rule, what they do)."""
