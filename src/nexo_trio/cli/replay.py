"""``nexo-trio replay STREAM``: classify a recorded stdout stream, offline.

The stream is ``.ndjson`` as the CLI printed it, or gzip-compressed (``.ndjson.gz``, as the
orchestrator keeps each turn's: told by its first bytes, so ``-`` reads either from stdin).
"""

from __future__ import annotations

import gzip
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import attrs
import click

from nexo_trio.core.events import ProcessExited, StdoutClosed, UnknownFrame
from nexo_trio.core.framing import DEFAULT_LINE_CAP
from nexo_trio.core.outcome import TurnOutcome
from nexo_trio.core.record import STOPPED_FRAME, TRUNCATED_FRAME, stop_event
from nexo_trio.core.turn import INITIAL_STATE, classify, reduce
from nexo_trio.wire.outcome_json import dumps, turn_outcome_to_json
from nexo_trio.wire.stream_json import StreamDecoder

READ_CHUNK = 64 * 1024
GZIP_MAGIC = b"\x1f\x8b"


@attrs.define
class StreamNotes:
    """What reading a recorded stream found besides its bytes."""

    truncated: dict[str, Any] | None = None
    """The copy was cut at its cap: the line that says so (``kept_bytes``, ``cap_bytes``)."""
    ended_early: bool = False
    """The compressed copy stops short of its end (its writer was killed): what was
    written up to then is read."""
    damaged: str | None = None
    """The compressed copy could not be read past some point: why."""
    stop_marked: bool = False
    """The copy marks where the engine began stopping the turn (a deadline, a cancel)."""

    def problems(self) -> list[str]:
        """What a person should know about the stream, one line each."""
        found = []
        if self.truncated is not None:
            kept, cap = self.truncated.get("kept_bytes"), self.truncated.get("cap_bytes")
            found.append(
                f"the stream was cut at its cap ({cap} bytes; {kept} kept): its end, and "
                "the result frame if it came later, are not in it"
            )
        if self.ended_early:
            found.append("the compressed stream ends early (its writer was stopped)")
        if self.damaged is not None:
            found.append(f"the compressed stream is damaged: {self.damaged}")
        return found


class _Prefixed:
    """``head`` then the rest of ``rest``: a stream whose first bytes were read to sniff it."""

    def __init__(self, head: bytes, rest: BinaryIO) -> None:
        self.head = head
        self.rest = rest

    def read(self, size: int = -1, /) -> bytes:
        """Up to ``size`` bytes (all the rest when negative)."""
        if self.head:
            if size < 0:
                data, self.head = self.head + self.rest.read(), b""
                return data
            data, self.head = self.head[:size], self.head[size:]
            return data
        return self.rest.read(size)

    def seek(self, offset: int, /) -> int:
        """Not seekable (a pipe): reading never seeks."""
        raise OSError("the stream is not seekable")


def stream_chunks(stream: BinaryIO, notes: StreamNotes | None = None) -> Iterator[bytes]:
    """The bytes of a recorded stream, decompressed when it is gzip (by its first bytes);
    what the reading found goes into ``notes``."""
    notes = notes if notes is not None else StreamNotes()
    head = stream.read(READ_CHUNK)
    while head and len(head) < len(GZIP_MAGIC):
        more = stream.read(READ_CHUNK)
        if not more:
            break
        head += more
    if not head.startswith(GZIP_MAGIC):
        if head:
            yield head
        while chunk := stream.read(READ_CHUNK):
            yield chunk
        return
    with gzip.GzipFile(fileobj=_Prefixed(head, stream), mode="rb") as unzipped:
        try:
            while chunk := unzipped.read1(READ_CHUNK):
                yield chunk
        except EOFError:
            notes.ended_early = True
        except (OSError, zlib.error) as exc:
            notes.damaged = str(exc) or type(exc).__name__


def replay_stream(
    stream: BinaryIO,
    *,
    exit_code: int = 0,
    line_cap: int = DEFAULT_LINE_CAP,
    notes: StreamNotes | None = None,
) -> TurnOutcome:
    """Feed a recorded stdout stream (plain or gzip) through the engine's framer, parser
    and reducer.

    ``exit_code`` is the process's exit as a POSIX returncode (negative: killed by that
    signal); a recording that ends without a result frame is judged with it. ``notes``
    gets what the reading found (a copy cut at its cap, one that ends early). Where the
    engine began stopping the turn (its deadline, a cancel: a line the orchestrator's copy
    has), the engine's event is reduced there, so a turn ended by our interrupt reads as
    it did live.
    """
    notes = notes if notes is not None else StreamNotes()
    decoder = StreamDecoder(line_cap)
    state = INITIAL_STATE
    for chunk in stream_chunks(stream, notes):
        for event in decoder.feed(chunk):
            if isinstance(event, UnknownFrame):
                if event.type == TRUNCATED_FRAME:
                    notes.truncated = event.raw
                elif event.type == STOPPED_FRAME:
                    # Where the engine began stopping the turn: its event, as live.
                    state = reduce(state, stop_event(event.raw) or event)
                    continue
            state = reduce(state, event)
    for event in decoder.close():
        state = reduce(state, event)
    for end in (StdoutClosed(), ProcessExited.from_returncode(exit_code)):
        state = reduce(state, end)
    return classify(state)


@click.command()
@click.argument(
    "stream", type=click.Path(exists=True, dir_okay=False, allow_dash=True, path_type=Path)
)
@click.option(
    "--exit-code",
    type=int,
    default=0,
    show_default=True,
    help="The CLI's exit code (negative: killed by that signal). Without it, a stream "
    "with no result frame counts as a clean exit.",
)
@click.option(
    "--line-cap",
    type=click.IntRange(min=1),
    default=DEFAULT_LINE_CAP,
    show_default=True,
    help="Longest line read, in bytes; longer ones are reported as oversized.",
)
def replay(stream: Path, exit_code: int, line_cap: int) -> None:
    """Replay a recorded stream-json STREAM ('-' for stdin; .ndjson or .ndjson.gz); print
    its TurnOutcome as JSON."""
    notes = StreamNotes()
    if str(stream) == "-":
        outcome = replay_stream(
            sys.stdin.buffer, exit_code=exit_code, line_cap=line_cap, notes=notes
        )
    else:
        try:
            with stream.open("rb") as f:
                outcome = replay_stream(f, exit_code=exit_code, line_cap=line_cap, notes=notes)
        except OSError as exc:
            raise click.FileError(str(stream), hint=exc.strerror or str(exc)) from None
    for problem in notes.problems():
        click.echo(f"note: {problem}", err=True)
    sys.stdout.buffer.write(dumps(turn_outcome_to_json(outcome)) + b"\n")
    sys.stdout.flush()
