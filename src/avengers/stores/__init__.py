"""Centroid stores: where fitted routers are published, and which version routers serve.

``create_store(StoreConfig(...))`` builds one; backends: "qdrant" (:mod:`avengers.stores.qdrant`, the
product) and "directory" (:mod:`avengers.stores.directory`).
"""

from avengers.stores import directory as _directory  # noqa: F401 - registers the backend
from avengers.stores import qdrant as _qdrant  # noqa: F401 - registers the backend
from avengers.stores.base import (
    CentroidStore,
    NoActiveRouter,
    StoreConflict,
    StoredRouter,
    StoreError,
    StoreUnavailable,
    VersionNotFound,
    create_store,
    register_store,
)

__all__ = [
    "CentroidStore",
    "NoActiveRouter",
    "StoreConflict",
    "StoreError",
    "StoreUnavailable",
    "StoredRouter",
    "VersionNotFound",
    "create_store",
    "register_store",
]
