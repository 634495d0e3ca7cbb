"""Claude Code's permission-rule syntax, parsed and matched purely.

Users already write rules in Claude Code's ``settings.json``
(``"permissions": {"allow": ["Bash(npm test:*)", "Edit(src/**)", "Read"], "deny": [...]}``);
our config takes the same strings as ``permission.allow`` / ``permission.deny``.
:func:`parse_rule` reads one rule (a :class:`RuleSyntaxError`, a ``ValueError``, says what is
wrong with a bad one) and :func:`match_rules` says which rule decides a tool call, if any.
Stdlib and attrs only; Bash commands are read with :mod:`nexo_trio.core.shell_syntax`.

The subset we implement
-----------------------
Sources: Claude Code's permissions page (code.claude.com/docs/en/permissions: "Permission rule
syntax", "Wildcard patterns", "Read & Edit"; the same text in the older
docs.anthropic.com/…/claude-code/iam page), and anthropics/claude-code issues #15260 (a
``domain:`` rule names one host exactly) and #67244 (the ``domain:*.example.com`` form).

* **Order**: deny rules first, then allow; the first match decides; a deny always wins over
  an allow, whatever their specificity. (Claude Code's ``ask`` list has no counterpart here:
  a call no rule decides goes to the configured deciders.)
* ``Tool`` alone matches every use of the tool: ``Bash``, ``Read``, ``WebFetch``,
  ``mcp__server`` (every tool of that MCP server; ``mcp__server__*`` is the same rule),
  ``mcp__server__tool``. ``Tool(*)`` is the same as ``Tool``.
* ``Bash(cmd)`` matches that exact command. ``Bash(prefix:*)`` matches commands that start
  with ``prefix`` as whole words: ``Bash(npm test:*)`` matches ``npm test`` and
  ``npm test -- -x``, not ``npm testing``. ``:*`` may only end a rule. ``*`` elsewhere is a
  wildcard for any text, spaces included (``Bash(git * main)``); a rule ending in `` *``
  with no other wildcard also matches the bare command and keeps a word boundary
  (``Bash(ls *)`` matches ``ls`` and ``ls -la``, not ``lsof``; ``Bash(ls*)`` matches all
  three). Words are compared after the shell has read them, so quoting that does not change
  a word does not matter (``npm "test"`` is ``npm test``) but quoting that does, does
  (``rm '[ab]'`` is not ``rm [ab]``); a ``*`` is a wildcard quoted or not, as in Claude
  Code. The wrappers ``timeout``, ``time``, ``nice``, ``nohup`` and
  ``stdbuf`` are looked past (``timeout 60 npm test`` is matched by ``Bash(npm test:*)``).
* **Compound commands** (``a && b``, ``a; b``, ``a | b``, ``a &``, newlines, subshells,
  ``if``/``while`` bodies) are split into their simple commands, and so are the commands run
  by ``$( )``, backticks and ``<( )``. An allow rule set allows the command only if EVERY part
  is matched by some allow rule (so ``Bash(npm test:*)`` does not allow
  ``npm test && rm -rf /``); a deny rule that matches ANY part denies the whole command.
  Deny rules also look past leading ``NAME=value`` assignments, ``env``, ``sudo``, ``doas``,
  ``command``, ``exec``, ``builtin`` and ``xargs``, compare the command's basename
  (``/bin/rm``), read the scripts of ``sh -c``/``bash -c``/``eval`` given as plain text, and
  are matched against the whole command text as well (so ``Bash(curl * | bash)`` can deny a
  pipeline). Allow rules are stricter than Claude Code's in three ways, so that they never
  allow more than they say: a part that redirects output to a file (``>``, ``>>``, ``&>``…)
  is allowed only when every such file is ``/dev/null`` or inside the workspace (a relative
  target only when the command has no ``cd``); a part that cannot be read (a substitution
  nested too deep, an arithmetic expansion or ``${…}`` that runs a command) is allowed only by
  ``Bash``; leading ``NAME=value`` assignments are not looked past (``LD_PRELOAD=x npm test``
  is not ``npm test``). An allow rule that itself spells a compound command or a redirection
  (``Bash(npm test 2>&1)``) allows exactly that text and nothing else; with a wildcard it
  never allows anything (allow each part instead).
* ``Read(pattern)``, ``Edit(pattern)``, ``Write(pattern)``: gitignore-style globs on the
  path the tool touches. ``//abs/path`` is absolute from the file system root, ``~/path``
  from the home directory (``home=``; no match when it is unknown), ``/path`` from the
  workspace (Claude Code's "project root", the directory of the settings file), ``path`` or
  ``./path`` relative to the workspace. As in gitignore, a pattern with no ``/`` but a
  trailing one matches at any depth (``Read(*.env)`` is every ``.env`` file of the
  workspace), ``*`` and ``?`` do not cross ``/``, ``**`` does (``**/x``, ``x/**``,
  ``x/**/y``), ``[abc]`` is a class, a pattern that names a directory covers everything
  in it (``Edit(build)`` covers ``build/a/b``), and a trailing ``/`` is accepted (we
  cannot tell a file from a directory). Not supported (a parse error): ``!`` negation,
  ``..``, ``~user``. ``Edit`` rules cover every tool that edits files (``Edit``,
  ``Write``, ``MultiEdit``, ``NotebookEdit``), as in Claude Code; ``Read`` rules cover the
  tools that read them (``Read``, ``NotebookRead``, ``Grep``, ``Glob``, ``LS``), Claude
  Code's "best effort"; ``Write`` rules cover ``Write`` only (Claude Code accepts this form
  but reportedly consults path rules only for Read and Edit; we honour it). Paths are
  normalised (``a/../b``), not resolved: symlinks are for the sandbox to contain. Like
  Claude Code's, these rules bind the file tools, not what a Bash command opens.
* ``WebFetch(domain:example.com)`` matches fetches of exactly that host (not
  ``www.example.com``: issue #15260); ``WebFetch(domain:*.example.com)`` matches its
  subdomains (``a.example.com``, ``a.b.example.com``), not ``example.com`` itself.
* Anything else is a parse error: an unbalanced ``(``, an empty ``()``, a bad tool name, a
  specifier on a tool that takes none (``Grep(x)``), a ``WebFetch`` specifier that is not
  ``domain:HOST``.
"""

from __future__ import annotations

import functools
import posixpath
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Final, Literal, TypeAlias
from urllib.parse import urlsplit

import attrs

from nexo_trio.core.shell_syntax import (
    Group,
    Pipeline,
    Redir,
    Simple,
    TooDeep,
    Word,
    assignment,
    dq_parts,
    parse,
)
from nexo_trio.core.validation import FieldError, shown

__all__ = [
    "EDIT_TOOLS",
    "READ_TOOLS",
    "Effect",
    "PermissionRule",
    "RuleKind",
    "RuleMatch",
    "RuleSyntaxError",
    "format_rule",
    "match_rules",
    "parse_rule",
    "rules_validator",
]

RuleKind: TypeAlias = Literal["tool", "bash", "path", "domain"]
Effect: TypeAlias = Literal["allow", "deny"]

READ_TOOLS: Final = frozenset({"Read", "NotebookRead", "Grep", "Glob", "LS"})
"""The tools a ``Read`` rule covers."""
EDIT_TOOLS: Final = frozenset({"Edit", "Write", "MultiEdit", "NotebookEdit"})
"""The tools an ``Edit`` rule covers."""
_PATH_RULE_TOOLS: Final = {"Read": READ_TOOLS, "Edit": EDIT_TOOLS, "Write": frozenset({"Write"})}
_SPECIFIER_TOOLS: Final = ("Bash", *_PATH_RULE_TOOLS, "WebFetch")
_SEARCH_TOOLS: Final = frozenset({"Grep", "Glob", "LS"})  # no path: the workspace
_TOOL_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
_LABEL: Final = r"[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?"
_HOST: Final = re.compile(rf"(?:\*\.)?{_LABEL}(?:\.{_LABEL})*")
_DOMAIN_HELP: Final = (
    "WebFetch rules take 'domain:HOST' (like domain:example.com or domain:*.example.com)"
)


class RuleSyntaxError(ValueError):
    """A permission rule that cannot be read: ``rule`` as written, ``problem`` what is wrong."""

    def __init__(self, rule: str, problem: str) -> None:
        self.rule = rule
        self.problem = problem
        super().__init__(f"{rule}: {problem}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.rule, self.problem))


def _check_rule(instance: PermissionRule, attribute: object, value: str | None) -> None:
    problem = _rule_problem(instance.tool, instance.specifier)
    if problem is not None:
        raise RuleSyntaxError(format_rule(instance), problem)


@attrs.frozen
class PermissionRule:
    """One rule, normalised: ``Bash(*)`` is ``Bash``, ``mcp__s__*`` is ``mcp__s``, hosts are
    lower case, the specifier has no surrounding blanks. :func:`format_rule` writes it back."""

    tool: str
    specifier: str | None = attrs.field(default=None, validator=_check_rule)

    @property
    def kind(self) -> RuleKind:
        """``tool`` (every use of the tool), ``bash``, ``path`` or ``domain``."""
        if self.specifier is None:
            return "tool"
        if self.tool == "Bash":
            return "bash"
        if self.tool == "WebFetch":
            return "domain"
        return "path"

    def __str__(self) -> str:
        return format_rule(self)


def format_rule(rule: PermissionRule) -> str:
    """The rule as it is written in a config: ``parse_rule(format_rule(r)) == r``."""
    return rule.tool if rule.specifier is None else f"{rule.tool}({rule.specifier})"


def parse_rule(text: str) -> PermissionRule:
    """Read one rule (``Bash(npm test:*)``, ``Edit(src/**)``, ``Read``...).

    Raises :class:`RuleSyntaxError` (a ``ValueError``) saying what is wrong, e.g.
    ``Bash(npm test:*: missing ')'``.
    """
    if not isinstance(text, str):
        raise RuleSyntaxError(repr(text), "a rule must be a string")
    written = text.strip()
    if not written:
        raise RuleSyntaxError(repr(text), "empty rule")
    opening = written.find("(")
    specifier: str | None = None
    if opening < 0:
        if ")" in written:
            raise RuleSyntaxError(written, "')' without '('")
        tool = written
    else:
        if not written.endswith(")"):
            raise RuleSyntaxError(written, "missing ')'")
        tool, specifier = written[:opening].strip(), written[opening + 1 : -1].strip()
        if not specifier:
            raise RuleSyntaxError(
                written, f"empty '()': write {tool or 'the tool name'} alone for every use"
            )
        if specifier == "*":
            specifier = None
    if tool.startswith("mcp__") and tool.endswith("__*") and tool[5:-3]:
        if specifier is not None:
            raise RuleSyntaxError(written, "MCP tool rules take no '(...)'")
        tool = tool[:-3]
    if specifier is not None and tool == "WebFetch" and specifier.startswith("domain:"):
        specifier = "domain:" + specifier[len("domain:") :].strip().lower().rstrip(".")
    problem = _rule_problem(tool, specifier)
    if problem is not None:
        raise RuleSyntaxError(written, problem)
    return PermissionRule(tool, specifier)


_parse_cached = functools.lru_cache(maxsize=4096)(parse_rule)


def rules_validator(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    """An attrs validator: a tuple of rule strings that :func:`parse_rule` can read; a bad
    one is a :class:`~nexo_trio.core.validation.FieldError` naming the rule
    (``allow: bad rule 'Bash(npm': missing ')'``)."""
    for rule in value:  # type: ignore[attr-defined]
        if not isinstance(rule, str):
            raise FieldError(attribute.name, f"expected a rule string, got {shown(rule)}")
        try:
            _parse_cached(rule)
        except RuleSyntaxError as exc:
            raise FieldError(attribute.name, f"bad rule {shown(rule)}: {exc.problem}") from None


def _rule_problem(tool: str, specifier: str | None) -> str | None:
    """What makes ``tool(specifier)`` not a valid, normalised rule (``None`` if nothing)."""
    if not _TOOL_NAME.fullmatch(tool):
        return f"bad tool name {tool!r}" if tool else "missing the tool name"
    if tool.startswith("mcp__"):
        if tool[5:].startswith("__") or tool == "mcp__":
            return "missing the MCP server name (mcp__SERVER or mcp__SERVER__TOOL)"
        if tool.endswith("__"):
            return "missing the MCP tool name (mcp__SERVER__TOOL, or mcp__SERVER for all)"
    if specifier is None:
        return None
    if specifier != specifier.strip() or not specifier or specifier == "*":
        return "the specifier is not normalised (use parse_rule)"
    if tool not in _SPECIFIER_TOOLS:
        return (
            f"{tool} rules take no '(...)': write {tool} for every use "
            "(only Bash, Read, Edit, Write and WebFetch rules take a specifier)"
        )
    if tool == "Bash":
        return _bash_problem(specifier)
    if tool == "WebFetch":
        return _domain_problem(specifier)
    return _path_problem(specifier)


def _bash_problem(specifier: str) -> str | None:
    body = specifier[:-2] if specifier.endswith(":*") else specifier
    if ":*" in body:
        return "':*' may only end the rule (use '*' for a wildcard elsewhere)"
    if not body.strip():
        return "nothing before ':*'"
    return None


def _domain_problem(specifier: str) -> str | None:
    if not specifier.startswith("domain:"):
        return _DOMAIN_HELP
    host = specifier[len("domain:") :]
    if not host:
        return f"missing the host: {_DOMAIN_HELP}"
    if host != host.lower().rstrip(".") or not _HOST.fullmatch(host):
        return f"bad host {host!r}: {_DOMAIN_HELP}, without scheme, port or path"
    return None


def _path_problem(specifier: str) -> str | None:
    if specifier.startswith("!"):
        return "negated patterns ('!') are not supported: put the rule in the other list"
    if specifier.startswith("~") and not specifier.startswith("~/"):
        return "only '~/...' is supported for the home directory"
    if any(part == ".." for part in specifier.split("/")):
        return "'..' is not supported in a path rule: write an absolute //path"
    _, pattern = _split_anchor(specifier)
    if not pattern.strip("/"):
        return "the path pattern is empty: write ** for everything under it"
    return None


# --------------------------------------------------------------------------------------------
# Matching


@attrs.frozen
class RuleMatch:
    """The rule that decides a tool call.

    ``rule`` decided it; ``rules`` are all the rules it took (an allowed compound command:
    one allow rule per part, deduplicated, in order); ``subject`` is what matched (the
    command or its part, the path, the host, the tool)."""

    effect: Effect
    rule: PermissionRule
    subject: str
    rules: tuple[PermissionRule, ...] = ()

    @property
    def allowed(self) -> bool:
        """Whether the rule allows the call."""
        return self.effect == "allow"

    @property
    def reason(self) -> str:
        """``denied by rule 'Bash(rm:*)' (rm -rf build)``."""
        verb = "allowed" if self.allowed else "denied"
        rules = self.rules or (self.rule,)
        names = ", ".join(repr(format_rule(rule)) for rule in rules)
        return f"{verb} by rule{'s' if len(rules) > 1 else ''} {names} ({_shown(self.subject)})"


def match_rules(
    allow: Iterable[str | PermissionRule],
    deny: Iterable[str | PermissionRule],
    tool_name: str,
    tool_input: Mapping[str, Any],
    *,
    workspace: str | None,
    home: str | None = None,
) -> RuleMatch | None:
    """The rule that decides this call, or ``None`` when no rule does.

    Deny rules are tried first, then allow rules (a deny always wins). ``workspace`` anchors
    the relative path rules (and bounds where an allowed command may redirect output);
    ``home`` anchors ``~/`` rules. Rules given as strings are parsed (cached); a bad one
    raises :class:`RuleSyntaxError`.
    """
    allow_rules = tuple(_as_rule(item) for item in allow)
    deny_rules = tuple(_as_rule(item) for item in deny)
    call = _Call(tool_name, tool_input, _directory(workspace), _directory(home))
    command = _command_of(call) if tool_name == "Bash" else None
    for rule in deny_rules:
        subject = _denied_by(rule, call, command)
        if subject is not None:
            return RuleMatch("deny", rule, subject, (rule,))
    if tool_name == "Bash":
        return _bash_allowed(allow_rules, call, command)
    for rule in allow_rules:
        subject = _matches_call(rule, call)
        if subject is not None:
            return RuleMatch("allow", rule, subject, (rule,))
    return None


def _as_rule(item: str | PermissionRule) -> PermissionRule:
    return item if isinstance(item, PermissionRule) else _parse_cached(item)


@attrs.frozen
class _Call:
    tool: str
    input: Mapping[str, Any]
    workspace: str | None
    home: str | None


def _directory(path: str | None) -> str | None:
    """An absolute, normalised directory, or ``None`` when unknown or relative."""
    if not path or not path.startswith("/"):
        return None
    return _normpath(path)


def _normpath(path: str) -> str:
    normal = posixpath.normpath(path)
    return "/" + normal.lstrip("/") if normal.startswith("//") else normal


def _shown(text: str, limit: int = 80) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _covers(rule_tool: str, tool: str) -> bool:
    """Whether a rule naming ``rule_tool`` is about a call of ``tool``."""
    if rule_tool == tool:
        return True
    if rule_tool in ("Read", "Edit"):
        return tool in _PATH_RULE_TOOLS[rule_tool]
    if rule_tool.startswith("mcp__") and "__" not in rule_tool[5:]:
        return tool.startswith(rule_tool + "__")
    return False


def _matches_call(rule: PermissionRule, call: _Call) -> str | None:
    """What of a non-Bash call ``rule`` matches (``None``: it does not)."""
    if rule.tool == "Bash":
        return None
    if rule.specifier is None:
        return call.tool if _covers(rule.tool, call.tool) else None
    if rule.tool == "WebFetch":
        return _domain_match(rule.specifier, call) if call.tool == "WebFetch" else None
    if call.tool not in _PATH_RULE_TOOLS[rule.tool]:
        return None
    return _path_match(rule.specifier, call)


def _denied_by(rule: PermissionRule, call: _Call, command: _Command | None) -> str | None:
    if rule.tool != "Bash":
        return _matches_call(rule, call)
    if call.tool != "Bash":
        return None
    if rule.specifier is None:
        return command.raw if command is not None else "Bash"
    if command is None:
        return None
    pattern = _bash_pattern(rule.specifier)
    if pattern.whole.fullmatch(command.text):
        return command.text
    for part in command.parts or ():
        if not part.readable:
            continue
        for view in part.deny_views:
            if pattern.matches(view):
                return _render_words(view)
    return None


def _bash_allowed(
    rules: Sequence[PermissionRule], call: _Call, command: _Command | None
) -> RuleMatch | None:
    bash_rules = [rule for rule in rules if rule.tool == "Bash"]
    for rule in bash_rules:
        if rule.specifier is None:
            return RuleMatch("allow", rule, command.raw if command else "Bash", (rule,))
    if command is None or not bash_rules:
        return None
    for rule in bash_rules:
        assert rule.specifier is not None
        if _bash_pattern(rule.specifier).exact_text == command.raw.strip():
            return RuleMatch("allow", rule, command.raw, (rule,))
    if not command.parts or not command.allowable:
        return None  # unreadable, or nothing to run
    used: list[PermissionRule] = []
    for part in command.parts:
        found = next((rule for rule in bash_rules if _allows_part(rule, part)), None)
        if found is None:
            return None
        if found not in used:
            used.append(found)
    return RuleMatch("allow", used[0], command.raw, tuple(used))


def _allows_part(rule: PermissionRule, part: _Part) -> bool:
    if not (part.readable and part.writes_ok):
        return False
    assert rule.specifier is not None
    pattern = _bash_pattern(rule.specifier)
    return any(pattern.matches(view) for view in part.allow_views)


# --------------------------------------------------------------------------------------------
# Paths


def _split_anchor(specifier: str) -> tuple[Literal["root", "home", "workspace"], str]:
    """Where a path rule is anchored, and its gitignore pattern (a leading ``/`` anchors)."""
    if specifier.startswith("//"):
        return "root", "/" + specifier.lstrip("/")
    if specifier.startswith("~/"):
        return "home", specifier[1:]
    if specifier.startswith("./"):
        return "workspace", specifier[2:]
    return "workspace", specifier


@functools.lru_cache(maxsize=1024)
def _path_regex(specifier: str) -> tuple[str, re.Pattern[str]]:
    anchor, pattern = _split_anchor(specifier)
    pattern = pattern.rstrip("/")  # a directory pattern: we cannot tell directories apart
    anchored = "/" in pattern
    body = _glob_regex(pattern.lstrip("/"))
    prefix = "" if anchored else "(?:.*/)?"
    return anchor, re.compile(f"{prefix}{body}(?:/.*)?", re.DOTALL)


def _glob_regex(pattern: str) -> str:
    """A gitignore glob as a regular expression over a relative path."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "*":
            j = i
            while j < n and pattern[j] == "*":
                j += 1
            starts = i == 0 or pattern[i - 1] == "/"
            ends = j == n or pattern[j] == "/"
            if j - i == 2 and starts and ends:
                if j == n:
                    out.append(".*")
                else:
                    out.append("(?:.*/)?")
                    j += 1
            else:
                out.append("[^/]*")
            i = j
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[":
            closing = _class_end(pattern, i)
            if closing < 0:
                out.append(re.escape(c))
                i += 1
                continue
            inner = pattern[i + 1 : closing]
            negate = inner[:1] in ("!", "^")
            if negate:
                inner = inner[1:]
            chars = "".join(ch if ch == "-" else re.escape(ch) for ch in inner)
            out.append(f"(?!/)[{'^' if negate else ''}{chars}]")
            i = closing + 1
        elif c == "\\" and i + 1 < n:
            out.append(re.escape(pattern[i + 1]))
            i += 2
        else:
            out.append(re.escape(c))
            i += 1
    return "".join(out)


def _class_end(pattern: str, start: int) -> int:
    """Index of the ``]`` closing the class opened at ``start`` (-1 if none)."""
    j = start + 1
    if j < len(pattern) and pattern[j] in "!^":
        j += 1
    if j < len(pattern) and pattern[j] == "]":
        j += 1
    return pattern.find("]", j)


def _tool_path(call: _Call) -> str | None:
    """The absolute, normalised path a file tool touches (``None`` if unknown)."""
    key = "notebook_path" if call.tool.startswith("Notebook") else "file_path"
    value = call.input.get(key)
    if value is None and call.tool in _SEARCH_TOOLS:
        value = call.input.get("path") or call.workspace
    if not isinstance(value, str) or not value:
        return None
    if value == "~" or value.startswith("~/"):
        if call.home is None:
            return None
        value = call.home + value[1:]
    elif not value.startswith("/"):
        if call.workspace is None:
            return None
        value = f"{call.workspace}/{value}"
    return _normpath(value)


def _relative(path: str, base: str) -> str | None:
    if base == "/":
        return path[1:]
    if path == base:
        return ""
    if path.startswith(base + "/"):
        return path[len(base) + 1 :]
    return None


def _path_match(specifier: str, call: _Call) -> str | None:
    path = _tool_path(call)
    if path is None:
        return None
    anchor, regex = _path_regex(specifier)
    base = {"root": "/", "home": call.home, "workspace": call.workspace}[anchor]
    if base is None:
        return None
    relative = _relative(path, base)
    if relative is None or not regex.fullmatch(relative):
        return None
    return path


def _domain_match(specifier: str, call: _Call) -> str | None:
    url = call.input.get("url")
    if not isinstance(url, str):
        return None
    try:
        host = urlsplit(url.strip()).hostname
    except ValueError:
        return None
    if not host:
        return None
    host = host.lower().rstrip(".")
    wanted = specifier[len("domain:") :]
    if wanted.startswith("*."):
        return host if host.endswith(wanted[1:]) else None
    return host if host == wanted else None


# --------------------------------------------------------------------------------------------
# Bash: commands split into parts, and how a rule matches a part

_GLOB_ACTIVE: Final = re.compile(r"[*?\[{~]")
_ALLOW_WRAPPERS: Final = frozenset({"timeout", "time", "nice", "nohup", "stdbuf"})
_DENY_WRAPPERS: Final = _ALLOW_WRAPPERS | {
    "env",
    "sudo",
    "doas",
    "command",
    "exec",
    "builtin",
    "xargs",
}
_SHELLS: Final = frozenset({"sh", "bash", "zsh", "dash", "ksh"})
_CD: Final = frozenset({"cd", "pushd", "popd"})
_WRITE_OPS: Final = frozenset({">", ">>", ">|", "&>", "&>>", "<>", ">&"})
_HARMLESS_TARGETS: Final = frozenset({"/dev/null", "/dev/stdout", "/dev/stderr", "/dev/tty"})
_MAX_DEPTH: Final = 8
WordKey: TypeAlias = tuple[tuple[str, str], ...]
View: TypeAlias = tuple[Word, ...]


def _word_key(word: Word) -> WordKey:
    """A word as the shell reads it: literal text that no expansion touches is the same
    quoted or not (``"test"`` is ``test``); glob characters, ``~`` and ``{`` only count when
    unquoted; expansions stay expansions."""
    out: list[tuple[str, str]] = []
    for written, text in word.parts:
        kind = "q" if written == "lit" and not _GLOB_ACTIVE.search(text) else written
        if out and out[-1][0] == kind and kind in ("q", "lit"):
            out[-1] = (kind, out[-1][1] + text)
        else:
            out.append((kind, text))
    return tuple(out)


def _plain(word: Word) -> str | None:
    """The text of a word nothing expands (``None`` otherwise)."""
    key = _word_key(word)
    if not key:
        return ""
    if len(key) == 1 and key[0][0] == "q":
        return key[0][1]
    return None


def _render(word: Word) -> str:
    out = []
    for kind, text in word.parts:
        if kind == "var":
            out.append(f"${text}" if re.fullmatch(r"\w+|[@*#?$!-]", text) else f"${{{text}}}")
        elif kind == "sub":
            out.append(f"$({text})")
        elif kind == "arith":
            out.append(f"$(({text}))")
        else:
            out.append(text)
    return "".join(out)


def _render_words(words: Sequence[Word]) -> str:
    return " ".join(_render(word) for word in words)


@attrs.frozen
class _Part:
    """One simple command of a Bash command line."""

    words: View
    readable: bool
    writes_ok: bool = True
    allow_views: tuple[View, ...] = ()
    deny_views: tuple[View, ...] = ()


@attrs.frozen
class _Command:
    raw: str
    text: str  # blanks collapsed
    parts: tuple[_Part, ...] | None  # None: the command could not be read
    allowable: bool = True  # False: parts may hide a command: no allow rule but Bash applies


_HEADER_WORD: Final = re.compile(r"(?:^|[\s;&|()])(?:for|select|case|function)(?=[\s;&|()]|$)")
_SUBSTITUTION: Final = re.compile(r"\$\(|`|[<>]\(")


def _command_of(call: _Call) -> _Command | None:
    raw = call.input.get("command")
    if not isinstance(raw, str):
        return None
    text = " ".join(raw.split())
    try:
        found = list(_collect(raw, (), 0))
    except (TooDeep, RecursionError):
        return _Command(raw, text, None, allowable=False)
    denials = [_deny_views(words) for words, _, _ in found]
    has_cd = any(
        (name := _plain(view[0])) is not None and posixpath.basename(name) in _CD
        for views in denials
        for view in views
        if view
    )
    parts = tuple(
        _Part(
            words,
            readable,
            writes_ok=all(_write_ok(r, call.workspace, has_cd=has_cd) for r in redirs),
            allow_views=_allow_views(words),
            deny_views=views,
        )
        for (words, redirs, readable), views in zip(found, denials, strict=True)
    )
    # The parser skips the words of `for`/`select`/`case` headers and `function` names; a
    # substitution there would run unseen, so such a command is never allowed by its parts.
    hidden = _HEADER_WORD.search(raw) is not None and _SUBSTITUTION.search(raw) is not None
    return _Command(raw, text, parts, allowable=not hidden)


_Found: TypeAlias = tuple[View, tuple[Redir, ...], bool]


def _collect(text: str, outer: tuple[Redir, ...], depth: int) -> Iterator[_Found]:
    """Every simple command ``text`` runs: (words, the redirections that apply, readable)."""
    if depth > _MAX_DEPTH:
        yield ((), outer, False)
        return
    try:
        pipelines = parse(text)
    except TooDeep:
        yield ((), outer, False)
        return
    yield from _collect_list(pipelines, outer, depth)


def _collect_list(
    pipelines: Sequence[Pipeline], outer: tuple[Redir, ...], depth: int
) -> Iterator[_Found]:
    for pipeline in pipelines:
        for node in pipeline:
            if isinstance(node, Group):
                yield from _collect_list(node.body, outer + node.redirs, depth)
                yield from _collect_redirs(node.redirs, depth)
            else:
                yield from _collect_simple(node, outer, depth)


def _collect_simple(node: Simple, outer: tuple[Redir, ...], depth: int) -> Iterator[_Found]:
    # A `for`/`case` head (role, when the parser marks it) is expanded, not run: only the
    # commands substituted into it run.
    runs = getattr(node, "role", "command") == "command"
    if runs and (node.words or node.redirs):
        yield (node.words, node.redirs + outer, True)
    for word in node.words:
        yield from _collect_word(word, depth)
    script = _inner_script(node.words) if runs else None
    if script is not None:
        yield from _collect(script, (), depth + 1)
    yield from _collect_redirs(node.redirs, depth)


def _collect_redirs(redirs: Sequence[Redir], depth: int) -> Iterator[_Found]:
    for redir in redirs:
        if redir.target is not None:
            yield from _collect_word(redir.target, depth)
        if redir.body is not None and redir.body_expands:
            parts, _ = dq_parts(redir.body, 0, closing=False)
            yield from _collect_word(Word(tuple(parts)), depth)


def _collect_word(word: Word, depth: int) -> Iterator[_Found]:
    """The commands a word runs when it is expanded."""
    for kind, text in word.parts:
        if kind == "sub":
            yield from _collect(text, (), depth + 1)
        elif kind in ("arith", "var") and ("$(" in text or "`" in text or "<(" in text):
            yield ((), (), False)  # runs a command we do not read


def _inner_script(words: View) -> str | None:
    """The script of ``sh -c 'script'`` or ``eval words`` (after wrappers), if plain text."""
    for view in _deny_views(words):
        if not view:
            continue
        name = _plain(view[0])
        if name is None:
            continue
        name = posixpath.basename(name)
        if name == "eval":
            texts = [_plain(word) for word in view[1:]]
            if texts and all(t is not None for t in texts):
                return " ".join(t for t in texts if t is not None)
        elif name in _SHELLS:
            for i, word in enumerate(view[1:-1], start=1):
                flag = _plain(word)
                if flag is None or not flag.startswith("-") or flag == "--":
                    break
                if not flag.startswith("--") and "c" in flag:
                    return _plain(view[i + 1])
    return None


def _write_ok(redir: Redir, workspace: str | None, *, has_cd: bool) -> bool:
    """Whether an allowed command may keep this redirection (it writes no file outside the
    workspace, as far as can be told without running it)."""
    if redir.op not in _WRITE_OPS:
        return True  # reads: <, <<, <<-, <<<, <&
    target = _plain(redir.target) if redir.target is not None else None
    if target is None:
        return False
    if redir.op == ">&" and re.fullmatch(r"\d*-?", target):
        return True  # 2>&1, >&2, >&-: file descriptors
    if target in _HARMLESS_TARGETS:
        return True
    if workspace is None:
        return False
    if target.startswith("/"):
        path = _normpath(target)
    elif has_cd:
        return False
    else:
        path = _normpath(f"{workspace}/{target}")
    return path.startswith(workspace + "/") or path == workspace


def _allow_views(words: View) -> tuple[View, ...]:
    return tuple(_views(words, _ALLOW_WRAPPERS, assignments=False))


def _deny_views(words: View) -> tuple[View, ...]:
    views = list(_views(words, _DENY_WRAPPERS, assignments=True))
    extra = []
    for view in views:
        name = _plain(view[0]) if view else None
        if name and "/" in name and posixpath.basename(name):
            extra.append((Word((("q", posixpath.basename(name)),)), *view[1:]))
    return tuple(views + extra)


def _views(words: View, wrappers: frozenset[str], *, assignments: bool) -> Iterator[View]:
    """The command itself, then the same past each wrapper it starts with."""
    view = words
    yield view
    for _ in range(16):
        if not view:
            return
        if assignments and assignment(view[0]) is not None:
            view = view[1:]
            yield view
            continue
        name = _plain(view[0])
        if name is None or name not in wrappers:
            return
        start = _skip_wrapper(name, view)
        if start is None or start >= len(view):
            return
        view = view[start:]
        yield view


_TAKES_VALUE: Final = {
    "timeout": frozenset({"-s", "--signal", "-k", "--kill-after"}),
    "nice": frozenset({"-n", "--adjustment"}),
    "stdbuf": frozenset({"-i", "-o", "-e", "--input", "--output", "--error"}),
    "time": frozenset({"-f", "--format", "-o", "--output"}),
    "env": frozenset({"-u", "--unset", "-C", "--chdir"}),
    "sudo": frozenset({"-u", "-g", "-h", "-C", "-p", "-D", "-r", "-t", "-U", "-R", "-T"}),
    "doas": frozenset({"-u", "-C"}),
    "exec": frozenset({"-a"}),
    "xargs": frozenset({"-I", "-n", "-P", "-d", "-a", "-L", "-s", "-E", "-e"}),
}


def _skip_wrapper(name: str, view: View) -> int | None:
    """Index of the command ``view[0]`` (a wrapper called ``name``) runs, ``None`` if unsure."""
    takes_value = _TAKES_VALUE.get(name, frozenset())
    i = 1
    while i < len(view):
        value = _plain(view[i])
        if value is None:
            return None
        if name == "env" and assignment(view[i]) is not None:
            i += 1
            continue
        if value == "--":
            i += 1
            break
        if not value.startswith("-") or (value == "-" and name != "env"):
            break
        if name == "nice" and re.fullmatch(r"-\d+", value):
            i += 1
        elif value in takes_value:
            i += 2
        elif name == "env" and value in ("-S", "--split-string"):
            return None  # a command string: read as shell by the judges, not here
        else:
            i += 1
    if name == "timeout":
        duration = _plain(view[i]) if i < len(view) else None
        if duration is None or not re.fullmatch(r"\d+(\.\d+)?[smhd]?", duration):
            return None
        i += 1
    return i


@attrs.frozen
class _BashPattern:
    """A compiled ``Bash(...)`` specifier."""

    words: tuple[WordKey, ...] | None  # exact or word-prefix rules on a simple command
    prefix: bool
    regex: re.Pattern[str] | None  # wildcard rules on a simple command (rendered words)
    whole: re.Pattern[str]  # the whole command line, blanks collapsed (deny)
    exact_text: str | None  # an exact rule: the one command text it allows as a whole

    def matches(self, view: View) -> bool:
        if self.regex is not None:
            return self.regex.fullmatch(_render_words(view)) is not None
        if self.words is None:
            return False
        if len(view) < len(self.words) or (not self.prefix and len(view) != len(self.words)):
            return False
        return all(_word_key(w) == key for w, key in zip(view, self.words, strict=False))


def _wild(text: str) -> str:
    return ".*".join(re.escape(piece) for piece in text.split("*"))


@functools.lru_cache(maxsize=1024)
def _bash_pattern(specifier: str) -> _BashPattern:
    prefix = specifier.endswith(":*")
    body = specifier[:-2].rstrip() if prefix else specifier
    wild = "*" in body
    flat = " ".join(body.split())
    optional_tail = prefix or (wild and flat.endswith(" *") and flat.count("*") == 1)
    if optional_tail and not prefix:
        flat = flat[:-2]
    whole = re.compile(_wild(flat) + ("(?: .*)?" if optional_tail else ""), re.DOTALL)
    exact_text = None if (prefix or wild) else specifier
    words = _simple_words(body)
    if words is None:
        return _BashPattern(None, prefix, None, whole, exact_text)
    if not wild:
        return _BashPattern(tuple(_word_key(w) for w in words), prefix, None, whole, exact_text)
    if optional_tail and not prefix:
        words = words[:-1]
    pieces = [
        "".join(
            _wild(text) if kind in ("lit", "q") else re.escape(_render(Word(((kind, text),))))
            for kind, text in word.parts
        )
        for word in words
    ]
    tail = "(?: .*)?" if optional_tail else ""
    regex = re.compile(" ".join(pieces) + tail, re.DOTALL)
    return _BashPattern(None, prefix, regex, whole, exact_text)


def _simple_words(text: str) -> View | None:
    """The words of ``text`` if it is one simple command without redirections."""
    try:
        pipelines = parse(text)
    except TooDeep:
        return None
    if len(pipelines) != 1 or len(pipelines[0]) != 1:
        return None
    node = pipelines[0][0]
    if not isinstance(node, Simple) or node.redirs or not node.words:
        return None
    if any(kind == "sub" for word in node.words for kind, _ in word.parts):
        return None
    return node.words
