"""Budgets hold inside a turn (issue 12), through ``nexo-trio run`` with the fake claude.

* wall time: a turn never outlasts what is left of ``max_wall_time``; reaching it ends the
  goal ``budget_exhausted`` on ``wall_time`` within ``kill_grace``, and the turn it stopped
  is not retried;
* consecutive denials: counted per decision, the turn is stopped at the limit;
* tokens and cost: counted from each assistant frame as the turn goes, so a turn crossing
  ``max_tokens`` or ``max_cost_usd`` is stopped then, and a turn killed before its result
  still counts what it spent (its cost estimated from the price table).

The fake's assistant frames report 100 input and 10 output tokens unless told otherwise; its
model is claude-sonnet-4-5 ($3 input, $15 output per million tokens).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from nexo_trio.testing import hang, init, result, text, tool_use, turn
from nexo_trio.testing.scenario import Step, exit_with, ignore_sigterm, kill_self, sleep
from tests.cli.helpers import SIGNAL_STOPS, Setup, invoke, json_lines, make_setup, single_json

KILL_GRACE = 2.0  # make_setup's
SONNET_IN, SONNET_OUT = 3.0 / 1e6, 15.0 / 1e6
"""Dollars per token of the fake's model (the price table's claude-sonnet-4-5)."""


def run_goal(s: Setup, budget: dict[str, Any]) -> tuple[dict[str, Any], float]:
    """``nexo-trio run --json`` of goal g1 with ``budget``: its outcome and how long it took."""
    started = time.monotonic()
    r = invoke("run", s.goal(budget=budget), "--config", s.config, "--json")
    took = time.monotonic() - started
    assert r.exit_code == 1, r.output
    assert "Traceback" not in r.output
    return single_json(r.stdout), took


def ledger(s: Setup, kind: str) -> list[dict[str, Any]]:
    """The data of goal g1's recorded events of ``kind``."""
    r = invoke("events", "g1", "--state-dir", s.state_dir, "--json")
    assert r.exit_code == 0, r.output
    return [row["data"] for row in json_lines(r.stdout) if row["kind"] == kind]


def tokens(data: dict[str, Any]) -> int:
    usage = data["usage"]
    return sum(
        usage[key]
        for key in (
            "input_tokens",
            "output_tokens",
            "cache_read_input_tokens",
            "cache_creation_input_tokens",
        )
    )


@pytest.mark.parametrize("stubborn", [False, True], ids=["stops-on-sigterm", "ignores-sigterm"])
def test_a_wall_time_budget_stops_a_hanging_turn_in_time(tmp_path: Path, stubborn: bool) -> None:
    """A 3 s wall-time budget and a turn that hangs (with a 15 s turn_timeout): the goal
    ends on the wall-time budget after about 3 s, and at most kill_grace later for a CLI
    that ignores SIGTERM; the turn is counted once, not retried (nor given up on: with no
    retries left it would otherwise escalate)."""
    steps: list[Step] = [init(), text("working")]
    if stubborn:
        steps.append(ignore_sigterm())
    steps.append(hang())
    replay = {"max_retries": 0 if stubborn else 3}
    s = make_setup(tmp_path, [turn(*steps)] * 3, config={"turn_timeout": "15s", "replay": replay})
    data, took = run_goal(s, {"max_turns": 5, "max_wall_time": "3s"})

    assert data["outcome"]["kind"] == "budget_exhausted"
    assert data["outcome"]["axis"] == "wall_time"
    bound = 3.0 + (KILL_GRACE if stubborn else 0.0) + 1.5
    assert 3.0 <= data["usage"]["wall_time_s"] < bound
    assert took < bound + 2.0  # the CLI's own start and end included
    assert data["total_turns"] == 1
    assert len(s.fake.invocations()) == 1
    (completed,) = ledger(s, "attempt_completed")
    assert completed["cause"] == "timeout"
    assert completed["usage"]["input_tokens"] == 100  # what it spent: its one text
    (judged,) = ledger(s, "replay_decided")
    assert judged["action"] == "proceed"
    assert judged["reason"].startswith("the wall-time budget ran out during the turn")
    assert ledger(s, "escalated") == []


@pytest.mark.parametrize("stubborn", [False, True], ids=["stops-on-sigterm", "ignores-sigterm"])
def test_a_two_denial_budget_stops_the_turn_at_the_second_denial(
    tmp_path: Path, stubborn: bool
) -> None:
    """Every call is denied (``deny_all``); the turn asks for four. It is stopped at the
    second denial: a call that comes in while it stops is refused as ``cancelled``, never
    run, and is not a third denial (the gate's side of that race, certain, is in
    tests/faults/test_goal_faults.py and tests/core/test_live_spend.py)."""
    calls = [tool_use("Bash", {"command": f"touch {name}.txt"}) for name in "abcd"]
    steps: list[Step] = [init(), *calls, text("I could not."), result("No.")]
    if stubborn:
        steps.insert(1, ignore_sigterm())
    # A stubborn CLI is about SIGTERM: the MCP transport's stop (stdio interrupts first).
    transport = "mcp" if stubborn else "stdio"
    permission = {"decider": "deny_all", "transport": transport}
    s = make_setup(tmp_path, [turn(*steps)] * 2, config={"permission": permission})
    data, _ = run_goal(s, {"max_turns": 5, "max_consecutive_denies": 2})

    assert data["outcome"]["kind"] == "budget_exhausted"
    assert data["outcome"]["axis"] == "consecutive_denies"
    assert data["outcome"]["reason"] == "max consecutive denials reached: 2 of 2"
    assert data["total_turns"] == 1
    assert len(s.fake.invocations()) == 1
    outcomes = [d["outcome"] for d in ledger(s, "decision_made")]
    assert outcomes[:2] == ["deny", "deny"]
    # A call asked before the stop reached the CLI (its permission server goes with it).
    assert set(outcomes[2:]) <= {"cancelled"}
    assert data["decisions"] == {"allowed": 0, "denied": len(outcomes)}
    workspace = s.root / "goals" / "ws-g1"
    assert not any(workspace.glob("*.txt"))


@pytest.mark.parametrize(
    ("budget", "axis", "usage"),
    [
        ({"max_tokens": 1000}, "tokens", {"input_tokens": 600}),
        ({"max_cost_usd": 0.02}, "cost", {"output_tokens": 1000}),
    ],
)
def test_a_turn_whose_assistant_frames_cross_a_budget_is_stopped_then_and_counted(
    tmp_path: Path, budget: dict[str, Any], axis: str, usage: dict[str, int]
) -> None:
    """Two messages, each alone under the budget, both over it: the turn is stopped at the
    second (it would hang until its 30 s timeout), and what it spent is the goal's."""
    frames = [init(), text("one", usage=usage), sleep(0.3), text("two", usage=usage), hang()]
    s = make_setup(tmp_path, [turn(*frames)] * 2, config=SIGNAL_STOPS)
    data, took = run_goal(s, {"max_turns": 5, **budget})

    assert data["outcome"]["kind"] == "budget_exhausted"
    assert data["outcome"]["axis"] == axis
    assert took < 10
    assert data["total_turns"] == 1
    assert len(s.fake.invocations()) == 1
    message = {"input_tokens": 100, "output_tokens": 10, **usage}
    spent_tokens = 2 * (message["input_tokens"] + message["output_tokens"])
    spent_cost = 2 * (message["input_tokens"] * SONNET_IN + message["output_tokens"] * SONNET_OUT)
    assert tokens(data) == spent_tokens
    assert data["usage"]["cost_usd"] == pytest.approx(spent_cost)
    (completed,) = ledger(s, "attempt_completed")
    assert (completed["kind"], completed["reason"]) == ("cancelled", "stop requested")
    assert "SIGTERM" in completed["stop_actions"]
    assert completed["cost_usd"] == pytest.approx(spent_cost)


def test_a_stopped_turns_result_replaces_its_estimate_and_is_counted_once(
    tmp_path: Path,
) -> None:
    """The turn crosses max_tokens and is asked to stop, but (ignoring SIGTERM) prints its
    result frame: the result's figures are the turn's, counted once."""
    frames = [
        init(),
        ignore_sigterm(),
        text("one", usage={"input_tokens": 600}),
        text("two", usage={"input_tokens": 600}),
        sleep(0.5),
        text("Done."),
        result("Done.", usage={"input_tokens": 1000, "output_tokens": 300}, cost_usd=0.5),
    ]
    s = make_setup(tmp_path, [turn(*frames)] * 2, config=SIGNAL_STOPS)
    data, _ = run_goal(s, {"max_turns": 5, "max_tokens": 1000})

    assert (data["outcome"]["kind"], data["outcome"]["axis"]) == ("budget_exhausted", "tokens")
    assert data["outcome"]["reason"] == "max tokens reached: 1300 of 1000"
    assert tokens(data) == 1300
    assert data["usage"]["cost_usd"] == pytest.approx(0.5)
    assert len(s.fake.invocations()) == 1


@pytest.mark.parametrize("end", [kill_self("SIGKILL"), exit_with(1)], ids=["killed", "crashed"])
def test_a_turn_that_dies_before_its_result_still_counts_what_it_spent(
    tmp_path: Path, end: Step
) -> None:
    """No result frame: the outcome JSON (and the ledger) has the assistant frames' usage
    and their estimated cost."""
    frames = [init(), text("half way", usage={"input_tokens": 2000, "output_tokens": 500}), end]
    s = make_setup(tmp_path, [turn(*frames)] * 2, config=SIGNAL_STOPS)
    data, _ = run_goal(s, {"max_turns": 1})

    assert (data["outcome"]["kind"], data["outcome"]["axis"]) == ("budget_exhausted", "turns")
    assert data["usage"]["input_tokens"] == 2000
    assert data["usage"]["output_tokens"] == 500
    estimate = 2000 * SONNET_IN + 500 * SONNET_OUT
    assert data["usage"]["cost_usd"] == pytest.approx(estimate)
    (completed,) = ledger(s, "attempt_completed")
    assert completed["cause"] in ("interrupted", "exit_error")
    assert completed["usage"]["input_tokens"] == 2000
    assert completed["cost_usd"] == pytest.approx(estimate)
