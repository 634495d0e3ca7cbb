"""The parent of an unconfined turn or check: a child subreaper that leaves nothing of it running.

Started by :class:`nexo_trio.engine.reaped.Reaped` (for a turn's CLI when no sandbox confines
it, :func:`nexo_trio.engine.capture.run_captured` for a check) as::

    python -I -S reaper.py --status-fd N [--grace S] [--stdin-fd N] [--session] [--linger]
                           [--setenv NAME=VALUE] [--unsetenv NAME] -- COMMAND...

in a session of its own, with the command's stdout and stderr pipes and, on stdin, a pipe
whose other end only the orchestrator holds: the *lifeline*.

It makes itself a child subreaper (``prctl(PR_SET_CHILD_SUBREAPER)``), so every process the
command starts, however it detaches (``setsid``, a double fork, ``nohup ... &``), is
re-parented to it rather than to init when its parent dies: it stays a descendant of this
process and is found by walking the process tree down from here. Then it runs COMMAND in
this process group (with ``--session``: a session, so a group, of its own), its stdin
``/dev/null`` (or fd N of ``--stdin-fd``), its environment ours with ``--setenv`` and
``--unsetenv`` applied (the caller restores what this interpreter's start changed: Python
coerces a C ``LC_CTYPE`` to UTF-8). Once the command's exit is reported (or a stop begins)
it points its own stdout and stderr at ``/dev/null``, so that from then on only what the
command started holds the output pipes: their end comes with that report (one wake-up of the
orchestrator, not two), and a helper that lingers keeps none of them. Then:

- when COMMAND exits: reports its status, SIGKILLs every descendant left, reaps, exits 0.
  With ``--linger`` (a turn: the orchestrator gives the leftovers a graceful stop of its
  own) it only reports, and goes on reaping until no descendant is left (then exits 0) or
  it is told to stop;
- when asked to stop, by end-of-file on the lifeline (the orchestrator closed it, or died,
  even of a SIGKILL) or by a SIGTERM: SIGTERM to every descendant, up to ``--grace`` seconds
  for them to go, SIGKILL to whatever is left, reap, report, exit 0.

Either way the kill is bounded (:data:`KILL_BOUND`): a process stuck in the kernel is given up
on and reported. Descendants are signalled through a pidfd opened while the process is seen
to be the child of the parent it was found under, so a reused pid is never signalled.

Requests on the lifeline, one byte each: ``t`` sends SIGTERM, ``k`` SIGKILL, to the command
(to its process group with ``--session``), only while the command has not been reaped here,
so its pid (the group's id) cannot have been reused. A turn's graceful stop is ``t``, the
grace, ``k`` (the orchestrator's escalation, which it records), then end-of-file. Any other
byte (``h``) is a heartbeat: with ``--heartbeat S``, a lifeline silent for ``S`` seconds is
a stop too (reported as ``{"silence": S}``), so that an orchestrator that is stopped
(``SIGSTOP``) or wedged does not leave its turn running on its own.

Reports on fd N, one JSON object a line: ``{"pid": P}`` once COMMAND runs; ``{"exit": CODE}``
when it ended (negative: killed by that signal); ``{"error": ERRNO, "message": ...,
"filename": ...}`` when it could not be started (the helper then exits 127);
``{"survivors": K}`` when processes were still there at the end of the kill bound. An exec
that has not returned after :data:`START_BOUND` seconds (a hung file system) kills the
helper (SIGALRM), which ends the report pipe without a word.

What it cannot catch: a process that kills this helper (``kill -9 $PPID`` from the command
itself) before it ends, or one started by another service on its behalf (``systemd-run``,
``at``). Bubblewrap's PID namespace, where it works, has neither hole (``engine/confined.py``).

Standard library only, started with ``-I -S``, and only its cheapest modules: the command is
started with ``posix_spawnp`` (no ``subprocess``, whose import alone costs more than the
interpreter's start) and signals are handled through ``_signal`` (no ``enum``): it starts
in about 20 ms, half of it the interpreter's own start (the ``subprocess`` version took 40).
"""

from __future__ import annotations

import ctypes
import os
import select
import sys
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    import signal as _signal
else:
    import _signal  # signal without its enum: cheaper to import

PR_SET_CHILD_SUBREAPER = 36
KILL_BOUND = 3.0
"""How long the final SIGKILL rounds may take before the survivors are given up on."""
START_BOUND = 10
"""Whole seconds the start of the command may take (an ``alarm``: it then kills us)."""
_POLL_S = 0.01
USAGE = (
    "usage: reaper.py --status-fd N [--grace SECONDS] [--heartbeat SECONDS] [--stdin-fd N]"
    " [--cwd DIR] [--session] [--linger] [--setenv NAME=VALUE] [--unsetenv NAME] -- COMMAND..."
)
REQUESTS = {ord("t"): _signal.SIGTERM, ord("k"): _signal.SIGKILL}
"""The lifeline's requests: a byte, the signal it sends the command."""


class Options:
    """What the command line asks for."""

    def __init__(self, argv: list[str]) -> None:
        split = argv.index("--")  # ValueError: no command
        self.command = argv[split + 1 :]
        self.status_fd = -1
        self.grace = 1.0
        self.heartbeat: float | None = None
        self.stdin_fd: int | None = None
        self.cwd: str | None = None
        self.session = False
        self.linger = False
        self.setenv: dict[str, str] = {}
        self.unsetenv: list[str] = []
        options = iter(argv[:split])
        for option in options:
            if option == "--status-fd":
                self.status_fd = int(next(options))
            elif option == "--grace":
                self.grace = float(next(options))
            elif option == "--heartbeat":
                self.heartbeat = float(next(options))
                if not self.heartbeat > 0:
                    raise ValueError(option)
            elif option == "--stdin-fd":
                self.stdin_fd = int(next(options))
            elif option == "--cwd":
                self.cwd = next(options)
            elif option == "--session":
                self.session = True
            elif option == "--linger":
                self.linger = True
            elif option == "--setenv":
                name, sep, value = next(options).partition("=")
                if not sep or not name:
                    raise ValueError(name)
                self.setenv[name] = value
            elif option == "--unsetenv":
                self.unsetenv.append(next(options))
            else:
                raise ValueError(option)
        if self.status_fd < 0 or not self.command:
            raise ValueError("--status-fd and a command are required")

    def environment(self) -> dict[str, str]:
        """The command's environment: ours, as the caller corrected it."""
        env = dict(os.environ)
        for name in self.unsetenv:
            env.pop(name, None)
        env.update(self.setenv)
        return env


def main(argv: list[str]) -> int:
    """Parse the options, run the command, leave nothing of it behind."""
    try:
        options = Options(argv)
    except (ValueError, StopIteration):
        print(USAGE, file=sys.stderr)
        return 2
    return Reaper(options.status_fd).run(options)


class Reaper:
    """One run: the command, its status, and the signals that wake the loop."""

    def __init__(self, status_fd: int) -> None:
        self.status_fd = status_fd
        os.set_inheritable(status_fd, False)  # ours: not the command's
        self.me = os.getpid()
        self.command_pid = -1
        self.group = False
        self.status: int | None = None
        self.childless = False
        self.stop = False
        self.heard = time.monotonic()
        """When the lifeline last said something (a heartbeat, a request)."""
        self.output_released = False
        self.children_files: bool | None = None
        """Whether the kernel has children files (looked at when first needed)."""
        # Signals wake the select() of the loop through this pipe.
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        _signal.set_wakeup_fd(self.wake_w)
        # Handlers, not SIG_IGN: an exec resets handled signals, but inherits ignored ones.
        _signal.signal(_signal.SIGCHLD, _ignore)
        _signal.signal(_signal.SIGTERM, self._on_stop)

    def _on_stop(self, signum: int, frame: object) -> None:
        self.stop = True

    def report(self, line: str) -> None:
        """One line of status for the orchestrator (gone: never mind)."""
        try:  # noqa: SIM105 - contextlib is not worth its import here
            os.write(self.status_fd, line.encode() + b"\n")
        except OSError:
            pass

    def run(self, options: Options) -> int:
        """Run the command to its end (with ``linger``, its descendants' too) or until told
        to stop; kill what is left."""
        _become_subreaper()
        try:
            self.command_pid = _spawn(options)
        except OSError as exc:
            self.report(_error_line(exc.errno, exc.strerror, _text(exc.filename)))
            return 127
        self.group = options.session
        self.report(f'{{"pid": {self.command_pid}}}')
        while True:
            self.reap()
            if self.status is not None or self.stop:
                self.release_output()
            if self.stop:
                break
            if self.status is not None and (not options.linger or self.childless):
                break
            beat = options.heartbeat
            wait = None if beat is None else max(0.0, self.heard + beat - time.monotonic())
            ready, _, _ = select.select([0, self.wake_r], [], [], wait)
            if 0 in ready:
                self.read_lifeline()
            self._drain_wakeups()
            if beat is not None and not self.stop and time.monotonic() - self.heard > beat:
                self.report(f'{{"silence": {beat!r}}}')
                self.stop = True  # the orchestrator went silent: it cannot stop this itself
        if self.stop:
            self.terminate(options.grace)
        survivors = self.kill_all(KILL_BOUND)
        if survivors:
            self.report(f'{{"survivors": {survivors}}}')
        return 0

    def release_output(self) -> None:
        """Point our stdout and stderr at /dev/null (once): done when the command's exit has
        been reported (or a stop begins), so that the end of the output pipes (once what
        the command started closed them too) comes with that report, in one wake-up of the
        orchestrator rather than two, and a helper that lingers keeps none of them."""
        if not self.output_released:
            self.output_released = True
            _release_output()

    def read_lifeline(self) -> None:
        """Serve the requests on the lifeline; its end is a stop."""
        try:
            data = os.read(0, 4096)
        except OSError:
            data = b""
        if not data:
            self.stop = True  # the lifeline ended: the orchestrator wants this over
            return
        self.heard = time.monotonic()
        for byte in data:
            sig = REQUESTS.get(byte)
            if sig is not None:
                self.signal_command(sig)

    def signal_command(self, sig: int) -> None:
        """Signal the command (its group with ``--session``) if it is not reaped yet."""
        if self.status is not None:
            return  # reaped: its pid may be someone else's by now
        try:
            if self.group:
                os.killpg(self.command_pid, sig)
            else:
                os.kill(self.command_pid, sig)
        except OSError:
            pass

    def reap(self) -> None:
        """Reap every exited child; note the command's status when it is among them."""
        while True:
            try:
                pid, wait_status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.childless = True
                return
            if pid == 0:
                return
            if pid == self.command_pid:
                self.status = os.waitstatus_to_exitcode(wait_status)
                self.report(f'{{"exit": {self.status}}}')

    def terminate(self, grace: float) -> None:
        """SIGTERM to every descendant; up to ``grace`` for all of them to go."""
        self.signal_all(_signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            self.reap()
            if self.childless or not any(alive for _, _, alive in self.descendants()):
                return
            self._pause()

    def kill_all(self, bound: float) -> int:
        """SIGKILL every descendant until none is left (how many were, after ``bound``)."""
        deadline = time.monotonic() + bound
        while True:
            self.reap()
            if self.childless:  # no child at all, so no descendant either
                return 0
            found = self.descendants()
            if time.monotonic() >= deadline:
                return sum(1 for _, _, alive in found if alive)
            self.signal_all(_signal.SIGKILL, found)
            self._pause()

    def signal_all(self, sig: int, found: list[tuple[int, int, bool]] | None = None) -> None:
        """Send ``sig`` to every live descendant."""
        for pid, parent, alive in self.descendants() if found is None else found:
            if alive:
                _send(pid, parent, sig)

    def descendants(self) -> list[tuple[int, int, bool]]:
        """``(pid, parent, alive)`` of every descendant, parents before their children:
        walked down from this process through the children files (a few reads for the
        turn's own processes, none for the rest of the host), or, where the kernel has
        none, from one pass over all of ``/proc``."""
        if self.children_files is None:
            self.children_files = _children_files(self.me)
        if self.children_files:
            return _walk_children(self.me)
        tree = _process_tree()
        found: list[tuple[int, int, bool]] = []
        pending = [self.me]
        while pending:
            parent = pending.pop()
            for pid, alive in tree.get(parent, ()):
                found.append((pid, parent, alive))
                pending.append(pid)
        return found

    def _pause(self) -> None:
        select.select([self.wake_r], [], [], _POLL_S)
        self._drain_wakeups()

    def _drain_wakeups(self) -> None:
        try:
            while os.read(self.wake_r, 4096):
                pass
        except BlockingIOError:
            pass


def _ignore(signum: int, frame: object) -> None:
    return


def _spawn(options: Options) -> int:
    """Start the command (its stdin, session, environment as asked); its pid. Raises the
    ``OSError`` of its exec, as ``subprocess`` would (the file it names is ``argv[0]``)."""
    stdin: tuple[int | str, ...] = (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0)
    if options.stdin_fd is not None:
        os.set_inheritable(options.stdin_fd, False)  # the copy on fd 0 is the command's
        stdin = (os.POSIX_SPAWN_DUP2, options.stdin_fd, 0)
    _signal.signal(_signal.SIGALRM, _signal.SIG_DFL)
    _signal.alarm(START_BOUND)  # a hung exec (say, on a dead file system) ends us
    try:
        if options.cwd is not None:
            # Here, not in our parent's fork: a directory on a hung file system blocks us
            # (until the alarm), never the event loop that started us.
            os.chdir(options.cwd)
        return os.posix_spawnp(
            options.command[0],
            options.command,
            options.environment(),
            file_actions=[stdin],
            setsid=options.session,
            # What Python ignores at start (and an exec would keep ignored), as subprocess
            # restores it.
            setsigdef=(_signal.SIGPIPE, _signal.SIGXFSZ),
        )
    finally:
        _signal.alarm(0)
        if options.stdin_fd is not None:
            os.close(options.stdin_fd)


def _become_subreaper() -> None:
    """Make orphaned descendants ours (Linux 3.4+); without it, only the group is covered."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _release_output() -> None:
    """Point our stdout and stderr at /dev/null: the command has the pipes, and a helper
    that lingers after it must not keep them open (their end-of-file ends the output)."""
    try:
        null = os.open(os.devnull, os.O_WRONLY)
    except OSError:
        return
    for fd in (1, 2):
        try:  # noqa: SIM105 - contextlib is not worth its import here
            os.dup2(null, fd)
        except OSError:
            pass
    os.close(null)


def _children_files(pid: int) -> bool:
    """Whether this kernel has ``/proc/PID/task/TID/children`` (Linux 3.5+ with
    ``CONFIG_PROC_CHILDREN``), as this process (``pid``, single-threaded) sees it."""
    return os.path.exists(f"/proc/{pid}/task/{pid}/children")


def children_of(pid: int) -> list[int]:
    """The pids of ``pid``'s children, from the children file of each of its threads (a
    child is listed under the thread that started it); empty when ``pid`` is gone.
    (Stdlib only, as all of this file: ``engine.process_tree`` uses it too.)"""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    found: list[int] = []
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children", "rb") as f:
                found += [int(child) for child in f.read().split()]
        except (OSError, ValueError):  # the thread ended meanwhile
            continue
    return found


def _walk_children(me: int) -> list[tuple[int, int, bool]]:
    """``(pid, parent, alive)`` of every descendant of ``me`` (this process), walking the
    children files down from it (:func:`_children_files` says whether there are any).

    Each child's ``stat`` is read once: one whose parent is neither the process it was
    listed under nor ``me`` (it was reaped, and its pid reused, meanwhile) is left out; one
    re-parented to ``me`` between the two reads is kept, as ``me``'s (:func:`_send` checks
    the parent again through a pidfd). A pid seen twice is walked once."""
    found: list[tuple[int, int, bool]] = []
    seen = {me}
    pending = [me]
    while pending:
        parent = pending.pop()
        for pid in children_of(parent):
            if pid in seen:
                continue
            stat = _stat(pid)
            if stat is None or stat[1] not in (parent, me):
                continue
            seen.add(pid)
            alive = stat[0] != "Z"
            found.append((pid, stat[1], alive))
            if alive:  # a zombie has no children left: they are ours now
                pending.append(pid)
    return found


def _process_tree() -> dict[int, list[tuple[int, bool]]]:
    """Every process's children as ``(pid, alive)``, from one pass over ``/proc``: where
    the kernel has no children files (:func:`_walk_children`)."""
    tree: dict[int, list[tuple[int, bool]]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return tree
    for entry in entries:
        if not entry.isdigit():
            continue
        stat = _stat(int(entry))
        if stat is not None:
            state, ppid = stat
            tree.setdefault(ppid, []).append((int(entry), state != "Z"))
    return tree


def _stat(pid: int) -> tuple[str, int] | None:
    """The state letter and parent pid of ``pid``, or ``None`` when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # "PID (COMM) STATE PPID ...": COMM may hold spaces and parentheses, so split after it.
    fields = data.rpartition(b")")[2].split()
    try:
        return fields[0].decode(), int(fields[1])
    except (IndexError, ValueError):
        return None


def _send(pid: int, parent: int, sig: int) -> None:
    """Signal ``pid`` only if it still is the child of ``parent`` it was found as.

    The pidfd pins the process: once it is open, checking the parent rules out a reused pid.
    """
    try:
        fd = os.pidfd_open(pid)
    except AttributeError:  # no pidfds in this Python: signal by pid
        try:  # noqa: SIM105 - contextlib is not worth its import here
            os.kill(pid, sig)
        except OSError:
            pass
        return
    except OSError:  # gone (or no pidfds in this kernel: then it is reaped next round)
        if parent == os.getpid():
            try:  # noqa: SIM105 - contextlib is not worth its import here
                os.kill(pid, sig)  # our own child: its pid is reserved until we reap it
            except OSError:
                pass
        return
    try:
        stat = _stat(pid)
        if stat is not None and stat[1] == parent:
            _signal.pidfd_send_signal(fd, sig)
    except OSError:
        pass
    finally:
        os.close(fd)


def _error_line(number: int | None, message: str | None, filename: str | None) -> str:
    """The report of a command that could not be started (JSON without importing json)."""
    return (
        f'{{"error": {int(number or 0)}, "message": {_json_string(message)}, '
        f'"filename": {_json_string(filename)}}}'
    )


def _json_string(value: str | None) -> str:
    """``value`` as a JSON string (``null`` for ``None``); a surrogate (an undecodable byte
    of a file name) as its ``\\u`` escape, which ``json.loads`` gives back."""
    if value is None:
        return "null"
    out = ['"']
    for char in value:
        code = ord(char)
        if char in '"\\':
            out.append("\\" + char)
        elif code < 0x20 or 0xD800 <= code < 0xE000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


def _text(value: object) -> str | None:
    return None if value is None else os.fsdecode(value) if isinstance(value, bytes) else str(value)


if __name__ == "__main__":
    code = main(sys.argv[1:])
    # Nothing is left to clean up: exit at once, without the interpreter's finalization,
    # so that the orchestrator finds us exited (and reaps us) without waiting.
    try:  # noqa: SIM105 - contextlib is not worth its import here
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    os._exit(code)
