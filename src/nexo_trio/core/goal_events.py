"""Everything that happens to a goal, as typed records: the goal's log.

The ledger stores them (all but :class:`TurnActivity`, live progress, many per turn), each
under its ``kind``: the snake_case class name (``GoalStarted`` -> ``goal_started``), and
:mod:`nexo_trio.core.goal_machine` folds them into the goal's state, in the live run and on
recovery alike. So an event carries every fact a later decision needs; nothing about a goal
is kept anywhere else.

Two sorts:

* **facts** the shell observed: a run began, a turn started or ended (with what it spent),
  acceptance ran, an operator asked for something, the gate decided a tool call;
* **decisions** the goal machine took (``next_step`` returned them to be recorded): how a
  finished turn is judged by the replay policy, that the goal sleeps until a time or wakes,
  that it is stuck.

Every event has ``at``, the wall-clock time it was recorded (seconds since the epoch,
stamped by the shell), from which the machine counts the goal's wall time across runs.
"""

from __future__ import annotations

import re
from typing import Any, TypeAlias

import attrs

from nexo_trio.core.acceptance import CheckResult
from nexo_trio.core.checkpoints import DiffStat, GitTarget
from nexo_trio.core.events import Usage
from nexo_trio.core.goal_outcome import GoalOutcome


@attrs.frozen
class _Stamped:
    at: float = attrs.field(default=0.0, kw_only=True)
    """When the event was recorded: seconds since the epoch (0: not stamped yet)."""


# --------------------------------------------------------------------------- runs


@attrs.frozen
class WorkspaceInfo:
    """Where a run's workspace is and how its turns are checkpointed.

    ``kind``: ``directory`` (no checkpoints), ``repository`` (a git repository's top level:
    its own git dir holds the checkpoints), ``shadow`` (a private git dir in the state dir)
    or ``worktree`` (a git worktree of ``repo`` on ``branch``, made at the commit ``base``).
    ``target`` is what checkpoints, diffs and rollbacks use. ``remote``: the URL of a
    remote repository (without userinfo), whose worker's clone ``repo`` is; its checkpoints
    are pushed there."""

    kind: str
    target: GitTarget | None = None
    repo: str | None = None
    branch: str | None = None
    base: str | None = None
    remote: str | None = None


@attrs.frozen
class GoalStarted(_Stamped):
    """A process took the goal up: a run began.

    ``resumed_after`` says what ended the previous run (``crashed``: it stopped without
    recording an end; ``cancelled``, ``escalated``, ``budget_exhausted``: how it ended), or
    ``None`` for a goal's first run; ``resumed_*`` is what carries over, and
    ``abandoned_turn`` the turn a crash interrupted (it runs again, not counted twice).
    """

    goal_id: str
    description: str
    workspace: str
    resumed_session: str | None = None
    resumed_turns: int = 0
    metadata: dict[str, Any] = attrs.field(factory=dict)
    run: int = 1
    resumed_after: str | None = None
    abandoned_turn: int | None = None
    pid: int | None = None
    confined: bool = False
    """Its turns run in a sandbox (bubblewrap): nothing outside the workspace, the scratch
    dir and the CLI's own files can be written, and nothing outlives a turn."""
    warnings: tuple[str, ...] = ()
    """What the user should know about this run (e.g. why it is not confined)."""
    git: WorkspaceInfo | None = None
    """The workspace's kind and checkpoint target (``None``: recorded before checkpoints)."""
    leftovers_stopped: tuple[str, ...] = ()
    """``PID NAME`` of each process of the crashed run's open turn that was still running
    and was stopped before this run began (see ``engine/leftovers.py``)."""


@attrs.frozen
class GoalRestarted(_Stamped):
    """The goal starts over (``nexo-trio run --restart``): new session, fresh budget."""

    goal_id: str
    reason: str = "restart requested"


# --------------------------------------------------------------------------- turns


@attrs.frozen
class AttemptStarted(_Stamped):
    """A turn is starting (``compact``: a ``/compact`` turn, not counted).

    ``interrupts`` are the operator messages its prompt delivers; ``redo`` marks the
    re-run of a turn a crash interrupted.
    """

    goal_id: str
    turn: int
    compact: bool
    resume_session: str | None
    prompt: str
    interrupts: tuple[str, ...] = ()
    timeout_s: float | None = None
    redo: bool = False
    checkpoint: str | None = None
    """The commit of the workspace as it was before this turn (checkpointed workspaces)."""
    stream: str | None = None
    """The file keeping this attempt's raw stdout, in ``STATE/streams/GOAL/`` (``None``:
    none kept)."""
    marker: str | None = None
    """The turn's marker: ``NEXO_TRIO_TURN=<marker>`` is in the environment of every
    process the turn starts (how a later run finds what a crash left of it)."""


@attrs.frozen
class TurnSpawned(_Stamped):
    """The CLI of turn ``turn`` runs (bubblewrap's process for a confined turn): its pid,
    its start time (clock ticks after boot, ``/proc/PID/stat``) and the boot's id, which a
    later run checks before it stops a process a crash left (a reused pid is never taken).
    """

    goal_id: str
    turn: int
    pid: int
    start: int
    boot: str = ""


@attrs.frozen
class CheckpointFailed(_Stamped):
    """The workspace could not be checkpointed before turn ``turn`` (or put back for a
    rollback the replay policy asked for): the turn does not run, the goal escalates."""

    goal_id: str
    turn: int
    reason: str


@attrs.frozen
class RolledBack(_Stamped):
    """The workspace was put back to the checkpoint ``sha`` (taken before turn ``turn``,
    ``None`` when given by sha): every change since is undone. The next work turn is told.
    ``by``: who asked (``nexo-trio rollback`` and its user, or the replay policy)."""

    goal_id: str
    turn: int | None
    sha: str
    by: str
    reason: str | None = None


@attrs.frozen
class WorkspaceRestored(_Stamped):
    """The goal's worktree was made fresh on this host (the goal ran elsewhere before) and
    its files and index were put back as the ledger last knew them: at the commit ``sha``
    of the goal's refs, fetched from the remote. Its branch is as the remote had it."""

    goal_id: str
    sha: str


@attrs.frozen
class WorkspaceWarning(_Stamped):
    """Something about the workspace that does not stop the goal, in one line: a checkpoint
    that could not be pushed to the remote (``turn``: its turn), a commit the ledger knows
    that the remote does not have (the worktree then goes on from its branch)."""

    goal_id: str
    message: str
    turn: int | None = None


@attrs.frozen
class WorkspaceCleaned(_Stamped):
    """``nexo-trio cleanup`` removed what the goal's workspace was made of (``removed``: the
    worktree, the checkpoint refs, the branch, the shadow repository): its checkpoints are
    gone, and a later run starts from a fresh workspace (its first prompt says so)."""

    goal_id: str
    removed: tuple[str, ...]
    by: str


@attrs.frozen
class SessionBound(_Stamped):
    """The goal is now bound to this Claude Code session."""

    goal_id: str
    session_id: str


@attrs.frozen
class TurnActivity(_Stamped):
    """Live progress inside a turn (not stored in the ledger)."""

    goal_id: str
    turn: int
    last_tool: str | None
    tool_uses: int
    context_tokens: int


@attrs.frozen
class AttemptCompleted(_Stamped):
    """A turn ended: what it came to (``kind``, ``cause``: the turn's outcome) and spent.

    Facts only; how the goal goes on is the :class:`ReplayDecided` that follows.
    ``tool_error`` is the error text of the turn's trailing run of identical failing tool
    results (``tool_error_run`` long, of ``tool_results`` results in all).
    """

    goal_id: str
    turn: int
    compact: bool
    kind: str
    cause: str
    reason: str | None
    session_id: str | None
    usage: Usage
    cost_usd: float
    duration_s: float
    exit_code: int | None = None
    stop_actions: tuple[str, ...] = ()
    permission_denials: int = 0
    hint: str | None = None
    session_invalid: bool = False
    sleep_ms: int | None = None
    final_text: str | None = None
    context_tokens: int = 0
    compact_post_tokens: int | None = None
    tool_uses: int = 0
    tool_error: str | None = None
    tool_error_run: int = 0
    tool_results: int = 0
    changes: DiffStat | None = None
    """What the turn changed in the workspace, against its checkpoint."""
    after: str | None = None
    """The commit of the workspace right after the turn (checkpointed workspaces)."""


@attrs.frozen
class ReplayDecided(_Stamped):
    """The goal machine judged a finished turn (the replay policy's decision).

    ``action``: ``proceed``, ``retry``, ``fresh_session``, ``compact`` or ``escalate``;
    ``counted``: the turn counts toward ``max_turns``; ``is_error``: it extends the run of
    consecutive errors; ``invalid_session``: the session the CLI refused (dropped).
    """

    goal_id: str
    turn: int
    action: str
    reason: str | None
    counted: bool = True
    is_error: bool = False
    invalid_session: str | None = None
    rollback_to: str | None = None
    """The checkpoint to put the workspace back to before the retry
    (``replay.rollback_on_timeout``)."""


@attrs.frozen
class AcceptanceChecked(_Stamped):
    """The acceptance checks ran after a claimed completion."""

    goal_id: str
    turn: int
    met: bool
    results: tuple[CheckResult, ...]


@attrs.frozen
class StuckDetected(_Stamped):
    """The goal machine found the goal stuck; ``action`` is ``fresh_session`` (the next turn
    starts a new conversation with the failures) or ``escalate``."""

    goal_id: str
    reason: str
    action: str


@attrs.frozen
class CompactScheduled(_Stamped):
    """The next turn is a ``/compact`` turn."""

    goal_id: str
    context_tokens: int
    forced: bool


@attrs.frozen
class Sleeping(_Stamped):
    """Claude asked to sleep; the goal waits until ``until`` (seconds since the epoch)."""

    goal_id: str
    duration_ms: int
    reason: str | None
    until: float = 0.0


@attrs.frozen
class WokeUp(_Stamped):
    """The sleep ended (``early``: an operator message woke it); the next prompt says so."""

    goal_id: str
    slept_ms: int
    early: bool = False


# --------------------------------------------------------------------------- operators


@attrs.frozen
class GoalPaused(_Stamped):
    """An operator paused the goal (it stops between turns)."""

    goal_id: str


@attrs.frozen
class GoalResumed(_Stamped):
    """An operator resumed the goal."""

    goal_id: str


@attrs.frozen
class InterruptQueued(_Stamped):
    """An operator message waits for the next work turn."""

    goal_id: str
    message: str


@attrs.frozen
class InterruptDelivered(_Stamped):
    """The running turn took a queued operator message mid-turn (``interrupt --now`` on
    the stdio transport: the CLI echoed it before the turn's result): it is no longer
    queued for the next turn."""

    goal_id: str
    message: str
    turn: int | None = None


@attrs.frozen
class MaxTurnsRaised(_Stamped):
    """An operator raised the goal's turn budget."""

    goal_id: str
    max_turns: int


@attrs.frozen
class CancelRequested(_Stamped):
    """An operator asked to cancel the goal."""

    goal_id: str
    reason: str


# --------------------------------------------------------------------------- the gate


@attrs.frozen
class DecisionMade(_Stamped):
    """The permission gate decided a tool call."""

    goal_id: str
    tool_name: str
    outcome: str
    reason: str | None
    decider: str
    latency_ms: float
    input_digest: str = ""
    rationale: str | None = None
    """Why the decider decided so (the LLM decider's own words), when it said."""
    turn: int | None = None
    """The goal's turn that asked (``None``: no turn was running)."""
    subject: str | None = None
    """What was decided on: the command, path or URL (secrets redacted, capped)."""
    effect: str | None = None
    """How the rules classified the call: ``read``, ``workspace``, ``destructive`` or
    ``unknown`` (``None`` when no rule classified it)."""
    rule: str | None = None
    """The rule that fired (``rm-outside-workspace``, ``interpreter``, ``Bash(npm test:*)``)."""
    tool_use_id: str | None = None
    """The tool call asked about, as the CLI named it (its :class:`ToolCalled`)."""

    @property
    def allowed(self) -> bool:
        """The tool call was allowed."""
        return self.outcome in ("allow_once", "allow_session")


# --------------------------------------------------------------------------- the record


@attrs.frozen
class AssistantText(_Stamped):
    """Claude wrote ``text`` in turn ``turn``: one text block of an assistant message, every
    one of the turn, not only the last (``parent_tool_use_id``: a subagent's, inside that
    tool call). Informational: the goal machine decides nothing on it."""

    goal_id: str
    turn: int
    text: str
    parent_tool_use_id: str | None = None


@attrs.frozen
class ToolCalled(_Stamped):
    """A tool call of turn ``turn``, recorded once its result came back: the tool, its input
    (the values of secret-looking keys redacted, and every text as all texts are kept), the
    result's size in bytes and whether it was an error. ``result_bytes`` is ``None`` when
    no result came (the turn ended first). Its permission decision, when the gate was asked,
    is the :class:`DecisionMade` with the same ``tool_use_id``. Informational."""

    goal_id: str
    turn: int
    tool_use_id: str
    name: str
    input: dict[str, Any] = attrs.field(factory=dict)
    result_bytes: int | None = None
    is_error: bool = False
    parent_tool_use_id: str | None = None


# --------------------------------------------------------------------------- the end


@attrs.frozen
class BudgetExhausted(_Stamped):
    """A budget axis ran out."""

    goal_id: str
    axis: str
    reason: str


@attrs.frozen
class Escalated(_Stamped):
    """The goal stops: another turn won't help."""

    goal_id: str
    reason: str


@attrs.frozen
class GoalProgress(_Stamped):
    """Every N counted turns: what the goal has spent so far."""

    goal_id: str
    turns: int
    tokens: int
    cost_usd: float
    elapsed_s: float


@attrs.frozen
class GoalCompleted(_Stamped):
    """The run of the goal ended. Exactly one per run, on every path."""

    goal_id: str
    outcome: GoalOutcome


GoalEvent: TypeAlias = (
    GoalStarted
    | GoalRestarted
    | AttemptStarted
    | TurnSpawned
    | CheckpointFailed
    | RolledBack
    | WorkspaceRestored
    | WorkspaceWarning
    | WorkspaceCleaned
    | SessionBound
    | TurnActivity
    | AttemptCompleted
    | ReplayDecided
    | AcceptanceChecked
    | StuckDetected
    | CompactScheduled
    | Sleeping
    | WokeUp
    | GoalPaused
    | GoalResumed
    | InterruptQueued
    | InterruptDelivered
    | MaxTurnsRaised
    | CancelRequested
    | DecisionMade
    | AssistantText
    | ToolCalled
    | BudgetExhausted
    | Escalated
    | GoalProgress
    | GoalCompleted
)

ControlEvent: TypeAlias = (
    GoalPaused | GoalResumed | InterruptQueued | MaxTurnsRaised | CancelRequested
)
"""What an operator can ask of a running goal."""

EPHEMERAL_EVENTS: tuple[type[Any], ...] = (TurnActivity,)
"""Events sent to subscribers but not stored in the ledger."""

_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")


def event_kind(cls: type[Any]) -> str:
    """The ledger kind of an event class: ``GoalStarted`` -> ``goal_started``."""
    return _CAMEL.sub("_", cls.__name__).lower()
