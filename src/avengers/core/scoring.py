"""Step 3 of the recipe: score each model on each cluster (The Avengers, arXiv 2505.19797, section 3).

A model's score on a cluster is the mean correctness of its answers on that cluster's calibration
queries. With ``smoothing`` s > 0 the mean is shrunk toward the model's global mean,
(sum + s * global) / (count + s), which steadies small clusters.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class ClusterScores:
    scores: np.ndarray
    """(k, m) score of model j on cluster i (smoothed if requested)."""
    counts: np.ndarray
    """(k,) calibration queries in each cluster."""
    global_scores: np.ndarray
    """(m,) each model's mean over all calibration queries."""

    def ranking(self, cluster: int) -> np.ndarray:
        """Model indices of one cluster, best first (ties: lower global score loses, then index)."""
        return rank_models(self.scores[cluster], self.global_scores)


def rank_models(cluster_scores: np.ndarray, global_scores: np.ndarray) -> np.ndarray:
    """Indices sorted by cluster score, then global score, both descending; then by index."""
    m = len(cluster_scores)
    return np.lexsort((np.arange(m), -global_scores, -cluster_scores))


def rank_positions(table: np.ndarray, global_scores: np.ndarray) -> np.ndarray:
    """(k, m) rank of each model within each cluster (0 = best; ties as :func:`rank_models`)."""
    k, m = table.shape
    rank_of = np.empty((k, m), dtype=np.int64)
    for c in range(k):
        rank_of[c, rank_models(table[c], global_scores)] = np.arange(m)
    return rank_of


def posterior_table(prior: np.ndarray, weight: float, counts: np.ndarray, sums: np.ndarray) -> np.ndarray:
    """(k, m) Beta-posterior means: (weight * prior + sums) / (weight + counts); ``prior`` where no feedback."""
    if weight < 0:
        raise ValueError("the prior weight must be >= 0")
    counts = np.asarray(counts, dtype=np.float64)
    sums = np.asarray(sums, dtype=np.float64)
    denom = weight + counts
    with np.errstate(invalid="ignore", divide="ignore"):
        post = (weight * prior + sums) / denom
    return np.where(denom > 0, post, prior)


def thompson_table(
    rng: np.random.Generator, prior: np.ndarray, weight: float, counts: np.ndarray, sums: np.ndarray
) -> np.ndarray:
    """(k, m) one draw from each Beta(1 + weight * p + sum, 1 + weight * (1 - p) + count - sum) posterior."""
    counts = np.asarray(counts, dtype=np.float64)
    sums = np.asarray(sums, dtype=np.float64)
    a = 1.0 + weight * prior + sums
    b = 1.0 + weight * (1.0 - prior) + np.maximum(counts - sums, 0.0)
    return rng.beta(a, b)


def score_clusters(labels: np.ndarray, correctness: np.ndarray, k: int, smoothing: float = 0.0) -> ClusterScores:
    """Per-cluster per-model mean correctness.

    ``labels``: (n,) cluster of each calibration query; ``correctness``: (n, m) scores in [0, 1].
    An empty cluster gets the global means.
    """
    labels = np.asarray(labels, dtype=np.int64)
    correctness = np.asarray(correctness, dtype=np.float64)
    if correctness.ndim != 2 or len(labels) != len(correctness):
        raise ValueError(f"labels {labels.shape} and correctness {correctness.shape} do not match")
    if smoothing < 0:
        raise ValueError("smoothing must be >= 0")
    m = correctness.shape[1]
    sums = np.zeros((k, m))
    np.add.at(sums, labels, correctness)
    counts = np.bincount(labels, minlength=k).astype(np.int64)
    global_scores = correctness.mean(axis=0)
    denom = counts[:, None] + smoothing
    with np.errstate(invalid="ignore", divide="ignore"):
        scores = (sums + smoothing * global_scores[None, :]) / denom
    scores[counts == 0] = global_scores
    return ClusterScores(scores=scores, counts=counts, global_scores=global_scores)
