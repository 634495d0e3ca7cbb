"""What a request costs, estimated from its token counts: the price table of Claude's models.

A turn's cost is the CLI's own figure, from its ``result`` frame. Until that frame comes (and
for a turn that never prints one: killed, timed out, crashed), the cost is estimated here,
message by message, from the usage each ``assistant`` frame reports (see
:func:`nexo_trio.core.turn.turn_spend`); the result frame's figure replaces the estimate.

Prices are US dollars per million tokens, per model family and version, for the four counts
the API reports: base input, output, cache writes and cache reads (hits and refreshes).
Source: Anthropic's published price list, https://platform.claude.com/docs/en/about-claude/pricing
("Model pricing"), and the models' overview pages, as of 2026-12-01. Cache writes are priced
at the 5-minute rate (the CLI's default; the usage it reports does not say which was used).
Models priced by prompt length (Haiku 5.5 above 100k prompt tokens, Sonnet 4 and 4.5 above
200k) charge a request whose prompt (input plus both cache counts) is over the threshold the
higher rates on all its tokens, output included.

A model the table does not know (a newer one, a proxy's name) is priced at
:data:`DEFAULT_PRICE`, the highest rate of the table on every count: an estimate may then be
too high, never too low, so a cost budget still holds. Update the table when the price list
changes; the result frame's figure is what the ledger keeps whenever the CLI prints one.
"""

from __future__ import annotations

import re

import attrs

from nexo_trio.core.events import Usage

PER_TOKEN = 1e-6
"""Dollars per token for a price of one dollar per million tokens."""


@attrs.frozen
class Rates:
    """Dollars per million tokens for each of the four counts."""

    input: float
    output: float
    cache_write: float
    cache_read: float

    def cost(self, usage: Usage) -> float:
        """What ``usage`` costs at these rates, in dollars."""
        return PER_TOKEN * (
            usage.input_tokens * self.input
            + usage.output_tokens * self.output
            + usage.cache_creation_input_tokens * self.cache_write
            + usage.cache_read_input_tokens * self.cache_read
        )


@attrs.frozen
class Price:
    """A model's rates; ``long``: the rates of a request whose prompt is over
    ``long_above`` tokens, when the model has a second band."""

    rates: Rates
    long: Rates | None = None
    long_above: int = 0

    def cost(self, usage: Usage) -> float:
        """What one request with ``usage`` costs, in dollars."""
        if self.long is not None and usage.context_tokens > self.long_above:
            return self.long.cost(usage)
        return self.rates.cost(usage)


def _price(
    input: float,
    output: float,
    cache_write: float,
    cache_read: float,
    *,
    long: Rates | None = None,
    above: int = 0,
) -> Price:
    return Price(Rates(input, output, cache_write, cache_read), long, above)


_FABLE_5_1 = _price(10.0, 50.0, 12.5, 0.25)
_FABLE_5 = _price(10.0, 50.0, 12.5, 1.0)
_OPUS_5_5 = _price(4.0, 20.0, 5.0, 0.20)
_OPUS_4_5 = _price(5.0, 25.0, 6.25, 0.50)
_OPUS_4 = _price(15.0, 75.0, 18.75, 1.50)
_SONNET_5_5 = _price(2.0, 10.0, 2.5, 0.10)
_SONNET_5 = _price(2.0, 10.0, 2.5, 0.20)
_SONNET_4 = _price(3.0, 15.0, 3.75, 0.30, long=Rates(6.0, 22.5, 7.5, 0.60), above=200_000)
_SONNET_3 = _price(3.0, 15.0, 3.75, 0.30)
_HAIKU_5_5 = _price(0.10, 0.50, 0.125, 0.01, long=Rates(0.50, 2.50, 0.625, 0.05), above=100_000)
_HAIKU_4_5 = _price(1.0, 5.0, 1.25, 0.10)
_HAIKU_3_5 = _price(0.80, 4.0, 1.0, 0.08)
_HAIKU_3 = _price(0.25, 1.25, 0.30, 0.03)

PRICES: dict[tuple[str, int, int], Price] = {
    ("fable", 5, 1): _FABLE_5_1,
    ("mythos", 5, 1): _FABLE_5_1,
    ("fable", 5, 0): _FABLE_5,
    ("mythos", 5, 0): _FABLE_5,
    ("opus", 5, 5): _OPUS_5_5,
    ("opus", 5, 0): _OPUS_4_5,
    ("opus", 4, 8): _OPUS_4_5,
    ("opus", 4, 7): _OPUS_4_5,
    ("opus", 4, 6): _OPUS_4_5,
    ("opus", 4, 5): _OPUS_4_5,
    ("opus", 4, 1): _OPUS_4,
    ("opus", 4, 0): _OPUS_4,
    ("opus", 3, 0): _OPUS_4,
    ("sonnet", 5, 5): _SONNET_5_5,
    ("sonnet", 5, 0): _SONNET_5,
    ("sonnet", 4, 6): _SONNET_3,
    ("sonnet", 4, 5): _SONNET_4,
    ("sonnet", 4, 0): _SONNET_4,
    ("sonnet", 3, 7): _SONNET_3,
    ("sonnet", 3, 5): _SONNET_3,
    ("haiku", 5, 5): _HAIKU_5_5,
    ("haiku", 4, 5): _HAIKU_4_5,
    ("haiku", 3, 5): _HAIKU_3_5,
    ("haiku", 3, 0): _HAIKU_3,
}
"""Prices by (family, major version, minor version), the model ids' own numbering."""


def _highest() -> Price:
    every = [p.rates for p in PRICES.values()] + [p.long for p in PRICES.values() if p.long]
    return Price(
        Rates(
            input=max(r.input for r in every),
            output=max(r.output for r in every),
            cache_write=max(r.cache_write for r in every),
            cache_read=max(r.cache_read for r in every),
        )
    )


DEFAULT_PRICE = _highest()
"""The price of a model the table does not know: the table's highest rate on each count."""

FREE = Price(Rates(0.0, 0.0, 0.0, 0.0))
"""The CLI's ``<synthetic>`` messages (an API error it reports as a message): no request."""

_FAMILIES = "opus|sonnet|haiku|fable|mythos"
# claude-opus-4-5-20251101, claude-sonnet-4-20250514, claude-haiku-5-5[1m], claude-sonnet-5
_NEW_STYLE = re.compile(rf"({_FAMILIES})-(\d{{1,2}})(?:[-.](\d{{1,2}}))?(?![\d])")
# claude-3-5-haiku-20241022, claude-3-opus-20240229, claude-3-7-sonnet-latest
_OLD_STYLE = re.compile(rf"(?<![\d])(\d)(?:[-.](\d))?-({_FAMILIES})")


def model_key(model: str) -> tuple[str, int, int] | None:
    """``(family, major, minor)`` of a model id (Bedrock and Vertex spellings too), or
    ``None`` when the id names no model family we know."""
    name = model.lower()
    found = _NEW_STYLE.search(name)
    if found is not None:
        return found.group(1), int(found.group(2)), int(found.group(3) or 0)
    old = _OLD_STYLE.search(name)
    if old is not None:
        return old.group(3), int(old.group(1)), int(old.group(2) or 0)
    return None


def price_of(model: str | None) -> Price:
    """The price of ``model`` (:data:`DEFAULT_PRICE` when unknown or not named)."""
    if model == "<synthetic>":
        return FREE
    key = model_key(model) if model else None
    if key is None:
        return DEFAULT_PRICE
    return PRICES.get(key, DEFAULT_PRICE)


def estimate_cost(model: str | None, usage: Usage) -> float:
    """What one request of ``model`` with ``usage`` costs, in dollars (an estimate)."""
    return price_of(model).cost(usage)
