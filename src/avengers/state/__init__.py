"""Shared state of the gateway: the response cache and the feedback store, in Redis or in process memory."""

from __future__ import annotations

from avengers.config.state import RedisConfig
from avengers.state.cache import MemoryCache, RedisCache, ResponseCache, cache_key, create_cache
from avengers.state.connection import RedisConnection, StateError, StateUnavailable
from avengers.state.feedback import (
    FeedbackEntry,
    FeedbackStore,
    MemoryFeedbackStore,
    RedisFeedbackStore,
    RequestRecord,
    ScoreTally,
    UnknownRequest,
    create_feedback_store,
)


def connect_redis(config: RedisConfig) -> RedisConnection | None:
    """A connection when a Redis URL is configured, else None (the stores then keep state in process)."""
    return RedisConnection(config) if config.url else None


__all__ = [
    "FeedbackEntry", "FeedbackStore", "MemoryCache", "MemoryFeedbackStore", "RedisCache", "RedisConnection",
    "RedisFeedbackStore", "RequestRecord", "ResponseCache", "ScoreTally", "StateError", "StateUnavailable",
    "UnknownRequest", "cache_key", "connect_redis", "create_cache", "create_feedback_store",
]
