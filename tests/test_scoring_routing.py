import math

import numpy as np
import pytest

from avengers.config import RoutingConfig
from avengers.core.routing import ClusterRouter
from avengers.core.scoring import ClusterScores, score_clusters


def test_cluster_means_counts_and_smoothing():
    labels = np.array([0, 0, 1, 1, 1])
    correct = np.array([[1, 0], [1, 1], [0, 1], [0, 1], [1, 0]], dtype=float)
    s = score_clusters(labels, correct, k=3)
    # cluster 0 = rows 0-1: model 0 (1+1)/2 = 1, model 1 (0+1)/2 = 0.5; cluster 1 = rows 2-4: 1/3 and 3/3 - 1/3
    np.testing.assert_allclose(s.scores[0], [1.0, 0.5])
    np.testing.assert_allclose(s.scores[1], [1 / 3, 2 / 3])
    np.testing.assert_allclose(s.global_scores, [0.6, 0.6])  # 3 of 5 rows right for each model
    np.testing.assert_allclose(s.scores[2], [0.6, 0.6])  # empty cluster -> global means
    assert s.counts.tolist() == [2, 3, 0]
    sm = score_clusters(labels, correct, k=3, smoothing=2.0)
    # (sum + s * global) / (count + s) with s = 2, global 0.6:
    # cluster 0: (2 + 1.2) / 4 = 0.8 and (1 + 1.2) / 4 = 0.55; cluster 1: (1 + 1.2) / 5 = 0.44, (2 + 1.2) / 5 = 0.64
    np.testing.assert_allclose(sm.scores, [[0.8, 0.55], [0.44, 0.64], [0.6, 0.6]])
    assert list(s.ranking(0)) == [0, 1]


def test_ranking_ties_go_to_the_better_global_score_then_the_lower_index():
    scores = ClusterScores(
        scores=np.array([[0.4, 0.4, 0.7, 0.4]]), counts=np.array([10]), global_scores=np.array([0.5, 0.6, 0.1, 0.5])
    )
    # 0.7 first; models 0, 1, 3 tie at 0.4: model 1 has the best global score (0.6), then 0 and 3 tie again
    # (0.5): the lower index first
    assert scores.ranking(0).tolist() == [2, 1, 0, 3]


# Golden routing example, worked out by hand. Query q = (0, 0); centroids at distances 1, 2 and 3.
# Cluster scores (rows: clusters; columns: models) and each cluster's ranking, best first:
#   cluster 0: 0.9 0.6 0.3 -> [0, 1, 2]
#   cluster 1: 0.2 0.8 0.5 -> [1, 2, 0]
#   cluster 2: 0.4 0.4 0.7 -> [2, 1, 0]  (models 0 and 1 tie at 0.4; model 1's global score 0.6 > 0.5)
# The paper's rank score of rank r (0 = best) is 1 / (r + 0.1): 10, 10/11 and 10/21 for ranks 0, 1, 2.
GOLDEN_CENTROIDS = np.array([[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0]], dtype=np.float32)
GOLDEN_SCORES = ClusterScores(
    scores=np.array([[0.9, 0.6, 0.3], [0.2, 0.8, 0.5], [0.4, 0.4, 0.7]]),
    counts=np.array([10, 10, 10]),
    global_scores=np.array([0.5, 0.6, 0.5]),
)


def golden_router(**config) -> ClusterRouter:
    return ClusterRouter(GOLDEN_CENTROIDS, GOLDEN_SCORES, RoutingConfig(**config))


def test_nearest_routing_golden_values():
    router = golden_router(top_n=3)
    result = router.route(np.array([0.0, 0.0]))
    assert (result.cluster, result.distance) == (0, pytest.approx(1.0))
    assert result.models == [0, 1, 2] and result.scores == pytest.approx([0.9, 0.6, 0.3])
    # q = (-3, 0.5) is 0.5 from cluster 2, whose tie at 0.4 goes to model 1 (better global score)
    result = router.route(np.array([-3.0, 0.5]))
    assert (result.cluster, result.distance) == (2, pytest.approx(0.5))
    assert result.models == [2, 1, 0] and result.scores == pytest.approx([0.7, 0.4, 0.4])
    assert router.route(np.array([-3.0, 0.5]), top_n=1).models == [2]


def test_soft_routing_golden_values_top_k_3():
    # beta = ln 2: weights proportional to 2^-1, 2^-2, 2^-3, i.e. 4/7, 2/7, 1/7 for clusters 0, 1, 2.
    # model 0, ranks (0, 2, 2): 4/7 * 10 + 2/7 * 10/21 + 1/7 * 10/21 = 40/7 + 10/49 = 290/49 = 5.918367...
    # model 1, ranks (1, 0, 1): 4/7 * 10/11 + 2/7 * 10 + 1/7 * 10/11 = 50/77 + 220/77 = 270/77 = 3.506493...
    # model 2, ranks (2, 1, 0): 4/7 * 10/21 + 2/7 * 10/11 + 1/7 * 10 = (440 + 420 + 2310)/1617 = 3170/1617
    result = golden_router(strategy="soft", top_k=3, beta=math.log(2), top_n=3).route(np.array([0.0, 0.0]))
    assert result.clusters == [0, 1, 2] and result.distances == pytest.approx([1.0, 2.0, 3.0])
    assert result.weights == pytest.approx([4 / 7, 2 / 7, 1 / 7])
    assert result.models == [0, 1, 2]
    assert result.scores == pytest.approx([290 / 49, 270 / 77, 3170 / 1617])
    assert result.scores == pytest.approx([5.918367, 3.506494, 1.960421], abs=1e-6)


def test_soft_routing_golden_values_top_k_2():
    # clusters 0 and 1 only: weights 2^-1 : 2^-2 = 2/3, 1/3.
    # model 0: 2/3 * 10 + 1/3 * 10/21 = 430/63; model 1: 2/3 * 10/11 + 1/3 * 10 = 130/33;
    # model 2: 2/3 * 10/21 + 1/3 * 10/11 = (220 + 210)/693 = 430/693
    result = golden_router(strategy="soft", top_k=2, beta=math.log(2), top_n=3).route(np.array([0.0, 0.0]))
    assert result.clusters == [0, 1] and result.weights == pytest.approx([2 / 3, 1 / 3])
    assert result.models == [0, 1, 2]
    assert result.scores == pytest.approx([430 / 63, 130 / 33, 430 / 693])


def test_soft_routing_golden_values_equal_weights_overturn_the_nearest_cluster():
    # beta = 0: every cluster weighs 1/3, whatever its distance.
    # model 0: (10 + 10/21 + 10/21)/3 = 230/63 = 3.650793...; model 1: (10/11 + 10 + 10/11)/3 = 130/33 = 3.939393...;
    # model 2: (10/21 + 10/11 + 10)/3 = 2630/693 = 3.795093...  -> order [1, 2, 0], while nearest says model 0
    result = golden_router(strategy="soft", top_k=3, beta=0.0, top_n=3).route(np.array([0.0, 0.0]))
    assert result.weights == pytest.approx([1 / 3, 1 / 3, 1 / 3])
    assert result.models == [1, 2, 0]
    assert result.scores == pytest.approx([130 / 33, 2630 / 693, 230 / 63])
    assert golden_router(top_n=1).route(np.array([0.0, 0.0])).models == [0]


def _router(**cfg):
    centroids = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]], dtype=np.float32)
    correct = np.array([[0.9, 0.5, 0.1], [0.1, 0.8, 0.2], [0.3, 0.2, 0.7]])
    s = score_clusters(np.array([0, 1, 2]), correct, k=3)
    return ClusterRouter(centroids, s, RoutingConfig(**cfg))


def test_soft_with_top_k_one_equals_nearest_choice():
    r = _router(top_n=1)
    q = np.random.default_rng(0).normal(size=(50, 2)) * 8
    nearest = [x.models[0] for x in r.route_batch(q)]
    soft = [x.models[0] for x in r.route_batch(q, strategy="soft", top_k=1)]
    assert nearest == soft


def test_unknown_strategy_rejected():
    with pytest.raises(ValueError, match="unknown routing strategy"):
        _router().route(np.zeros(2), strategy="random")
