"""Hierarchical shrinkage of cluster scores (Agarwal et al., "Hierarchical Shrinkage: improving the
accuracy and interpretability of tree-based methods", arXiv 2202.00858), on a two-level clustering.

The calibration queries are also clustered coarsely (``shrinkage_parent_k`` k-means clusters); each of the
router's (fine) clusters hangs under the coarse cluster most of its queries fall in. With lambda =
``shrinkage_strength``, a coarse cluster's means are shrunk toward the global means,
p_P = (sum_P + lambda * g) / (n_P + lambda), and a fine cluster's toward its parent's,
p_c = (sum_c + lambda * p_P) / (n_c + lambda). Small fine clusters lean on their parent; large ones keep
their own evidence. A query scores the shrunk means of its nearest fine cluster.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from avengers.core.selectors.base import FitData, QueryBatch, Selector, SelectorError, register_selector


def shrink_two_levels(
    scores: np.ndarray, fine: np.ndarray, coarse: np.ndarray, k_fine: int, strength: float
) -> np.ndarray:
    """(k_fine, m) shrunk means of the fine clusters (see the module docstring)."""
    m = scores.shape[1]
    k_coarse = int(coarse.max()) + 1
    global_mean = scores.mean(axis=0)
    coarse_sums = np.zeros((k_coarse, m))
    np.add.at(coarse_sums, coarse, scores)
    coarse_counts = np.bincount(coarse, minlength=k_coarse)[:, None]
    parent_means = (coarse_sums + strength * global_mean) / (coarse_counts + strength + 1e-12)
    parent = np.zeros(k_fine, dtype=np.int64)
    for c in range(k_fine):
        members = coarse[fine == c]
        parent[c] = np.bincount(members, minlength=k_coarse).argmax() if len(members) else 0
    fine_sums = np.zeros((k_fine, m))
    np.add.at(fine_sums, fine, scores)
    fine_counts = np.bincount(fine, minlength=k_fine)[:, None]
    prior = parent_means[parent]
    return (fine_sums + strength * prior) / (fine_counts + strength + 1e-12)


@register_selector("shrinkage")
class HierarchicalShrinkageSelector(Selector):
    """Fine-cluster means shrunk toward coarse-cluster means (arXiv 2202.00858)."""

    table: np.ndarray | None = None
    """(k, m) shrunk scores of the router's clusters."""

    def fit(self, data: FitData) -> None:
        from sklearn.cluster import KMeans

        k = len(data.centroids)
        k_coarse = max(1, min(self.config.shrinkage_parent_k, k, len(data.embeddings)))
        coarse = KMeans(k_coarse, n_init=3, random_state=self.config.seed).fit_predict(data.embeddings)
        self.table = shrink_two_levels(
            np.asarray(data.scores, dtype=np.float64),
            np.asarray(data.clusters, dtype=np.int64),
            coarse.astype(np.int64),
            k,
            self.config.shrinkage_strength,
        )

    def score(self, batch: QueryBatch) -> np.ndarray:
        if self.table is None:
            raise SelectorError("shrinkage selector is not fitted")
        if len(self.table) != batch.distances.shape[1]:
            raise SelectorError(f"shrinkage table has {len(self.table)} clusters, the router {batch.distances.shape[1]}")
        return self.table[batch.nearest]

    def state(self) -> dict[str, np.ndarray]:
        assert self.table is not None
        return {"table": self.table}

    def load_state(self, arrays: dict[str, np.ndarray]) -> None:
        (table,) = self._require(arrays, "table")
        if table.ndim != 2:
            raise SelectorError(f"shrinkage state: table {table.shape}")
        self.table = table.astype(np.float64)

    def params(self) -> dict[str, Any]:
        return {"parent_k": self.config.shrinkage_parent_k, "strength": self.config.shrinkage_strength}
