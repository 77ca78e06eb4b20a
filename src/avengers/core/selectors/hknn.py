"""kNN shrunk toward the query's predicted dataset: hierarchical shrinkage (Agarwal et al., arXiv 2202.00858)
with the calibration file's datasets as the coarse level and the kNN neighbourhood (arXiv 2505.12601) as
the fine one.

A multinomial logistic regression on the embedding predicts which calibration dataset a query comes from,
P(g | q); the prior of a model is sum_g P(g | q) * mean score of the model on dataset g. The
``hknn_neighbours`` nearest calibration queries then pull it toward what they saw, with ``hknn_strength``
pseudo-observations behind the prior: (sum of the neighbours' scores + lambda * prior) / (n + lambda).
Dataset-level evidence (which of a few benchmarks a query belongs to) is strong and stable; the
neighbourhood adds within-dataset signal without being trusted more than its n queries warrant. Needs
the ``dataset`` of each calibration row (the labels format has it); one dataset makes the prior the global
mean.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from avengers.core.selectors.base import FitData, QueryBatch, SelectorError, register_selector
from avengers.core.selectors.knn import KnnSelector


def softmax_rows(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


@register_selector("hknn")
class HierarchicalKnnSelector(KnnSelector):
    """kNN scores shrunk toward the predicted dataset's means (arXiv 2202.00858 over arXiv 2505.12601)."""

    group_weights: np.ndarray | None = None
    """(g, d) dataset classifier coefficients."""
    group_intercepts: np.ndarray | None = None
    """(g,) its intercepts."""
    group_means: np.ndarray | None = None
    """(g, m) each calibration dataset's mean score of every model."""

    def fit(self, data: FitData) -> None:
        super().fit(data)
        groups = np.asarray(data.groups if data.groups is not None else np.zeros(len(data.scores), dtype=np.int64))
        names, codes = np.unique(groups, return_inverse=True)
        m = data.scores.shape[1]
        d = data.embeddings.shape[1]
        self.group_means = np.stack([data.scores[codes == g].mean(axis=0) for g in range(len(names))]).astype(np.float32)
        if len(names) == 1:
            self.group_weights = np.zeros((1, d), dtype=np.float32)
            self.group_intercepts = np.zeros(1, dtype=np.float32)
            return
        from sklearn.linear_model import LogisticRegression

        clf = LogisticRegression(C=self.config.hknn_classifier_c, max_iter=1000)
        clf.fit(np.asarray(data.embeddings, dtype=np.float64), codes)
        coef, intercept = clf.coef_, clf.intercept_
        if len(names) == 2:  # scikit-learn keeps one row for a binary problem: logits (0, z)
            coef = np.vstack([np.zeros_like(coef), coef])
            intercept = np.r_[0.0, intercept]
        self.group_weights = coef.astype(np.float32)
        self.group_intercepts = intercept.astype(np.float32)
        assert self.group_means.shape == (len(names), m)

    def prior(self, embeddings: np.ndarray) -> np.ndarray:
        """(b, m) the predicted-dataset mixture of dataset means."""
        if self.group_weights is None or self.group_intercepts is None or self.group_means is None:
            raise SelectorError("hknn selector is not fitted")
        p = softmax_rows(np.asarray(embeddings, dtype=np.float32) @ self.group_weights.T + self.group_intercepts)
        return (p @ self.group_means).astype(np.float64)

    def neighbours(self) -> int:
        return self.config.hknn_neighbours

    def score(self, batch: QueryBatch) -> np.ndarray:
        n = min(self.neighbours(), len(self.points)) if self.points is not None else 0
        lam = self.config.hknn_strength
        neighbours = super().score(batch)
        return (n * neighbours + lam * self.prior(batch.embeddings)) / (n + lam)

    def state(self) -> dict[str, np.ndarray]:
        assert self.group_weights is not None and self.group_intercepts is not None and self.group_means is not None
        return {
            **super().state(),
            "group_weights": self.group_weights,
            "group_intercepts": self.group_intercepts,
            "group_means": self.group_means,
        }

    def load_state(self, arrays: dict[str, np.ndarray]) -> None:
        super().load_state(arrays)
        w, b, means = self._require(arrays, "group_weights", "group_intercepts", "group_means")
        if w.ndim != 2 or b.shape != (len(w),) or means.ndim != 2 or len(means) != len(w):
            raise SelectorError(f"hknn state: weights {w.shape}, intercepts {b.shape}, means {means.shape}")
        self.group_weights, self.group_intercepts, self.group_means = (a.astype(np.float32) for a in (w, b, means))

    def params(self) -> dict[str, Any]:
        return {
            "neighbours": self.config.hknn_neighbours,
            "strength": self.config.hknn_strength,
            "classifier_C": self.config.hknn_classifier_c,
        }
