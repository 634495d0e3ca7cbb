"""The skip in :func:`~nexo_trio.core.redact.redact`: a text that neither begins nor ends with
a :data:`~nexo_trio.core.redact.MIN_PIECE`-character piece of a secret has no piece to cut,
so :func:`~nexo_trio.core.redact._cut_pieces` is not run on it; and whatever it skips, the
text redacted is the same as with the cut always tried."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from nexo_trio.core.redact import MIN_PIECE, REDACTED, _cut_pieces, _grams, redact

_chars = st.sampled_from("ab]d[e=:")
_texts = st.text(_chars, max_size=40)
_secrets = st.lists(st.text(_chars, min_size=6, max_size=30), max_size=3).map(
    lambda values: tuple(sorted(set(values), key=len, reverse=True))
)


@given(_texts, _secrets)
def test_a_text_whose_ends_are_no_piece_has_nothing_to_cut(
    text: str, secrets: tuple[str, ...]
) -> None:
    grams = _grams(secrets)
    if text[:MIN_PIECE] not in grams and text[-MIN_PIECE:] not in grams:
        assert _cut_pieces(text, secrets) == text


@given(st.data(), st.text(_chars, min_size=MIN_PIECE + 1, max_size=30))
def test_redact_cuts_pieces_at_either_end(data: st.DataObject, value: str) -> None:
    cut = data.draw(st.integers(1, len(value) - 1))
    middle = data.draw(st.text(st.sampled_from("xyz "), min_size=1, max_size=10))
    if len(value) - cut >= MIN_PIECE:
        assert redact(value[cut:] + middle, (value,)).startswith(REDACTED)
    if cut >= MIN_PIECE:
        assert redact(middle + value[:cut], (value,)).endswith(REDACTED)


def test_an_api_key_cut_in_a_short_text() -> None:
    key = "sk-ant-api03-abcdefghijklmnopqrstuvwxyz0123456789"
    assert redact(f"{key[30:]} left", (key,)) == f"{REDACTED} left"
    assert redact("allow_once", (key,)) == "allow_once"
