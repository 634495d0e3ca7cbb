"""A stand-in for the ``claude`` binary that every variant of a benchmark drives alike.

It writes the stream-json frames of the file named by ``NEXO_BENCH_FRAMES`` to stdout, as
fast as a pipe takes them (big writes: the writer is not what is measured).

- Run as nexo-trio runs the CLI (``-p PROMPT --output-format stream-json …``): it writes the
  frames and exits 0.
- Run as claude-agent-sdk runs it (``--input-format stream-json``): it reads stdin line by
  line, answers every control request (the SDK's ``initialize`` first) with a success
  response, writes the frames after the first user message, and exits when stdin is closed.

Only the standard library: its start-up is part of every variant's cost, equally.
"""

from __future__ import annotations

import json
import os
import sys

CHUNK = 1 << 20


def _write_frames(out: int) -> None:
    with open(os.environ["NEXO_BENCH_FRAMES"], "rb") as frames:
        while chunk := frames.read(CHUNK):
            view = memoryview(chunk)
            while view:
                view = view[os.write(out, view) :]


def _answer(request: dict[str, object]) -> bytes:
    response = {
        "type": "control_response",
        "response": {"subtype": "success", "request_id": request["request_id"], "response": {}},
    }
    return json.dumps(response).encode() + b"\n"


def main() -> int:
    """Play the CLI's side of one turn."""
    out = sys.stdout.fileno()
    if "--input-format" not in sys.argv:
        _write_frames(out)
        return 0
    for line in sys.stdin.buffer:
        if not line.strip():
            continue
        message = json.loads(line)
        if message.get("type") == "control_request":
            os.write(out, _answer(message))
        elif message.get("type") == "user":
            _write_frames(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
