"""nexo_trio.core stays sans-IO: stdlib and attrs only, no trio, no I/O modules."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import nexo_trio.core

CORE = Path(nexo_trio.core.__file__).parent
FORBIDDEN = ("trio", "asyncio", "subprocess", "socket", "sqlite3", "selectors")
ALLOWED_ROOTS = sys.stdlib_module_names | {"attrs", "nexo_trio"}


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
    leaked = sorted(m for m in loaded if m.split(".")[0] in FORBIDDEN)
    assert leaked == []


def core_sources() -> list[Path]:
    return sorted(CORE.rglob("*.py"))


def test_core_has_sources() -> None:
    names = {p.name for p in core_sources()}
    assert {"__init__.py", "events.py", "framing.py", "outcome.py", "turn.py"} <= names


@pytest.mark.parametrize("path", core_sources(), ids=lambda p: p.name)
def test_core_imports_only_stdlib_attrs_and_core(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    imported: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: stays inside nexo_trio.core only if one level up
                assert node.level == 1, f"{path.name}: relative import leaves the core"
                continue
            assert node.module is not None
            imported.append(node.module)
    assert imported  # the walk saw the imports
    for name in imported:
        root = name.split(".")[0]
        assert root in ALLOWED_ROOTS, f"{path.name} imports {name}"
        if root == "nexo_trio":
            assert name == "nexo_trio.core" or name.startswith("nexo_trio.core."), (
                f"{path.name} imports {name}, outside the core"
            )
