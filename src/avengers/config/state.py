"""Shared state of the gateway: the response cache and the feedback store (Redis, or in process)."""

from __future__ import annotations

import os

from pydantic import Field

from avengers.config.base import ConfigModel
from avengers.registry import registry

CACHE_BACKENDS = registry("cache backend", home="avengers.state.cache", aliases=["auto"])
"""Response caches by name (:mod:`avengers.state.cache`); "auto" picks redis or memory."""

FEEDBACK_BACKENDS = registry("feedback backend", home="avengers.state.feedback", aliases=["auto"])
"""Feedback stores by name (:mod:`avengers.state.feedback`); "auto" picks redis or memory."""

REDIS_URL_ENV = "REDIS_URL"


def redis_url_from_env() -> str | None:
    """``$REDIS_URL``, or None when unset or empty."""
    return os.environ.get(REDIS_URL_ENV) or None


class RedisConfig(ConfigModel):
    """Connection to Redis shared by the cache and the feedback store."""

    url: str | None = Field(default_factory=redis_url_from_env)
    """redis:// or rediss:// URL (e.g. "redis://redis:6379/0"). Default: ``$REDIS_URL``; None (or "") keeps
    the state in process memory, which is lost on restart and not shared between replicas."""

    key_prefix: str = Field(default="avengers:", pattern=r"^[A-Za-z0-9:_.-]*$")
    """Prefix of every key written (several deployments or tests can share one Redis)."""

    connect_timeout_seconds: float = Field(default=0.5, gt=0.0)
    """Connection timeout; a Redis that cannot be reached fails the operation after it."""

    operation_timeout_seconds: float = Field(default=1.0, gt=0.0)
    """Socket timeout of one command."""

    backoff_seconds: float = Field(default=5.0, ge=0.0)
    """After a connection failure, operations fail at once for this long instead of waiting on a dead Redis
    (ended early by a successful probe, see ``probe_interval_seconds``)."""

    probe_interval_seconds: float = Field(default=0.5, ge=0.0)
    """While Redis is down, one background PING this often; the first that answers ends the fail-fast window,
    so Redis is used again within about this long after it returns (0: no probe, wait out the backoff)."""


class CacheConfig(ConfigModel):
    """Response cache of the gateway."""

    backend: CACHE_BACKENDS.name_field() = "auto"
    """"redis", "memory" (per process LRU), "none" (no cache), or "auto": redis when a URL is set, else memory."""

    ttl_seconds: float = Field(default=3600.0, gt=0.0)
    """How long a cached response is served."""

    max_entries: int = Field(default=10_000, ge=1)
    """Memory backend: most responses held (least recently used are evicted)."""

    max_value_bytes: int = Field(default=1_048_576, ge=1)
    """Responses larger than this are not cached."""


class FeedbackConfig(ConfigModel):
    """Where requests are remembered for later feedback, and how feedback is kept."""

    backend: FEEDBACK_BACKENDS.name_field() = "auto"
    """"redis", "memory" (per process), or "auto": redis when a URL is set, else memory."""

    request_ttl_seconds: float = Field(default=7 * 24 * 3600.0, gt=0.0)
    """How long feedback can be given on an answer (its request record expires after this)."""

    stream_max_len: int = Field(default=1_000_000, ge=1)
    """Feedback entries kept in the stream (older ones are trimmed, approximately)."""

    memory_max_requests: int = Field(default=100_000, ge=1)
    """Memory backend: most request records held (oldest are evicted)."""
