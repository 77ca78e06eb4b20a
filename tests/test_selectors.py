"""Routing selectors on data the tests make: a specialist model per topic that every selector must find,
the paper's formulas computed by hand (cosine soft routing), cost-aware alpha, feedback posteriors, pool
pruning, and the router artifact round trip (directory and Qdrant) for every selector."""

from __future__ import annotations

import math

import numpy as np
import pytest
from routing_data import MODELS, SPECIALIST, make_labels

from avengers.config.clustering import ClusteringConfig
from avengers.config.embedding import EmbeddingConfig
from avengers.config.routing import RoutingConfig, SelectorsConfig
from avengers.config.store import StoreConfig
from avengers.core.artifact import RouterArtifact
from avengers.core.embedding import create_embedder
from avengers.core.fit import coverage, fit_router_on_embeddings, select_models
from avengers.core.labels import LabeledQuery, LabelSet
from avengers.core.routing import Router
from avengers.core.scoring import posterior_table, score_clusters, thompson_table
from avengers.core.selectors import available_selectors
from avengers.core.selectors.cluster import softmax_weights
from avengers.stores import create_store

LEARNED = ["knn", "hknn", "logistic", "mf", "shrinkage"]
ALL = ["nearest", "soft", *LEARNED]
SMALL = SelectorsConfig(fit=LEARNED, knn_neighbours=5, hknn_neighbours=5, hknn_strength=5.0, mf_epochs=200, mf_learning_rate=0.05, mf_l2=0.01,
                        shrinkage_parent_k=2, shrinkage_strength=2.0)


@pytest.fixture(scope="module")
def embedder():
    return create_embedder(EmbeddingConfig())  # MiniLM, offline from the installed package


@pytest.fixture(scope="module")
def fitted(embedder):
    train = make_labels(per_topic=20, seed=0)
    return fit_router_on_embeddings(
        train, embedder.encode(train.queries), embedder.name, ClusteringConfig(k=4, seed=0, n_init=5), selectors=SMALL
    )


@pytest.fixture(scope="module")
def unseen(embedder):
    labels = make_labels(per_topic=10, seed=11)
    return labels, embedder.encode(labels.queries)


def test_every_registered_selector_is_covered():
    assert sorted(available_selectors()) == sorted(ALL)


@pytest.mark.parametrize("strategy", ALL)
def test_every_selector_finds_each_topics_specialist(fitted, unseen, strategy):
    labels, x = unseen
    router = fitted.router(RoutingConfig(strategy=strategy))
    chosen, _ = router.choose(x)
    expected = [fitted.models.index(SPECIALIST[d]) for d in labels.datasets]
    hits = np.mean(np.array(chosen) == np.array(expected))
    assert hits >= 0.9, f"{strategy}: specialist chosen on {hits:.0%} of unseen queries"


@pytest.mark.parametrize("strategy", ALL)
def test_every_selector_survives_save_load_and_qdrant(fitted, unseen, strategy, tmp_path):
    _, x = unseen
    routing = RoutingConfig(strategy=strategy)
    expected = fitted.router(routing).choose(x)[0]
    loaded = RouterArtifact.load(fitted.save(tmp_path / "router"))
    assert loaded.version == fitted.version and loaded.strategies == sorted(ALL)
    np.testing.assert_array_equal(loaded.router(routing).choose(x)[0], expected)
    with create_store(StoreConfig(qdrant_path=":memory:")) as store:
        store.publish_and_activate(fitted)
        from_qdrant = store.load_active()
    assert from_qdrant.version == fitted.version and from_qdrant.strategies == sorted(ALL)
    np.testing.assert_array_equal(from_qdrant.router(routing).choose(x)[0], expected)


def test_a_strategy_that_was_not_fitted_is_refused(embedder):
    train = make_labels(per_topic=5, seed=0)
    plain = fit_router_on_embeddings(
        train, embedder.encode(train.queries), embedder.name, ClusteringConfig(k=3, n_init=2),
        routing=RoutingConfig(strategy="nearest"),
    )
    assert plain.strategies == ["nearest", "soft"]  # only what the default routing needs
    default = fit_router_on_embeddings(train, embedder.encode(train.queries), embedder.name, ClusteringConfig(k=3, n_init=2))
    assert default.routing.strategy == "hknn" and default.strategies == ["hknn", "nearest", "soft"]
    with pytest.raises(ValueError, match="'knn' for this router"):
        plain.router().route(embedder.encode(["What is 2 plus 2?"])[0], strategy="knn")


def _two_cluster_router(**routing) -> Router:
    # Unnormalised centroids: Euclidean and cosine disagree on the nearest one for q below.
    centroids = np.array([[2.0, 0.0], [0.6, 0.8]], dtype=np.float32)
    table = np.array([[0.9, 0.2, 0.4], [0.1, 0.8, 0.5]])
    scores = score_clusters(np.array([0, 1]), table, k=2)
    return Router(centroids, scores, RoutingConfig(**{"strategy": "nearest", **routing}))


def test_cosine_soft_routing_golden_value_computed_by_hand():
    q = np.array([0.8, 0.6])  # unit vector
    # cosine distances 1 - cos(c, q): c0 = (1, 0) -> 1 - 0.8 = 0.2; c1 = (0.6, 0.8) -> 1 - 0.96 = 0.04
    # weights softmax(-beta * d) with beta = 5: e^-1 / (e^-1 + e^-0.2) and e^-0.2 / (...)
    w1 = math.exp(-0.2) / (math.exp(-1.0) + math.exp(-0.2))
    w0 = 1.0 - w1
    # cluster 0 ranks models [0, 2, 1]; cluster 1 ranks [1, 2, 0]; score = sum_c w_c / (rank + 0.1)
    expected = {0: w0 / 0.1 + w1 / 2.1, 1: w0 / 2.1 + w1 / 0.1, 2: w0 / 1.1 + w1 / 1.1}
    res = _two_cluster_router(strategy="soft", distance="cosine", top_k=2, beta=5.0, top_n=3).route(q)
    assert res.cluster == 1 and res.clusters == [1, 0]
    assert res.distances == pytest.approx([0.04, 0.2], abs=1e-6)
    assert res.weights == pytest.approx([w1, w0])
    assert res.models == [1, 0, 2]
    assert res.scores == pytest.approx([expected[1], expected[0], expected[2]])
    # Euclidean to the unnormalised centroids picks the other cluster: |q - c0| = 1.28 > |q - c1| = 0.28
    assert _two_cluster_router(strategy="nearest").route(q).cluster == 1
    far = np.array([1.0, 0.0])
    assert _two_cluster_router(distance="euclidean").route(far).cluster == 1  # |(1,0)-(2,0)| = 1 > 0.89
    assert _two_cluster_router(distance="cosine").route(far).cluster == 0  # same direction as c0


@pytest.mark.parametrize("beta", [0.0, 1e300, math.inf])
def test_soft_weights_stay_finite_for_any_beta(beta):
    w = softmax_weights(np.array([[0.3, 0.1, 0.7]]), beta)
    assert np.isfinite(w).all() and w.sum() == pytest.approx(1.0)
    if beta > 1e6:
        assert w.tolist() == [[0.0, 1.0, 0.0]]
    res = _two_cluster_router(strategy="soft", top_k=2, beta=beta, top_n=3).route(np.array([0.8, 0.6]))
    assert all(math.isfinite(s) for s in res.scores)


def test_alpha_trades_quality_for_cost_as_avengers_pro():
    centroids = np.array([[1.0, 0.0]], dtype=np.float32)
    quality = np.array([[0.9, 0.8, 0.5]])
    costs = np.array([[10.0, 2.0, 1.0]])
    router = Router(centroids, score_clusters(np.array([0]), quality, k=1), RoutingConfig(strategy="nearest", top_n=3), costs=costs)
    q = np.array([1.0, 0.0])
    assert router.route(q, alpha=0.0).models == [0, 1, 2]
    assert router.route(q, alpha=1.0).models == [2, 1, 0]
    # alpha 0.5: q~ = (1, 0.75, 0), c~ = (1, 1/9, 0); score = 0.5 q~ + 0.5 (1 - c~)
    res = router.route(q, alpha=0.5)
    assert res.models == [1, 0, 2]  # 0 and 2 tie at 0.5: the higher global score first
    assert res.scores == pytest.approx([0.5 * 0.75 + 0.5 * 8 / 9, 0.5, 0.5])
    with pytest.raises(ValueError, match="needs model costs"):
        Router(centroids, score_clusters(np.array([0]), quality, k=1)).route(q, strategy="nearest", alpha=0.5)


def test_costs_in_labels_reach_the_router(embedder):
    rows = [
        LabeledQuery(r.id, r.dataset, r.split, r.query, r.scores, {"model-math": 5.0, "model-code": 1.0, "model-history": 1.0})
        for r in make_labels(per_topic=10, seed=0).rows
    ]
    labels = LabelSet(rows=rows, models=list(MODELS))
    art = fit_router_on_embeddings(labels, embedder.encode(labels.queries), embedder.name, ClusteringConfig(k=3, n_init=2))
    assert art.costs is not None and np.allclose(art.costs[:, 0], 5.0)
    math_query = embedder.encode(["What is 12 plus 30?"])[0]
    assert art.router().route(math_query).models[0] == 0
    assert art.router().route(math_query, alpha=1.0).models[0] != 0  # the expensive specialist is dropped


def test_feedback_posterior_and_thompson_draws():
    prior = np.array([[0.8, 0.5]])
    post = posterior_table(prior, 10.0, counts=np.array([[10, 0]]), sums=np.array([[0.0, 0.0]]))
    np.testing.assert_allclose(post, [[(10 * 0.8 + 0) / 20, 0.5]])
    draws = np.array([thompson_table(np.random.default_rng(s), prior, 10.0, np.zeros((1, 2)), np.zeros((1, 2)))[0]
                      for s in range(400)])
    assert ((draws > 0) & (draws < 1)).all()
    assert draws[:, 0].mean() == pytest.approx((1 + 8) / (2 + 10), abs=0.03)  # Beta(1 + 8, 1 + 2) mean


@pytest.mark.parametrize("strategy", ALL)
def test_negative_feedback_moves_routing_away_for_every_selector(fitted, embedder, strategy):
    q = embedder.encode(["What is 41 plus 17?"])[0]
    before = fitted.router(RoutingConfig(strategy=strategy)).route(q)
    specialist = fitted.models.index("model-math")
    assert before.models[0] == specialist
    counts = np.zeros((fitted.k, len(fitted.models)))
    sums = np.zeros_like(counts)
    counts[before.cluster, specialist] = 200  # 200 answers of the specialist on this cluster judged wrong
    after = fitted.router(RoutingConfig(strategy=strategy), feedback=(counts, sums)).route(q)
    assert after.cluster == before.cluster and after.models[0] != specialist


def test_pool_pruning_keeps_the_models_that_cover_the_clusters():
    # two specialists (0, 1), a generalist (2) and a model only good on the small cluster (3)
    table = np.array([[0.9, 0.1, 0.6, 0.2], [0.1, 0.9, 0.6, 0.2], [0.5, 0.5, 0.5, 0.9]])
    counts = np.array([10, 10, 1])
    assert select_models(table, counts, 1) == [2]  # 6 + 6 + 0.5 beats 9 + 1 + 0.5
    assert select_models(table, counts, 2) == [0, 2]  # + model 0: 9 + 6 + 0.5 (ties model 1: lower index)
    assert select_models(table, counts, 3) == [0, 1, 2]
    assert coverage(table, counts, [0, 1]) == pytest.approx((9 + 9 + 0.5) / 21)
    with pytest.raises(ValueError, match="between 1 and the 4 models"):
        select_models(table, counts, 5)


def test_fit_with_select_models_records_what_pruning_costs(embedder):
    train = make_labels(per_topic=10, seed=0)
    art = fit_router_on_embeddings(
        train, embedder.encode(train.queries), embedder.name, ClusteringConfig(k=3, n_init=2), select_models_count=2
    )
    pruning = art.stats["pool_pruning"]
    assert len(art.models) == 2 and pruning["kept"] == art.models and pruning["from"] == MODELS
    assert pruning["calibration_routed_kept"] < pruning["calibration_routed_all"]
