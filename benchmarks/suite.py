"""The benchmark suite's common parts: interleaved rounds, medians and spread, and the rows of
the one table the suite prints.

Every benchmark measures its variants (ours, the anchor ``claude-agent-sdk`` where it does the
same job, the floor) in the same run, round by round, the order of the variants rotating each
round, so that a noisy neighbour on a shared machine hits every variant alike. Figures are
medians; the spread is the lowest and highest sample. Ratios, not absolute numbers, are what
carries from one machine to another.
"""

from __future__ import annotations

import statistics
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Literal

import attrs

Better = Literal["higher", "lower"]


@attrs.frozen
class Stat:
    """The median of some samples and their spread (lowest, highest)."""

    median: float
    low: float
    high: float
    samples: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Stat:
        """The median and spread of ``values`` (at least one)."""
        if not values:
            raise ValueError("no samples")
        return cls(
            median=statistics.median(values),
            low=min(values),
            high=max(values),
            samples=len(values),
        )

    def scaled(self, factor: float) -> Stat:
        """The same statistic in another unit (``factor`` may invert the order)."""
        a, b = self.low * factor, self.high * factor
        return Stat(self.median * factor, min(a, b), max(a, b), self.samples)

    def per(self, amount: float) -> Stat:
        """``amount`` divided by each figure: seconds per run into runs (or items) per second."""
        a, b = amount / self.low, amount / self.high
        return Stat(amount / self.median, min(a, b), max(a, b), self.samples)


@attrs.frozen
class Row:
    """One line of the suite's table.

    ``ours``, ``anchor`` (claude-agent-sdk) and ``floor`` are in ``unit``; ``better`` says
    which way is good. ``target`` says what the issue asks in words, and ``met`` whether this
    run meets it (None when the row has no target).
    """

    group: str
    figure: str
    unit: str
    ours: Stat
    anchor: Stat | None = None
    floor: Stat | None = None
    better: Better = "higher"
    target: str = ""
    met: bool | None = None
    note: str = ""


def interleave(variants: Mapping[str, Callable[[], float]], rounds: int) -> dict[str, list[float]]:
    """Run each variant once per round, ``rounds`` times, rotating their order; each call
    returns its one measured value. The samples, by variant."""
    names = list(variants)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(rounds):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            samples[name].append(variants[name]())
    return samples


async def interleave_async(
    variants: Mapping[str, Callable[[], Awaitable[float]]], rounds: int
) -> dict[str, list[float]]:
    """:func:`interleave` for variants that run in the caller's trio loop."""
    names = list(variants)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(rounds):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            samples[name].append(await variants[name]())
    return samples


def _number(value: float) -> str:
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def _cell(stat: Stat | None) -> str:
    if stat is None:
        return "—"
    if stat.samples == 1 or stat.low == stat.high:
        return _number(stat.median)
    return f"{_number(stat.median)} ({_number(stat.low)}-{_number(stat.high)})"


def _ratio(ours: Stat, other: Stat | None) -> str:
    if other is None or other.median == 0:
        return "—"
    return f"{ours.median / other.median:.2f}x"


def markdown(rows: Sequence[Row]) -> str:
    """The table: one row per figure, ours beside the anchor and the floor, and the ratios
    (ours divided by theirs, in the row's unit: read them with its "better" column)."""
    header = (
        "| group | figure | unit | better | nexo-trio | claude-agent-sdk | floor "
        "| ours/sdk | ours/floor | target | met |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for row in rows:
        met = "—" if row.met is None else ("yes" if row.met else "**no**")
        figure = f"{row.figure} ({row.note})" if row.note else row.figure
        lines.append(
            f"| {row.group} | {figure} | {row.unit} | {row.better} | {_cell(row.ours)} "
            f"| {_cell(row.anchor)} | {_cell(row.floor)} | {_ratio(row.ours, row.anchor)} "
            f"| {_ratio(row.ours, row.floor)} | {row.target or '—'} | {met} |"
        )
    return header + "\n".join(lines) + "\n"
