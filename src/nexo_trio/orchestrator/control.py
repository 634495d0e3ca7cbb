"""Operator control of one goal: cancel, pause, resume, interrupt, raise max turns.

A :class:`GoalControl` exists from the moment a goal is started (before its loop runs, even
while it waits for a free slot), so every control is effective at once. Cancel reaches a
running turn through ``stop_turn`` (the engine stops the process tree and returns a
``cancelled`` outcome) and any other wait (sleep, pause, acceptance, a slot) through the
cancel scope of :meth:`interruptible`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable

import trio


class GoalControl:
    """The control surface of one goal."""

    def __init__(self, goal_id: str) -> None:
        self.goal_id = goal_id
        self.cancel_reason: str | None = None
        self.stop_turn = trio.Event()
        self.interrupts: deque[str] = deque()
        self.max_turns: int | None = None
        self._paused = False
        self._resumed = trio.Event()
        self._wait_scopes: set[trio.CancelScope] = set()

    @property
    def cancelled(self) -> bool:
        """Cancel was requested."""
        return self.cancel_reason is not None

    @property
    def paused(self) -> bool:
        """The goal is paused (it stops before its next turn)."""
        return self._paused

    def cancel(self, reason: str = "cancelled by operator") -> bool:
        """Request cancellation; False if it was already requested."""
        if self.cancel_reason is not None:
            return False
        self.cancel_reason = reason
        self.stop_turn.set()
        for scope in self._wait_scopes:
            scope.cancel()
        return True

    def pause(self) -> bool:
        """Pause between turns (a running turn is not killed); False if already paused."""
        if self._paused:
            return False
        self._paused = True
        self._resumed = trio.Event()
        return True

    def resume(self) -> bool:
        """Resume a paused goal; False if it was not paused."""
        if not self._paused:
            return False
        self._paused = False
        self._resumed.set()
        return True

    def interrupt(self, message: str) -> None:
        """Queue an operator message for the next work turn (FIFO)."""
        if not message.strip():
            raise ValueError("an operator interrupt needs a non-empty message")
        self.interrupts.append(message)

    def take_interrupts(self) -> list[str]:
        """Take every queued operator message, oldest first."""
        taken = list(self.interrupts)
        self.interrupts.clear()
        return taken

    def requeue_interrupts(self, messages: list[str]) -> None:
        """Put back messages a turn could not deliver, ahead of newer ones."""
        self.interrupts.extendleft(reversed(messages))

    def raise_max_turns(self, max_turns: int, current: int | None) -> None:
        """Raise the turn budget; lowering it is refused (ValueError)."""
        effective = self.max_turns if self.max_turns is not None else current
        if effective is not None and max_turns < effective:
            raise ValueError(
                f"max turns can only be raised: {max_turns} is below the current {effective}"
            )
        self.max_turns = max_turns

    async def interruptible(self, fn: Callable[[], Awaitable[object]]) -> bool:
        """Run ``fn`` unless and until cancel is requested; True if it ran to its end."""
        with trio.CancelScope() as scope:
            if self.cancelled:
                scope.cancel()
            self._wait_scopes.add(scope)
            try:
                await fn()
            finally:
                self._wait_scopes.discard(scope)
        return not scope.cancelled_caught

    async def wait_while_paused(self) -> bool:
        """Wait while paused; True when resumed, False when cancelled meanwhile."""
        while self._paused and not self.cancelled:
            if not await self.interruptible(self._resumed.wait):
                return False
        return not self.cancelled
