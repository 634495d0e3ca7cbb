"""The raw copy of a turn's stdout: whole, private, and never a reason for a turn to fail."""

from __future__ import annotations

import gzip
import logging
import os
import stat
from pathlib import Path

import pytest

from nexo_trio.engine.stream_copy import StreamCopy


async def test_the_copy_keeps_every_byte_privately(tmp_path: Path) -> None:
    path = tmp_path / "streams" / "g1" / "turn-1.ndjson"
    copy = await StreamCopy.open(path)
    assert copy is not None
    chunks = [b'{"type":"system"}\n', b"\xff\xfe not utf-8", b"\n" * 3, b"x" * 1_000_000]
    for chunk in chunks:
        await copy.write(chunk)
    await copy.aclose()
    assert path.read_bytes() == b"".join(chunks)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


async def test_a_copy_that_cannot_be_made_is_none_and_said(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "file").write_text("in the way")
    assert await StreamCopy.open(tmp_path / "file" / "turn-1.ndjson") is None
    assert "not keeping the raw stream" in caplog.text


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full here")
async def test_a_full_disk_cuts_the_copy_once_and_quietly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="nexo_trio.engine")
    copy = await StreamCopy.open(Path("/dev/full"))
    assert copy is not None
    await copy.write(b"a line\n")  # ENOSPC: logged, copying stops, nothing raised
    await copy.write(b"another\n")
    await copy.aclose()
    assert copy.written == 0
    assert caplog.text.count("raw stream cut after 0 bytes") == 1


@pytest.mark.parametrize("name", ["turn-1.ndjson", "turn-1.ndjson.gz"])
async def test_a_mark_goes_between_whole_lines_of_the_stream(tmp_path: Path, name: str) -> None:
    """A line of ours (a stop's mark) goes where the copy is when it comes, at a line end;
    in the middle of a line, right after that line; at the end of a copy whose last line
    never ended, after a newline of its own. The stream's own bytes are all kept."""
    path = tmp_path / name
    copy = await StreamCopy.open(path)
    assert copy is not None
    await copy.write(b'{"a":1}\n')
    await copy.mark(b'{"mark":1}\n')  # at a line end: at once
    await copy.write(b'{"b":')
    await copy.mark(b'{"mark":2}\n')  # mid-line: after it
    await copy.write(b'2}\n{"c":3}\n{"d"')
    await copy.mark(b'{"mark":3}\n')  # the line never ends
    await copy.aclose()
    data = gzip.decompress(path.read_bytes()) if name.endswith(".gz") else path.read_bytes()
    assert data.splitlines() == [
        b'{"a":1}',
        b'{"mark":1}',
        b'{"b":2}',
        b'{"mark":2}',
        b'{"c":3}',
        b'{"d"',
        b'{"mark":3}',
    ]
    assert copy.written == len(b'{"a":1}\n{"b":2}\n{"c":3}\n{"d"')
