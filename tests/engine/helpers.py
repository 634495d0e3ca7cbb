"""Helpers of the engine tests."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import attrs

from nexo_trio.core.events import (
    AssistantMessage,
    Cancelled,
    DeadlineHit,
    Event,
    ProcessExited,
    Spawned,
    SpawnFailed,
    StderrTail,
    StdoutClosed,
    TextBlock,
)
from nexo_trio.core.outcome import TurnOutcome
from nexo_trio.core.turn import INITIAL_STATE, TurnState, classify, reduce

NOT_FROM_STDOUT = (
    Spawned,
    SpawnFailed,
    StdoutClosed,
    ProcessExited,
    StderrTail,
    DeadlineHit,
    Cancelled,
)


@attrs.define
class EventLog:
    """An ``on_events`` callback that keeps every batch and can act on the stream."""

    batches: list[list[Event]] = attrs.Factory(list)
    states: list[TurnState] = attrs.Factory(list)
    on_batch: Callable[[TurnState, Sequence[Event]], None] | None = None

    async def __call__(self, state: TurnState, batch: Sequence[Event]) -> None:
        self.batches.append(list(batch))
        self.states.append(state)
        if self.on_batch is not None:
            self.on_batch(state, batch)

    @property
    def events(self) -> list[Event]:
        """Every event, in order."""
        return [e for batch in self.batches for e in batch]

    def line_events(self) -> list[Event]:
        """The events that came from stdout lines (frames, malformed, oversized)."""
        return [e for e in self.events if not isinstance(e, NOT_FROM_STDOUT)]

    def replayed_state(self) -> TurnState:
        """The reducer folded over every event the engine reported."""
        state = INITIAL_STATE
        for event in self.events:
            state = reduce(state, event)
        return state

    def replayed_outcome(self) -> TurnOutcome:
        """``classify`` of :meth:`replayed_state`."""
        return classify(self.replayed_state())


def texts(batch: Sequence[Event]) -> list[str]:
    """The assistant texts in a batch."""
    return [
        block.text
        for event in batch
        if isinstance(event, AssistantMessage)
        for block in event.content
        if isinstance(block, TextBlock)
    ]


def saw_text(value: str) -> Callable[[Sequence[Event]], bool]:
    """A predicate: the batch holds an assistant text equal to ``value``."""
    return lambda batch: value in texts(batch)


def count(events: Sequence[Event], kind: type) -> int:
    """How many events are of ``kind``."""
    return sum(isinstance(e, kind) for e in events)
