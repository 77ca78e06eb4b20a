"""The selector interface: fit on calibration embeddings and scores, score models for queries, save/load.

A router is a clustering of the calibration queries (centroids and a per-cluster model score table, the
Avengers recipe, arXiv 2505.19797) plus any number of fitted selectors. Every selector scores every model
for a batch of query embeddings; the router ranks models by those scores. The cluster geometry (distances
to the centroids, the nearest cluster) is computed once per query by the router and handed to the
selector in a :class:`QueryBatch`, so the cluster selectors route on it and every answer names its nearest
cluster (the key feedback is kept under).

A selector's fitted state is a dict of named numpy arrays (:meth:`Selector.state`) plus JSON parameters
(:meth:`Selector.params`); the router artifact saves both, so any store can hold any selector.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from avengers.config.routing import SELECTORS, RoutingConfig, SelectorsConfig

register_selector = SELECTORS.register


class SelectorError(ValueError):
    """A selector that cannot be fitted, loaded or used as asked."""


@dataclass(frozen=True)
class FitData:
    """What a selector is fitted on."""

    embeddings: np.ndarray
    """(n, d) float32 L2-normalised calibration query embeddings."""
    scores: np.ndarray
    """(n, m) correctness of each model on each calibration query, in [0, 1]."""
    clusters: np.ndarray
    """(n,) the router's cluster of each calibration query."""
    centroids: np.ndarray
    """(k, d) the router's centroids."""
    table: np.ndarray
    """(k, m) the router's per-cluster model scores."""
    groups: np.ndarray | None = None
    """(n,) the dataset of each calibration query (None: unknown)."""


@dataclass(frozen=True)
class QueryBatch:
    """Queries to score, with the cluster geometry the router computed for them."""

    embeddings: np.ndarray
    """(b, d) float32 query embeddings."""
    distances: np.ndarray
    """(b, k) distance of each query to each centroid (the routing's distance)."""
    nearest: np.ndarray
    """(b,) nearest cluster of each query."""
    table: np.ndarray
    """(k, m) per-cluster model scores the cluster selectors rank by (feedback-adjusted when served)."""
    rank_of: np.ndarray
    """(k, m) rank of each model within each cluster of ``table`` (0 = best)."""
    routing: RoutingConfig
    """top_k, beta and the other request-time knobs."""


class Selector(ABC):
    """Scores models for queries (see the module docstring)."""

    name: ClassVar[str]
    uses_cluster_table: ClassVar[bool] = False
    """True when the scores come from the router's cluster table (feedback then enters through the table);
    other selectors get feedback as a per-cluster correction added to their scores."""

    def __init__(self, config: SelectorsConfig | None = None):
        self.config = config or SelectorsConfig()

    def fit(self, data: FitData) -> None:
        """Learn from calibration data (nothing to learn by default)."""

    @abstractmethod
    def score(self, batch: QueryBatch) -> np.ndarray:
        """(b, m) score of each model for each query; higher is better."""

    def contributions(self, batch: QueryBatch) -> tuple[np.ndarray, np.ndarray]:
        """(b, t) clusters that contributed to each query's scores and their (b, t) weights."""
        return batch.nearest[:, None], np.ones((len(batch.nearest), 1))

    def state(self) -> dict[str, np.ndarray]:
        """Fitted arrays, saved in the router artifact."""
        return {}

    def load_state(self, arrays: dict[str, np.ndarray]) -> None:
        """Restore :meth:`state`."""

    def params(self) -> dict[str, Any]:
        """JSON parameters saved with the state (what the fit used)."""
        return {}

    def _require(self, arrays: dict[str, np.ndarray], *names: str) -> list[np.ndarray]:
        missing = [n for n in names if n not in arrays]
        if missing:
            raise SelectorError(f"selector {self.name!r}: saved state lacks {missing}")
        return [np.asarray(arrays[n]) for n in names]


def create_selector(name: str, config: SelectorsConfig | None = None) -> Selector:
    """A new selector of the registered ``name``."""
    return SELECTORS.create(name, config)


def available_selectors() -> list[str]:
    return SELECTORS.names()
