"""Every YAML block of the README loads as the goal file or config file it shows, with the
commented-out alternatives too, and every ``nexo-trio`` command its shell blocks name
exists with the options they show."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from nexo_trio.cli import main
from nexo_trio.wire.files import parse_config, parse_goal

README = Path(__file__).resolve().parents[2] / "README.md"
BLOCKS = re.findall(r"```(yaml|sh)\n(.*?)```", README.read_text(encoding="utf-8"), re.DOTALL)


def yaml_blocks() -> list[str]:
    return [body for kind, body in BLOCKS if kind == "yaml"]


def uncommented(block: str) -> list[str]:
    """The block as written, and the block with each commented-out alternative line
    (``# key: value`` at the start of a line) in place of the line of the same key."""
    variants = [block]
    for line in block.splitlines():
        alternative = re.match(r"^(\s*)# ([a-z_]+):(.*)$", line)
        if alternative is None:
            continue
        indent, key, rest = alternative.groups()
        replaced = re.sub(
            rf"^{indent}{key}:.*$", f"{indent}{key}:{rest}", block, count=1, flags=re.MULTILINE
        )
        variants.append(replaced if replaced != block else f"{block}\n{indent}{key}:{rest}\n")
    return variants


@pytest.mark.parametrize("block", yaml_blocks())
def test_every_yaml_block_loads(block: str) -> None:
    for variant in uncommented(block):
        if re.search(r"^description:", variant, re.MULTILINE):
            parse_goal(variant, source="README goal", default_id="readme")
        else:
            parse_config(variant, source="README config", environ={})


def commands() -> list[list[str]]:
    found = []
    for kind, body in BLOCKS:
        if kind != "sh":
            continue
        for line in body.splitlines():
            command = line.split("#", 1)[0].strip()
            if command.startswith("nexo-trio "):
                found.append(command.split()[1:])
    return found


@pytest.mark.parametrize("argv", commands(), ids=lambda argv: " ".join(argv[:2]))
def test_every_command_shown_exists_with_its_options(argv: list[str]) -> None:
    name = argv[0]
    shown = CliRunner().invoke(main, [name, "--help"])
    assert shown.exit_code == 0, f"nexo-trio {name}: {shown.output}"
    for option in re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", " ".join(argv[1:])):
        assert option in shown.output, f"nexo-trio {name} has no {option}"
