"""Where fitted routers are published and which one is active (the centroid store)."""

from __future__ import annotations

from pydantic import Field

from avengers.config.base import ConfigModel
from avengers.registry import registry

STORES = registry("store backend", home="avengers.stores")
"""Centroid-store backends by name; the built-ins are registered by :mod:`avengers.stores`."""


class StoreConfig(ConfigModel):
    backend: STORES.name_field() = "qdrant"
    """Store class from the registry in :mod:`avengers.stores`: "qdrant" (the product: one collection per
    router version, an alias on the active one) or "directory" (router directories on a filesystem)."""

    qdrant_url: str | None = None
    """URL of a Qdrant server (e.g. "http://qdrant:6333"). Where to connect, first match wins: this URL,
    ``qdrant_path``, ``$QDRANT_URL``, ``$AVENGERS_QDRANT_PATH`` (embedded), ``~/.cache/avengers/qdrant``."""

    qdrant_path: str | None = None
    """Directory of embedded Qdrant (see ``qdrant_url`` for the order). ":memory:" keeps the store in
    process memory (tests). Embedded Qdrant lets one client at a time open a directory: the store opens
    it only for the length of each operation and waits for the lock (``embedded_lock_wait_seconds``)."""

    qdrant_api_key_env: str = "QDRANT_API_KEY"
    """Environment variable that holds the Qdrant API key (unset or empty: no key)."""

    qdrant_api_key_file: str | None = None
    """File holding the Qdrant API key (e.g. a mounted Kubernetes secret); wins over the variable."""

    qdrant_prefer_grpc: bool = False
    """Talk to a Qdrant server over gRPC (port 6334) instead of HTTP."""

    timeout_seconds: float = Field(default=10.0, gt=0)
    """Timeout of one Qdrant request."""

    embedded_lock_wait_seconds: float = Field(default=10.0, ge=0)
    """Embedded Qdrant: how long an operation waits for another process (or store) to release the directory."""

    collection_prefix: str = Field(default="avengers_router_", pattern=r"^[A-Za-z0-9_-]+$")
    """Name prefix of the per-version collections: ``<prefix><version>``."""

    active_alias: str = Field(default="avengers_router_active", pattern=r"^[A-Za-z0-9_-]+$")
    """Alias that names the active router's collection; switched atomically on activation."""

    directory: str | None = None
    """Root of the "directory" backend. None: ``$AVENGERS_ROUTER_STORE``, else ``~/.cache/avengers/routers``."""
