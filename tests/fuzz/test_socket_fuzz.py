"""Fuzzing the gate's Unix socket server: arbitrary bytes and arbitrary JSON objects (some of
them valid permission requests, many nearly so) in arbitrary chunks, on one or more
connections at once, some hung up before their replies, through one real
:class:`GateServer` per test.

Properties:

* every line is answered, once: a blank one never, one over the cap with an error frame
  without id, one that is not a valid request with an error frame (with the id it named,
  if it named one), a valid request with a decision for its id;
* every reply is one valid frame; an allow gives back the request's input;
* the server never crashes and answers a valid request after each example's garbage;
* nothing leaks: as many file descriptors are open once the server has stopped as before
  it started.

Sizes: see ``tests/fuzz/profile.py`` (``NEXO_FUZZ_EXAMPLES``).
"""

from __future__ import annotations

import collections
import itertools
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final, NamedTuple

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from nexo_trio.core.permission import Decision, PermissionRequest, allow, deny
from nexo_trio.gate.socket_server import GateServer
from nexo_trio.wire import gate_frames
from nexo_trio.wire.gate_frames import DecisionFrame, ErrorFrame, PermissionFrame
from tests.fuzz.profile import count, examples
from tests.fuzz.strategies import (
    NASTY,
    WILD_VALUES,
    cheap_json,
    encode,
    framed_lines,
    split_at,
    wild_text,
)
from tests.gate.helpers import short_tempdir

CAP: Final = 2048
"""The frame cap the server runs with here: small, so that lines pass it now and then."""
TIMEOUT: Final = 10.0
"""How long one example may wait for its replies."""

# --------------------------------------------------------------------------- strategies

FIELDS: Final = ("v", "type", "id", "goal_id", "tool_name", "input", "tool_use_id", "token")
long_text: st.SearchStrategy[str] = st.builds(
    lambda n, c: c * n, st.integers(1, CAP), st.sampled_from(["x", "\xe9", "\x00", "\ud800"])
)
"""Text of up to a frame's size, whose JSON may be several times longer (escapes)."""
valid_requests: st.SearchStrategy[dict[str, Any]] = st.builds(
    lambda request_id, tool_name, tool_input, tool_use_id, token: {
        "v": 1,
        "type": "permission",
        "id": request_id,
        "goal_id": "g",
        "tool_name": tool_name,
        "input": tool_input,
        "tool_use_id": tool_use_id,
        "token": token,
    },
    st.text(min_size=1, max_size=6) | st.sampled_from(["r1", "\ud800", "x" * 100]) | long_text,
    st.sampled_from(["Read", "Bash", "Write", "\ud800", "x" * 50]),
    st.sampled_from([{}, {"file_path": "/x"}, {"c": "\xe9" * 400}, {"\ud800": [None, 10**30]}])
    | st.dictionaries(wild_text, st.sampled_from(WILD_VALUES), max_size=2)
    | st.integers(0, 3 * CAP).map(lambda n: {"content": "x" * n}),
    st.none() | st.sampled_from(["toolu_1", ""]),
    st.none() | st.sampled_from(["tok", ""]),
)
"""Valid permission requests, their contents wild (some too large to be sent back)."""
near_requests: st.SearchStrategy[dict[str, Any]] = st.builds(
    lambda request, changes, removed: {
        **{k: v for k, v in request.items() if k not in removed},
        **changes,
    },
    valid_requests,
    st.dictionaries(st.sampled_from(FIELDS) | wild_text, cheap_json | long_text, max_size=2),
    st.sets(st.sampled_from(FIELDS), max_size=2),
)
"""Requests with a field or two wrong, or missing, or one too many."""
json_lines: st.SearchStrategy[bytes] = st.builds(
    lambda obj, ascii_only: encode(obj, ascii_only=ascii_only),
    valid_requests | near_requests | near_requests | cheap_json,
    st.booleans(),
)
terminators = st.sampled_from([b"\n", b"\n", b"\n", b"\r\n", b"", b"\n\n", b"  \n"])
pieces: st.SearchStrategy[bytes] = st.one_of(
    st.builds(lambda line, end: line + end, json_lines, terminators),
    st.builds(lambda line, end: line + end, json_lines, terminators),
    st.builds(lambda data, end: data + end, st.binary(max_size=48), terminators),
    st.builds(lambda data, end: data + end, st.sampled_from(NASTY), terminators),
    st.builds(
        lambda n, c, end: c * n + end,
        st.integers(0, 3 * CAP),
        st.sampled_from([b"x", b" ", b"{"]),
        terminators,
    ),
)


class Stream(NamedTuple):
    """What one connection sends, cut at ``cuts``; ``hang_up``: it closes without reading
    its replies (a final newline or not)."""

    data: bytes
    cuts: list[int]
    hang_up: bool


streams: st.SearchStrategy[Stream] = st.builds(
    Stream,
    st.lists(pieces, max_size=8).map(b"".join),
    st.lists(st.integers(min_value=0), max_size=5),
    st.sampled_from([False, False, False, True]),
)

# --------------------------------------------------------------------------- the oracle


async def decide(request: PermissionRequest) -> Decision:
    """Allows reads, denies the rest (after a checkpoint, so decisions interleave)."""
    await trio.lowlevel.checkpoint()
    if request.tool_name == "Read":
        return allow("fuzz")
    return deny("not in the fuzz", "fuzz")


class Expected(NamedTuple):
    """A reply the server owes: its type, id, and the request it answers; ``long`` when
    naming the id nearly fills a frame, so the reply may go without it (an error frame
    without id then)."""

    kind: type[DecisionFrame] | type[ErrorFrame]
    id: str | None
    request: PermissionFrame | None
    long: bool = False


def _too_long_to_name(request_id: str | None) -> bool:
    return request_id is not None and len(json.dumps(request_id)) > CAP // 2


def expected_replies(data: bytes) -> list[Expected]:
    """The replies to ``data``, a line at a time (the stream ends its last line)."""
    out: list[Expected] = []
    for line in framed_lines(data, CAP, at_eof=True):
        if isinstance(line, int):
            out.append(Expected(ErrorFrame, None, None))
            continue
        try:
            request = gate_frames.decode_request(line)
        except gate_frames.FrameError:
            request_id = gate_frames.salvage_id(line)
            out.append(Expected(ErrorFrame, request_id, None, _too_long_to_name(request_id)))
        else:
            out.append(Expected(DecisionFrame, request.id, request, _too_long_to_name(request.id)))
    return out


Key = tuple[str, str | None]


def _key(kind: type, request_id: str | None) -> Key:
    return kind.__name__, request_id


def assert_one_reply_each(replies: list[gate_frames.ReplyFrame], owed: list[Expected]) -> None:
    """The replies are the ones owed, one each (one for an id too long to name may be an
    error frame without id)."""
    left = collections.Counter(_key(type(r), r.id) for r in replies)
    left.subtract(_key(e.kind, e.id) for e in owed if not e.long)
    for e in owed:
        if e.long:
            named = _key(e.kind, e.id)
            left[named if left[named] > 0 else _key(ErrorFrame, None)] -= 1
    assert +left == collections.Counter(), f"replies not owed: {+left}"
    assert -left == collections.Counter(), f"replies missing: {-left}"


class Connection:
    """One client connection: send bytes, read the reply frames (each checked)."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = b""

    async def replies(self, wanted: int) -> list[gate_frames.ReplyFrame]:
        """The next ``wanted`` reply frames."""
        out: list[gate_frames.ReplyFrame] = []
        while len(out) < wanted:
            while b"\n" not in self.buffer:
                data = await self.stream.receive_some(1 << 16)
                assert data, "the gate hung up"
                self.buffer += data
            line, self.buffer = self.buffer.split(b"\n", 1)
            assert len(line) <= CAP, "a reply over the cap"
            out.append(gate_frames.decode_reply(line))
        return out


async def one_connection(path: Path, stream: Stream, n: int) -> None:
    """Send ``stream``; unless it hangs up, end it with a newline and a valid request, and
    check every reply it owes came, once, and what it says."""
    async with await trio.open_unix_socket(str(path)) as sock:
        connection = Connection(sock)
        for chunk in split_at(stream.data, stream.cuts):
            await sock.send_all(chunk)
        if stream.hang_up:
            return
        final = PermissionFrame(f"final-{n}", "g", "Read", {"file_path": "/x"}, None, None)
        await sock.send_all(b"\n" + gate_frames.encode_request(final))
        owed = [*expected_replies(stream.data), Expected(DecisionFrame, final.id, final)]
        replies = await connection.replies(len(owed))
        assert_one_reply_each(replies, owed)
        requests = collections.defaultdict(list)
        for e in owed:
            if e.request is not None:
                requests[e.id].append(e.request)
        for reply in replies:
            if isinstance(reply, DecisionFrame) and reply.allow:
                assert any(
                    request.tool_name == "Read" and reply.updated_input == request.input
                    for request in requests[reply.id]
                ), reply
            elif isinstance(reply, DecisionFrame):
                assert reply.message is not None, reply
                assert reply.message.strip(), reply


async def run_example(path: Path, batch: list[Stream], n: int) -> None:
    """The connections of one example, at once, within :data:`TIMEOUT`."""
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            for k, stream in enumerate(batch):
                nursery.start_soon(one_connection, path, stream, n * 10 + k)


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    """A directory with a short path, for the socket."""
    with short_tempdir() as path:
        yield path


# --------------------------------------------------------------------------- the property


async def test_garbage_at_the_socket_gets_one_reply_per_line(
    sock_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gate_frames, "MAX_FRAME_BYTES", CAP)
    path = sock_dir / "gate.sock"
    server = GateServer(path, decide, request_timeout_s=TIMEOUT)
    numbers = itertools.count()
    ran: collections.Counter[str] = collections.Counter()
    before = open_fds()
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)

        @examples("socket")
        @given(batch=st.lists(streams, min_size=1, max_size=3))
        def fuzz(batch: list[Stream]) -> None:
            count("socket")
            ran["examples"] += 1
            trio.from_thread.run(run_example, path, batch, next(numbers))

        await trio.to_thread.run_sync(fuzz)
        # Still serving after all that: a valid request on a fresh connection.
        await run_example(path, [Stream(b"", [], hang_up=False)], -1)
        nursery.cancel_scope.cancel()
    assert ran["examples"] > 0
    with trio.fail_after(5):
        while open_fds() != before:  # noqa: ASYNC110 - no event tells of a closed fd
            await trio.sleep(0.01)
