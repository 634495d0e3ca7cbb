"""Static permission rules: read-only tools, a destructive-command detector, workspace paths.

Pure (stdlib + attrs): nothing here touches the filesystem, runs a process or knows trio.
The gate layer wraps :func:`evaluate_rules` in its ``rules`` decider.

What the rules decide (:func:`evaluate_rules`):

* tools in :data:`READ_ONLY_TOOLS` are allowed;
* ``Bash`` commands for which :func:`destructive_reason` finds a reason are denied;
* ``Write``/``Edit``/``MultiEdit``/``NotebookEdit`` whose path escapes the workspace (and is not
  in a scratch directory, see below) are denied; with no workspace known they abstain;
* everything else gets ``default``: ``allow`` for the standalone ``rules`` decider,
  ``abstain`` inside a chain, so the next decider (e.g. the LLM) decides.

How Bash commands are read (:func:`destructive_reason`): a small shell lexer and parser
(quotes, escapes, ``$'…'``, variables, ``$( )``, backticks, ``<( )``, heredocs, ``;`` ``&&``
``||`` ``|`` ``&`` newlines, subshells, ``{ …; }`` groups, functions, ``if``/``while``/``case``)
turns the command into simple commands, each of which is unwrapped from its prefixes
(``sudo``, ``doas``, ``env``, ``nohup``, ``time``, ``command``, ``exec``, ``builtin``, ``nice``,
``ionice``, ``timeout``, ``stdbuf``, ``setsid``, ``xargs``, ``watch``, ``busybox``, leading
``NAME=value`` assignments) and judged by name. Command strings run by ``sh -c``/``bash -c``/…,
``eval``, ``su -c``, ``env -S``, ``watch`` and shells fed a heredoc are analysed recursively;
command substitutions are analysed as commands (they run). Quoted text is data, not a command:
``echo "rm -rf /"`` is harmless.

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

Paths are judged purely, never on disk: relative paths are resolved against a virtual current
directory that starts at the workspace and follows ``cd``/``pushd`` (and ``env -C``/``git -C``);
``..`` is normalised like :func:`posixpath.normpath`; ``~``, ``~user``, ``$HOME`` and ``${HOME}``
count as outside the workspace (the home directory is unknown, and is never the workspace);
``$PWD`` is the virtual current directory; variables assigned earlier in the same command
(``D=build; rm -rf "$D"``) are substituted; any other variable or substitution is unresolvable.
With no workspace (``None``) every absolute path counts as outside, and relative paths are
judged against an unknown current directory (climbing out of it with ``..`` counts as outside).

Scratch directories: paths strictly below ``/tmp``, ``/var/tmp`` or ``/dev/shm`` may be
written, truncated and deleted (``rm -rf /tmp/build-1``): nothing a user keeps lives there and
commands, test runs and build tools use them all the time. The scratch roots themselves and
their whole contents (``rm -rf /tmp``, ``rm -rf /tmp/*``) are still outside: other programs'
files live there (possibly the orchestrator's own sockets).

Known limits (a static detector can only read what is written):

* Symlinks cannot be resolved purely: ``rm -rf ./link`` where ``link`` points at ``/`` is not
  caught, nor is a workspace that is itself reached through a symlink spelled differently.
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
* ``cd`` is assumed to succeed (``cd x || rm -rf *`` is judged as if in ``x``), ``case`` and
  arithmetic are parsed approximately, ``[[ a > b ]]`` is read as a redirection, and a redirection
  to an unresolvable path (``> "$OUT"``) is not flagged.
* Non-recursive ``chmod``/``chown`` outside the workspace is only flagged on ``/`` itself.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterator, Sequence
from typing import Any, Literal, TypeAlias

import attrs

__all__ = [
    "FILE_WRITE_TOOLS",
    "READ_ONLY_TOOLS",
    "RuleVerdict",
    "destructive_reason",
    "evaluate_rules",
    "path_escapes",
]

READ_ONLY_TOOLS: frozenset[str] = frozenset(
    {
        # Reading files and listing directories (older CLIs have Grep/Glob/LS; newer ones
        # search through Bash). Reading outside the workspace is still only reading.
        "Read",
        "Grep",
        "Glob",
        "LS",
        "NotebookRead",
        # Web search runs on the API side with a query; it fetches nothing chosen by URL.
        # WebFetch is deliberately NOT here: it sends a GET to any URL Claude picks, which is
        # both an exfiltration channel (workspace secrets in the query string) and a way to
        # reach internal services (169.254.169.254, localhost admin endpoints): it gets the
        # default (allowed standalone, the LLM decides in a chain).
        "WebSearch",
        # Claude's own bookkeeping: the todo/task list lives in the CLI session, not on disk.
        "TodoRead",
        "TodoWrite",
        "TaskCreate",
        "TaskGet",
        "TaskList",
        "TaskUpdate",
        # Listing and reading what is already there: deferred tool schemas, agents,
        # scheduled jobs, background shell output, MCP resources.
        "ToolSearch",
        "ListAgents",
        "CronList",
        "BashOutput",
        "ListMcpResourcesTool",
        "ReadMcpResourceTool",
    }
)
"""Tools that never change anything outside the CLI session: always allowed."""

FILE_WRITE_TOOLS: dict[str, str] = {
    "Write": "file_path",
    "Edit": "file_path",
    "MultiEdit": "file_path",
    "NotebookEdit": "notebook_path",
}
"""File-writing tools and the input key holding the path they write."""


@attrs.frozen
class RuleVerdict:
    """What the static rules say about one tool call, and why."""

    outcome: Literal["allow", "deny", "abstain"]
    reason: str


def evaluate_rules(
    tool_name: str,
    tool_input: dict[str, Any],
    workspace: str | None,
    *,
    default: Literal["allow", "abstain"],
) -> RuleVerdict:
    """Judge one tool call with the static rules (see the module docstring).

    Malformed input for ``Bash`` or a file-writing tool (no command string, no path) is
    denied: the gate fails closed. Anything the rules do not know gets ``default``.
    """
    if tool_name in READ_ONLY_TOOLS:
        return RuleVerdict("allow", f"{tool_name} is read-only")
    raw: object = tool_input
    if tool_name == "Bash":
        command = raw.get("command") if isinstance(raw, dict) else None
        if not isinstance(command, str):
            return RuleVerdict("deny", "malformed Bash input: no command string")
        reason = destructive_reason(command, workspace)
        if reason is not None:
            return RuleVerdict("deny", reason)
        return RuleVerdict(default, "no rule flags this command")
    key = FILE_WRITE_TOOLS.get(tool_name)
    if key is not None:
        path = raw.get(key) if isinstance(raw, dict) else None
        if not isinstance(path, str) or not path:
            return RuleVerdict("deny", f"malformed {tool_name} input: no {key} string")
        if workspace is None:
            return RuleVerdict("abstain", f"no workspace is known to judge {tool_name} {path}")
        if path_escapes(path, workspace) and not _in_scratch(path, workspace):
            return RuleVerdict("deny", f"{tool_name} outside the workspace: {path}")
        return RuleVerdict(default, f"{tool_name} stays inside the workspace")
    return RuleVerdict(default, f"no rule covers {tool_name}")


def path_escapes(path: str, workspace: str) -> bool:
    """Whether ``path`` (absolute, or relative to ``workspace``) lands outside ``workspace``.

    Judged purely, like :func:`posixpath.normpath` on the joined path: ``..`` is folded,
    ``~`` and ``~user`` count as outside, symlinks are not (cannot be) resolved. The
    workspace itself does not escape. A non-absolute workspace is taken from ``/``.
    """
    ws = _components(workspace, ())
    return _components(path, ws)[: len(ws)] != ws


def destructive_reason(command: str, workspace: str | None) -> str | None:
    """Why the Bash ``command`` is destructive, or ``None`` if no rule flags it.

    The reason names the matched rule and the offending part, e.g.
    ``"rm -rf outside the workspace: /etc"``. See the module docstring for how the command
    is read and for the known limits (symlinks, eval/variable obfuscation, other
    interpreters).
    """
    ws = _components(workspace, ()) if workspace and workspace.startswith("/") else None
    ctx = _Ctx(workspace=ws, cwd=ws if ws is not None else (_CWD,), env={})
    try:
        return _analyse_text(command, ctx)
    except RecursionError:  # quotes and substitutions nested thousands deep: fail closed
        return _TOO_DEEP


# --------------------------------------------------------------------------------------------
# Paths

# Virtual anchors for places whose real path is unknown. They contain NUL, which no real path
# component can, so they never collide with one.
_HOME = "\x00home"  # the home directory (~, $HOME)
_CWD = "\x00cwd"  # an unknown current directory (no workspace, or after `cd "$X"`)
_ABOVE = "\x00above"  # somewhere above an unknown directory (`..` out of an anchor)
_ANCHOR_SHOWN = {_HOME: "~", _CWD: ".", _ABOVE: ".."}

_SCRATCH_ROOTS: tuple[tuple[str, ...], ...] = (("tmp",), ("var", "tmp"), ("dev", "shm"))
# Devices that are fine to write to (pseudo-devices; /dev/fd/N and /dev/pts/N too).
_SAFE_DEVICES = frozenset(
    {"null", "stdout", "stderr", "stdin", "tty", "zero", "full", "random", "urandom"}
)

Comps: TypeAlias = tuple[str, ...]
Kind: TypeAlias = Literal[
    "root",  # / itself (or all of it: /*)
    "workspace",  # the workspace itself (or all of it)
    "inside",  # strictly inside the workspace
    "scratch",  # strictly inside /tmp, /var/tmp, /dev/shm
    "outside",  # any other real absolute path
    "home",  # ~ or below
    "cwd",  # an unknown current directory itself (or all of it)
    "below_cwd",  # strictly below an unknown current directory
    "escaped",  # above an unknown directory (climbed out with ..)
    "device",  # /dev/… other than the pseudo-devices
    "safe_device",  # /dev/null and friends
]
_FLAGGED_OUTSIDE: frozenset[Kind] = frozenset(
    {"root", "outside", "home", "escaped", "device", "safe_device"}
)


def _components(path: str, cwd: Comps) -> Comps:
    """Normalised path components of ``path`` taken from ``cwd`` (``()`` is ``/``).

    ``~``/``~user`` start at the home anchor; ``..`` out of an anchor lands above it.
    """
    if path.startswith("~"):
        _, _, path = path.partition("/")
        stack = [_HOME]
    elif path.startswith("/"):
        stack = []
    else:
        stack = list(cwd)
    for comp in path.split("/"):
        if comp in ("", "."):
            continue
        if comp != "..":
            stack.append(comp)
        elif not stack or stack == [_ABOVE]:
            continue  # /.. is /; above an unknown directory stays unknown
        elif len(stack) == 1 and stack[0] in (_HOME, _CWD):
            stack = [_ABOVE]
        else:
            stack.pop()
    return tuple(stack)


def _all_wildcard(comp: str) -> bool:
    """``*``, ``.*``, ``*.*``, ``.??*``…: a glob matching (nearly) everything in a directory."""
    return "*" in comp and not comp.strip("*?.")


def _classify(comps: Comps, ws: Comps | None) -> tuple[Kind, Comps]:
    """What ``comps`` is, relative to the workspace; a trailing all-wildcard counts as its
    directory (``/*`` is the root). Returns the kind and the components judged."""
    while comps and _all_wildcard(comps[-1]):
        comps = comps[:-1]
    if not comps:
        return "root", comps
    head = comps[0]
    if head == _HOME:
        return "home", comps
    if head == _ABOVE:
        return "escaped", comps
    if head == _CWD:
        return ("cwd" if len(comps) == 1 else "below_cwd"), comps
    if ws is not None and comps[: len(ws)] == ws:
        return ("workspace" if comps == ws else "inside"), comps
    for root in _SCRATCH_ROOTS:
        if comps[: len(root)] == root:
            deeper = len(comps) > len(root) and not _all_wildcard(comps[len(root)])
            return ("scratch" if deeper else "outside"), comps
    if head == "dev":
        safe = (len(comps) == 2 and comps[1] in _SAFE_DEVICES) or (
            len(comps) > 2 and comps[1] in ("fd", "pts")
        )
        return ("safe_device" if safe else "device"), comps
    return "outside", comps


def _show(comps: Comps) -> str:
    """A path for humans; anchors shown as ``~``, ``.`` and ``..``."""
    if comps and comps[0] in _ANCHOR_SHOWN:
        return "/".join((_ANCHOR_SHOWN[comps[0]], *comps[1:]))
    return "/" + "/".join(comps)


def _in_scratch(path: str, workspace: str) -> bool:
    """Whether a file tool's path lands strictly inside a scratch directory."""
    kind, _ = _classify(_components(path, _components(workspace, ())), None)
    return kind == "scratch"


# --------------------------------------------------------------------------------------------
# Lexer: text -> words, operators and redirections

Part: TypeAlias = tuple[str, str]
"""A piece of a word: ``("lit", text)`` unquoted, ``("q", text)`` quoted, ``("var", name)``,
``("sub", command text)`` for ``$( )``/backticks/``<( )``, ``("arith", text)``."""


@attrs.frozen
class _Word:
    parts: tuple[Part, ...]

    @property
    def bare(self) -> str | None:
        """The text if the word is one unquoted literal (reserved words, ``{``, ``}``)."""
        if len(self.parts) == 1 and self.parts[0][0] == "lit":
            return self.parts[0][1]
        return None

    def subs(self) -> list[str]:
        """The command texts substituted into this word (they run)."""
        return [text for kind, text in self.parts if kind == "sub"]


@attrs.frozen
class _Op:
    op: str


@attrs.define
class _Redir:
    op: str
    target: _Word | None
    body: str | None = None
    """A heredoc's body (``<<``), once read."""
    body_expands: bool = False
    """Whether the heredoc body undergoes expansions (unquoted delimiter)."""


_Token: TypeAlias = "_Word | _Op | _Redir"

_META = frozenset(" \t\r\n;&|()<>")
_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ASSIGN_RE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\+?=")
_REDIR_RE = re.compile(r"(\d*)(&>>|&>|<<<|<<-|<<|<>|<&|>>|>&|>\||<|>)")
_OPS = ("&&", "||", ";;&", ";;", ";&", "|&", "|", "&", ";", "(", ")")
_ANSI_ESCAPES = {
    "n": "\n",
    "t": "\t",
    "r": "\r",
    "a": "\a",
    "b": "\b",
    "e": "\x1b",
    "E": "\x1b",
    "f": "\f",
    "v": "\v",
    "\\": "\\",
    "'": "'",
    '"': '"',
}


def _skip_dq(s: str, i: int) -> int:
    """Index just past the double-quoted string starting at ``s[i] == '"'``."""
    n = len(s)
    i += 1
    while i < n:
        c = s[i]
        if c == "\\":
            i += 2
        elif c == '"':
            return i + 1
        elif c == "$" and s.startswith("$(", i):
            i = _match_paren(s, i + 1) + 1
        elif c == "`":
            i = _match_backtick(s, i) + 1
        else:
            i += 1
    return n


def _match_backtick(s: str, i: int) -> int:
    """Index of the backtick closing the one at ``s[i]`` (``len(s)`` if unterminated)."""
    n = len(s)
    j = i + 1
    while j < n and s[j] != "`":
        j += 2 if s[j] == "\\" else 1
    return min(j, n)


def _match_paren(s: str, i: int) -> int:
    """Index of the ``)`` closing ``s[i] == '('`` (``len(s)`` if unbalanced); quotes,
    escapes and backticks are skipped."""
    return _match_closer(s, i, "(", ")", skip_backticks=True)


def _match_brace(s: str, i: int) -> int:
    """Index of the ``}`` closing ``s[i] == '{'`` of a ``${…}`` (``len(s)`` if unbalanced)."""
    return _match_closer(s, i, "{", "}", skip_backticks=False)


def _match_closer(s: str, i: int, opener: str, closer: str, *, skip_backticks: bool) -> int:
    n = len(s)
    depth = 0
    while i < n:
        c = s[i]
        if c == "\\":
            i += 2
            continue
        if c == "'":
            j = s.find("'", i + 1)
            i = n if j < 0 else j + 1
            continue
        if c == '"':
            i = _skip_dq(s, i)
            continue
        if c == "`" and skip_backticks:
            i = _match_backtick(s, i) + 1
            continue
        if c == opener:
            depth += 1
        elif c == closer:
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return n


def _expansion(s: str, i: int) -> tuple[Part, int]:
    """The expansion starting at ``s[i] == '$'`` and the index past it."""
    n = len(s)
    if s.startswith("$((", i):
        j = _match_paren(s, i + 1)
        return ("arith", s[i + 3 : max(i + 3, j - 1)]), j + 1
    if s.startswith("$(", i):
        j = _match_paren(s, i + 1)
        return ("sub", s[i + 2 : j]), j + 1
    if s.startswith("${", i):
        j = _match_brace(s, i + 1)
        return ("var", s[i + 2 : j]), j + 1
    m = _NAME_RE.match(s, i + 1)
    if m:
        return ("var", m.group()), m.end()
    if i + 1 < n and s[i + 1] in "0123456789@*#?$!-":
        return ("var", s[i + 1]), i + 2
    return ("lit", "$"), i + 1


def _backtick(s: str, i: int) -> tuple[Part, int]:
    """The backtick substitution starting at ``s[i]`` and the index past it."""
    j = _match_backtick(s, i)
    inner = re.sub(r"\\([`$\\])", r"\1", s[i + 1 : j])
    return ("sub", inner), j + 1


def _dq_parts(s: str, i: int, *, closing: bool) -> tuple[list[Part], int]:
    """Parts of double-quoted text from ``s[i]``, up to the closing ``"`` when ``closing``
    (else to the end: a heredoc body). Returns the parts and the index past the text."""
    n = len(s)
    parts: list[Part] = []
    buf: list[str] = []

    def flush() -> None:
        if buf:
            parts.append(("q", "".join(buf)))
            buf.clear()

    while i < n:
        c = s[i]
        if c == '"' and closing:
            i += 1
            break
        if c == "\\" and i + 1 < n and s[i + 1] in '$`"\\\n':
            if s[i + 1] != "\n":
                buf.append(s[i + 1])
            i += 2
        elif c in "$`":
            flush()
            part, i = _expansion(s, i) if c == "$" else _backtick(s, i)
            parts.append(part if part[0] != "lit" else ("q", part[1]))
        else:
            buf.append(c)
            i += 1
    flush()
    return parts, i


def _ansi_c(s: str, i: int) -> tuple[Part, int]:
    """The ``$'…'`` string starting at ``s[i] == '$'`` (escapes decoded)."""
    n = len(s)
    out: list[str] = []
    i += 2
    while i < n and s[i] != "'":
        c = s[i]
        if c == "\\" and i + 1 < n:
            e = s[i + 1]
            hexm = re.match(r"x([0-9a-fA-F]{1,2})", s[i + 1 : i + 4])
            octm = re.match(r"[0-7]{1,3}", s[i + 1 : i + 4])
            if hexm:
                out.append(chr(int(hexm.group(1), 16)))
                i += 1 + len(hexm.group())
            elif octm:
                out.append(chr(int(octm.group(), 8)))
                i += 1 + len(octm.group())
            else:
                out.append(_ANSI_ESCAPES.get(e, "\\" + e))
                i += 2
        else:
            out.append(c)
            i += 1
    return ("q", "".join(out)), i + 1


class _Lexer:
    """Splits shell text into :class:`_Word`, :class:`_Op` and :class:`_Redir` tokens.

    Total: any text lexes (unterminated quotes and substitutions run to the end).
    """

    def __init__(self, text: str) -> None:
        self.s = text
        self.i = 0
        self.tokens: list[_Token] = []
        self.pending: list[tuple[_Redir, str, bool]] = []  # heredocs waiting for a newline

    def run(self) -> list[_Token]:
        s, n = self.s, len(self.s)
        while self.i < n:
            c = s[self.i]
            if c in " \t\r":
                self.i += 1
            elif s.startswith("\\\n", self.i):
                self.i += 2
            elif c == "\n":
                self.tokens.append(_Op(";"))
                self.i += 1
                self._heredocs()
            elif c == "#":
                j = s.find("\n", self.i)
                self.i = n if j < 0 else j
            elif c in "<>" and s.startswith("(", self.i + 1):
                self.tokens.append(self._word())  # process substitution
            elif (m := _REDIR_RE.match(s, self.i)) and (c in "<>&" or m.group(1)):
                self.i = m.end()
                self._redirection(m.group(2))
            elif c in ";&|()":
                op = next(op for op in _OPS if s.startswith(op, self.i))
                self.i += len(op)
                self.tokens.append(_Op(";;" if op in (";;&", ";&") else op))
            else:
                self.tokens.append(self._word())
        self._heredocs()
        return self.tokens

    def _redirection(self, op: str) -> None:
        while self.i < len(self.s) and self.s[self.i] in " \t":
            self.i += 1
        target = None
        if self.i < len(self.s) and self.s[self.i] not in _META:
            target = self._word()
        redir = _Redir(op, target)
        self.tokens.append(redir)
        if op in ("<<", "<<-") and target is not None:
            quoted = any(kind != "lit" for kind, _ in target.parts)
            delim = "".join(text for _, text in target.parts)
            redir.body_expands = not quoted
            self.pending.append((redir, delim, op == "<<-"))

    def _heredocs(self) -> None:
        """Read the bodies of the heredocs opened on the line just ended."""
        s = self.s
        for redir, delim, strip_tabs in self.pending:
            lines: list[str] = []
            while self.i < len(s):
                j = s.find("\n", self.i)
                end = len(s) if j < 0 else j
                line = s[self.i : end]
                self.i = end + 1
                if (line.lstrip("\t") if strip_tabs else line) == delim:
                    break
                lines.append(line)
            redir.body = "\n".join(lines)
        self.pending.clear()

    def _word(self) -> _Word:
        s, n = self.s, len(self.s)
        parts: list[Part] = []
        buf: list[str] = []

        def flush() -> None:
            if buf:
                parts.append(("lit", "".join(buf)))
                buf.clear()

        i = self.i
        while i < n:
            c = s[i]
            if c in "<>" and s.startswith("(", i + 1) and not parts and not buf:
                j = _match_paren(s, i + 1)
                parts.append(("sub", s[i + 2 : j]))
                i = j + 1
            elif c == "(" and not parts and _ASSIGN_RE.fullmatch("".join(buf)):
                j = _match_paren(s, i)  # an array assignment: a=(1 2 3)
                buf.append(s[i : j + 1])
                i = j + 1
            elif c in _META:
                break
            elif c == "\\":
                if s.startswith("\n", i + 1):
                    i += 2
                elif i + 1 < n:
                    flush()
                    parts.append(("q", s[i + 1]))
                    i += 2
                else:
                    buf.append(c)
                    i += 1
            elif c == "'":
                j = s.find("'", i + 1)
                j = n if j < 0 else j
                flush()
                parts.append(("q", s[i + 1 : j]))
                i = j + 1
            elif c == '"':
                flush()
                dq, i = _dq_parts(s, i + 1, closing=True)
                parts.extend(dq or [("q", "")])
            elif c == "$" and s.startswith("$'", i):
                flush()
                part, i = _ansi_c(s, i)
                parts.append(part)
            elif c in "$`":
                part, i = _expansion(s, i) if c == "$" else _backtick(s, i)
                if part[0] == "lit":
                    buf.append(part[1])
                else:
                    flush()
                    parts.append(part)
            else:
                buf.append(c)
                i += 1
        flush()
        self.i = max(i, self.i + 1)  # always progress
        return _Word(tuple(parts))


# --------------------------------------------------------------------------------------------
# Parser: tokens -> lists of pipelines of simple commands and groups


@attrs.frozen
class _Simple:
    words: tuple[_Word, ...]
    redirs: tuple[_Redir, ...]


@attrs.frozen
class _Group:
    body: tuple[tuple[_Simple | _Group, ...], ...]
    subshell: bool
    redirs: tuple[_Redir, ...]


_Node: TypeAlias = "_Simple | _Group"
_Pipeline: TypeAlias = tuple[_Node, ...]
_EMPTY = _Simple((), ())
_MAX_NESTING = 64
# Reserved words that only introduce the command after them.
_PREFIX_WORDS = frozenset({"if", "then", "elif", "else", "while", "until", "do", "!"})
_CLOSING_WORDS = frozenset({"fi", "done", "esac", "}"})


class _TooDeep(Exception):
    """The command nests deeper than the analysis goes."""


class _Parser:
    """Recursive descent over the tokens; total (a malformed command still parses)."""

    def __init__(self, tokens: list[_Token]) -> None:
        self.t = tokens
        self.i = 0
        self.depth = 0

    def peek(self, k: int = 0) -> _Token | None:
        return self.t[self.i + k] if self.i + k < len(self.t) else None

    def is_op(self, op: str, k: int = 0) -> bool:
        tok = self.peek(k)
        return isinstance(tok, _Op) and tok.op == op

    def parse_list(
        self, stop_ops: frozenset[str] = frozenset(), stop_words: frozenset[str] = frozenset()
    ) -> list[_Pipeline]:
        self.depth += 1
        if self.depth > _MAX_NESTING:
            raise _TooDeep
        out: list[_Pipeline] = []
        while (tok := self.peek()) is not None:
            if isinstance(tok, _Op):
                if tok.op in stop_ops:
                    break
                if tok.op in (";", "&", "&&", "||", ";;"):
                    self.i += 1
                    continue
            elif isinstance(tok, _Word) and tok.bare in stop_words:
                break
            start = self.i
            out.append(self.parse_pipeline())
            if self.i == start:
                self.i += 1  # never stall on a token nothing consumes
        self.depth -= 1
        return out

    def parse_pipeline(self) -> _Pipeline:
        nodes = [self.parse_command()]
        while self.is_op("|") or self.is_op("|&"):
            self.i += 1
            nodes.append(self.parse_command())
        return tuple(nodes)

    def trailing_redirs(self) -> tuple[_Redir, ...]:
        out: list[_Redir] = []
        while isinstance(tok := self.peek(), _Redir):
            out.append(tok)
            self.i += 1
        return tuple(out)

    def parse_command(self) -> _Node:
        while True:
            tok = self.peek()
            if isinstance(tok, _Op):
                if tok.op == "(":
                    self.i += 1
                    body = self.parse_list(stop_ops=frozenset({")"}))
                    if self.is_op(")"):
                        self.i += 1
                    return _Group(tuple(body), True, self.trailing_redirs())
                if tok.op == ")":
                    self.i += 1  # stray: skip it
                return _EMPTY
            if not isinstance(tok, _Word):
                return self.parse_simple()
            word = tok.bare
            if word == "{":
                self.i += 1
                body = self.parse_list(stop_words=frozenset({"}"}))
                if isinstance(nxt := self.peek(), _Word) and nxt.bare == "}":
                    self.i += 1
                return _Group(tuple(body), False, self.trailing_redirs())
            if word in _PREFIX_WORDS:
                self.i += 1
                continue
            if word in _CLOSING_WORDS:
                self.i += 1
                return _Simple((), self.trailing_redirs())
            if word in ("for", "select"):
                # `for x in a b; do` — the words are not a command.
                self.i += 1
                while isinstance(self.peek(), _Word | _Redir):
                    self.i += 1
                return _EMPTY
            if word == "case":
                return self.parse_case()
            if word == "function":
                self.i += 1
                if isinstance(self.peek(), _Word):
                    self.i += 1
                if self.is_op("(") and self.is_op(")", 1):
                    self.i += 2
                continue  # the body is the next command
            return self.parse_simple()

    def parse_simple(self) -> _Node:
        words: list[_Word] = []
        redirs: list[_Redir] = []
        while (tok := self.peek()) is not None and not isinstance(tok, _Op):
            if isinstance(tok, _Word):
                words.append(tok)
            else:
                redirs.append(tok)
            self.i += 1
        if len(words) == 1 and not redirs and self.is_op("(") and self.is_op(")", 1):
            # A function definition `name() body`: its body is judged where it is defined
            # (conservative: a function is defined to be called).
            self.i += 2
            self.depth += 1
            if self.depth > _MAX_NESTING:
                raise _TooDeep
            body = self.parse_command()
            self.depth -= 1
            return body
        return _Simple(tuple(words), tuple(redirs))

    def parse_case(self) -> _Node:
        self.i += 1
        while (tok := self.peek()) is not None and not isinstance(tok, _Op):
            self.i += 1
            if isinstance(tok, _Word) and tok.bare == "in":
                break
        body: list[_Pipeline] = []
        while (tok := self.peek()) is not None:
            if isinstance(tok, _Op) and tok.op in (";", ";;", "&"):
                self.i += 1
                continue
            if isinstance(tok, _Word) and tok.bare == "esac":
                self.i += 1
                break
            if self.is_op("("):
                self.i += 1
            while (tok := self.peek()) is not None and not self.is_op(")"):
                self.i += 1  # the pattern
            if tok is None:
                break
            self.i += 1
            body.extend(self.parse_list(frozenset({";;"}), frozenset({"esac"})))
        return _Group(tuple(body), False, self.trailing_redirs())


def _parse(text: str) -> list[_Pipeline]:
    return _Parser(_Lexer(text).run()).parse_list()


def _simple_nodes(pipelines: Sequence[_Pipeline]) -> Iterator[_Simple]:
    for pipeline in pipelines:
        for node in pipeline:
            if isinstance(node, _Simple):
                yield node
            else:
                yield from _simple_nodes(node.body)


# --------------------------------------------------------------------------------------------
# Analysis


@attrs.define
class _Ctx:
    """What the analysis knows while walking a command: the workspace, the virtual current
    directory and the variables assigned so far (``None``: assigned, value unknown)."""

    workspace: Comps | None
    cwd: Comps
    env: dict[str, str | None]
    depth: int = 0

    def child(self) -> _Ctx:
        """A copy for a subshell: its ``cd`` and assignments do not leak out."""
        return _Ctx(self.workspace, self.cwd, dict(self.env), self.depth + 1)


@attrs.frozen
class _Arg:
    """A word as far as it resolves: ``value`` is ``None`` when it holds an expansion the
    rules cannot know; ``shown`` is how it was written (for reasons)."""

    word: _Word
    value: str | None
    shown: str


@attrs.frozen
class _Cmd:
    """A simple command after unwrapping its prefixes."""

    name: str | None  # basename of the command word; None if unresolvable
    head: _Arg
    args: tuple[_Arg, ...]
    cwd: Comps
    via_xargs: bool = False


@attrs.frozen
class _Text:
    """A command string a wrapper runs (``env -S``, ``watch``)."""

    text: str


_MAX_DEPTH = 16
_TOO_DEEP = "command nested too deeply to analyse"


def _analyse_text(text: str, ctx: _Ctx) -> str | None:
    if ctx.depth > _MAX_DEPTH:
        return _TOO_DEEP
    bomb = _fork_bomb(text)
    if bomb:
        return bomb
    try:
        return _analyse_list(_parse(text), ctx)
    except _TooDeep:
        return _TOO_DEEP


def _analyse_list(pipelines: Sequence[_Pipeline], ctx: _Ctx) -> str | None:
    for pipeline in pipelines:
        reason = _analyse_pipeline(pipeline, ctx)
        if reason:
            return reason
    return None


def _analyse_pipeline(pipeline: _Pipeline, ctx: _Ctx) -> str | None:
    # Every part of a multi-command pipeline runs in its own subshell.
    single = len(pipeline) == 1
    seen: list[tuple[_Cmd, tuple[_Redir, ...], _Ctx]] = []
    for node in pipeline:
        nctx = ctx if single else ctx.child()
        if isinstance(node, _Group):
            reason = _redirs_reason(node.redirs, nctx) or _analyse_list(
                node.body, nctx.child() if node.subshell else nctx
            )
            # A group's commands take part in the pipeline: `(curl x) | bash`, `curl x | (sh)`.
            for inner in _simple_nodes(node.body):
                cmd = _unwrap([_arg(w, nctx) for w in inner.words], nctx)
                if isinstance(cmd, _Cmd):
                    seen.append((cmd, inner.redirs + node.redirs, nctx))
        else:
            reason, found = _analyse_simple(node, nctx)
            if found is not None:
                seen.append((found, node.redirs, nctx))
        if reason:
            return reason
    return None if single else _pipeline_reason(seen)


def _resolve(word: _Word, ctx: _Ctx) -> str | None:
    out: list[str] = []
    for index, (kind, text) in enumerate(word.parts):
        if kind in ("lit", "q"):
            out.append(text)
        elif kind == "var" and text == "HOME" and index == 0:
            out.append("~")
        elif kind == "var" and text == "PWD":
            out.append(_show_pwd(ctx.cwd))
        elif kind == "var" and text != "HOME" and ctx.env.get(text) is not None:
            out.append(ctx.env[text] or "")
        else:
            return None
    return "".join(out)


def _show_pwd(cwd: Comps) -> str:
    """``$PWD`` as a path string that :func:`_components` turns back into ``cwd``."""
    return "/" + "/".join(cwd)


def _render(word: _Word, ctx: _Ctx | None) -> str:
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
                    "$" + text if _NAME_RE.fullmatch(text) or len(text) == 1 else f"${{{text}}}"
                )
        elif kind == "sub":
            out.append(f"$({text})")
        else:
            out.append(f"$(({text}))")
    return "".join(out)


def _arg(word: _Word, ctx: _Ctx) -> _Arg:
    return _Arg(word, _resolve(word, ctx), _render(word, None))


def _assignment(word: _Word) -> tuple[str, _Word] | None:
    """``NAME=value`` (unquoted name): the name and the value word."""
    if not word.parts or word.parts[0][0] != "lit":
        return None
    m = _ASSIGN_RE.match(word.parts[0][1])
    if not m:
        return None
    rest = word.parts[0][1][m.end() :]
    value_parts = ((("lit", rest),) if rest else ()) + word.parts[1:]
    return m.group(1), _Word(value_parts)


def _assign(word: _Word, ctx: _Ctx) -> None:
    found = _assignment(word)
    if found and found[0] not in ("HOME", "PWD"):
        ctx.env[found[0]] = _resolve(found[1], ctx)


def _analyse_simple(node: _Simple, ctx: _Ctx) -> tuple[str | None, _Cmd | None]:
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
    if all(_assignment(w) for w in words):
        for w in words:
            _assign(w, ctx)
        return None, None
    args = [_arg(w, ctx) for w in words]
    unwrapped = _unwrap(args, ctx)
    if isinstance(unwrapped, _Text):
        return _analyse_text(unwrapped.text, ctx.child()), None
    if unwrapped is None:
        return None, None
    return _command_reason(unwrapped, node.redirs, ctx), unwrapped


def _redirs_reason(redirs: Sequence[_Redir], ctx: _Ctx) -> str | None:
    for redir in redirs:
        if redir.target is not None:
            for inner in redir.target.subs():
                reason = _analyse_text(inner, ctx.child())
                if reason:
                    return reason
        if redir.body is not None and redir.body_expands:
            parts, _ = _dq_parts(redir.body, 0, closing=False)
            for kind, inner in parts:
                reason = _analyse_text(inner, ctx.child()) if kind == "sub" else None
                if reason:
                    return reason
        if redir.target is None:
            continue
        target = _arg(redir.target, ctx)
        writes = redir.op in (">", ">>", ">|", "&>", "&>>", "<>")
        if redir.op == ">&" and target.value is not None:
            writes = not (target.value.isdigit() or target.value == "-")  # 2>&1 is no file
        if writes:
            reason = _write_reason("redirection", target, ctx.cwd, ctx.workspace)
            if reason:
                return reason
    return None


def _hint(shown: str, comps: Comps) -> str:
    """`` (= /resolved/path)`` when the path as written differs from where it lands."""
    resolved = _show(comps)
    return "" if (shown.rstrip("/") or "/") == resolved else f" (= {resolved})"


def _write_reason(what: str, target: _Arg, cwd: Comps, ws: Comps | None) -> str | None:
    """Why writing to ``target`` is destructive: a device, or a place outside the workspace.
    An unresolvable target is not flagged (see the module's limits)."""
    if target.value is None:
        return None
    kind, comps = _classify(_components(target.value, cwd), ws)
    if kind == "device":
        return f"{what} writes to a device: {target.shown}"
    if kind in ("root", "outside", "home", "escaped"):
        return f"{what} writes outside the workspace: {target.shown}{_hint(target.shown, comps)}"
    return None


# --- unwrapping prefixes ----------------------------------------------------------------------


def _names(text: str) -> frozenset[str]:
    """A set of space-separated names."""
    return frozenset(text.split())


_SUDO_ARG = frozenset("ugChprtUDTR")
_SUDO_LONG_ARG = _names(
    "--user --group --close-from --host --prompt --role --type --other-user --chdir"
    " --command-timeout --chroot"
)
_XARGS_ARG = frozenset("adEILnPs")
_XARGS_LONG_ARG = _names(
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


def _option_width(
    args: Sequence[_Arg], i: int, with_arg: frozenset[str], long_with_arg: frozenset[str]
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
    args: Sequence[_Arg], i: int, with_arg: frozenset[str], long_with_arg: frozenset[str]
) -> int:
    """Index of the first operand at or after ``i``, skipping options (and their values)."""
    while i < len(args):
        v = args[i].value
        if v is None or v == "-" or not v.startswith("-"):
            return i
        if v == "--":
            return i + 1
        i += _option_width(args, i, with_arg, long_with_arg)
    return i


def _basename(value: str) -> str:
    return posixpath.basename(value.rstrip("/")) or value


def _unwrap(args: list[_Arg], ctx: _Ctx) -> _Cmd | _Text | None:
    """The command a simple command really runs, past its prefixes (see module docstring).
    ``None``: nothing runs (only assignments, ``command -v``...)."""
    i = 0
    cwd = ctx.cwd
    via_xargs = False
    while True:
        while i < len(args) and _assignment(args[i].word):
            i += 1
        if i >= len(args):
            return None
        head = args[i]
        if head.value is None:
            return _Cmd(None, head, tuple(args[i + 1 :]), cwd, via_xargs)
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
                i += _option_width(args, i, _SUDO_ARG, _SUDO_LONG_ARG)
            if shell and all(_assignment(a.word) for a in args[i:]):
                return _Cmd("sh", head, (), cwd, via_xargs)
        elif name == "env":
            while i < len(args) and (v := args[i].value) is not None and v.startswith("-"):
                if v == "--":
                    i += 1
                    break
                if v in ("-C", "--chdir") and i + 1 < len(args):
                    target = args[i + 1].value
                    cwd = _components(target, cwd) if target is not None else (_CWD,)
                    i += 2
                elif v.startswith("--chdir="):
                    cwd = _components(v.partition("=")[2], cwd)
                    i += 1
                elif v in ("-S", "--split-string") or v.startswith(("-S", "--split-string=")):
                    text = v[2:] if v.startswith("-S") else v.partition("=")[2]
                    j = i + 1
                    if not text and j < len(args):
                        text = _render(args[j].word, ctx)
                        j += 1
                    rest = " ".join(_render(a.word, ctx) for a in args[j:])
                    return _Text(f"{text} {rest}")
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
                return _Text(" ".join(_render(a.word, ctx) for a in args[i:]))
        elif name in _SIMPLE_WRAPPERS:
            with_arg, long_with_arg = _SIMPLE_WRAPPERS[name]
            i = _skip_options(args, i, with_arg, long_with_arg)
        elif name in _PREFIX_WORDS:
            continue  # `then rm …` when a keyword ended up mid-command
        else:
            return _Cmd(name, head, tuple(args[i:]), cwd, via_xargs)


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
_SYSTEMCTL_POWER = _names(
    "poweroff reboot halt kexec emergency rescue suspend hibernate hybrid-sleep soft-reboot"
)
# Kill by name can hit processes far outside the goal: the orchestrator, other goals' agents,
# the user's own programs. `kill <pid>` of a known process stays allowed.
_KILL_BY_NAME = frozenset({"killall", "killall5", "pkill"})
_DELETERS = frozenset({"rm", "unlink", "shred", "truncate"})
_PERMS = frozenset({"chmod", "chown", "chgrp"})


def _is_interpreter(name: str) -> bool:
    return name in _SHELLS or bool(_INTERPRETER_RE.fullmatch(name))


def _command_reason(cmd: _Cmd, redirs: Sequence[_Redir], ctx: _Ctx) -> str | None:
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
        return _analyse_text(" ".join(_render(a.word, ctx) for a in cmd.args), ctx.child())
    if name == "su":
        return _su_reason(cmd, ctx)
    if name in ("cd", "pushd", "popd"):
        if not cmd.via_xargs:
            ctx.cwd = _cd_target(cmd, ctx)
        return None
    if name in ("export", "declare", "typeset", "local", "readonly"):
        for a in cmd.args:
            _assign(a.word, ctx)
        return None
    if name in ("unset", "read"):
        for a in cmd.args:
            if a.value and _NAME_RE.fullmatch(a.value):
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
                target = _Arg(a.word, a.value[3:], a.shown.removeprefix("of="))
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


def _cmdline(cmd: _Cmd, limit: int = 120) -> str:
    text = " ".join([cmd.head.shown, *(a.shown for a in cmd.args)])
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _operands(
    args: Sequence[_Arg], with_arg: frozenset[str], long_with_arg: frozenset[str]
) -> list[_Arg]:
    """The non-option arguments (options may come anywhere before ``--``, GNU style)."""
    out: list[_Arg] = []
    i = 0
    end = False
    while i < len(args):
        v = args[i].value
        if end or v is None or v == "-" or not v.startswith("-"):
            out.append(args[i])
        elif v == "--":
            end = True
        else:
            i += _option_width(args, i, with_arg, long_with_arg) - 1
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


def _rm_reason(cmd: _Cmd, ws: Comps | None) -> str | None:
    recursive = False
    operands: list[_Arg] = []
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
        kind, comps = _classify(_components(a.value, cmd.cwd), ws)
        if recursive:
            what = _RM_RECURSIVE.get(kind)
            if kind == "home":
                what = "of the home directory" if comps == (_HOME,) else "outside the workspace"
            elif what is None and comps and comps[-1] == ".git":
                what = "of a git repository's history"
        else:
            what = _RM_SINGLE.get(kind)
        if what:
            return f"{label} {what}: {a.shown}{_hint(a.shown, comps)}"
    return None


def _cd_target(cmd: _Cmd, ctx: _Ctx) -> Comps:
    if cmd.name == "popd":
        return (_CWD,)
    operands = [a for a in cmd.args if not (a.value and a.value.startswith("-") and a.value != "-")]
    if not operands:
        return (_HOME,) if cmd.name == "cd" else (_CWD,)
    target = operands[0].value
    if target is None or target == "-":
        return (_CWD,)
    return _components(target, ctx.cwd)


def _shell_reason(cmd: _Cmd, redirs: Sequence[_Redir], ctx: _Ctx) -> str | None:
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
            return _analyse_text(_render(args[i].word, ctx), ctx.child())
        return None
    for redir in redirs:
        if redir.op in ("<<", "<<-") and redir.body is not None:
            reason = _analyse_text(redir.body, ctx.child())
        elif redir.op == "<<<" and redir.target is not None:
            reason = _analyse_text(_render(redir.target, ctx), ctx.child())
        else:
            reason = None
        if reason:
            return reason
    return None


def _su_reason(cmd: _Cmd, ctx: _Ctx) -> str | None:
    for k, a in enumerate(cmd.args):
        if a.value in ("-c", "--command") and k + 1 < len(cmd.args):
            return _analyse_text(_render(cmd.args[k + 1].word, ctx), ctx.child())
        if a.value is not None and a.value.startswith("--command="):
            return _analyse_text(a.value.partition("=")[2], ctx.child())
    return None


def _downloads(text: str) -> bool:
    """Whether the command text runs a downloader (curl, wget...)."""
    try:
        pipelines = _parse(text)
    except _TooDeep:
        return True
    probe = _Ctx(None, (_CWD,), {})
    for node in _simple_nodes(pipelines):
        cmd = _unwrap([_arg(w, probe) for w in node.words], probe)
        if isinstance(cmd, _Cmd) and cmd.name in _DOWNLOADERS:
            return True
    return False


def _remote_code_reason(cmd: _Cmd, ctx: _Ctx) -> str | None:
    """``bash <(curl …)``, ``sh -c "$(curl …)"``, ``eval "$(wget -O- …)"``."""
    for a in cmd.args:
        if any(_downloads(inner) for inner in a.word.subs()):
            return f"downloaded code is run by {cmd.name}: {a.shown}"
    return None


def _runs_stdin(cmd: _Cmd, redirs: Sequence[_Redir]) -> bool:
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


def _pipeline_reason(seen: Sequence[tuple[_Cmd, tuple[_Redir, ...], _Ctx]]) -> str | None:
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


def _xargs_upstream_reason(up: _Cmd, cmd: _Cmd, ctx: _Ctx) -> str | None:
    if up.name == "find":
        starts, _ = _find_parts(up)
        reason = _find_starts_reason(starts, up.cwd, ctx.workspace, f"| xargs {cmd.name}")
        if reason:
            return reason
    if up.name in ("echo", "printf", "ls"):
        fake = _Cmd(cmd.name, cmd.head, cmd.args + tuple(up.args), ctx.cwd)
        reason = _rm_reason(fake, ctx.workspace) if cmd.name in ("rm", "unlink") else None
        if reason:
            return f"{up.name} piped into xargs: {reason}"
    return None


def _find_parts(cmd: _Cmd) -> tuple[list[_Arg], list[_Arg]]:
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
    starts: list[_Arg] = []
    while i < len(args):
        v = args[i].value
        if v is not None and (v.startswith("-") or v in ("(", "!", ")", ",")):
            break
        starts.append(args[i])
        i += 1
    if not starts:
        starts = [_Arg(_Word((("lit", "."),)), ".", ".")]
    return starts, args[i:]


def _find_starts_reason(
    starts: Sequence[_Arg], cwd: Comps, ws: Comps | None, action: str
) -> str | None:
    for start in starts:
        if start.value is None:
            return f"find {action} from a path the rules cannot resolve statically: {start.shown}"
        kind, comps = _classify(_components(start.value, cwd), ws)
        if kind == "root":
            return f"find {action} from the root directory: {start.shown}"
        if kind in _FLAGGED_OUTSIDE:
            return f"find {action} outside the workspace: {start.shown}{_hint(start.shown, comps)}"
    return None


# find primaries that select nothing: with only these, -delete takes everything under START.
_FIND_NON_TESTS = _names(
    "-delete -depth -d -maxdepth -mindepth -xdev -mount -print -print0 -ls -noleaf -follow"
    " -ignore_readdir_race -daystart -prune"
)


def _find_reason(cmd: _Cmd, ctx: _Ctx) -> str | None:
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
            inner = _unwrap(sub, ctx)
            if isinstance(inner, _Text):
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
        kind, comps = _classify(_components(start.value or ".", cmd.cwd), ctx.workspace)
        if kind in ("workspace", "cwd"):
            where = "the whole workspace" if kind == "workspace" else "the whole current directory"
            return f"find {action} of {where}: {start.shown}{_hint(start.shown, comps)}"
    return None


def _perm_reason(cmd: _Cmd, ws: Comps | None) -> str | None:
    """Recursive chmod/chown/chgrp outside the workspace, or any of them on ``/``."""
    name = cmd.name or "chmod"
    # chmod's own letters; anything else after a dash is a mode (-w, -x, -r…).
    letters = set("Rcfv") if name == "chmod" else set("RcfvhHLP")
    recursive = False
    reference = False
    operands: list[_Arg] = []
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
        kind, comps = _classify(_components(t.value, cmd.cwd), ws)
        if kind == "root":
            return f"{label} of the root directory: {t.shown}{_hint(t.shown, comps)}"
        if recursive and kind in _FLAGGED_OUTSIDE:
            return f"{label} outside the workspace: {t.shown}{_hint(t.shown, comps)}"
    return None


def _copy_reason(cmd: _Cmd, ws: Comps | None) -> str | None:
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
    ops = _operands(cmd.args, with_arg, _names("--target-directory --suffix --rsh --filter"))
    sources = ops if target is not None else ops[:-1]
    if target is None and len(ops) > 1:
        target = ops[-1].value
    # rsync and scp-style remote destinations (host:path) are not local writes.
    if target is not None and not (name == "rsync" and ":" in target.partition("/")[0]):
        dest = _Arg(_Word((("q", target),)), target, target)
        reason = _write_reason(name, dest, cmd.cwd, ws)
        if reason:
            return reason
    if name != "mv":
        return None
    for src in sources:
        if src.value is None:
            continue
        kind, comps = _classify(_components(src.value, cmd.cwd), ws)
        if kind in _FLAGGED_OUTSIDE:
            return (
                f"mv takes away a path outside the workspace: {src.shown}{_hint(src.shown, comps)}"
            )
    return None


def _sed_reason(cmd: _Cmd, ws: Comps | None) -> str | None:
    """``sed -i`` edits its files in place: judged like writes."""
    in_place = False
    script_given = False
    operands: list[_Arg] = []
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


def _kill_reason(cmd: _Cmd) -> str | None:
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


def _git_reason(cmd: _Cmd, ws: Comps | None) -> str | None:
    args = cmd.args
    cwd = cmd.cwd
    i = 0
    while i < len(args):
        v = args[i].value
        if v is None:
            return None
        if v == "-C" and i + 1 < len(args):
            target = args[i + 1].value
            cwd = _components(target, cwd) if target is not None else (_CWD,)
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
        kind, _ = _classify(_components(spec, cwd), ws)
        if kind in ("root", "workspace", "cwd", "outside", "home", "escaped"):
            return f"git {sub} discards every uncommitted change: {spec}"
    return None


# --- fork bombs -------------------------------------------------------------------------------

# The name must start at a token boundary: without the lookbehind the engine would retry
# `[^…]+` from every position of a long token (quadratic on a 100 kB base64 blob).
_FN_NAME = r"(?<![^\s;&|(){}])[^\s(){}|&;<>'\"`$]+"
_FUNC_DEFS = (
    re.compile(rf"(?P<name>{_FN_NAME})\s*\(\s*\)\s*(?:\{{(?P<b1>[^{{}}]*)\}}|\((?P<b2>[^()]*)\))"),
    re.compile(
        rf"\bfunction\s+(?P<name>{_FN_NAME})\s*(?:\(\s*\)\s*)?"
        r"(?:\{(?P<b1>[^{}]*)\}|\((?P<b2>[^()]*)\))"
    ),
)
_PERL_BOMB = re.compile(r"\bfork\s+while\s+fork\b")


def _blank_quoted(text: str) -> str:
    """``text`` with quoted and escaped characters blanked out (they are data)."""
    out = list(text)
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "\\":
            out[i : i + 2] = " " * len(out[i : i + 2])
            i += 2
        elif c in "'\"":
            j = text.find(c, i + 1)
            j = n - 1 if j < 0 else j
            out[i : j + 1] = " " * (j + 1 - i)
            i = j + 1
        else:
            i += 1
    return "".join(out)


def _fork_bomb(text: str) -> str | None:
    """A function that calls itself twice through a pipe or in the background
    (``:(){ :|:& };:`` and renamed variants), or perl's ``fork while fork``."""
    if _PERL_BOMB.search(text):
        return "fork bomb: fork while fork"
    blanked = _blank_quoted(text)
    for pattern in _FUNC_DEFS:
        for m in pattern.finditer(blanked):
            name = m.group("name")
            body = m.group("b1") or m.group("b2") or ""
            calls = re.findall(rf"(?<![^\s|&;(){{}}]){re.escape(name)}(?![^\s|&;(){{}}])", body)
            if len(calls) >= 2 and ("|" in body or "&" in body):
                return f"fork bomb: {m.group().strip()}"
    return None
