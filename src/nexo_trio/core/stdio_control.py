"""The CLI's stdio control protocol, sans-IO: one turn's conversation on the CLI's stdin.

With ``--input-format stream-json --permission-prompt-tool stdio`` the CLI takes its input
as JSON lines on stdin and asks for each tool call's permission on stdout
(``control_request`` frames) instead of through an MCP server (DESIGN.md §4; recorded in
``tests/fixtures/claude-cli-2.1.332/stdio-control``). This module decides every line we
write; the engine's shell writes them and hands us what the CLI asked. Rules:

1. The conversation opens with our ``initialize`` control request, then the prompt as a
   ``user`` message (the CLI takes both at once: it answers ``initialize`` later).
2. Every ``can_use_tool`` request is answered **exactly once**: the decider's allow (with
   its ``updatedInput``, else the request's own input) or a deny whose message is never
   blank (:func:`~nexo_trio.core.permission.deny_message`). A malformed request (no tool
   name, an input that is not an object) is denied at once, without asking anyone.
3. Any other control request of the CLI is answered at once with an error response naming
   its subtype: nothing the CLI asks is ever left hanging. A request line that is not even
   JSON, or longer than the turn's line cap, is denied by its id when the id can be read
   from its start.
4. Our own requests (``initialize``, ``interrupt``) have ids ``nexo-N``; their responses are
   matched to them, and an error response is reported, not raised.
5. Once the turn is ending (its result read, or it is being stopped) a new ask is denied
   (``the turn is ending``). Stdin may close once the result is read: the query is over,
   and an ask still waiting for the decider then (the CLI ended the query that asked it,
   on our ``interrupt``) is *abandoned*: never answered, reported for the record. So is
   an ask the CLI withdraws (``control_cancel_request``).

Messages are JSON objects (dicts); :mod:`nexo_trio.wire.stdio_frames` encodes them.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Mapping
from typing import Any, Final

import attrs

from nexo_trio.core.permission import Decision, deny_message

CAN_USE_TOOL: Final = "can_use_tool"
INITIALIZE: Final = "initialize"
INTERRUPT: Final = "interrupt"
ENDING: Final = "Permission denied: the turn is ending"

JsonObject = dict[str, Any]

_CONTROL_REQUEST: Final = re.compile(r'"type"\s*:\s*"control_request"')
_REQUEST_ID: Final = re.compile(r'"request_id"\s*:\s*"((?:[^"\\]|\\.){1,200})"')
_TOOL_NAME: Final = re.compile(r'"tool_name"\s*:\s*"([^"\\]{1,200})"')


@attrs.frozen
class ToolAsk:
    """A ``can_use_tool`` request to put to the goal's decider, with what the CLI tells
    about it beyond the call itself (kept whole in ``raw``)."""

    request_id: str
    tool_name: str
    input: JsonObject
    tool_use_id: str | None = None
    blocked_path: str | None = None
    """The path the CLI's own check stopped at, when it says."""
    decision_reason: str | None = None
    """Why the CLI asks (its own words), when it says."""
    suggestions: tuple[JsonObject, ...] = ()
    """The permission updates the CLI suggests (``permission_suggestions``)."""
    raw: JsonObject = attrs.field(factory=dict, eq=False, repr=False)


@attrs.frozen
class Reply:
    """A line to write to the CLI at once (an answer the decider is not asked for), and
    why, for the record: a malformed ask, an unknown request, an ask while ending."""

    message: JsonObject
    why: str
    request_id: str | None = None
    tool_name: str | None = None
    ending: bool = False
    """An ask denied only because the turn is ending (no denial of the goal's)."""


@attrs.frozen
class OwnResponse:
    """The CLI's response to one of our requests (``subtype``: ``initialize``,
    ``interrupt``); ``error`` when it refused, ``None`` for a response to no request of
    ours (kept, not trusted)."""

    subtype: str | None
    request_id: str | None
    error: str | None = None
    response: JsonObject = attrs.field(factory=dict)


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def user_message(text: str) -> JsonObject:
    """A ``user`` message carrying ``text`` (the prompt, or an operator's mid-turn one)."""
    return {
        "type": "user",
        "message": {"role": "user", "content": text},
        "parent_tool_use_id": None,
        "session_id": "default",
    }


def allow_body(decision: Decision, tool_input: Mapping[str, Any]) -> JsonObject:
    """What an allowing ``decision`` says: the decider's rewritten input, else the call's."""
    updated = decision.updated_input if decision.updated_input is not None else tool_input
    return {"behavior": "allow", "updatedInput": dict(updated)}


def deny_body(message: str) -> JsonObject:
    """A deny with ``message`` (a blank one says ``Permission denied``)."""
    return {"behavior": "deny", "message": message if message.strip() else "Permission denied"}


def success(request_id: str, body: Mapping[str, Any]) -> JsonObject:
    """A ``control_response`` answering ``request_id`` with ``body``."""
    return {
        "type": "control_response",
        "response": {"subtype": "success", "request_id": request_id, "response": dict(body)},
    }


def error_response(request_id: str, message: str) -> JsonObject:
    """A ``control_response`` refusing ``request_id`` with ``message``."""
    return {
        "type": "control_response",
        "response": {"subtype": "error", "request_id": request_id, "error": message},
    }


class StdioControl:
    """One turn's side of the control protocol (see the module docstring for the rules).

    ``opening()`` gives the first lines to write; each ``control_request`` frame goes to
    :meth:`on_request`, which gives a :class:`ToolAsk` for the decider (then
    :meth:`answer`) or a :class:`Reply` to write at once; each ``control_response`` goes to
    :meth:`on_response`."""

    def __init__(self, prompt: str) -> None:
        self.prompt = prompt
        self._ids = itertools.count(1)
        self._ours: dict[str, str] = {}
        """Our requests waiting for their response: id -> subtype."""
        self._asked: dict[str, ToolAsk] = {}
        """Asks put to the decider and not answered yet, by request id."""
        self._answered: set[str] = set()
        self.ending = False
        self.result_read = False

    # -- what we write ---------------------------------------------------------------------

    def _request(self, subtype: str, **fields: Any) -> JsonObject:
        request_id = f"nexo-{next(self._ids)}"
        self._ours[request_id] = subtype
        return {
            "type": "control_request",
            "request_id": request_id,
            "request": {"subtype": subtype, **fields},
        }

    def opening(self) -> list[JsonObject]:
        """The first lines of the turn: ``initialize``, then the prompt."""
        return [self._request(INITIALIZE, hooks=None), user_message(self.prompt)]

    def interrupt(self) -> JsonObject:
        """An ``interrupt`` request: the CLI ends the turn, its session intact."""
        self.ending = True
        return self._request(INTERRUPT)

    def say(self, text: str) -> JsonObject:
        """An operator's message for the running turn, as a ``user`` message."""
        return user_message(text)

    # -- what the CLI asks -----------------------------------------------------------------

    def on_request(
        self, request_id: str | None, subtype: str | None, request: JsonObject
    ) -> ToolAsk | Reply | None:
        """A ``control_request`` of the CLI: an ask for the decider, a reply to write now,
        or ``None`` when it cannot be answered (no request id: there is nothing to answer
        it by) or was answered already (a repeat)."""
        if not isinstance(request_id, str) or not request_id:
            return None
        if request_id in self._answered or request_id in self._asked:
            return None  # a repeat of a request we hold or answered: answered once
        if subtype != CAN_USE_TOOL:
            self._answered.add(request_id)
            what = subtype if isinstance(subtype, str) else "(none)"
            message = error_response(request_id, f"unsupported control request {what!r}")
            return Reply(message, f"unsupported control request {what!r}", request_id)
        tool_name = _text(request.get("tool_name"))
        tool_input = request.get("input")
        if tool_name is None or not isinstance(tool_input, dict):
            self._answered.add(request_id)
            why = "malformed can_use_tool request: " + (
                "no tool_name" if tool_name is None else "its input is not an object"
            )
            message = success(request_id, deny_body(f"Permission denied: {why}"))
            return Reply(message, why, request_id, tool_name)
        if self.ending:
            self._answered.add(request_id)
            message = success(request_id, deny_body(ENDING))
            return Reply(message, "the turn is ending", request_id, tool_name, ending=True)
        suggestions = request.get("permission_suggestions")
        ask = ToolAsk(
            request_id=request_id,
            tool_name=tool_name,
            input=tool_input,
            tool_use_id=_text(request.get("tool_use_id")),
            blocked_path=_text(request.get("blocked_path")),
            decision_reason=_text(request.get("decision_reason")),
            suggestions=tuple(s for s in suggestions if isinstance(s, dict))
            if isinstance(suggestions, list)
            else (),
            raw=request,
        )
        self._asked[request_id] = ask
        return ask

    def answer(self, ask: ToolAsk, decision: Decision) -> JsonObject:
        """The response to ``ask``: only an allowing ``decision`` allows. Raises
        ``ValueError`` for an ask that is not waiting (answered already: a bug)."""
        if self._asked.pop(ask.request_id, None) is None:
            raise ValueError(f"control request {ask.request_id!r} is not waiting for an answer")
        self._answered.add(ask.request_id)
        if decision.allowed:
            return success(ask.request_id, allow_body(decision, ask.input))
        return success(ask.request_id, deny_body(deny_message(decision)))

    @property
    def waiting(self) -> list[ToolAsk]:
        """The asks put to the decider and not answered yet, in order."""
        return list(self._asked.values())

    def on_unreadable(self, excerpt: str, why: str = "unreadable control request") -> Reply | None:
        """A line of the CLI's that cannot be read (not JSON, or past the line cap; its
        start, ``excerpt``): when it is a ``control_request`` whose id can be read, a deny
        for that id saying ``why``, so that the ask is not left hanging; else ``None``."""
        if _CONTROL_REQUEST.search(excerpt) is None:
            return None
        found = _REQUEST_ID.search(excerpt)
        if found is None:
            return None
        try:
            request_id = json.loads(f'"{found.group(1)}"')
        except ValueError:
            return None
        if not request_id or request_id in self._answered or request_id in self._asked:
            return None
        self._answered.add(request_id)
        message = success(request_id, deny_body(f"Permission denied: {why}"))
        # An ask is recorded as a decision (its tool's name "" when it cannot be read).
        tool = _TOOL_NAME.search(excerpt)
        if tool is not None:
            name: str | None = tool.group(1)
        else:
            name = "" if '"can_use_tool"' in excerpt else None
        return Reply(message, why, request_id, name)

    def on_cancel(self, request_id: object) -> ToolAsk | None:
        """A ``control_cancel_request`` of the CLI: it no longer waits for that ask's
        answer. The ask, now abandoned (never answered), if it was waiting."""
        if not isinstance(request_id, str):
            return None
        ask = self._asked.pop(request_id, None)
        if ask is not None:
            self._answered.add(request_id)
        return ask

    # -- what the CLI answers --------------------------------------------------------------

    def on_response(self, response: JsonObject) -> OwnResponse:
        """A ``control_response`` of the CLI (the frame's ``response`` object)."""
        request_id = _text(response.get("request_id"))
        subtype = self._ours.pop(request_id, None) if request_id is not None else None
        error = None
        if response.get("subtype") == "error":
            error = _text(response.get("error")) or "refused"
        body = response.get("response")
        return OwnResponse(subtype, request_id, error, body if isinstance(body, dict) else {})

    # -- the end ---------------------------------------------------------------------------

    def on_result(self) -> list[ToolAsk]:
        """The turn's result was read: asks from now on are denied; the asks still waiting
        are abandoned (returned; they are not answered)."""
        self.result_read = True
        self.ending = True
        abandoned = list(self._asked.values())
        self._asked.clear()
        self._answered.update(ask.request_id for ask in abandoned)
        return abandoned

    def may_close(self) -> bool:
        """Whether stdin may close: the result is read."""
        return self.result_read


__all__ = [
    "CAN_USE_TOOL",
    "ENDING",
    "INITIALIZE",
    "INTERRUPT",
    "OwnResponse",
    "Reply",
    "StdioControl",
    "ToolAsk",
    "allow_body",
    "deny_body",
    "error_response",
    "success",
    "user_message",
]
