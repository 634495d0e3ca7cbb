"""The README's Performance table is the benchmark suite's latest full run
(``benchmarks/results/latest.md``, copied by ``python benchmarks/run.py --readme``), and that
run names its machine, versions and date and has a row for each of the suite's benchmarks."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
LATEST = ROOT / "benchmarks" / "results" / "latest.md"
START, END = "<!-- bench:start -->", "<!-- bench:end -->"


def readme_block() -> str:
    text = README.read_text(encoding="utf-8")
    assert text.count(START) == 1, START
    assert text.count(END) == 1, END
    return text.split(START, 1)[1].split(END, 1)[0].strip()


def latest_block() -> str:
    # As benchmarks/run.py's results_block: the file without its heading and command line.
    return LATEST.read_text(encoding="utf-8").split("\n\n", 2)[2].strip()


def test_the_readme_shows_the_latest_results() -> None:
    assert readme_block() == latest_block(), "run `python benchmarks/run.py --readme`"


def test_the_latest_results_say_where_and_when_they_were_measured() -> None:
    block = latest_block()
    for bullet in ("- date: ", "- nexo-trio: ", "- machine: ", "- Python ", "claude-agent-sdk"):
        assert bullet in block, bullet


def test_every_benchmark_of_the_suite_has_rows() -> None:
    table = [line for line in latest_block().splitlines() if line.startswith("| ")]
    groups = {line.split("|")[1].strip() for line in table[1:]}
    for group in ("stream", "memory", "turn", "gate", "goals", "store", "workspace", "start-up"):
        assert group in groups, group
