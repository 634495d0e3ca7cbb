"""The layers of DESIGN.md §2 and what each may import: imports only point down.

::

    core  <-  wire  <-  engine, gate, store  <-  orchestrator  <-  cli
    testing: core, wire, trio (the public test kit)

``nexo_trio.core`` is sans-IO: stdlib and attrs only, and importing it loads no I/O module.
Every module of every layer is read (its whole syntax tree, lazy imports in functions
included), so a layer cannot reach up or sideways by an import tucked inside a function.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import click
import pytest

import nexo_trio

PACKAGE = Path(nexo_trio.__file__).parent
STDLIB = sys.stdlib_module_names

LAYERS: dict[str, tuple[set[str], set[str]]] = {
    # layer: (nexo_trio layers it may import, third-party packages it may import)
    "core": (set(), {"attrs"}),
    "wire": ({"core"}, {"attrs", "cattrs", "orjson", "yaml"}),
    "engine": ({"core", "wire"}, {"attrs", "trio", "psutil"}),
    "gate": ({"core", "wire"}, {"attrs", "trio", "anthropic"}),
    # outcome: trio's own result type, which its worker threads deliver (start_thread_soon).
    # psycopg: the PostgreSQL store's driver (the optional `postgres` extra), as sqlite3 is
    # the SQLite store's.
    "store": ({"core", "wire"}, {"attrs", "trio", "outcome", "psycopg"}),
    "orchestrator": ({"core", "wire", "engine", "gate", "store"}, {"attrs", "trio"}),
    "cli": (
        {"core", "wire", "engine", "gate", "store", "orchestrator", "testing"},
        {"attrs", "trio", "click", "rich", "psutil"},
    ),
    "testing": ({"core", "wire"}, {"attrs", "trio"}),
}
TOP_LEVEL = {"__init__.py"}
"""Package files outside the layers: ``nexo_trio/__init__.py`` (lazy re-exports of all)."""


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def layer_of(path: Path) -> str | None:
    parts = path.relative_to(PACKAGE).parts
    return parts[0] if len(parts) > 1 else None


def imports(path: Path) -> list[str]:
    """Every module ``path`` imports, relative imports resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = ".".join(("nexo_trio", *path.relative_to(PACKAGE).parent.parts))
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                found.append(f"{base}.{node.module}" if node.module else base)
            else:
                assert node.module is not None
                found.append(node.module)
    return found


def test_every_module_is_in_a_layer() -> None:
    unplaced = [
        p.relative_to(PACKAGE) for p in modules() if layer_of(p) is None and p.name not in TOP_LEVEL
    ]
    assert unplaced == []
    assert {layer_of(p) for p in modules()} - {None} == set(LAYERS)


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down(path: Path) -> None:
    layer = layer_of(path)
    if layer is None:
        return  # nexo_trio/__init__.py re-exports every layer, lazily
    inner, outer = LAYERS[layer]
    for name in imports(path):
        root = name.split(".")[0]
        if root == "nexo_trio":
            parts = name.split(".")
            target = parts[1] if len(parts) > 1 else None
            # The package root only for its version (nexo_trio.__version__); the core's lazy
            # export helper is core.
            if target is None:
                continue
            assert target == layer or target in inner, (
                f"{path.relative_to(PACKAGE)} ({layer}) imports {name}: {target} is not below it"
            )
        elif root not in STDLIB and root != "__future__":
            assert root in outer, f"{path.relative_to(PACKAGE)} ({layer}) imports {name}"


def test_importing_core_loads_no_io_module() -> None:
    code = (
        "import importlib, json, pkgutil, sys\n"
        "import nexo_trio.core\n"
        "for m in pkgutil.walk_packages(nexo_trio.core.__path__, 'nexo_trio.core.'):\n"
        "    importlib.import_module(m.name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True, timeout=30)
    loaded = set(json.loads(proc.stdout))
    assert "nexo_trio.core.turn" in loaded  # the probe did import the core
    assert "nexo_trio.core.goal_machine" in loaded
    forbidden = ("trio", "asyncio", "subprocess", "socket", "sqlite3", "selectors", "cattrs")
    leaked = sorted(m for m in loaded if m.split(".")[0] in forbidden)
    assert leaked == []


def test_importing_nexo_trio_is_lazy() -> None:
    code = (
        "import json, sys, nexo_trio, nexo_trio.testing\nprint(json.dumps(sorted(sys.modules)))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True, timeout=30)
    loaded = set(json.loads(proc.stdout))
    assert not {m for m in loaded if m.split(".")[0] in ("trio", "attrs", "cattrs", "click")}


def test_the_public_namespace_has_what_a_user_embeds_with() -> None:
    from nexo_trio import testing

    wanted = {
        "Orchestrator", "GoalHandle", "Goal", "Budget", "ShellCheck", "FileMatchCheck",
        "CustomCheck", "Config", "ClaudeSettings", "PermissionSettings", "LlmSettings",
        "ReplaySettings", "StuckSettings", "CompactPolicy", "GoalOutcome", "GoalEndKind",
        "GoalStarted", "AttemptCompleted", "GoalCompleted", "DecisionMade", "Decider",
        "Decision", "PermissionRequest", "AllowAll", "DenyAll", "RulesDecider", "Chain",
        "SessionCache", "GuardedDecider", "LlmDecider", "load_goal", "load_config",
        "run_turn", "ClaudeCommand", "TurnResult", "TurnOutcome", "reduce", "classify",
    }  # fmt: skip
    assert wanted <= set(nexo_trio.__all__)
    for name in nexo_trio.__all__:
        assert getattr(nexo_trio, name) is not None, name
    assert {"FakeClaude", "ScriptedMessagesAPI", "Reply", "turn", "bash"} <= set(testing.__all__)
    for name in testing.__all__:
        assert getattr(testing, name) is not None, name


def test_the_help_listing_imports_no_command_module() -> None:
    code = (
        "import json, sys\n"
        "from nexo_trio.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "sys.stderr.write(json.dumps(sorted(sys.modules)))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True, timeout=30)
    loaded = set(json.loads(proc.stderr))
    assert b"Commands:" in proc.stdout
    assert not {m for m in loaded if m.split(".")[0] in ("trio", "rich", "attrs", "cattrs")}
    imported = {m for m in loaded if m.startswith("nexo_trio.")}
    assert imported <= {
        "nexo_trio.cli",
        "nexo_trio.cli.main",
        "nexo_trio.core",
        "nexo_trio.core.lazy",
    }


def test_every_command_has_its_line_in_the_listing() -> None:
    from nexo_trio.cli.main import _COMMANDS, main

    for name, (_, _, summary) in _COMMANDS.items():
        command = main.get_command(click.Context(main), name)
        assert command is not None, name
        assert summary.strip(), name
        assert len(summary) <= 60, name
        assert command.get_short_help_str() == summary
