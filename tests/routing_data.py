"""Small generated calibration data for router tests: three topics, one specialist model per topic."""

from __future__ import annotations

import numpy as np

from avengers.config.clustering import ClusteringConfig
from avengers.core.artifact import RouterArtifact
from avengers.core.embedding import Embedder
from avengers.core.fit import fit_router_on_embeddings
from avengers.core.labels import LabeledQuery, LabelSet

MODELS = ["model-math", "model-code", "model-history"]

TEMPLATES = {
    "math": [
        "What is {a} plus {b}?",
        "Solve for x: {a}x + {b} = {c}.",
        "Compute the derivative of x^{a} + {b}x.",
        "What is the remainder when {c} is divided by {a}?",
        "Find the greatest common divisor of {b} and {c}.",
    ],
    "code": [
        "Write a Python function that returns the {a} largest items of a list.",
        "Implement a binary search in Java over a sorted array of {b} integers.",
        "Fix the bug in this JavaScript loop that runs {a} times too often.",
        "Write a SQL query that selects the top {a} customers by revenue.",
        "Refactor this Rust struct to implement the Display trait for {b} fields.",
    ],
    "history": [
        "Who ruled the Roman Empire in the year {y}?",
        "What caused the war that started in {y} in Europe?",
        "Which treaty was signed in {y} after the long conflict?",
        "Describe the medieval kingdom that fell in {y}.",
        "Who was the king of France in {y}?",
    ],
}
SPECIALIST = {"math": "model-math", "code": "model-code", "history": "model-history"}


def make_labels(per_topic: int = 15, seed: int = 0) -> LabelSet:
    """Queries of three topics; each topic's specialist scores 1, the others mostly 0."""
    rng = np.random.default_rng(seed)
    rows = []
    for topic, templates in TEMPLATES.items():
        for i in range(per_topic):
            a, b, c = (int(v) for v in rng.integers(2, 99, size=3))
            query = templates[i % len(templates)].format(a=a, b=b, c=c, y=int(rng.integers(100, 1900)))
            scores = {m: float(m == SPECIALIST[topic] or rng.random() < 0.1) for m in MODELS}
            rows.append(LabeledQuery(f"{topic}-{i}", topic, "train", query, scores))
    return LabelSet(rows=rows, models=list(MODELS))


def fit_test_router(embedder: Embedder, k: int = 3, seed: int = 0, per_topic: int = 15) -> RouterArtifact:
    """A router fitted on :func:`make_labels` with ``embedder``."""
    labels = make_labels(per_topic, seed)
    embeddings = embedder.encode(labels.queries)
    return fit_router_on_embeddings(labels, embeddings, embedder.name, ClusteringConfig(k=k, seed=seed, n_init=3))
