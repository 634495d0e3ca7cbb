"""The operator controls of the control socket: ``pause``, ``resume``, ``cancel``,
``interrupt`` and ``max_turns`` requests of another ``nexo-trio`` process, applied through the
orchestrator's own methods (``pause_goal``, ...), and answered once applied.

An answer is ``ok`` when the control changed something (it is then in the ledger, or held
for a run about to begin); otherwise its ``problem`` says why: ``unchanged`` (already paused,
not paused, already cancelled), ``invalid`` (an empty message, lowering ``max_turns``, a
request without what its op needs) or ``not_running`` (this process does not run the goal).
"""

from __future__ import annotations

from typing import Protocol

from nexo_trio.core.goal_machine import GoalState
from nexo_trio.orchestrator.goal_run import GoalHandle
from nexo_trio.wire.control_frames import ControlReply, ControlRequest

OPERATOR_OPS = frozenset({"pause", "resume", "cancel", "interrupt", "max_turns"})
"""The ops answered here (``approve`` / ``deny`` go to the human decider)."""


class Controlled(Protocol):
    """What the controls need of the orchestrator."""

    def handle(self, goal_id: str) -> GoalHandle | None:
        """The handle of a running goal."""
        ...

    async def cancel_goal(self, goal_id: str, reason: str = ...) -> bool:
        """Cancel a goal."""
        ...

    async def pause_goal(self, goal_id: str) -> bool:
        """Pause a goal."""
        ...

    async def resume_goal(self, goal_id: str) -> bool:
        """Resume a goal."""
        ...

    async def interrupt_goal(self, goal_id: str, message: str, *, now: bool = False) -> bool:
        """Queue an operator message (``now``: also into the running turn)."""
        ...

    def takes_messages(self, goal_id: str) -> bool:
        """Whether the goal's running turn takes a message now."""
        ...

    async def set_goal_max_turns(self, goal_id: str, max_turns: int) -> bool:
        """Raise the turn budget."""
        ...


def _not_running(goal_id: str) -> ControlReply:
    return ControlReply(False, f"goal {goal_id!r} is not running here", "not_running")


def _turn_running(state: GoalState) -> int | None:
    """The number of the turn under way, if one is."""
    return state.attempt.turn if state.attempt is not None else None


async def operate(orch: Controlled, request: ControlRequest) -> ControlReply:
    """Apply one operator control to a goal this process runs; the answer in words."""
    goal_id = request.goal_id
    handle = orch.handle(goal_id)
    if handle is None:
        return _not_running(goal_id)
    name = repr(goal_id)
    by = request.by or "another terminal"
    try:
        match request.op:
            case "pause":
                interrupting = orch.takes_messages(goal_id)
                changed = await orch.pause_goal(goal_id)
                running = _turn_running(handle.state)
                done = f"paused goal {name}"
                if running and interrupting:
                    done += f": its running turn {running} is interrupted (its session kept)"
                elif running:
                    done += f": it stops once its running turn {running} ends"
                same = f"goal {name} is already paused"
            case "resume":
                changed = await orch.resume_goal(goal_id)
                done, same = f"resumed goal {name}", f"goal {name} is not paused"
            case "cancel":
                reason = request.reason or f"cancelled by {by}"
                changed = await orch.cancel_goal(goal_id, reason)
                running = _turn_running(handle.state)
                done = f"cancelling goal {name}" + (
                    f": its running turn {running} is being stopped" if running else ""
                )
                same = f"goal {name} is already being cancelled"
            case "interrupt":
                message = request.message or ""
                if not message.strip():
                    return ControlReply(False, "an operator interrupt needs a message", "invalid")
                before = handle.state
                live = request.now and orch.takes_messages(goal_id)
                changed = await orch.interrupt_goal(goal_id, message, now=request.now)
                done = f"queued for goal {name}'s next turn" + _when_delivered(before)
                if live:
                    turn = _turn_running(before)
                    done = (
                        f"sent to goal {name}'s running turn {turn}; it stays queued for "
                        "the next turn until the CLI takes it"
                    )
                elif request.now:
                    done += " (its running turn takes no messages: --now needs a turn on "
                    done += "permission.transport stdio)"
                same = f"goal {name} takes no messages now"
            case "max_turns":
                if request.max_turns is None or request.max_turns < 1:
                    return ControlReply(False, "max turns must be at least 1", "invalid")
                changed = await orch.set_goal_max_turns(goal_id, request.max_turns)
                turns = handle.state.turns
                done = f"goal {name} may now run {request.max_turns} turns ({turns} done)"
                same = f"goal {name} keeps its turn budget"
            case _:
                return ControlReply(False, f"{request.op} is not an operator control", "invalid")
    except ValueError as exc:  # a control that is not allowed (goal_machine.control_effect)
        return ControlReply(False, f"goal {name}: {exc}", "invalid")
    if changed:
        return ControlReply(True, done)
    if orch.handle(goal_id) is None:  # it ended meanwhile
        return _not_running(goal_id)
    return ControlReply(False, same, "unchanged")


def _when_delivered(state: GoalState) -> str:
    """When a message queued now reaches Claude, in words (from the state before it)."""
    if state.paused:
        return " (the goal is paused: it runs once resumed)"
    if state.sleep is not None:
        return ": it wakes up for it"
    running = _turn_running(state)
    if running is not None:
        return f" (turn {running} is running)"
    return ""
