"""Replay policy: what to do after a turn that did not end well.

Rules, applied to the turn's outcome:

* ``escalate`` from the turn stops the goal (a broken binary, a 401, max turns inside the CLI:
  another turn would fail the same way, so it must not loop until the budget runs out).
* ``session_invalid`` drops the stored session and starts a fresh one; that turn is not
  counted. If sessions keep coming back invalid (``max_retries`` times in a row) it escalates.
* ``prompt_too_long`` schedules a ``/compact`` turn; counted as a retry.
* other ``continue`` outcomes (retryable API errors, timeouts, interruptions, a stream with no
  result, a non-zero exit) retry, up to ``max_retries`` in a row; then escalate.
* ``claimed_done``, ``sleep`` and ``cancelled`` proceed and reset the counters.
"""

from __future__ import annotations

import enum

import attrs

from nexo_trio.core.outcome import COMPACT_HINT, TurnKind, TurnOutcome


class ReplayAction(enum.Enum):
    """The decision of the replay policy."""

    PROCEED = "proceed"
    FRESH_SESSION = "fresh_session"
    RETRY = "retry"
    COMPACT = "compact"
    ESCALATE = "escalate"


@attrs.frozen
class ReplayState:
    """Retries in a row so far."""

    retries: int = 0
    fresh_sessions: int = 0


@attrs.frozen
class ReplayDecision:
    """What to do, why, and whether the turn counts toward the turn budget."""

    action: ReplayAction
    reason: str | None = None
    counts_as_turn: bool = True
    is_error: bool = False


def decide_replay(
    outcome: TurnOutcome, state: ReplayState, *, max_retries: int
) -> tuple[ReplayDecision, ReplayState]:
    """Decide after one turn; return the decision and the new policy state."""
    decision = _decide(outcome, state, max_retries=max_retries)
    return decision, replay_after(state, decision.action)


def replay_after(state: ReplayState, action: ReplayAction) -> ReplayState:
    """The policy state after a decision: what the goal machine's fold applies, from the
    recorded action alone."""
    match action:
        case ReplayAction.PROCEED:
            return ReplayState()
        case ReplayAction.FRESH_SESSION:
            return attrs.evolve(state, fresh_sessions=state.fresh_sessions + 1)
        case ReplayAction.RETRY | ReplayAction.COMPACT:
            return ReplayState(retries=state.retries + 1, fresh_sessions=0)
        case ReplayAction.ESCALATE:
            return state


def _decide(outcome: TurnOutcome, state: ReplayState, *, max_retries: int) -> ReplayDecision:
    if outcome.kind is TurnKind.ESCALATE:
        return ReplayDecision(ReplayAction.ESCALATE, outcome.reason, is_error=True)
    if outcome.kind is not TurnKind.CONTINUE:
        return ReplayDecision(ReplayAction.PROCEED)
    if outcome.session_invalid:
        fresh = state.fresh_sessions + 1
        if fresh > max_retries:
            reason = f"session invalid {fresh} times in a row: {outcome.reason}"
            return ReplayDecision(ReplayAction.ESCALATE, reason, is_error=True)
        return ReplayDecision(
            ReplayAction.FRESH_SESSION, outcome.reason, counts_as_turn=False, is_error=False
        )
    retries = state.retries + 1
    if retries > max_retries:
        reason = f"gave up after {state.retries} retries: {outcome.reason}"
        return ReplayDecision(ReplayAction.ESCALATE, reason, is_error=True)
    action = ReplayAction.COMPACT if outcome.hint == COMPACT_HINT else ReplayAction.RETRY
    return ReplayDecision(action, outcome.reason, is_error=True)
