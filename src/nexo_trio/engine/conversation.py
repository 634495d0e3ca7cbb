"""The stdio transport's shell: one turn's conversation on the CLI's stdin.

:class:`~nexo_trio.core.stdio_control.StdioControl` decides every line; this writes them,
in one task (:meth:`Conversation.serve`, in the turn's nursery), so lines never interleave:
the opening (``initialize``, the prompt), each ask's answer once its decider has spoken
(asks are decided concurrently, each in a task of its own), our ``interrupt``, an
operator's mid-turn message; then, once the result is read and no ask waits, the end of
stdin, on which the CLI exits.

The engine hands it every batch of events (:meth:`Conversation.on_frames`): the CLI's
``control_request`` frames, its ``control_response`` frames (parsed as unknown frames), the
user messages it echoes as it takes them (``--replay-user-messages``: the prompt, then each
mid-turn message in the order written) and the result.

A mid-turn message is *delivered* once the CLI echoes it before the turn's result: it went
into the running query. One still unechoed when the result comes raced it: the CLI would
run it as a query of its own after the turn; :attr:`Conversation.raced` tells the engine
to stop the CLI at once, and the message is reported undelivered (the goal gives it to the
next turn). Answers, deliveries and replies are reported through the callbacks given, which
record them; a failing answerer is a deny, never a hang.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections import deque
from collections.abc import Awaitable, Callable, Sequence

import trio

from nexo_trio.core.events import (
    ControlRequest,
    Event,
    MalformedLine,
    OversizedLine,
    Result,
    UnknownFrame,
    UserMessage,
)
from nexo_trio.core.permission import deny_message, unavailable
from nexo_trio.core.stdio_control import (
    OwnResponse,
    Reply,
    StdioControl,
    ToolAsk,
    deny_body,
    success,
)
from nexo_trio.wire.stdio_frames import encode_message

log = logging.getLogger("nexo_trio.engine")

Answerer = Callable[[StdioControl, ToolAsk], Awaitable[bytes]]
"""Decides an ask, records the answer and gives the line to write (it calls
``control.answer`` once; see :func:`nexo_trio.gate.stdio_gate.answer_ask`). Raises only
``trio.Cancelled``; anything else it raises is taken as a failure of the gate (a deny)."""
ReplyRecorder = Callable[[Reply], Awaitable[None]]
"""Records a reply written without asking the decider (a malformed ask, one while ending)."""
DeliveryRecorder = Callable[[str], Awaitable[None]]
"""Records a mid-turn message the CLI took into the running turn."""

_CLOSE = None


class Conversation:
    """One turn's stdin in the stdio control protocol (one use)."""

    def __init__(
        self,
        prompt: str,
        answer: Answerer,
        *,
        on_reply: ReplyRecorder | None = None,
        on_delivered: DeliveryRecorder | None = None,
    ) -> None:
        self.control = StdioControl(prompt)
        self._answer = answer
        self._on_reply = on_reply
        self._on_delivered = on_delivered
        self._send, self._receive = trio.open_memory_channel[bytes | None](math.inf)
        self._nursery: trio.Nursery | None = None
        self._closing = False
        self._broken = False
        self._echoes = 0
        self._said: deque[str] = deque()
        """Mid-turn messages written, not echoed by the CLI yet (in order)."""
        self.delivered: list[str] = []
        """Mid-turn messages the CLI took into this turn."""
        self.undelivered: list[str] = []
        """Mid-turn messages the turn ended before taking (for the next turn)."""
        self.raced = False
        """A mid-turn message was written but the result came first: stop the CLI now."""
        self.responses: list[OwnResponse] = []
        """The CLI's responses to our requests (``initialize``, ``interrupt``)."""
        self.asks = 0
        """``can_use_tool`` requests put to the decider."""
        self._deciding: dict[str, trio.CancelScope] = {}

    # ------------------------------------------------------------------ the writer

    async def serve(self, stdin: trio.abc.SendStream) -> None:
        """Write the conversation to ``stdin`` until it ends; closes it (shielded). Runs
        the answers' tasks in a nursery of its own."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                for message in self.control.opening():
                    self._put(encode_message(message))
                async for line in self._receive:
                    if line is _CLOSE:
                        break
                    try:
                        await stdin.send_all(line)
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        # The CLI is gone (or closed its stdin); its exit tells the story.
                        self._broken = True
                        break
                self._closing = True
                with trio.CancelScope(shield=True):
                    await stdin.aclose()  # the CLI's cue to exit
                # Answers still deciding go on (bounded by their deadlines) and are
                # recorded; what they would write goes nowhere.
        finally:
            self._nursery = None
            self._closing = True
            self._receive.close()
            with trio.CancelScope(shield=True):
                await stdin.aclose()

    def _put(self, line: bytes | None) -> None:
        if self._closing or self._broken:
            return
        with contextlib.suppress(trio.ClosedResourceError, trio.BrokenResourceError):
            self._send.send_nowait(line)

    @property
    def open(self) -> bool:
        """Whether lines can still be written (the writer runs, stdin not closed)."""
        return self._nursery is not None and not self._closing and not self._broken

    # ------------------------------------------------------------------ our lines

    def interrupt(self) -> bool:
        """Ask the CLI to end the turn now, its session intact; whether it was sent (not
        once the result is read, nor when stdin is closed)."""
        if not self.open or self.control.result_read:
            return False
        self._put(encode_message(self.control.interrupt()))
        return True

    @property
    def takes_messages(self) -> bool:
        """Whether :meth:`say` would write a message now (not once the turn is ending)."""
        return self.open and not self.control.ending

    def say(self, text: str) -> bool:
        """Write an operator's message into the running turn; whether it was written (see
        :attr:`takes_messages`). Delivered once the CLI echoes it (see the module
        docstring)."""
        if not self.takes_messages:
            return False
        self._said.append(text)
        self._put(encode_message(self.control.say(text)))
        return True

    # ------------------------------------------------------------------ what the CLI says

    def on_frames(self, batch: Sequence[Event]) -> None:
        """Take what a batch of the CLI's events asks of the conversation."""
        for event in batch:
            kind = type(event)
            if kind is ControlRequest:
                assert isinstance(event, ControlRequest)
                self._on_request(event)
            elif kind is UserMessage:
                assert isinstance(event, UserMessage)
                if not self.control.result_read and event.raw.get("isReplay") is True:
                    self._on_echo()
            elif kind is UnknownFrame:
                assert isinstance(event, UnknownFrame)
                response = event.raw.get("response")
                if event.type == "control_response" and isinstance(response, dict):
                    self.responses.append(self.control.on_response(response))
                elif event.type == "control_cancel_request":
                    withdrawn = self.control.on_cancel(event.raw.get("request_id"))
                    if withdrawn is not None:
                        self._cancel(withdrawn)
            elif kind is MalformedLine:
                assert isinstance(event, MalformedLine)
                self._on_unreadable(event.excerpt, "unreadable control request", event.error)
            elif kind is OversizedLine:
                assert isinstance(event, OversizedLine)
                why = f"control request too large ({event.size} bytes)"
                self._on_unreadable(event.excerpt, why, why)
            elif kind is Result and not self.control.result_read:
                for ask in self.control.on_result():
                    # The CLI ended the query that asked (our interrupt): not answered.
                    self._cancel(ask)
                if self._said:
                    self.raced = True
                    self.undelivered.extend(self._said)
                    self._said.clear()
        self._close_if_done()

    def _cancel(self, ask: ToolAsk) -> None:
        """Stop deciding an abandoned ask (the answerer records it as cancelled)."""
        scope = self._deciding.get(ask.request_id)
        if scope is not None:
            scope.cancel()

    def _on_request(self, frame: ControlRequest) -> None:
        got = self.control.on_request(frame.request_id, frame.subtype, frame.request)
        if isinstance(got, ToolAsk):
            self.asks += 1
            # Made now, not when the task starts: the CLI may withdraw the ask (or end
            # the query) in the same read.
            scope = self._deciding[got.request_id] = trio.CancelScope()
            self._start(self._decide, got, scope)
        elif isinstance(got, Reply):
            self._reply(got)

    def _on_unreadable(self, excerpt: str, why: str, detail: str) -> None:
        """A line that cannot be read: if it is an ask whose id can be, deny it."""
        reply = self.control.on_unreadable(excerpt, why)
        if reply is not None:
            log.warning("denied an unreadable control request: %s", detail)
            self._reply(reply)

    def _reply(self, reply: Reply) -> None:
        """Write a reply the protocol's rules made, and have it recorded."""
        self._put(encode_message(reply.message))
        if self._on_reply is not None:
            self._start(self._on_reply, reply)

    def _on_echo(self) -> None:
        self._echoes += 1
        if self._echoes == 1 or not self._said:
            return  # the prompt's echo (or one of no message of ours)
        text = self._said.popleft()
        self.delivered.append(text)
        if self._on_delivered is not None:
            self._start(self._on_delivered, text)

    def _start(self, fn: Callable[..., Awaitable[object]], *args: object) -> None:
        nursery = self._nursery
        if nursery is None:
            # No writer (the turn is over): an ask cannot be answered, and nothing waits.
            log.warning("a control frame came after the conversation ended; ignored")
            return
        nursery.start_soon(fn, *args)

    async def _decide(self, ask: ToolAsk, scope: trio.CancelScope) -> None:
        try:
            with scope:
                await self._decide_in(ask)
        finally:
            self._deciding.pop(ask.request_id, None)

    async def _decide_in(self, ask: ToolAsk) -> None:
        try:
            line = await self._answer(self.control, ask)
        except Exception as exc:  # a bug in the gate's path: fail closed
            log.exception("the stdio gate failed on %s", ask.tool_name)
            failed = unavailable(f"gate error: {exc!r}", "gate")
            if any(w.request_id == ask.request_id for w in self.control.waiting):
                message = self.control.answer(ask, failed)
            else:  # answered in the control, but its line never came back: deny it
                message = success(ask.request_id, deny_body(deny_message(failed)))
            line = encode_message(message)
        self._put(line)
        self._close_if_done()

    def _close_if_done(self) -> None:
        if self.control.may_close() and not self._closing:
            self._put(_CLOSE)
            self._closing = True


__all__ = ["Answerer", "Conversation", "DeliveryRecorder", "ReplyRecorder"]
