"""A goal's workspace is its own and never lets a turn write the state directory: the
orchestrator refuses, before anything runs or is recorded, a workspace that is the state dir,
the shared workspace root, or above either, and a layout whose ``sandbox.writable`` holds the
state dir (issue 10, defects 3 and 4)."""

from __future__ import annotations

import attrs
import pytest

from nexo_trio import LayoutError
from nexo_trio.core.settings import SandboxSettings
from nexo_trio.store import MemoryStore
from nexo_trio.testing import turn

from .conftest import Harness, orchestrator
from .test_goal_loop import does_it


@pytest.mark.parametrize(
    ("where", "words"),
    [
        ("state", "is the state dir"),
        ("state/gate", "is inside the state dir"),
        (".", "holds the state dir"),
        ("workspaces", "is the workspace root"),
        ("link-to-state", "is the state dir"),  # a symlink is followed
    ],
)
async def test_a_workspace_that_is_not_the_goals_own_is_refused(
    h: Harness, where: str, words: str
) -> None:
    fake = h.fake(turn(*does_it()))
    (h.root / "state").mkdir()
    (h.root / "link-to-state").symlink_to(h.root / "state")
    goal = attrs.evolve(h.goal(), workspace=str(h.root / where))
    store = MemoryStore()
    async with orchestrator(h.config(fake), store=store) as (orch, rec):
        with pytest.raises(LayoutError, match=words):
            await orch.start_goal(goal)
        assert orch.running() == []
    assert rec.events() == []
    assert await store.events("g1") == []
    assert fake.invocations() == []


async def test_a_workspace_root_holding_the_state_dir_as_a_goal_is_refused(h: Harness) -> None:
    """With the state dir inside the workspace root, the goal named like it would get it
    as its workspace."""
    fake = h.fake(turn(*does_it()))
    config = h.config(fake, workspace_root=str(h.root), state_dir=str(h.root / "state"))
    async with orchestrator(config) as (orch, _):
        with pytest.raises(LayoutError, match="is the state dir"):
            await orch.start_goal(h.goal("state"))
        outcome = await orch.run_goal(h.goal("other"))
    assert outcome.kind.value == "done"
    assert (h.root / "other" / "ok.txt").exists()


@pytest.mark.parametrize("writable", [".", "state", "state/gate"])
async def test_a_writable_path_holding_or_inside_the_state_dir_is_refused(
    h: Harness, writable: str
) -> None:
    config = h.config(sandbox=SandboxSettings(mode="none", writable=(str(h.root / writable),)))
    with pytest.raises(LayoutError, match=r"^sandbox\.writable: "):
        async with orchestrator(config):
            pass


async def test_a_workspace_root_that_is_the_state_dir_is_refused(h: Harness) -> None:
    config = h.config(workspace_root=str(h.root / "state"))
    with pytest.raises(LayoutError, match="is also workspace_root"):
        async with orchestrator(config):
            pass
