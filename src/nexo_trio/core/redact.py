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

import functools
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
        if len(value) >= MIN_SECRET and is_secret_name(name)
    }
    return tuple(sorted(values, key=len, reverse=True))


@functools.lru_cache(maxsize=4096)
def is_secret_name(name: str) -> bool:
    """Whether ``name`` (a variable, a key) looks like it holds a secret."""
    # Cached: the same environment's names are asked about for every goal.
    return _SECRET_NAME.search(name) is not None


@functools.lru_cache(maxsize=64)
def _grams(secrets: tuple[str, ...]) -> frozenset[str]:
    """Every :data:`MIN_PIECE`-character substring of the secrets: a text that neither
    begins nor ends with one has no piece of a secret to cut at either end."""
    return frozenset(
        value[i : i + MIN_PIECE] for value in secrets for i in range(len(value) - MIN_PIECE + 1)
    )


def redact(text: str, secrets: tuple[str, ...] = ()) -> str:
    """``text`` with ``secrets`` (see :func:`secret_values`), assignments to secret-looking
    names and ``Authorization`` values replaced by ``[redacted]``."""
    for value in secrets:
        if value in text:
            text = text.replace(value, REDACTED)
    if secrets and len(text) >= MIN_PIECE:
        grams = _grams(secrets)
        if text[:MIN_PIECE] in grams or text[-MIN_PIECE:] in grams:
            text = _cut_pieces(text, secrets)
    if "=" not in text and ":" not in text:
        return text  # every pattern below needs one of them: nothing to replace

    def assignment(match: re.Match[str]) -> str:
        if not _SECRET_NAME.search(match["name"]) or match["value"] == REDACTED:
            return match[0]
        return f"{match['name']}{match['sep']}{REDACTED}"

    for pattern in _ASSIGNMENTS:
        text = pattern.sub(assignment, text)
    return _AUTHORIZATION.sub(lambda m: f"{m[1]}{REDACTED}", text)


def _cut_pieces(text: str, secrets: tuple[str, ...]) -> str:
    """``text`` without a secret's end at its start or a secret's start at its end: the
    longest such piece (at least :data:`MIN_PIECE` characters, shorter than the secret).

    Only the places where the secret has the text's first (last) character can start (end)
    a piece, so those are the only ones tried (``str.find``), longest first."""
    for value in secrets:
        n = len(value)
        longest = min(n - 1, len(text))
        if longest >= MIN_PIECE:
            # A piece value[i:] (i from n - longest to n - MIN_PIECE) begins with text[0].
            first, stop = text[0], n - MIN_PIECE + 1
            i = value.find(first, n - longest, stop)
            while i >= 0:
                if text.startswith(value[i:]):
                    text = REDACTED + text[n - i :]
                    break
                i = value.find(first, i + 1, stop)
        longest = min(n - 1, len(text))
        if longest >= MIN_PIECE:
            # A piece value[: j + 1] (j from longest - 1 to MIN_PIECE - 1) ends with text[-1].
            last = text[-1]
            j = value.rfind(last, MIN_PIECE - 1, longest)
            while j >= 0:
                if text.endswith(value[: j + 1]):
                    text = text[: -(j + 1)] + REDACTED
                    break
                j = value.rfind(last, MIN_PIECE - 1, j)
    return text
