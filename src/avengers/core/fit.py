"""Fit a router from labelled calibration queries: embed -> cluster -> score -> fit the selectors.

Optionally prune the pool first, as the authors do: keep the N models that together cover the clusters best
(:func:`select_models`), and fit the router on those only.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from avengers.config.clustering import ClusteringConfig
from avengers.config.routing import (
    CLUSTER_SELECTORS,
    RoutingConfig,
    ScoringConfig,
    SelectorsConfig,
    fit_routing,
)
from avengers.core.artifact import RouterArtifact
from avengers.core.clustering import Clustering, cluster
from avengers.core.embedding import Embedder
from avengers.core.labels import LabelSet
from avengers.core.scoring import score_clusters
from avengers.core.selectors import FitData, create_selector


def fit_router(
    labels: LabelSet,
    embedder: Embedder,
    clustering: ClusteringConfig | None = None,
    scoring: ScoringConfig | None = None,
    routing: RoutingConfig | None = None,
    *,
    selectors: SelectorsConfig | None = None,
    select_models_count: int | None = None,
    show_progress: bool = False,
) -> RouterArtifact:
    """Embed the calibration queries, then fit centroids, per-cluster model scores and the selectors."""
    embeddings = embedder.encode(labels.queries, show_progress=show_progress)
    return fit_router_on_embeddings(
        labels, embeddings, embedder.name, clustering, scoring, routing,
        selectors=selectors, select_models_count=select_models_count,
    )


def fit_router_on_embeddings(
    labels: LabelSet,
    embeddings: np.ndarray,
    embedder_name: str,
    clustering: ClusteringConfig | None = None,
    scoring: ScoringConfig | None = None,
    routing: RoutingConfig | None = None,
    *,
    selectors: SelectorsConfig | None = None,
    select_models_count: int | None = None,
    clustered: Clustering | None = None,
) -> RouterArtifact:
    """Fit on precomputed embeddings of ``labels.queries`` (made by the embedder ``embedder_name``).

    ``routing`` None: :func:`~avengers.config.routing.fit_routing` (the selector study's default).
    ``selectors`` None fits only the selector the routing strategy needs (none for nearest/soft); the default
    strategy's selector is always fitted;
    ``select_models_count`` keeps the
    N models that cover the clusters best (:func:`select_models`); ``clustered`` reuses a clustering of
    ``embeddings`` made with ``clustering`` (studies that fit several routers on one clustering).
    """
    clustering = clustering or ClusteringConfig()
    scoring = scoring or ScoringConfig()
    routing = routing or fit_routing()
    if selectors is None:  # only what the default routing needs
        selectors = SelectorsConfig(fit=[])
    if routing.strategy not in CLUSTER_SELECTORS and routing.strategy not in selectors.fit:
        selectors = selectors.model_copy(update={"fit": [*selectors.fit, routing.strategy]})  # it can route by default
    embeddings = np.asarray(embeddings, dtype=np.float32)
    if len(embeddings) != len(labels):
        raise ValueError(f"{len(embeddings)} embeddings for {len(labels)} labelled queries")
    result = clustered if clustered is not None else cluster(embeddings, clustering)
    models = list(labels.models)
    matrix = labels.score_matrix()
    fit_params: dict = {"clustering": clustering.to_dict(), "scoring": scoring.to_dict()}
    pruned: dict | None = None
    if select_models_count is not None:
        full = score_clusters(result.labels, matrix, result.k, smoothing=scoring.smoothing)
        keep = select_models(full.scores, full.counts, select_models_count)
        pruned = {
            "from": models,
            "kept": [models[j] for j in keep],
            "calibration_routed_all": coverage(full.scores, full.counts, list(range(len(models)))),
            "calibration_routed_kept": coverage(full.scores, full.counts, keep),
        }
        models = [models[j] for j in keep]
        matrix = matrix[:, keep]
        fit_params["select_models"] = select_models_count
    scores = score_clusters(result.labels, matrix, result.k, smoothing=scoring.smoothing)
    costs = labels.cost_matrix(models)
    if routing.alpha > 0 and costs is None:
        raise ValueError(f"default alpha {routing.alpha:g} needs 'costs' on every row of {labels.source}")
    cost_table = None if costs is None else score_clusters(result.labels, costs, result.k).scores
    data = FitData(embeddings, matrix, result.labels, result.centroids, scores.scores, np.array(labels.datasets))
    states = {}
    for name in selectors.fit:
        selector = create_selector(name, selectors)
        selector.fit(data)
        states[name] = selector.state()
    if selectors.fit:
        fit_params["selectors"] = selectors.to_dict()
    stats = {
        "best_single_model": best_single_model(labels, matrix, models),
        "dataset_best_models": dataset_best_models(labels, matrix, models),
        "calibration_rows": len(labels),
        "datasets": dict(Counter(labels.datasets)),
        "labels_file": labels.source,
    }
    if pruned is not None:
        stats["pool_pruning"] = pruned
    return RouterArtifact(
        models=models,
        centroids=result.centroids,
        cluster_scores=scores,
        embedder_model=embedder_name,
        embedder_dimension=int(embeddings.shape[1]),
        fit_params=fit_params,
        routing=routing,
        stats=stats,
        selector_states=states,
        costs=cost_table,
    )


def macro_means(labels: LabelSet, scores: np.ndarray) -> dict[str, np.ndarray]:
    """Each dataset's mean score of every model (columns of ``scores``)."""
    datasets = np.array(labels.datasets)
    return {d: scores[datasets == d].mean(axis=0) for d in labels.dataset_names}


def best_single_model(labels: LabelSet, scores: np.ndarray | None = None, models: list[str] | None = None) -> str:
    """The model with the highest score averaged over datasets (each dataset weighs the same).

    ``scores`` is ``labels.score_matrix(models)`` when the caller already has it.
    """
    models = labels.models if models is None else models
    scores = labels.score_matrix(models) if scores is None else scores
    macro = np.mean(list(macro_means(labels, scores).values()), axis=0)
    return models[int(np.argmax(macro))]


def dataset_best_models(labels: LabelSet, scores: np.ndarray, models: list[str]) -> dict[str, str]:
    """Each dataset's best model on the calibration file (the honest per-dataset baseline)."""
    return {d: models[int(np.argmax(means))] for d, means in macro_means(labels, scores).items()}


def coverage(table: np.ndarray, counts: np.ndarray, keep: list[int]) -> float:
    """Calibration score of nearest routing restricted to the models ``keep``: sum_c n_c max_j table[c, j] / n."""
    return float((counts * table[:, keep].max(axis=1)).sum() / max(counts.sum(), 1))


def select_models(table: np.ndarray, counts: np.ndarray, n: int) -> list[int]:
    """The ``n`` models that cover the clusters best, chosen greedily (The Avengers, arXiv 2505.19797: the
    ensemble is pruned to the models that are best on some clusters): each step adds the model that raises
    :func:`coverage` most (ties: the lower index). Returned in the original order."""
    m = table.shape[1]
    if not 1 <= n <= m:
        raise ValueError(f"--select-models must be between 1 and the {m} models of the labels, got {n}")
    chosen: list[int] = []
    for _ in range(n):
        rest = [j for j in range(m) if j not in chosen]
        gains = [coverage(table, counts, [*chosen, j]) for j in rest]
        chosen.append(rest[int(np.argmax(gains))])
    return sorted(chosen)
