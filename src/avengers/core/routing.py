"""Step 4 of the recipe: route a query embedding to ranked models.

A :class:`Router` holds the fitted centroids, the per-cluster model score table and the selectors fitted
into the router (:mod:`avengers.core.selectors`). For a batch of queries it computes the distances to
the centroids once (``distance``: Euclidean, or cosine 1 - cos(centroid, query) as in the authors' code),
lets the chosen selector score every model, and ranks the models:

- nearest: the nearest centroid's scores; soft: the ``top_k`` nearest clusters weighted by
  w = softmax(-beta * distance), a model scoring sum_c w_c / (rank_c(model) + 0.1) (arXiv 2505.19797);
- knn, logistic, mf, shrinkage: see their modules.

Cost-aware routing (Avengers-Pro, arXiv 2508.12631): with ``alpha`` > 0 each model scores
(1 - alpha) * q~ + alpha * (1 - c~), where q~ are the selector's scores and c~ the models' costs on the
query's nearest cluster, both min-max normalised over the models. alpha = 0 ranks by quality alone.

Feedback enters as a replacement cluster table (:func:`avengers.core.scoring.posterior_table`): the
cluster selectors rank by it, the others get its difference to the calibration table on the query's
nearest cluster added to their scores. Ties go to the model with the higher global score, then the lower
index.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np

from avengers.config.routing import CLUSTER_SELECTORS, RoutingConfig, SelectorsConfig
from avengers.core.scoring import ClusterScores, rank_positions
from avengers.core.selectors import QueryBatch, Selector, SelectorError, create_selector
from avengers.core.selectors.cluster import RANK_OFFSET, softmax_weights

__all__ = ["RANK_OFFSET", "ClusterRouter", "RouteResult", "Router", "softmax", "squared_distances"]


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
    strategy: str = ""
    """Selector that ranked the models."""


def squared_distances(x: np.ndarray, centroids: np.ndarray, centroid_sq_norms: np.ndarray | None = None) -> np.ndarray:
    """(n, k) squared Euclidean distances, computed with one matrix product."""
    x = np.atleast_2d(np.asarray(x, dtype=np.float32))
    cn = (centroids * centroids).sum(axis=1) if centroid_sq_norms is None else centroid_sq_norms
    d2 = (x * x).sum(axis=1, keepdims=True) - 2.0 * x @ centroids.T + cn[None, :]
    return np.maximum(d2, 0.0)


def cosine_distances(x: np.ndarray, unit_centroids: np.ndarray) -> np.ndarray:
    """(n, k) 1 - cos(centroid, query) for L2-normalised queries and centroids."""
    x = np.atleast_2d(np.asarray(x, dtype=np.float32))
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return 1.0 - (x / np.where(norms > 0, norms, 1.0)) @ unit_centroids.T


def softmax(z: np.ndarray) -> np.ndarray:
    """softmax(z) of one vector; finite for any finite or -inf entries (at least one finite)."""
    return softmax_weights(-np.asarray(z, dtype=np.float64), 1.0)


def min_max(values: np.ndarray) -> np.ndarray:
    """Row-wise (v - min) / (max - min); rows with no spread become 0."""
    lo = values.min(axis=1, keepdims=True)
    span = values.max(axis=1, keepdims=True) - lo
    return np.where(span > 0, (values - lo) / np.where(span > 0, span, 1.0), 0.0)


class Router:
    """Routes embeddings with fitted centroids, the cluster table and fitted selectors (thread-safe reads)."""

    def __init__(
        self,
        centroids: np.ndarray,
        cluster_scores: ClusterScores,
        config: RoutingConfig | None = None,
        *,
        selectors: dict[str, Selector] | None = None,
        costs: np.ndarray | None = None,
        table: np.ndarray | None = None,
    ):
        """``selectors``: fitted selectors by name (nearest and soft are always there); ``costs``: (k, m)
        cost of each model on each cluster, for alpha > 0; ``table``: a (k, m) table to rank by instead of
        ``cluster_scores.scores`` (feedback)."""
        self.centroids = np.asarray(centroids, dtype=np.float32)
        self.cluster_scores = cluster_scores
        self.config = config or RoutingConfig()
        self._centroid_sq_norms = (self.centroids * self.centroids).sum(axis=1)
        norms = np.linalg.norm(self.centroids, axis=1, keepdims=True)
        self._unit_centroids = self.centroids / np.where(norms > 0, norms, 1.0)
        base = np.asarray(cluster_scores.scores, dtype=np.float64)
        self.table = base if table is None else np.asarray(table, dtype=np.float64)
        if self.table.shape != base.shape:
            raise ValueError(f"table shape {self.table.shape} != cluster scores {base.shape}")
        self._table_delta = None if table is None else self.table - base
        self._rank_of = rank_positions(self.table, cluster_scores.global_scores)
        self.selectors: dict[str, Selector] = {name: create_selector(name) for name in CLUSTER_SELECTORS}
        self.selectors.update(selectors or {})
        self.costs = None if costs is None else np.asarray(costs, dtype=np.float64)
        if self.costs is not None and self.costs.shape != base.shape:
            raise ValueError(f"costs shape {self.costs.shape} != cluster scores {base.shape}")
        m = self.num_models
        self._tiebreak = np.lexsort((np.arange(m), -cluster_scores.global_scores)).argsort()  # 0 = preferred

    def with_table(self, table: np.ndarray) -> Router:
        """The same router ranking by another (k, m) cluster table (feedback, exploration draws)."""
        clone = copy.copy(self)
        clone.table = np.asarray(table, dtype=np.float64)
        if clone.table.shape != self.cluster_scores.scores.shape:
            raise ValueError(f"table shape {clone.table.shape} != cluster scores {self.cluster_scores.scores.shape}")
        clone._table_delta = clone.table - self.cluster_scores.scores
        clone._rank_of = rank_positions(clone.table, self.cluster_scores.global_scores)
        return clone

    @property
    def num_models(self) -> int:
        return int(self.cluster_scores.scores.shape[1])

    @property
    def strategies(self) -> list[str]:
        """Selectors this router can route with."""
        return sorted(self.selectors)

    def route(self, embedding: np.ndarray, **overrides: object) -> RouteResult:
        """Route one embedding; keyword overrides as in :meth:`route_batch`."""
        return self.route_batch(np.atleast_2d(embedding), **overrides)[0]  # type: ignore[arg-type]

    def distances(self, embeddings: np.ndarray, distance: str) -> np.ndarray:
        """(b, k) distances of the embeddings to the centroids."""
        if distance == "euclidean":
            return np.sqrt(squared_distances(embeddings, self.centroids, self._centroid_sq_norms))
        if distance == "cosine":
            return cosine_distances(embeddings, self._unit_centroids)
        raise ValueError(f"unknown distance {distance!r}; known: euclidean, cosine")

    def score_batch(self, embeddings: np.ndarray, routing: RoutingConfig) -> tuple[np.ndarray, QueryBatch, Selector]:
        """(b, m) scores of the models for each query (before alpha), with the batch and the selector."""
        try:
            selector = self.selectors[routing.strategy]
        except KeyError:
            raise ValueError(
                f"unknown routing strategy {routing.strategy!r} for this router; it has {self.strategies} "
                "(fit the router with that selector)"
            ) from None
        x = np.atleast_2d(np.asarray(embeddings, dtype=np.float32))
        d = self.distances(x, routing.distance)
        nearest = d.argmin(axis=1)
        batch = QueryBatch(x, d, nearest, self.table, self._rank_of, routing)
        scores = np.asarray(selector.score(batch), dtype=np.float64)
        if self._table_delta is not None and not selector.uses_cluster_table:
            scores = scores + self._table_delta[nearest]
        return scores, batch, selector

    def cost_aware(self, scores: np.ndarray, nearest: np.ndarray, alpha: float) -> np.ndarray:
        """Avengers-Pro's (1 - alpha) * quality~ + alpha * (1 - cost~) (arXiv 2508.12631); alpha 0: unchanged."""
        if alpha <= 0:
            return scores
        if self.costs is None:
            raise ValueError("alpha > 0 needs model costs, and this router was fitted without any")
        return (1.0 - alpha) * min_max(scores) + alpha * (1.0 - min_max(self.costs[nearest]))

    def order(self, scores: np.ndarray, top_n: int) -> np.ndarray:
        """(b, top_n) model indices by score, ties to the higher global score, then the lower index."""
        keys = np.lexsort((np.broadcast_to(self._tiebreak, scores.shape), -scores), axis=1)
        return keys[:, :top_n]

    def resolve(self, **overrides: object) -> RoutingConfig:
        """The router's routing config with the given non-None fields replaced."""
        update = {k: v for k, v in overrides.items() if v is not None}
        if not update:
            return self.config
        return RoutingConfig.model_validate({**self.config.to_dict(), **update})

    def route_batch(
        self,
        embeddings: np.ndarray,
        *,
        strategy: str | None = None,
        top_n: int | None = None,
        top_k: int | None = None,
        beta: float | None = None,
        alpha: float | None = None,
        distance: str | None = None,
    ) -> list[RouteResult]:
        """Route a batch; arguments left None take the router's config."""
        if strategy is not None and strategy not in self.selectors:
            raise ValueError(f"unknown routing strategy {strategy!r} for this router; it has {self.strategies}")
        routing = self.resolve(strategy=strategy, top_k=top_k, beta=beta, alpha=alpha, distance=distance)
        top_n = min(top_n or routing.top_n, self.num_models)
        scores, batch, selector = self.score_batch(embeddings, routing)
        scores = self.cost_aware(scores, batch.nearest, routing.alpha)
        order = self.order(scores, top_n)
        clusters, weights = selector.contributions(batch)
        results = []
        for i in range(len(scores)):
            row = batch.distances[i]
            c = int(batch.nearest[i])
            results.append(
                RouteResult(
                    c,
                    float(row[c]),
                    order[i].tolist(),
                    scores[i, order[i]].astype(float).tolist(),
                    clusters[i].astype(int).tolist(),
                    row[clusters[i]].astype(float).tolist(),
                    np.asarray(weights[i], dtype=float).tolist(),
                    routing.strategy,
                )
            )
        return results

    def choose(self, embeddings: np.ndarray, routing: RoutingConfig | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top model of each query and its nearest cluster, vectorised (offline evaluation)."""
        routing = routing or self.config
        scores, batch, _ = self.score_batch(embeddings, routing)
        scores = self.cost_aware(scores, batch.nearest, routing.alpha)
        return self.order(scores, 1)[:, 0], batch.nearest


ClusterRouter = Router
"""The former name (the router was cluster-only)."""


def build_selectors(names: list[str], states: dict[str, dict[str, np.ndarray]], config: SelectorsConfig) -> dict[str, Selector]:
    """Fitted selectors restored from their saved states."""
    selectors = {}
    for name in names:
        selector = create_selector(name, config)
        if name not in states:
            raise SelectorError(f"selector {name!r} has no saved state")
        selector.load_state(states[name])
        selectors[name] = selector
    return selectors
