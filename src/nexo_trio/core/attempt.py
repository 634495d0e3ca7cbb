"""The outcome of one work turn after acceptance: what the goal loop acts on."""

from __future__ import annotations

import enum

import attrs

from nexo_trio.core.acceptance import Failure, Verdict
from nexo_trio.core.outcome import TurnKind, TurnOutcome


class AttemptKind(enum.Enum):
    """What one attempt came to."""

    DONE = "done"
    NEEDS_RETRY = "needs_retry"
    CONTINUE = "continue"
    SLEEP = "sleep"
    ESCALATE = "escalate"
    CANCELLED = "cancelled"


@attrs.frozen
class AttemptOutcome:
    """One attempt: the turn's outcome, then the acceptance verdict when Claude claimed done."""

    kind: AttemptKind
    turn: TurnOutcome
    reason: str | None = None
    verdict: Verdict | None = None

    @property
    def failures(self) -> tuple[Failure, ...]:
        """The failed checks that the next prompt must show (only for ``needs_retry``)."""
        if self.verdict is None:
            return ()
        return self.verdict.failures


_FROM_TURN = {
    TurnKind.SLEEP: AttemptKind.SLEEP,
    TurnKind.CONTINUE: AttemptKind.CONTINUE,
    TurnKind.ESCALATE: AttemptKind.ESCALATE,
    TurnKind.CANCELLED: AttemptKind.CANCELLED,
}


def attempt_outcome(turn: TurnOutcome, verdict: Verdict | None) -> AttemptOutcome:
    """Combine a turn's outcome with the verdict of the checks run after it (if any).

    A ``claimed_done`` turn needs a verdict: met -> ``done``, not met -> ``needs_retry``.
    """
    if turn.kind is TurnKind.CLAIMED_DONE:
        if verdict is None:
            raise ValueError("a claimed_done turn needs an acceptance verdict")
        if verdict.met:
            return AttemptOutcome(AttemptKind.DONE, turn, reason=None, verdict=verdict)
        count = len(verdict.failures)
        reason = f"{count} acceptance check{'s' if count != 1 else ''} failed"
        return AttemptOutcome(AttemptKind.NEEDS_RETRY, turn, reason=reason, verdict=verdict)
    return AttemptOutcome(_FROM_TURN[turn.kind], turn, reason=turn.reason, verdict=verdict)
