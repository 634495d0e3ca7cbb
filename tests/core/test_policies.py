"""Laws of the goal loop's pure policies (budget, replay, compaction) and of attempt outcomes."""

from __future__ import annotations

import itertools
import math
from typing import Any

import attrs
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from nexo_trio.core.acceptance import CheckResult, Verdict
from nexo_trio.core.attempt import AttemptKind, attempt_outcome
from nexo_trio.core.budget import BudgetAxis, Spent, describe_exhaustion, exhausted_axis
from nexo_trio.core.compact import (
    COMPACT_FOCUS,
    CompactPolicy,
    compact_prompt,
    should_compact,
)
from nexo_trio.core.events import Usage
from nexo_trio.core.goal import Budget
from nexo_trio.core.outcome import COMPACT_HINT, Cause, TurnKind, TurnOutcome
from nexo_trio.core.replay import ReplayAction, ReplayDecision, ReplayState, decide_replay

CHEAP = settings(max_examples=200, deadline=None)

AXES = tuple(BudgetAxis)

# =========================================================================== budget

counts = st.integers(min_value=0, max_value=1_000)
amounts = st.floats(min_value=0, max_value=1_000, allow_nan=False, allow_infinity=False)
int_limits = st.none() | st.integers(min_value=1, max_value=1_000)
float_limits = st.none() | st.floats(
    min_value=1e-9, max_value=1_000, allow_nan=False, allow_infinity=False
)

usages = st.builds(
    Usage,
    input_tokens=counts,
    output_tokens=counts,
    cache_read_input_tokens=counts,
    cache_creation_input_tokens=counts,
)
budgets = st.builds(
    Budget,
    max_turns=int_limits,
    max_wall_time_s=float_limits,
    max_tokens=int_limits,
    max_cost_usd=float_limits,
    max_consecutive_errors=int_limits,
    max_consecutive_denies=int_limits,
)
spents = st.builds(
    Spent,
    turns=counts,
    wall_time_s=amounts,
    usage=usages,
    cost_usd=amounts,
    consecutive_errors=counts,
    consecutive_denies=counts,
)

UNLIMITED = Budget(
    max_turns=None,
    max_wall_time_s=None,
    max_tokens=None,
    max_cost_usd=None,
    max_consecutive_errors=None,
    max_consecutive_denies=None,
)

# Each axis: its Budget field, and how to read / set what was spent on it.
LIMIT_FIELD = {
    BudgetAxis.TURNS: "max_turns",
    BudgetAxis.WALL_TIME: "max_wall_time_s",
    BudgetAxis.TOKENS: "max_tokens",
    BudgetAxis.COST: "max_cost_usd",
    BudgetAxis.CONSECUTIVE_ERRORS: "max_consecutive_errors",
    BudgetAxis.CONSECUTIVE_DENIES: "max_consecutive_denies",
}
FLOAT_AXES = {BudgetAxis.WALL_TIME, BudgetAxis.COST}
# What a person reads in the description of each axis.
AXIS_WORDS = {
    BudgetAxis.TURNS: "max turns",
    BudgetAxis.WALL_TIME: "max wall time",
    BudgetAxis.TOKENS: "max tokens",
    BudgetAxis.COST: "max cost",
    BudgetAxis.CONSECUTIVE_ERRORS: "max consecutive errors",
    BudgetAxis.CONSECUTIVE_DENIES: "max consecutive denials",
}


def used_on(axis: BudgetAxis, spent: Spent) -> float:
    """What ``spent`` used on ``axis`` (an oracle written independently of the policy)."""
    match axis:
        case BudgetAxis.TURNS:
            return spent.turns
        case BudgetAxis.WALL_TIME:
            return spent.wall_time_s
        case BudgetAxis.TOKENS:
            u = spent.usage
            return (
                u.input_tokens
                + u.output_tokens
                + u.cache_read_input_tokens
                + u.cache_creation_input_tokens
            )
        case BudgetAxis.COST:
            return spent.cost_usd
        case BudgetAxis.CONSECUTIVE_ERRORS:
            return spent.consecutive_errors
        case BudgetAxis.CONSECUTIVE_DENIES:
            return spent.consecutive_denies


def spent_only(axis: BudgetAxis, amount: float) -> Spent:
    """Nothing spent but ``amount`` on ``axis`` (tokens as input tokens)."""
    match axis:
        case BudgetAxis.TURNS:
            return Spent(turns=int(amount))
        case BudgetAxis.WALL_TIME:
            return Spent(wall_time_s=amount)
        case BudgetAxis.TOKENS:
            return Spent(usage=Usage(input_tokens=int(amount)))
        case BudgetAxis.COST:
            return Spent(cost_usd=amount)
        case BudgetAxis.CONSECUTIVE_ERRORS:
            return Spent(consecutive_errors=int(amount))
        case BudgetAxis.CONSECUTIVE_DENIES:
            return Spent(consecutive_denies=int(amount))


def only_limit(axis: BudgetAxis, limit: float) -> Budget:
    changes: dict[str, Any] = {LIMIT_FIELD[axis]: limit}
    return attrs.evolve(UNLIMITED, **changes)


@st.composite
def larger_spents(draw: st.DrawFn, spent: Spent) -> Spent:
    """``spent`` plus non-negative amounts on every axis (componentwise larger or equal)."""
    more = draw(spents)
    return Spent(
        turns=spent.turns + more.turns,
        wall_time_s=spent.wall_time_s + more.wall_time_s,
        usage=spent.usage + more.usage,
        cost_usd=spent.cost_usd + more.cost_usd,
        consecutive_errors=spent.consecutive_errors + more.consecutive_errors,
        consecutive_denies=spent.consecutive_denies + more.consecutive_denies,
    )


@st.composite
def raised_budgets(draw: st.DrawFn, budget: Budget) -> Budget:
    """``budget`` with every limit kept, raised, or removed (``None``: no limit)."""
    changes: dict[str, Any] = {}
    for axis, name in LIMIT_FIELD.items():
        limit = getattr(budget, name)
        if limit is None:
            continue
        choice = draw(st.sampled_from(["keep", "raise", "remove"]))
        if choice == "remove":
            changes[name] = None
        elif choice == "raise":
            if axis in FLOAT_AXES:
                changes[name] = limit + draw(amounts)
            else:
                changes[name] = limit + draw(counts)
    return attrs.evolve(budget, **changes)


@CHEAP
@given(budgets, spents, st.data())
def test_budget_exhaustion_is_monotone_in_what_was_spent(
    budget: Budget, spent: Spent, data: st.DataObject
) -> None:
    more = data.draw(larger_spents(spent))
    if exhausted_axis(budget, spent) is not None:
        assert exhausted_axis(budget, more) is not None


@CHEAP
@given(budgets, spents, st.data())
def test_raising_limits_never_exhausts(budget: Budget, spent: Spent, data: st.DataObject) -> None:
    raised = data.draw(raised_budgets(budget))
    if exhausted_axis(budget, spent) is None:
        assert exhausted_axis(raised, spent) is None


@CHEAP
@given(spents)
def test_no_limits_never_exhaust(spent: Spent) -> None:
    assert exhausted_axis(UNLIMITED, spent) is None


@CHEAP
@given(budgets, spents)
def test_the_reported_axis_is_the_first_exhausted_in_axis_order(
    budget: Budget, spent: Spent
) -> None:
    reached = [
        axis
        for axis in AXES
        if (limit := getattr(budget, LIMIT_FIELD[axis])) is not None
        and used_on(axis, spent) >= limit
    ]
    assert exhausted_axis(budget, spent) == (reached[0] if reached else None)


@CHEAP
@given(st.sampled_from(AXES), st.integers(min_value=1, max_value=10**6))
def test_axes_exhaust_at_the_limit_and_not_below(axis: BudgetAxis, limit: int) -> None:
    budget = only_limit(axis, limit)
    assert exhausted_axis(budget, spent_only(axis, limit)) is axis
    assert exhausted_axis(budget, spent_only(axis, limit + 1)) is axis
    if axis in FLOAT_AXES:
        below = math.nextafter(float(limit), 0.0)
        assert exhausted_axis(budget, spent_only(axis, below)) is None
    else:
        assert exhausted_axis(budget, spent_only(axis, limit - 1)) is None


@CHEAP
@given(
    st.sampled_from(sorted(FLOAT_AXES, key=AXES.index)),
    st.floats(min_value=1e-6, max_value=1e6, allow_nan=False, allow_infinity=False),
)
def test_float_axes_exhaust_at_the_limit_and_not_just_below(axis: BudgetAxis, limit: float) -> None:
    budget = only_limit(axis, limit)
    assert exhausted_axis(budget, spent_only(axis, limit)) is axis
    assert exhausted_axis(budget, spent_only(axis, math.nextafter(limit, 0.0))) is None


@pytest.mark.parametrize("axis", AXES)
def test_a_limit_of_zero_or_less_is_refused_when_the_budget_is_built(axis: BudgetAxis) -> None:
    with pytest.raises(ValueError, match=rf"^{LIMIT_FIELD[axis]}: must be "):
        only_limit(axis, 0)
    with pytest.raises(ValueError, match=rf"^{LIMIT_FIELD[axis]}: must be "):
        only_limit(axis, -1)


def test_tokens_count_all_four_usage_counts() -> None:
    budget = only_limit(BudgetAxis.TOKENS, 10)
    usage = Usage(
        input_tokens=1, output_tokens=2, cache_read_input_tokens=3, cache_creation_input_tokens=4
    )
    assert exhausted_axis(budget, Spent(usage=usage)) is BudgetAxis.TOKENS
    assert exhausted_axis(budget, Spent(usage=attrs.evolve(usage, output_tokens=1))) is None


def test_default_budget_limits_turns_errors_and_denies() -> None:
    assert exhausted_axis(Budget(), Spent(turns=8)) is BudgetAxis.TURNS
    assert exhausted_axis(Budget(), Spent(turns=7)) is None
    assert exhausted_axis(Budget(), Spent(consecutive_errors=3)) is BudgetAxis.CONSECUTIVE_ERRORS
    assert exhausted_axis(Budget(), Spent(consecutive_denies=5)) is BudgetAxis.CONSECUTIVE_DENIES


@CHEAP
@given(budgets, spents)
def test_describe_exhaustion_names_the_axis_and_the_limit(budget: Budget, spent: Spent) -> None:
    axis = exhausted_axis(budget, spent)
    assume(axis is not None)
    assert axis is not None
    text = describe_exhaustion(axis, budget, spent)
    assert AXIS_WORDS[axis] in text
    assert str(getattr(budget, LIMIT_FIELD[axis])) in text
    assert "\n" not in text


@pytest.mark.parametrize("axis", AXES)
def test_describe_exhaustion_of_each_axis(axis: BudgetAxis) -> None:
    limit = 2.5 if axis in FLOAT_AXES else 7
    budget = only_limit(axis, limit)
    spent = spent_only(axis, limit)
    assert exhausted_axis(budget, spent) is axis
    text = describe_exhaustion(axis, budget, spent)
    assert text.startswith(AXIS_WORDS[axis] + " reached: ")
    assert str(limit) in text


# =========================================================================== replay

REASONS = st.sampled_from([None, "boom", "API Error: 529 overloaded", "timed out"])


def turn_outcome(
    kind: TurnKind,
    *,
    session_invalid: bool = False,
    hint: str | None = None,
    reason: str | None = "why",
) -> TurnOutcome:
    cause = {
        TurnKind.CLAIMED_DONE: Cause.COMPLETED,
        TurnKind.SLEEP: Cause.SLEEP_REQUESTED,
        TurnKind.CANCELLED: Cause.CANCELLED,
        TurnKind.ESCALATE: Cause.API_ERROR,
        TurnKind.CONTINUE: Cause.SESSION_INVALID if session_invalid else Cause.TIMEOUT,
    }[kind]
    return TurnOutcome(
        kind=kind, cause=cause, reason=reason, hint=hint, session_invalid=session_invalid
    )


# Any combination, including nonsensical ones (a session_invalid flag on a claimed_done):
# the policy must decide by kind first.
outcomes = st.builds(
    turn_outcome,
    st.sampled_from(list(TurnKind)),
    session_invalid=st.booleans(),
    hint=st.sampled_from([None, COMPACT_HINT, "other"]),
    reason=REASONS,
)
retry_limits = st.integers(min_value=0, max_value=5)
replay_states = st.builds(
    ReplayState,
    retries=st.integers(min_value=0, max_value=6),
    fresh_sessions=st.integers(min_value=0, max_value=6),
)
PROCEEDING = (TurnKind.CLAIMED_DONE, TurnKind.SLEEP, TurnKind.CANCELLED)


@CHEAP
@given(outcomes, replay_states, retry_limits)
def test_escalate_outcomes_always_escalate(
    outcome: TurnOutcome, state: ReplayState, max_retries: int
) -> None:
    outcome = attrs.evolve(outcome, kind=TurnKind.ESCALATE)
    decision, _ = decide_replay(outcome, state, max_retries=max_retries)
    assert decision.action is ReplayAction.ESCALATE
    assert decision.is_error
    assert decision.reason == outcome.reason


@CHEAP
@given(outcomes, replay_states, retry_limits, st.sampled_from(PROCEEDING))
def test_done_sleep_and_cancelled_proceed_and_reset(
    outcome: TurnOutcome, state: ReplayState, max_retries: int, kind: TurnKind
) -> None:
    outcome = attrs.evolve(outcome, kind=kind)
    decision, new_state = decide_replay(outcome, state, max_retries=max_retries)
    assert decision == ReplayDecision(ReplayAction.PROCEED)
    assert decision.counts_as_turn
    assert not decision.is_error
    assert new_state == ReplayState()


@CHEAP
@given(outcomes, replay_states, retry_limits)
def test_an_invalid_session_starts_a_fresh_one_uncounted_until_too_many(
    outcome: TurnOutcome, state: ReplayState, max_retries: int
) -> None:
    outcome = attrs.evolve(outcome, kind=TurnKind.CONTINUE, session_invalid=True)
    decision, new_state = decide_replay(outcome, state, max_retries=max_retries)
    if state.fresh_sessions + 1 > max_retries:
        assert decision.action is ReplayAction.ESCALATE
        assert decision.is_error
        assert decision.reason is not None
        assert str(outcome.reason) in decision.reason
    else:
        assert decision.action is ReplayAction.FRESH_SESSION
        assert not decision.counts_as_turn
        assert not decision.is_error
        assert new_state.fresh_sessions == state.fresh_sessions + 1
        assert new_state.retries == state.retries


@CHEAP
@given(outcomes, replay_states, retry_limits)
def test_other_continues_retry_or_compact_until_too_many(
    outcome: TurnOutcome, state: ReplayState, max_retries: int
) -> None:
    outcome = attrs.evolve(outcome, kind=TurnKind.CONTINUE, session_invalid=False)
    decision, new_state = decide_replay(outcome, state, max_retries=max_retries)
    assert decision.is_error
    assert decision.counts_as_turn
    if state.retries + 1 > max_retries:
        assert decision.action is ReplayAction.ESCALATE
        assert decision.reason is not None
        assert str(outcome.reason) in decision.reason
    else:
        expected = ReplayAction.COMPACT if outcome.hint == COMPACT_HINT else ReplayAction.RETRY
        assert decision.action is expected
        assert decision.reason == outcome.reason
        assert new_state == ReplayState(retries=state.retries + 1, fresh_sessions=0)


@CHEAP
@given(retry_limits, st.booleans(), st.sampled_from([None, COMPACT_HINT]))
def test_a_run_of_continues_escalates_exactly_after_max_retries(
    max_retries: int, session_invalid: bool, hint: str | None
) -> None:
    outcome = turn_outcome(TurnKind.CONTINUE, session_invalid=session_invalid, hint=hint)
    state = ReplayState()
    actions = []
    for _ in range(max_retries + 1):
        decision, state = decide_replay(outcome, state, max_retries=max_retries)
        actions.append(decision.action)
    assert actions[-1] is ReplayAction.ESCALATE
    assert ReplayAction.ESCALATE not in actions[:-1]


def simulate_replay(
    sequence: list[TurnOutcome], max_retries: int
) -> list[tuple[TurnOutcome, ReplayDecision, ReplayState]]:
    """Feed outcomes to the policy like the goal loop does: it stops at an escalation."""
    state = ReplayState()
    steps = []
    for outcome in sequence:
        decision, state = decide_replay(outcome, state, max_retries=max_retries)
        steps.append((outcome, decision, state))
        if decision.action is ReplayAction.ESCALATE:
            break
    return steps


@settings(max_examples=400, deadline=None)
@given(st.lists(outcomes, max_size=60), retry_limits)
def test_replay_invariants_over_sequences(sequence: list[TurnOutcome], max_retries: int) -> None:
    steps = simulate_replay(sequence, max_retries)
    retries_since_proceed = 0  # RETRY/COMPACT decisions since the last PROCEED
    fresh_in_a_row = 0  # FRESH_SESSION decisions with nothing else in between
    troubled_in_a_row = 0  # decisions since the last PROCEED
    for index, (outcome, decision, state) in enumerate(steps):
        assert state.retries >= 0
        assert state.fresh_sessions >= 0
        assert state.retries <= max_retries
        assert state.fresh_sessions <= max_retries
        match decision.action:
            case ReplayAction.PROCEED:
                assert outcome.kind in PROCEEDING
                assert state == ReplayState()
                retries_since_proceed = fresh_in_a_row = troubled_in_a_row = 0
            case ReplayAction.RETRY | ReplayAction.COMPACT:
                retries_since_proceed += 1
                fresh_in_a_row = 0
                troubled_in_a_row += 1
                assert state.retries == retries_since_proceed
            case ReplayAction.FRESH_SESSION:
                fresh_in_a_row += 1
                troubled_in_a_row += 1
                assert state.fresh_sessions == fresh_in_a_row
            case ReplayAction.ESCALATE:
                assert index == len(steps) - 1
                if outcome.kind is not TurnKind.ESCALATE:
                    # Only a run that went on too long escalates a continue.
                    assert outcome.kind is TurnKind.CONTINUE
                    if outcome.session_invalid:
                        assert fresh_in_a_row == max_retries
                    else:
                        assert retries_since_proceed == max_retries
        assert retries_since_proceed <= max_retries
        assert fresh_in_a_row <= max_retries
        # Never an endless loop: at most max_retries retries, each preceded by at most
        # max_retries fresh sessions, and max_retries fresh sessions after the last one.
        assert troubled_in_a_row <= max_retries * (max_retries + 2)


@CHEAP
@given(st.lists(outcomes, max_size=40), retry_limits)
def test_replay_never_escalates_a_continue_early(
    sequence: list[TurnOutcome], max_retries: int
) -> None:
    """A continue escalates only when its run (since the last proceed) is too long."""
    steps = simulate_replay(sequence, max_retries)
    retries = fresh = 0
    for outcome, decision, _ in steps:
        if outcome.kind in PROCEEDING:
            retries = fresh = 0
            expected = ReplayAction.PROCEED
        elif outcome.kind is TurnKind.ESCALATE:
            expected = ReplayAction.ESCALATE
        elif outcome.session_invalid:
            fresh += 1
            expected = ReplayAction.ESCALATE if fresh > max_retries else ReplayAction.FRESH_SESSION
        else:
            retries += 1
            fresh = 0
            if retries > max_retries:
                expected = ReplayAction.ESCALATE
            elif outcome.hint == COMPACT_HINT:
                expected = ReplayAction.COMPACT
            else:
                expected = ReplayAction.RETRY
        assert decision.action is expected


def test_replay_with_zero_retries_escalates_the_first_continue() -> None:
    for invalid in (False, True):
        outcome = turn_outcome(TurnKind.CONTINUE, session_invalid=invalid)
        decision, state = decide_replay(outcome, ReplayState(), max_retries=0)
        assert decision.action is ReplayAction.ESCALATE
        assert state == ReplayState()


def test_a_proceed_in_between_resets_the_run() -> None:
    retry = turn_outcome(TurnKind.CONTINUE)
    done = turn_outcome(TurnKind.CLAIMED_DONE)
    state = ReplayState()
    for _ in range(3):
        for _ in range(2):
            decision, state = decide_replay(retry, state, max_retries=2)
            assert decision.action is ReplayAction.RETRY
        decision, state = decide_replay(done, state, max_retries=2)
        assert decision.action is ReplayAction.PROCEED
    decision, state = decide_replay(retry, state, max_retries=2)
    decision, state = decide_replay(retry, state, max_retries=2)
    decision, _ = decide_replay(retry, state, max_retries=2)
    assert decision.action is ReplayAction.ESCALATE
    assert decision.reason == "gave up after 2 retries: why"


# =========================================================================== compaction

policies = st.builds(
    CompactPolicy,
    context_window=st.integers(min_value=1, max_value=400_000),
    threshold=st.floats(min_value=0.01, max_value=1.0, allow_nan=False),
    min_turns_between=st.integers(min_value=0, max_value=6),
)
tokens = st.integers(min_value=0, max_value=500_000)
gaps = st.none() | st.integers(min_value=0, max_value=20)


def threshold_of(policy: CompactPolicy) -> float:
    return policy.threshold * policy.context_window


@CHEAP
@given(policies, tokens, gaps)
def test_never_compacts_below_the_threshold_unless_forced(
    policy: CompactPolicy, last: int, since: int | None
) -> None:
    assume(last < threshold_of(policy))
    assert not should_compact(policy, last_context_tokens=last, turns_since_compact=since)
    assert should_compact(policy, last_context_tokens=last, turns_since_compact=since, forced=True)


@CHEAP
@given(policies, tokens, gaps)
def test_forced_always_compacts(policy: CompactPolicy, last: int, since: int | None) -> None:
    assert should_compact(policy, last_context_tokens=last, turns_since_compact=since, forced=True)


@CHEAP
@given(policies, tokens, tokens, gaps)
def test_compaction_is_monotone_in_tokens(
    policy: CompactPolicy, a: int, b: int, since: int | None
) -> None:
    low, high = sorted((a, b))
    if should_compact(policy, last_context_tokens=low, turns_since_compact=since):
        assert should_compact(policy, last_context_tokens=high, turns_since_compact=since)


@CHEAP
@given(policies, tokens, st.integers(0, 20), st.integers(0, 20))
def test_compaction_is_monotone_in_the_gap(
    policy: CompactPolicy, last: int, a: int, b: int
) -> None:
    low, high = sorted((a, b))
    if should_compact(policy, last_context_tokens=last, turns_since_compact=low):
        assert should_compact(policy, last_context_tokens=last, turns_since_compact=high)
        # Never compacted yet counts as an infinite gap.
        assert should_compact(policy, last_context_tokens=last, turns_since_compact=None)


@CHEAP
@given(policies, tokens, gaps)
def test_above_threshold_and_gap_respected_compacts(
    policy: CompactPolicy, last: int, since: int | None
) -> None:
    assume(last >= threshold_of(policy))
    expected = since is None or since >= policy.min_turns_between
    assert should_compact(policy, last_context_tokens=last, turns_since_compact=since) is expected


@attrs.frozen
class SimTurn:
    """One turn of the simulated goal loop: its context tokens, and whether it failed with
    "prompt is too long" (which forces a compaction next)."""

    context_tokens: int
    too_long: bool = False


sim_turns = st.builds(SimTurn, tokens, st.integers(0, 4).map(lambda n: n == 0))


@attrs.frozen
class Compaction:
    work_turns_before: int  # work turns run before this compaction
    forced: bool


def simulate_compaction(policy: CompactPolicy, turns: list[SimTurn]) -> list[Compaction]:
    """The goal loop's bookkeeping: ``turns_since_compact`` is None until the first
    compaction, 0 after each, +1 per work turn; each scheduled compaction takes the next
    turn (which reports ``context_tokens`` of its own)."""
    since: int | None = None
    last_tokens = 0
    forced = False
    work_turns = 0
    compactions: list[Compaction] = []
    for turn in turns:
        if should_compact(
            policy, last_context_tokens=last_tokens, turns_since_compact=since, forced=forced
        ):
            compactions.append(Compaction(work_turns, forced))
            since = 0
            forced = False
        else:
            work_turns += 1
            if since is not None:
                since += 1
            forced = turn.too_long
        last_tokens = turn.context_tokens
    return compactions


@settings(max_examples=300, deadline=None)
@given(policies, st.lists(sim_turns, max_size=50))
def test_compactions_respect_the_minimum_gap_unless_forced(
    policy: CompactPolicy, turns: list[SimTurn]
) -> None:
    compactions = simulate_compaction(policy, turns)
    for before, after in itertools.pairwise(compactions):
        gap = after.work_turns_before - before.work_turns_before
        assert gap >= 0
        if not after.forced:
            assert gap >= policy.min_turns_between


@settings(max_examples=300, deadline=None)
@given(policies, st.lists(tokens, min_size=1, max_size=50))
def test_a_full_context_compacts_as_soon_as_the_gap_allows(
    policy: CompactPolicy, context: list[int]
) -> None:
    """Without forcing, the loop compacts exactly when the last work turn crossed the
    threshold and enough work turns have passed: a model of the rule, checked step by step."""
    since: int | None = None
    last = 0
    for value in context:
        due = last >= threshold_of(policy) and (since is None or since >= policy.min_turns_between)
        compacted = should_compact(policy, last_context_tokens=last, turns_since_compact=since)
        assert compacted is due
        if compacted:
            since = 0
            last = 0  # a compact turn reports no assistant usage
        else:
            since = None if since is None else since + 1
            last = value


def test_the_gap_counts_work_turns_after_a_compaction() -> None:
    policy = CompactPolicy(context_window=100, threshold=0.5, min_turns_between=2)
    full = 60
    assert should_compact(policy, last_context_tokens=full, turns_since_compact=None)
    assert not should_compact(policy, last_context_tokens=full, turns_since_compact=0)
    assert not should_compact(policy, last_context_tokens=full, turns_since_compact=1)
    assert should_compact(policy, last_context_tokens=full, turns_since_compact=2)
    assert should_compact(policy, last_context_tokens=50, turns_since_compact=2)  # at threshold
    assert not should_compact(policy, last_context_tokens=49, turns_since_compact=2)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"context_window": 0}, "context_window: must be at least 1, got 0"),
        ({"context_window": -5}, "context_window: must be at least 1, got -5"),
        ({"threshold": 0.0}, "threshold: must be greater than 0 and at most 1, got 0"),
        ({"threshold": -0.1}, "threshold: must be greater than 0 and at most 1, got -0.1"),
        ({"threshold": 1.01}, "threshold: must be greater than 0 and at most 1, got 1.01"),
        ({"threshold": float("nan")}, "threshold: must be a finite number, got nan"),
        ({"min_turns_between": -1}, "min_turns_between: must be at least 0, got -1"),
    ],
)
def test_compact_policy_validation(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("]", r"\]")):
        CompactPolicy(**kwargs)  # type: ignore[arg-type]


def test_compact_policy_accepts_its_edges() -> None:
    CompactPolicy(context_window=1, threshold=1.0, min_turns_between=0)
    assert CompactPolicy() == CompactPolicy(
        context_window=200_000, threshold=0.8, min_turns_between=3
    )


def test_compact_prompt() -> None:
    assert compact_prompt() == f"/compact {COMPACT_FOCUS}"
    assert compact_prompt("the tests") == "/compact the tests"
    assert compact_prompt("") == "/compact"


# =========================================================================== attempt outcomes


def verdict(*passed: bool, required: bool = True) -> Verdict:
    return Verdict(
        tuple(
            CheckResult(index=i, label=f"check {i}", passed=p, required=required, message=f"m{i}")
            for i, p in enumerate(passed)
        )
    )


def test_claimed_done_needs_a_verdict() -> None:
    with pytest.raises(ValueError, match="needs an acceptance verdict"):
        attempt_outcome(turn_outcome(TurnKind.CLAIMED_DONE), None)


@pytest.mark.parametrize("checks", [(), (True,), (True, True, True)])
def test_claimed_done_with_a_met_verdict_is_done(checks: tuple[bool, ...]) -> None:
    v = verdict(*checks)
    attempt = attempt_outcome(turn_outcome(TurnKind.CLAIMED_DONE), v)
    assert attempt.kind is AttemptKind.DONE
    assert attempt.verdict is v
    assert attempt.reason is None
    assert attempt.failures == ()


def test_failed_optional_checks_still_count_as_met() -> None:
    attempt = attempt_outcome(turn_outcome(TurnKind.CLAIMED_DONE), verdict(False, required=False))
    assert attempt.kind is AttemptKind.DONE


@pytest.mark.parametrize(
    ("checks", "reason"),
    [((False,), "1 acceptance check failed"), ((False, True, False), "2 acceptance checks failed")],
)
def test_claimed_done_with_failures_needs_retry(checks: tuple[bool, ...], reason: str) -> None:
    v = verdict(*checks)
    attempt = attempt_outcome(turn_outcome(TurnKind.CLAIMED_DONE), v)
    assert attempt.kind is AttemptKind.NEEDS_RETRY
    assert attempt.reason == reason
    assert attempt.failures == v.failures
    assert [f.index for f in attempt.failures] == [i for i, p in enumerate(checks) if not p]
    assert all(f.message == f"m{f.index}" for f in attempt.failures)


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        (TurnKind.SLEEP, AttemptKind.SLEEP),
        (TurnKind.CONTINUE, AttemptKind.CONTINUE),
        (TurnKind.ESCALATE, AttemptKind.ESCALATE),
        (TurnKind.CANCELLED, AttemptKind.CANCELLED),
    ],
)
@pytest.mark.parametrize("with_verdict", [False, True])
def test_other_turn_kinds_map_one_to_one(
    kind: TurnKind, expected: AttemptKind, with_verdict: bool
) -> None:
    turn = turn_outcome(kind, reason="the reason")
    attempt = attempt_outcome(turn, verdict(False) if with_verdict else None)
    assert attempt.kind is expected
    assert attempt.turn is turn
    assert attempt.reason == "the reason"


def test_every_turn_kind_has_its_own_attempt_kind() -> None:
    kinds = {kind: attempt_outcome(turn_outcome(kind), verdict(True)).kind for kind in TurnKind}
    assert kinds[TurnKind.CLAIMED_DONE] is AttemptKind.DONE
    assert len(set(kinds.values())) == len(TurnKind)
