"""``nexo-trio transcript GOAL [--turn N] [--raw]`` and the summary ``nexo-trio run`` ends
with (issue 12), through the CLI with the fake claude: what each turn's transcript says, the
raw stream piped into ``nexo-trio replay -`` classified exactly as the run did, and the
user's mistakes as one-line errors."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from nexo_trio.cli.transcript import bytes_text, cost_text, seconds_text, tokens_text
from nexo_trio.testing import (
    api_error,
    bash,
    exit_with,
    hang,
    init,
    result,
    text,
    tool_result,
    tool_use,
    turn,
)
from tests.cli.helpers import (
    NEXO_TRIO,
    Setup,
    invoke,
    json_lines,
    make_setup,
    single_json,
    write_yaml,
)

WRONG = turn(
    init(),
    text("I'll write the file."),
    bash("echo bye > hello.txt"),
    text("Done."),
    result("Done.", cost_usd=0.0123),
)
RIGHT = turn(
    init(),
    tool_use("Read", {"file_path": "hello.txt"}),
    tool_result("bye\n"),
    bash("echo hi > hello.txt"),
    text("Fixed it.\nhello.txt says hi now."),
    result("Fixed it.", cost_usd=0.02),
)
CHECK = [{"kind": "file_match", "path": "hello.txt", "pattern": "^hi$"}]


def ledger(s: Setup, goal_id: str = "g1") -> list[dict[str, Any]]:
    r = invoke("events", goal_id, "--state-dir", s.state_dir, "--json")
    assert r.exit_code == 0, r.output
    return json_lines(r.stdout)


def completed(s: Setup) -> list[dict[str, Any]]:
    return [row["data"] for row in ledger(s) if row["kind"] == "attempt_completed"]


def run_two_turns(tmp_path: Path, *, checkpoints: bool = False) -> tuple[Setup, Any]:
    s = make_setup(tmp_path, [WRONG, RIGHT])
    goal = s.goal(acceptance=CHECK)
    if checkpoints:
        data = yaml.safe_load(goal.read_text())
        write_yaml(goal, {**data, "checkpoints": True})
    return s, invoke("run", goal, "--config", s.config)


def pipe(*commands: list[str]) -> tuple[bytes, list[bytes]]:
    """Run ``commands`` as a shell pipeline of real processes: the last one's stdout, and
    every one's stderr."""
    procs: list[subprocess.Popen[bytes]] = []
    upstream = None
    for argv in commands:
        proc = subprocess.Popen(
            argv, stdin=upstream, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        if upstream is not None:
            upstream.close()
        upstream = proc.stdout
        procs.append(proc)
    out, last = procs[-1].communicate(timeout=30)
    errors = []
    for proc in procs[:-1]:
        assert proc.wait(timeout=30) == 0, proc.args
        assert proc.stderr is not None
        errors.append(proc.stderr.read())
        proc.stderr.close()
    assert procs[-1].returncode == 0, procs[-1].args
    return out, [*errors, last]


def raw_then_replay(s: Setup, turn_number: int) -> tuple[dict[str, Any], list[bytes]]:
    out, errors = pipe(
        [str(NEXO_TRIO), "transcript", "g1", "--turn", str(turn_number), "--raw",
         "--state-dir", str(s.state_dir)],
        [str(NEXO_TRIO), "replay", "-"],
    )  # fmt: skip
    data: dict[str, Any] = json.loads(out)
    return data, errors


# --------------------------------------------------------------------------- transcript


def test_the_transcript_says_what_each_turn_did(tmp_path: Path) -> None:
    s, run = run_two_turns(tmp_path)
    assert run.exit_code == 0, run.output
    r = invoke("transcript", "g1", "--state-dir", s.state_dir)
    assert r.exit_code == 0, r.output
    out = r.stdout
    assert out.startswith("goal g1: Create hello.txt containing the word hi.\n")
    assert "══ run 1 · " in out
    first, second = out.split("── turn ")[1:]
    # Turn 1: the prompt, Claude's texts around its call, the decision, the result's size.
    assert first.startswith("1 · ")
    assert "prompt: Goal: Create hello.txt containing the word hi." in first
    assert first.index("claude: I'll write the file.") < first.index("tool Bash echo bye")
    assert first.index("tool Bash echo bye > hello.txt") < first.index("claude: Done.")
    assert "    permission allow_once by rules [workspace" in first
    assert "    → 31 B\n" in first  # "(Bash completed with no output)"
    assert "outcome: claimed_done (completed) — 120 tokens, $0.01, " in first
    assert "acceptance: not met (0 of 1 passed)" in first
    assert "    ✗ file_match: hello.txt ~ /^hi$/: hello.txt does not match /^hi$/" in first
    assert re.search(r"raw stream: .*/streams/g1/turn-1-\S+\.ndjson\.gz\n", first)
    # Turn 2: the failures in its prompt, a call the CLI allowed itself, a text of lines.
    assert "prompt:\n    You said the goal was done, but these acceptance checks fail:" in second
    assert "tool Read hello.txt\n    → 4 B\n" in second  # no permission asked
    assert "claude:\n    Fixed it.\n    hello.txt says hi now.\n" in second
    assert "acceptance: met (1 of 1 passed)" in second
    assert "    ✓ file_match: hello.txt ~ /^hi$/" in second
    last = out.rstrip().splitlines()[-1]
    assert re.fullmatch(r"══ goal done · 2 turn\(s\), 240 tokens, \$0\.03, \d+\.\ds", last)


def test_one_turn_of_the_transcript_and_what_a_git_workspace_changed(tmp_path: Path) -> None:
    s, run = run_two_turns(tmp_path, checkpoints=True)
    assert run.exit_code == 0, run.output
    r = invoke("transcript", "g1", "--turn", "2", "--state-dir", s.state_dir)
    assert r.exit_code == 0, r.output
    assert r.stdout.count("── turn ") == 1
    assert "── turn 2 · " in r.stdout
    assert "══" not in r.stdout  # the runs' lines are the whole transcript's
    assert "changes: 1 file, +1 -1: modified hello.txt" in r.stdout
    one = invoke("transcript", "g1", "--turn", "1", "--state-dir", s.state_dir)
    assert "changes: 1 file, +1 -0: added hello.txt" in one.stdout


def test_a_denied_call_shows_its_decision_and_its_error(tmp_path: Path) -> None:
    s = make_setup(
        tmp_path,
        [turn(init(), bash("rm -rf *"), bash("echo hi > hello.txt"), result("Done."))],
    )
    assert invoke("run", s.goal(), "--config", s.config).exit_code == 0
    out = invoke("transcript", "g1", "--state-dir", s.state_dir).stdout
    denied = out[out.index("tool Bash rm -rf *") :]
    lines = denied.splitlines()
    assert lines[1].startswith("    permission deny by rules [destructive, ")
    assert re.fullmatch(r"    → error, \d+ B", lines[2])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nope"], "Error: no events recorded for goal 'nope'"),
        (["g1", "--turn", "7"], "Error: goal 'g1' has no turn 7 (its turns: 1, 2)"),
        (["g1", "--turn", "7", "--raw"], "Error: goal 'g1' has no turn 7 (its turns: 1, 2)"),
    ],
)
def test_a_goal_or_turn_that_is_not_there_is_one_line(
    tmp_path: Path, args: list[str], message: str
) -> None:
    s, _ = run_two_turns(tmp_path)
    r = invoke("transcript", *args, "--state-dir", s.state_dir)
    assert r.exit_code == 2
    assert r.stderr == message + "\n"
    assert r.stdout == ""


def test_nothing_recorded_and_a_raw_stream_that_is_gone_are_one_line(tmp_path: Path) -> None:
    empty = invoke("transcript", "g1", "--state-dir", tmp_path / "nowhere")
    assert empty.exit_code == 2
    assert empty.stderr.startswith("Error: nothing recorded yet: ")
    s, _ = run_two_turns(tmp_path)
    for stream in (s.state_dir / "streams" / "g1").iterdir():
        stream.unlink()
    r = invoke("transcript", "g1", "--turn", "1", "--raw", "--state-dir", s.state_dir)
    assert r.exit_code == 2
    assert r.stderr.startswith("Error: no raw stream kept for turn 1 of goal 'g1': ")
    assert r.stderr.count("\n") == 1
    # The transcript itself still reads (from the ledger), and says the stream is gone.
    text_out = invoke("transcript", "g1", "--state-dir", s.state_dir).stdout
    assert "(no longer there)" in text_out


# --------------------------------------------------------------------------- --raw


def test_the_raw_stream_replays_to_the_recorded_outcome(tmp_path: Path) -> None:
    s = make_setup(tmp_path, [turn(init(), api_error(529)), WRONG, RIGHT])
    assert invoke("run", s.goal(acceptance=CHECK), "--config", s.config).exit_code == 0
    recorded = completed(s)
    assert [(a["turn"], a["kind"], a["cause"]) for a in recorded] == [
        (1, "continue", "api_error_retryable"),
        (2, "claimed_done", "completed"),
        (3, "claimed_done", "completed"),
    ]
    for number, expected in enumerate(recorded, start=1):
        replay, (transcript_err, replay_err) = raw_then_replay(s, number)
        assert (replay["outcome"]["kind"], replay["outcome"]["cause"]) == (
            expected["kind"],
            expected["cause"],
        )
        assert replay["outcome"]["reason"] == expected["reason"]
        assert replay["session_id"] == expected["session_id"]
        assert replay["usage"] == expected["usage"]
        assert (transcript_err, replay_err) == (b"", b"")
    # Without --turn: the goal's last turn, and stderr says which.
    r = invoke("transcript", "g1", "--raw", "--state-dir", s.state_dir)
    assert r.exit_code == 0
    assert r.stderr == "note: the raw stream of turn 3, the goal's last\n"
    assert b'"result":"Fixed it."' in r.stdout_bytes


def test_a_turn_the_engine_interrupted_replays_as_it_ended(tmp_path: Path) -> None:
    """A stdio turn stopped by its deadline (our interrupt; the CLI ends the turn with an
    error result): the copy marks where the stop began, so the raw stream replays to the
    recorded timeout, not to the error its result frame says, and no hint is needed."""
    s = make_setup(tmp_path, [turn(init(), hang()), RIGHT], config={"turn_timeout": "2s"})
    assert invoke("run", s.goal(acceptance=CHECK), "--config", s.config).exit_code == 0
    first = completed(s)[0]
    assert (first["kind"], first["cause"], first["stop_actions"]) == (
        "continue",
        "timeout",
        ["interrupt"],
    )
    replay, (transcript_err, replay_err) = raw_then_replay(s, 1)
    assert (replay["outcome"]["kind"], replay["outcome"]["cause"]) == ("continue", "timeout")
    assert replay["outcome"]["reason"] == first["reason"]
    assert replay["session_id"] == first["session_id"]
    assert (transcript_err, replay_err) == (b"", b"")


def test_a_turn_judged_by_its_exit_says_how_to_replay_it(tmp_path: Path) -> None:
    s = make_setup(tmp_path, [turn(init(), text("Oops."), exit_with(3)), RIGHT])
    assert invoke("run", s.goal(acceptance=CHECK), "--config", s.config).exit_code == 0
    first = completed(s)[0]
    assert (first["kind"], first["cause"], first["exit_code"]) == ("continue", "exit_error", 3)
    r = invoke("transcript", "g1", "--turn", "1", "--raw", "--state-dir", s.state_dir)
    assert r.stderr == (
        "note: no result frame, and the CLI exited with 3: replay with --exit-code 3\n"
    )
    stream = tmp_path / "turn-1.ndjson"
    stream.write_bytes(r.stdout_bytes)
    replayed = json.loads(invoke("replay", stream, "--exit-code", "3").stdout)
    assert (replayed["outcome"]["kind"], replayed["outcome"]["cause"]) == ("continue", "exit_error")
    assert replayed["outcome"]["reason"] == first["reason"]


def test_the_raw_stream_is_the_cli_output_byte_for_byte(tmp_path: Path) -> None:
    s, _ = run_two_turns(tmp_path)
    r = invoke("transcript", "g1", "--turn", "1", "--raw", "--state-dir", s.state_dir)
    assert r.exit_code == 0, r.output
    frames = [json.loads(line) for line in r.stdout_bytes.splitlines()]
    # On the stdio transport the CLI's stdout also carries the control protocol: its
    # answers to our requests, its asks, and the user messages it echoes as it takes them.
    protocol = {"control_request", "control_response"}
    assert any(f["type"] == "control_response" for f in frames)
    frames = [f for f in frames if f["type"] not in protocol and not f.get("isReplay")]
    assert [f["type"] for f in frames] == [
        "system",
        "assistant",
        "assistant",
        "user",
        "assistant",
        "result",
    ]
    assert frames[-1]["result"] == "Done."
    assert r.stderr == ""


# --------------------------------------------------------------------------- the run summary


def test_run_ends_with_a_summary_of_the_turns(tmp_path: Path) -> None:
    s, run = run_two_turns(tmp_path, checkpoints=True)
    assert run.exit_code == 0, run.output
    lines = run.stdout.splitlines()
    assert re.fullmatch(r"done — 2 turn\(s\), 240 tokens, \$0\.03, \d+\.\ds", lines[0])
    assert re.fullmatch(
        r"  turn 1: claimed_done, 120 tokens, \$0\.01, \d+\.\ds; checks failed: "
        r"file_match: hello\.txt ~ /\^hi\$/ \(hello\.txt does not match /\^hi\$/\)",
        lines[1],
    )
    assert re.fullmatch(
        r"  turn 2: claimed_done, 120 tokens, \$0\.02, \d+\.\ds; checks met \(1/1\)", lines[2]
    )
    assert lines[3] == "  files changed: 1 (+2 -1): hello.txt — nexo-trio diff g1"
    assert lines[4] == f"  transcript: nexo-trio transcript g1 --state-dir {s.state_dir}"
    assert len(lines) == 5


def test_with_json_the_summary_goes_to_stderr(tmp_path: Path) -> None:
    s = make_setup(tmp_path, [turn(init(), api_error(529)), RIGHT])
    r = invoke("run", s.goal(acceptance=CHECK), "--config", s.config, "--json")
    assert r.exit_code == 0, r.output
    outcome = single_json(r.stdout)  # stdout: exactly the one JSON object, exact numbers
    assert outcome["usage"]["cost_usd"] == 0.02
    summary = r.stderr[r.stderr.index("done — 2 turn(s), 240 tokens, $0.02, ") :].splitlines()
    assert summary[1].startswith("  turn 1: continue (API Error: 529 boom), 120 tokens, $0, ")
    assert summary[2].startswith("  turn 2: claimed_done, 120 tokens, $0.02, ")
    assert summary[3] == f"  transcript: nexo-trio transcript g1 --state-dir {s.state_dir}"
    assert len(summary) == 4  # not on git: no files line


def test_a_rerun_of_a_done_goal_summarises_its_turns_again(tmp_path: Path) -> None:
    s, first = run_two_turns(tmp_path)
    again = invoke("run", s.goal(acceptance=CHECK), "--config", s.config)
    assert again.exit_code == 0
    assert again.stdout.splitlines()[1:] == first.stdout.splitlines()[1:]


# --------------------------------------------------------------------------- numbers


@pytest.mark.parametrize(
    ("value", "shown"),
    [(0, "0"), (999, "999"), (1000, "1k"), (12_345, "12.3k"), (999_949, "999.9k"),
     (999_950, "1M"), (2_500_000, "2.5M")],
)  # fmt: skip
def test_tokens_for_people(value: int, shown: str) -> None:
    assert tokens_text(value) == shown


@pytest.mark.parametrize(
    ("value", "shown"),
    [(0.0, "$0"), (0.00001, "<$0.0001"), (0.0012345, "$0.0012"), (0.0123, "$0.01"),
     (1.234, "$1.23"), (123.456, "$123.46")],
)  # fmt: skip
def test_money_for_people(value: float, shown: str) -> None:
    assert cost_text(value) == shown


@pytest.mark.parametrize(
    ("value", "shown"),
    [(0.42, "0.4s"), (42.4, "42s"), (192.0, "3m 12s"), (3900.0, "1h 5m")],
)
def test_durations_and_sizes_for_people(value: float, shown: str) -> None:
    assert seconds_text(value) == shown
    assert (bytes_text(512), bytes_text(1536), bytes_text(5 << 20)) == (
        "512 B",
        "1.5 KiB",
        "5.0 MiB",
    )
