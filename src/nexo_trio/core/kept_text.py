"""What we keep of a text: secrets redacted, at most :data:`TEXT_CAP` characters.

Every goal event passes through :func:`kept_event` before it is recorded, folded into the
goal's state or shown to a subscriber, so what a child printed (a check running ``env``, a CLI
dumping its environment on failure, a 64 MiB result) is stored, printed and put into the next
prompt to the model redacted and bounded, and the live state and the state recovered from the
ledger are the same fold of the same texts. The whole text is in the turn's raw stdout
copy (``STATE/streams/GOAL/``, see ``engine/stream_copy.py``) and in the CLI's own session
transcript.
"""

from __future__ import annotations

import re
from typing import Any, Final, TypeVar

import attrs

from nexo_trio.core.redact import redact

TEXT_CAP: Final = 256 * 1024
"""The most characters of one text an event keeps."""

T = TypeVar("T")

_CUT = re.compile(r"\n\[\.\.\. [0-9]+ more characters not kept\]")
"""The note that ends a text cut to the cap (a text kept twice is cut once)."""


def kept_text(text: str, secrets: tuple[str, ...] = (), cap: int = TEXT_CAP) -> str:
    """``text`` redacted (see :func:`~nexo_trio.core.redact.redact`) and cut to ``cap``
    characters, saying how many more there were."""
    if len(text) <= cap:
        return redact(text, secrets)
    if _CUT.fullmatch(text, cap):  # kept before: an outcome made of kept events
        return redact(text[:cap], secrets) + text[cap:]
    # Cut first (redacting 64 MiB would hold the loop for seconds), with room for the longest
    # secret so one that straddles the cut is still whole and redacted, then cut again.
    margin = max((len(s) for s in secrets), default=0)
    head = redact(text[: cap + margin], secrets)[:cap]
    return redact(head, secrets) + f"\n[... {len(text) - cap} more characters not kept]"


def kept_event(
    record: T,
    secrets: tuple[str, ...] = (),
    cap: int = TEXT_CAP,
    changes: dict[str, Any] | None = None,
) -> T:
    """``record`` (an attrs record, nested ones included) with every text :func:`kept_text`;
    the same object when nothing changes. ``changes`` (``__init__`` arguments of ``record``,
    such as a stamp: not texts, made as given) are made at the same time, in the one new
    record."""
    if changes is None:
        return _kept(record, secrets, cap)  # type: ignore[no-any-return]
    return _kept_record(record, secrets, cap, changes)  # type: ignore[no-any-return]


_SCALARS: Final = frozenset({int, float, bool, type(None)})
"""Types with no text in them: kept as they are, without a look inside."""


def _kept(value: Any, secrets: tuple[str, ...], cap: int) -> Any:
    # Exact types: a str enum or a named tuple is not a text or a sequence to rebuild.
    kind = type(value)
    if kind is str:
        text = redact(value, secrets) if len(value) <= cap else kept_text(value, secrets, cap)
        return value if text == value else text
    if kind in _SCALARS:
        return value
    if kind is tuple or kind is list:
        items = [_kept(item, secrets, cap) for item in value]
        if all(new is old for new, old in zip(items, value, strict=True)):
            return value
        return kind(items)
    if kind is dict:
        entries = {key: _kept(item, secrets, cap) for key, item in value.items()}
        if all(entries[key] is item for key, item in value.items()):
            return value
        return entries
    if attrs.has(kind):
        return _kept_record(value, secrets, cap, None)
    return value


def _kept_record(
    value: Any, secrets: tuple[str, ...], cap: int, given: dict[str, Any] | None
) -> Any:
    """An attrs record kept, with the ``given`` changes made too (one new record at most)."""
    changes: dict[str, Any] = {} if given is None else dict(given)
    for name, alias in _fields(type(value)):
        if alias in changes:
            continue  # given
        old = getattr(value, name)
        new = _kept(old, secrets, cap)
        if new is not old:
            changes[alias] = new
    return attrs.evolve(value, **changes) if changes else value


_FIELDS: dict[type, tuple[tuple[str, str], ...]] = {}


def _fields(kind: type) -> tuple[tuple[str, str], ...]:
    """(name, ``__init__`` argument) of each field of an attrs class (looked up once)."""
    found = _FIELDS.get(kind)
    if found is None:
        found = _FIELDS[kind] = tuple(
            (field.name, field.alias or field.name) for field in attrs.fields(kind)
        )
    return found
