"""A turn's spend as it goes, and the budgets it reaches mid-turn (pure, with hypothesis).

The turn reducer counts each API message once (the CLI prints several assistant frames for
one message, with the same id and usage), estimates the cost from the price table, and lets
the result frame's figures replace the estimate; the goal machine adds the running turn's
live spend to what it recorded, while that turn is open only.
"""

from __future__ import annotations

import random
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nexo_trio.core.budget import BudgetAxis, LiveSpend
from nexo_trio.core.events import (
    AssistantMessage,
    Cancelled,
    DeadlineHit,
    ModelUsage,
    ProcessExited,
    Result,
    Spawned,
    StdoutClosed,
    TextBlock,
    Usage,
)
from nexo_trio.core.goal import Budget
from nexo_trio.core.goal_events import (
    AttemptCompleted,
    AttemptStarted,
    DecisionMade,
    GoalEvent,
    ReplayDecided,
)
from nexo_trio.core.goal_machine import (
    Finish,
    Record,
    RunTurn,
    fold,
    live_spent,
    next_step,
    supersedes,
)
from nexo_trio.core.outcome import Cause, TurnKind
from nexo_trio.core.pricing import DEFAULT_PRICE, PRICES, estimate_cost, model_key, price_of
from nexo_trio.core.settings import ReplaySettings
from nexo_trio.core.turn import INITIAL_STATE, TurnState, classify, reduce, turn_spend
from tests.core.test_goal_machine import CONFIG, GOAL, T0, G, at, started, state_of

SOME = settings(max_examples=150, deadline=None)

counts = st.integers(min_value=0, max_value=300_000)
usages = st.builds(Usage, counts, counts, counts, counts)
models = st.sampled_from(
    ["claude-sonnet-4-5", "claude-opus-4-1-20250805", "claude-haiku-5-5", "mystery-model", None]
)


@st.composite
def messages(draw: st.DrawFn) -> list[tuple[str, str | None, list[Usage]]]:
    """Distinct API messages, each with the usages its frames reported (one or more)."""
    count = draw(st.integers(min_value=0, max_value=6))
    return [
        (f"msg_{i}", draw(models), draw(st.lists(usages, min_size=1, max_size=4)))
        for i in range(count)
    ]


def frames_of(
    found: list[tuple[str, str | None, list[Usage]]], shuffle: random.Random | None = None
) -> list[AssistantMessage]:
    frames = [
        AssistantMessage(
            session_id="s",
            message_id=message_id,
            model=model,
            content=(TextBlock(f"{message_id} part {n}"),),
            usage=usage,
        )
        for message_id, model, reported in found
        for n, usage in enumerate(reported)
    ]
    if shuffle is not None:
        shuffle.shuffle(frames)
    return frames


def fold_turn(events: list[Any]) -> TurnState:
    state = reduce(INITIAL_STATE, Spawned(pid=1))
    for event in events:
        state = reduce(state, event)
    return state


def largest(reported: list[Usage]) -> Usage:
    return Usage(*(max(getattr(u, f.name) for u in reported) for f in attrs.fields(Usage)))


def total(parts: list[Usage]) -> Usage:
    summed = Usage()
    for part in parts:
        summed = summed + part
    return summed


def at_least(big: Usage, small: Usage) -> bool:
    return all(getattr(big, f.name) >= getattr(small, f.name) for f in attrs.fields(Usage))


# --------------------------------------------------------------------------- the turn's spend


@SOME
@given(found=messages(), seed=st.integers())
def test_each_message_counts_once_however_many_frames_print_it(
    found: list[tuple[str, str | None, list[Usage]]], seed: int
) -> None:
    state = fold_turn(frames_of(found, random.Random(seed)))
    usage, cost = turn_spend(state)
    assert usage == total([largest(reported) for _, _, reported in found])
    expected = sum(estimate_cost(model, largest(reported)) for _, model, reported in found)
    assert cost == pytest.approx(expected)
    # The same frames printed again change nothing.
    again = fold_turn(frames_of(found) + frames_of(found))
    assert turn_spend(again)[0] == usage


@SOME
@given(found=messages())
def test_the_estimate_is_never_below_the_distinct_messages_usage(
    found: list[tuple[str, str | None, list[Usage]]],
) -> None:
    state = fold_turn(frames_of(found))
    usage, cost = turn_spend(state)
    latest = [reported[-1] for _, _, reported in found]
    assert at_least(usage, total(latest))
    floor = sum(estimate_cost(model, reported[-1]) for _, model, reported in found)
    assert cost >= floor * (1 - 1e-9)
    # Without a result frame (killed, timed out, cancelled), the outcome is the estimate.
    for end in ([DeadlineHit(5.0)], [Cancelled("stop requested")], []):
        ended = fold_turn(
            [*frames_of(found), *end, StdoutClosed(), ProcessExited(exit_code=None, signal=9)]
        )
        outcome = classify(ended)
        assert (outcome.usage, outcome.cost_usd) == (usage, cost)


def result_frame(usage: Usage, run_cost: float | None, cumulative: float | None) -> Result:
    since = None if run_cost is None else {"claude-sonnet-4-5": ModelUsage(cost_usd=run_cost)}
    return Result(
        session_id="s",
        subtype="success",
        result="Done.",
        usage=usage,
        total_cost_usd=cumulative,
        model_usage_since_last_result=since,
    )


@SOME
@given(
    found=messages(),
    reported=usages,
    run_cost=st.none() | st.floats(0, 50),
    cumulative=st.none() | st.floats(0, 500),
    later=messages(),
)
def test_the_result_frames_figures_replace_the_estimate(
    found: list[tuple[str, str | None, list[Usage]]],
    reported: Usage,
    run_cost: float | None,
    cumulative: float | None,
    later: list[tuple[str, str | None, list[Usage]]],
) -> None:
    before = fold_turn(frames_of(found))
    result = result_frame(reported, run_cost, cumulative)
    state = fold_turn([*frames_of(found), result, *frames_of(later)])
    usage, cost = turn_spend(state)
    assert usage == reported
    if run_cost is not None:
        assert cost == run_cost
    elif cumulative is not None:
        assert cost == cumulative  # an older CLI's only figure
    else:
        assert cost == before.estimated_cost_usd  # no cost in the result: the estimate
    outcome = classify(reduce(reduce(state, StdoutClosed()), ProcessExited(exit_code=0)))
    assert (outcome.kind, outcome.usage, outcome.cost_usd) == (TurnKind.CLAIMED_DONE, usage, cost)


def test_the_real_clis_repeated_frames_of_one_message_count_once() -> None:
    # Claude Code prints a message with a text and a tool call as two frames, each with the
    # message's id and usage; a third frame of the same message reports more output.
    usage = Usage(input_tokens=1000, output_tokens=1, cache_read_input_tokens=5000)
    grown = attrs.evolve(usage, output_tokens=120)
    frames = [
        AssistantMessage(message_id="msg_1", model="claude-sonnet-4-5", usage=usage),
        AssistantMessage(message_id="msg_1", model="claude-sonnet-4-5", usage=usage),
        AssistantMessage(message_id="msg_1", model="claude-sonnet-4-5", usage=grown),
        AssistantMessage(message_id="msg_2", model="claude-sonnet-4-5", usage=usage),
    ]
    state = fold_turn(frames)
    assert len(state.messages) == 2
    assert state.estimated_usage == grown + usage
    assert state.estimated_cost_usd == pytest.approx(
        (2000 * 3.0 + 121 * 15.0 + 10_000 * 0.30) / 1e6
    )


# --------------------------------------------------------------------------- the price table


@SOME
@given(usage=usages)
def test_an_unknown_model_is_never_priced_below_a_known_one(usage: Usage) -> None:
    unknown = estimate_cost("claude-nova-9", usage)
    assert price_of("claude-nova-9") == DEFAULT_PRICE
    assert all(price.cost(usage) <= unknown * (1 + 1e-9) for price in PRICES.values())


@pytest.mark.parametrize(
    ("model", "key"),
    [
        ("claude-sonnet-4-5-20250929", ("sonnet", 4, 5)),
        ("claude-opus-4-20250514", ("opus", 4, 0)),
        ("claude-opus-4-1@20250805", ("opus", 4, 1)),
        ("us.anthropic.claude-opus-4-5-20251101-v1:0", ("opus", 4, 5)),
        ("claude-3-5-haiku-20241022", ("haiku", 3, 5)),
        ("claude-3-opus-20240229", ("opus", 3, 0)),
        ("claude-haiku-5-5[1m]", ("haiku", 5, 5)),
        ("claude-sonnet-5", ("sonnet", 5, 0)),
        ("claude-fable-5-1", ("fable", 5, 1)),
        ("gpt-6", None),
    ],
)
def test_model_ids_name_their_family_and_version(
    model: str, key: tuple[str, int, int] | None
) -> None:
    assert model_key(model) == key


def test_prices_per_million_tokens_and_the_long_prompt_band() -> None:
    million = Usage(input_tokens=1_000_000)
    assert estimate_cost("claude-sonnet-4-5", Usage(input_tokens=100_000)) == pytest.approx(0.3)
    # Sonnet 4.5 charges a prompt over 200k tokens $6 instead of $3 per million input tokens.
    assert estimate_cost("claude-sonnet-4-5", million) == pytest.approx(6.0)
    assert estimate_cost("claude-opus-4-5", Usage(output_tokens=1_000_000)) == pytest.approx(25.0)
    assert estimate_cost("claude-haiku-4-5", Usage(cache_read_input_tokens=10**6)) == pytest.approx(
        0.10
    )
    # Haiku 5.5 charges a prompt over 100k tokens its higher rates on every token.
    short = Usage(input_tokens=100_000, output_tokens=1000)
    long = Usage(input_tokens=100_001, output_tokens=1000)
    assert estimate_cost("claude-haiku-5-5", short) == pytest.approx(0.01 + 0.0005)
    assert estimate_cost("claude-haiku-5-5", long) == pytest.approx(0.0500005 + 0.0025)
    assert estimate_cost("<synthetic>", million) == 0.0  # the CLI's API error message


# --------------------------------------------------------------------------- the goal machine


def running(*events: GoalEvent, compact: bool = False) -> Any:
    return state_of(started(), at(1, AttemptStarted(G, 1, compact, None, "p"), *events))


def completed(usage: Usage, cost: float, **fields: Any) -> AttemptCompleted:
    return AttemptCompleted(
        G, 1, False, "cancelled", "cancelled", "stop requested", "s", usage, cost, 1.0, **fields
    )


@pytest.mark.parametrize(
    ("budget", "live", "axis"),
    [
        (Budget(max_tokens=1000), LiveSpend(1, False, Usage(input_tokens=1000)), BudgetAxis.TOKENS),
        (Budget(max_cost_usd=0.5), LiveSpend(1, False, Usage(), 0.5), BudgetAxis.COST),
    ],
)
def test_a_running_turns_live_spend_stops_it_and_counts_once(
    budget: Budget, live: LiveSpend, axis: BudgetAxis
) -> None:
    goal = attrs.evolve(GOAL, budget=budget)
    state = running()
    step = next_step(state, goal, CONFIG, T0 + 2)
    assert isinstance(step, RunTurn)
    below = attrs.evolve(live, usage=Usage(), cost_usd=0.0)
    assert not supersedes(step, next_step(state, goal, CONFIG, T0 + 2, below))
    stop = next_step(state, goal, CONFIG, T0 + 2, live)
    assert isinstance(stop, Finish)
    assert stop.outcome.axis is axis
    assert supersedes(step, stop)
    # Live spend of another turn (or a compaction of the same number) counts for nothing.
    for other in (attrs.evolve(live, turn=2), attrs.evolve(live, compact=True)):
        assert isinstance(next_step(state, goal, CONFIG, T0 + 2, other), RunTurn)
    # Once the turn's attempt_completed is folded, its figures are the state's: the live
    # ones are not added again.
    ended = fold(at(3, completed(live.usage, live.cost_usd)), state)
    assert live_spent(ended, T0 + 3, live) == ended.spent(T0 + 3)
    assert ended.spent(T0 + 3).tokens == live.usage.total_tokens
    assert ended.cost_usd == live.cost_usd
    judged = fold(at(3, ReplayDecided(G, 1, "proceed", None)), ended)
    end = next_step(judged, goal, CONFIG, T0 + 3, live)
    assert isinstance(end, Finish)
    assert (end.outcome.axis, end.outcome.usage, end.outcome.cost_usd) == (
        axis,
        live.usage,
        live.cost_usd,
    )


def judgement(step: object) -> ReplayDecided:
    """The replay decision a step records."""
    assert isinstance(step, Record)
    (judged,) = step.events
    assert isinstance(judged, ReplayDecided)
    return judged


@pytest.mark.parametrize("max_retries", [3, 0])
def test_a_turn_timed_out_by_the_wall_time_budget_is_not_retried(max_retries: int) -> None:
    goal = attrs.evolve(GOAL, budget=Budget(max_wall_time_s=3))
    config = attrs.evolve(CONFIG, replay=ReplaySettings(max_retries=max_retries))
    step = next_step(running(), goal, config, T0 + 1)
    assert isinstance(step, RunTurn)
    assert step.timeout_s == pytest.approx(2)  # the wall time left, not turn_timeout
    timed_out = AttemptCompleted(
        G, 1, False, "continue", Cause.TIMEOUT.value, "turn timeout after 2s", "s", Usage(), 0, 2
    )
    state = fold(at(3, timed_out), running())
    judged = judgement(next_step(state, goal, config, T0 + 3))
    assert (judged.action, judged.counted, judged.is_error) == ("proceed", True, False)
    assert judged.reason is not None
    assert judged.reason.startswith("the wall-time budget ran out during the turn")
    end = next_step(fold([judged], state), goal, config, T0 + 3)
    assert isinstance(end, Finish)
    assert end.outcome.axis is BudgetAxis.WALL_TIME
    # A turn that timed out on turn_timeout, with wall time left, is retried as before.
    early = fold(at(1.5, timed_out), running())
    retry = judgement(
        next_step(early, goal, attrs.evolve(config, replay=ReplaySettings()), T0 + 1.5)
    )
    assert retry.action == "retry"


def test_a_call_refused_while_the_turn_stops_is_no_further_denial() -> None:
    deny = DecisionMade(G, "Bash", "deny", "no", "rules", 1.0)
    stopping = DecisionMade(G, "Bash", "cancelled", "the goal was cancelled", "gate", 1.0)
    state = running(deny, deny, stopping, stopping)
    assert (state.denied, state.consecutive_denies) == (4, 2)
    # The CLI reports the four as its permission_denials: none of its own rules' among them.
    state = fold(at(2, completed(Usage(), 0.0, permission_denials=4)), state)
    assert (state.denied, state.consecutive_denies) == (4, 2)
    goal = attrs.evolve(GOAL, budget=Budget(max_consecutive_denies=2))
    end = next_step(fold(at(2, ReplayDecided(G, 1, "proceed", None)), state), goal, CONFIG, T0 + 2)
    assert isinstance(end, Finish)
    assert end.outcome.reason == "max consecutive denials reached: 2 of 2"
