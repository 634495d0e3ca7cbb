"""Acceptance verdicts: what the checks of a goal found (the checking itself is I/O)."""

from __future__ import annotations

import attrs

EVIDENCE_CHARS = 2000
"""How much output a failure quotes (its tail)."""


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
        """The failed required checks, in criterion order."""
        return tuple(
            Failure(index=r.index, label=r.label, message=r.message, evidence=r.evidence)
            for r in sorted(self.results, key=lambda r: r.index)
            if not r.passed and r.required
        )


def tail(text: str, limit: int = EVIDENCE_CHARS) -> str:
    """The last ``limit`` characters of ``text``, marked when cut."""
    if len(text) <= limit:
        return text
    return "…" + text[-limit:]
