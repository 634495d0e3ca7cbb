"""The compressed raw copy of a turn's stdout (``.ndjson.gz``): every byte up to its cap,
then a line saying it was cut; readable while written and after its writer died; and
``nexo-trio replay`` reads it (a file or stdin) as it reads a plain one."""

from __future__ import annotations

import gzip
import io
import itertools
import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from nexo_trio.cli.replay import StreamNotes, replay_stream, stream_chunks
from nexo_trio.core.record import TRUNCATED_FRAME
from nexo_trio.engine import stream_copy
from nexo_trio.engine.stream_copy import StreamCopy
from tests.conftest import FIXTURES

NEXO_TRIO = Path(sys.executable).parent / "nexo-trio"
RECORDING = FIXTURES / "stream-json" / "allow.ndjson"


def lines(n: int, size: int = 100) -> bytes:
    return b"".join(
        json.dumps({"type": "x", "n": i, "pad": "y" * size}).encode() + b"\n" for i in range(n)
    )


async def test_a_gz_copy_is_compressed_whole_and_private(tmp_path: Path) -> None:
    path = tmp_path / "streams" / "g1" / "turn-1.ndjson.gz"
    copy = await StreamCopy.open(path)
    assert copy is not None
    chunks = [b'{"type":"system"}\n', b"\xff\xfe not utf-8", b"\n" * 3, lines(5000)]
    for chunk in chunks:
        await copy.write(chunk)
    await copy.aclose()
    data = b"".join(chunks)
    assert gzip.decompress(path.read_bytes()) == data
    assert path.stat().st_size < len(data) / 5  # ndjson compresses well
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert (copy.written, copy.truncated) == (len(data), False)


async def test_a_copy_past_its_cap_keeps_whole_lines_then_says_so(tmp_path: Path) -> None:
    path = tmp_path / "turn-1.ndjson.gz"
    copy = await StreamCopy.open(path, cap=1000)
    assert copy is not None
    stream = lines(40)  # ~4.5 kB, in chunks that do not end on a line
    for start in range(0, len(stream), 333):
        await copy.write(stream[start : start + 333])
    await copy.aclose()
    kept = gzip.decompress(path.read_bytes())
    *body, last = kept.splitlines(keepends=True)
    assert json.loads(last) == {
        "type": TRUNCATED_FRAME,
        "kept_bytes": copy.written,
        "cap_bytes": 1000,
    }
    kept_part = stream[: copy.written]
    # Ended so that the marker is a line of its own (a line begun in an earlier chunk is
    # kept as far as it was written).
    assert b"".join(body) == kept_part + (b"" if kept_part.endswith(b"\n") else b"\n")
    assert 1000 - 333 < copy.written <= 1000
    assert copy.dropped == len(stream) - copy.written
    # replay reads what was kept and says it was cut.
    notes = StreamNotes()
    with path.open("rb") as f:
        replay_stream(f, notes=notes)
    assert notes.truncated is not None
    assert notes.truncated["kept_bytes"] == copy.written
    assert "cut at its cap" in notes.problems()[0]


async def test_a_line_longer_than_the_cap_is_not_kept_at_all(tmp_path: Path) -> None:
    path = tmp_path / "turn-1.ndjson"  # plain: the cap holds as well
    copy = await StreamCopy.open(path, cap=100)
    assert copy is not None
    await copy.write(b'{"type":"a"}\n{"partial')
    await copy.write(b'":"' + b"z" * 500 + b'"}\n')
    await copy.write(b'{"type":"late"}\n')
    await copy.aclose()
    first, cut, marker = path.read_bytes().splitlines()
    assert first == b'{"type":"a"}'
    assert cut == b'{"partial'  # what fit before the cap, ended so the marker is a line
    assert json.loads(marker)["kept_bytes"] == len(b'{"type":"a"}\n{"partial')


async def test_the_default_cap_is_read_when_a_copy_is_opened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert stream_copy.STREAM_CAP == 256 * 1024 * 1024
    monkeypatch.setattr(stream_copy, "STREAM_CAP", 10)
    copy = await StreamCopy.open(tmp_path / "t.ndjson.gz")
    assert copy is not None
    assert copy.cap == 10
    await copy.aclose()


async def test_a_copy_whose_writer_died_reads_up_to_its_last_chunk(tmp_path: Path) -> None:
    path = tmp_path / "turn-1.ndjson.gz"
    copy = await StreamCopy.open(path)
    assert copy is not None
    recording = RECORDING.read_bytes()
    await copy.write(recording)
    # Killed here: never closed (the fd is left to the test's end).
    notes = StreamNotes()
    with path.open("rb") as f:
        assert b"".join(stream_chunks(f, notes)) == recording
        f.seek(0)
        outcome = replay_stream(f)
    assert notes.ended_early
    assert "ends early" in notes.problems()[0]
    with RECORDING.open("rb") as f:
        assert outcome == replay_stream(f)
    await copy.aclose()


async def test_writing_never_holds_the_event_loop(tmp_path: Path) -> None:
    # 8 MiB of incompressible-ish data: compressing it takes a while, in a worker thread;
    # a task that ticks every 5 ms keeps ticking meanwhile.
    copy = await StreamCopy.open(tmp_path / "turn-1.ndjson.gz")
    assert copy is not None
    data = b"".join(i.to_bytes(4, "big") * 3 for i in range(700_000))
    ticks: list[float] = []

    async def tick() -> None:
        while True:
            ticks.append(trio.current_time())
            await trio.sleep(0.005)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(tick)
        await trio.sleep(0.01)
        for start in range(0, len(data), 1 << 20):
            await copy.write(data[start : start + (1 << 20)])
        await copy.aclose()
        nursery.cancel_scope.cancel()
    gaps = [b - a for a, b in itertools.pairwise(ticks)]
    assert max(gaps) < 0.25, max(gaps)


def test_replay_reads_plain_and_compressed_files_and_stdin(tmp_path: Path) -> None:
    recording = RECORDING.read_bytes()
    packed = tmp_path / "allow.ndjson.gz"
    packed.write_bytes(gzip.compress(recording))
    # Two gzip members (a copy appended to) read as one stream.
    twice = tmp_path / "twice.ndjson.gz"
    half = len(recording) // 2
    twice.write_bytes(gzip.compress(recording[:half]) + gzip.compress(recording[half:]))
    outputs = []
    for args, stdin in (
        ([str(RECORDING)], None),
        ([str(packed)], None),
        ([str(twice)], None),
        (["-"], recording),
        (["-"], packed.read_bytes()),
    ):
        done = subprocess.run(
            [str(NEXO_TRIO), "replay", *args],
            input=stdin,
            capture_output=True,
            check=True,
            timeout=30,
        )
        assert done.stderr == b""
        outputs.append(json.loads(done.stdout))
    assert all(out == outputs[0] for out in outputs), outputs
    assert outputs[0]["outcome"]["kind"] == "claimed_done"


def test_a_damaged_compressed_stream_reads_what_it_can() -> None:
    packed = gzip.compress(RECORDING.read_bytes())
    broken = packed[:20] + bytes(b ^ 0xFF for b in packed[20:40]) + packed[40:]
    notes = StreamNotes()
    list(stream_chunks(io.BytesIO(broken), notes))
    assert notes.damaged is not None or notes.ended_early
    assert notes.problems()
