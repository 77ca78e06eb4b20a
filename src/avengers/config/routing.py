"""How per-cluster scores are estimated and turned into a model ranking."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from avengers.config.base import ConfigModel


class ScoringConfig(ConfigModel):
    smoothing: float = Field(default=0.0, ge=0.0)
    """Pseudo-count pulling each cluster's model mean toward the model's global mean:
    (sum + s * global) / (count + s). 0 is the paper's plain mean."""


class RoutingConfig(ConfigModel):
    strategy: Literal["nearest", "soft"] = "nearest"
    """"nearest": the nearest centroid's ranking. "soft": the top_k nearest clusters weighted by
    softmax(-beta * distance); a model scores sum(weight / (rank + 0.1))."""

    top_k: int = Field(default=3, ge=1)
    """Soft routing: clusters that contribute."""

    beta: float = Field(default=9.0, ge=0.0)
    """Soft routing: inverse temperature of the softmax over distances."""

    top_n: int = Field(default=1, ge=1)
    """Models the router returns by default (the ensemble uses up to this many)."""
