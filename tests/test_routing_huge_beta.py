"""Soft routing with a huge beta (issue 13: beta = 1e308 answered OK with NaN scores): the weights stay finite
and, as beta grows, all of them go to the nearest cluster — the limit of softmax(-beta * distance)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from avengers.config import RoutingConfig
from avengers.core.routing import ClusterRouter
from avengers.core.scoring import ClusterScores

CENTROIDS = np.array([[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0]], dtype=np.float32)
SCORES = ClusterScores(
    scores=np.array([[0.9, 0.6, 0.3], [0.2, 0.8, 0.5], [0.4, 0.4, 0.7]]),
    counts=np.array([10, 10, 10]),
    global_scores=np.array([0.5, 0.6, 0.5]),
)


@pytest.mark.parametrize("beta", [1e3, 1e30, 1e308, math.inf])
@pytest.mark.parametrize("query", [(0.0, 0.0), (0.0, -2.0), (1.0, 0.0)], ids=["near", "far", "on-centroid"])
def test_huge_beta_puts_all_weight_on_the_nearest_cluster(beta, query):
    """(0, -2) is over 2 from every centroid: -beta * d overflows to -inf for all of them (the NaN case);
    (1, 0) sits on centroid 0: inf * 0 must not be NaN either."""
    router = ClusterRouter(CENTROIDS, SCORES, RoutingConfig(strategy="soft", top_k=3, top_n=3))
    result = router.route(np.array(query), strategy="soft", beta=beta)
    assert all(math.isfinite(x) for x in [*result.scores, *result.weights])
    assert result.weights == pytest.approx([1.0, 0.0, 0.0])
    # then soft routing ranks like the nearest cluster: 1/(0+0.1), 1/(1+0.1), 1/(2+0.1)
    assert result.models == [0, 1, 2]
    assert result.scores == pytest.approx([10.0, 1 / 1.1, 1 / 2.1])


def test_huge_beta_with_a_tie_splits_the_weight():
    router = ClusterRouter(CENTROIDS, SCORES, RoutingConfig(strategy="soft", top_k=3, top_n=3))
    # (0.5, 1.0) is sqrt(1.25) from both cluster 0 and cluster 1
    result = router.route(np.array([0.5, 1.0]), strategy="soft", beta=1e308)
    assert all(math.isfinite(x) for x in result.scores)
    assert sorted(result.weights, reverse=True) == pytest.approx([0.5, 0.5, 0.0], abs=1e-6)
