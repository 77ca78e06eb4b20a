"""The Gateway service: where its dependencies are, request defaults and limits, timeouts, cache and feedback."""

from __future__ import annotations

import os
from typing import Literal

from pydantic import Field, field_validator

from avengers.config.base import ConfigModel
from avengers.config.model_pool import DEFAULT_APP_NAME, DEFAULT_GRPC_PORT
from avengers.config.server import ServerConfig
from avengers.config.state import CacheConfig, FeedbackConfig, RedisConfig
from avengers.config.tasks import DEFAULT_INSTRUCTIONS, TASK_TYPES
from avengers.config.voting import DEFAULT_SWITCH_THRESHOLD
from avengers.registry import registry

ENSEMBLE_STRATEGIES = registry("ensemble strategy", home="avengers.core.ensemble")
"""Ensemble strategies by name, registered by :mod:`avengers.core.ensemble`."""

DEFAULT_GATEWAY_PORT = 50050

EMBEDDER_ADDR_ENV = "AVENGERS_EMBEDDER_ADDR"
ROUTER_ADDR_ENV = "AVENGERS_ROUTER_ADDR"
VOTER_ADDR_ENV = "AVENGERS_VOTER_ADDR"
MODEL_POOL_ADDR_ENV = "AVENGERS_MODEL_POOL_ADDR"


def _env(name: str, default: str) -> str:
    return os.environ.get(name) or default


class DownstreamConfig(ConfigModel):
    """Addresses (host:port) of the services the gateway calls."""

    embedder: str = Field(default_factory=lambda: _env(EMBEDDER_ADDR_ENV, "127.0.0.1:50051"))
    """Embedder service (used only when ``route_by`` is "embedding"). Default: ``$AVENGERS_EMBEDDER_ADDR``."""

    router: str = Field(default_factory=lambda: _env(ROUTER_ADDR_ENV, "127.0.0.1:50052"))
    """Router service. Default: ``$AVENGERS_ROUTER_ADDR``."""

    voter: str = Field(default_factory=lambda: _env(VOTER_ADDR_ENV, "127.0.0.1:50053"))
    """Voter service. Default: ``$AVENGERS_VOTER_ADDR``."""

    model_pool: str = Field(default_factory=lambda: _env(MODEL_POOL_ADDR_ENV, f"127.0.0.1:{DEFAULT_GRPC_PORT}"))
    """Model pool (Ray Serve gRPC proxy or the standalone server). Default: ``$AVENGERS_MODEL_POOL_ADDR``."""

    model_pool_application: str | None = DEFAULT_APP_NAME
    """Sent as the "application" metadata key with every model pool call (Ray Serve picks the app by it);
    the standalone server ignores it. None sends no metadata."""

    route_by: Literal["query", "embedding"] = "query"
    """"query": the router embeds the query (one hop; the router's own embedder client). "embedding": the
    gateway calls the Embedder first and routes by the vector (the router needs no embedder)."""


class AskDefaults(ConfigModel):
    """Values used when an Ask request leaves them unset."""

    n: int = Field(default=10, ge=1, le=64)
    """Samples per request (over all models of the strategy)."""

    temperature: float = Field(default=0.7, ge=0.0, le=2.0)
    """Sampling temperature."""

    max_tokens: int = Field(default=0, ge=0)
    """Generated tokens per sample; 0 leaves it to each model's default in the pool."""

    strategy: ENSEMBLE_STRATEGIES.name_field() = "self_consistency"
    """Ensemble strategy by registered name: self_consistency, model_switch, top_k_vote, score_weighted_vote,
    log_odds_vote (see :mod:`avengers.core.ensemble`)."""

    top_k: int = Field(default=0, ge=0, le=64)
    """Routed models sharing the n samples under the top-k strategies; 0 leaves it to the strategy (3)."""

    switch_threshold: float = Field(default=DEFAULT_SWITCH_THRESHOLD, gt=0.0, le=1.0)
    """Model switch: agreement of the first model below which the vote goes over both models."""

    timeout_seconds: float = Field(default=300.0, gt=0.0)
    """Deadline of a call whose client set none."""


class AskLimits(ConfigModel):
    """Bounds of an Ask request; anything outside ends with INVALID_ARGUMENT."""

    max_query_chars: int = Field(default=32_768, ge=1)
    """Longest query, in characters."""

    max_n: int = Field(default=64, ge=1, le=64)
    """Most samples one request may ask for."""

    max_top_k: int = Field(default=16, ge=1, le=64)
    """Most routed models one request may have sample (top_k; each samples at least once)."""

    max_tests: int = Field(default=64, ge=0)
    """Most test snippets of a code task."""

    max_tests_chars: int = Field(default=65_536, ge=0)
    """Largest total size of a code task's tests, in characters."""

    max_stop_strings: int = Field(default=16, ge=0)
    """Most stop strings."""

    max_task_id_chars: int = Field(default=256, ge=1)
    """Longest task id."""


class CallTimeoutsConfig(ConfigModel):
    """Upper bounds of single downstream calls; each call also gets at most the request's remaining time."""

    route_seconds: float = Field(default=10.0, gt=0.0)
    """One Route (or Embed) call."""

    generate_seconds: float = Field(default=120.0, gt=0.0)
    """One model's generation; past it the model counts as failed and the next routed model is tried."""

    vote_seconds: float = Field(default=60.0, gt=0.0)
    """One Vote call (code tasks run tests in it)."""


class GatewayServiceConfig(ConfigModel):
    server: ServerConfig = ServerConfig(port=DEFAULT_GATEWAY_PORT)
    """Bind address, message limits and shutdown grace (default port 50050)."""

    downstream: DownstreamConfig = Field(default_factory=DownstreamConfig)
    """Where the embedder, router, voter and model pool are."""

    defaults: AskDefaults = AskDefaults()
    """Defaults of unset request fields."""

    limits: AskLimits = AskLimits()
    """Bounds of a request."""

    timeouts: CallTimeoutsConfig = CallTimeoutsConfig()
    """Per-call timeouts toward the dependencies."""

    max_samples_per_call: int = Field(default=16, ge=1, le=64)
    """A model's share of n is sent in concurrent Generate calls of at most this many samples (the pool's
    per-request ``max_n``)."""

    instructions: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_INSTRUCTIONS))
    """System message per task type ("math", "multiple_choice", "code", "free_text") asking for the answer in
    the form the voter extracts; "" (or a type left out) sends the query alone."""

    redis: RedisConfig = Field(default_factory=RedisConfig)
    """Redis shared by the cache and the feedback store (URL default: ``$REDIS_URL``; unset: in process)."""

    cache: CacheConfig = CacheConfig()
    """Response cache."""

    feedback: FeedbackConfig = FeedbackConfig()
    """Request records and feedback."""

    @field_validator("instructions")
    @classmethod
    def _known_task_types(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(value) - set(TASK_TYPES))
        if unknown:
            raise ValueError(f"instructions for unknown task types {unknown}; known: {list(TASK_TYPES)}")
        return value
