"""kNN over the calibration queries (Li, "Rethinking Predictive Modeling for LLM Routing: When Simple kNN
Beats Complex Learned Routers", arXiv 2505.12601).

A model's score for a query is its mean correctness on the ``knn_neighbours`` calibration queries most
similar to it (cosine similarity of the L2-normalised embeddings), optionally weighted by similarity. The
calibration embeddings and scores are the selector's state; in Qdrant they are points of the router's
collection with the scores in their payloads.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from avengers.core.selectors.base import FitData, QueryBatch, Selector, SelectorError, register_selector

SMALL_BATCH = 16
"""Batches up to this size (serving: one query per Route) compute the similarities on one BLAS thread."""

_BLAS: Any = None


def single_threaded_blas() -> Any:
    """A context limiting BLAS to one thread: a Route's (1 x n) similarity product is too small to share, and
    BLAS threads spinning on a loaded CPU cost 10x its work (hknn: 6.4 vs 0.6 ms of CPU per query, RouterDC)."""
    global _BLAS
    if _BLAS is None:
        from threadpoolctl import ThreadpoolController

        _BLAS = ThreadpoolController()
    return _BLAS.limit(limits=1, user_api="blas")


@register_selector("knn")
class KnnSelector(Selector):
    """Mean scores of the nearest calibration queries (arXiv 2505.12601)."""

    points: np.ndarray | None = None
    point_scores: np.ndarray | None = None

    def fit(self, data: FitData) -> None:
        self.points = np.ascontiguousarray(data.embeddings, dtype=np.float32)
        self.point_scores = np.asarray(data.scores, dtype=np.float32)

    def neighbours(self) -> int:
        """Calibration queries averaged per query."""
        return self.config.knn_neighbours

    def score(self, batch: QueryBatch) -> np.ndarray:
        if self.points is None or self.point_scores is None:
            raise SelectorError(f"{self.name} selector is not fitted")
        n = min(self.neighbours(), len(self.points))
        queries = np.asarray(batch.embeddings, dtype=np.float32)
        if len(queries) <= SMALL_BATCH:
            with single_threaded_blas():
                sim = queries @ self.points.T
        else:
            sim = queries @ self.points.T
        if n < len(self.points):
            idx = np.argpartition(-sim, n - 1, axis=1)[:, :n]
        else:
            idx = np.broadcast_to(np.arange(n), (len(sim), n))
        neighbours = self.point_scores[idx]  # (b, n, m)
        if not self.config.knn_weighted:
            return neighbours.mean(axis=1).astype(np.float64)
        w = np.maximum(np.take_along_axis(sim, idx, axis=1), 0.0) + 1e-6
        return (neighbours * w[:, :, None]).sum(axis=1) / w.sum(axis=1, keepdims=True)

    def state(self) -> dict[str, np.ndarray]:
        assert self.points is not None and self.point_scores is not None
        return {"points": self.points, "point_scores": self.point_scores}

    def load_state(self, arrays: dict[str, np.ndarray]) -> None:
        points, scores = self._require(arrays, "points", "point_scores")
        if points.ndim != 2 or scores.ndim != 2 or len(points) != len(scores):
            raise SelectorError(f"knn state: points {points.shape} and scores {scores.shape} do not match")
        self.points = np.ascontiguousarray(points, dtype=np.float32)
        self.point_scores = np.asarray(scores, dtype=np.float32)

    def params(self) -> dict[str, Any]:
        return {"neighbours": self.config.knn_neighbours, "weighted": self.config.knn_weighted}
