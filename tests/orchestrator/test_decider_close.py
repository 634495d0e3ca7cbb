"""The orchestrator closes the deciders it builds from the config when their goal ends (the
LLM decider holds HTTP connections), and leaves a decider it was given alone."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

import nexo_trio.orchestrator.orchestrator as orchestrator_module
from nexo_trio.core.goal_outcome import GoalEndKind
from nexo_trio.core.permission import Decision, PermissionRequest, allow
from nexo_trio.core.settings import ClaudeSettings, PermissionSettings
from nexo_trio.gate.deciders import (
    Chain,
    Decider,
    GuardedDecider,
    RulesDecider,
    SessionCache,
    close_decider,
)

from .conftest import Harness, orchestrator


class Closable:
    """A decider holding something to release."""

    name = "closable"

    def __init__(self) -> None:
        self.closed = 0

    async def decide(self, request: PermissionRequest) -> Decision:
        return allow(self.name)

    async def aclose(self) -> None:
        self.closed += 1


async def test_close_decider_reaches_through_the_composites() -> None:
    inner = Closable()
    other = Closable()
    decider = SessionCache(Chain([RulesDecider(), GuardedDecider(inner, timeout_s=1), other]))
    await close_decider(decider)
    assert (inner.closed, other.closed) == (1, 1)
    await close_decider(RulesDecider())  # nothing to close: a no-op


async def test_a_config_built_decider_is_closed_when_its_goal_ends(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[Closable] = []

    def build(settings: PermissionSettings, *, environ: Mapping[str, str], **_: Any) -> Decider:
        built.append(Closable())
        return SessionCache(built[-1])

    monkeypatch.setattr(orchestrator_module, "build_decider", build)
    # A missing binary ends the goal after one turn, escalated.
    config = h.config(claude=ClaudeSettings(binary=str(h.root / "no-such-claude")))
    async with orchestrator(config) as (orch, _):
        outcome = await orch.run_goal(h.goal("g1"))
        goal_decider = built[-1]
        outcome2 = await orch.run_goal(h.goal("g2"))
    assert outcome.kind is GoalEndKind.ESCALATED
    assert outcome2.kind is GoalEndKind.ESCALATED
    assert goal_decider.closed == 1
    assert built[-1] is not goal_decider
    assert built[-1].closed == 1


async def test_a_given_decider_is_not_closed(h: Harness) -> None:
    given = Closable()
    config = h.config(claude=ClaudeSettings(binary=str(h.root / "no-such-claude")))
    async with orchestrator(config, decider=given) as (orch, _):
        outcome = await orch.run_goal(h.goal("g1"))
    assert outcome.kind is GoalEndKind.ESCALATED
    assert given.closed == 0
