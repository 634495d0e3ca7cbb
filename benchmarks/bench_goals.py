"""Many goals in one orchestrator process, driven by the scripted fake ``claude``.

Rows:

- **100 goals x 5 turns**, all submitted at once with ``max_concurrent_goals`` 100 (100
  concurrent goals): wall time, the orchestrator's share of the CPU, and failures. Each
  turn is a whole fake CLI run: the fake ``claude`` (:mod:`nexo_trio.testing`) spawns the
  permission MCP server (``nexo-trio permission-mcp``) as the real CLI would, asks it about
  one ``Bash`` call (``allow_all`` decider: the gate's round trip and ledger write, not the
  rules), runs it (it adds one to ``n.txt``) and claims done; the goal's acceptance wants
  ``n.txt`` to say 5, so each goal takes exactly 5 turns. The CPU share is the orchestrator
  process's own CPU time over its own plus its children's (the fake CLIs, their MCP
  servers, the shells): the fake CLI is far cheaper than the real one, so this share is an
  upper bound of the real share.
- **1,000 goals submitted at once** (``start_goal`` of each called concurrently) with
  ``max_concurrent_goals`` 16 and 300: wall time and failures (a ``start_goal`` that
  raised, or a goal not ``done``; target 0: an overload queues, never fails). One turn per
  goal, played by the suite's stdlib-only fake CLI (:mod:`benchmarks.fake_cli`, ``python
  -S``: init with the permission server reported connected, a text, a success result), so
  that 300 concurrent turns fit the machine's memory and the rows the time budget; the
  goal's ``file_match`` check passes on a file its workspace already has.

A driver is this file run with ``--drive SPEC.json`` (one orchestrator process): it runs
the goals of the spec and prints one JSON line of figures (and the reasons of failures).
``--profile OUT.prof`` there writes a cProfile (CPU time of the event loop's thread) of the
orchestrator process.
"""

from __future__ import annotations

import collections
import cProfile
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from benchmarks.suite import Row, Stat, interleave
from nexo_trio import Budget, Config, FileMatchCheck, Goal, Orchestrator
from nexo_trio.core.settings import ClaudeSettings, PermissionSettings, SandboxSettings
from nexo_trio.gate.mcp_config import SERVER_NAME
from nexo_trio.testing import FakeClaude, bash, init, result, text, turn

ROOT = Path(__file__).resolve().parent.parent
FAKE_CLI = Path(__file__).resolve().with_name("fake_cli.py")
INCREMENT = "echo $(( $(cat n.txt 2>/dev/null || echo 0) + 1 )) > n.txt"
CPU_TARGET = 0.05
"""The orchestrator's share of the CPU at 100 concurrent goals (issue 13)."""


def _spec(name: str, goals: int, turns: int, concurrency: int, *, gate: bool) -> dict[str, Any]:
    return {
        "name": name,
        "goals": goals,
        "turns": turns,
        "concurrency": concurrency,
        "gate": gate,
    }


def _frames(path: Path) -> None:
    """The stdout of one done turn of the suite's fake CLI: init, a text, a result."""
    session = "0b6c4a52-7d0e-4b8e-9a51-8a2b9c1d3e4f"
    usage = {
        "input_tokens": 100,
        "output_tokens": 10,
        "cache_read_input_tokens": 0,
        "cache_creation_input_tokens": 0,
    }
    frames: list[dict[str, Any]] = [
        {
            "type": "system",
            "subtype": "init",
            "cwd": "/",
            "session_id": session,
            "tools": ["Bash", "Read"],
            "mcp_servers": [{"name": SERVER_NAME, "status": "connected"}],
            "model": "claude-sonnet-4-5",
            "permissionMode": "default",
            "apiKeySource": "none",
            "claude_code_version": "2.1.332",
            "output_style": "default",
            "uuid": "7f0c9a3e-1b2d-4c5e-8f6a-9b0c1d2e3f40",
        },
        {
            "type": "assistant",
            "message": {
                "id": "msg_bench0001",
                "type": "message",
                "role": "assistant",
                "model": "claude-sonnet-4-5",
                "content": [{"type": "text", "text": "Done."}],
                "stop_reason": None,
                "usage": usage,
            },
            "parent_tool_use_id": None,
            "session_id": session,
            "uuid": "1a2b3c4d-5e6f-4a8b-9c0d-1e2f3a4b5c6d",
        },
        {
            "type": "result",
            "subtype": "success",
            "is_error": False,
            "duration_ms": 10,
            "num_turns": 1,
            "result": "Done.",
            "session_id": session,
            "total_cost_usd": 0.001,
            "usage": usage,
            "permission_denials": [],
            "terminal_reason": "completed",
            "api_error_status": None,
            "uuid": "2b3c4d5e-6f7a-4b9c-8d1e-2f3a4b5c6d7e",
        },
    ]
    path.write_bytes(b"".join(json.dumps(f).encode() + b"\n" for f in frames))


def _prepare(root: Path, spec: dict[str, Any]) -> None:
    """The fakes and workspaces of a spec's goals, under ``root/name``."""
    base = root / spec["name"]
    base.mkdir(parents=True, exist_ok=True)
    if not spec["gate"]:  # the suite's fake CLI, one launcher and one stream for all
        _frames(base / "frames.ndjson")
        launcher = base / "claude"
        launcher.write_text(f'#!/bin/sh\nexec {sys.executable} -S {FAKE_CLI} "$@"\n')
        launcher.chmod(0o755)
        for i in range(spec["goals"]):
            (base / "ws" / f"g{i:04d}").mkdir(parents=True)
        return
    one = turn(init(), bash(INCREMENT), text("Done."), result("Done.", cost_usd=0.001))
    turns = [one] * (spec["turns"] + 1)
    for i in range(spec["goals"]):
        FakeClaude.create(base / "fakes" / f"g{i:04d}", turns)
        (base / "ws" / f"g{i:04d}").mkdir(parents=True)


def _reset(root: Path, spec: dict[str, Any]) -> Path:
    """Fresh workspaces and fake records for another run of the spec; a fresh state dir."""
    base = root / spec["name"]
    for i in range(spec["goals"]):
        if spec["gate"]:
            (base / "ws" / f"g{i:04d}" / "n.txt").unlink(missing_ok=True)
            shutil.rmtree(base / "fakes" / f"g{i:04d}" / "state", ignore_errors=True)
            (base / "fakes" / f"g{i:04d}" / "state").mkdir()
        else:  # what the goal's check wants is there already
            (base / "ws" / f"g{i:04d}" / "n.txt").write_text("1\n")
    for old in base.glob("state-*"):
        shutil.rmtree(old, ignore_errors=True)
    shutil.rmtree(base / "roots", ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix="state-", dir=base))


def _drive(root: Path, state: Path, spec: dict[str, Any], profile: Path | None) -> None:
    """One orchestrator process: run the spec's goals, print the figures as JSON."""
    base = root / spec["name"]
    turns = int(spec["turns"])

    def env_of(goal: Goal) -> dict[str, str | None]:
        if not spec["gate"]:
            return {"NEXO_BENCH_FRAMES": str(base / "frames.ndjson")}
        fake = base / "fakes" / goal.id
        return {
            "NEXO_FAKE_CLAUDE_SCENARIO": str(fake / "scenario.json"),
            "NEXO_FAKE_CLAUDE_STATE": str(fake / "state"),
            "NEXO_FAKE_CLAUDE_MAX_LIFETIME": "600",
        }

    binary = base / "fakes" / "g0000" / "claude" if spec["gate"] else base / "claude"
    config = Config(
        claude=ClaudeSettings(binary=str(binary)),
        state_dir=str(state),
        workspace_root=str(base / "roots"),
        max_concurrent_goals=int(spec["concurrency"]),
        turn_timeout_s=600,
        kill_grace_s=2,
        permission=PermissionSettings(decider="allow_all"),
        sandbox=SandboxSettings(mode="none"),
    )
    goals = [
        Goal(
            id=f"g{i:04d}",
            description="Count.",
            acceptance=(FileMatchCheck(path="n.txt", pattern=f"^{turns}$"),),
            budget=Budget(max_turns=turns + 1),
            workspace=str(base / "ws" / f"g{i:04d}"),
        )
        for i in range(int(spec["goals"]))
    ]
    failures: collections.Counter[str] = collections.Counter()
    done = 0

    async def one(orch: Orchestrator, goal: Goal) -> None:
        nonlocal done
        try:
            handle = await orch.start_goal(goal)
        except Exception as exc:
            failures[f"start_goal raised {type(exc).__name__}: {str(exc)[-120:]}"] += 1
            return
        outcome = await handle.wait()
        if outcome.done:
            done += 1
        else:
            failures[f"{outcome.kind.value}: {(outcome.reason or '')[:120]}"] += 1

    async def main() -> None:
        async with Orchestrator(config, goal_env=env_of) as orch, trio.open_nursery() as nursery:
            for goal in goals:  # all at once
                nursery.start_soon(one, orch, goal)

    me0 = resource.getrusage(resource.RUSAGE_SELF)
    kids0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    if profile is None:
        trio.run(main)
    else:
        # The event loop's thread's own CPU time: wall time would charge it for waiting
        # on the GIL and the CPU (the worker threads' part is not in this profile).
        profiler = cProfile.Profile(time.thread_time)
        profiler.enable()
        trio.run(main)
        profiler.disable()
        profiler.dump_stats(profile)
    wall = time.perf_counter() - started
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_self = (me.ru_utime + me.ru_stime) - (me0.ru_utime + me0.ru_stime)
    cpu_children = (kids.ru_utime + kids.ru_stime) - (kids0.ru_utime + kids0.ru_stime)
    figures = {
        "wall": wall,
        "done": done,
        "failed": len(goals) - done,
        "failures": dict(failures),
        "cpu_self": cpu_self,
        "cpu_children": cpu_children,
        "max_rss_mib": me.ru_maxrss / 1024,
    }
    print(json.dumps(figures))


def run_spec(
    root: Path, spec: dict[str, Any], *, src: Path | None = None, profile: Path | None = None
) -> dict[str, Any]:
    """Run the spec's goals once in a fresh orchestrator process (on a fresh state dir);
    its figures. ``src`` puts another checkout's ``src`` first on the driver's path (a
    before/after comparison)."""
    state = _reset(root, spec)
    spec_file = root / f"{spec['name']}.json"
    spec_file.write_text(json.dumps(spec))
    command = [sys.executable, __file__, "--drive", str(root), str(state), str(spec_file)]
    if profile is not None:
        command += ["--profile", str(profile)]
    env = dict(os.environ)
    paths = [str(ROOT)] + ([str(src)] if src is not None else [])
    env["PYTHONPATH"] = os.pathsep.join([*paths[::-1], env.get("PYTHONPATH", "")]).rstrip(
        os.pathsep
    )
    out = subprocess.run(
        command, stdout=subprocess.PIPE, cwd=ROOT, env=env, timeout=1800, check=True
    ).stdout
    figures: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return figures


def _sizes(quick: bool) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], int]:
    if quick:
        return (
            _spec("turns", 8, 2, 8, gate=True),
            _spec("queue16", 40, 1, 4, gate=False),
            _spec("queue300", 40, 1, 30, gate=False),
            1,
        )
    return (
        _spec("turns", 100, 5, 100, gate=True),
        _spec("queue16", 1000, 1, 16, gate=False),
        _spec("queue300", 1000, 1, 300, gate=False),
        1,
    )


def rows(quick: bool = False) -> list[Row]:
    """The suite's rows: 100 goals x 5 turns (wall, orchestrator CPU share, failures) and
    1,000 goals submitted at once with max_concurrent_goals 16 and 300 (wall, failures)."""
    turns, queue16, queue300, rounds = _sizes(quick)
    specs = {spec["name"]: spec for spec in (turns, queue16, queue300)}
    seen: dict[str, list[dict[str, Any]]] = {name: [] for name in specs}
    with tempfile.TemporaryDirectory(prefix="nxb-goals-") as tmp:
        root = Path(tmp)
        for spec in specs.values():
            _prepare(root, spec)

        def variant(name: str) -> Any:
            def measure() -> float:
                figures = run_spec(root, specs[name])
                seen[name].append(figures)
                return float(figures["wall"])

            return measure

        interleave({name: variant(name) for name in specs}, rounds)

    def stat(name: str, key: str, scale: float = 1.0) -> Stat:
        return Stat.of([scale * float(r[key]) for r in seen[name]])

    def share(r: dict[str, Any]) -> float:
        return float(r["cpu_self"]) / max(1e-9, float(r["cpu_self"]) + float(r["cpu_children"]))

    def why(name: str) -> str:
        reasons: collections.Counter[str] = collections.Counter()
        for r in seen[name]:
            reasons.update(r["failures"])
        return "; ".join(f"{n}x {reason}" for reason, n in reasons.most_common(2))

    n_rounds = f"{rounds} round{'s' if rounds > 1 else ''} (slow rows)"
    label = f"{turns['goals']} goals x {turns['turns']} turns, {turns['concurrency']} concurrent"
    cpu = Stat.of([100 * share(r) for r in seen["turns"]])
    result_rows = [
        Row("goals", f"{label}: wall", "s", stat("turns", "wall"), better="lower", note=n_rounds),
        Row(
            "goals",
            f"{label}: orchestrator CPU share",
            "% of total CPU",
            cpu,
            better="lower",
            target="<= 5 % at 100 concurrent goals",
            met=cpu.median <= 100 * CPU_TARGET,
            note="own CPU / (own + fake CLIs, MCP servers, shells)",
        ),
        _failures_row("turns", label, seen["turns"], why("turns")),
    ]
    for name in ("queue16", "queue300"):
        spec = specs[name]
        at_once = f"{spec['goals']} goals at once, max_concurrent_goals {spec['concurrency']}"
        result_rows += [
            Row(
                "goals", f"{at_once}: wall", "s", stat(name, "wall"), better="lower", note=n_rounds
            ),
            _failures_row(name, at_once, seen[name], why(name)),
        ]
    return result_rows


def _failures_row(name: str, label: str, runs: list[dict[str, Any]], why: str) -> Row:
    failed = Stat.of([float(r["failed"]) for r in runs])
    return Row(
        "goals",
        f"{label}: failures",
        "goals",
        failed,
        better="lower",
        target="0 (overload queues, never fails)",
        met=failed.high == 0,
        note=why,
    )


if __name__ == "__main__":
    if len(sys.argv) >= 5 and sys.argv[1] == "--drive":
        profile_to = Path(sys.argv[6]) if sys.argv[5:6] == ["--profile"] else None
        _drive(
            Path(sys.argv[2]),
            Path(sys.argv[3]),
            json.loads(Path(sys.argv[4]).read_text()),
            profile_to,
        )
    else:
        from benchmarks.suite import markdown

        print(markdown(rows(quick="--quick" in sys.argv)))
