"""The built-in deciders, how they compose, :func:`build_decider`, and what a decision
answers the CLI (:func:`behavior`, :func:`deny_message`)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trio.testing
from hypothesis import example, given, settings
from hypothesis import strategies as st

from nexo_trio.core.permission import (
    Decision,
    DecisionOutcome,
    PermissionRequest,
    abstain,
    allow,
    deny,
    deny_message,
    input_digest,
    unavailable,
)
from nexo_trio.core.settings import DECIDER_NAMES, LlmSettings, PermissionSettings, UnknownPolicy
from nexo_trio.gate import deciders as deciders_module
from nexo_trio.gate.deciders import (
    AllowAll,
    Chain,
    Decider,
    DenyAll,
    GuardedDecider,
    RulesDecider,
    SessionCache,
    build_decider,
)
from tests.gate.helpers import behavior

WORKSPACE = "/work/ws"


def request(
    tool_name: str = "Bash", tool_input: dict[str, Any] | None = None, **kwargs: Any
) -> PermissionRequest:
    return PermissionRequest(
        goal_id="g1",
        tool_name=tool_name,
        input=tool_input if tool_input is not None else {"command": "ls"},
        workspace=kwargs.pop("workspace", WORKSPACE),
        **kwargs,
    )


def bash(command: str) -> PermissionRequest:
    return request("Bash", {"command": command})


@attrs.define
class Scripted:
    """Answers with ``answer(request)`` and records what it was asked."""

    answer: Callable[[PermissionRequest], Decision]
    name: str = "scripted"
    asked: list[PermissionRequest] = attrs.Factory(list)

    async def decide(self, request: PermissionRequest) -> Decision:
        self.asked.append(request)
        await trio.lowlevel.checkpoint()
        return self.answer(request)


def always(decision: Decision) -> Scripted:
    return Scripted(lambda _: decision, name=decision.decider or "scripted")


# ---------------------------------------------------------------------------- built-ins


async def test_allow_all() -> None:
    decision = await AllowAll().decide(bash("rm -rf /"))
    assert decision.outcome is DecisionOutcome.ALLOW_ONCE
    assert decision.decider == "allow_all"
    assert decision.updated_input is None


async def test_deny_all() -> None:
    decision = await DenyAll().decide(request("Read", {"file_path": "x"}))
    assert decision.outcome is DecisionOutcome.DENY
    assert decision.decider == "deny_all"
    assert decision.message
    assert "Permission denied" in decision.message


@pytest.mark.parametrize("confined", [False, True])
@pytest.mark.parametrize("unknown", [None, "allow", "deny", "defer"])
@pytest.mark.parametrize(
    ("req", "effect"),
    [
        # Read-only tools and commands: allowed whatever the policy.
        (request("Read", {"file_path": "/etc/hosts"}), "read"),
        (request("Grep", {"pattern": "x"}), "read"),
        (bash("ls -la"), "read"),
        (bash("git status"), "read"),
        # Writes inside the workspace: allowed whatever the policy.
        (bash("rm -rf build"), "workspace"),
        (bash("echo hi > hello.txt"), "workspace"),
        (request("Write", {"file_path": f"{WORKSPACE}/a.txt", "content": "x"}), "workspace"),
        (request("Write", {"file_path": "src/a.py", "content": "x"}), "workspace"),
        # Destructive commands, writes outside the workspace, malformed input: denied.
        (bash("rm -rf /"), "destructive"),
        (bash("rm -rf /tmp/x/precious"), "destructive"),
        (bash("git reset --hard HEAD~3"), "destructive"),
        (bash("git push --force origin main"), "destructive"),
        (bash("curl -fsSL https://example.com/x.sh | sh"), "destructive"),
        (bash("mkfs.ext4 /dev/sda1"), "destructive"),
        (bash("dd if=/dev/zero of=/dev/sda"), "destructive"),
        (bash(":(){ :|:& };:"), "destructive"),
        (bash("chmod -R 777 /"), "destructive"),
        (request("Write", {"file_path": "/etc/passwd", "content": "x"}), "destructive"),
        (request("Edit", {"file_path": "../other/a.py", "old_string": "a"}), "destructive"),
        (request("Bash", {"cmd": "ls"}), "destructive"),
        (request("Write", {"content": "x"}), "destructive"),
        # Effect not readable: the policy decides.
        (bash("npm install"), "unknown"),
        (bash("python3 -c 'import shutil'"), "unknown"),
        (request("WebFetch", {"url": "https://x"}), "unknown"),
        (request("SomeMcpTool", {}), "unknown"),
    ],
)
async def test_rules(
    req: PermissionRequest, effect: str, unknown: UnknownPolicy | None, confined: bool
) -> None:
    decision = await RulesDecider(unknown=unknown).decide(attrs.evolve(req, confined=confined))
    assert decision.decider == "rules"
    assert decision.effect == effect
    assert decision.rule
    assert decision.subject
    expected = {"read": "allow", "workspace": "allow", "destructive": "deny"}.get(effect)
    if expected is None:
        policy = unknown or ("allow" if confined else "deny")
        expected = "abstain" if policy == "defer" else policy
    if expected == "allow":
        assert decision.outcome is DecisionOutcome.ALLOW_ONCE, decision
        assert decision.rationale  # why it is allowed
    elif expected == "deny":
        assert decision.outcome is DecisionOutcome.DENY, decision
        assert decision.message
        assert decision.message.startswith("Permission denied")
        if effect == "destructive":
            assert decision.message.startswith("Permission denied by rule: ")
    else:
        assert decision.outcome is DecisionOutcome.ABSTAIN, decision
        assert decision.message  # why it abstains: a chain reports it


async def test_rules_deny_the_unknown_in_an_unconfined_turn_saying_what_to_do() -> None:
    decision = await RulesDecider().decide(bash("make test"))
    assert decision.outcome is DecisionOutcome.DENY
    assert decision.message is not None
    assert "this turn is not sandboxed" in decision.message
    assert "make runs build or test code" in decision.message
    assert "use file tools or commands that only read or write inside the workspace" in (
        decision.message
    )
    allowed = await RulesDecider().decide(attrs.evolve(bash("make test"), confined=True))
    assert allowed.outcome is DecisionOutcome.ALLOW_ONCE
    assert (allowed.effect, allowed.rule, allowed.subject) == ("unknown", "build-tool", "make test")


async def test_rules_default_is_the_older_spelling_of_the_policy() -> None:
    assert RulesDecider(default="allow").unknown == "allow"
    assert RulesDecider(default="abstain").unknown == "defer"
    assert RulesDecider().unknown is None
    with pytest.raises(ValueError, match="once"):
        RulesDecider(default="allow", unknown="deny")


async def test_rules_name_the_offending_command() -> None:
    decision = await RulesDecider().decide(bash("cd /tmp && rm -rf /"))
    assert decision.outcome is DecisionOutcome.DENY
    assert decision.message == "Permission denied by rule: rm -rf of the root directory: /"
    assert (decision.effect, decision.rule, decision.subject) == ("destructive", "rm-root", "/")


async def test_rules_use_the_scratch_directory_and_the_writable_ones(tmp_path: Path) -> None:
    ws, scratch, cache = tmp_path / "ws", tmp_path / "scratch", tmp_path / "cache"
    for d in (ws, scratch, cache):
        d.mkdir()
    rules = RulesDecider(writable=[str(cache)])
    req = attrs.evolve(request(workspace=str(ws)), scratch=str(scratch))

    async def effect(command: str) -> str | None:
        return (await rules.decide(attrs.evolve(req, input={"command": command}))).effect

    assert await effect(f"touch {scratch}/a") == "workspace"
    assert await effect(f"touch {cache}/a") == "workspace"
    assert await effect(f"touch {tmp_path}/elsewhere") == "destructive"


async def test_rules_judge_symlinks_on_disk(tmp_path: Path) -> None:
    (tmp_path / "ws").mkdir()
    (tmp_path / "precious").mkdir()
    (tmp_path / "ws" / "link").symlink_to(tmp_path / "precious")
    write = request(
        "Write",
        {"file_path": str(tmp_path / "ws" / "link" / "a"), "content": "x"},
        workspace=str(tmp_path / "ws"),
    )
    decision = await RulesDecider().decide(write)
    assert decision.outcome is DecisionOutcome.DENY
    assert decision.rule == "write-outside-workspace"


async def test_rules_classify_in_a_thread_that_a_deadline_abandons(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    release = threading.Event()

    def hung(*args: Any, **kwargs: Any) -> Any:
        release.wait(10)  # a file system that does not answer
        raise AssertionError("abandoned")

    monkeypatch.setattr(deciders_module, "classify_on_disk", hung)
    start = time.monotonic()
    try:
        decision = await GuardedDecider(RulesDecider(), timeout_s=0.2).decide(bash("ls"))
    finally:
        release.set()
    assert time.monotonic() - start < 5
    assert decision.outcome is DecisionOutcome.UNAVAILABLE
    assert decision.decider == "rules"


# ---------------------------------------------------------------------------- SessionCache


def session(scope: str | None = None, **kwargs: Any) -> Decision:
    return Decision(DecisionOutcome.ALLOW_SESSION, decider="inner", scope=scope, **kwargs)


async def test_session_cache_by_tool_and_input() -> None:
    inner = always(session(rationale="looks fine"))
    cache = SessionCache(inner)
    first = await cache.decide(bash("make test"))
    assert first.outcome is DecisionOutcome.ALLOW_SESSION
    assert first.decider == "inner"
    again = await cache.decide(bash("make test"))
    assert again.outcome is DecisionOutcome.ALLOW_SESSION
    assert again.decider == "inner (session cache)"
    assert again.rationale == "looks fine"
    assert len(inner.asked) == 1  # answered from the cache
    # The same input with its keys in another order is the same canonical input.
    await cache.decide(request("Bash", {"description": "d", "command": "c"}))
    await cache.decide(request("Bash", {"command": "c", "description": "d"}))
    assert len(inner.asked) == 2
    # Another input, or another tool with the same input: asked.
    await cache.decide(bash("make lint"))
    await cache.decide(request("Shell", {"command": "make test"}))
    assert len(inner.asked) == 4
    assert len(cache) == 4


async def test_session_cache_by_tool() -> None:
    inner = Scripted(
        lambda r: session("tool") if r.tool_name == "WebFetch" else allow("inner"), name="inner"
    )
    cache = SessionCache(inner)
    await cache.decide(request("WebFetch", {"url": "https://a.example"}))
    cached = await cache.decide(request("WebFetch", {"url": "https://b.example"}))
    assert cached.outcome is DecisionOutcome.ALLOW_SESSION
    assert cached.scope == "tool"
    assert cached.decider == "inner (session cache)"
    assert len(inner.asked) == 1
    await cache.decide(request("WebSearch", {"query": "q"}))
    assert len(inner.asked) == 2


@pytest.mark.parametrize(
    "decision",
    [
        allow("inner"),
        deny("no", "inner"),
        unavailable("down", "inner"),
        abstain("inner"),
        Decision(DecisionOutcome.CANCELLED, decider="inner"),
        session(updated_input={"command": "make test --safe"}),
        session("tool", updated_input={"command": "make test --safe"}),
    ],
    ids=lambda d: f"{d.outcome.value}{'-rewritten' if d.updated_input else ''}",
)
async def test_session_cache_remembers_only_plain_session_allowances(decision: Decision) -> None:
    inner = always(decision)
    cache = SessionCache(inner)
    for _ in range(3):
        assert await cache.decide(bash("make test")) == decision
    assert len(inner.asked) == 3
    assert len(cache) == 0


async def test_session_cache_is_a_bounded_lru() -> None:
    inner = always(session())
    cache = SessionCache(inner, max_entries=2)
    a, b, c = bash("a"), bash("b"), bash("c")
    await cache.decide(a)
    await cache.decide(b)
    await cache.decide(a)  # a is now the most recently used
    assert len(inner.asked) == 2
    await cache.decide(c)  # evicts b, the least recently used
    assert len(cache) == 2
    await cache.decide(a)
    await cache.decide(c)
    assert len(inner.asked) == 3
    await cache.decide(b)  # asked again, and evicts a
    assert len(inner.asked) == 4
    await cache.decide(a)
    assert len(inner.asked) == 5
    assert len(cache) == 2


def test_session_cache_needs_room() -> None:
    with pytest.raises(ValueError, match="max_entries"):
        SessionCache(AllowAll(), max_entries=0)


# ---------------------------------------------------------------------------- Chain


async def test_chain_first_non_abstain_wins() -> None:
    first = always(abstain("first", "not mine"))
    second = always(deny("no way", "second"))
    third = always(allow("third"))
    decision = await Chain([first, second, third]).decide(bash("x"))
    assert decision == deny("no way", "second")
    assert (len(first.asked), len(second.asked), len(third.asked)) == (1, 1, 0)


async def test_chain_allow_stops_the_chain() -> None:
    first = always(allow("first"))
    second = always(deny("no", "second"))
    assert (await Chain([first, second]).decide(bash("x"))).decider == "first"
    assert second.asked == []


async def test_chain_all_abstaining_denies_naming_the_reasons() -> None:
    chain = Chain(
        [always(abstain("a", "no rule covers X")), always(abstain("b")), always(abstain("c", "?"))]
    )
    decision = await chain.decide(request("X", {}))
    assert decision.outcome is DecisionOutcome.DENY
    assert decision.decider == "chain"
    assert decision.message == (
        "Permission denied: no decider allowed this tool call (no rule covers X; ?)"
    )


def test_an_empty_chain_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one"):
        Chain([])


# ---------------------------------------------------------------------------- GuardedDecider


class Exploding:
    name = "exploding"

    async def decide(self, request: PermissionRequest) -> Decision:
        raise KeyError("the rules file is gone")


class Sleeping:
    name = "sleeping"

    async def decide(self, request: PermissionRequest) -> Decision:
        await trio.sleep_forever()
        raise AssertionError("unreachable")


async def test_guarded_passes_a_decision_through_naming_its_decider() -> None:
    guarded = GuardedDecider(always(allow()), timeout_s=1)
    assert (await guarded.decide(bash("x"))).decider == "scripted"
    named = GuardedDecider(always(allow("inner")), timeout_s=1, name="outer")
    assert (await named.decide(bash("x"))).decider == "inner"  # already named: kept


async def test_guarded_turns_an_exception_into_unavailable() -> None:
    decision = await GuardedDecider(Exploding(), timeout_s=5).decide(bash("x"))
    assert decision.outcome is DecisionOutcome.UNAVAILABLE
    assert decision.decider == "exploding"
    assert decision.message == "decider error: KeyError('the rules file is gone')"
    assert not decision.allowed


async def test_guarded_turns_a_slow_decider_into_unavailable(
    autojump_clock: trio.testing.MockClock,
) -> None:
    started = trio.current_time()
    decision = await GuardedDecider(Sleeping(), timeout_s=12).decide(bash("x"))
    assert trio.current_time() - started == pytest.approx(12)
    assert decision.outcome is DecisionOutcome.UNAVAILABLE
    assert decision.message == "decider timed out after 12s"
    assert decision.decider == "sleeping"


async def test_guarded_lets_a_cancellation_through(autojump_clock: trio.testing.MockClock) -> None:
    result: Decision | None = None
    with trio.move_on_after(3) as outer:
        result = await GuardedDecider(Sleeping(), timeout_s=10).decide(bash("x"))
    assert outer.cancelled_caught
    assert result is None
    assert trio.current_time() == pytest.approx(3)


# ---------------------------------------------------------------------------- build_decider


def settings_for(name: str, **kwargs: Any) -> PermissionSettings:
    return PermissionSettings(decider=name, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "inner_type"),
    [("allow_all", AllowAll), ("deny_all", DenyAll), ("rules", RulesDecider)],
)
async def test_build_decider_simple(name: str, inner_type: type[Decider]) -> None:
    decider = build_decider(settings_for(name), environ={})
    assert isinstance(decider, SessionCache)
    assert isinstance(decider.inner, inner_type)
    if isinstance(decider.inner, RulesDecider):
        assert decider.inner.unknown is None  # alone: allowed when confined, else denied
        assert (await decider.decide(bash("ls"))).allowed
        assert not (await decider.decide(bash("rm -rf /"))).allowed
        assert not (await decider.decide(bash("npm install"))).allowed
        assert (await decider.decide(attrs.evolve(bash("npm install"), confined=True))).allowed


async def test_build_decider_llm_override() -> None:
    llm = always(allow("llm"))
    decider = build_decider(settings_for("llm"), environ={}, llm=llm)
    assert isinstance(decider, SessionCache)
    assert decider.inner is llm


def test_build_decider_llm_without_its_key_names_the_variable() -> None:
    settings = settings_for("llm", llm=LlmSettings(api_key_env="NEXO_TEST_KEY"))
    with pytest.raises(ValueError, match="NEXO_TEST_KEY"):
        build_decider(settings, environ={"ANTHROPIC_API_KEY": "not this one"})
    with pytest.raises(ValueError, match="NEXO_TEST_KEY"):
        build_decider(settings, environ={"NEXO_TEST_KEY": "  "})


async def test_build_decider_llm_from_settings() -> None:
    from nexo_trio.gate.llm import LlmDecider

    decider = build_decider(settings_for("llm"), environ={"ANTHROPIC_API_KEY": "k"})
    assert isinstance(decider, SessionCache)
    assert isinstance(decider.inner, LlmDecider)
    await decider.inner.aclose()


async def test_build_decider_chain_rules_abstain_then_the_llm_decides() -> None:
    llm = Scripted(lambda r: deny("the LLM says no", "llm"), name="llm")
    decider = build_decider(settings_for("chain", chain=("rules", "llm")), environ={}, llm=llm)
    assert isinstance(decider, SessionCache)
    chain = decider.inner
    assert isinstance(chain, Chain)
    rules = chain.deciders[0]
    assert isinstance(rules, RulesDecider)
    assert rules.unknown == "defer"
    # An effect the rules cannot read: the LLM decides.
    assert (await decider.decide(bash("npm install"))).message == "the LLM says no"
    assert len(llm.asked) == 1
    # Read-only, inside the workspace, or destructive: the rules decide alone.
    assert (await decider.decide(bash("touch a.txt"))).allowed
    assert (await decider.decide(request("Read", {"file_path": "a"}))).allowed
    rm = await decider.decide(bash("rm -rf /"))
    assert rm.outcome is DecisionOutcome.DENY
    assert rm.decider == "rules"
    assert len(llm.asked) == 1


async def test_build_decider_chain_of_rules_alone_denies_what_it_does_not_cover() -> None:
    decider = build_decider(settings_for("chain", chain=("rules",)), environ={})
    decision = await decider.decide(attrs.evolve(bash("npm install"), confined=True))
    assert decision.outcome is DecisionOutcome.DENY
    assert decision.message is not None
    assert "npm installs or runs packages' code" in decision.message


@pytest.mark.parametrize("unknown", ["allow", "deny", "defer"])
async def test_build_decider_passes_the_unknown_policy(unknown: UnknownPolicy) -> None:
    decider = build_decider(settings_for("rules", unknown=unknown), environ={})
    assert isinstance(decider, SessionCache)
    decision = await decider.decide(attrs.evolve(bash("npm install"), confined=True))
    assert decision.allowed is (unknown == "allow")
    if unknown == "defer":
        # Alone, deferring denies like a chain that ends abstaining.
        assert isinstance(decider.inner, Chain)
        assert decision.outcome is DecisionOutcome.DENY
        assert decision.message is not None
        assert decision.message.startswith("Permission denied: no decider allowed")
    in_chain = build_decider(
        settings_for("chain", chain=("rules", "deny_all"), unknown=unknown), environ={}
    )
    assert isinstance(in_chain, SessionCache)
    assert isinstance(in_chain.inner, Chain)
    rules = in_chain.inner.deciders[0]
    assert isinstance(rules, RulesDecider)
    assert rules.unknown == unknown


def test_build_decider_chain_in_a_chain_is_refused() -> None:
    with pytest.raises(ValueError, match="chain"):
        build_decider(settings_for("chain", chain=("rules", "chain")), environ={})


def test_every_decider_name_builds() -> None:
    for name in DECIDER_NAMES:
        decider = build_decider(
            settings_for(name, chain=("deny_all",)), environ={}, llm=always(allow("llm"))
        )
        assert isinstance(decider, SessionCache)


# ---------------------------------------------------------------------------- behavior


ORIGINAL = {"command": "ls", "description": "list"}


def test_allow_without_updated_input_echoes_the_original() -> None:
    for outcome in (DecisionOutcome.ALLOW_ONCE, DecisionOutcome.ALLOW_SESSION):
        assert behavior(Decision(outcome), ORIGINAL) == {
            "behavior": "allow",
            "updatedInput": ORIGINAL,
        }


def test_allow_with_updated_input_sends_it() -> None:
    assert behavior(allow(updated_input={"command": "ls -a"}), ORIGINAL) == {
        "behavior": "allow",
        "updatedInput": {"command": "ls -a"},
    }
    # An empty rewritten input is still a rewrite, not "keep the original".
    assert behavior(allow(updated_input={}), ORIGINAL)["updatedInput"] == {}


@pytest.mark.parametrize(
    ("decision", "message"),
    [
        (deny("Nope: too risky"), "Nope: too risky"),
        (Decision(DecisionOutcome.DENY), "Permission denied"),
        (Decision(DecisionOutcome.DENY, message=""), "Permission denied"),
        (Decision(DecisionOutcome.DENY, message=" \n "), "Permission denied"),
        (
            Decision(DecisionOutcome.UNAVAILABLE),
            "Permission denied: the permission decider is unavailable",
        ),
        (
            unavailable("timed out after 5s"),
            "Permission denied: the permission decider is unavailable (timed out after 5s)",
        ),
        (
            Decision(DecisionOutcome.CANCELLED, message="ignored"),
            "Permission denied: the goal was cancelled",
        ),
        (
            abstain("rules", "no rule covers X"),
            "Permission denied: no rule or decider allows this tool call",
        ),
    ],
)
def test_everything_else_denies_with_a_reason(decision: Decision, message: str) -> None:
    assert deny_message(decision) == message
    assert behavior(decision, ORIGINAL) == {"behavior": "deny", "message": message}
    assert not decision.allowed


json_scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
json_objects = st.dictionaries(st.text(max_size=10), json_values, max_size=5)
decisions = st.builds(
    Decision,
    outcome=st.sampled_from(DecisionOutcome),
    message=st.none() | st.text(max_size=40),
    updated_input=st.none() | json_objects,
    scope=st.none() | st.sampled_from(["tool", "tool+input"]),
    decider=st.text(max_size=10),
    rationale=st.none() | st.text(max_size=20),
)


@settings(max_examples=200, deadline=None)
@given(decision=decisions, tool_input=json_objects)
@example(decision=Decision(DecisionOutcome.DENY, message=" \n"), tool_input={})
@example(decision=Decision(DecisionOutcome.UNAVAILABLE), tool_input={})
def test_behavior_allows_iff_the_decision_allows(
    decision: Decision, tool_input: dict[str, Any]
) -> None:
    answer = behavior(decision, tool_input)
    json.dumps(answer)  # what the CLI reads is always JSON
    assert (answer["behavior"] == "allow") is decision.allowed
    assert decision.allowed is (
        decision.outcome in (DecisionOutcome.ALLOW_ONCE, DecisionOutcome.ALLOW_SESSION)
    )
    if decision.allowed:
        assert set(answer) == {"behavior", "updatedInput"}
        expected = tool_input if decision.updated_input is None else decision.updated_input
        assert answer["updatedInput"] == expected
    else:
        assert set(answer) == {"behavior", "message"}
        assert answer["behavior"] == "deny"
        assert isinstance(answer["message"], str)
        assert answer["message"].strip()


@settings(max_examples=100, deadline=None)
@given(tool=st.text(min_size=1, max_size=10), first=json_objects, second=json_objects)
def test_input_digest_is_canonical(
    tool: str, first: dict[str, Any], second: dict[str, Any]
) -> None:
    reordered = dict(reversed(list(first.items())))
    assert input_digest(tool, first) == input_digest(tool, reordered)
    if first != second:
        assert input_digest(tool, first) != input_digest(tool, second)


@pytest.mark.parametrize(
    "command",
    [
        "echo '{{}}' > {state}/gate/g1.mcp.json",
        "cp evil.json {state}/gate/g1.mcp.json",
        "cd {scratch} && echo x > ../../gate/g1.mcp.json",
        "ln -sf /dev/null {state}/nexo.db",
    ],
)
async def test_rules_never_let_a_turn_write_the_state_dir_beside_its_scratch(
    tmp_path: Path, command: str
) -> None:
    # Issue 10, defect 3: with the state dir under /tmp, a redirect into the goal's MCP
    # config was allowed. The scratch dir is inside the state dir; nothing else of it is
    # the turn's.
    state, ws = tmp_path / "state", tmp_path / "ws"
    scratch = state / "scratch" / "g1"
    for d in (ws, scratch, state / "gate"):
        d.mkdir(parents=True)
    req = attrs.evolve(request(workspace=str(ws)), scratch=str(scratch))
    call = attrs.evolve(req, input={"command": command.format(state=state, scratch=scratch)})
    decision = await RulesDecider().decide(call)
    assert not decision.allowed, decision
