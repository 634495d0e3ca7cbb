"""The full record of a real-CLI turn (issue 12): its ledger has Claude's texts and its tool
call tied to the gate's decision by the id the CLI gave it, and its raw stream, written out
by ``nexo-trio transcript --raw``, replays (``nexo-trio replay -``) to the outcome the run
recorded."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

from nexo_trio.core.goal import ShellCheck
from nexo_trio.core.goal_events import AssistantText, AttemptCompleted, DecisionMade, ToolCalled
from nexo_trio.core.goal_outcome import GoalEndKind
from nexo_trio.testing.messages_api import Reply, last_message_has_tool_result, nth, text, tool_use
from tests.e2e.conftest import E2E

pytestmark = pytest.mark.real_claude

NEXO_TRIO = Path(sys.executable).parent / "nexo-trio"


def transcript_then_replay(state_dir: Path, turn: int) -> tuple[dict[str, Any], bytes]:
    """``nexo-trio transcript g1 --turn N --raw | nexo-trio replay -``: the replay's JSON
    and the transcript's stderr."""
    raw = subprocess.Popen(
        [str(NEXO_TRIO), "transcript", "g1", "--turn", str(turn), "--raw",
         "--state-dir", str(state_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    assert raw.stdout is not None
    replay = subprocess.run(
        [str(NEXO_TRIO), "replay", "-"],
        stdin=raw.stdout,
        capture_output=True,
        timeout=60,
        check=False,
    )
    raw.stdout.close()
    _, notes = raw.communicate(timeout=60)
    assert (raw.returncode, replay.returncode) == (0, 0), (notes, replay.stderr)
    assert replay.stderr == b""
    data: dict[str, Any] = json.loads(replay.stdout)
    return data, notes


async def test_a_real_turns_record_and_its_stream_replay_to_its_outcome(e2e: E2E) -> None:
    e2e.api.add(
        Reply(
            nth(0),
            tool_use(
                "Bash",
                {"command": "echo hi > hello.txt"},
                text="Let me create it.",
                id="toolu_e2e_rec",
            ),
        ),
        Reply(nth(1) & last_message_has_tool_result(), text("Created hello.txt. Done.")),
    )
    goal = e2e.goal(
        "Create hello.txt containing the word hi.", [ShellCheck("grep -qx hi hello.txt")]
    )

    run = await e2e.run(goal)
    assert run.outcome.kind is GoalEndKind.DONE, run.outcome

    # The ledger: Claude's text, the call (its result's size), the decision naming it.
    (call,) = run.of(ToolCalled)
    assert (call.name, call.input, call.tool_use_id) == (
        "Bash",
        {"command": "echo hi > hello.txt"},
        "toolu_e2e_rec",
    )
    assert call.result_bytes is not None
    assert not call.is_error
    (decision,) = run.of(DecisionMade)
    assert (decision.tool_use_id, decision.subject) == ("toolu_e2e_rec", "echo hi > hello.txt")
    assert [t.text for t in run.of(AssistantText)] == [
        "Let me create it.",
        "Created hello.txt. Done.",
    ]
    assert {"tool_called", "assistant_text"} <= set(run.ledger_kinds())

    # The raw stream replays exactly as the run classified the turn.
    (attempt,) = run.of(AttemptCompleted)
    replayed, notes = await trio.to_thread.run_sync(transcript_then_replay, e2e.state_dir, 1)
    assert notes == b""
    outcome = replayed["outcome"]
    assert (outcome["kind"], outcome["cause"]) == (attempt.kind, attempt.cause)
    assert replayed["session_id"] == attempt.session_id
    assert replayed["usage"] == {
        "input_tokens": attempt.usage.input_tokens,
        "output_tokens": attempt.usage.output_tokens,
        "cache_read_input_tokens": attempt.usage.cache_read_input_tokens,
        "cache_creation_input_tokens": attempt.usage.cache_creation_input_tokens,
    }
    assert replayed["final_text"] == attempt.final_text

    # And the readable transcript says what happened.
    shown = await trio.to_thread.run_sync(
        lambda: (
            subprocess.run(
                [str(NEXO_TRIO), "transcript", "g1", "--state-dir", str(e2e.state_dir)],
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
            ).stdout
        )
    )
    assert "tool Bash echo hi > hello.txt\n    permission allow_once by rules [workspace" in shown
    assert "claude: Created hello.txt. Done." in shown
    assert "outcome: claimed_done (completed)" in shown
    assert "acceptance: met (1 of 1 passed)" in shown
