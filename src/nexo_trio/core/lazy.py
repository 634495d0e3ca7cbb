"""Lazy package exports: a package names what it exports and where each name lives, and a
name's module is imported on first use (so ``import nexo_trio`` loads nothing heavy, and the
permission MCP server, spawned every turn, pays only for what it imports)."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(
    package: str, namespace: dict[str, Any], exports: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of ``package``: ``exports`` maps each exported
    name to the module that defines it (``"name"`` or ``"module:attribute"`` to rename)."""

    def getattr_(name: str) -> Any:
        target = exports.get(name)
        if target is None:
            # Also how ``from package import submodule`` finds one not yet loaded.
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module, _, attribute = target.partition(":")
        value = getattr(importlib.import_module(module), attribute or name)
        namespace[name] = value  # later lookups skip this function
        return value

    def dir_() -> list[str]:
        return sorted(set(namespace) | set(exports))

    return getattr_, dir_
