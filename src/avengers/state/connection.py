"""One Redis connection (redis.asyncio) shared by the state stores, failing fast while Redis is down and back
in use as soon as it returns."""

from __future__ import annotations

import asyncio
import contextlib
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
    """A redis.asyncio client plus the key prefix; after a connection failure, fails fast until Redis is back.

    A connection failure opens a fail-fast window of ``backoff_seconds`` (operations raise at once instead of
    waiting on a dead Redis) and drops every pooled connection: after a restart they would all be stale, each
    failing once more and reopening the window. Meanwhile one background PING every
    ``probe_interval_seconds`` checks whether Redis is back; the first that answers closes the window, so
    Redis is used again within about one probe interval of its return.
    """

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
        self._probe: asyncio.Task | None = None

    def key(self, *parts: str) -> str:
        return self.config.key_prefix + ":".join(parts)

    @property
    def available(self) -> bool:
        """False while in the fail-fast window after a connection failure."""
        return time.monotonic() >= self._down_until

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
            STATE_ERRORS.labels(store, operation).inc()
            log.warning("%s %s: redis at %s unavailable: %s", store, operation, self.url, self._last_error)
            await self._went_down()
            raise StateUnavailable(f"redis at {self.url} is unavailable: {self._last_error}") from exc
        except redis.exceptions.RedisError as exc:
            STATE_ERRORS.labels(store, operation).inc()
            raise StateUnavailable(f"redis at {self.url} refused {operation}: {type(exc).__name__}: {exc}") from exc

    async def _went_down(self) -> None:
        """Open the fail-fast window, drop the pooled connections, and probe until Redis answers again."""
        self._down_until = time.monotonic() + self.config.backoff_seconds
        with contextlib.suppress(Exception):  # the sockets are dead anyway
            await self.client.connection_pool.disconnect(inuse_connections=False)
        if self.config.probe_interval_seconds > 0 and (self._probe is None or self._probe.done()):
            self._probe = asyncio.get_running_loop().create_task(self._probe_until_back())

    async def _probe_until_back(self) -> None:
        while True:
            await asyncio.sleep(self.config.probe_interval_seconds)
            try:
                await self.client.ping()
            except Exception:  # noqa: BLE001 - still down (or down again): keep failing fast
                self._down_until = max(self._down_until, time.monotonic() + self.config.probe_interval_seconds)
                continue
            # Back: connections made before the outage are stale; the probe's own is fresh.
            with contextlib.suppress(Exception):
                await self.client.connection_pool.disconnect(inuse_connections=False)
            self._down_until = 0.0
            log.info("redis at %s is back", self.url)
            return

    async def close(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._probe
        await self.client.aclose()
