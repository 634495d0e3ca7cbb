"""The workspace and state-dir rules: no turn can write the state directory, and each goal's
workspace is its own."""

from __future__ import annotations

from pathlib import PurePosixPath as P

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nexo_trio.core.layout import layout_problem, workspace_problem

STATE = P("/srv/state")
ROOT = P("/srv/state/workspaces")


@pytest.mark.parametrize(
    ("workspace", "words"),
    [
        ("/srv/state", "is the state dir"),
        ("/srv", "holds the state dir"),
        ("/", "holds the state dir"),
        ("/srv/state/workspaces", "is the workspace root"),
        ("/srv/state/gate", "is inside the state dir"),
        ("/srv/state/run/x", "is inside the state dir"),
        ("/srv/state/scratch/other", "is inside the state dir"),
    ],
)
def test_a_workspace_that_is_not_the_goals_own_is_refused(workspace: str, words: str) -> None:
    problem = workspace_problem(P(workspace), state_dir=STATE, workspace_root=ROOT)
    assert problem is not None
    assert words in problem
    assert workspace in problem


@pytest.mark.parametrize(
    "workspace",
    ["/srv/state/workspaces/g1", "/srv/state/workspaces/a/b", "/home/me/repo", "/tmp/w"],
)
def test_a_workspace_of_its_own_is_accepted(workspace: str) -> None:
    assert workspace_problem(P(workspace), state_dir=STATE, workspace_root=ROOT) is None


def test_a_workspace_root_elsewhere_is_shared_and_not_a_workspace() -> None:
    root = P("/data/ws")
    assert workspace_problem(P("/data/ws/g"), state_dir=STATE, workspace_root=root) is None
    problem = workspace_problem(P("/data"), state_dir=STATE, workspace_root=root)
    assert problem is not None
    assert "holds the workspace root" in problem
    # With the root elsewhere, nothing inside the state dir is a workspace.
    inside = workspace_problem(P("/srv/state/workspaces/g"), state_dir=STATE, workspace_root=root)
    assert inside is not None
    assert "inside the state dir" in inside


@pytest.mark.parametrize(
    ("root", "writable", "words"),
    [
        ("/srv/state", (), "is also workspace_root"),
        ("/srv/state/gate", (), "own entries"),
        ("/srv/state/run/ws", (), "own entries"),
        ("/srv/state/nexo.db-wal", (), "own entries"),
        ("/srv/state/workspaces", ("/srv",), "sandbox.writable: /srv holds the state dir"),
        ("/srv/state/workspaces", ("/srv/state",), "holds the state dir"),
        ("/srv/state/workspaces", ("/tmp", "/srv/state/gate"), "is inside the state dir"),
    ],
)
def test_a_layout_that_lets_turns_write_the_state_dir_is_refused(
    root: str, writable: tuple[str, ...], words: str
) -> None:
    problem = layout_problem(
        state_dir=STATE, workspace_root=P(root), writable=[P(w) for w in writable]
    )
    assert problem is not None
    assert words in problem


def test_the_default_layout_and_sound_writable_paths_are_accepted() -> None:
    writable = [P("/tmp"), P("/srv/state/workspaces/shared"), P("/home/me/.cache")]
    assert layout_problem(state_dir=STATE, workspace_root=ROOT, writable=writable) is None
    # The state dir inside the workspace root: no goal id names it (ids never start with
    # '.'), and an explicit workspace holding it is refused by workspace_problem.
    assert layout_problem(state_dir=P("/r/.nexo"), workspace_root=P("/r")) is None


names = st.sampled_from(["a", "b", "state", "ws", "gate", "run"])
paths = st.lists(names, max_size=4).map(lambda parts: P("/", *parts))


def _within(path: P, area: P) -> bool:
    return path == area or area in path.parents


@given(workspace=paths, state=paths, root=paths)
def test_an_accepted_workspace_never_lets_a_turn_write_the_state_dir(
    workspace: P, state: P, root: P
) -> None:
    if workspace_problem(workspace, state_dir=state, workspace_root=root) is None:
        assert not _within(state, workspace)
        assert not _within(root, workspace)
        if _within(workspace, state):
            assert _within(workspace, root)
            assert workspace != root


@given(state=paths, root=paths, writable=st.lists(paths, max_size=3))
def test_an_accepted_layout_never_lets_a_turn_write_the_state_dir(
    state: P, root: P, writable: list[P]
) -> None:
    if layout_problem(state_dir=state, workspace_root=root, writable=writable) is None:
        assert state != root
        for path in writable:
            assert not _within(state, path)
            if _within(path, state):
                assert _within(path, root)
