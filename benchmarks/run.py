"""Run the benchmark suite: one markdown table, printed and written with the machine, the
versions and the date to ``benchmarks/results/latest.md``.

``python benchmarks/run.py [--quick] [--out FILE] [NAME ...]`` runs the named benchmarks
(default: all, in the order of :data:`BENCHMARKS`). ``--quick`` runs each at tiny sizes: a
smoke run of the suite's code, whose figures mean nothing. ``--readme`` runs nothing: it
copies the table of ``benchmarks/results/latest.md`` into the README's Performance section
(between its ``bench:`` markers). Numbers, not pass/fail: the
machines are shared and noisy, so read the ratios.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import os
import platform
import sqlite3
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.suite import Row, markdown  # noqa: E402 (after the path is set)

BENCHMARKS = {
    "stream": "frames/s through a whole turn, 1k to 1M frames",
    "memory": "peak memory: a 1M-frame turn, one 64 MiB line",
    "turn": "the fixed cost of a 3-frame turn, with idle processes on the host",
    "gate": "permission decisions through the gate's socket, default decider + ledger",
    "goals": "many goals at once on one state dir",
    "store": "ledger appends",
    "queue": "the PostgreSQL goal queue: 1, 4 and 16 worker processes",
    "checkpoint": "git checkpoints of a 10k-file workspace",
    "mcp": "the permission MCP server's start-up",
    "transport": "one gated turn per permission transport: mcp vs stdio, real CLI offline",
    "startup": "import and --help",
}
"""Each name is ``benchmarks/bench_<name>.py``, whose ``rows(quick)`` gives its rows."""

LATEST = ROOT / "benchmarks" / "results" / "latest.md"
README = ROOT / "README.md"
START, END = "<!-- bench:start -->", "<!-- bench:end -->"
PACKAGES = ("trio", "attrs", "cattrs", "orjson", "claude-agent-sdk")


def _command(*argv: str) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except OSError as exc:
        return f"unavailable ({exc.strerror})"
    return done.stdout.strip() or done.stderr.strip()


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 2**20:.1f} GiB"
    except OSError:
        pass
    return "unknown"


def environment() -> str:
    """The machine, the versions and the date, as markdown bullets."""
    versions = []
    for package in PACKAGES:
        try:
            versions.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{package} not installed")
    commit = _command("git", "-C", str(ROOT), "rev-parse", "--short", "HEAD")
    dirty = _command("git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no")
    revision = f"{commit}{' (with uncommitted changes)' if dirty else ''}"
    return "\n".join(
        [
            f"- date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC",
            f"- nexo-trio: {metadata.version('nexo-trio')} at {revision}",
            f"- machine: {platform.machine()}, {os.cpu_count()} CPUs ({_cpu_model()}), "
            f"{_memory_gib()}, {platform.system()} {platform.release()}",
            f"- Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
            f"{_command('git', '--version')}",
            f"- {', '.join(versions)}",
        ]
    )


def run(names: list[str], *, quick: bool) -> tuple[list[Row], dict[str, float]]:
    """Every named benchmark's rows, and how long each took (s)."""
    rows: list[Row] = []
    took: dict[str, float] = {}
    for name in names:
        module = importlib.import_module(f"benchmarks.bench_{name}")
        print(f"== {name}: {BENCHMARKS[name]}", file=sys.stderr, flush=True)
        started = time.perf_counter()
        rows += module.rows(quick=quick)
        took[name] = time.perf_counter() - started
    return rows, took


def results_block(results: str) -> str:
    """What the README shows of a results file: its bullets and its table."""
    body = results.split("\n\n", 2)[2] if results.startswith("# ") else results
    return body.strip() + "\n"


def update_readme() -> None:
    """Put the latest results between the README's markers."""
    text = README.read_text()
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    block = results_block(LATEST.read_text())
    README.write_text(f"{head}{START}\n{block}{END}{tail}")


def main(argv: list[str]) -> int:
    """Run, print the table, write the results file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", metavar="NAME", help=", ".join(BENCHMARKS))
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument("--out", type=Path, default=None, help=f"default: {LATEST}")
    parser.add_argument("--readme", action="store_true", help="copy the latest into README.md")
    args = parser.parse_args(argv)
    if args.readme:
        update_readme()
        return 0
    unknown = [name for name in args.names if name not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}: choose from {', '.join(BENCHMARKS)}")
    names = args.names or list(BENCHMARKS)
    rows, took = run(names, quick=args.quick)
    table = markdown(rows)
    print(table)
    out = args.out or (None if args.quick else LATEST)
    if out is not None:
        timings = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in took.items())
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(
            f"# Benchmark results\n\n`python benchmarks/run.py {' '.join(argv)}`".rstrip()
            + "\n\n"
            + environment()
            + f"\n- took: {timings}\n\n"
            + "Ratios are ours divided by theirs, in the row's unit; `better` says which way "
            "is good. Figures are medians of interleaved rounds, (lowest-highest) after "
            "them.\n\n" + table
        )
        print(f"written to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
