"""``nexo-trio replay``: every recording replays to its documented outcome."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import attrs
import pytest
from click.testing import CliRunner, Result

from nexo_trio.cli import main
from tests.conftest import FIXTURES

STREAMS = FIXTURES / "stream-json"
USAGE_KEYS = {
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
}


@attrs.frozen
class Recording:
    kind: str
    exit_code: int  # as the fixtures README says the CLI exited
    cost_usd: float
    session_invalid: bool = False
    hint: str | None = None


# From tests/fixtures/claude-cli-2.1.332/README.md; costs are each run's own
# (model_usage_since_last_result), never the cumulative total_cost_usd.
RECORDINGS: dict[str, Recording] = {
    "allow.ndjson": Recording("claimed_done", 0, 0.000969),
    "deny.ndjson": Recording("claimed_done", 0, 0.000981),
    "iserror.ndjson": Recording("claimed_done", 0, 0.001173),
    "maxturns.ndjson": Recording("escalate", 0, 0.000513),
    "partial.ndjson": Recording("claimed_done", 0, 0.001095),
    "sess2.ndjson": Recording("claimed_done", 0, 0.001047),
    "api_error_400.ndjson": Recording("escalate", 1, 0.0),
    "api_error_529.ndjson": Recording("continue", 1, 0.0),
    "prompt_too_long.ndjson": Recording("continue", 1, 0.0, hint="compact"),
    "resume_unknown.ndjson": Recording("continue", 1, 0.0, session_invalid=True),
    "resume_not_uuid.ndjson": Recording("continue", 1, 0.0, session_invalid=True),
}


def replay(*args: str, stdin: bytes | None = None) -> Result:
    return CliRunner().invoke(main, ["replay", *args], input=stdin)


def replay_json(*args: str, stdin: bytes | None = None) -> dict[str, Any]:
    result = replay(*args, stdin=stdin)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 1  # one JSON object, one line
    data: dict[str, Any] = json.loads(lines[0])
    return data


def test_every_recording_is_covered() -> None:
    assert sorted(p.name for p in STREAMS.glob("*.ndjson")) == sorted(RECORDINGS)


@pytest.mark.parametrize("name", sorted(RECORDINGS))
def test_recordings_replay_to_their_documented_outcome(name: str) -> None:
    expected = RECORDINGS[name]
    path = STREAMS / name
    lines = [json.loads(line) for line in path.read_bytes().splitlines() if line.strip()]
    result_frame = next(f for f in lines if f["type"] == "result")

    out = replay_json(str(path), "--exit-code", str(expected.exit_code))
    assert out["outcome"]["kind"] == expected.kind
    assert out["outcome"].get("hint") == expected.hint
    if expected.kind != "claimed_done":
        assert out["outcome"]["reason"]
    assert out["session_id"] == lines[-1]["session_id"]
    assert out["session_invalid"] is expected.session_invalid
    assert set(out["usage"]) == USAGE_KEYS
    assert out["usage"] == {k: result_frame["usage"][k] for k in USAGE_KEYS}
    assert out["cost_usd"] == pytest.approx(expected.cost_usd, abs=1e-12)
    assert out["malformed_lines"] == 0
    assert out["events"] == len(lines)
    if expected.kind == "claimed_done":
        assert out["final_text"] == result_frame["result"]

    # A result frame decides: the exit code does not change the verdict.
    for other in ("0", "1", "143"):
        again = replay_json(str(path), "--exit-code", other)
        assert again["outcome"] == out["outcome"]
        assert again["session_invalid"] == out["session_invalid"]


def test_resumed_cost_is_not_the_cumulative_total() -> None:
    out = replay_json(str(STREAMS / "sess2.ndjson"))
    assert out["cost_usd"] == pytest.approx(0.001047)
    assert out["cumulative_cost_usd"] == pytest.approx(0.002082)


def test_missing_file_is_a_usage_error_naming_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.ndjson"
    result = replay(str(missing))
    assert result.exit_code == 2
    assert "nope.ndjson" in result.stderr
    assert "Traceback" not in result.output
    assert result.stdout == ""
    assert isinstance(result.exception, SystemExit)


def test_directory_is_a_usage_error(tmp_path: Path) -> None:
    result = replay(str(tmp_path))
    assert result.exit_code == 2
    assert "Traceback" not in result.output


def truncated(tmp_path: Path) -> Path:
    """allow.ndjson cut in the middle of its last assistant frame: no result frame."""
    lines = (STREAMS / "allow.ndjson").read_bytes().splitlines(keepends=True)
    path = tmp_path / "truncated.ndjson"
    path.write_bytes(b"".join(lines[:3]) + lines[3][: len(lines[3]) // 2])
    return path


def test_no_result_and_no_exit_code_is_a_clean_end(tmp_path: Path) -> None:
    out = replay_json(str(truncated(tmp_path)))
    assert out["outcome"]["kind"] == "continue"
    assert out["outcome"]["reason"] == "stream ended without result"
    assert out["session_id"] == "ae90ce3c-9239-47f8-a3d6-27fc90d07eb7"
    assert out["malformed_lines"] == 1  # the half line
    assert out["events"] == 4
    # No result frame: what the complete assistant frame reported, its cost estimated at
    # claude-sonnet-4-5's rates ($3 input, $15 output per million tokens).
    assert out["usage"] == {**dict.fromkeys(USAGE_KEYS, 0), "input_tokens": 101, "output_tokens": 1}
    assert out["cost_usd"] == pytest.approx((101 * 3 + 1 * 15) / 1e6)


@pytest.mark.parametrize("code", ["143", "137", "-15", "-9"])
def test_killed_truncated_stream_is_interrupted(tmp_path: Path, code: str) -> None:
    out = replay_json(str(truncated(tmp_path)), "--exit-code", code)
    assert out["outcome"]["kind"] == "continue"
    assert "interrupted" in out["outcome"]["reason"]
    assert out["outcome"]["cause"] == "interrupted"


def test_failed_truncated_stream_names_the_code(tmp_path: Path) -> None:
    out = replay_json(str(truncated(tmp_path)), "--exit-code", "2")
    assert out["outcome"]["kind"] == "continue"
    assert "code 2" in out["outcome"]["reason"]
    assert out["exit_code"] == 2


def test_garbage_is_counted_not_fatal(tmp_path: Path) -> None:
    path = tmp_path / "garbage.ndjson"
    path.write_bytes(b'\xff\xfe\x00garbage\nnot json at all\n[1, 2]\n\n{"type": \n\x80')
    result = replay(str(path))
    assert result.exit_code == 0
    out = json.loads(result.stdout)
    assert out["malformed_lines"] == 5
    assert out["events"] == 5
    assert out["outcome"]["kind"] == "continue"
    assert out["outcome"]["reason"] == "stream ended without result"


def test_oversized_lines_are_counted(tmp_path: Path) -> None:
    out = replay_json(str(STREAMS / "allow.ndjson"), "--line-cap", "1500")
    # The init and result lines are longer than 1500 bytes: the result is lost.
    assert out["oversized_lines"] == 2
    assert out["events"] == 5
    assert out["outcome"]["kind"] == "continue"
    assert out["outcome"]["reason"] == "stream ended without result"


def test_stream_from_stdin() -> None:
    data = (STREAMS / "resume_unknown.ndjson").read_bytes()
    out = replay_json("-", "--exit-code", "1", stdin=data)
    assert out["outcome"]["kind"] == "continue"
    assert out["session_invalid"] is True


def test_empty_stream(tmp_path: Path) -> None:
    path = tmp_path / "empty.ndjson"
    path.write_bytes(b"")
    out = replay_json(str(path))
    assert out["events"] == 0
    assert out["outcome"]["reason"] == "stream ended without result"
    assert out["session_id"] is None
