"""The centroid store interface: published router versions and the one that is active.

A store keeps every published :class:`~avengers.core.artifact.RouterArtifact` under its version (a content
hash) and marks one version active. Publishing never changes what routers serve; activating does, in one
atomic step, so a router polling :meth:`CentroidStore.active_version` sees either the old or the new version,
never a mix. Backends register by name; :func:`create_store` builds one from a :class:`StoreConfig`.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Self

from avengers.config.store import STORES, StoreConfig
from avengers.core.artifact import RouterArtifact

VERSION_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class StoreError(Exception):
    """A store operation that cannot be done (base class)."""


class VersionNotFound(StoreError, LookupError):
    """No published router has this version."""


class NoActiveRouter(StoreError, LookupError):
    """Nothing has been activated yet."""


class StoreConflict(StoreError):
    """The operation conflicts with the store's state (e.g. deleting the active version)."""


class StoreUnavailable(StoreError, ConnectionError):
    """The store cannot be reached (server down, embedded directory held by another process)."""


@dataclass(frozen=True)
class StoredRouter:
    """Summary of one published version (what ``avengers routers list`` shows)."""

    version: str
    created_at: str
    num_clusters: int
    models: list[str]
    embedder_model: str
    dimension: int
    active: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    """Backend details (e.g. the Qdrant collection name)."""

    @classmethod
    def from_metadata(cls, meta: dict[str, Any], active: bool, **extra: Any) -> StoredRouter:
        return cls(
            version=meta["version"],
            created_at=meta.get("created_at", ""),
            num_clusters=int(meta["num_clusters"]),
            models=list(meta["models"]),
            embedder_model=meta["embedder"]["model"],
            dimension=int(meta["embedder"]["dimension"]),
            active=active,
            extra=extra,
        )


def check_version(version: str) -> str:
    """The version, if it is a well-formed version string; else :class:`VersionNotFound`."""
    if not isinstance(version, str) or not VERSION_PATTERN.match(version):
        raise VersionNotFound(f"{version!r} is not a router version (expected e.g. 'r-0123456789ab')")
    return version


class CentroidStore(ABC):
    """Published router versions plus an atomically switched active one."""

    @abstractmethod
    def publish(self, artifact: RouterArtifact) -> str:
        """Store ``artifact`` under its version (idempotent) and return the version. Does not activate."""

    @abstractmethod
    def activate(self, version: str) -> None:
        """Make a published version the active one, atomically. :class:`VersionNotFound` if unknown."""

    @abstractmethod
    def active_version(self) -> str | None:
        """The active version, or None if nothing was activated. Cheap: routers poll it."""

    @abstractmethod
    def load(self, version: str) -> RouterArtifact:
        """One published version. :class:`VersionNotFound` if unknown."""

    @abstractmethod
    def list_versions(self) -> list[StoredRouter]:
        """Every complete published version, newest first."""

    @abstractmethod
    def delete(self, version: str, *, force: bool = False) -> None:
        """Remove a version. The active one only with ``force`` (routers keep their last snapshot)."""

    def load_active(self) -> RouterArtifact:
        """The active router. :class:`NoActiveRouter` if nothing was activated."""
        version = self.active_version()
        if version is None:
            raise NoActiveRouter("no router is active in the store; publish one with `avengers publish --router DIR`")
        return self.load(version)

    def publish_and_activate(self, artifact: RouterArtifact) -> str:
        version = self.publish(artifact)
        self.activate(version)
        return version

    def prune(self, keep: int) -> list[str]:
        """Delete all but the ``keep`` newest versions, never the active one; the versions deleted."""
        if keep < 1:
            raise ValueError("keep must be at least 1")
        doomed = [r.version for r in self.list_versions()[keep:] if not r.active]
        for version in doomed:
            self.delete(version)
        return doomed

    def describe(self) -> str:
        """Where the store is, for logs and messages."""
        return type(self).__name__

    def close(self) -> None:
        """Release connections (the store is unusable afterwards)."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


StoreFactory = Callable[[StoreConfig], CentroidStore]
register_store = STORES.register
"""Class decorator: make a backend available under a name in :class:`StoreConfig`."""


def create_store(config: StoreConfig | None = None) -> CentroidStore:
    """Build the configured store."""
    config = config or StoreConfig()
    try:
        factory = STORES.get(config.backend)
    except ValueError as exc:
        raise StoreError(str(exc)) from None
    return factory(config)
