"""``nexo-trio replay STREAM.ndjson``: classify a recorded stdout stream, offline."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import BinaryIO

import click

from nexo_trio.core.events import ProcessExited, StdoutClosed
from nexo_trio.core.framing import DEFAULT_LINE_CAP
from nexo_trio.core.outcome import TurnOutcome
from nexo_trio.core.turn import INITIAL_STATE, classify, reduce
from nexo_trio.wire.outcome_json import dumps, turn_outcome_to_json
from nexo_trio.wire.stream_json import StreamDecoder

READ_CHUNK = 64 * 1024


def replay_stream(
    stream: BinaryIO, *, exit_code: int = 0, line_cap: int = DEFAULT_LINE_CAP
) -> TurnOutcome:
    """Feed a recorded stdout stream through the engine's framer, parser and reducer.

    ``exit_code`` is the process's exit as a POSIX returncode (negative: killed by that
    signal); a recording that ends without a result frame is judged with it.
    """
    decoder = StreamDecoder(line_cap)
    state = INITIAL_STATE
    while chunk := stream.read(READ_CHUNK):
        for event in decoder.feed(chunk):
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
    """Replay a recorded stream-json STREAM ('-' for stdin); print its TurnOutcome as JSON."""
    if str(stream) == "-":
        outcome = replay_stream(sys.stdin.buffer, exit_code=exit_code, line_cap=line_cap)
    else:
        try:
            with stream.open("rb") as f:
                outcome = replay_stream(f, exit_code=exit_code, line_cap=line_cap)
        except OSError as exc:
            raise click.FileError(str(stream), hint=exc.strerror or str(exc)) from None
    sys.stdout.buffer.write(dumps(turn_outcome_to_json(outcome)) + b"\n")
    sys.stdout.flush()
