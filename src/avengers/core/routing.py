"""Step 4 of the recipe: route a query embedding to ranked models.

- nearest: the nearest centroid (Euclidean); models ranked by that cluster's scores.
- soft: the ``top_k`` nearest clusters, weights w = softmax(-beta * distance); each cluster ranks its
  models, and a model scores sum_c w_c / (rank_c(model) + 0.1). The paper's variant.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from avengers.config.routing import RoutingConfig
from avengers.core.scoring import ClusterScores

RANK_OFFSET = 0.1
"""The paper's 1 / (rank + 0.1) rank score."""


@dataclass
class RouteResult:
    cluster: int
    """Nearest cluster."""
    distance: float
    """Distance to its centroid."""
    models: list[int]
    """Model indices, best first (at most top_n)."""
    scores: list[float]
    """Routing score of each returned model."""
    clusters: list[int] = field(default_factory=list)
    """Contributing clusters, nearest first."""
    distances: list[float] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)


def squared_distances(x: np.ndarray, centroids: np.ndarray, centroid_sq_norms: np.ndarray | None = None) -> np.ndarray:
    """(n, k) squared Euclidean distances, computed with one matrix product."""
    x = np.atleast_2d(np.asarray(x, dtype=np.float32))
    cn = (centroids * centroids).sum(axis=1) if centroid_sq_norms is None else centroid_sq_norms
    d2 = (x * x).sum(axis=1, keepdims=True) - 2.0 * x @ centroids.T + cn[None, :]
    return np.maximum(d2, 0.0)


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max()
    e = np.exp(z)
    return e / e.sum()


class ClusterRouter:
    """Routes embeddings with fitted centroids and cluster scores (pure in-memory, thread-safe reads)."""

    def __init__(self, centroids: np.ndarray, cluster_scores: ClusterScores, config: RoutingConfig | None = None):
        self.centroids = np.asarray(centroids, dtype=np.float32)
        self.cluster_scores = cluster_scores
        self.config = config or RoutingConfig()
        self._centroid_sq_norms = (self.centroids * self.centroids).sum(axis=1)
        k, m = cluster_scores.scores.shape
        # Rankings never change after the fit: precompute (k, m) ranking and rank-position tables.
        self._rankings = np.stack([cluster_scores.ranking(c) for c in range(k)])
        self._rank_of = np.empty_like(self._rankings)
        rows = np.arange(k)[:, None]
        self._rank_of[rows, self._rankings] = np.arange(m)[None, :]

    @property
    def num_models(self) -> int:
        return int(self.cluster_scores.scores.shape[1])

    def route(
        self,
        embedding: np.ndarray,
        *,
        strategy: str | None = None,
        top_n: int | None = None,
        top_k: int | None = None,
        beta: float | None = None,
    ) -> RouteResult:
        """Route one embedding; arguments left None take the router's config."""
        return self.route_batch(
            np.atleast_2d(embedding), strategy=strategy, top_n=top_n, top_k=top_k, beta=beta
        )[0]

    def route_batch(
        self,
        embeddings: np.ndarray,
        *,
        strategy: str | None = None,
        top_n: int | None = None,
        top_k: int | None = None,
        beta: float | None = None,
    ) -> list[RouteResult]:
        cfg = self.config
        strategy = strategy or cfg.strategy
        top_n = min(top_n or cfg.top_n, self.num_models)
        top_k = min(top_k or cfg.top_k, len(self.centroids))
        beta = cfg.beta if beta is None else beta
        if strategy not in ("nearest", "soft"):
            raise ValueError(f"unknown routing strategy {strategy!r}")
        d = np.sqrt(squared_distances(embeddings, self.centroids, self._centroid_sq_norms))
        results = []
        for row in d:
            if strategy == "nearest":
                c = int(np.argmin(row))
                order = self._rankings[c][:top_n]
                scores = self.cluster_scores.scores[c, order]
                results.append(
                    RouteResult(c, float(row[c]), order.tolist(), scores.tolist(), [c], [float(row[c])], [1.0])
                )
                continue
            near = np.argsort(row, kind="stable")[:top_k]
            w = softmax(-beta * row[near])
            model_scores = (w[:, None] / (self._rank_of[near] + RANK_OFFSET)).sum(axis=0)
            order = np.lexsort((np.arange(self.num_models), -model_scores))[:top_n]
            results.append(
                RouteResult(
                    int(near[0]),
                    float(row[near[0]]),
                    order.tolist(),
                    model_scores[order].tolist(),
                    near.tolist(),
                    row[near].astype(float).tolist(),
                    w.astype(float).tolist(),
                )
            )
        return results
