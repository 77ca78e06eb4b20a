"""Routers in Qdrant: one collection per version, an alias on the active one.

Layout, for a router of version ``V`` with ``k`` clusters over ``m`` models:

- collection ``<prefix>V`` (default prefix ``avengers_router_``), Euclidean vectors of the embedder's size;
- points ``0..k-1``: vector = centroid of that cluster, payload = ``{"kind": "centroid", "cluster": i,
  "count": <calibration queries>, "scores": {model: score}}`` plus ``"costs"`` and ``"feedback_counts"`` /
  ``"feedback_sums"`` ({model: value}) when the router has them;
- for kNN selectors, on a Qdrant server, points ``k..k+n-1``: vector = a calibration query's embedding,
  payload = ``{"kind": "calibration", "index": i, "scores": {model: score}}`` — Qdrant can search them (the
  router service loads them into its snapshot and searches in memory, for latency and so that an answer
  never mixes versions); stored once however many selectors use them. Embedded Qdrant commits every point
  to SQLite on its own (6,000 points: about 2.5 minutes on a shared 2-core machine), so there the
  calibration queries travel in ``"calibration_chunk"`` points of :data:`CHUNK_ROWS` rows each (payload:
  ``start``, ``rows`` and the float32 embeddings and scores, base64) — same arrays, a dozen commits;
- the other fitted selector arrays (logistic weights, MF factors, shrinkage tables) travel in the metadata
  payload under ``"selector_states"`` (``{name: {array: {"shape", "dtype", "values"}}}``);
- one reserved point, id :data:`METADATA_POINT_ID` (zero vector): payload = ``{"kind": "router",
  "metadata": <RouterArtifact.metadata()>, "global_scores": {model: score}}``. It is written last, so a
  collection without it is an interrupted publish: never listed, never activated, replaced on re-publish;
- alias ``avengers_router_active`` -> the active collection, switched with one
  ``update_collection_aliases`` call (delete + create), which Qdrant applies atomically.

Connection: a Qdrant server by URL (``QDRANT_URL``; API key from a file or an environment variable), or
embedded Qdrant in a directory. Embedded Qdrant allows one open client per directory (a file lock), so
this store opens the directory only for the length of one operation and waits up to
``embedded_lock_wait_seconds`` for another holder to finish. A running router polls briefly and lets go,
so ``avengers publish`` against the same directory works while the router runs; something else that keeps
the directory open (a notebook with a client) makes operations fail with :class:`StoreUnavailable`.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from avengers.config.store import StoreConfig
from avengers.core.artifact import ArtifactError, RouterArtifact
from avengers.core.embedding import default_cache_dir
from avengers.stores.base import (
    CentroidStore,
    StoreConflict,
    StoredRouter,
    StoreError,
    StoreUnavailable,
    VersionNotFound,
    check_version,
    register_store,
)

if TYPE_CHECKING:
    from qdrant_client import QdrantClient

log = logging.getLogger(__name__)

METADATA_POINT_ID = str(uuid.uuid5(uuid.NAMESPACE_URL, "avengers/router-metadata"))
"""Id of the reserved point that carries a router's metadata."""

UPSERT_CHUNK = 256
MEMORY = ":memory:"

# Embedded Qdrant locks a directory per open client, even within one process: serialise our own opens.
_PATH_LOCKS: dict[str, threading.Lock] = {}
_PATH_LOCKS_GUARD = threading.Lock()

T = TypeVar("T")


def _path_lock(path: str) -> threading.Lock:
    with _PATH_LOCKS_GUARD:
        return _PATH_LOCKS.setdefault(path, threading.Lock())


def _store_operation(method: Callable[..., T]) -> Callable[..., T]:
    """Turn client failures (connection refused, timeouts, a held directory) into StoreUnavailable."""

    @functools.wraps(method)
    def wrapper(self: QdrantCentroidStore, *args: Any, **kwargs: Any) -> T:
        try:
            return method(self, *args, **kwargs)
        except (StoreError, ArtifactError):
            raise
        except Exception as exc:
            raise StoreUnavailable(f"{self.describe()}: {type(exc).__name__}: {exc}") from exc

    return wrapper


def resolve_api_key(config: StoreConfig) -> str | None:
    """The Qdrant API key from ``qdrant_api_key_file`` or the ``qdrant_api_key_env`` variable."""
    if config.qdrant_api_key_file:
        try:
            key = Path(config.qdrant_api_key_file).read_text().strip()
        except OSError as exc:
            raise StoreError(f"cannot read the Qdrant API key file {config.qdrant_api_key_file}: {exc}") from None
        return key or None
    return os.environ.get(config.qdrant_api_key_env) or None


def resolve_location(config: StoreConfig) -> tuple[str | None, str | None]:
    """(url, None) or (None, path): the config's URL or path first, then $QDRANT_URL, then
    $AVENGERS_QDRANT_PATH, then ~/.cache/avengers/qdrant."""
    if config.qdrant_url:
        return config.qdrant_url, None
    if config.qdrant_path:
        return None, config.qdrant_path
    if os.environ.get("QDRANT_URL"):
        return os.environ["QDRANT_URL"], None
    return None, os.environ.get("AVENGERS_QDRANT_PATH") or str(default_cache_dir() / "qdrant")


@register_store("qdrant")
class QdrantCentroidStore(CentroidStore):
    """Routers as Qdrant collections (see the module docstring)."""

    def __init__(self, config: StoreConfig | None = None):
        self.config = config = config or StoreConfig()
        self.url, path = resolve_location(config)
        self.path = path if path in (None, MEMORY) else str(Path(path).expanduser().resolve())
        self._shared: QdrantClient | None = None

    # -- connection ------------------------------------------------------------------------------------

    def describe(self) -> str:
        if self.url:
            return f"Qdrant at {self.url}"
        if self.path == MEMORY:
            return "in-memory Qdrant"
        return f"embedded Qdrant at {self.path}"

    def _connect(self) -> QdrantClient:
        from qdrant_client import QdrantClient

        if self.url:
            return QdrantClient(
                url=self.url,
                api_key=resolve_api_key(self.config),
                prefer_grpc=self.config.qdrant_prefer_grpc,
                timeout=max(1, round(self.config.timeout_seconds)),
                check_compatibility=False,
            )
        return QdrantClient(location=MEMORY)

    @contextmanager
    def _client(self) -> Iterator[QdrantClient]:
        if self.url or self.path == MEMORY:
            if self._shared is None:
                self._shared = self._connect()
            yield self._shared
            return
        assert self.path is not None
        with _path_lock(self.path):
            client = self._open_embedded(self.path)
            try:
                yield client
            finally:
                client.close()

    def _open_embedded(self, path: str) -> QdrantClient:
        from qdrant_client import QdrantClient

        deadline = time.monotonic() + self.config.embedded_lock_wait_seconds
        delay = 0.02
        while True:
            try:
                return QdrantClient(path=path)
            except RuntimeError as exc:
                if "already accessed" not in str(exc):
                    raise
                if time.monotonic() >= deadline:
                    raise StoreUnavailable(
                        f"embedded Qdrant at {path} is held by another process and was not released within "
                        f"{self.config.embedded_lock_wait_seconds:g}s. Embedded Qdrant allows one client at a "
                        "time: close the other client, or run a Qdrant server and set QDRANT_URL "
                        "(or --qdrant-url) for every router and publisher"
                    ) from None
                time.sleep(delay)
                delay = min(delay * 2, 0.25)

    def close(self) -> None:
        if self._shared is not None:
            self._shared.close()
            self._shared = None

    # -- names -----------------------------------------------------------------------------------------

    def collection_name(self, version: str) -> str:
        name = self.config.collection_prefix + check_version(version)
        if name == self.config.active_alias:
            raise StoreConflict(f"version {version!r} would take the name of the alias {name!r}")
        return name

    def _version_of(self, collection: str) -> str | None:
        prefix = self.config.collection_prefix
        if collection.startswith(prefix) and collection != self.config.active_alias:
            return collection[len(prefix) :]
        return None

    # -- operations ------------------------------------------------------------------------------------

    @_store_operation
    def publish(self, artifact: RouterArtifact) -> str:
        from qdrant_client import models as qm

        name = self.collection_name(artifact.version)
        with self._client() as client:
            if client.collection_exists(name):
                if self._metadata(client, name) is not None:
                    log.info("router %s is already in %s", artifact.version, self.describe())
                    return artifact.version
                log.warning("replacing the incomplete collection %s (an interrupted publish)", name)
                client.delete_collection(name)
            client.create_collection(
                name, vectors_config=qm.VectorParams(size=artifact.embedder_dimension, distance=qm.Distance.EUCLID)
            )
            calibration = calibration_points(artifact) if self.url else calibration_chunks(artifact)
            points = centroid_points(artifact) + calibration
            for start in range(0, len(points), UPSERT_CHUNK):
                client.upsert(name, points=points[start : start + UPSERT_CHUNK], wait=True)
            client.upsert(name, points=[metadata_point(artifact)], wait=True)  # last: marks it complete
        log.info("published router %s (%d clusters) to %s", artifact.version, artifact.k, self.describe())
        return artifact.version

    @_store_operation
    def activate(self, version: str) -> None:
        from qdrant_client import models as qm

        name = self.collection_name(version)
        alias = self.config.active_alias
        with self._client() as client:
            if not client.collection_exists(name) or self._metadata(client, name) is None:
                raise VersionNotFound(f"router {version} is not published in {self.describe()}")
            operations: list[Any] = []
            if self._alias_target(client) is not None:
                operations.append(qm.DeleteAliasOperation(delete_alias=qm.DeleteAlias(alias_name=alias)))
            operations.append(
                qm.CreateAliasOperation(create_alias=qm.CreateAlias(collection_name=name, alias_name=alias))
            )
            client.update_collection_aliases(change_aliases_operations=operations)
        log.info("activated router %s in %s", version, self.describe())

    @_store_operation
    def active_version(self) -> str | None:
        with self._client() as client:
            target = self._alias_target(client)
        return None if target is None else self._version_of(target)

    @_store_operation
    def load(self, version: str) -> RouterArtifact:
        name = self.collection_name(version)
        with self._client() as client:
            payload = self._metadata(client, name) if client.collection_exists(name) else None
            if payload is None:
                raise VersionNotFound(f"router {version} is not published in {self.describe()}")
            records = self._point_records(client, name)
        return artifact_from_payloads(payload, records, source=f"{self.describe()} collection {name}")

    @_store_operation
    def list_versions(self) -> list[StoredRouter]:
        with self._client() as client:
            active = self._alias_target(client)
            found = []
            for collection in client.get_collections().collections:
                if self._version_of(collection.name) is None:
                    continue
                payload = self._metadata(client, collection.name)
                if payload is None:
                    continue  # interrupted publish
                found.append(
                    StoredRouter.from_metadata(
                        payload["metadata"], active=collection.name == active, collection=collection.name
                    )
                )
        return sorted(found, key=lambda r: (r.created_at, r.version), reverse=True)

    @_store_operation
    def delete(self, version: str, *, force: bool = False) -> None:
        from qdrant_client import models as qm

        name = self.collection_name(version)
        with self._client() as client:
            if not client.collection_exists(name):
                raise VersionNotFound(f"router {version} is not published in {self.describe()}")
            if self._alias_target(client) == name:
                if not force:
                    raise StoreConflict(
                        f"router {version} is active; activate another version first (or delete with force)"
                    )
                client.update_collection_aliases(
                    change_aliases_operations=[
                        qm.DeleteAliasOperation(delete_alias=qm.DeleteAlias(alias_name=self.config.active_alias))
                    ]
                )
            client.delete_collection(name)
        log.info("deleted router %s from %s", version, self.describe())

    # -- helpers ---------------------------------------------------------------------------------------

    def _alias_target(self, client: QdrantClient) -> str | None:
        for alias in client.get_aliases().aliases:
            if alias.alias_name == self.config.active_alias:
                return alias.collection_name
        return None

    @staticmethod
    def _metadata(client: QdrantClient, collection: str) -> dict[str, Any] | None:
        found = client.retrieve(collection, ids=[METADATA_POINT_ID], with_payload=True, with_vectors=False)
        return dict(found[0].payload or {}) if found else None

    @staticmethod
    def _point_records(client: QdrantClient, collection: str) -> list[Any]:
        """Centroid and calibration points (everything but the metadata point)."""
        records: list[Any] = []
        offset = None
        while True:
            page, offset = client.scroll(
                collection, limit=UPSERT_CHUNK, offset=offset, with_payload=True, with_vectors=True
            )
            records.extend(r for r in page if (r.payload or {}).get("kind") in POINT_KINDS)
            if offset is None:
                return records


def centroid_points(artifact: RouterArtifact) -> list[Any]:
    """One Qdrant point per cluster: id = cluster index, vector = centroid, payload = scores and count."""
    from qdrant_client import models as qm

    scores = artifact.cluster_scores.scores
    counts = artifact.cluster_scores.counts
    extra = {
        name: getattr(artifact, name)
        for name in ("costs", "feedback_counts", "feedback_sums")
        if getattr(artifact, name) is not None
    }
    return [
        qm.PointStruct(
            id=i,
            vector=artifact.centroids[i].astype(float).tolist(),
            payload={
                "kind": "centroid",
                "cluster": i,
                "count": int(counts[i]),
                "scores": {model: float(scores[i, j]) for j, model in enumerate(artifact.models)},
                **{name: by_model(artifact.models, table[i]) for name, table in extra.items()},
            },
        )
        for i in range(artifact.k)
    ]


def by_model(models: list[str], row: np.ndarray) -> dict[str, float]:
    return {model: float(row[j]) for j, model in enumerate(models)}


POINT_ARRAYS = ("points", "point_scores")
"""Selector state arrays stored as Qdrant points (the kNN calibration queries) instead of in the payload."""


def shared_points(artifact: RouterArtifact) -> tuple[np.ndarray, np.ndarray] | None:
    """The calibration points the kNN selectors share, or None (no kNN selector)."""
    for state in artifact.selector_states.values():
        if all(name in state for name in POINT_ARRAYS):
            return state["points"], state["point_scores"]
    return None


def calibration_points(artifact: RouterArtifact) -> list[Any]:
    """One point per calibration query of the kNN selectors (ids after the centroids)."""
    from qdrant_client import models as qm

    shared = shared_points(artifact)
    if shared is None:
        return []
    points, scores = shared
    return [
        qm.PointStruct(
            id=artifact.k + i,
            vector=points[i].astype(float).tolist(),
            payload={"kind": "calibration", "index": i, "scores": by_model(artifact.models, scores[i])},
        )
        for i in range(len(points))
    ]


CHUNK_ROWS = 512
"""Calibration queries per chunk point (embedded Qdrant)."""

POINT_KINDS = ("centroid", "calibration", "calibration_chunk")


def calibration_chunks(artifact: RouterArtifact) -> list[Any]:
    """The kNN calibration queries in chunk points of CHUNK_ROWS rows (ids after the centroids)."""
    import base64

    from qdrant_client import models as qm

    shared = shared_points(artifact)
    if shared is None:
        return []
    points, scores = (np.ascontiguousarray(a, dtype=np.float32) for a in shared)
    chunks = []
    for c, start in enumerate(range(0, len(points), CHUNK_ROWS)):
        rows = slice(start, start + CHUNK_ROWS)
        chunks.append(
            qm.PointStruct(
                id=artifact.k + c,
                vector=[0.0] * artifact.embedder_dimension,
                payload={
                    "kind": "calibration_chunk",
                    "start": start,
                    "rows": len(points[rows]),
                    "points": base64.b64encode(points[rows].tobytes()).decode(),
                    "scores": base64.b64encode(scores[rows].tobytes()).decode(),
                },
            )
        )
    return chunks


def calibration_arrays(records: list[Any], models: list[str], dimension: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, d) calibration embeddings and (n, m) scores from calibration points or chunks."""
    import base64

    points = sorted((r for r in records if r.payload["kind"] == "calibration"), key=lambda r: r.payload["index"])
    chunks = sorted((r for r in records if r.payload["kind"] == "calibration_chunk"), key=lambda r: r.payload["start"])
    if chunks:
        m = len(models)
        vectors = np.concatenate([
            np.frombuffer(base64.b64decode(c.payload["points"]), dtype=np.float32).reshape(c.payload["rows"], dimension)
            for c in chunks
        ])
        scores = np.concatenate([
            np.frombuffer(base64.b64decode(c.payload["scores"]), dtype=np.float32).reshape(c.payload["rows"], m)
            for c in chunks
        ])
        return vectors, scores
    return (
        np.array([r.vector for r in points], dtype=np.float32).reshape(len(points), dimension),
        np.array([[r.payload["scores"][model] for model in models] for r in points], dtype=np.float32),
    )


def encode_array(array: np.ndarray) -> dict[str, Any]:
    return {"shape": list(array.shape), "dtype": str(array.dtype), "values": array.ravel().tolist()}


def decode_array(data: dict[str, Any]) -> np.ndarray:
    return np.asarray(data["values"], dtype=data["dtype"]).reshape(data["shape"])


def selector_payload(artifact: RouterArtifact) -> dict[str, Any]:
    """Selector states for the metadata payload; arrays held as calibration points are referenced."""
    shared = shared_points(artifact)
    payload: dict[str, Any] = {}
    for name, state in artifact.selector_states.items():
        encoded: dict[str, Any] = {}
        for key, array in state.items():
            if key in POINT_ARRAYS and shared is not None and np.array_equal(array, shared[POINT_ARRAYS.index(key)]):
                encoded[key] = {"calibration_points": True}
            else:
                encoded[key] = encode_array(np.asarray(array))
        payload[name] = encoded
    return payload


def metadata_point(artifact: RouterArtifact) -> Any:
    """The reserved point with the router's metadata and global model scores."""
    from qdrant_client import models as qm

    global_scores = artifact.cluster_scores.global_scores
    return qm.PointStruct(
        id=METADATA_POINT_ID,
        vector=[0.0] * artifact.embedder_dimension,
        payload={
            "kind": "router",
            "metadata": artifact.metadata(),
            "global_scores": {model: float(global_scores[j]) for j, model in enumerate(artifact.models)},
            "selector_states": selector_payload(artifact),
        },
    )


def artifact_from_payloads(payload: dict[str, Any], records: list[Any], source: str) -> RouterArtifact:
    """Rebuild a router from its metadata payload and centroid records; ArtifactError if inconsistent."""
    try:
        meta = payload["metadata"]
        models = list(meta["models"])
        k = int(meta["num_clusters"])
        by_cluster = {int(r.payload["cluster"]): r for r in records if r.payload["kind"] == "centroid"}
        if sorted(by_cluster) != list(range(k)):
            raise ArtifactError(f"{source}: expected clusters 0..{k - 1}, found {len(by_cluster)} centroid points")
        ordered = [by_cluster[i] for i in range(k)]

        def table(name: str) -> np.ndarray | None:
            if name not in ordered[0].payload:
                return None
            return np.array([[r.payload[name][m] for m in models] for r in ordered], dtype=np.float64)

        shared = calibration_arrays(records, models, int(meta["embedder"]["dimension"]))
        states = {}
        for name, encoded in (payload.get("selector_states") or {}).items():
            states[name] = {
                key: shared[POINT_ARRAYS.index(key)] if data.get("calibration_points") else decode_array(data)
                for key, data in encoded.items()
            }
        return RouterArtifact.from_parts(
            meta,
            centroids=np.array([r.vector for r in ordered], dtype=np.float32),
            scores=np.array([[r.payload["scores"][m] for m in models] for r in ordered], dtype=np.float64),
            counts=np.array([r.payload["count"] for r in ordered], dtype=np.int64),
            global_scores=np.array([payload["global_scores"][m] for m in models], dtype=np.float64),
            costs=table("costs"),
            feedback_counts=table("feedback_counts"),
            feedback_sums=table("feedback_sums"),
            selector_states=states,
        )
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, ArtifactError):
            raise
        raise ArtifactError(f"{source}: malformed router data ({type(exc).__name__}: {exc})") from None
