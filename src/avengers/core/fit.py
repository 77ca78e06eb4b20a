"""Fit a router from labelled calibration queries: embed -> cluster -> score."""

from __future__ import annotations

from collections import Counter

import numpy as np

from avengers.config.clustering import ClusteringConfig
from avengers.config.routing import RoutingConfig, ScoringConfig
from avengers.core.artifact import RouterArtifact
from avengers.core.clustering import cluster
from avengers.core.embedding import Embedder
from avengers.core.labels import LabelSet
from avengers.core.scoring import score_clusters


def fit_router(
    labels: LabelSet,
    embedder: Embedder,
    clustering: ClusteringConfig | None = None,
    scoring: ScoringConfig | None = None,
    routing: RoutingConfig | None = None,
    *,
    show_progress: bool = False,
) -> RouterArtifact:
    """Embed the calibration queries, then fit centroids and per-cluster model scores."""
    embeddings = embedder.encode(labels.queries, show_progress=show_progress)
    return fit_router_on_embeddings(labels, embeddings, embedder.name, clustering, scoring, routing)


def fit_router_on_embeddings(
    labels: LabelSet,
    embeddings: np.ndarray,
    embedder_name: str,
    clustering: ClusteringConfig | None = None,
    scoring: ScoringConfig | None = None,
    routing: RoutingConfig | None = None,
) -> RouterArtifact:
    """Fit on precomputed embeddings of ``labels.queries`` (made by the embedder ``embedder_name``)."""
    clustering = clustering or ClusteringConfig()
    scoring = scoring or ScoringConfig()
    embeddings = np.asarray(embeddings, dtype=np.float32)
    if len(embeddings) != len(labels):
        raise ValueError(f"{len(embeddings)} embeddings for {len(labels)} labelled queries")
    result = cluster(embeddings, clustering)
    matrix = labels.score_matrix()
    scores = score_clusters(result.labels, matrix, result.k, smoothing=scoring.smoothing)
    return RouterArtifact(
        models=list(labels.models),
        centroids=result.centroids,
        cluster_scores=scores,
        embedder_model=embedder_name,
        embedder_dimension=int(embeddings.shape[1]),
        fit_params={"clustering": clustering.to_dict(), "scoring": scoring.to_dict()},
        routing=routing or RoutingConfig(),
        stats={
            "best_single_model": best_single_model(labels, matrix),
            "calibration_rows": len(labels),
            "datasets": dict(Counter(labels.datasets)),
            "labels_file": labels.source,
        },
    )


def best_single_model(labels: LabelSet, scores: np.ndarray | None = None) -> str:
    """The model with the highest score averaged over datasets (each dataset weighs the same).

    ``scores`` is ``labels.score_matrix()`` when the caller already has it.
    """
    scores = labels.score_matrix() if scores is None else scores
    datasets = np.array(labels.datasets)
    macro = np.mean([scores[datasets == d].mean(axis=0) for d in labels.dataset_names], axis=0)
    return labels.models[int(np.argmax(macro))]
