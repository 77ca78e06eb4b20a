"""A load test of one service (``avengers bench``, :mod:`avengers.loadgen`)."""

from __future__ import annotations

from pydantic import Field, model_validator

from avengers.config.base import ConfigModel
from avengers.registry import registry

LOAD_TARGETS = registry("load target", home="avengers.loadgen")
"""Request kinds of ``avengers bench`` (:mod:`avengers.loadgen`)."""


class LoadConfig(ConfigModel):
    target: LOAD_TARGETS.name_field() = "route"
    """What each request is: "embed" (Embedder.Embed, one text), "route" (Router.Route by query text: embed
    + route), "ask" (Gateway.Ask end to end)."""

    address: str = "127.0.0.1:50052"
    """host:port of the service under test."""

    concurrency: int = Field(default=16, ge=1, le=4096)
    """Clients sending at the same time, each one request after the other (closed loop)."""

    duration_seconds: float | None = Field(default=10.0, gt=0.0)
    """Length of the measured phase; None runs until ``requests`` are done."""

    requests: int | None = Field(default=None, ge=1)
    """Requests in the measured phase; with ``duration_seconds`` too, whichever ends first."""

    warmup_seconds: float = Field(default=2.0, ge=0.0)
    """Load sent before measuring (connections, caches, lazy initialisation); its results are dropped."""

    timeout_seconds: float = Field(default=30.0, gt=0.0)
    """Deadline of one request; a late one counts as DEADLINE_EXCEEDED."""

    channels: int = Field(default=1, ge=1, le=64)
    """gRPC channels (HTTP/2 connections) the clients are spread over."""

    top_n: int = Field(default=0, ge=0)
    """route: ranked models asked for (0: all)."""

    n: int = Field(default=1, ge=1, le=64)
    """ask: samples per request."""

    max_tokens: int = Field(default=0, ge=0)
    """ask: tokens per sample (0: the server's default)."""

    no_cache: bool = True
    """ask: bypass the gateway's response cache (measure the pipeline, not the cache)."""

    @model_validator(mode="after")
    def _bounded(self) -> LoadConfig:
        if self.duration_seconds is None and self.requests is None:
            raise ValueError("a load test needs duration_seconds or requests (or both) to end")
        return self
