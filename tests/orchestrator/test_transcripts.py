"""Session transcripts kept in the store and restored on another host (orchestrator/
transcripts.py), on a real SQLite store (the shared-store API; PostgreSQL passes the same
contract in tests/store/test_shared_contract.py)."""

from __future__ import annotations

import stat
import uuid
from pathlib import Path

from nexo_trio.orchestrator.transcripts import (
    claude_dir,
    keep_transcript,
    restore_transcript,
    transcript_path,
)
from nexo_trio.store.sqlite import open_sqlite_store

SESSION = str(uuid.uuid4())


def test_the_cli_s_path_of_a_session() -> None:
    cwd = Path("/tmp/e2e bt/test_x-0/ws")
    path = transcript_path(Path("/h/.claude"), cwd, SESSION)
    assert path == Path(f"/h/.claude/projects/-tmp-e2e-bt-test-x-0-ws/{SESSION}.jsonl")
    # Only a UUID is ever made into a path.
    assert transcript_path(Path("/h/.claude"), cwd, "../../etc/passwd") is None
    assert claude_dir({"HOME": "/h"}) == Path("/h/.claude")
    assert claude_dir({"HOME": "/h", "CLAUDE_CONFIG_DIR": "/c"}) == Path("/c")
    assert claude_dir({"HOME": None}) is None


async def test_a_kept_transcript_is_restored_into_another_config_dir(tmp_path: Path) -> None:
    cwd = tmp_path / "ws"
    here, there = tmp_path / "home-a" / ".claude", tmp_path / "home-b" / ".claude"
    original = transcript_path(here, cwd, SESSION)
    assert original is not None
    original.parent.mkdir(parents=True)
    content = b'{"type":"user","message":"hi"}\n' * 5000
    original.write_bytes(content)
    async with open_sqlite_store(tmp_path / "state" / "nexo.db") as store:
        await keep_transcript(store, "g", here, SESSION, cwd)
        assert await restore_transcript(store, "g", there, SESSION, cwd)
        restored = transcript_path(there, cwd, SESSION)
        assert restored is not None
        assert restored.read_bytes() == content
        assert stat.S_IMODE(restored.stat().st_mode) == 0o600
        # A file that is there already is left alone; nothing kept, nothing written.
        restored.write_bytes(b"newer\n")
        assert not await restore_transcript(store, "g", there, SESSION, cwd)
        assert restored.read_bytes() == b"newer\n"
        other = str(uuid.uuid4())
        assert not await restore_transcript(store, "g", there, other, cwd)
        assert not await restore_transcript(store, "g", there, "not-a-uuid", cwd)
        # A missing file is not an error: nothing is kept.
        await keep_transcript(store, "g", here, other, cwd)
        assert await store.get_transcript("g", other) is None
