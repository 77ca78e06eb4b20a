"""One logistic regression per model on the query embedding, predicting the chance the model is right
(per-model correctness predictors, as in RouterBench, Hu et al., arXiv 2403.12031).

Fractional scores (a model right on 3 of 10 samples: 0.3) are fitted exactly: each query counts as a
positive with weight ``score`` and a negative with weight ``1 - score``. The state is one weight vector
and intercept per model, so scoring a query is one (d x m) matrix product.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from avengers.core.selectors.base import FitData, QueryBatch, Selector, SelectorError, register_selector


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


@register_selector("logistic")
class LogisticSelector(Selector):
    """P(model right | query) from an L2-regularised logistic regression per model (arXiv 2403.12031)."""

    weights: np.ndarray | None = None
    """(m, d) coefficients."""
    intercepts: np.ndarray | None = None
    """(m,) intercepts."""

    def fit(self, data: FitData) -> None:
        from sklearn.linear_model import LogisticRegression

        x = np.asarray(data.embeddings, dtype=np.float64)
        n, m = data.scores.shape
        doubled = np.vstack([x, x])
        labels = np.r_[np.ones(n), np.zeros(n)]
        weights = np.zeros((m, x.shape[1]))
        intercepts = np.zeros(m)
        for j in range(m):
            s = np.asarray(data.scores[:, j], dtype=np.float64)
            mean = float(s.mean())
            if mean <= 0.0 or mean >= 1.0:  # always wrong / always right: a constant
                intercepts[j] = np.log(max(mean, 1e-6) / max(1.0 - mean, 1e-6))
                continue
            sample_weight = np.r_[s, 1.0 - s]
            keep = sample_weight > 0
            model = LogisticRegression(C=self.config.logistic_c, max_iter=500)
            model.fit(doubled[keep], labels[keep], sample_weight=sample_weight[keep])
            weights[j] = model.coef_[0]
            intercepts[j] = model.intercept_[0]
        self.weights, self.intercepts = weights.astype(np.float32), intercepts.astype(np.float32)

    def score(self, batch: QueryBatch) -> np.ndarray:
        if self.weights is None or self.intercepts is None:
            raise SelectorError("logistic selector is not fitted")
        return sigmoid(np.asarray(batch.embeddings, dtype=np.float32) @ self.weights.T + self.intercepts).astype(
            np.float64
        )

    def state(self) -> dict[str, np.ndarray]:
        assert self.weights is not None and self.intercepts is not None
        return {"weights": self.weights, "intercepts": self.intercepts}

    def load_state(self, arrays: dict[str, np.ndarray]) -> None:
        weights, intercepts = self._require(arrays, "weights", "intercepts")
        if weights.ndim != 2 or intercepts.shape != (len(weights),):
            raise SelectorError(f"logistic state: weights {weights.shape}, intercepts {intercepts.shape}")
        self.weights, self.intercepts = weights.astype(np.float32), intercepts.astype(np.float32)

    def params(self) -> dict[str, Any]:
        return {"C": self.config.logistic_c}
