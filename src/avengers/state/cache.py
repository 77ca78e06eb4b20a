"""The response cache: bytes under a key for a while, in Redis or in process memory.

Backends register by name (:func:`register_cache`); :func:`create_cache` builds the configured one. Failures
raise :class:`~avengers.state.connection.StateUnavailable`; callers that must not fail on the cache (the
gateway) catch it and go on without the cache.
"""

from __future__ import annotations

import hashlib
import json
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, ClassVar

from avengers.config.state import CACHE_BACKENDS, CacheConfig
from avengers.state.connection import RedisConnection
from avengers.state.registry import create_backend


def cache_key(fields: dict[str, Any]) -> str:
    """Hex SHA-256 of the canonical JSON of ``fields`` (key order and spacing do not matter)."""
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class ResponseCache(ABC):
    """Values by key with a time to live."""

    name: ClassVar[str]

    def __init__(self, config: CacheConfig):
        self.config = config

    @abstractmethod
    async def get(self, key: str) -> bytes | None:
        """The value, or None when absent or expired."""

    @abstractmethod
    async def set(self, key: str, value: bytes, ttl_seconds: float | None = None) -> None:
        """Store ``value`` for ``ttl_seconds`` (default: the configured TTL); too large values are skipped."""

    async def close(self) -> None:
        """Release connections."""

    def _ttl(self, ttl_seconds: float | None) -> float:
        return self.config.ttl_seconds if ttl_seconds is None else ttl_seconds


CACHES = CACHE_BACKENDS
register_cache = CACHES.register


@register_cache("memory")
class MemoryCache(ResponseCache):
    """Least-recently-used entries with expiry, in this process (lost on restart, not shared)."""

    def __init__(self, config: CacheConfig, redis: RedisConnection | None = None, clock: Callable[[], float] = time.monotonic):
        super().__init__(config)
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._clock = clock

    async def get(self, key: str) -> bytes | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, value = entry
        if expires <= self._clock():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return value

    async def set(self, key: str, value: bytes, ttl_seconds: float | None = None) -> None:
        if len(value) > self.config.max_value_bytes:
            return
        self._entries[key] = (self._clock() + self._ttl(ttl_seconds), value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.config.max_entries:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


@register_cache("redis")
class RedisCache(ResponseCache):
    """Entries in Redis under ``<prefix>cache:<key>`` with a TTL (shared by every gateway replica)."""

    def __init__(self, config: CacheConfig, redis: RedisConnection | None = None):
        super().__init__(config)
        if redis is None:
            raise ValueError("the redis cache needs a Redis connection (set REDIS_URL)")
        self.redis = redis

    async def get(self, key: str) -> bytes | None:
        return await self.redis.run("cache", "get", lambda r: r.get(self.redis.key("cache", key)))

    async def set(self, key: str, value: bytes, ttl_seconds: float | None = None) -> None:
        if len(value) > self.config.max_value_bytes:
            return
        ttl_ms = max(1, int(self._ttl(ttl_seconds) * 1000))
        await self.redis.run("cache", "set", lambda r: r.set(self.redis.key("cache", key), value, px=ttl_ms))


@register_cache("none")
class NoCache(ResponseCache):
    """Caches nothing."""

    def __init__(self, config: CacheConfig, redis: RedisConnection | None = None):
        super().__init__(config)

    async def get(self, key: str) -> bytes | None:
        return None

    async def set(self, key: str, value: bytes, ttl_seconds: float | None = None) -> None:
        return None


def create_cache(config: CacheConfig, redis: RedisConnection | None = None) -> ResponseCache:
    """The configured cache; "auto" is redis when a connection is given, else memory."""
    return create_backend(CACHES, config.backend, config, redis)
