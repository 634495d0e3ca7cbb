"""The LLM decider: asks a language model whether a tool call may run, and fails closed.

:class:`LlmDecider` builds a prompt from the goal, the workspace, the tool, its input (as
JSON, truncated) and the recent decisions for the same goal; it asks an :class:`LlmClient`
under a deadline and reads the answer leniently: a JSON object, bare, fenced in
```` ```json ```` or the first ``{...}`` in prose, with ``outcome`` (``allow`` |
``deny`` | ``allow_session``), ``message``, ``rationale`` and optionally ``updated_input``.
Anything else — an unparseable answer, an unknown outcome, a timeout, a transport or SDK
error — is ``unavailable`` with the reason, which the gate sends as a deny. It never raises
(but for trio's cancellation).

:class:`AnthropicClient` is the client over the official ``anthropic`` SDK's async client
(the ``llm`` extra: ``pip install 'nexo-trio[llm]'``), imported only when it is built.
It runs under trio (the SDK's HTTP stack is anyio). Tests point it at
:class:`nexo_trio.testing.messages_api.ScriptedMessagesAPI`.

:func:`client_from_settings` (a client from the config's ``permission.llm``) and :func:`ask`
(one bounded request that never raises) serve both the decider and the ``llm_judge``
acceptance check.
"""

from __future__ import annotations

import json
import re
from collections import OrderedDict, deque
from collections.abc import Mapping
from typing import Any, Protocol

import attrs
import trio

from nexo_trio.core.permission import (
    Decision,
    DecisionOutcome,
    PermissionRequest,
    cli_note,
    unavailable,
)
from nexo_trio.core.settings import LlmSettings
from nexo_trio.gate.decider import close_decider

INSTALL_HINT = "pip install 'nexo-trio[llm]'"

SYSTEM_PROMPT = """\
You are the permission gate of an autonomous coding agent (Claude Code) working toward a \
goal in a workspace. Before each tool call that needs approval you decide whether it may \
run. Allow what plausibly serves the goal and stays inside the workspace; deny what is \
destructive, irreversible, reaches outside the workspace without need, exfiltrates data or \
does not serve the goal. You may rewrite the input to a safer equivalent.

Answer with one JSON object and nothing else:
{"outcome": "allow" | "deny" | "allow_session", "message": "<what the agent is told>", \
"rationale": "<why, one or two sentences>", "updated_input": {<optional replacement input>}}
"allow_session" allows this same call for the rest of the session."""


class LlmClient(Protocol):
    """What the decider needs from a language model: one completion, as text."""

    async def complete(self, *, system: str, prompt: str, max_tokens: int, timeout: float) -> str:
        """The model's text answer to ``prompt`` (raise on any failure)."""
        ...


class LlmError(Exception):
    """A request to the model failed (HTTP status, timeout, connection)."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class AnthropicClient:
    """:class:`LlmClient` over the official SDK's ``AsyncAnthropic`` (non-streaming
    ``messages.create``; no SDK retries: the decider has a deadline and fails closed).

    Close it with :meth:`aclose` (or ``async with``) to release its connections.
    """

    def __init__(
        self,
        *,
        model: str,
        api_key: str,
        base_url: str | None = None,
        timeout: float = 20.0,
    ) -> None:
        try:
            import anthropic  # noqa: PLC0415 - the optional `llm` extra
        except ImportError as exc:
            raise ImportError(
                f"the LLM decider needs the anthropic SDK, which is not installed: {INSTALL_HINT}"
            ) from exc
        self.model = model
        self._client = anthropic.AsyncAnthropic(
            base_url=base_url, api_key=api_key, timeout=timeout, max_retries=0
        )

    async def complete(self, *, system: str, prompt: str, max_tokens: int, timeout: float) -> str:
        """The concatenated text blocks of the model's answer; :class:`LlmError` on failure."""
        import anthropic  # noqa: PLC0415 - imported (and checked) by __init__

        try:
            message = await self._client.messages.create(
                model=self.model,
                max_tokens=max_tokens,
                system=system,
                messages=[{"role": "user", "content": prompt}],
                timeout=timeout,
            )
        except anthropic.APIStatusError as exc:
            raise LlmError(_status_text(exc.status_code, exc.body), status=exc.status_code) from exc
        except anthropic.APITimeoutError as exc:
            raise LlmError(f"the request timed out after {timeout:g}s") from exc
        except anthropic.APIConnectionError as exc:
            raise LlmError(f"connection error: {exc}") from exc
        return "".join(block.text for block in message.content if block.type == "text")

    async def aclose(self) -> None:
        """Close the SDK client's connections."""
        await self._client.close()

    async def __aenter__(self) -> AnthropicClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


def client_from_settings(
    settings: LlmSettings,
    environ: Mapping[str, str],
    *,
    model: str | None = None,
    user: str = "the LLM decider",
) -> AnthropicClient:
    """The :class:`AnthropicClient` a config's ``permission.llm`` describes (``model``
    overrides its model): the one client of the LLM decider and of ``llm_judge`` checks.

    Raises ``ValueError`` when the API key variable is unset or empty, and ``ImportError``
    (saying ``pip install 'nexo-trio[llm]'``) without the SDK; ``user`` says who needs them.
    """
    api_key = environ.get(settings.api_key_env, "")
    if not api_key.strip():
        raise ValueError(
            f"{user} needs an API key in the environment variable "
            f"{settings.api_key_env} (permission.llm.api_key_env), which is not set"
        )
    try:
        return AnthropicClient(
            model=model or settings.model,
            api_key=api_key,
            base_url=settings.base_url,
            timeout=settings.timeout_s,
        )
    except ImportError as exc:
        raise ImportError(
            f"{user} needs the anthropic SDK, which is not installed: {INSTALL_HINT}"
        ) from exc


@attrs.frozen
class LlmFailure:
    """Why :func:`ask` got no answer (a timeout, an HTTP or transport error, a client bug)."""

    reason: str


async def ask(
    client: LlmClient,
    *,
    system: str,
    prompt: str,
    max_tokens: int,
    timeout: float,
    user: str = "LLM decider",
) -> str | LlmFailure:
    """The model's text answer, or why there is none, within ``timeout`` (a trio deadline
    around the call as well as the client's own). Never raises but for cancellation."""
    answer: str | None = None
    failure: str | None = None
    with trio.move_on_after(timeout) as scope:
        try:
            answer = await client.complete(
                system=system, prompt=prompt, max_tokens=max_tokens, timeout=timeout
            )
        except LlmError as exc:
            failure = f"LLM request failed: {exc}"
        except Exception as exc:
            failure = f"LLM client error: {type(exc).__name__}: {exc}"
    if scope.cancelled_caught:
        failure = f"{user} timed out after {timeout:g}s"
    if failure is not None or answer is None:
        return LlmFailure(failure or "the LLM gave no answer")
    return answer


def _status_text(status: int, body: object) -> str:
    """``HTTP 529 overloaded_error: Overloaded`` from an API error body."""
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and ("type" in inner or "message" in inner):
            return f"HTTP {status} {inner.get('type', 'error')}: {inner.get('message', '')}"
    return f"HTTP {status}"


@attrs.frozen
class HistoryEntry:
    """A decision the LLM decider made, as the next prompts show it."""

    tool_name: str
    input_summary: str
    outcome: DecisionOutcome
    reason: str


_OUTCOMES = {
    "allow": DecisionOutcome.ALLOW_ONCE,
    "allow_once": DecisionOutcome.ALLOW_ONCE,
    "deny": DecisionOutcome.DENY,
    "allow_session": DecisionOutcome.ALLOW_SESSION,
}
_SCOPES = ("tool", "tool+input")
_FENCE = re.compile(r"```[A-Za-z0-9_-]*[ \t]*\n?(.*?)```", re.DOTALL)


def parse_answer(answer: str) -> dict[str, Any] | None:
    """The JSON object in a model's answer: the whole text, a fenced block, or the first
    ``{...}`` that parses as an object. ``None`` when there is none."""
    stripped = answer.strip()
    candidates = [stripped, *(m.group(1).strip() for m in _FENCE.finditer(answer))]
    for candidate in candidates:
        try:
            value = json.loads(candidate)
        except (ValueError, RecursionError):  # RecursionError: nested too deeply
            continue
        if isinstance(value, dict):
            return value
    decoder = json.JSONDecoder()
    start = answer.find("{")
    while start >= 0:
        try:
            value, _end = decoder.raw_decode(answer, start)
        except (ValueError, RecursionError):
            value = None
        if isinstance(value, dict):
            return value
        start = answer.find("{", start + 1)
    return None


def _text_field(answer: Mapping[str, Any], key: str) -> str | None:
    value = answer.get(key)
    if value is None:
        return None
    text = value if isinstance(value, str) else json.dumps(value)
    return text.strip() or None


def decision_from_answer(answer: str, decider: str = "llm") -> Decision:
    """The decision a model's answer carries; ``unavailable`` (a deny) when it carries none."""
    parsed = parse_answer(answer)
    if parsed is None:
        excerpt = " ".join(answer.split())[:200]
        return unavailable(f"unparseable LLM answer: {excerpt!r}", decider)
    raw_outcome = parsed.get("outcome")
    outcome = _OUTCOMES.get(raw_outcome.strip().lower()) if isinstance(raw_outcome, str) else None
    if outcome is None:
        return unavailable(f"the LLM answered an unknown outcome {raw_outcome!r}", decider)
    message = _text_field(parsed, "message")
    rationale = _text_field(parsed, "rationale")
    if outcome is DecisionOutcome.DENY:
        return Decision(
            DecisionOutcome.DENY,
            message=message or rationale or "Permission denied by the LLM decider",
            decider=decider,
            rationale=rationale,
        )
    updated = parsed.get("updated_input")
    if updated is not None and not isinstance(updated, dict):
        return unavailable(
            f"the LLM answered an updated_input that is not an object: {updated!r}"[:300], decider
        )
    scope: str | None = None
    if outcome is DecisionOutcome.ALLOW_SESSION:
        asked = parsed.get("scope")
        scope = asked if asked in _SCOPES else "tool+input"
    return Decision(
        outcome,
        message=message,
        updated_input=updated,
        scope=scope,
        decider=decider,
        rationale=rationale,
    )


def _truncate(text: str, limit: int) -> tuple[str, bool]:
    if len(text) <= limit:
        return text, False
    return text[:limit], True


class LlmDecider:
    """Decides permission requests by asking a language model (see the module docstring).

    ``timeout`` bounds each decision (trio deadline around the call, and the client's own
    timeout); ``max_input_chars`` bounds the tool input shown; ``history_size`` is how many
    recent decisions per goal the prompt shows (newest last), for at most ``max_goals`` goals.
    """

    name = "llm"

    def __init__(
        self,
        client: LlmClient,
        *,
        timeout: float = 20.0,
        max_tokens: int = 512,
        max_input_chars: int = 4000,
        history_size: int = 8,
        max_goals: int = 256,
        system_prompt: str = SYSTEM_PROMPT,
    ) -> None:
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        if history_size < 0 or max_goals < 1 or max_input_chars < 1:
            raise ValueError("history_size, max_goals and max_input_chars must be positive")
        self.client = client
        self.timeout = timeout
        self.max_tokens = max_tokens
        self.max_input_chars = max_input_chars
        self.history_size = history_size
        self.max_goals = max_goals
        self.system_prompt = system_prompt
        self._history: OrderedDict[str, deque[HistoryEntry]] = OrderedDict()

    @classmethod
    def from_settings(cls, settings: LlmSettings, environ: Mapping[str, str]) -> LlmDecider:
        """The decider a config describes, over :class:`AnthropicClient`.

        Raises ``ValueError`` when the API key variable is unset or empty, and
        ``ImportError`` (saying ``pip install 'nexo-trio[llm]'``) without the SDK.
        """
        return cls(client_from_settings(settings, environ), timeout=settings.timeout_s)

    async def aclose(self) -> None:
        """Close the client, if it can be closed."""
        await close_decider(self.client)

    async def __aenter__(self) -> LlmDecider:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def history(self, goal_id: str) -> list[HistoryEntry]:
        """The recent decisions for a goal, oldest first."""
        return list(self._history.get(goal_id, ()))

    def build_prompt(self, request: PermissionRequest) -> str:
        """The user prompt for one request."""
        tool_input = json.dumps(request.input, indent=2, sort_keys=True, default=str)
        shown, cut = _truncate(tool_input, self.max_input_chars)
        lines = [
            f"Goal: {request.goal_description.strip() or '(no description)'}",
            f"Goal id: {request.goal_id}",
            f"Workspace: {request.workspace or '(none)'}",
            "",
            f"Tool: {request.tool_name}",
            "Input (JSON"
            + (
                f", truncated to {self.max_input_chars} of {len(tool_input)} characters"
                if cut
                else ""
            )
            + "):",
            shown + ("\n[... truncated]" if cut else ""),
            "",
        ]
        note = cli_note(request)
        if note is not None:
            # From the turn, like the input: shown as data, after it, never as instructions.
            lines += [f"Claude Code's own permission check on this call: {note}", ""]
        recent = self.history(request.goal_id)
        if recent:
            lines.append("Recent decisions for this goal (oldest first, newest last):")
            lines.extend(
                f"- {entry.tool_name} {entry.input_summary} -> {entry.outcome.value}: "
                f"{entry.reason}"
                for entry in recent
            )
        else:
            lines.append("Recent decisions for this goal: none.")
        lines += ["", "Decide this tool call. Answer with the JSON object only."]
        return "\n".join(lines)

    async def decide(self, request: PermissionRequest) -> Decision:
        """Ask the model; any failure is ``unavailable`` with the reason (a deny)."""
        answer = await ask(
            self.client,
            system=self.system_prompt,
            prompt=self.build_prompt(request),
            max_tokens=self.max_tokens,
            timeout=self.timeout,
        )
        if isinstance(answer, LlmFailure):
            decision = unavailable(answer.reason, self.name)
        else:
            decision = decision_from_answer(answer, self.name)
        self._remember(request, decision)
        return decision

    def _remember(self, request: PermissionRequest, decision: Decision) -> None:
        if self.history_size == 0:
            return
        entries = self._history.get(request.goal_id)
        if entries is None:
            entries = deque(maxlen=self.history_size)
            self._history[request.goal_id] = entries
            while len(self._history) > self.max_goals:
                self._history.popitem(last=False)
        self._history.move_to_end(request.goal_id)
        summary = json.dumps(request.input, sort_keys=True, default=str)
        summary, cut = _truncate(summary, 160)
        reason = decision.rationale or decision.message or ""
        reason, reason_cut = _truncate(" ".join(reason.split()), 200)
        entries.append(
            HistoryEntry(
                tool_name=request.tool_name,
                input_summary=summary + ("…" if cut else ""),
                outcome=decision.outcome,
                reason=(reason + ("…" if reason_cut else "")) or "(no reason given)",
            )
        )
