"""Step 2 of the recipe: cluster calibration embeddings (The Avengers, arXiv 2505.19797: k-means, K=64).

Every algorithm is a :class:`Clusterer` that returns a :class:`Clustering`: a label per point and one
centroid per cluster. Routing needs only centroids, so algorithms without a ``predict`` (agglomerative,
spectral, BIRCH) use the mean of each cluster's members. Clusters are renumbered 0..k-1 without gaps.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from avengers.config.clustering import CLUSTERERS, ClusteringConfig


class ClusteringError(ValueError):
    """Data that cannot be clustered with the requested parameters."""


@dataclass
class Clustering:
    labels: np.ndarray
    """(n,) cluster index of each point, 0..k-1."""
    centroids: np.ndarray
    """(k, d) float32 centroid of each cluster."""

    @property
    def k(self) -> int:
        return int(self.centroids.shape[0])


def with_model_centroids(labels: np.ndarray, centers: np.ndarray) -> Clustering:
    """Keep a model's own centers (k-means centroids, GMM means), dropping and renumbering empty ones."""
    present, dense = np.unique(labels, return_inverse=True)
    return Clustering(labels=dense.astype(np.int64), centroids=np.asarray(centers)[present].astype(np.float32))


def centroids_from_labels(x: np.ndarray, labels: np.ndarray) -> Clustering:
    """Renumber labels densely and use each cluster's member mean as its centroid."""
    uniq, dense = np.unique(labels, return_inverse=True)
    centroids = np.stack([x[dense == i].mean(axis=0) for i in range(len(uniq))]).astype(np.float32)
    return Clustering(labels=dense.astype(np.int64), centroids=centroids)


class Clusterer(ABC):
    """Groups calibration embeddings into clusters with centroids."""

    def __init__(self, config: ClusteringConfig):
        self.config = config

    def fit(self, x: np.ndarray) -> Clustering:
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 2 or len(x) == 0:
            raise ClusteringError(f"need a non-empty 2-D matrix of embeddings, got shape {x.shape}")
        if self.config.k > len(x):
            raise ClusteringError(f"k={self.config.k} is larger than the number of points ({len(x)})")
        return self._fit(x)

    @abstractmethod
    def _fit(self, x: np.ndarray) -> Clustering:
        """Cluster ``x`` (already validated) into ``config.k`` clusters."""


register_clusterer = CLUSTERERS.register
"""Class decorator: make a clusterer available under a name (then usable as ``ClusteringConfig.algorithm``)."""


@register_clusterer("kmeans")
class KMeansClusterer(Clusterer):
    """k-means with k-means++ initialisation (the paper's default, arXiv 2505.19797; k-means++: Arthur &
    Vassilvitskii 2007)."""

    def _fit(self, x: np.ndarray) -> Clustering:
        from sklearn.cluster import KMeans

        c = self.config
        model = KMeans(n_clusters=c.k, init="k-means++", n_init=c.n_init, max_iter=c.max_iter, random_state=c.seed)
        return with_model_centroids(model.fit_predict(x), model.cluster_centers_)


@register_clusterer("gmm")
class GaussianMixtureClusterer(Clusterer):
    """Gaussian mixture with diagonal covariances; centroids are the component means."""

    def _fit(self, x: np.ndarray) -> Clustering:
        from sklearn.mixture import GaussianMixture

        c = self.config
        model = GaussianMixture(
            n_components=c.k,
            covariance_type="diag",
            n_init=min(c.n_init, 3),
            max_iter=c.max_iter,
            random_state=c.seed,
            reg_covar=1e-4,
        )
        return with_model_centroids(model.fit_predict(x), model.means_)


@register_clusterer("agglomerative")
class AgglomerativeClusterer(Clusterer):
    """Agglomerative clustering with Ward linkage (Ward 1963); centroids are member means."""

    def _fit(self, x: np.ndarray) -> Clustering:
        from sklearn.cluster import AgglomerativeClustering

        labels = AgglomerativeClustering(n_clusters=self.config.k, linkage="ward").fit_predict(x)
        return centroids_from_labels(x, labels)


@register_clusterer("spectral")
class SpectralClusterer(Clusterer):
    """Spectral clustering on a k-nearest-neighbour graph (Ng, Jordan & Weiss 2001); centroids are member means."""

    def _fit(self, x: np.ndarray) -> Clustering:
        from sklearn.cluster import SpectralClustering

        c = self.config
        model = SpectralClustering(
            n_clusters=c.k,
            affinity="nearest_neighbors",
            n_neighbors=min(15, len(x) - 1),
            assign_labels="cluster_qr",
            random_state=c.seed,
        )
        return centroids_from_labels(x, model.fit_predict(x))


@register_clusterer("birch")
class BirchClusterer(Clusterer):
    """BIRCH (Zhang, Ramakrishnan & Livny 1996): a CF-tree of subclusters, merged into k clusters; centroids
    are member means."""

    def _fit(self, x: np.ndarray) -> Clustering:
        from sklearn.cluster import Birch

        labels = Birch(n_clusters=self.config.k, threshold=0.3).fit_predict(x)
        return centroids_from_labels(x, labels)


def available_clusterers() -> list[str]:
    return CLUSTERERS.names()


def create_clusterer(config: ClusteringConfig | None = None) -> Clusterer:
    config = config or ClusteringConfig()
    try:
        factory = CLUSTERERS.get(config.algorithm)
    except ValueError as exc:
        raise ClusteringError(str(exc)) from None
    return factory(config)


def cluster(x: np.ndarray, config: ClusteringConfig | None = None) -> Clustering:
    """Fit the configured clusterer on ``x``."""
    return create_clusterer(config).fit(x)
