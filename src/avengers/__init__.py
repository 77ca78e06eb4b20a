"""Avengers: many small open LLMs behind one gRPC API — embed, cluster, route, sample, vote.

The recipe of *The Avengers* (arXiv 2505.19797). This module is the public Python surface; everything not
listed in ``__all__`` is internal and may change between releases. Names load on first use, so
``import avengers`` stays cheap (no torch until an embedder is built).

Offline, on a labels file (``id, dataset, split, query, scores``)::

    import avengers

    labels = avengers.read_labels("train.jsonl")
    embedder = avengers.create_embedder(avengers.EmbeddingConfig())
    router = avengers.fit_router(labels, embedder, avengers.ClusteringConfig(k=64))
    router.save("runs/router")
    loaded = avengers.RouterArtifact.load("runs/router")
    ranked = loaded.router().route(embedder.encode(["What is 12 * 7?"])[0])
    best_model = loaded.models[ranked.models[0]]

    result = avengers.vote("math", ["... Answer: 84", "... Answer: 84", "... Answer: 72"])
    result.answer, result.agreement   # ("84", 0.666...)

Serving: the services (``avengers serve ...``) and the gateway's client (:mod:`avengers.client`); engines
(:class:`Engine`, :func:`create_engine`) run models behind one async interface.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    # the recipe: labels, embedding, fitting (cluster + score), routing, voting
    "LabelSet": "avengers.core.labels",
    "read_labels": "avengers.core.labels",
    "Embedder": "avengers.core.embedding",
    "create_embedder": "avengers.core.embedding",
    "fit_router": "avengers.core.fit",
    "fit_router_on_embeddings": "avengers.core.fit",
    "RouterArtifact": "avengers.core.artifact",
    "Candidate": "avengers.core.voting",
    "VoteResult": "avengers.core.voting",
    "vote": "avengers.core.voting",
    "model_switch_vote": "avengers.core.voting",
    "infer_task_type": "avengers.core.tasks",
    # engines
    "Engine": "avengers.engines.base",
    "GenerationRequest": "avengers.engines.base",
    "SamplingSpec": "avengers.engines.base",
    "create_engine": "avengers.engines.base",
    # configs
    "ClusteringConfig": "avengers.config.clustering",
    "EmbeddingConfig": "avengers.config.embedding",
    "RoutingConfig": "avengers.config.routing",
    "ScoringConfig": "avengers.config.routing",
    "VotingConfig": "avengers.config.voting",
    "ModelConfig": "avengers.config.model_pool",
    "ModelPoolConfig": "avengers.config.model_pool",
}

__all__ = [
    "Candidate",
    "ClusteringConfig",
    "Embedder",
    "EmbeddingConfig",
    "Engine",
    "GenerationRequest",
    "LabelSet",
    "ModelConfig",
    "ModelPoolConfig",
    "RouterArtifact",
    "RoutingConfig",
    "SamplingSpec",
    "ScoringConfig",
    "VoteResult",
    "VotingConfig",
    "create_embedder",
    "create_engine",
    "fit_router",
    "fit_router_on_embeddings",
    "infer_task_type",
    "model_switch_vote",
    "read_labels",
    "vote",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'avengers' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
