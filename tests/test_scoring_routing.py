import numpy as np
import pytest

from avengers.config import RoutingConfig
from avengers.core.routing import ClusterRouter
from avengers.core.scoring import score_clusters


def test_cluster_means_counts_and_smoothing():
    labels = np.array([0, 0, 1, 1, 1])
    correct = np.array([[1, 0], [1, 1], [0, 1], [0, 1], [1, 0]], dtype=float)
    s = score_clusters(labels, correct, k=3)
    np.testing.assert_allclose(s.scores[0], [1.0, 0.5])
    np.testing.assert_allclose(s.scores[1], [1 / 3, 2 / 3])
    np.testing.assert_allclose(s.scores[2], s.global_scores)  # empty cluster -> global means
    assert s.counts.tolist() == [2, 3, 0]
    sm = score_clusters(labels, correct, k=3, smoothing=2.0)
    # (sum + 2 * global) / (count + 2)
    np.testing.assert_allclose(sm.scores[0], (np.array([2, 1]) + 2 * s.global_scores) / 4)
    assert list(s.ranking(0)) == [0, 1]


def _router(**cfg):
    centroids = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]], dtype=np.float32)
    correct = np.array([[0.9, 0.5, 0.1], [0.1, 0.8, 0.2], [0.3, 0.2, 0.7]])
    s = score_clusters(np.array([0, 1, 2]), correct, k=3)
    return ClusterRouter(centroids, s, RoutingConfig(**cfg))


def test_nearest_routing_ranks_by_cluster_scores():
    r = _router(top_n=3)
    res = r.route(np.array([9.0, 1.0]))
    assert res.cluster == 1
    assert res.models == [1, 2, 0]
    assert res.scores == pytest.approx([0.8, 0.2, 0.1])
    assert res.distance == pytest.approx(np.sqrt(2))


def test_soft_routing_matches_the_paper_formula():
    r = _router(strategy="soft", top_k=2, beta=0.5, top_n=3)
    q = np.array([6.0, 0.0])
    res = r.route(q)
    d = np.array([6.0, 4.0])  # distances to clusters 0 and 1
    w = np.exp(-0.5 * d) / np.exp(-0.5 * d).sum()
    # cluster 0 ranks models [0, 1, 2]; cluster 1 ranks [1, 2, 0]
    expected = {
        0: w[0] / 0.1 + w[1] / 2.1,
        1: w[0] / 1.1 + w[1] / 0.1,
        2: w[0] / 2.1 + w[1] / 1.1,
    }
    order = sorted(expected, key=lambda m: -expected[m])
    assert res.models == order
    assert res.scores == pytest.approx([expected[m] for m in order])
    assert res.clusters == [1, 0]
    assert sum(res.weights) == pytest.approx(1.0)


def test_soft_with_top_k_one_equals_nearest_choice():
    r = _router(top_n=1)
    q = np.random.default_rng(0).normal(size=(50, 2)) * 8
    nearest = [x.models[0] for x in r.route_batch(q)]
    soft = [x.models[0] for x in r.route_batch(q, strategy="soft", top_k=1)]
    assert nearest == soft


def test_unknown_strategy_rejected():
    with pytest.raises(ValueError, match="unknown routing strategy"):
        _router().route(np.zeros(2), strategy="random")
