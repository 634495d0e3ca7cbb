"""Write scenarios for the fake ``claude`` and run it: the public test kit's front door.

Example::

    fake = FakeClaude.create(tmp_path, [
        turn(init(), bash("echo hi > hello.txt"), text("Done."), result("Done.")),
    ])
    outcome = (await run_turn(fake.command("Create hello.txt"), timeout=30)).outcome
    assert fake.invocations()[0]["prompt"] == "Create hello.txt"

Each ``turn`` is consumed by one invocation of the fake, in order (a turn built with
``prompt_contains`` is only taken by an invocation whose prompt contains that text).

With a permission prompt tool the fake asks a real MCP server, like Claude Code::

    config = write_mcp_config(tmp_path / "mcp.json", {"nexo": stdio_server(argv)})
    command = fake.command(
        "Do it", mcp_config=config, permission_prompt_tool="mcp__nexo__permission_prompt"
    )
    ...
    assert fake.permission_log()[0]["outcome"] == "deny"

In stream-json input mode (``--input-format stream-json --permission-prompt-tool=stdio``,
what ``ClaudeCommand(stream_input=True)`` runs) the prompt is the first ``user`` message on
stdin, each tool call that would prompt is asked with a ``can_use_tool`` control request on
stdout, an ``interrupt`` request ends the turn, and the fake exits only once stdin ends (see
:mod:`nexo_trio.testing.fake_claude`). The user messages written after the prompt are in
``fake.messages()``::

    assert [m["text"] for m in fake.messages() if m["taken"]] == ["also do this"]
"""

from __future__ import annotations

import base64
import json
import stat
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from nexo_trio.core.command import ClaudeCommand

Step = dict[str, Any]


@attrs.frozen
class Turn:
    """What one invocation of the fake plays."""

    steps: tuple[Step, ...]
    prompt_contains: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The turn as the fake reads it."""
        data: dict[str, Any] = {"steps": list(self.steps)}
        if self.prompt_contains is not None:
            data["prompt_contains"] = self.prompt_contains
        return data


def turn(*steps: Step, prompt_contains: str | None = None) -> Turn:
    """A turn made of ``steps``."""
    return Turn(steps=steps, prompt_contains=prompt_contains)


def init(mcp_status: Mapping[str, str] | None = None) -> Step:
    """The ``system/init`` frame (MCP servers from ``--mcp-config``, statuses overridable)."""
    return {"op": "init", "mcp_status": dict(mcp_status or {})}


def text(value: str, *, usage: Mapping[str, int] | None = None) -> Step:
    """An assistant text message (``usage`` overrides its per-request token counts, e.g.
    ``{"input_tokens": 190_000}`` to make the context look nearly full)."""
    step: Step = {"op": "text", "text": value}
    if usage is not None:
        step["usage"] = dict(usage)
    return step


def compact(pre_tokens: int = 150_000, post_tokens: int = 5_000) -> Step:
    """What the CLI prints for a ``/compact`` turn: status, compact_boundary, result."""
    return {"op": "compact", "pre_tokens": pre_tokens, "post_tokens": post_tokens}


def compact_turn(pre_tokens: int = 150_000, post_tokens: int = 5_000) -> Turn:
    """A turn that answers a ``/compact`` prompt (only taken by one)."""
    return turn(init(), compact(pre_tokens, post_tokens), prompt_contains="/compact")


def tool_use(name: str, input: Mapping[str, Any]) -> Step:
    """An assistant ``tool_use`` block (not executed)."""
    return {"op": "tool_use", "name": name, "input": dict(input)}


def tool_result(content: str, *, is_error: bool = False) -> Step:
    """A user ``tool_result`` for the last tool use."""
    return {"op": "tool_result", "content": content, "is_error": is_error}


def bash(command: str) -> Step:
    """A Bash tool use that really runs ``command`` in the fake's cwd, and its result."""
    return {"op": "bash", "command": command}


def result(
    text: str | None = "Done.",
    *,
    subtype: str = "success",
    is_error: bool = False,
    errors: Sequence[str] | None = None,
    api_error_status: int | None = None,
    terminal_reason: str | None = None,
    usage: Mapping[str, int] | None = None,
    cost_usd: float = 0.001,
    num_turns: int = 1,
) -> Step:
    """The ``result`` frame; ``total_cost_usd`` accumulates over the session like the CLI's."""
    step: Step = {
        "op": "result",
        "subtype": subtype,
        "is_error": is_error,
        "text": text,
        "cost_usd": cost_usd,
        "num_turns": num_turns,
    }
    if errors is not None:
        step["errors"] = list(errors)
    if api_error_status is not None:
        step["api_error_status"] = api_error_status
    if terminal_reason is not None:
        step["terminal_reason"] = terminal_reason
    if usage is not None:
        step["usage"] = dict(usage)
    return step


def api_error(status: int, message: str = "boom") -> Step:
    """A result frame the way the CLI reports an API failure (``success`` + ``is_error``)."""
    return result(
        f"API Error: {status} {message}",
        is_error=True,
        api_error_status=status,
        terminal_reason="api_error",
        cost_usd=0.0,
    )


def sleep_request(duration_ms: int, reason: str = "waiting") -> Step:
    """A result whose text asks nexo-trio to sleep and wake Claude later."""
    body = {"__nexo_sleep__": True, "duration_ms": duration_ms, "reason": reason}
    return result(json.dumps(body))


def frame(obj: Mapping[str, Any]) -> Step:
    """Any JSON object as one line (``$SESSION_ID`` in strings is replaced)."""
    return {"op": "frame", "frame": dict(obj)}


def raw(data: bytes) -> Step:
    """Raw bytes on stdout, no newline added."""
    return {"op": "raw", "b64": base64.b64encode(data).decode()}


def huge_line(size: int) -> Step:
    """One JSON line of ``size`` bytes (newline included)."""
    return {"op": "huge_line", "size": size}


def close_stdout() -> Step:
    """Close stdout and carry on (the process stays alive; later output is lost)."""
    return {"op": "close_stdout"}


def stderr(value: str) -> Step:
    """Text on stderr."""
    return {"op": "stderr", "text": value}


def sleep(seconds: float) -> Step:
    """Pause."""
    return {"op": "sleep", "seconds": seconds}


def spawn(
    argv: Sequence[str] = ("sleep", "600"),
    *,
    own_session: bool = True,
    pidfile: Path | None = None,
    inherit_stdout: bool = False,
) -> Step:
    """Start a child process (by default in its own session, like a Bash-tool child)."""
    step: Step = {
        "op": "spawn",
        "argv": list(argv),
        "own_session": own_session,
        "inherit_stdout": inherit_stdout,
    }
    if pidfile is not None:
        step["pidfile"] = str(pidfile)
    return step


def ignore_sigterm() -> Step:
    """From now on the fake ignores SIGTERM (only SIGKILL stops it)."""
    return {"op": "ignore_sigterm"}


def hang() -> Step:
    """Wait until killed (bounded by ``NEXO_FAKE_CLAUDE_MAX_LIFETIME``)."""
    return {"op": "hang"}


def exit_with(code: int) -> Step:
    """Exit now with ``code``."""
    return {"op": "exit", "code": code}


def kill_self(signal_name: str = "SIGKILL") -> Step:
    """Die by a signal."""
    return {"op": "kill_self", "signal": signal_name}


def stdio_server(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    timeout_ms: int | None = None,
) -> dict[str, Any]:
    """One stdio entry of an MCP config: ``argv[0]`` is the command, the rest its args.
    ``timeout_ms`` bounds the handshake and each tool call (the fake's default: 10 s for
    the handshake)."""
    server: dict[str, Any] = {"type": "stdio", "command": argv[0], "args": list(argv[1:])}
    if env is not None:
        server["env"] = dict(env)
    if timeout_ms is not None:
        server["timeout"] = timeout_ms
    return server


def write_mcp_config(path: Path, servers: Mapping[str, Mapping[str, Any]]) -> Path:
    """Write ``{"mcpServers": servers}`` to ``path`` (for ``--mcp-config``); the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"mcpServers": {k: dict(v) for k, v in servers.items()}}))
    return path


def done_turn(final: str = "Done.", *steps: Step) -> Turn:
    """A complete, successful turn: init, ``steps``, a text and a success result."""
    return turn(init(), *steps, text(final), result(final))


@attrs.frozen
class FakeClaude:
    """A fake ``claude`` installed in a directory, with its scenario and state."""

    directory: Path
    binary: Path
    scenario_path: Path
    state_dir: Path
    max_lifetime: float = 600.0

    @classmethod
    def create(
        cls,
        directory: Path,
        turns: Sequence[Turn],
        *,
        max_lifetime: float = 600.0,
        state_dir: Path | None = None,
    ) -> FakeClaude:
        """Write the scenario and an executable ``claude`` shim into ``directory``.

        The fake keeps its records (invocations, sessions) in ``state_dir``, by default
        ``directory/state``. A confined turn can write only a few places: put it under the
        CLI's ``$HOME/.claude`` (as the real CLI keeps its own state), or name it in
        ``sandbox.writable``.
        """
        directory.mkdir(parents=True, exist_ok=True)
        scenario = directory / "scenario.json"
        scenario.write_text(json.dumps({"turns": [t.to_json() for t in turns]}, indent=1))
        state = state_dir or directory / "state"
        state.mkdir(parents=True, exist_ok=True)
        binary = directory / "claude"
        write_shim(binary)
        return cls(
            directory=directory,
            binary=binary,
            scenario_path=scenario,
            state_dir=state,
            max_lifetime=max_lifetime,
        )

    @property
    def env(self) -> dict[str, str]:
        """The environment the fake needs (pass it as the command's env overrides)."""
        return {
            "NEXO_FAKE_CLAUDE_SCENARIO": str(self.scenario_path),
            "NEXO_FAKE_CLAUDE_STATE": str(self.state_dir),
            "NEXO_FAKE_CLAUDE_MAX_LIFETIME": str(self.max_lifetime),
        }

    def command(self, prompt: str, **options: Any) -> ClaudeCommand:
        """A :class:`ClaudeCommand` that runs this fake (``options`` as for the command)."""
        env = {**self.env, **options.pop("env", {})}
        return ClaudeCommand(prompt=prompt, binary=str(self.binary), env=env, **options)

    def invocations(self) -> list[dict[str, Any]]:
        """Every invocation so far: argv, prompt, stdin, cwd, pid, session, turn, env."""
        return _read_jsonl(self.state_dir / "invocations.jsonl")

    def permission_log(self) -> list[dict[str, Any]]:
        """Every exchange with the permission prompt tool so far: ``tool``, ``tool_use_id``,
        ``input``, ``outcome`` (``allow`` | ``deny`` | ``error``) and ``answer`` (the
        allowed input, the deny message or the error), with ``session_id`` and ``pid``."""
        return _read_jsonl(self.state_dir / "permissions.jsonl")

    def messages(self) -> list[dict[str, Any]]:
        """The user messages written to a stream-json fake after its prompt, in order:
        ``text`` and ``content``, ``taken`` (whether the turn took it in: ``False`` for one
        that came after the result or was still queued when the turn was interrupted),
        ``replayed`` (echoed with ``--replay-user-messages``), ``turn``, ``session_id``
        and ``pid``."""
        return _read_jsonl(self.state_dir / "messages.jsonl")

    def sessions(self) -> dict[str, dict[str, Any]]:
        """The sessions the fake knows, by id (prompts and cumulative cost)."""
        folder = self.state_dir / "sessions"
        if not folder.exists():
            return {}
        return {p.stem: json.loads(p.read_text()) for p in folder.glob("*.json")}


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def write_shim(path: Path) -> None:
    """Write an executable that runs the fake ``claude`` with this interpreter."""
    src = Path(__file__).resolve().parents[2]
    path.write_text(
        f"#!{sys.executable}\n"
        "import sys\n"
        f"sys.path.insert(0, {str(src)!r})\n"
        "from nexo_trio.testing.fake_claude import main\n"
        "main()\n"
    )
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
