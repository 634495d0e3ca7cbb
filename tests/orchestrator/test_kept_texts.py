"""What the ledger keeps, the CLI prints and the next prompt says is redacted and bounded
(issue 10): a check that prints the environment does not put a secret into the ledger or
the model's next prompt, and a huge result text is not stored whole."""

from __future__ import annotations

import gzip
import os
import sqlite3
import stat

import orjson
import pytest

from nexo_trio.core.goal import ShellCheck
from nexo_trio.core.goal_events import AcceptanceChecked, AttemptCompleted, AttemptStarted
from nexo_trio.core.goal_outcome import GoalEndKind
from nexo_trio.core.kept_text import TEXT_CAP
from nexo_trio.core.redact import REDACTED
from nexo_trio.testing import bash, init, result, text, turn

from .conftest import Harness, orchestrator

SECRET = "s3cr3t-value-of-the-deploy-token"


def _ledger_texts(h: Harness) -> list[str]:
    with sqlite3.connect(h.root / "state" / "nexo.db") as db:
        return [str(row[0]) for row in db.execute("SELECT data FROM ledger ORDER BY seq")]


async def test_a_secret_a_check_prints_is_kept_nowhere(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Checks run in this process's environment; turns in the one the orchestrator is given.
    monkeypatch.setenv("DEPLOY_TOKEN", SECRET)
    environ = {"PATH": os.environ["PATH"], "DEPLOY_TOKEN": SECRET}
    fake = h.fake(
        turn(init(), text("Done."), result("Done.")),
        turn(init(), bash("echo hi > ok.txt"), text("Fixed."), result("Fixed.")),
    )
    # The check dumps its environment, then fails until ok.txt exists.
    check = ShellCheck(command="env; test -f ok.txt", label="env dump")
    async with orchestrator(h.config(fake), sqlite=True, environ=environ) as (orch, rec):
        outcome = await orch.run_goal(h.goal(acceptance=(check,)))

    assert outcome.kind is GoalEndKind.DONE
    first_check = rec.of(AcceptanceChecked)[0]
    assert f"DEPLOY_TOKEN={REDACTED}" in first_check.results[0].evidence
    _, second = fake.invocations()
    assert f"DEPLOY_TOKEN={REDACTED}" in second["prompt"]  # the failure went back, redacted
    assert SECRET not in second["prompt"]
    assert all(SECRET not in row for row in _ledger_texts(h))
    assert SECRET not in repr(rec.events())
    assert SECRET not in repr(outcome)


async def test_a_huge_result_text_is_kept_capped(h: Harness) -> None:
    huge = "z" * (8 * 1024 * 1024)
    fake = h.fake(turn(init(), bash("echo hi > ok.txt"), text("Done."), result(huge)))
    async with orchestrator(h.config(fake), sqlite=True) as (orch, rec):
        outcome = await orch.run_goal(h.goal())

    assert outcome.kind is GoalEndKind.DONE
    (completed,) = rec.of(AttemptCompleted)
    assert completed.final_text is not None
    assert completed.final_text.startswith("z" * TEXT_CAP)
    assert completed.final_text.endswith(f"[... {len(huge) - TEXT_CAP} more characters not kept]")
    assert outcome.final_text == completed.final_text
    rows = _ledger_texts(h)
    assert max(len(row) for row in rows) < 2 * TEXT_CAP
    ledger_final = [orjson.loads(r).get("final_text") for r in rows if '"final_text"' in r]
    assert completed.final_text in ledger_final
    assert len(rec.of(AttemptStarted)) == 1
    # The raw copy of the turn's stdout keeps every byte, privately.
    (stream,) = (h.root / "state" / "streams" / "g1").iterdir()
    assert stream.name.startswith("turn-1-")
    assert stream.name.endswith(".ndjson.gz")  # compressed (see tests/orchestrator/test_record.py)
    assert stat.S_IMODE(stream.stat().st_mode) == 0o600
    assert stat.S_IMODE(stream.parent.stat().st_mode) == 0o700
    raw = gzip.decompress(stream.read_bytes())
    finals = [orjson.loads(line) for line in raw.splitlines() if b'"result"' in line]
    assert huge in [frame.get("result") for frame in finals]
