"""Secrets are replaced before anything is recorded: values, assignments, headers."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nexo_trio.core.redact import MIN_PIECE, REDACTED, redact, secret_values

ENV = {
    "ANTHROPIC_API_KEY": "sk-ant-0123456789",
    "GH_TOKEN": "ghp_abcdefghij",
    "DB_PASSWORD": "hunter2hunter2",
    "AWS_CREDENTIALS": "AKIA-XYZ-123",
    "HOME": "/home/me",
    "SHORT_KEY": "abc",
}


def test_only_secret_looking_names_of_some_length_are_redacted_by_value() -> None:
    assert set(secret_values(ENV)) == {
        "sk-ant-0123456789",
        "ghp_abcdefghij",
        "hunter2hunter2",
        "AKIA-XYZ-123",
    }


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("echo sk-ant-0123456789", f"echo {REDACTED}"),
        ("API_KEY=abc123 npm test", f"API_KEY={REDACTED} npm test"),
        ("export PASSWORD='x1'; ls", f"export PASSWORD='{REDACTED}'; ls"),
        ("gh --token=zzz pr list", f"gh --token={REDACTED} pr list"),
        ('{"password": "p", "user": "bob"}', f'{{"password": "{REDACTED}", "user": "bob"}}'),
        ("password: p\nuser: bob", f"password: {REDACTED}\nuser: bob"),
        ('curl -H "Authorization: Bearer abc" x', f'curl -H "Authorization: {REDACTED}" x'),
        ("the token: we need one", "the token: we need one"),  # prose is left alone
        ("ls -la /home/me", "ls -la /home/me"),
    ],
)
def test_redact(text: str, expected: str) -> None:
    assert redact(text, secret_values(ENV)) == expected


@given(st.text(max_size=200), st.sampled_from(sorted(secret_values(ENV))))
def test_a_secret_value_never_survives_and_redacting_again_changes_nothing(
    text: str, secret: str
) -> None:
    secrets = secret_values(ENV)
    once = redact(f"{text}{secret}{text}", secrets)
    assert secret not in once
    assert redact(once, secrets) == once


@given(
    st.text(max_size=50),
    st.sampled_from(sorted(secret_values(ENV))),
    st.integers(min_value=4, max_value=20),
)
def test_a_piece_of_a_secret_left_at_a_cut_is_redacted(text: str, secret: str, size: int) -> None:
    """A tail or head cut out of a longer text (a check's last lines) may hold part of a
    secret at its edge: that part is redacted too."""
    size = min(size, len(secret) - 1)
    secrets = secret_values(ENV)
    for cut in (redact(secret[-size:] + text, secrets), redact(text + secret[:size], secrets)):
        for piece in range(MIN_PIECE, len(secret)):
            assert not cut.startswith(secret[-piece:])
            assert not cut.endswith(secret[:piece])
