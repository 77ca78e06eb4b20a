"""How ``avengers evaluate`` measures the recipe end to end (generation, split, router selection, report)."""

from __future__ import annotations

from pydantic import Field, field_validator

from avengers.config.base import ConfigModel
from avengers.config.routing import CLUSTER_SELECTORS, FIT_STRATEGY, SELECTORS, RoutingConfig


class GenerationConfig(ConfigModel):
    """Sampling of the recorded samples (``--pool`` / ``--model-pool-addr`` runs)."""

    n: int = Field(default=10, ge=1, le=64)
    """Sampled samples per model and query (self-consistency and the votes draw from them); each model also
    answers once greedily (temperature 0), the one-sample baseline."""

    temperature: float = Field(default=0.7, ge=0.0, le=2.0)
    """Temperature of the n sampled samples."""

    max_tokens: int = Field(default=256, ge=1)
    """Generated tokens per sample at most."""

    seed: int = 0
    """Sampling seed (the engines that honour it make runs reproducible)."""

    concurrency: int = Field(default=1, ge=1, le=256)
    """Requests in flight per model (1 suits a CPU engine; raise it for a GPU pool)."""

    timeout_seconds: float = Field(default=600.0, gt=0.0)
    """One Generate call at most; a call that fails is recorded as an empty (abstaining) sample."""


class SelectionConfig(ConfigModel):
    """How the split is made and how every choice (router K, strategy, k) is made on calibration only."""

    calibration_fraction: float = Field(default=0.5, gt=0.0, lt=1.0)
    """Share of each dataset's queries in the calibration split (rows with a ``split`` keep theirs)."""

    seed: int = 0
    """Seed of the split, the cross-validation folds and the bootstrap."""

    selectors: list[str] = Field(default_factory=lambda: ["nearest", FIT_STRATEGY])
    """Routing selectors tried (:mod:`avengers.core.selectors`): the paper's nearest centroid, and the router's
    default selector. The command keeps the router whose best ensemble strategy has the best cross-validated
    accuracy on calibration."""

    clusters: list[int] = Field(default_factory=lambda: [1, 4, 8, 16, 32, 64])
    """K values tried with each cluster selector (nearest, soft); values that leave fewer than
    ``min_queries_per_cluster`` queries per cluster in a fold are skipped."""

    folds: int = Field(default=5, ge=2, le=50)
    """Cross-validation folds inside the calibration split."""

    min_queries_per_cluster: int = Field(default=4, ge=1)
    """A K is tried only when every fold fits at least this many calibration queries per cluster on average."""

    smoothing: float = Field(default=0.0, ge=0.0)
    """Router scoring: pseudo-counts toward each model's global mean (see ScoringConfig.smoothing)."""

    routing: RoutingConfig = Field(default_factory=RoutingConfig)
    """Knobs of the selectors (distance, soft top_k and beta); the selector itself comes from ``selectors``.
    The weighted votes use the routing scores as weights: accuracies for nearest, kNN and hknn."""

    bootstrap: int = Field(default=10_000, ge=100)
    """Bootstrap resamples of the test queries for the 95% intervals."""

    @field_validator("clusters")
    @classmethod
    def _positive(cls, value: list[int]) -> list[int]:
        if not value or any(k < 1 for k in value):
            raise ValueError("clusters must be positive integers")
        return sorted(set(value))

    @field_validator("selectors")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("selectors: give at least one")
        for name in value:
            SELECTORS.validate(name)
        return list(dict.fromkeys(value))


__all__ = ["CLUSTER_SELECTORS", "GenerationConfig", "SelectionConfig"]
