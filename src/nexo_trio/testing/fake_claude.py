"""A scripted stand-in for the ``claude`` executable (stdlib only, so it starts fast).

It accepts the real CLI's print-mode argv and plays a *scenario*: a JSON file that lists
turns, one consumed per invocation, each a list of steps (frames to print, tools to run,
sleeps, raw bytes, exits, signals, grandchildren...). It keeps sessions in a state
directory, so ``--resume ID`` continues a session it created and an unknown or malformed id
is answered exactly as Claude Code 2.1.332 answers it (one ``result`` frame,
``error_during_execution``, the message on stderr, exit 1). Every invocation's argv, stdin,
cwd and relevant environment are appended to ``invocations.jsonl`` in the state directory.

Environment:

``NEXO_FAKE_CLAUDE_SCENARIO``
    path of the scenario JSON (required).
``NEXO_FAKE_CLAUDE_STATE``
    the state directory (default: ``<scenario>.state`` beside the scenario).
``NEXO_FAKE_CLAUDE_MAX_LIFETIME``
    seconds a ``hang`` step waits at most (default 600): nothing runs forever.

Build scenarios in Python with :mod:`nexo_trio.testing.scenario`. Step reference: see
``_STEP_DOC`` below or ``nexo-fake-claude --help``.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

VERSION = "2.1.332"
DEFAULT_MODEL = "claude-sonnet-4-5"
TOOLS = ["Task", "Bash", "Edit", "Glob", "Grep", "LS", "Read", "Write", "WebFetch"]

_STEP_DOC = """\
Steps (JSON objects with an "op"):
  init           system/init frame   [mcp_status: {server: status}]
  text           assistant text      text
  tool_use       assistant tool_use  name, input
  tool_result    user tool_result    content, [is_error]
  bash           tool_use Bash + run it with /bin/sh in cwd + tool_result   command
  result         result frame        [subtype, text, is_error, errors, api_error_status,
                                      terminal_reason, usage, cost_usd, num_turns]
  frame          any JSON object     frame ("$SESSION_ID" in strings is replaced)
  raw            raw bytes           text | b64 (no newline added)
  huge_line      one line of N bytes size
  stderr         write to stderr     text
  sleep          sleep               seconds
  spawn          start a process     argv, [own_session=true, pidfile, inherit_stdout]
  ignore_sigterm SIGTERM is ignored from now on
  hang           sleep until killed (at most NEXO_FAKE_CLAUDE_MAX_LIFETIME s)
  exit           exit now            code
  kill_self      die by a signal     signal (e.g. "SIGKILL")
Without an exit step, the exit code is 1 after an is_error result, else 0.
"""

_VALUE_FLAGS = {
    "--output-format",
    "--input-format",
    "--model",
    "--resume",
    "-r",
    "--session-id",
    "--mcp-config",
    "--permission-prompt-tool",
    "--allowedTools",
    "--allowed-tools",
    "--disallowedTools",
    "--disallowed-tools",
    "--add-dir",
    "--append-system-prompt",
    "--system-prompt",
    "--max-turns",
    "--permission-mode",
    "--settings",
    "--fallback-model",
    "--max-budget-usd",
}


class _Exit(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class Invocation:
    """One run of the fake CLI."""

    def __init__(self, argv: list[str]) -> None:
        self.argv = argv
        self.options: dict[str, list[str]] = {}
        self.positional: list[str] = []
        self._parse(argv)
        scenario = os.environ.get("NEXO_FAKE_CLAUDE_SCENARIO")
        if not scenario:
            self._fatal("NEXO_FAKE_CLAUDE_SCENARIO is not set: the fake claude needs a scenario")
        self.scenario_path = Path(scenario)
        state = os.environ.get("NEXO_FAKE_CLAUDE_STATE")
        self.state_dir = Path(state) if state else Path(f"{self.scenario_path}.state")
        self.max_lifetime = float(os.environ.get("NEXO_FAKE_CLAUDE_MAX_LIFETIME", "600"))
        self.session_id = ""
        self.children: list[subprocess.Popen[bytes]] = []
        self.last_tool_use_id = ""
        self.tool_counter = 0
        self.last_is_error = False
        self.cumulative_cost = 0.0
        self.turn_cost = 0.0

    # ------------------------------------------------------------------ argv

    def _parse(self, argv: list[str]) -> None:
        it = iter(argv)
        for token in it:
            if token.startswith("-") and len(token) > 1:
                name, eq, value = token.partition("=")
                if eq:
                    self.options.setdefault(name, []).append(value)
                elif name in _VALUE_FLAGS:
                    self.options.setdefault(name, []).append(next(it, ""))
                else:
                    self.options.setdefault(name, []).append("")
            else:
                self.positional.append(token)

    def _opt(self, *names: str) -> str | None:
        for name in names:
            if name in self.options:
                return self.options[name][-1]
        return None

    # ------------------------------------------------------------------ output

    def _write(self, data: bytes) -> None:
        out = sys.stdout.buffer
        out.write(data)
        out.flush()

    def emit(self, frame: dict[str, Any]) -> None:
        """Print one frame as a JSON line."""
        self._write(json.dumps(frame, separators=(",", ":")).encode() + b"\n")

    def _fatal(self, message: str) -> NoReturn:
        sys.stderr.write(message + "\n")
        sys.stderr.flush()
        raise _Exit(1)

    # ------------------------------------------------------------------ run

    def run(self) -> int:
        """Play the invocation; return the exit code."""
        try:
            self._run()
        except _Exit as exc:
            return exc.code
        return 1 if self.last_is_error else 0

    def _run(self) -> None:
        if "-p" not in self.options and "--print" not in self.options:
            self._fatal("fake claude: only print mode (-p) is supported")
        if self._opt("--output-format") == "stream-json" and "--verbose" not in self.options:
            self._fatal("Error: When using --print, --output-format=stream-json requires --verbose")
        prompt = self.positional[0] if self.positional else None
        stdin_text = None
        if prompt is None:
            stdin_text = sys.stdin.buffer.read().decode("utf-8", errors="surrogateescape")
            prompt = stdin_text
        if not prompt:
            self._fatal(
                "Error: Input must be provided either through stdin or as a prompt argument "
                "when using --print"
            )
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with self._locked():
            self._resolve_session()
            turn_index, turn = self._claim_turn(prompt)
            self._log_invocation(prompt, stdin_text, turn_index)
            if turn is not None:
                self._remember_session(prompt)
        signal.signal(signal.SIGTERM, self._on_sigterm)
        if turn is None:
            self._result(
                subtype="error_during_execution",
                is_error=True,
                errors=["fake claude: the scenario has no turn left for this invocation"],
            )
            raise _Exit(1)
        for step in turn.get("steps", []):
            self._step(step)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with (self.state_dir / "lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _session_file(self, session_id: str) -> Path:
        return self.state_dir / "sessions" / f"{session_id}.json"

    def _resolve_session(self) -> None:
        resume = self._opt("--resume", "-r")
        chosen = self._opt("--session-id")
        if resume is not None:
            if not _is_uuid(resume):
                self.session_id = str(uuid.uuid4())
                self._invalid_resume(
                    "Error: --resume requires a valid session ID or session title when used "
                    "with --print. Usage: claude -p --resume <session-id|title>. Provided "
                    f'value "{resume}" is not a UUID and does not match any session title.'
                )
            if not self._session_file(resume).exists():
                self.session_id = resume
                self._invalid_resume(f"No conversation found with session ID: {resume}")
            self.session_id = resume
            session = json.loads(self._session_file(resume).read_text())
            self.cumulative_cost = float(session.get("cost_usd", 0.0))
        elif chosen is not None:
            if not _is_uuid(chosen):
                self._fatal(f"Error: Invalid session ID. Must be a valid UUID. Got: {chosen}")
            if self._session_file(chosen).exists():
                self._fatal(f"Error: Session ID {chosen} is already in use.")
            self.session_id = chosen
        else:
            self.session_id = str(uuid.uuid4())

    def _invalid_resume(self, message: str) -> NoReturn:
        self._log_invocation(self.positional[0] if self.positional else "", None, None)
        self._result(subtype="error_during_execution", is_error=True, errors=[message])
        self._fatal(message)

    def _claim_turn(self, prompt: str) -> tuple[int | None, dict[str, Any] | None]:
        scenario = json.loads(self.scenario_path.read_text())
        used_file = self.state_dir / "used_turns.json"
        used: list[int] = json.loads(used_file.read_text()) if used_file.exists() else []
        for index, turn in enumerate(scenario.get("turns", [])):
            if index in used:
                continue
            needle = turn.get("prompt_contains")
            if needle is not None and needle not in prompt:
                continue
            used.append(index)
            used_file.write_text(json.dumps(used))
            return index, turn
        return None, None

    def _log_invocation(self, prompt: str, stdin_text: str | None, turn: int | None) -> None:
        env = {
            k: v
            for k, v in os.environ.items()
            if k.startswith(("CLAUDE", "ANTHROPIC", "NEXO_", "DISABLE_"))
        }
        record = {
            "argv": self.argv,
            "prompt": prompt,
            "stdin": stdin_text,
            "cwd": os.getcwd(),
            "pid": os.getpid(),
            "session_id": self.session_id,
            "resumed": self._opt("--resume", "-r") is not None,
            "turn": turn,
            "env": env,
        }
        with (self.state_dir / "invocations.jsonl").open("a") as f:
            f.write(json.dumps(record) + "\n")

    def _remember_session(self, prompt: str) -> None:
        path = self._session_file(self.session_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        session = json.loads(path.read_text()) if path.exists() else {"prompts": []}
        session["prompts"].append(prompt)
        session.setdefault("cost_usd", 0.0)
        path.write_text(json.dumps(session))

    def _add_cost(self, cost: float) -> None:
        self.turn_cost += cost
        self.cumulative_cost += cost
        path = self._session_file(self.session_id)
        with self._locked():
            if path.exists():
                session = json.loads(path.read_text())
                session["cost_usd"] = self.cumulative_cost
                path.write_text(json.dumps(session))

    def _on_sigterm(self, signum: int, frame: object) -> None:
        # Like Claude Code: stop the children, then exit 143.
        for child in self.children:
            with contextlib.suppress(ProcessLookupError):
                child.kill()
        os._exit(143)

    # ------------------------------------------------------------------ steps

    def _step(self, step: dict[str, Any]) -> None:
        op = step.get("op")
        handler = getattr(self, f"_op_{op}", None)
        if handler is None:
            self._fatal(f"fake claude: unknown scenario op {op!r}")
        handler(step)

    def _op_init(self, step: dict[str, Any]) -> None:
        statuses = step.get("mcp_status", {})
        servers = [
            {"name": name, "status": statuses.get(name, "connected")}
            for name in self._mcp_server_names()
        ]
        self.emit(
            {
                "type": "system",
                "subtype": "init",
                "cwd": os.getcwd(),
                "session_id": self.session_id,
                "tools": TOOLS,
                "mcp_servers": servers,
                "model": self._opt("--model") or DEFAULT_MODEL,
                "permissionMode": self._opt("--permission-mode") or "default",
                "apiKeySource": "none",
                "claude_code_version": VERSION,
                "output_style": "default",
                "uuid": str(uuid.uuid4()),
            }
        )

    def _mcp_server_names(self) -> list[str]:
        names: list[str] = []
        for path in self.options.get("--mcp-config", []):
            try:
                config = json.loads(Path(path).read_text())
            except (OSError, ValueError):
                continue
            names += list(config.get("mcpServers", {}))
        return names

    def _assistant(self, content: list[dict[str, Any]], **extra: Any) -> None:
        self.emit(
            {
                "type": "assistant",
                "message": {
                    "id": f"msg_fake{uuid.uuid4().hex[:12]}",
                    "type": "message",
                    "role": "assistant",
                    "model": self._opt("--model") or DEFAULT_MODEL,
                    "content": content,
                    "stop_reason": None,
                    "usage": {
                        "input_tokens": 100,
                        "output_tokens": 10,
                        "cache_creation_input_tokens": 0,
                        "cache_read_input_tokens": 0,
                    },
                },
                "parent_tool_use_id": None,
                "session_id": self.session_id,
                "uuid": str(uuid.uuid4()),
                **extra,
            }
        )

    def _op_text(self, step: dict[str, Any]) -> None:
        self._assistant([{"type": "text", "text": _subst(step.get("text", ""), self)}])

    def _op_tool_use(self, step: dict[str, Any]) -> None:
        self.tool_counter += 1
        self.last_tool_use_id = f"toolu_fake{self.tool_counter:04d}"
        block = {
            "type": "tool_use",
            "id": self.last_tool_use_id,
            "name": step.get("name", "Bash"),
            "input": step.get("input", {}),
        }
        self._assistant([block])

    def _op_tool_result(self, step: dict[str, Any]) -> None:
        self.emit(
            {
                "type": "user",
                "message": {
                    "role": "user",
                    "content": [
                        {
                            "tool_use_id": self.last_tool_use_id,
                            "type": "tool_result",
                            "content": step.get("content", ""),
                            "is_error": bool(step.get("is_error", False)),
                        }
                    ],
                },
                "parent_tool_use_id": None,
                "session_id": self.session_id,
                "uuid": str(uuid.uuid4()),
            }
        )

    def _op_bash(self, step: dict[str, Any]) -> None:
        command = step["command"]
        self._op_tool_use({"name": "Bash", "input": {"command": command}})
        done = subprocess.run(
            ["/bin/sh", "-c", command],
            capture_output=True,
            check=False,
            timeout=self.max_lifetime,
        )
        output = (done.stdout + done.stderr).decode("utf-8", errors="replace")
        self._op_tool_result(
            {
                "content": output or "(Bash completed with no output)",
                "is_error": done.returncode != 0,
            }
        )

    def _op_result(self, step: dict[str, Any]) -> None:
        self._result(
            subtype=step.get("subtype", "success"),
            is_error=bool(step.get("is_error", False)),
            text=step.get("text"),
            errors=step.get("errors"),
            api_error_status=step.get("api_error_status"),
            terminal_reason=step.get("terminal_reason"),
            usage=step.get("usage"),
            cost_usd=float(step.get("cost_usd", 0.001)),
            num_turns=step.get("num_turns", 1),
        )

    def _result(
        self,
        *,
        subtype: str,
        is_error: bool,
        text: str | None = None,
        errors: list[str] | None = None,
        api_error_status: int | None = None,
        terminal_reason: str | None = None,
        usage: dict[str, int] | None = None,
        cost_usd: float = 0.0,
        num_turns: int = 0,
    ) -> None:
        if cost_usd:
            self._add_cost(cost_usd)
        usage = {
            "input_tokens": 100,
            "output_tokens": 20,
            "cache_read_input_tokens": 0,
            "cache_creation_input_tokens": 0,
            **(usage or {}),
        }
        model = self._opt("--model") or DEFAULT_MODEL
        model_usage = {
            model: {
                "inputTokens": usage["input_tokens"],
                "outputTokens": usage["output_tokens"],
                "cacheReadInputTokens": usage["cache_read_input_tokens"],
                "cacheCreationInputTokens": usage["cache_creation_input_tokens"],
                "costUSD": self.turn_cost,
                "contextWindow": 200000,
            }
        }
        frame: dict[str, Any] = {
            "type": "result",
            "subtype": subtype,
            "is_error": is_error,
            "duration_ms": 10,
            "num_turns": num_turns,
            "session_id": self.session_id,
            "total_cost_usd": self.cumulative_cost,
            "usage": usage,
            "modelUsage": model_usage,
            "model_usage_since_last_result": model_usage,
            "permission_denials": [],
            "terminal_reason": terminal_reason or ("completed" if not is_error else None),
            "uuid": str(uuid.uuid4()),
        }
        if text is not None:
            frame["result"] = _subst(text, self)
        if errors is not None:
            frame["errors"] = errors
        if subtype == "success":
            frame["api_error_status"] = api_error_status
        self.last_is_error = is_error
        self.emit(frame)

    def _op_frame(self, step: dict[str, Any]) -> None:
        self.emit(_subst(step["frame"], self))

    def _op_raw(self, step: dict[str, Any]) -> None:
        if "b64" in step:
            self._write(base64.b64decode(step["b64"]))
        else:
            self._write(step.get("text", "").encode())

    def _op_huge_line(self, step: dict[str, Any]) -> None:
        size = int(step["size"])
        head = b'{"type":"assistant","padding":"'
        tail = b'"}\n'
        pad = max(0, size - len(head) - len(tail) + 1)
        self._write(head)
        chunk = b"x" * 65536
        while pad > 0:
            n = min(pad, len(chunk))
            self._write(chunk[:n])
            pad -= n
        self._write(tail)

    def _op_stderr(self, step: dict[str, Any]) -> None:
        sys.stderr.write(step.get("text", ""))
        sys.stderr.flush()

    def _op_sleep(self, step: dict[str, Any]) -> None:
        time.sleep(float(step.get("seconds", 0)))

    def _op_spawn(self, step: dict[str, Any]) -> None:
        argv = step.get("argv", ["sleep", "600"])
        inherit = bool(step.get("inherit_stdout", False))
        child = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=None if inherit else subprocess.DEVNULL,
            stderr=None if inherit else subprocess.DEVNULL,
            start_new_session=bool(step.get("own_session", True)),
        )
        self.children.append(child)
        pidfile = step.get("pidfile")
        if pidfile:
            Path(pidfile).write_text(str(child.pid))

    def _op_ignore_sigterm(self, step: dict[str, Any]) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)

    def _op_hang(self, step: dict[str, Any]) -> None:
        time.sleep(self.max_lifetime)
        raise _Exit(0)

    def _op_exit(self, step: dict[str, Any]) -> None:
        raise _Exit(int(step.get("code", 0)))

    def _op_kill_self(self, step: dict[str, Any]) -> None:
        sys.stdout.flush()
        sig = signal.Signals[step.get("signal", "SIGKILL")]
        if sig not in (signal.SIGKILL, signal.SIGSTOP):  # these two can't be handled
            signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
        time.sleep(self.max_lifetime)


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def _subst(value: Any, fake: Invocation) -> Any:
    if isinstance(value, str):
        return value.replace("$SESSION_ID", fake.session_id)
    if isinstance(value, list):
        return [_subst(v, fake) for v in value]
    if isinstance(value, dict):
        return {k: _subst(v, fake) for k, v in value.items()}
    return value


def main(argv: list[str] | None = None) -> NoReturn:
    """Entry point of the fake ``claude`` (``nexo-fake-claude``)."""
    args = sys.argv[1:] if argv is None else argv
    if args in (["--help"], ["-h"]):
        sys.stdout.write(__doc__ or "")
        sys.stdout.write("\n" + _STEP_DOC)
        raise SystemExit(0)
    if args == ["--version"]:
        sys.stdout.write(f"{VERSION} (Claude Code, fake)\n")
        raise SystemExit(0)
    try:
        code = Invocation(args).run()
    except _Exit as exc:
        code = exc.code
    sys.stdout.flush()
    sys.stderr.flush()
    raise SystemExit(code)


if __name__ == "__main__":
    main()
