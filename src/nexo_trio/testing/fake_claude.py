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

Permission prompt tool: with ``--permission-prompt-tool mcp__<server>__<tool>`` and
``--mcp-config FILE`` the fake behaves like the real CLI. At ``init`` it spawns that stdio
server (``command``/``args``/``env`` of the config, stderr to ``mcp-<server>.stderr`` in the
state directory) and does the handshake Claude Code 2.1.332 does (``server/discover``,
``initialize``, ``notifications/initialized``, ``tools/list``); the init frame reports the
server ``connected`` or ``failed`` (spawn error, no answer within the config's ``timeout``
ms or 10 s, an unknown protocol version). Then every ``bash`` / ``tool_use`` step whose tool
would prompt (not in ``--allowedTools``, not a read-only tool, no bypass mode) asks the
server with ``tools/call``: an allow runs the tool with ``updatedInput``; a deny becomes an
``is_error`` tool_result with the message and a ``permission_denials`` entry of the result
frame; an ``isError`` answer, a JSON-RPC error or a timeout becomes an ``is_error``
tool_result *without* a denial (like the real CLI). Every exchange is appended to
``permissions.jsonl`` in the state directory. The server's stdin is closed at exit (and
on SIGTERM), then it is killed if it lingers.

Stream-json input (``--input-format stream-json``, as Claude Code 2.1.332 takes it): no
prompt in argv; stdin carries JSON lines, read by a thread into a queue so the steps never
block on it (a line that is not a JSON object is ignored with a note on stderr). Our
``control_request`` lines are answered on stdout with a ``control_response``:
``initialize`` with ``{"commands": [], "models": [], ...}``; ``interrupt`` with ``{}``, and
the running turn ends at once (a ``sleep``, ``hang``, running ``bash`` command -- its
process group is killed -- or pending permission ask is cut short; between steps it applies
before the next step) with a ``result`` frame ``error_during_execution``, ``is_error``,
``errors: []``; ``set_permission_mode`` with ``{"mode": ...}`` and a ``system/status``
frame; any other subtype with ``subtype: "error"`` and an ``error`` text. The first
``user`` message is the turn's prompt (its content: a string, or text blocks joined by
newlines). Later user messages are *taken* at the next point the CLI would ask the model:
right after the ``init`` step, else before the next ``text``, ``tool_use``, ``bash``,
``compact`` or ``result`` step. With ``--replay-user-messages`` each message taken (the
prompt too) is echoed as ``{"type": "user", "message": ..., "session_id", "uuid",
"parent_tool_use_id": null, "isReplay": true}``. Every user message after the prompt is
appended to ``messages.jsonl`` in the state directory (``text``, ``content``, ``taken``,
``replayed``, ``turn``, ``session_id``, ``pid``): ``taken: false`` for one that came after
the result, or was still waiting when the turn was interrupted or exited. After the turn the
fake does not exit by itself: it waits for stdin's end (exit 0, or 1 after an ``is_error``
result); a stdin that ends before the turn is done lets the turn finish first. Every wait is
bounded by ``NEXO_FAKE_CLAUDE_MAX_LIFETIME``. Invocations are logged as usual (``stdin``
``null``, ``input_format: "stream-json"``).

With ``--permission-prompt-tool stdio`` (stream-json input only) a tool call that would
prompt prints ``{"type": "control_request", "request_id": UUID, "request": {"subtype":
"can_use_tool", "tool_name", "display_name", "input", "tool_use_id",
"permission_suggestions": [], "description"}}`` and waits for the ``control_response`` of
that id (reading everything else meanwhile): ``behavior: "allow"`` runs the tool with
``updatedInput`` (else the original input), ``"deny"`` is handled like the MCP gate's deny,
and an error response, a malformed answer, or a stdin that ends first fails the tool call
without a denial. The exchanges go to ``permissions.jsonl`` (with the ``request_id``; an
ask cut short by an interrupt is logged with outcome ``interrupted``).

Build scenarios in Python with :mod:`nexo_trio.testing.scenario`. Step reference: see
``_STEP_DOC`` below or ``nexo-fake-claude --help``.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import queue
import selectors
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

VERSION = "2.1.332"
DEFAULT_MODEL = "claude-sonnet-4-5"
TOOLS = ["Task", "Bash", "Edit", "Glob", "Grep", "LS", "Read", "Write", "WebFetch"]
NO_PROMPT_TOOLS = frozenset(
    {"Read", "Glob", "Grep", "LS", "NotebookRead", "TodoWrite", "Task", "ToolSearch"}
)
"""Tools the CLI runs without asking (read-only or harmless): never sent to the gate."""
MCP_PROTOCOL_VERSIONS = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")
MCP_DEFAULT_TIMEOUT_S = 10.0
MCP_STOP_GRACE_S = 1.0
STREAM_POLL_S = 0.02
"""How often a stream-json wait looks at a running Bash command."""
MODEL_OPS = frozenset({"text", "tool_use", "bash", "compact", "result"})
"""Steps before which the CLI would send a request to the model: queued user messages are
taken (and replayed) there."""

_STEP_DOC = """\
Steps (JSON objects with an "op"):
  init           system/init frame   [mcp_status: {server: status}] (a status given for
                                      the permission server replaces the real one:
                                      the server is then not spawned)
  text           assistant text      text, [usage: {input_tokens, ...}]
  compact        status + compact_boundary + result   [pre_tokens, post_tokens]
  tool_use       assistant tool_use  name, input   (asks the permission prompt tool
                                      if it would prompt; a deny or error answers it
                                      and skips the next tool_result step)
  tool_result    user tool_result    content, [is_error]
  bash           tool_use Bash + (permission) + run it with /bin/sh in cwd + tool_result
                                      command
  result         result frame        [subtype, text, is_error, errors, api_error_status,
                                      terminal_reason, usage, cost_usd, num_turns]
  frame          any JSON object     frame ("$SESSION_ID" in strings is replaced)
  raw            raw bytes           text | b64 (no newline added)
  huge_line      one line of N bytes size
  stderr         write to stderr     text
  close_stdout   close stdout (the pipe's write end; later output goes nowhere) and
                                      carry on: the process stays alive
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


class _Interrupted(Exception):
    """An ``interrupt`` control request ended the running turn."""


Inbox = queue.Queue[tuple[str, dict[str, Any] | None]]


def _read_stdin(inbox: Inbox) -> None:
    """The stdin reader thread of stream-json mode: each JSON object line goes into
    ``inbox`` as ``("message", obj)``, then ``("eof", None)``. It reads the descriptor
    itself, so no buffered-reader lock is held when the process exits mid-read."""
    buffer = b""
    try:
        while True:
            try:
                data = os.read(0, 65536)
            except OSError:
                break
            if not data:
                break
            buffer += data
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                _parse_line(line, inbox)
        _parse_line(buffer, inbox)
    finally:
        inbox.put(("eof", None))


def _parse_line(line: bytes, inbox: Inbox) -> None:
    if not line.strip():
        return
    try:
        message = json.loads(line)
    except ValueError:
        sys.stderr.write(f"fake claude: ignored a stdin line that is not JSON: {line[:200]!r}\n")
        return
    if not isinstance(message, dict):
        sys.stderr.write(f"fake claude: ignored a stdin line that is no object: {line[:200]!r}\n")
        return
    inbox.put(("message", message))


def _content_text(content: Any) -> str:
    """The text of a user message's ``content``: a string, or its text blocks."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            str(block.get("text", ""))
            for block in content
            if isinstance(block, dict) and block.get("type") == "text"
        )
    return json.dumps(content)


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
        self.gate: _McpClient | None = None
        self.gate_status: str | None = None
        self.gate_failure = ""
        self.spent: dict[str, int] = {}
        """The usage of the assistant frames printed so far (an interrupted turn's)."""
        self.permission_denials: list[dict[str, Any]] = []
        self.skip_tool_result = False
        # Stream-json input mode (see the module docstring).
        self.stream_input = self._opt("--input-format") == "stream-json"
        self.inbox: Inbox | None = None
        self.stdin_eof = False
        self.phase = "waiting"  # then "turn" (its steps run), then "done" (result printed)
        self.prompt_message: dict[str, Any] | None = None
        self.prompt_text: str | None = None
        self.turn_index: int | None = None
        self.pending: list[tuple[dict[str, Any], bool]] = []
        """User messages waiting to be taken, and whether each is the prompt."""
        self.answers: dict[str, dict[str, Any]] = {}
        """``control_response`` bodies of the CLI's requests, by request id."""
        self.interrupt_pending = False
        self.permission_mode: str | None = None
        self.bash_process: subprocess.Popen[bytes] | None = None

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
        finally:
            self._stop_gate()
        return 1 if self.last_is_error else 0

    def _run(self) -> None:
        if "-p" not in self.options and "--print" not in self.options:
            self._fatal("fake claude: only print mode (-p) is supported")
        if self._opt("--output-format") == "stream-json" and "--verbose" not in self.options:
            self._fatal("Error: When using --print, --output-format=stream-json requires --verbose")
        if self.stream_input:
            self._run_stream()
            return
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

    # ------------------------------------------------------------------ stream-json input

    def _run_stream(self) -> None:
        """``--input-format stream-json``: the conversation comes on stdin."""
        self.inbox = queue.Queue()
        threading.Thread(target=_read_stdin, args=(self.inbox,), daemon=True).start()
        self._wait_until(
            time.monotonic() + self.max_lifetime,
            lambda: self.prompt_message is not None or self.stdin_eof,
        )
        message = self.prompt_message
        if message is None:
            self._fatal(
                "Error: Input must be provided either through stdin or as a prompt argument "
                "when using --print"
            )
        prompt = _content_text(message["message"].get("content"))
        self.prompt_text = prompt
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with self._locked():
            self._resolve_session()
            self.turn_index, turn = self._claim_turn(prompt)
            self._log_invocation(prompt, None, self.turn_index, input_format="stream-json")
            if turn is not None:
                self._remember_session(prompt)
        signal.signal(signal.SIGTERM, self._on_sigterm)
        self.phase = "turn"
        self.pending.insert(0, (message, True))
        try:
            try:
                if turn is None:
                    self._take_pending()
                    self._result(
                        subtype="error_during_execution",
                        is_error=True,
                        errors=["fake claude: the scenario has no turn left for this invocation"],
                    )
                else:
                    for step in turn.get("steps", []):
                        self._drain()
                        self._step(step)
            except _Interrupted:
                # As the real CLI: the interrupted query's own usage, what it printed.
                self._result(
                    subtype="error_during_execution",
                    is_error=True,
                    errors=[],
                    usage=dict(self.spent),
                )
            self.phase = "done"
            # Like the real CLI in this mode: no exit before stdin ends.
            self._wait_until(time.monotonic() + self.max_lifetime, lambda: self.stdin_eof)
        finally:
            for left, is_prompt in self.pending:
                if not is_prompt:
                    self._log_message(left, taken=False, replayed=False)
            self.pending.clear()

    def _pump(self, timeout: float) -> bool:
        """Handle one stdin message (waiting at most ``timeout`` s); whether there was one.
        Raises :class:`_Interrupted` when an interrupt came for the running turn."""
        assert self.inbox is not None
        try:
            if timeout > 0:
                kind, message = self.inbox.get(timeout=timeout)
            else:
                kind, message = self.inbox.get_nowait()
        except queue.Empty:
            return False
        if kind == "eof":
            self.stdin_eof = True
        elif message is not None:
            self._on_message(message)
        if self.interrupt_pending and self.phase == "turn":
            self.interrupt_pending = False
            raise _Interrupted
        return True

    def _drain(self) -> None:
        """Handle every stdin message already there (an interrupt applies now)."""
        while self._pump(0):
            pass

    def _wait_until(self, deadline: float, done: Callable[[], bool]) -> bool:
        """Handle stdin messages until ``done()`` or the deadline; whether it is done."""
        while True:
            if done():
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            if self.stdin_eof:
                time.sleep(min(remaining, STREAM_POLL_S))
            else:
                self._pump(min(remaining, STREAM_POLL_S))

    def _on_message(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "control_request":
            self._on_control_request(message)
        elif kind == "control_response":
            response = message.get("response")
            request_id = response.get("request_id") if isinstance(response, dict) else None
            if isinstance(response, dict) and isinstance(request_id, str):
                self.answers[request_id] = response
            else:
                self._note(f"ignored a control_response without a request_id: {message!r}")
        elif kind == "user":
            if not isinstance(message.get("message"), dict):
                self._note(f"ignored a user message without a message: {message!r}")
            elif self.prompt_message is None and self.phase == "waiting":
                self.prompt_message = message
            elif self.phase in ("waiting", "turn"):
                self.pending.append((message, False))
            else:
                self._note("a user message after the result is not played (one turn per run)")
                self._log_message(message, taken=False, replayed=False)
        else:
            self._note(f"ignored a stdin message of type {kind!r}")

    def _on_control_request(self, message: dict[str, Any]) -> None:
        request_id = message.get("request_id")
        request = message.get("request")
        if not isinstance(request_id, str) or not isinstance(request, dict):
            self._note(f"ignored a control_request without request_id or request: {message!r}")
            return
        subtype = request.get("subtype")
        if subtype == "initialize":
            body = {
                "commands": [],
                "models": [],
                "claude_code_version": VERSION,
                "pid": os.getpid(),
            }
            self._control_success(request_id, body)
        elif subtype == "interrupt":
            self._control_success(request_id, {})
            if self.phase == "turn":
                self.interrupt_pending = True
        elif subtype == "set_permission_mode" and isinstance(request.get("mode"), str):
            self.permission_mode = str(request["mode"])
            self._control_success(request_id, {"mode": self.permission_mode})
            self.emit(
                {
                    "type": "system",
                    "subtype": "status",
                    "status": None,
                    "permissionMode": self.permission_mode,
                    "uuid": str(uuid.uuid4()),
                    "session_id": self.session_id,
                }
            )
        else:
            self.emit(
                {
                    "type": "control_response",
                    "response": {
                        "subtype": "error",
                        "request_id": request_id,
                        "error": f"Unsupported control request subtype: {subtype}",
                    },
                }
            )

    def _control_success(self, request_id: str, body: dict[str, Any]) -> None:
        self.emit(
            {
                "type": "control_response",
                "response": {"subtype": "success", "request_id": request_id, "response": body},
            }
        )

    def _take_pending(self) -> None:
        """Take the queued user messages into the conversation (echoed if asked to)."""
        replay = "--replay-user-messages" in self.options
        while self.pending:
            message, is_prompt = self.pending.pop(0)
            if replay:
                self.emit(
                    {
                        "type": "user",
                        "message": message["message"],
                        "session_id": self.session_id,
                        "parent_tool_use_id": None,
                        "uuid": str(uuid.uuid4()),
                        "isReplay": True,
                    }
                )
            if not is_prompt:
                self._log_message(message, taken=True, replayed=replay)

    def _log_message(self, message: dict[str, Any], *, taken: bool, replayed: bool) -> None:
        inner = message.get("message")
        content = inner.get("content") if isinstance(inner, dict) else None
        record = {
            "text": _content_text(content),
            "content": content,
            "taken": taken,
            "replayed": replayed,
            "turn": self.turn_index,
            "session_id": self.session_id,
            "pid": os.getpid(),
        }
        with (self.state_dir / "messages.jsonl").open("a") as f:
            f.write(json.dumps(record) + "\n")

    def _note(self, text: str) -> None:
        sys.stderr.write(f"fake claude: {text}\n")
        sys.stderr.flush()

    def _run_bash_stream(self, command: str) -> tuple[str, bool]:
        """Run ``command`` in a session of its own, reading stdin meanwhile: an interrupt
        kills its process group. Its output and whether it failed."""
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            process = subprocess.Popen(
                ["/bin/sh", "-c", command],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )
            self.bash_process = process
            try:
                finished = self._wait_until(
                    time.monotonic() + self.max_lifetime, lambda: process.poll() is not None
                )
            finally:
                if process.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
                self.bash_process = None
            out.seek(0)
            err.seek(0)
            output = (out.read() + err.read()).decode("utf-8", errors="replace")
        if not finished:
            output += f"\nCommand timed out after {self.max_lifetime:g}s"
        return output, not finished or process.returncode != 0

    def _ask_stdio(self, tool: str, tool_input: dict[str, Any]) -> tuple[str, Any]:
        """``--permission-prompt-tool stdio``: ask on stdout, wait for the answer on stdin."""
        request_id = str(uuid.uuid4())
        description = tool_input.get("description") or tool_input.get("command") or tool
        self.emit(
            {
                "type": "control_request",
                "request_id": request_id,
                "request": {
                    "subtype": "can_use_tool",
                    "tool_name": tool,
                    "display_name": tool,
                    "input": tool_input,
                    "tool_use_id": self.last_tool_use_id,
                    "permission_suggestions": [],
                    "description": str(description),
                },
            }
        )
        try:
            self._wait_until(
                time.monotonic() + self.max_lifetime,
                lambda: request_id in self.answers or self.stdin_eof,
            )
        except _Interrupted:
            self._log_permission(
                tool, tool_input, "interrupted", "the turn was interrupted", request_id
            )
            raise
        verdict, value = self._stdio_verdict(self.answers.pop(request_id, None), tool_input)
        self._log_permission(tool, tool_input, verdict, value, request_id)
        return verdict, value

    def _stdio_verdict(
        self, answer: dict[str, Any] | None, tool_input: dict[str, Any]
    ) -> tuple[str, Any]:
        if answer is None:
            if self.stdin_eof:
                return "error", "stdin closed before the permission answer"
            return "error", f"no permission answer within {self.max_lifetime:g}s"
        if answer.get("subtype") == "error":
            return "error", str(answer.get("error") or "the permission request failed")
        body = answer.get("response")
        if not isinstance(body, dict):
            return "error", f"a permission answer without a response: {answer!r}"
        return _verdict(body, tool_input, f"a permission answer with no valid behavior: {body!r}")

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
        prompt = self.prompt_text
        if prompt is None:
            prompt = self.positional[0] if self.positional else ""
        self._log_invocation(prompt, None, None)
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

    def _log_invocation(
        self, prompt: str, stdin_text: str | None, turn: int | None, **extra: Any
    ) -> None:
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
            **extra,
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
        # Like Claude Code: stop the children and the MCP server, then exit 143.
        for child in self.children:
            with contextlib.suppress(ProcessLookupError):
                child.kill()
        if self.bash_process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.bash_process.pid, signal.SIGKILL)
        self._stop_gate()
        os._exit(143)

    # ------------------------------------------------------------------ steps

    def _step(self, step: dict[str, Any]) -> None:
        op = step.get("op")
        handler = getattr(self, f"_op_{op}", None)
        if handler is None:
            self._fatal(f"fake claude: unknown scenario op {op!r}")
        if self.stream_input and self.phase == "turn" and op in MODEL_OPS:
            self._take_pending()
        handler(step)
        if self.stream_input and self.phase == "turn" and op == "init":
            self._take_pending()

    def _op_init(self, step: dict[str, Any]) -> None:
        statuses = dict(step.get("mcp_status", {}))
        prompt_tool = self._prompt_tool()
        if prompt_tool is not None and prompt_tool[0] not in statuses:
            self._start_gate()
            if self.gate_status is not None:
                statuses[prompt_tool[0]] = self.gate_status
        elif prompt_tool is not None:
            self.gate_status = statuses[prompt_tool[0]]
            self.gate_failure = (
                f"MCP server {prompt_tool[0]!r} was not started (the scenario says it is "
                f"{self.gate_status})"
            )
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
                "permissionMode": self._permission_mode() or "default",
                "apiKeySource": "none",
                "claude_code_version": VERSION,
                "output_style": "default",
                "uuid": str(uuid.uuid4()),
            }
        )

    def _mcp_server_names(self) -> list[str]:
        return [name for servers in self._mcp_configs() for name in servers]

    def _mcp_configs(self) -> Iterator[dict[str, Any]]:
        """The ``mcpServers`` of each readable ``--mcp-config`` file, in order."""
        for path in self.options.get("--mcp-config", []):
            try:
                config = json.loads(Path(path).read_text())
            except (OSError, ValueError):
                continue
            yield config.get("mcpServers", {})

    def _assistant(
        self, content: list[dict[str, Any]], usage: dict[str, int] | None = None, **extra: Any
    ) -> None:
        spent = {
            "input_tokens": 100,
            "output_tokens": 10,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            **(usage or {}),
        }
        for key, value in spent.items():
            self.spent[key] = self.spent.get(key, 0) + int(value)
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
                    "usage": spent,
                },
                "parent_tool_use_id": None,
                "session_id": self.session_id,
                "uuid": str(uuid.uuid4()),
                **extra,
            }
        )

    def _op_text(self, step: dict[str, Any]) -> None:
        self._assistant(
            [{"type": "text", "text": _subst(step.get("text", ""), self)}], step.get("usage")
        )

    def _op_compact(self, step: dict[str, Any]) -> None:
        # What Claude Code prints for `-p "/compact ..." --resume ID`.
        base = {"type": "system", "session_id": self.session_id}
        self.emit({**base, "subtype": "status", "status": "compacting"})
        self.emit(
            {
                **base,
                "subtype": "compact_boundary",
                "compact_metadata": {
                    "trigger": "manual",
                    "pre_tokens": int(step.get("pre_tokens", 150000)),
                    "post_tokens": int(step.get("post_tokens", 5000)),
                },
            }
        )
        self._result(subtype="success", is_error=False, text="", cost_usd=0.0005, num_turns=0)

    def _op_tool_use(self, step: dict[str, Any]) -> None:
        if self._use_tool(step.get("name", "Bash"), step.get("input", {})) is None:
            # The CLI never runs the tool: its answer is the tool_result, so the
            # scenario's own tool_result for this tool use is skipped.
            self.skip_tool_result = True

    def _use_tool(self, name: str, tool_input: dict[str, Any]) -> dict[str, Any] | None:
        """Print a ``tool_use`` block and ask for permission to run it. The input to run it
        with; ``None`` when refused (its error ``tool_result`` is then printed)."""
        self.skip_tool_result = False
        self.tool_counter += 1
        self.last_tool_use_id = f"toolu_fake{self.tool_counter:04d}"
        block = {"type": "tool_use", "id": self.last_tool_use_id, "name": name, "input": tool_input}
        self._assistant([block])
        verdict, value = self._permission(name, tool_input)
        if verdict == "allow":
            allowed: dict[str, Any] = value  # the input, or the gate's updatedInput
            return allowed
        self._refused(verdict, name, tool_input, value)
        return None

    def _op_tool_result(self, step: dict[str, Any]) -> None:
        if self.skip_tool_result:
            self.skip_tool_result = False
            return
        self._tool_result(step.get("content", ""), is_error=bool(step.get("is_error", False)))

    def _tool_result(self, content: Any, *, is_error: bool) -> None:
        self.emit(
            {
                "type": "user",
                "message": {
                    "role": "user",
                    "content": [
                        {
                            "tool_use_id": self.last_tool_use_id,
                            "type": "tool_result",
                            "content": content,
                            "is_error": is_error,
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
        allowed = self._use_tool("Bash", {"command": command})
        if allowed is None:
            return
        if isinstance(allowed.get("command"), str):
            command = allowed["command"]  # an updatedInput runs the changed command
        if self.stream_input:
            output, failed = self._run_bash_stream(command)
            self._tool_result(output or "(Bash completed with no output)", is_error=failed)
            return
        done = subprocess.run(
            ["/bin/sh", "-c", command],
            capture_output=True,
            check=False,
            timeout=self.max_lifetime,
        )
        output = (done.stdout + done.stderr).decode("utf-8", errors="replace")
        self._tool_result(
            output or "(Bash completed with no output)", is_error=done.returncode != 0
        )

    # ------------------------------------------------------------------ permissions

    def _prompt_tool(self) -> tuple[str, str] | None:
        """``(server, tool)`` of ``--permission-prompt-tool mcp__<server>__<tool>``."""
        value = self._opt("--permission-prompt-tool")
        if not value or not value.startswith("mcp__"):
            return None
        server, sep, tool = value[len("mcp__") :].partition("__")
        if not sep or not server or not tool:
            return None
        return server, tool

    def _mcp_server_config(self, name: str) -> dict[str, Any] | None:
        for servers in self._mcp_configs():
            server = servers.get(name)
            if isinstance(server, dict):
                return server
        return None

    def _start_gate(self) -> None:
        """Spawn the permission prompt server and do the CLI's handshake (once)."""
        prompt_tool = self._prompt_tool()
        if self.gate_status is not None or prompt_tool is None:
            return
        name = prompt_tool[0]
        config = self._mcp_server_config(name)
        if config is None:
            self.gate_failure = f"no MCP server named {name!r} in --mcp-config"
            return
        try:
            self.gate = _McpClient.start(name, config, self.state_dir / f"mcp-{name}.stderr")
            self.gate.handshake()
        except _McpFailure as exc:
            self.gate_failure = f"MCP server {name!r} failed: {exc}"
            self.gate_status = "failed"
            sys.stderr.write(f"fake claude: {self.gate_failure}\n")
            self._stop_gate()
            return
        self.gate_status = "connected"
        if prompt_tool[1] not in self.gate.tools:
            self.gate_failure = (
                f"MCP tool mcp__{name}__{prompt_tool[1]} (passed via --permission-prompt-tool) "
                f"not found. Available MCP tools: {', '.join(self.gate.tools) or 'none'}"
            )

    def _stop_gate(self) -> None:
        gate, self.gate = self.gate, None
        if gate is not None:
            gate.close(MCP_STOP_GRACE_S)

    def _allow_rules(self) -> list[str]:
        rules: list[str] = []
        for flag in ("--allowedTools", "--allowed-tools"):
            for value in self.options.get(flag, []):
                rules += _split_rules(value)
        return rules

    def _stdio_gate(self) -> bool:
        """``--permission-prompt-tool stdio`` in stream-json input mode."""
        return self.stream_input and self._opt("--permission-prompt-tool") == "stdio"

    def _permission_mode(self) -> str | None:
        """The mode a ``set_permission_mode`` request set, else ``--permission-mode``."""
        return self.permission_mode or self._opt("--permission-mode")

    def _needs_permission(self, tool: str, tool_input: dict[str, Any]) -> bool:
        if self._prompt_tool() is None and not self._stdio_gate():
            return False
        if tool in NO_PROMPT_TOOLS:
            return False
        if "--dangerously-skip-permissions" in self.options:
            return False
        if self._permission_mode() == "bypassPermissions":
            return False
        return not any(_rule_allows(rule, tool, tool_input) for rule in self._allow_rules())

    def _permission(self, tool: str, tool_input: dict[str, Any]) -> tuple[str, Any]:
        """``("allow", input)``, ``("deny", message)`` or ``("error", text)``."""
        if not self._needs_permission(tool, tool_input):
            return "allow", tool_input
        if self._stdio_gate():
            return self._ask_stdio(tool, tool_input)
        self._start_gate()  # no-op after init; a scenario without init starts it here
        prompt_tool = self._prompt_tool()
        assert prompt_tool is not None
        gate = self.gate
        if gate is None or self.gate_failure:
            reason = self.gate_failure or "the permission prompt server is not running"
            self._log_permission(tool, tool_input, "error", reason)
            return "error", reason
        verdict, value = gate.ask(prompt_tool[1], tool, tool_input, self.last_tool_use_id)
        self._log_permission(tool, tool_input, verdict, value)
        return verdict, value

    def _refused(self, verdict: str, tool: str, tool_input: dict[str, Any], text: Any) -> None:
        if verdict == "deny":
            # What the CLI does with a deny: the message as an error result, and a denial.
            self.permission_denials.append(
                {"tool_name": tool, "tool_use_id": self.last_tool_use_id, "tool_input": tool_input}
            )
            content = str(text)
        else:
            # A failed permission call is a failed tool call, not a denial.
            content = f"<tool_use_error>Error calling tool ({tool}): {text}</tool_use_error>"
        self._tool_result(content, is_error=True)

    def _log_permission(
        self,
        tool: str,
        tool_input: dict[str, Any],
        verdict: str,
        value: Any,
        request_id: str | None = None,
    ) -> None:
        record = {
            "tool": tool,
            "tool_use_id": self.last_tool_use_id,
            "input": tool_input,
            "outcome": verdict,
            "answer": value,
            "session_id": self.session_id,
            "pid": os.getpid(),
        }
        if request_id is not None:
            record["request_id"] = request_id
        with (self.state_dir / "permissions.jsonl").open("a") as f:
            f.write(json.dumps(record) + "\n")

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
            "permission_denials": list(self.permission_denials),
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
        if self.stream_input:
            self.phase = "done"  # the turn is over: an interrupt no longer applies

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

    def _op_close_stdout(self, step: dict[str, Any]) -> None:
        sys.stdout.flush()
        # /dev/null in its place rather than a bare close: fd 1 must not be reused by the
        # next file opened (and later frames are simply lost, as from a closed pipe).
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        os.close(null)

    def _op_stderr(self, step: dict[str, Any]) -> None:
        sys.stderr.write(step.get("text", ""))
        sys.stderr.flush()

    def _op_sleep(self, step: dict[str, Any]) -> None:
        seconds = float(step.get("seconds", 0))
        if self.stream_input:
            self._wait_until(time.monotonic() + seconds, lambda: False)
            return
        time.sleep(seconds)

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
        if self.stream_input:
            self._wait_until(time.monotonic() + self.max_lifetime, lambda: False)
            raise _Exit(0)
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


class _McpFailure(Exception):
    """The MCP server could not be started or did not answer as it should."""


class _McpClient:
    """The little MCP stdio client the fake needs: Claude Code's side of the gate."""

    def __init__(self, name: str, process: subprocess.Popen[bytes], timeout_s: float) -> None:
        self.name = name
        self.process = process
        self.timeout_s = timeout_s
        self.tools: list[str] = []
        self._buffer = b""
        self._next_id = 2

    @classmethod
    def start(cls, name: str, config: dict[str, Any], stderr_path: Path) -> _McpClient:
        """Spawn the server of ``config`` (a stdio entry of ``mcpServers``)."""
        if config.get("type", "stdio") != "stdio":
            raise _McpFailure(f"unsupported server type {config.get('type')!r}")
        command = config.get("command")
        args = config.get("args", [])
        if not isinstance(command, str) or not isinstance(args, list):
            raise _McpFailure("a stdio server needs a string 'command' and a list 'args'")
        env = {**os.environ, **{str(k): str(v) for k, v in config.get("env", {}).items()}}
        timeout_ms = config.get("timeout")
        timeout_s = (
            timeout_ms / 1000 if isinstance(timeout_ms, int | float) and timeout_ms > 0 else None
        )
        try:
            with stderr_path.open("ab") as err:
                process = subprocess.Popen(
                    [command, *map(str, args)],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=err,
                    env=env,
                )
        except OSError as exc:
            raise _McpFailure(f"cannot start {command}: {exc}") from None
        return cls(name, process, timeout_s or MCP_DEFAULT_TIMEOUT_S)

    def handshake(self) -> None:
        """What Claude Code 2.1.332 sends first (within the server's timeout)."""
        deadline = time.monotonic() + self.timeout_s
        meta = {
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientInfo": {"name": "claude-code", "version": VERSION},
        }
        discover = self.request(
            "server/discover", {"_meta": meta}, "server-discover-probe-1", deadline
        )
        if "error" not in discover:
            sys.stderr.write(f"fake claude: {self.name}: server/discover answered, ignored\n")
        init = self.request(
            "initialize",
            {
                "protocolVersion": MCP_PROTOCOL_VERSIONS[-1],
                "capabilities": {"roots": {"listChanged": True}},
                "clientInfo": {"name": "claude-code", "version": VERSION},
            },
            0,
            deadline,
        )
        version = init.get("result", {}).get("protocolVersion")
        if "error" in init or version not in MCP_PROTOCOL_VERSIONS:
            raise _McpFailure(f"initialize failed: {init.get('error') or version!r}")
        self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        listed = self.request("tools/list", None, 1, deadline)
        tools = listed.get("result", {}).get("tools", [])
        self.tools = [
            t["name"] for t in tools if isinstance(t, dict) and isinstance(t.get("name"), str)
        ]

    def ask(
        self, tool: str, tool_name: str, tool_input: dict[str, Any], tool_use_id: str
    ) -> tuple[str, Any]:
        """One ``tools/call`` of the permission tool: allow/deny/error and its value."""
        rpc_id = self._next_id
        self._next_id += 1
        params = {
            "name": tool,
            "arguments": {"tool_name": tool_name, "input": tool_input, "tool_use_id": tool_use_id},
            "_meta": {"claudecode/toolUseId": tool_use_id, "progressToken": rpc_id},
        }
        try:
            answer = self.request("tools/call", params, rpc_id, time.monotonic() + self.timeout_s)
        except _McpFailure as exc:
            return "error", str(exc)
        if "error" in answer:
            return "error", f"MCP error {answer['error']}"
        result = answer.get("result")
        content = result.get("content") if isinstance(result, dict) else None
        text = ""
        if isinstance(content, list) and content and isinstance(content[0], dict):
            text = str(content[0].get("text", ""))
        if not isinstance(result, dict) or result.get("isError"):
            return "error", text or "the permission tool failed"
        try:
            decision = json.loads(text)
        except ValueError:
            return "error", f"the permission tool answered no JSON: {text[:200]!r}"
        if not isinstance(decision, dict):
            return "error", f"the permission tool answered {text[:200]!r}"
        return _verdict(decision, tool_input, f"the permission tool answered {text[:200]!r}")

    def send(self, message: dict[str, Any]) -> None:
        """One JSON-RPC line to the server."""
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(json.dumps(message).encode() + b"\n")
            self.process.stdin.flush()
        except (OSError, ValueError) as exc:
            raise _McpFailure(f"the server's stdin is closed ({exc})") from None

    def request(
        self, method: str, params: dict[str, Any] | None, rpc_id: int | str, deadline: float
    ) -> dict[str, Any]:
        """Send a request; its response (other messages are skipped)."""
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": rpc_id, "method": method}
        if params is not None:
            message["params"] = params
        self.send(message)
        while True:
            line = self._read_line(deadline, method)
            try:
                response = json.loads(line)
            except ValueError:
                continue
            if (
                isinstance(response, dict)
                and response.get("id") == rpc_id
                and "method" not in response
            ):
                return response

    def _read_line(self, deadline: float, method: str) -> bytes:
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
            while b"\n" not in self._buffer:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not selector.select(remaining):
                    raise _McpFailure(f"no answer to {method} within {self.timeout_s:g}s")
                data = os.read(fd, 65536)
                if not data:
                    raise _McpFailure(f"the server closed its stdout (during {method})")
                self._buffer += data
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line

    def close(self, grace: float) -> None:
        """Close the server's stdin, give it ``grace`` seconds to exit, then kill it."""
        stdin = self.process.stdin
        if stdin is not None:
            try:
                stdin.close()
            except (OSError, ValueError):
                pass
            except RuntimeError:
                # A SIGTERM that came in the middle of a write to this very pipe (a
                # reentrant call of the buffered writer): close the descriptor itself, so
                # the server still sees its end of input; the process exits right after.
                with contextlib.suppress(OSError, ValueError):
                    os.close(stdin.fileno())
        try:
            self.process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


def _verdict(decision: dict[str, Any], tool_input: dict[str, Any], invalid: str) -> tuple[str, Any]:
    """What a permission decision object says, as the real CLI reads it on either
    transport: ``("allow", input to run)``, ``("deny", message)``, else ``("error",
    invalid)``."""
    if decision.get("behavior") == "allow":
        updated = decision.get("updatedInput")
        return "allow", updated if isinstance(updated, dict) else tool_input
    if decision.get("behavior") == "deny":
        return "deny", str(decision.get("message") or "Permission denied")
    return "error", invalid


def _split_rules(value: str) -> list[str]:
    """``--allowedTools`` entries: separated by commas or spaces outside parentheses."""
    rules: list[str] = []
    current = ""
    depth = 0
    for char in value:
        if char in ", " and depth == 0:
            if current:
                rules.append(current)
            current = ""
            continue
        depth += {"(": 1, ")": -1}.get(char, 0)
        current += char
    if current:
        rules.append(current)
    return rules


def _rule_allows(rule: str, tool: str, tool_input: dict[str, Any]) -> bool:
    """``Bash``, ``Bash(git log)``, ``Bash(git:*)`` or ``Bash(git *)`` style rules."""
    name, paren, spec = rule.partition("(")
    if name != tool:
        return False
    if not paren:
        return True
    spec = spec.removesuffix(")")
    subject = str(tool_input.get("command", "")) if tool == "Bash" else json.dumps(tool_input)
    if spec.endswith(":*"):
        prefix = spec[:-2]
        return subject == prefix or subject.startswith(prefix + " ")
    if spec.endswith("*"):
        return subject.startswith(spec[:-1])
    return subject == spec


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
