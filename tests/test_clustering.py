import numpy as np
import pytest

from avengers.config import ClusteringConfig
from avengers.core.clustering import ClusteringError, available_clusterers, cluster


def blobs(n=40, seed=0):
    rng = np.random.default_rng(seed)
    centers = np.eye(3, 8) * 5
    x = np.concatenate([c + rng.normal(scale=0.3, size=(n, 8)) for c in centers]).astype(np.float32)
    truth = np.repeat(np.arange(3), n)
    return x, truth


@pytest.mark.parametrize("algorithm", ["kmeans", "gmm", "agglomerative", "spectral", "birch"])
def test_every_algorithm_recovers_blobs(algorithm):
    x, truth = blobs()
    result = cluster(x, ClusteringConfig(algorithm=algorithm, k=3))
    assert result.centroids.shape == (3, 8)
    assert sorted(np.unique(result.labels)) == [0, 1, 2]
    # each true blob maps to exactly one cluster
    for t in range(3):
        assert len(np.unique(result.labels[truth == t])) == 1
    # centroids sit near the blob means
    means = np.stack([x[truth == t].mean(0) for t in range(3)])
    d = np.linalg.norm(result.centroids[:, None] - means[None], axis=2)
    assert d.min(axis=1).max() < 0.5


def test_kmeans_is_deterministic_with_seed():
    x, _ = blobs(seed=3)
    a = cluster(x, ClusteringConfig(k=3, seed=42))
    b = cluster(x, ClusteringConfig(k=3, seed=42))
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_allclose(a.centroids, b.centroids)


def test_registry_and_errors():
    assert set(available_clusterers()) == {"kmeans", "gmm", "agglomerative", "spectral", "birch"}
    x, _ = blobs(n=2)
    with pytest.raises(ClusteringError, match="larger than the number of points"):
        cluster(x, ClusteringConfig(k=10))
    with pytest.raises(ClusteringError, match="non-empty 2-D"):
        cluster(np.zeros((0, 4)), ClusteringConfig(k=1))
    with pytest.raises(ValueError):
        ClusteringConfig(algorithm="dbscan")
