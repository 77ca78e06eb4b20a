"""Measured per-query costs for cost-aware routing (Avengers-Pro, arXiv 2508.12631).

The cost of a model on a query is the mean number of tokens it generated over its samples of that query times
its price per token (the pool config's ``price_per_million_tokens``, or ``--price MODEL=USD_PER_MTOK``).
``avengers calibrate`` and ``avengers evaluate`` write it as the labels' ``costs`` (:mod:`avengers.core.labels`);
``avengers fit`` averages it per cluster and the router trades quality against it with ``alpha``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

TOKENS_PER_PRICE = 1_000_000
"""Prices are per million generated tokens."""


class PricesError(ValueError):
    """Prices that cannot give every measured model a cost."""


def query_cost(tokens: Sequence[int], price_per_million_tokens: float) -> float:
    """Mean generated tokens of ``tokens`` (one count per sample) x the price of one token (0 without samples)."""
    if not tokens:
        return 0.0
    return sum(tokens) / len(tokens) * price_per_million_tokens / TOKENS_PER_PRICE


def prices_for(models: Sequence[str], prices: Mapping[str, float]) -> dict[str, float] | None:
    """The price of each of ``models``, or None when no model has one (no costs are measured).

    Raises PricesError when some models have a price and others have none: their costs could not be compared.
    """
    missing = [m for m in models if m not in prices]
    if len(missing) == len(models):
        return None
    if missing:
        raise PricesError(
            f"models {missing} have no price (price_per_million_tokens in the pool config, or --price "
            f"MODEL=USD_PER_MTOK) while {sorted(set(models) - set(missing))} have one; price every model or none"
        )
    return {m: float(prices[m]) for m in models}


def describe_prices(prices: Mapping[str, float] | None) -> str:
    """One line for the command's output: which prices the costs come from, or that there are none."""
    if not prices:
        return ("costs: none (no model has a price; set price_per_million_tokens in the pool config or give "
                "--price MODEL=USD_PER_MTOK)")
    listed = ", ".join(f"{m} {p:g}" for m, p in prices.items())
    return f"costs: mean generated tokens x price per million tokens ({listed})"
