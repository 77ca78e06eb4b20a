"""Registry of the state backends of one kind (cache, feedback store) and their factory."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

from avengers.state.connection import RedisConnection

B = TypeVar("B")


class BackendRegistry(Generic[B]):
    """Backend classes by name; each is built as ``cls(config, redis)``."""

    def __init__(self, kind: str):
        self.kind = kind
        self._classes: dict[str, Callable[..., B]] = {}

    def register(self, name: str) -> Callable[[type[B]], type[B]]:
        """Class decorator: the backend ``name`` (also set as the class's ``name``)."""

        def wrap(cls: type[B]) -> type[B]:
            cls.name = name  # type: ignore[attr-defined]
            self._classes[name] = cls
            return cls

        return wrap

    def names(self) -> list[str]:
        return sorted(self._classes)

    def create(self, backend: str, config: Any, redis: RedisConnection | None) -> B:
        """Build ``backend``; "auto" is "redis" when a connection is given, else "memory"."""
        if backend == "auto":
            backend = "redis" if redis is not None else "memory"
        try:
            cls = self._classes[backend]
        except KeyError:
            raise ValueError(f"unknown {self.kind} backend {backend!r}; known: {self.names()}") from None
        return cls(config, redis)
