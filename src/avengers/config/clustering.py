"""How calibration queries are clustered."""

from __future__ import annotations

from pydantic import Field

from avengers.config.base import ConfigModel
from avengers.registry import registry

CLUSTERERS = registry("clustering algorithm", home="avengers.core.clustering")
"""Clusterers by name; the built-ins are registered by :mod:`avengers.core.clustering`."""


class ClusteringConfig(ConfigModel):
    algorithm: CLUSTERERS.name_field() = "kmeans"
    """Clusterer by registered name: kmeans, gmm, agglomerative, spectral, birch (:mod:`avengers.core.clustering`)."""

    k: int = Field(default=64, ge=1, le=100_000)
    """Number of clusters (the paper: accuracy plateaus for 14 < K < 140)."""

    seed: int = 42
    """Random seed (k-means++ initialisation, GMM, spectral)."""

    n_init: int = Field(default=10, ge=1)
    """Restarts of k-means / GMM; the best run is kept."""

    max_iter: int = Field(default=300, ge=1)
    """Iteration cap of k-means / GMM."""
