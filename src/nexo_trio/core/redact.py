"""Secrets out of what we record: the values of secret-looking environment variables and
``Authorization`` headers, replaced before a text is stored, printed or sent on.

A variable is secret-looking when its name contains ``KEY``, ``TOKEN``, ``SECRET``,
``PASSWORD``, ``PASSWD`` or ``CREDENTIAL`` (any case: ``ANTHROPIC_API_KEY``,
``github_token``). Three things are redacted:

* the *values* those variables have in the environment given (so a command that echoes
  ``$ANTHROPIC_API_KEY``'s value, or a check that prints ``env``, does not leak it); values
  shorter than :data:`MIN_SECRET` characters are left alone (``1``, ``yes`` would blank
  ordinary text);
* assignments to such names written in the text itself (``API_KEY=abc123 npm test``,
  ``--token=abc``, ``"password": "hunter2"``, ``password: hunter2`` at the start of a
  line; not ``the token: ...`` in prose);
* ``Authorization:`` header values (``Authorization: Bearer ...``), in any case.

A text cut from a longer one (the tail of a check's output, the head of a long result) may
begin with the end of a secret or end with its start: :func:`redact` also replaces such a
piece when it is at least :data:`MIN_PIECE` characters long.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

REDACTED: Final = "[redacted]"
MIN_SECRET: Final = 6
"""Values shorter than this are not redacted by value (too likely to be ordinary text)."""
MIN_PIECE: Final = 4
"""A piece of a secret at the very start or end of a text is redacted from this length."""

_SECRET_NAME: Final = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL", re.IGNORECASE)
_NAME: Final = r"[A-Za-z_][A-Za-z0-9_-]*"
_VALUE: Final = r"""(?P<value>[^\s"',;&|]+)"""
_ASSIGNMENTS: Final = (
    # NAME=value: a shell assignment, an env line, --flag=value.
    re.compile(rf"(?P<name>(?<![A-Za-z0-9_-])(?:--)?{_NAME})(?P<sep>=[\"']?){_VALUE}"),
    # "name": "value" (JSON) and 'name': 'value'.
    re.compile(rf"""(?P<name>["']{_NAME})(?P<sep>["']\s*:\s*["']){_VALUE}"""),
    # name: value at the start of a line (YAML, headers, env dumps), not in prose.
    re.compile(rf"(?m)^(?P<name>[ \t]*{_NAME})(?P<sep>[ \t]*:[ \t]*[\"']?){_VALUE}"),
)
_AUTHORIZATION: Final = re.compile(
    r"""(?i)(authorization["']?\s*[:=]\s*["']?)([^\s"']+(?:[ \t]+[^\s"']+)?)"""
)


def secret_values(*environs: Mapping[str, str]) -> tuple[str, ...]:
    """The values to redact from environments: those of secret-looking names in any of
    them, longest first (so a value containing another is redacted whole)."""
    values = {
        value
        for environ in environs
        for name, value in environ.items()
        if _SECRET_NAME.search(name) and len(value) >= MIN_SECRET
    }
    return tuple(sorted(values, key=len, reverse=True))


def is_secret_name(name: str) -> bool:
    """Whether ``name`` (a variable, a key) looks like it holds a secret."""
    return _SECRET_NAME.search(name) is not None


def redact(text: str, secrets: tuple[str, ...] = ()) -> str:
    """``text`` with ``secrets`` (see :func:`secret_values`), assignments to secret-looking
    names and ``Authorization`` values replaced by ``[redacted]``."""
    for value in secrets:
        if value in text:
            text = text.replace(value, REDACTED)
    text = _cut_pieces(text, secrets)

    def assignment(match: re.Match[str]) -> str:
        if not _SECRET_NAME.search(match["name"]) or match["value"] == REDACTED:
            return match[0]
        return f"{match['name']}{match['sep']}{REDACTED}"

    for pattern in _ASSIGNMENTS:
        text = pattern.sub(assignment, text)
    return _AUTHORIZATION.sub(lambda m: f"{m[1]}{REDACTED}", text)


def _cut_pieces(text: str, secrets: tuple[str, ...]) -> str:
    """``text`` without a secret's end at its start or a secret's start at its end."""
    for value in secrets:
        longest = min(len(value) - 1, len(text))
        for size in range(longest, MIN_PIECE - 1, -1):
            if text.startswith(value[-size:]):
                text = REDACTED + text[size:]
                break
        longest = min(len(value) - 1, len(text))
        for size in range(longest, MIN_PIECE - 1, -1):
            if text.endswith(value[:size]):
                text = text[:-size] + REDACTED
                break
    return text
