"""How per-cluster scores are estimated, which selectors a fit builds, and how a query is routed."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from avengers.config.base import ConfigModel
from avengers.registry import registry

SELECTORS = registry("routing selector", home="avengers.core.selectors")
"""Routing selectors by name; the built-ins are registered by :mod:`avengers.core.selectors`."""

CLUSTER_SELECTORS = ("nearest", "soft")
"""Selectors that route with the cluster table alone (every router can use them, fitted or not)."""


class ScoringConfig(ConfigModel):
    smoothing: float = Field(default=0.0, ge=0.0)
    """Pseudo-count pulling each cluster's model mean toward the model's global mean:
    (sum + s * global) / (count + s). 0 is the paper's plain mean."""


class RoutingConfig(ConfigModel):
    """Request-time routing: the selector used, its knobs, and the quality/cost weight."""

    strategy: SELECTORS.name_field() = "nearest"
    """Selector that ranks the models (:mod:`avengers.core.selectors`): "nearest" (nearest centroid's
    ranking), "soft" (the paper's top_k/beta rank scoring), "knn", "hknn", "logistic", "mf", "shrinkage".
    Selectors other than nearest/soft must have been fitted into the router (``SelectorsConfig.fit``).
    A bare config keeps the paper's nearest; routers fitted without a routing config (``avengers fit``)
    default to :data:`FIT_STRATEGY`."""

    distance: Literal["euclidean", "cosine"] = "euclidean"
    """Distance from a query to a centroid, for the nearest cluster and soft routing: "euclidean" (to the
    k-means centroid as fitted) or "cosine" (1 - cos(centroid, query), the rule of the authors' code)."""

    top_k: int = Field(default=5, ge=1)
    """Soft routing: clusters that contribute (5: the best soft routing in the selector study)."""

    beta: float = Field(default=9.0, ge=0.0)
    """Soft routing: inverse temperature of the softmax over distances (9: the best soft routing in the
    selector study, with top_k 5 and Euclidean distances)."""

    top_n: int = Field(default=1, ge=1)
    """Models the router returns by default (the ensemble uses up to this many)."""

    alpha: float = Field(default=0.0, ge=0.0, le=1.0)
    """Cost weight in [0, 1] (Avengers-Pro, arXiv 2508.12631): each model scores
    (1 - alpha) * normalised quality + alpha * (1 - normalised cost), both min-max normalised over the
    models for the query. 0 ranks by quality alone; it needs a router fitted with costs when > 0."""


FIT_STRATEGY = "hknn"
"""Default selector of a fitted router: the best of every selector x distance x K in 5-fold
cross-validation on the RouterDC training file (``bench/selector_study.py``, docs/BENCHMARKS.md)."""


def fit_routing() -> RoutingConfig:
    """The routing a router is fitted with unless told otherwise (:data:`FIT_STRATEGY`, study defaults)."""
    return RoutingConfig(strategy=FIT_STRATEGY)


class SelectorsConfig(ConfigModel):
    """Which selectors a fit builds into the router, and their fit parameters (defaults: the best of each
    selector in the cross-validated selector study, ``bench/selector_study.py``)."""

    fit: list[str] = Field(default_factory=lambda: ["knn", "hknn", "logistic", "mf", "shrinkage"])
    """Learned selectors fitted besides the cluster table (nearest and soft need nothing more). Every
    fitted one can be chosen per request; an empty list keeps the router to the paper's recipe."""

    knn_neighbours: int = Field(default=200, ge=1)
    """kNN: calibration queries whose scores are averaged (cosine similarity)."""

    knn_weighted: bool = False
    """kNN: weight each neighbour by its similarity (False: plain mean)."""

    hknn_neighbours: int = Field(default=25, ge=1)
    """Hierarchical kNN: calibration queries whose scores pull the prior."""

    hknn_strength: float = Field(default=200.0, ge=0.0)
    """Hierarchical kNN: pseudo-observations behind the predicted dataset's means against the neighbours."""

    hknn_classifier_c: float = Field(default=10.0, gt=0.0)
    """Hierarchical kNN: inverse L2 strength of the dataset classifier."""

    logistic_c: float = Field(default=0.1, gt=0.0)
    """Logistic regression: inverse L2 strength (scikit-learn's ``C``)."""

    mf_dimension: int = Field(default=64, ge=1)
    """Matrix factorisation: size of the shared query/model latent space."""

    mf_epochs: int = Field(default=300, ge=1)
    """Matrix factorisation: passes of full-batch Adam over the calibration matrix."""

    mf_learning_rate: float = Field(default=0.01, gt=0.0)
    """Matrix factorisation: Adam step size."""

    mf_l2: float = Field(default=1e-4, ge=0.0)
    """Matrix factorisation: L2 penalty on the weights."""

    shrinkage_parent_k: int = Field(default=8, ge=1)
    """Hierarchical shrinkage: clusters of the coarse level (the fine level is the router's clusters)."""

    shrinkage_strength: float = Field(default=50.0, ge=0.0)
    """Hierarchical shrinkage: pseudo-count pulling a fine cluster toward its parent, and the parent
    toward the global mean."""

    seed: int = 0
    """Seed of the learned selectors (MF initialisation, coarse clustering)."""

    @field_validator("fit")
    @classmethod
    def _known(cls, names: list[str]) -> list[str]:
        for name in names:
            SELECTORS.validate(name)
        return list(dict.fromkeys(names))
