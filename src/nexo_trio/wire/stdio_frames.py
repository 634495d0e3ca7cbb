"""Lines written to the CLI's stdin in the stdio control protocol
(:mod:`nexo_trio.core.stdio_control` decides them): strict JSON, one object per line.

The stdlib encoder, not orjson: a tool's input echoed back in an allow (``updatedInput``)
must reach the CLI exactly as it came, integers past 64 bits included, and NaN or an
infinity (which the CLI's JSON reader refuses) must fail here, where the caller turns it
into a deny, never on the CLI's side.
"""

from __future__ import annotations

from typing import Any

from nexo_trio.wire.gate_frames import json_line


def encode_message(message: dict[str, Any]) -> bytes:
    """One message as a line; ``ValueError`` for NaN or an infinity in it."""
    return json_line(message, allow_nan=False)


__all__ = ["encode_message"]
