"""The permission request's pure helpers: the CLI's note for deciders, the input digest."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from nexo_trio.core.permission import (
    CLI_NOTE_CHARS,
    PermissionRequest,
    cli_note,
    input_digest,
)


@given(path=st.one_of(st.none(), st.text()), reason=st.one_of(st.none(), st.text()))
def test_the_cli_note_says_what_the_cli_said_clipped(path: str | None, reason: str | None) -> None:
    """The note names the path and the reason when the CLI gave them, each clipped; it is
    ``None`` when the CLI said nothing."""
    note = cli_note(PermissionRequest("g", "Bash", {}, blocked_path=path, cli_reason=reason))
    if not path and not reason:
        assert note is None
        return
    assert note is not None
    if path:
        assert f"it stopped at the path {path[:CLI_NOTE_CHARS]}" in note
    if reason:
        assert note.endswith(f"it says: {reason[:CLI_NOTE_CHARS]}")
    assert len(note) <= 2 * CLI_NOTE_CHARS + 50


@given(
    tool=st.text(max_size=20),
    value=st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=10),
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
        ),
        max_leaves=10,
    ),
)
def test_the_digest_is_stable_and_ignores_key_order(tool: str, value: object) -> None:
    one = {"a": value, "b": 1}
    other = {"b": 1, "a": value}
    assert input_digest(tool, one) == input_digest(tool, other)
    assert len(input_digest(tool, one)) == 16
