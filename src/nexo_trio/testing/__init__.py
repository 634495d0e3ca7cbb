"""The public test kit: a scripted fake ``claude``, and a loopback fake of the Messages API.

::

    from nexo_trio.testing import FakeClaude, turn, init, bash, text, result

    fake = FakeClaude.create(tmp_path / "fake", [
        turn(init(), bash("echo hi > hello.txt"), text("Done."), result("Done.")),
    ])
    config = Config(claude=ClaudeSettings(binary=str(fake.binary), env=fake.env))

- the fake claude (:mod:`nexo_trio.testing.scenario`): :class:`FakeClaude` and the steps a
  scripted turn is made of (``init``, ``text``, ``bash``, ``tool_use``, ``result``,
  ``sleep_request``, ``hang``, ...); ``nexo-fake-claude --help`` lists them all;
- the Messages API fake (:mod:`nexo_trio.testing.messages_api`): :class:`ScriptedMessagesAPI`
  answering by :class:`Reply` rules (matchers ``nth``, ``prompt_contains``, ...), its answers
  built with ``reply_text``, ``reply_tool_use`` and ``reply_error`` (``text``, ``tool_use``
  and ``error`` in that module; renamed here beside the fake claude's steps).

The names load lazily: the fake claude's module does not import trio.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nexo_trio.core.lazy import lazy_exports

_SCENARIO = "nexo_trio.testing.scenario"
_API = "nexo_trio.testing.messages_api"
_EXPORTS = {
    "FakeClaude": _SCENARIO,
    "Turn": _SCENARIO,
    "Step": _SCENARIO,
    "turn": _SCENARIO,
    "done_turn": _SCENARIO,
    "compact_turn": _SCENARIO,
    "init": _SCENARIO,
    "text": _SCENARIO,
    "compact": _SCENARIO,
    "tool_use": _SCENARIO,
    "tool_result": _SCENARIO,
    "bash": _SCENARIO,
    "result": _SCENARIO,
    "api_error": _SCENARIO,
    "sleep_request": _SCENARIO,
    "frame": _SCENARIO,
    "raw": _SCENARIO,
    "huge_line": _SCENARIO,
    "stderr": _SCENARIO,
    "sleep": _SCENARIO,
    "spawn": _SCENARIO,
    "ignore_sigterm": _SCENARIO,
    "hang": _SCENARIO,
    "exit_with": _SCENARIO,
    "kill_self": _SCENARIO,
    "stdio_server": _SCENARIO,
    "write_mcp_config": _SCENARIO,
    "ScriptedMessagesAPI": _API,
    "Reply": _API,
    "RecordedRequest": _API,
    "Matcher": _API,
    "MessageResponse": _API,
    "ErrorResponse": _API,
    "always": _API,
    "nth": _API,
    "last_message_has_tool_result": _API,
    "prompt_contains": _API,
    "system_contains": _API,
    "body_contains": _API,
    "reply_text": f"{_API}:text",
    "reply_tool_use": f"{_API}:tool_use",
    "reply_error": f"{_API}:error",
    "ApiUsage": f"{_API}:Usage",
}

if TYPE_CHECKING:
    from nexo_trio.testing.messages_api import (
        ErrorResponse,
        Matcher,
        MessageResponse,
        RecordedRequest,
        Reply,
        ScriptedMessagesAPI,
        always,
        body_contains,
        last_message_has_tool_result,
        nth,
        prompt_contains,
        system_contains,
    )
    from nexo_trio.testing.messages_api import (
        Usage as ApiUsage,
    )
    from nexo_trio.testing.messages_api import (
        error as reply_error,
    )
    from nexo_trio.testing.messages_api import (
        text as reply_text,
    )
    from nexo_trio.testing.messages_api import (
        tool_use as reply_tool_use,
    )
    from nexo_trio.testing.scenario import (
        FakeClaude,
        Step,
        Turn,
        api_error,
        bash,
        compact,
        compact_turn,
        done_turn,
        exit_with,
        frame,
        hang,
        huge_line,
        ignore_sigterm,
        init,
        kill_self,
        raw,
        result,
        sleep,
        sleep_request,
        spawn,
        stderr,
        stdio_server,
        text,
        tool_result,
        tool_use,
        turn,
        write_mcp_config,
    )

__all__ = [
    "ApiUsage",
    "ErrorResponse",
    "FakeClaude",
    "Matcher",
    "MessageResponse",
    "RecordedRequest",
    "Reply",
    "ScriptedMessagesAPI",
    "Step",
    "Turn",
    "always",
    "api_error",
    "bash",
    "body_contains",
    "compact",
    "compact_turn",
    "done_turn",
    "exit_with",
    "frame",
    "hang",
    "huge_line",
    "ignore_sigterm",
    "init",
    "kill_self",
    "last_message_has_tool_result",
    "nth",
    "prompt_contains",
    "raw",
    "reply_error",
    "reply_text",
    "reply_tool_use",
    "result",
    "sleep",
    "sleep_request",
    "spawn",
    "stderr",
    "stdio_server",
    "system_contains",
    "text",
    "tool_result",
    "tool_use",
    "turn",
    "write_mcp_config",
]

__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
