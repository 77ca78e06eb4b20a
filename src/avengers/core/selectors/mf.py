"""Matrix factorisation (RouteLLM, Ong et al., arXiv 2406.18665), pointwise.

RouteLLM scores a (query, model) pair as the inner product of a learned model vector and a linear
projection of the query embedding. Here it predicts whether the model is right:
P(right | q, m) = sigmoid(v_m . (W q) + b_m), fitted with full-batch Adam on the binary cross-entropy of
the calibration score matrix (fractional scores as soft targets) with an L2 penalty. All models share the
projection W, which is what lets a model with few examples borrow strength from the others.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from avengers.core.selectors.base import FitData, QueryBatch, Selector, SelectorError, register_selector
from avengers.core.selectors.logistic import sigmoid


@register_selector("mf")
class MatrixFactorisationSelector(Selector):
    """Low-rank bilinear correctness model over (query embedding, model) (arXiv 2406.18665)."""

    projection: np.ndarray | None = None
    """(r, d) query projection W."""
    model_vectors: np.ndarray | None = None
    """(m, r) one latent vector per model."""
    biases: np.ndarray | None = None
    """(m,) per-model bias."""

    def fit(self, data: FitData) -> None:
        x = np.asarray(data.embeddings, dtype=np.float64)
        y = np.asarray(data.scores, dtype=np.float64)
        n, d = x.shape
        m = y.shape[1]
        r = self.config.mf_dimension
        rng = np.random.default_rng(self.config.seed)
        mean = np.clip(y.mean(axis=0), 1e-4, 1 - 1e-4)
        params = {
            "W": rng.normal(0.0, 1.0 / np.sqrt(d), (r, d)),
            "V": rng.normal(0.0, 1.0 / np.sqrt(r), (m, r)),
            "b": np.log(mean / (1 - mean)),
        }
        moments = {k: (np.zeros_like(v), np.zeros_like(v)) for k, v in params.items()}
        lr, l2 = self.config.mf_learning_rate, self.config.mf_l2
        for step in range(1, self.config.mf_epochs + 1):
            h = x @ params["W"].T  # (n, r)
            g = (sigmoid(h @ params["V"].T + params["b"]) - y) / n  # dLoss/dlogit, (n, m)
            grads = {
                "W": (g @ params["V"]).T @ x + l2 * params["W"],
                "V": g.T @ h + l2 * params["V"],
                "b": g.sum(axis=0),
            }
            for k, grad in grads.items():  # Adam
                m1, m2 = moments[k]
                m1 *= 0.9
                m1 += 0.1 * grad
                m2 *= 0.999
                m2 += 0.001 * grad * grad
                params[k] -= lr * (m1 / (1 - 0.9**step)) / (np.sqrt(m2 / (1 - 0.999**step)) + 1e-8)
        self.projection = params["W"].astype(np.float32)
        self.model_vectors = params["V"].astype(np.float32)
        self.biases = params["b"].astype(np.float32)

    def score(self, batch: QueryBatch) -> np.ndarray:
        if self.projection is None or self.model_vectors is None or self.biases is None:
            raise SelectorError("mf selector is not fitted")
        h = np.asarray(batch.embeddings, dtype=np.float32) @ self.projection.T
        return sigmoid(h @ self.model_vectors.T + self.biases).astype(np.float64)

    def state(self) -> dict[str, np.ndarray]:
        assert self.projection is not None and self.model_vectors is not None and self.biases is not None
        return {"projection": self.projection, "model_vectors": self.model_vectors, "biases": self.biases}

    def load_state(self, arrays: dict[str, np.ndarray]) -> None:
        w, v, b = self._require(arrays, "projection", "model_vectors", "biases")
        if w.ndim != 2 or v.ndim != 2 or v.shape[1] != w.shape[0] or b.shape != (len(v),):
            raise SelectorError(f"mf state: projection {w.shape}, model vectors {v.shape}, biases {b.shape}")
        self.projection, self.model_vectors, self.biases = (a.astype(np.float32) for a in (w, v, b))

    def params(self) -> dict[str, Any]:
        c = self.config
        return {"dimension": c.mf_dimension, "epochs": c.mf_epochs, "learning_rate": c.mf_learning_rate, "l2": c.mf_l2}
