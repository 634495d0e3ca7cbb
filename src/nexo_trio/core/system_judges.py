"""The judges of commands that act on the machine: processes, services, power, runlevels,
scheduled jobs, filesystems.

``kill -1`` (every process the user may signal) and ``kill 1`` (init) are destructive, any
other ``kill`` unknown (which processes get the signal cannot be read statically);
``killall``/``pkill`` (:data:`KILL_BY_NAME`) are destructive, by name they can hit processes
far outside the goal; so are machine power (:data:`POWER`, ``systemctl poweroff``…),
runlevels (``init 0``), ``crontab -r`` and formatting a filesystem (``mkfs*``,
:data:`FORMATTERS`: ``mkswap``, ``wipefs``…). ``systemctl status``… and ``crontab -l`` only
read; other changes of services, runlevels and scheduled jobs are unknown.
"""

from __future__ import annotations

from collections.abc import Sequence

from nexo_trio.core.invocation import Cmd, Ctx, names
from nexo_trio.core.shell_syntax import Redir
from nexo_trio.core.verdicts import EffectVerdict, cmdline, destructive, read, unknown

__all__ = [
    "FORMATTERS",
    "KILL_BY_NAME",
    "POWER",
    "judge_crontab",
    "judge_init",
    "judge_kill",
    "judge_systemctl",
]

FORMATTERS = frozenset({"mke2fs", "mkswap", "wipefs", "mkntfs", "mkdosfs", "mkexfatfs"})
POWER = frozenset({"shutdown", "reboot", "halt", "poweroff", "kexec"})

# Kill by name can hit processes far outside the goal: the orchestrator, other goals' agents,
# the user's own programs.
KILL_BY_NAME = frozenset({"killall", "killall5", "pkill"})

_SYSTEMCTL_POWER = names(
    "poweroff reboot halt kexec emergency rescue suspend hibernate hybrid-sleep soft-reboot"
)
_SYSTEMCTL_READ = names(
    "status show cat list-units list-unit-files list-timers list-sockets list-jobs"
    " list-dependencies list-machines is-active is-enabled is-failed is-system-running"
    " get-default show-environment help"
)


def judge_kill(cmd: Cmd, redirs: Sequence[Redir], ctx: Ctx) -> EffectVerdict:
    """``kill -9 -1`` (every process) or a kill of pid 1: destructive; any other kill is
    unknown (which processes get the signal cannot be read statically)."""
    values = [a.value for a in cmd.args]
    line = cmdline(cmd)
    i = 0
    if values[:1] in (["-l"], ["-L"]):
        return read("read-only-command", "kill -l only lists signals", line)
    if i < len(values) and values[i] in ("-s", "-n"):
        i += 2
    elif i < len(values) and (v := values[i]) is not None and v.startswith("-") and v != "--":
        i += 1  # -9, -KILL, -SIGKILL
    for v in values[i:]:
        if v == "-1":
            return destructive(
                "kill-all", f"kill of every process the user may signal: {line}", line
            )
        if v == "1":
            return destructive("kill-init", f"kill of init (pid 1): {line}", line)
    return unknown("signal", f"kill signals processes the rules cannot tell apart: {line}", line)


def judge_systemctl(cmd: Cmd, redirs: Sequence[Redir], ctx: Ctx) -> EffectVerdict:
    line = cmdline(cmd)
    verbs = [a.value for a in cmd.args if a.value and not a.value.startswith("-")]
    if verbs and verbs[0] in _SYSTEMCTL_POWER:
        return destructive("power", f"systemctl {verbs[0]} stops or restarts the machine", line)
    if not verbs or verbs[0] in _SYSTEMCTL_READ:
        return read("read-only-command", "systemctl only shows state", line)
    return unknown("system-setting", f"systemctl {verbs[0]} changes services: {line}", line)


def judge_init(cmd: Cmd, redirs: Sequence[Redir], ctx: Ctx) -> EffectVerdict:
    line = cmdline(cmd)
    if any(a.value in ("0", "6", "1", "s", "S") for a in cmd.args):
        return destructive(
            "power", f"{cmd.name} changes the runlevel (halt/reboot/single-user): {line}", line
        )
    return unknown("system-setting", f"{cmd.name} changes the runlevel: {line}", line)


def judge_crontab(cmd: Cmd, redirs: Sequence[Redir], ctx: Ctx) -> EffectVerdict:
    line = cmdline(cmd)
    flags = [a.value for a in cmd.args if a.value and a.value.startswith("-")]
    if any(not f.startswith("--") and "r" in f[1:] for f in flags):
        return destructive("crontab-remove", "crontab -r deletes every cron job", line)
    if flags and all(f == "-l" for f in flags):
        return read("read-only-command", "crontab -l only lists", line)
    return unknown("system-setting", f"crontab changes scheduled jobs: {line}", line)
