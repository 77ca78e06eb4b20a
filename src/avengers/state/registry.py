"""Building a state backend (cache, feedback store) by name from its :class:`avengers.registry.Registry`."""

from __future__ import annotations

from typing import Any

from avengers.registry import Registry
from avengers.state.connection import RedisConnection


def create_backend(backends: Registry[Any], backend: str, config: Any, redis: RedisConnection | None) -> Any:
    """Build ``backend`` as ``cls(config, redis)``; "auto" is "redis" when a connection is given, else "memory"."""
    if backend == "auto":
        backend = "redis" if redis is not None else "memory"
    return backends.get(backend)(config, redis)
