"""``docs/reference.md`` names every goal key, config key, check kind and event kind the code
has, and every exit code: a key added without its line in the reference fails here."""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any, get_args

import attrs
import pytest

from nexo_trio.core.goal import Criterion, GitWorkspace, Goal
from nexo_trio.core.goal_events import GoalEvent, event_kind
from nexo_trio.core.settings import Config
from nexo_trio.wire.files import _CRITERION_KINDS, _yaml_key

REFERENCE = Path(__file__).resolve().parents[2] / "docs" / "reference.md"


def keys(cls: type, prefix: str = "") -> list[str]:
    """The dotted YAML keys of an attrs class, nested records expanded."""
    hints = typing.get_type_hints(cls)
    found = []
    for field in attrs.fields(cls):
        key = prefix + _yaml_key(cls, field.name)
        kind: Any = hints[field.name]
        found.append(key)
        if attrs.has(kind):
            found += keys(kind, key + ".")
    return found


def mentioned(name: str) -> bool:
    return f"`{name}`" in REFERENCE.read_text(encoding="utf-8")


@pytest.mark.parametrize("key", keys(Config))
def test_every_config_key(key: str) -> None:
    assert mentioned(key), f"docs/reference.md does not name the config key `{key}`"


@pytest.mark.parametrize("key", [*keys(Goal), *(f"workspace.{k}" for k in keys(GitWorkspace))])
def test_every_goal_key(key: str) -> None:
    assert mentioned(key), f"docs/reference.md does not name the goal key `{key}`"


@pytest.mark.parametrize("kind", sorted(_CRITERION_KINDS))
def test_every_check_kind_and_its_keys(kind: str) -> None:
    assert mentioned(kind)
    for key in keys(_CRITERION_KINDS[kind]):
        assert mentioned(f"{kind}.{key}"), f"docs/reference.md does not name `{kind}.{key}`"
    assert len(_CRITERION_KINDS) == len(get_args(Criterion))


@pytest.mark.parametrize("kind", sorted(event_kind(cls) for cls in get_args(GoalEvent)))
def test_every_event_kind(kind: str) -> None:
    assert mentioned(kind), f"docs/reference.md does not name the event kind `{kind}`"


@pytest.mark.parametrize("code", ["0", "1", "2", "3", "130"])
def test_every_exit_code(code: str) -> None:
    assert f"| {code} |" in REFERENCE.read_text(encoding="utf-8")


def test_every_command() -> None:
    from nexo_trio.cli.main import _COMMANDS

    text = REFERENCE.read_text(encoding="utf-8")
    for name in _COMMANDS:
        assert f"`nexo-trio {name}" in text or f"`{name}" in text, f"no line for {name}"
