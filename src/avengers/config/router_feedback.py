"""How the Router service learns from feedback: live tallies update the served scores, optional exploration."""

from __future__ import annotations

from pydantic import Field

from avengers.config.base import ConfigModel
from avengers.config.state import FeedbackConfig, RedisConfig


class RouterFeedbackConfig(ConfigModel):
    enabled: bool = False
    """Read the feedback tallies of the served router version (kept by the gateway in Redis per cluster and
    model) at every poll and route on Beta-posterior scores: (weight * calibration score + feedback sum) /
    (weight + feedback count). A model that keeps getting bad feedback on a cluster sinks in that cluster's
    ranking from the next poll on."""

    redis: RedisConfig = Field(default_factory=RedisConfig)
    """The Redis the gateways keep feedback in (default ``$REDIS_URL``; required when enabled)."""

    store: FeedbackConfig = FeedbackConfig(backend="redis")
    """Key layout of the feedback store (the gateway's ``feedback`` settings; the backend must be redis)."""

    prior_weight: float | None = Field(default=None, ge=0.0)
    """Pseudo-observations behind each calibration score. None: the weight recorded in the router (10 unless
    a refit set another)."""

    explore_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    """Share of Route calls that explore (Thompson sampling, arXiv 1707.02038): the nearest cluster's scores
    of models with fewer than ``explore_max_observations`` feedback observations there are drawn from their
    Beta posteriors instead of taken at the mean. 0 disables exploration; it is rate-limited by design."""

    explore_max_observations: int = Field(default=20, ge=1)
    """Models with at least this many feedback observations on a cluster are no longer explored there."""

    seed: int | None = None
    """Seed of the exploration draws (None: from the OS)."""
