"""Field validators for the core records (attrs), so a record built in Python is checked
exactly like one read from a file.

A failed check raises :class:`FieldError`, a ``ValueError`` naming the field and what is
wrong (``max_turns: must be at least 1, got 0``); the file reader turns the field into the
key path of the file (``goal.yaml: budget.max_turns: must be at least 1, got 0``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Collection
from typing import Any, Final

import attrs

Validator = Callable[[Any, "attrs.Attribute[Any]", Any], None]

GOAL_ID_MAX = 128
_GOAL_ID: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")
GOAL_ID_RULE: Final = (
    f"a non-empty string of at most {GOAL_ID_MAX} letters, digits, '.', '_' and '-', "
    "not starting with '.' or '-'"
)


class FieldError(ValueError):
    """A record field with a value it cannot take."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.field, self.message))


def shown(value: object) -> str:
    """How a message shows the value it got."""
    if isinstance(value, float) and math.isfinite(value):
        return f"{value:g}"
    if isinstance(value, str):
        return repr(value if len(value) <= 60 else value[:57] + "...")
    return repr(value)


def _fail(attribute: attrs.Attribute[Any], message: str) -> None:
    raise FieldError(attribute.name, message)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def at_least(minimum: int) -> Validator:
    """An integer of at least ``minimum``."""

    def check(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if not _is_int(value):
            _fail(attribute, f"must be an integer, got {shown(value)}")
        elif value < minimum:  # type: ignore[operator]
            _fail(attribute, f"must be at least {minimum}, got {value}")

    return check


def _number(attribute: attrs.Attribute[Any], value: object) -> float:
    if not _is_number(value):
        _fail(attribute, f"must be a number, got {shown(value)}")
    number = float(value)  # type: ignore[arg-type]
    if not math.isfinite(number):
        _fail(attribute, f"must be a finite number, got {shown(value)}")
    return number


def positive(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    """A finite number greater than 0."""
    if _number(attribute, value) <= 0:
        _fail(attribute, f"must be greater than 0, got {shown(value)}")


def positive_duration(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    """A finite number of seconds greater than 0."""
    if _number(attribute, value) <= 0:
        _fail(attribute, f"must be longer than 0 seconds, got {shown(value)}")


def non_negative_duration(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    """A finite number of seconds, 0 or more."""
    if _number(attribute, value) < 0:
        _fail(attribute, f"must not be negative, got {shown(value)}")


def fraction(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    """A number in (0, 1]."""
    if not 0 < _number(attribute, value) <= 1:
        _fail(attribute, f"must be greater than 0 and at most 1, got {shown(value)}")


def non_empty(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    """A string with something in it."""
    if not isinstance(value, str):
        _fail(attribute, f"must be a string, got {shown(value)}")
    elif not value.strip():
        _fail(attribute, "must not be empty")


def regex(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    """A valid Python regular expression."""
    if not isinstance(value, str):
        _fail(attribute, f"must be a string, got {shown(value)}")
        return
    try:
        re.compile(value)
    except re.error as exc:
        _fail(attribute, f"invalid regular expression {value!r}: {exc}")


def exit_code(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    """A process exit code, 0 to 255."""
    if not _is_int(value) or not 0 <= value <= 255:  # type: ignore[operator]
        _fail(attribute, f"expected an exit code from 0 to 255, got {shown(value)}")


def one_of(names: Collection[str]) -> Validator:
    """One of ``names``."""

    def check(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if value not in names or not isinstance(value, str):
            _fail(attribute, f"expected one of {', '.join(names)}, got {shown(value)}")

    return check


def each(inner: Validator) -> Validator:
    """Every item of a tuple passes ``inner``."""

    def check(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
        for item in value:  # type: ignore[attr-defined]
            inner(instance, attribute, item)

    return check


def optional(inner: Validator) -> Validator:
    """``None``, or a value that passes ``inner``."""

    def check(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if value is not None:
            inner(instance, attribute, value)

    return check


def goal_id_problem(value: object) -> str | None:
    """Why ``value`` cannot be a goal id (it names files and goes on command lines), or
    ``None`` if it can."""
    if (
        isinstance(value, str)
        and len(value) <= GOAL_ID_MAX
        and _GOAL_ID.fullmatch(value) is not None
    ):
        return None
    return f"must be {GOAL_ID_RULE}, got {shown(value)}"


def goal_id(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    """A goal id: a safe file name and argument (see :func:`goal_id_problem`)."""
    problem = goal_id_problem(value)
    if problem is not None:
        _fail(attribute, problem)
