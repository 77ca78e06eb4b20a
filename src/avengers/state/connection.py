"""One Redis connection (redis.asyncio) shared by the state stores, failing fast while Redis is down."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from prometheus_client import Counter

from avengers.config.state import RedisConfig

log = logging.getLogger(__name__)
T = TypeVar("T")

STATE_ERRORS = Counter(
    "avengers_state_errors_total", "Failed operations on the shared state (Redis)", ["store", "operation"]
)


class StateError(Exception):
    """A state operation that failed (base class)."""


class StateUnavailable(StateError, ConnectionError):
    """The state backend (Redis) cannot be reached or refused the operation."""


def redacted_url(url: str) -> str:
    """``url`` without its password (safe for logs and error messages)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit(parts._replace(netloc=user + netloc))


class RedisConnection:
    """A redis.asyncio client plus the key prefix; after a connection failure, fails fast for a while."""

    def __init__(self, config: RedisConfig, client: Any | None = None):
        if not config.url:
            raise ValueError("RedisConnection needs a Redis URL (redis.url or $REDIS_URL)")
        import redis.asyncio as aioredis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        self.config = config
        self.url = redacted_url(config.url)
        self.client = client or aioredis.from_url(
            config.url,
            socket_connect_timeout=config.connect_timeout_seconds,
            socket_timeout=config.operation_timeout_seconds,
            retry=Retry(NoBackoff(), 0),  # the caller decides; a dead Redis must not slow every request
        )
        self._down_until = 0.0
        self._last_error = ""

    def key(self, *parts: str) -> str:
        return self.config.key_prefix + ":".join(parts)

    async def run(self, store: str, operation: str, fn: Callable[[Any], Awaitable[T]]) -> T:
        """``await fn(client)``; any Redis failure becomes :class:`StateUnavailable` naming Redis and the cause."""
        import redis.exceptions

        now = time.monotonic()
        if now < self._down_until:
            STATE_ERRORS.labels(store, operation).inc()
            raise StateUnavailable(
                f"redis at {self.url} is unavailable (last error: {self._last_error}; retrying in "
                f"{self._down_until - now:.1f}s)"
            )
        try:
            return await fn(self.client)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError, TimeoutError) as exc:
            self._last_error = f"{type(exc).__name__}: {exc}"
            self._down_until = time.monotonic() + self.config.backoff_seconds
            STATE_ERRORS.labels(store, operation).inc()
            log.warning("%s %s: redis at %s unavailable: %s", store, operation, self.url, self._last_error)
            raise StateUnavailable(f"redis at {self.url} is unavailable: {self._last_error}") from exc
        except redis.exceptions.RedisError as exc:
            STATE_ERRORS.labels(store, operation).inc()
            raise StateUnavailable(f"redis at {self.url} refused {operation}: {type(exc).__name__}: {exc}") from exc

    async def close(self) -> None:
        await self.client.aclose()
