"""nexo-trio: drive the Claude Code CLI turn by turn toward a goal, on trio.

Everything an application embeds with is importable from here::

    from nexo_trio import Orchestrator, Goal, ShellCheck, Budget, Config

- running goals: :class:`Orchestrator` (``run_goal``, ``start_goal`` -> :class:`GoalHandle`,
  ``cancel_goal`` / ``pause_goal`` / ``resume_goal`` / ``interrupt_goal`` /
  ``set_goal_max_turns``, ``subscribe``), :class:`GoalOutcome`, :class:`GoalEndKind`;
- goals and config: :class:`Goal`, :class:`Budget`, the checks (:class:`ShellCheck`,
  :class:`FileMatchCheck`, :class:`CustomCheck`, :class:`LlmJudgeCheck`, custom ones through a
  :class:`VerifierRegistry`), :class:`Config` and its parts, :func:`load_goal` and
  :func:`load_config` for the YAML files (:class:`FileFormatError` when one is wrong);
- the goal's events (:class:`GoalStarted` ... :class:`GoalCompleted`, all :data:`GoalEvent`)
  and the goal machine's state they fold into (:class:`GoalState`; the fold and the next
  step are in :mod:`nexo_trio.core.goal_machine`);
- the permission gate: :class:`Decider` (``async decide(request) -> Decision``),
  :class:`Decision`, :class:`PermissionRequest`, the built-in deciders;
- one turn alone: :func:`run_turn`, :class:`ClaudeCommand`, :class:`TurnResult`, and the
  pure :func:`reduce` / :func:`classify` -> :class:`TurnOutcome`;
- stores: :class:`MemoryStore`, :class:`SQLiteStore` (the default, in the state dir).

The test kit is :mod:`nexo_trio.testing`. The names load lazily, so ``import nexo_trio``
(or ``nexo_trio.core``, pure and sans-IO) loads neither trio nor any I/O module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nexo_trio.core.lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    "reduce": "nexo_trio.core.turn",
    "classify": "nexo_trio.core.turn",
    "TurnState": "nexo_trio.core.turn",
    "TurnOutcome": "nexo_trio.core.outcome",
    "TurnKind": "nexo_trio.core.outcome",
    "Cause": "nexo_trio.core.outcome",
    "Usage": "nexo_trio.core.events",
    "ClaudeCommand": "nexo_trio.core.command",
    "run_turn": "nexo_trio.engine.supervisor",
    "TurnResult": "nexo_trio.engine.supervisor",
    "Goal": "nexo_trio.core.goal",
    "Budget": "nexo_trio.core.goal",
    "ShellCheck": "nexo_trio.core.goal",
    "FileMatchCheck": "nexo_trio.core.goal",
    "CustomCheck": "nexo_trio.core.goal",
    "LlmJudgeCheck": "nexo_trio.core.goal",
    "Criterion": "nexo_trio.core.goal",
    "BUILTIN_CHECKS": "nexo_trio.core.goal",
    "GitWorkspace": "nexo_trio.core.goal",
    "DiffStat": "nexo_trio.core.checkpoints",
    "GitTarget": "nexo_trio.core.checkpoints",
    "CheckResult": "nexo_trio.core.acceptance",
    "Verdict": "nexo_trio.core.acceptance",
    "Failure": "nexo_trio.core.acceptance",
    "BudgetAxis": "nexo_trio.core.budget",
    "GoalOutcome": "nexo_trio.core.goal_outcome",
    "GoalEndKind": "nexo_trio.core.goal_outcome",
    "GoalState": "nexo_trio.core.goal_machine",
    "Config": "nexo_trio.core.settings",
    "ClaudeSettings": "nexo_trio.core.settings",
    "LlmSettings": "nexo_trio.core.settings",
    "PermissionSettings": "nexo_trio.core.settings",
    "ReplaySettings": "nexo_trio.core.settings",
    "StuckSettings": "nexo_trio.core.settings",
    "CompactPolicy": "nexo_trio.core.compact",
    "FieldError": "nexo_trio.core.validation",
    "GoalEvent": "nexo_trio.core.goal_events",
    "GoalStarted": "nexo_trio.core.goal_events",
    "GoalRestarted": "nexo_trio.core.goal_events",
    "AttemptStarted": "nexo_trio.core.goal_events",
    "CheckpointFailed": "nexo_trio.core.goal_events",
    "AssistantText": "nexo_trio.core.goal_events",
    "ToolCalled": "nexo_trio.core.goal_events",
    "RolledBack": "nexo_trio.core.goal_events",
    "WorkspaceInfo": "nexo_trio.core.goal_events",
    "WorkspaceCleaned": "nexo_trio.core.goal_events",
    "SessionBound": "nexo_trio.core.goal_events",
    "TurnSpawned": "nexo_trio.core.goal_events",
    "TurnActivity": "nexo_trio.core.goal_events",
    "AttemptCompleted": "nexo_trio.core.goal_events",
    "ReplayDecided": "nexo_trio.core.goal_events",
    "AcceptanceChecked": "nexo_trio.core.goal_events",
    "StuckDetected": "nexo_trio.core.goal_events",
    "CompactScheduled": "nexo_trio.core.goal_events",
    "Sleeping": "nexo_trio.core.goal_events",
    "WokeUp": "nexo_trio.core.goal_events",
    "GoalPaused": "nexo_trio.core.goal_events",
    "GoalResumed": "nexo_trio.core.goal_events",
    "InterruptDelivered": "nexo_trio.core.goal_events",
    "InterruptQueued": "nexo_trio.core.goal_events",
    "MaxTurnsRaised": "nexo_trio.core.goal_events",
    "CancelRequested": "nexo_trio.core.goal_events",
    "DecisionMade": "nexo_trio.core.goal_events",
    "BudgetExhausted": "nexo_trio.core.goal_events",
    "Escalated": "nexo_trio.core.goal_events",
    "GoalProgress": "nexo_trio.core.goal_events",
    "GoalCompleted": "nexo_trio.core.goal_events",
    "Decision": "nexo_trio.core.permission",
    "DecisionOutcome": "nexo_trio.core.permission",
    "PermissionRequest": "nexo_trio.core.permission",
    "allow": "nexo_trio.core.permission",
    "deny": "nexo_trio.core.permission",
    "abstain": "nexo_trio.core.permission",
    "unavailable": "nexo_trio.core.permission",
    "Decider": "nexo_trio.gate.decider",
    "AllowAll": "nexo_trio.gate.deciders",
    "DenyAll": "nexo_trio.gate.deciders",
    "RulesDecider": "nexo_trio.gate.deciders",
    "SessionCache": "nexo_trio.gate.deciders",
    "Chain": "nexo_trio.gate.deciders",
    "GuardedDecider": "nexo_trio.gate.deciders",
    "build_decider": "nexo_trio.gate.deciders",
    "LlmDecider": "nexo_trio.gate.llm",
    "Orchestrator": "nexo_trio.orchestrator.orchestrator",
    "LayoutError": "nexo_trio.orchestrator.orchestrator",
    "SandboxUnavailable": "nexo_trio.orchestrator.orchestrator",
    "GoalLocked": "nexo_trio.orchestrator.goal_lock",
    "goal_runner": "nexo_trio.orchestrator.goal_lock",
    "LockHolder": "nexo_trio.core.goal_lock",
    "GoalHandle": "nexo_trio.orchestrator.goal_run",
    "VerifierRegistry": "nexo_trio.orchestrator.acceptance",
    "CheckContext": "nexo_trio.orchestrator.acceptance",
    "Baseline": "nexo_trio.orchestrator.acceptance",
    "CustomResult": "nexo_trio.orchestrator.acceptance",
    "Verifier": "nexo_trio.orchestrator.acceptance",
    "default_registry": "nexo_trio.orchestrator.acceptance",
    "load_goal": "nexo_trio.wire.files",
    "load_config": "nexo_trio.wire.files",
    "parse_goal": "nexo_trio.wire.files",
    "parse_config": "nexo_trio.wire.files",
    "FileFormatError": "nexo_trio.wire.files",
    "goal_id_for_path": "nexo_trio.wire.files",
    "Store": "nexo_trio.store.base",
    "Binding": "nexo_trio.store.base",
    "LedgerEntry": "nexo_trio.store.base",
    "GoalSummary": "nexo_trio.store.base",
    "MemoryStore": "nexo_trio.store.memory",
    "SQLiteStore": "nexo_trio.store.sqlite",
    "open_sqlite_store": "nexo_trio.store.sqlite",
    "StoreError": "nexo_trio.store.sqlite",
}

if TYPE_CHECKING:
    from nexo_trio.core.acceptance import CheckResult, Failure, Verdict
    from nexo_trio.core.budget import BudgetAxis
    from nexo_trio.core.checkpoints import DiffStat, GitTarget
    from nexo_trio.core.command import ClaudeCommand
    from nexo_trio.core.compact import CompactPolicy
    from nexo_trio.core.events import Usage
    from nexo_trio.core.goal import (
        BUILTIN_CHECKS,
        Budget,
        Criterion,
        CustomCheck,
        FileMatchCheck,
        GitWorkspace,
        Goal,
        LlmJudgeCheck,
        ShellCheck,
    )
    from nexo_trio.core.goal_events import (
        AcceptanceChecked,
        AssistantText,
        AttemptCompleted,
        AttemptStarted,
        BudgetExhausted,
        CancelRequested,
        CheckpointFailed,
        CompactScheduled,
        DecisionMade,
        Escalated,
        GoalCompleted,
        GoalEvent,
        GoalPaused,
        GoalProgress,
        GoalRestarted,
        GoalResumed,
        GoalStarted,
        InterruptDelivered,
        InterruptQueued,
        MaxTurnsRaised,
        ReplayDecided,
        RolledBack,
        SessionBound,
        Sleeping,
        StuckDetected,
        ToolCalled,
        TurnActivity,
        TurnSpawned,
        WokeUp,
        WorkspaceCleaned,
        WorkspaceInfo,
    )
    from nexo_trio.core.goal_lock import LockHolder
    from nexo_trio.core.goal_machine import GoalState
    from nexo_trio.core.goal_outcome import GoalEndKind, GoalOutcome
    from nexo_trio.core.outcome import Cause, TurnKind, TurnOutcome
    from nexo_trio.core.permission import (
        Decision,
        DecisionOutcome,
        PermissionRequest,
        abstain,
        allow,
        deny,
        unavailable,
    )
    from nexo_trio.core.settings import (
        ClaudeSettings,
        Config,
        LlmSettings,
        PermissionSettings,
        ReplaySettings,
        StuckSettings,
    )
    from nexo_trio.core.turn import TurnState, classify, reduce
    from nexo_trio.core.validation import FieldError
    from nexo_trio.engine.supervisor import TurnResult, run_turn
    from nexo_trio.gate.decider import Decider
    from nexo_trio.gate.deciders import (
        AllowAll,
        Chain,
        DenyAll,
        GuardedDecider,
        RulesDecider,
        SessionCache,
        build_decider,
    )
    from nexo_trio.gate.llm import LlmDecider
    from nexo_trio.orchestrator.acceptance import (
        Baseline,
        CheckContext,
        CustomResult,
        Verifier,
        VerifierRegistry,
        default_registry,
    )
    from nexo_trio.orchestrator.goal_lock import GoalLocked, goal_runner
    from nexo_trio.orchestrator.goal_run import GoalHandle
    from nexo_trio.orchestrator.orchestrator import LayoutError, Orchestrator, SandboxUnavailable
    from nexo_trio.store.base import Binding, GoalSummary, LedgerEntry, Store
    from nexo_trio.store.memory import MemoryStore
    from nexo_trio.store.sqlite import SQLiteStore, StoreError, open_sqlite_store
    from nexo_trio.wire.files import (
        FileFormatError,
        goal_id_for_path,
        load_config,
        load_goal,
        parse_config,
        parse_goal,
    )

__all__ = [
    "BUILTIN_CHECKS",
    "AcceptanceChecked",
    "AllowAll",
    "AssistantText",
    "AttemptCompleted",
    "AttemptStarted",
    "Baseline",
    "Binding",
    "Budget",
    "BudgetAxis",
    "BudgetExhausted",
    "CancelRequested",
    "Cause",
    "Chain",
    "CheckContext",
    "CheckResult",
    "CheckpointFailed",
    "ClaudeCommand",
    "ClaudeSettings",
    "CompactPolicy",
    "CompactScheduled",
    "Config",
    "Criterion",
    "CustomCheck",
    "CustomResult",
    "Decider",
    "Decision",
    "DecisionMade",
    "DecisionOutcome",
    "DenyAll",
    "DiffStat",
    "Escalated",
    "Failure",
    "FieldError",
    "FileFormatError",
    "FileMatchCheck",
    "GitTarget",
    "GitWorkspace",
    "Goal",
    "GoalCompleted",
    "GoalEndKind",
    "GoalEvent",
    "GoalHandle",
    "GoalLocked",
    "GoalOutcome",
    "GoalPaused",
    "GoalProgress",
    "GoalRestarted",
    "GoalResumed",
    "GoalStarted",
    "GoalState",
    "GoalSummary",
    "GuardedDecider",
    "InterruptDelivered",
    "InterruptQueued",
    "LayoutError",
    "LedgerEntry",
    "LlmDecider",
    "LlmJudgeCheck",
    "LlmSettings",
    "LockHolder",
    "MaxTurnsRaised",
    "MemoryStore",
    "Orchestrator",
    "PermissionRequest",
    "PermissionSettings",
    "ReplayDecided",
    "ReplaySettings",
    "RolledBack",
    "RulesDecider",
    "SQLiteStore",
    "SandboxUnavailable",
    "SessionBound",
    "SessionCache",
    "ShellCheck",
    "Sleeping",
    "Store",
    "StoreError",
    "StuckDetected",
    "StuckSettings",
    "ToolCalled",
    "TurnActivity",
    "TurnKind",
    "TurnOutcome",
    "TurnResult",
    "TurnSpawned",
    "TurnState",
    "Usage",
    "Verdict",
    "Verifier",
    "VerifierRegistry",
    "WokeUp",
    "WorkspaceCleaned",
    "WorkspaceInfo",
    "__version__",
    "abstain",
    "allow",
    "build_decider",
    "classify",
    "default_registry",
    "deny",
    "goal_id_for_path",
    "goal_runner",
    "load_config",
    "load_goal",
    "open_sqlite_store",
    "parse_config",
    "parse_goal",
    "reduce",
    "run_turn",
    "unavailable",
]

__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
