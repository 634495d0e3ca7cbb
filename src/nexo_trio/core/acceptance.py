"""Acceptance verdicts: what the checks of a goal found (the checking itself is I/O)."""

from __future__ import annotations

import json
import re

import attrs

EVIDENCE_CHARS = 2000
"""How much output a failure quotes (its tail)."""
NOT_RUN = "not run: an earlier required check failed"
"""The message of a check a sequential acceptance run skipped."""


@attrs.frozen
class CheckResult:
    """The result of one criterion."""

    index: int
    label: str
    passed: bool
    required: bool = True
    message: str = ""
    evidence: str = ""
    duration_s: float = 0.0
    skipped: bool = False
    """Not run (``passed`` is false): a sequential run stopped at an earlier required
    failure. A skipped check is no evidence: it is left out of :attr:`Verdict.failures`."""


@attrs.frozen
class Failure:
    """A failed required check, as the next prompt shows it."""

    index: int
    label: str
    message: str
    evidence: str = ""


@attrs.frozen
class Verdict:
    """All checks of one acceptance run. ``met`` when every required check passed."""

    results: tuple[CheckResult, ...] = ()

    @property
    def met(self) -> bool:
        """Every required check passed."""
        return all(r.passed or not r.required for r in self.results)

    @property
    def failures(self) -> tuple[Failure, ...]:
        """The failed required checks that ran, in criterion order (skipped ones are not
        failures: they prove nothing, and the next prompt names the real failure first)."""
        return tuple(
            Failure(index=r.index, label=r.label, message=r.message, evidence=r.evidence)
            for r in sorted(self.results, key=lambda r: r.index)
            if not r.passed and r.required and not r.skipped
        )

    @property
    def skipped(self) -> tuple[CheckResult, ...]:
        """The checks that were not run (a sequential run stopped before them)."""
        return tuple(r for r in self.results if r.skipped)


def tail(text: str, limit: int = EVIDENCE_CHARS) -> str:
    """The last ``limit`` characters of ``text``, marked when cut."""
    if len(text) <= limit:
        return text
    return "…" + text[-limit:]


JUDGE_ANSWER_SHAPE = '{"passed": true | false, "reasoning": "<why>"}'
"""The one answer an ``llm_judge`` check accepts from its judge."""
_WHOLE_FENCE = re.compile(r"```[A-Za-z0-9_-]*[ \t]*\n?(.*?)\n?[ \t]*```", re.DOTALL)


@attrs.frozen
class Judgement:
    """An LLM judge's verdict on a rubric."""

    passed: bool
    reasoning: str


def parse_judgement(answer: str) -> Judgement | str:
    """The judge's verdict, or what is wrong with its answer.

    Strict: the answer must be one JSON object (alone, or alone in one fenced block) with
    ``passed`` a boolean and ``reasoning`` a string; other keys are ignored. No verdict is
    read from prose, so a judge quoting an example answer cannot pass a check by accident.
    """
    text = answer.strip()
    fenced = _WHOLE_FENCE.fullmatch(text)
    if fenced is not None:
        text = fenced.group(1).strip()
    if not text:
        return "the answer is empty"
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: nested too deeply
        return "the answer is not JSON"
    if not isinstance(value, dict):
        return f"the answer is JSON but not an object ({type(value).__name__})"
    passed, reasoning = value.get("passed"), value.get("reasoning")
    if not isinstance(passed, bool):
        return f'"passed" must be true or false, got {json.dumps(passed)[:80]}'
    if not isinstance(reasoning, str):
        return f'"reasoning" must be a string, got {json.dumps(reasoning)[:80]}'
    return Judgement(passed=passed, reasoning=reasoning.strip())
