"""The stdio control protocol's rules (core/stdio_control.py): replayed against the recorded
real-CLI conversation, and as properties of any sequence of requests and answers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nexo_trio.core.permission import allow, deny, unavailable
from nexo_trio.core.stdio_control import ENDING, Reply, StdioControl, ToolAsk

RECORDING = (
    Path(__file__).parent.parent
    / "fixtures"
    / "claude-cli-2.1.332"
    / "stdio-control"
    / "multiturn_allow_setmode.frames.jsonl"
)


def recorded() -> list[tuple[str, dict[str, Any]]]:
    frames = []
    for line in RECORDING.read_text().splitlines():
        entry = json.loads(line)
        if entry["dir"] in ("in", "out") and isinstance(entry["msg"], dict):
            frames.append((entry["dir"], entry["msg"]))
    return frames


def ask_of(control: StdioControl, frame: dict[str, Any]) -> ToolAsk | Reply | None:
    return control.on_request(
        frame.get("request_id"), frame["request"].get("subtype"), frame["request"]
    )


def test_the_opening_is_what_the_sdk_wrote_to_the_real_cli() -> None:
    frames = recorded()
    control = StdioControl("Create the file fake_out.txt")
    init, prompt = control.opening()
    sent_init, sent_prompt = frames[0][1], frames[1][1]
    assert init["type"] == sent_init["type"] == "control_request"
    assert init["request"] == sent_init["request"] == {"subtype": "initialize", "hooks": None}
    assert prompt == sent_prompt


def test_the_recorded_asks_get_the_answers_the_real_cli_accepted() -> None:
    """Each can_use_tool of the recording, allowed, is answered with exactly the response
    that made the real CLI run the tool; the CLI's response to initialize is matched."""
    control = StdioControl("Create the file fake_out.txt")
    [init, _] = control.opening()
    frames = recorded()
    answers = []
    for index, (direction, frame) in enumerate(frames):
        if direction == "out" and frame.get("type") == "control_request":
            ask = ask_of(control, frame)
            assert isinstance(ask, ToolAsk)
            assert ask.tool_name == "Bash"
            assert ask.blocked_path == "/home/dev/project/fake_out.txt"
            assert ask.suggestions  # the CLI's suggested permission updates are kept
            answers.append((control.answer(ask, allow("rules")), frames[index + 1][1]))
        if direction == "out" and frame.get("type") == "control_response":
            response = frame["response"]
            if response["request_id"] == "req_init":  # the SDK's id for it; ours differs
                response = {**response, "request_id": init["request_id"]}
                own = control.on_response(response)
                assert (own.subtype, own.error) == ("initialize", None)
                assert "commands" in own.response
    assert len(answers) == 2
    for ours, theirs in answers:
        assert ours == theirs
    assert control.waiting == []


def test_a_deny_unknown_and_malformed_requests_are_answered_at_once() -> None:
    control = StdioControl("p")
    ask = control.on_request("r1", "can_use_tool", {"tool_name": "Bash", "input": {"c": 1}})
    assert isinstance(ask, ToolAsk)
    denied = control.answer(ask, deny("no rm here", "rules"))
    assert denied["response"]["response"] == {"behavior": "deny", "message": "no rm here"}
    blank = control.on_request("r2", "can_use_tool", {"tool_name": "Bash", "input": {}})
    assert isinstance(blank, ToolAsk)
    out = control.answer(blank, unavailable("timed out"))
    message = out["response"]["response"]["message"]
    assert message.startswith("Permission denied: the permission decider is unavailable")
    unknown = control.on_request("r3", "hook_callback", {"callback_id": "x"})
    assert isinstance(unknown, Reply)
    assert unknown.message["response"] == {
        "subtype": "error",
        "request_id": "r3",
        "error": "unsupported control request 'hook_callback'",
    }
    malformed: tuple[dict[str, Any], ...] = ({"input": {}}, {"tool_name": "Bash", "input": "x"})
    for request in malformed:
        bad = control.on_request("r4" + str(len(request)), "can_use_tool", request)
        assert isinstance(bad, Reply)
        assert bad.message["response"]["response"]["behavior"] == "deny"
    assert control.on_request(None, "can_use_tool", {"tool_name": "Bash", "input": {}}) is None
    # A repeat of an answered request is not answered twice.
    assert control.on_request("r1", "can_use_tool", {"tool_name": "Bash", "input": {}}) is None


def test_the_end_denies_new_asks_abandons_waiting_ones_and_stdin_closes() -> None:
    control = StdioControl("p")
    ask = control.on_request("r1", "can_use_tool", {"tool_name": "Bash", "input": {}})
    assert isinstance(ask, ToolAsk)
    assert not control.may_close()
    assert control.on_result() == [ask]  # the query that asked is over: abandoned
    assert control.may_close()
    assert control.waiting == []
    late = control.on_request("r2", "can_use_tool", {"tool_name": "Bash", "input": {}})
    assert isinstance(late, Reply)
    assert late.message["response"]["response"] == {"behavior": "deny", "message": ENDING}
    with pytest.raises(ValueError, match="not waiting"):
        control.answer(ask, allow())  # never answered after all
    assert control.on_request("r1", "can_use_tool", {"tool_name": "Bash", "input": {}}) is None


def test_an_interrupt_is_ours_and_its_refusal_is_reported() -> None:
    control = StdioControl("p")
    request = control.interrupt()
    assert request["request"] == {"subtype": "interrupt"}
    assert control.ending
    own = control.on_response(
        {"subtype": "error", "request_id": request["request_id"], "error": "no turn running"}
    )
    assert (own.subtype, own.error) == ("interrupt", "no turn running")
    stranger = control.on_response({"subtype": "success", "request_id": "nope"})
    assert stranger.subtype is None


requests = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "c", "d", None]),
        st.sampled_from(["can_use_tool", "can_use_tool", "hook_callback", None]),
        st.sampled_from([{"tool_name": "Bash", "input": {"x": 1}}, {"tool_name": "Bash"}, {}]),
        st.sampled_from(["allow", "deny", "later"]),
    ),
    max_size=12,
)


@settings(max_examples=300)
@given(requests, st.integers(min_value=0, max_value=12))
def test_every_answerable_request_is_answered_exactly_once(
    sequence: list[tuple[str | None, str | None, dict[str, Any], str]], end_at: int
) -> None:
    control = StdioControl("p")
    answered: list[str] = []
    abandoned: list[str] = []
    later: list[ToolAsk] = []
    for index, (request_id, subtype, body, choice) in enumerate(sequence):
        if index == end_at:
            gone = control.on_result()
            abandoned += [ask.request_id for ask in gone]
            later = [ask for ask in later if ask not in gone]
        got = control.on_request(request_id, subtype, body)
        if isinstance(got, Reply):
            assert got.request_id is not None
            answered.append(got.request_id)
        elif isinstance(got, ToolAsk):
            if choice == "later":
                later.append(got)
            else:
                decision = allow() if choice == "allow" else deny("no")
                answered.append(control.answer(got, decision)["response"]["request_id"])
    for ask in later:
        answered.append(control.answer(ask, deny("late"))["response"]["request_id"])
    assert len(answered) == len(set(answered))  # never twice
    assert not set(answered) & set(abandoned)  # an abandoned ask is never answered
    ids = {request_id for request_id, *_ in sequence if request_id is not None}
    assert set(answered) | set(abandoned) == ids  # every one that has an id is settled
    assert control.waiting == []


def test_an_allow_echoes_the_input_exactly_and_nan_is_refused() -> None:
    import pytest

    from nexo_trio.wire.stdio_frames import encode_message

    control = StdioControl("p")
    huge = {"n": 2**70, "f": 0.1, "s": "\u2603"}
    ask = control.on_request("r1", "can_use_tool", {"tool_name": "Bash", "input": huge})
    assert isinstance(ask, ToolAsk)
    line = encode_message(control.answer(ask, allow()))
    assert json.loads(line)["response"]["response"]["updatedInput"] == huge
    assert line.endswith(b"\n")
    assert line.count(b"\n") == 1
    with pytest.raises(ValueError, match="JSON compliant"):
        encode_message({"x": float("nan")})


def test_an_ask_the_cli_withdraws_is_abandoned() -> None:
    control = StdioControl("p")
    ask = control.on_request("r1", "can_use_tool", {"tool_name": "Bash", "input": {}})
    assert isinstance(ask, ToolAsk)
    assert control.on_cancel("r1") == ask
    assert control.waiting == []
    assert control.on_cancel("r1") is None
    assert control.on_cancel(7) is None
    with pytest.raises(ValueError, match="not waiting"):
        control.answer(ask, allow())
    assert control.on_request("r1", "can_use_tool", {"tool_name": "Bash", "input": {}}) is None


def test_an_unreadable_request_is_denied_by_its_id() -> None:
    """A control request line that is not JSON (a NaN in its input, say) is denied by the
    id read from its start, once; other lines, and ones without a readable id, are not."""
    control = StdioControl("p")
    line = '{"type": "control_request", "request_id": "r\\"1", "request": {"input": NaN'
    reply = control.on_unreadable(line)
    assert isinstance(reply, Reply)
    assert reply.request_id == 'r"1'
    assert reply.message["response"]["response"]["behavior"] == "deny"
    assert control.on_unreadable(line) is None  # answered once
    assert control.on_unreadable('{"type": "assistant", "request_id": "r2"') is None
    assert control.on_unreadable('{"type": "control_request", "request') is None
    ask = control.on_request("r3", "can_use_tool", {"tool_name": "Bash", "input": {}})
    assert isinstance(ask, ToolAsk)
    assert control.on_unreadable('{"type":"control_request","request_id":"r3"') is None


def test_an_oversized_request_is_denied_with_why_and_its_tool() -> None:
    """A request past the line cap is read from its start alone: denied by its id, saying
    why, with the tool's name when the start has it (for the record)."""
    control = StdioControl("p")
    start = (
        '{"type": "control_request", "request_id": "r9", "request": '
        '{"subtype": "can_use_tool", "tool_name": "Write", "input": {"content": "xxxx'
    )
    reply = control.on_unreadable(start, "control request too large (70000000 bytes)")
    assert isinstance(reply, Reply)
    assert (reply.request_id, reply.tool_name) == ("r9", "Write")
    assert reply.why == "control request too large (70000000 bytes)"
    assert reply.message["response"]["response"] == {
        "behavior": "deny",
        "message": "Permission denied: control request too large (70000000 bytes)",
    }
