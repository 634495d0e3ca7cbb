"""Shell syntax for the rules: a lexer and a parser of Bash command text, no judgement.

A small shell lexer and parser (quotes, escapes, ``$'…'``, variables, ``$( )``, backticks,
``<( )``, heredocs, ``;`` ``&&`` ``||`` ``|`` ``&`` newlines, subshells, ``{ …; }`` groups,
functions, ``if``/``while``/``for``/``case``) turns command text into lists of pipelines of
simple commands and groups (:func:`parse`, :func:`simple_nodes`). A word keeps which of its
parts are quoted, expanded or substituted (:data:`Part`), so quoted text stays data. The
words of a ``for``/``select`` head and a ``case`` subject are kept as a :class:`Simple` whose
``role`` says they are expanded, not run; a function definition is a :class:`Group` naming
the function. Both are total: any text lexes and parses (unterminated quotes and
substitutions run to the end), but nesting deeper than the parser goes raises
:class:`TooDeep`.

Known limits: ``case`` and arithmetic are parsed approximately, and ``[[ a > b ]]`` is read as
a redirection.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import TypeAlias

import attrs

__all__ = [
    "NAME_RE",
    "PREFIX_WORDS",
    "Group",
    "Part",
    "Pipeline",
    "Redir",
    "Simple",
    "TooDeep",
    "Word",
    "assignment",
    "dq_parts",
    "parse",
    "simple_nodes",
]

# --------------------------------------------------------------------------------------------
# Lexer: text -> words, operators and redirections

Part: TypeAlias = tuple[str, str]
"""A piece of a word: ``("lit", text)`` unquoted, ``("q", text)`` quoted, ``("var", name)``,
``("sub", command text)`` for ``$( )``/backticks/``<( )``, ``("arith", text)``."""


@attrs.frozen
class Word:
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
class Redir:
    op: str
    target: Word | None
    body: str | None = None
    """A heredoc's body (``<<``), once read."""
    body_expands: bool = False
    """Whether the heredoc body undergoes expansions (unquoted delimiter)."""


_Token: TypeAlias = "Word | _Op | Redir"

_META = frozenset(" \t\r\n;&|()<>")
NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
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
    m = NAME_RE.match(s, i + 1)
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


def dq_parts(s: str, i: int, *, closing: bool) -> tuple[list[Part], int]:
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
    text = "".join(out)
    # The shell passes C strings: a NUL ends the string ($'/etc\x00/x' is /etc).
    return ("q", text.partition("\x00")[0]), i + 1


class _Lexer:
    """Splits shell text into :class:`Word`, :class:`_Op` and :class:`Redir` tokens.

    Total: any text lexes (unterminated quotes and substitutions run to the end).
    """

    def __init__(self, text: str) -> None:
        self.s = text
        self.i = 0
        self.tokens: list[_Token] = []
        self.pending: list[tuple[Redir, str, bool]] = []  # heredocs waiting for a newline

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
        redir = Redir(op, target)
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

    def _word(self) -> Word:
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
                dq, i = dq_parts(s, i + 1, closing=True)
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
        return Word(tuple(parts))


def assignment(word: Word) -> tuple[str, Word] | None:
    """``NAME=value`` (unquoted name): the name and the value word."""
    if not word.parts or word.parts[0][0] != "lit":
        return None
    m = _ASSIGN_RE.match(word.parts[0][1])
    if not m:
        return None
    rest = word.parts[0][1][m.end() :]
    value_parts = ((("lit", rest),) if rest else ()) + word.parts[1:]
    return m.group(1), Word(value_parts)


# --------------------------------------------------------------------------------------------
# Parser: tokens -> lists of pipelines of simple commands and groups


@attrs.frozen
class Simple:
    words: tuple[Word, ...]
    redirs: tuple[Redir, ...]
    role: str = "command"
    """``command``; ``for`` (``for NAME in WORDS``: NAME is assigned, WORDS are expanded) or
    ``case`` (the subject is expanded): words that are not run."""


@attrs.frozen
class Group:
    body: tuple[tuple[Simple | Group, ...], ...]
    subshell: bool
    redirs: tuple[Redir, ...]
    function: str | None = None
    """The name of the function this group is the body of, for a definition."""


_Node: TypeAlias = "Simple | Group"
Pipeline: TypeAlias = tuple[_Node, ...]
_EMPTY = Simple((), ())
_MAX_NESTING = 64
# Reserved words that only introduce the command after them.
PREFIX_WORDS = frozenset({"if", "then", "elif", "else", "while", "until", "do", "!"})
_CLOSING_WORDS = frozenset({"fi", "done", "esac", "}"})


class TooDeep(Exception):
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
    ) -> list[Pipeline]:
        self.depth += 1
        if self.depth > _MAX_NESTING:
            raise TooDeep
        out: list[Pipeline] = []
        while (tok := self.peek()) is not None:
            if isinstance(tok, _Op):
                if tok.op in stop_ops:
                    break
                if tok.op in (";", "&", "&&", "||", ";;"):
                    self.i += 1
                    continue
            elif isinstance(tok, Word) and tok.bare in stop_words:
                break
            start = self.i
            out.append(self.parse_pipeline())
            if self.i == start:
                self.i += 1  # never stall on a token nothing consumes
        self.depth -= 1
        return out

    def parse_pipeline(self) -> Pipeline:
        nodes = [self.parse_command()]
        while self.is_op("|") or self.is_op("|&"):
            self.i += 1
            nodes.append(self.parse_command())
        return tuple(nodes)

    def trailing_redirs(self) -> tuple[Redir, ...]:
        out: list[Redir] = []
        while isinstance(tok := self.peek(), Redir):
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
                    return Group(tuple(body), True, self.trailing_redirs())
                if tok.op == ")":
                    self.i += 1  # stray: skip it
                return _EMPTY
            if not isinstance(tok, Word):
                return self.parse_simple()
            word = tok.bare
            if word == "{":
                self.i += 1
                body = self.parse_list(stop_words=frozenset({"}"}))
                if isinstance(nxt := self.peek(), Word) and nxt.bare == "}":
                    self.i += 1
                return Group(tuple(body), False, self.trailing_redirs())
            if word in PREFIX_WORDS:
                self.i += 1
                continue
            if word in _CLOSING_WORDS:
                self.i += 1
                return Simple((), self.trailing_redirs())
            if word in ("for", "select"):
                # `for x in a b; do` — the words are expanded, not run.
                words: list[Word] = []
                while isinstance(tok := self.peek(), Word | Redir):
                    if isinstance(tok, Word):
                        words.append(tok)
                    self.i += 1
                return Simple(tuple(words), (), role="for")
            if word == "case":
                return self.parse_case()
            if word == "function":
                self.i += 1
                name = ""
                if isinstance(tok := self.peek(), Word):
                    name = "".join(text for _, text in tok.parts)
                    self.i += 1
                if self.is_op("(") and self.is_op(")", 1):
                    self.i += 2
                return self.function_body(name)
            return self.parse_simple()

    def function_body(self, name: str) -> _Node:
        """The body of a function definition (the next command), naming the function."""
        self.depth += 1
        if self.depth > _MAX_NESTING:
            raise TooDeep
        body = self.parse_command()
        self.depth -= 1
        return Group(((body,),), False, (), function=name)

    def parse_simple(self) -> _Node:
        words: list[Word] = []
        redirs: list[Redir] = []
        while (tok := self.peek()) is not None and not isinstance(tok, _Op):
            if isinstance(tok, Word):
                words.append(tok)
            else:
                redirs.append(tok)
            self.i += 1
        if len(words) == 1 and not redirs and self.is_op("(") and self.is_op(")", 1):
            # A function definition `name() body`: its body is judged where it is defined
            # (conservative: a function is defined to be called).
            self.i += 2
            return self.function_body("".join(text for _, text in words[0].parts))
        return Simple(tuple(words), tuple(redirs))

    def parse_case(self) -> _Node:
        self.i += 1
        subject: list[Word] = []
        while (tok := self.peek()) is not None and not isinstance(tok, _Op):
            self.i += 1
            if isinstance(tok, Word) and tok.bare == "in":
                break
            if isinstance(tok, Word):
                subject.append(tok)
        body: list[Pipeline] = []
        while (tok := self.peek()) is not None:
            if isinstance(tok, _Op) and tok.op in (";", ";;", "&"):
                self.i += 1
                continue
            if isinstance(tok, Word) and tok.bare == "esac":
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
        head: list[Pipeline] = [(Simple(tuple(subject), (), role="case"),)]
        return Group((*head, *body), False, self.trailing_redirs())


def parse(text: str) -> list[Pipeline]:
    return _Parser(_Lexer(text).run()).parse_list()


def simple_nodes(pipelines: Sequence[Pipeline]) -> Iterator[Simple]:
    for pipeline in pipelines:
        for node in pipeline:
            if isinstance(node, Simple):
                yield node
            else:
                yield from simple_nodes(node.body)
