"""The fast paths of :mod:`nexo_trio.core.redact`: :func:`~nexo_trio.core.redact._cut_pieces`
says what the plain one it replaced says (a secret's end at a text's start, its start at the
text's end), for any text; a text with no ``=`` and no ``:`` has no assignment or header."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from nexo_trio.core.redact import (
    _ASSIGNMENTS,
    _AUTHORIZATION,
    MIN_PIECE,
    REDACTED,
    _cut_pieces,
    redact,
)


def plain_cut_pieces(text: str, secrets: tuple[str, ...]) -> str:
    """The reference: every piece size tried, longest first."""
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


# A small alphabet, so that pieces of the secrets do turn up in the texts.
_chars = st.sampled_from("ab]d[e")
_texts = st.text(_chars, max_size=40)
_secrets = st.lists(st.text(_chars, max_size=30), max_size=3).map(tuple)


@given(_texts, _secrets)
def test_the_same_as_the_plain_one(text: str, secrets: tuple[str, ...]) -> None:
    assert _cut_pieces(text, secrets) == plain_cut_pieces(text, secrets)


@given(st.data(), _secrets.filter(lambda s: any(len(v) > MIN_PIECE for v in s)))
def test_the_same_on_texts_made_of_pieces(data: st.DataObject, secrets: tuple[str, ...]) -> None:
    value = data.draw(st.sampled_from([v for v in secrets if len(v) > MIN_PIECE]))
    cut = data.draw(st.integers(1, len(value) - 1))
    middle = data.draw(_texts)
    text = value[cut:] + middle + value[:cut]
    assert _cut_pieces(text, secrets) == plain_cut_pieces(text, secrets)


def test_a_key_cut_at_both_ends() -> None:
    key = "sk-ant-api03-abcdefghijklmnopqrstuvwxyz0123456789"
    assert _cut_pieces(f"{key[20:]} and {key[:9]}", (key,)) == f"{REDACTED} and {REDACTED}"
    assert _cut_pieces("sk-", (key,)) == "sk-"  # shorter than MIN_PIECE


@given(st.text(st.characters(exclude_characters="=:"), max_size=60))
def test_the_patterns_need_an_equals_sign_or_a_colon(text: str) -> None:
    # What redact's fast path (no "=" nor ":": return) rests on.
    for pattern in (*_ASSIGNMENTS, _AUTHORIZATION):
        assert pattern.search(text) is None
    assert redact(text) == text


def test_assignments_are_still_redacted() -> None:
    assert redact("API_KEY=abc123 npm test") == f"API_KEY={REDACTED} npm test"
    assert redact("Authorization: Bearer xyz") == f"Authorization: {REDACTED}"
