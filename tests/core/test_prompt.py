"""Composition of a work turn's prompt: interrupts, wake-up, failures, goal — in that order."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from nexo_trio.core.acceptance import Failure
from nexo_trio.core.prompt import (
    FAILURES_HEADER,
    INTERRUPT_CLOSE,
    INTERRUPT_OPEN,
    WakeUp,
    compose_prompt,
    format_failures,
)

CHEAP = settings(max_examples=200, deadline=None)
FIX_LINE = "Fix these, then say the goal is done again."
WAKE = "[WAKE UP]"

# One line of text: no line breaks of any kind (str.splitlines knows many) and no brackets,
# so a generated text never looks like one of the markers.
line_chars = st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp"), blacklist_characters="[]")
lines = st.text(line_chars, min_size=1, max_size=30).filter(lambda t: t.strip() != "")
# A multi-line message (an operator may paste several lines).
messages = st.lists(lines, min_size=1, max_size=3).map("\n".join)
evidences = st.one_of(
    st.just(""),
    st.lists(st.text(line_chars, max_size=30), min_size=1, max_size=4).map("\n".join),
)
failures = st.builds(
    Failure, index=st.integers(0, 20), label=lines, message=lines, evidence=evidences
)
wake_ups = st.none() | st.builds(WakeUp, slept_ms=st.integers(0, 10**8), reason=st.none() | lines)
descriptions = messages


def failures_block(fs: list[Failure]) -> list[str]:
    """The lines the failures must produce (an oracle written from the spec)."""
    out = [FAILURES_HEADER]
    for number, f in enumerate(fs, start=1):
        out.append(f"{number}. {f.label}: {f.message}")
        if f.evidence.strip():
            out += ["   " + line for line in f.evidence.rstrip().splitlines()]
    out.append(FIX_LINE)
    return out


def test_nothing_but_the_goal_without_extras() -> None:
    assert compose_prompt("Create hello.txt.") == "Goal: Create hello.txt."
    assert compose_prompt("  Create hello.txt.\n") == "Goal: Create hello.txt."


def test_the_full_prompt() -> None:
    prompt = compose_prompt(
        "Create hello.txt containing hi.",
        interrupts=["Use tabs.", "  Also add a README.  "],
        wake_up=WakeUp(slept_ms=1500, reason="CI running"),
        failures=[
            Failure(0, "hello.txt says hi", "exit code 1 (expected 0)", "hello\nworld\n"),
            Failure(2, "README exists", "missing", ""),
        ],
    )
    assert prompt == (
        "[OPERATOR INTERRUPT]\n"
        "Use tabs.\n"
        "\n"
        "Also add a README.\n"
        "[END OPERATOR INTERRUPT]\n"
        "\n"
        "[WAKE UP] You asked to sleep for 1.5s (CI running). "
        "The time has passed: continue toward the goal.\n"
        "\n"
        "You said the goal was done, but these acceptance checks fail:\n"
        "1. hello.txt says hi: exit code 1 (expected 0)\n"
        "   hello\n"
        "   world\n"
        "2. README exists: missing\n"
        "Fix these, then say the goal is done again.\n"
        "\n"
        "Goal: Create hello.txt containing hi."
    )


def test_wake_up_without_a_reason() -> None:
    prompt = compose_prompt("g", wake_up=WakeUp(slept_ms=60_000))
    assert prompt == (
        "[WAKE UP] You asked to sleep for 60s. The time has passed: continue toward the goal."
        "\n\nGoal: g"
    )


def test_failures_are_numbered_from_one_not_by_criterion_index() -> None:
    text = format_failures([Failure(3, "a", "x"), Failure(7, "b", "y")])
    assert text.splitlines() == [FAILURES_HEADER, "1. a: x", "2. b: y", FIX_LINE]


def test_blank_evidence_adds_no_lines() -> None:
    text = format_failures([Failure(0, "a", "x", "  \n\n ")])
    assert text.splitlines() == [FAILURES_HEADER, "1. a: x", FIX_LINE]


@CHEAP
@given(
    descriptions,
    st.lists(messages, max_size=4),
    wake_ups,
    st.lists(failures, max_size=4),
)
def test_every_part_is_where_it_belongs(
    description: str,
    interrupts: list[str],
    wake_up: WakeUp | None,
    fs: list[Failure],
) -> None:
    prompt = compose_prompt(description, interrupts=interrupts, wake_up=wake_up, failures=fs)
    rest = prompt

    # 1. The interrupt block, first, holding every message (stripped) in order.
    if interrupts:
        assert rest.startswith(INTERRUPT_OPEN + "\n")
        assert prompt.count(INTERRUPT_OPEN) == 1
        assert prompt.count(INTERRUPT_CLOSE) == 1
        end = rest.index("\n" + INTERRUPT_CLOSE)
        body = rest[len(INTERRUPT_OPEN) + 1 : end]
        assert body == "\n\n".join(m.strip() for m in interrupts)
        position = 0
        for message in interrupts:
            found = body.index(message.strip(), position)
            position = found + len(message.strip())
        rest = rest[end + 1 + len(INTERRUPT_CLOSE) :]
        rest = rest.removeprefix("\n\n")
    else:
        assert INTERRUPT_OPEN not in prompt
        assert INTERRUPT_CLOSE not in prompt

    # 2. The wake-up tick, next.
    if wake_up is not None:
        assert rest.startswith(WAKE + " You asked to sleep for ")
        tick, rest = rest.split("\n\n", 1)
        assert f"{wake_up.slept_ms / 1000:g}s" in tick
        if wake_up.reason:
            assert f"({wake_up.reason})" in tick
        assert tick.endswith("continue toward the goal.")
    else:
        assert WAKE not in prompt

    # 3. The failures: header, each numbered with label and message, evidence indented.
    if fs:
        expected = failures_block(fs)
        block = "\n".join(expected)
        assert rest.startswith(block + "\n\n")
        assert format_failures(fs) == block
        rest = rest[len(block) + 2 :]
    else:
        assert FAILURES_HEADER not in prompt

    # 4. The goal, last, and nothing after it.
    assert rest == f"Goal: {description.strip()}"


@CHEAP
@given(st.lists(failures, min_size=1, max_size=6))
def test_each_failure_label_appears_on_its_numbered_line(fs: list[Failure]) -> None:
    text_lines = format_failures(fs).splitlines()
    numbered = [line for line in text_lines if not line.startswith("   ")]
    assert numbered[0] == FAILURES_HEADER
    assert numbered[-1] == FIX_LINE
    assert numbered[1:-1] == [f"{n}. {f.label}: {f.message}" for n, f in enumerate(fs, 1)]
    evidence_lines = [line[3:] for line in text_lines if line.startswith("   ")]
    assert evidence_lines == [
        line for f in fs if f.evidence.strip() for line in f.evidence.rstrip().splitlines()
    ]
