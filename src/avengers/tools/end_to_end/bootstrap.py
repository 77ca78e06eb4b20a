"""Paired bootstrap intervals of accuracy differences, averaged over datasets as the headline is.

The test queries of each dataset are resampled with replacement (the same resample for both strategies: the
difference is paired per query); a replicate's difference is the mean over datasets of the per-dataset mean
differences. The 95% interval is the 2.5th and 97.5th percentiles of the replicates (Efron & Tibshirani 1993,
"An Introduction to the Bootstrap", percentile interval). Resamples are drawn from ``seed`` alone, so every
strategy compared with the same baseline sees the same resamples.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

_BLOCK = 1000


def macro_mean(values: np.ndarray, groups: Sequence[np.ndarray]) -> float:
    """Mean over groups (index arrays) of the mean of ``values`` in each group; empty groups are skipped."""
    means = [float(values[g].mean()) for g in groups if len(g)]
    return float(np.mean(means)) if means else float("nan")


def paired_bootstrap(
    difference: np.ndarray, groups: Sequence[np.ndarray], resamples: int = 10_000, seed: int = 0
) -> tuple[float, float, float]:
    """(observed macro difference, 2.5th percentile, 97.5th percentile) of ``difference`` (one value per query,
    e.g. correct_a - correct_b) resampled within each group (dataset)."""
    difference = np.asarray(difference, dtype=float)
    groups = [np.asarray(g) for g in groups if len(g)]
    if not groups:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    replicates = np.zeros(resamples)
    for group in groups:
        values = difference[group]
        for start in range(0, resamples, _BLOCK):
            count = min(_BLOCK, resamples - start)
            picks = rng.integers(0, len(values), size=(count, len(values)))
            replicates[start : start + count] += values[picks].mean(axis=1)
    replicates /= len(groups)
    low, high = np.percentile(replicates, [2.5, 97.5])
    return macro_mean(difference, groups), float(low), float(high)
