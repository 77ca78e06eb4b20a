"""The paper's selectors on the cluster table (The Avengers, arXiv 2505.19797).

- ``nearest``: the nearest centroid's model scores.
- ``soft``: the ``top_k`` nearest clusters weighted by w = softmax(-beta * distance); each cluster ranks its
  models, and a model scores sum_c w_c / (rank_c(model) + 0.1).

The distance (Euclidean, or cosine 1 - cos(centroid, query) as in the authors' code) is the router's, in
:class:`~avengers.core.selectors.base.QueryBatch`.
"""

from __future__ import annotations

import numpy as np

from avengers.core.selectors.base import QueryBatch, Selector, register_selector

RANK_OFFSET = 0.1
"""The paper's 1 / (rank + 0.1) rank score."""


def softmax_weights(distances: np.ndarray, beta: float) -> np.ndarray:
    """Row-wise softmax(-beta * distances), finite for every beta >= 0 (infinity too: all weight on the
    nearest) — distances are shifted to the row minimum first so the largest exponent is exactly 0."""
    shifted = distances - distances.min(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", over="ignore"):
        z = np.where(shifted > 0, -beta * shifted, 0.0)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


@register_selector("nearest")
class NearestCentroidSelector(Selector):
    """The nearest cluster's mean score of each model (arXiv 2505.19797, section 3)."""

    uses_cluster_table = True

    def score(self, batch: QueryBatch) -> np.ndarray:
        return batch.table[batch.nearest]


@register_selector("soft")
class SoftTopKSelector(Selector):
    """The paper's soft rank scoring over the top_k nearest clusters (arXiv 2505.19797, section 3)."""

    uses_cluster_table = True

    def _near(self, batch: QueryBatch) -> tuple[np.ndarray, np.ndarray]:
        top_k = min(batch.routing.top_k, batch.distances.shape[1])
        near = np.argsort(batch.distances, axis=1, kind="stable")[:, :top_k]
        w = softmax_weights(np.take_along_axis(batch.distances, near, axis=1), batch.routing.beta)
        return near, w

    def score(self, batch: QueryBatch) -> np.ndarray:
        near, w = self._near(batch)
        return (w[:, :, None] / (batch.rank_of[near] + RANK_OFFSET)).sum(axis=1)

    def contributions(self, batch: QueryBatch) -> tuple[np.ndarray, np.ndarray]:
        return self._near(batch)
