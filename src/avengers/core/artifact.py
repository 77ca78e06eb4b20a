"""The versioned router artifact: everything needed to route, saved as a directory.

Layout of a router directory::

    router.json    metadata: format, version, models, embedder, fit parameters, statistics
    centroids.npy  (k, d) float32
    scores.npy     (k, m) float64 per-cluster model scores
    counts.npy     (k,) calibration queries per cluster
    global.npy     (m,) each model's global mean score

The version is a content hash, so two fits with the same inputs and parameters share a version and any
change (data, K, seed, algorithm, smoothing, embedder) gives a new one.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from avengers.config.routing import RoutingConfig
from avengers.core.routing import ClusterRouter
from avengers.core.scoring import ClusterScores

FORMAT = "avengers-router"
FORMAT_VERSION = 1


class ArtifactError(ValueError):
    """A router directory that is missing, incomplete or of an unknown format."""


@dataclass
class RouterArtifact:
    models: list[str]
    """Model names, the columns of ``scores``."""
    centroids: np.ndarray
    cluster_scores: ClusterScores
    embedder_model: str
    embedder_dimension: int
    fit_params: dict[str, Any] = field(default_factory=dict)
    """Clustering, scoring and routing parameters of the fit (JSON-able)."""
    routing: RoutingConfig = field(default_factory=RoutingConfig)
    """Default routing of this router."""
    stats: dict[str, Any] = field(default_factory=dict)
    """Calibration statistics (rows, datasets)."""
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    version: str = ""

    def __post_init__(self) -> None:
        self.centroids = np.asarray(self.centroids, dtype=np.float32)
        k, d = self.centroids.shape
        if d != self.embedder_dimension:
            raise ArtifactError(f"centroids have dimension {d}, embedder {self.embedder_dimension}")
        if self.cluster_scores.scores.shape != (k, len(self.models)):
            raise ArtifactError(
                f"scores shape {self.cluster_scores.scores.shape} does not match {k} clusters x {len(self.models)} models"
            )
        if not self.version:
            self.version = self.content_hash()

    @property
    def k(self) -> int:
        return int(self.centroids.shape[0])

    def content_hash(self) -> str:
        h = hashlib.sha256()
        h.update(json.dumps([self.models, self.embedder_model, self.fit_params], sort_keys=True).encode())
        for arr in (self.centroids, self.cluster_scores.scores, self.cluster_scores.counts):
            h.update(np.ascontiguousarray(arr).tobytes())
        return "r-" + h.hexdigest()[:12]

    def router(self, routing: RoutingConfig | None = None) -> ClusterRouter:
        return ClusterRouter(self.centroids, self.cluster_scores, routing or self.routing)

    def metadata(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "version": self.version,
            "created_at": self.created_at,
            "models": self.models,
            "num_clusters": self.k,
            "embedder": {"model": self.embedder_model, "dimension": self.embedder_dimension},
            "fit_params": self.fit_params,
            "routing": self.routing.to_dict(),
            "stats": self.stats,
        }

    def save(self, directory: str | Path) -> Path:
        """Write atomically: files go to a temporary sibling directory that is renamed into place."""
        directory = Path(directory)
        directory.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
        np.save(tmp / "centroids.npy", self.centroids)
        np.save(tmp / "scores.npy", self.cluster_scores.scores)
        np.save(tmp / "counts.npy", self.cluster_scores.counts)
        np.save(tmp / "global.npy", self.cluster_scores.global_scores)
        (tmp / "router.json").write_text(json.dumps(self.metadata(), indent=2, ensure_ascii=False) + "\n")
        if directory.exists():
            old = directory.with_name(f".{directory.name}.old-{os.getpid()}")
            directory.rename(old)
            tmp.rename(directory)
            _remove_tree(old)
        else:
            tmp.rename(directory)
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> RouterArtifact:
        directory = Path(directory)
        meta_path = directory / "router.json"
        if not meta_path.is_file():
            raise ArtifactError(f"{directory}: not a router directory (no router.json)")
        try:
            meta = json.loads(meta_path.read_text())
        except json.JSONDecodeError as exc:
            raise ArtifactError(f"{meta_path}: invalid JSON ({exc.msg})") from None
        return cls.from_parts(
            meta,
            centroids=_load_array(directory / "centroids.npy"),
            scores=_load_array(directory / "scores.npy"),
            counts=_load_array(directory / "counts.npy"),
            global_scores=_load_array(directory / "global.npy"),
        )

    @classmethod
    def from_parts(
        cls,
        meta: dict[str, Any],
        *,
        centroids: np.ndarray,
        scores: np.ndarray,
        counts: np.ndarray,
        global_scores: np.ndarray,
    ) -> RouterArtifact:
        """Rebuild from metadata and arrays (used by the file and Qdrant stores)."""
        if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
            raise ArtifactError(
                f"unsupported router format {meta.get('format')!r} v{meta.get('format_version')!r}; "
                f"this build reads {FORMAT} v{FORMAT_VERSION}"
            )
        artifact = cls(
            models=list(meta["models"]),
            centroids=centroids,
            cluster_scores=ClusterScores(scores=scores, counts=counts, global_scores=global_scores),
            embedder_model=meta["embedder"]["model"],
            embedder_dimension=int(meta["embedder"]["dimension"]),
            fit_params=meta.get("fit_params", {}),
            routing=RoutingConfig.model_validate(meta.get("routing", {})),
            stats=meta.get("stats", {}),
            created_at=meta.get("created_at", ""),
            version=meta.get("version", ""),
        )
        return artifact


def _load_array(path: Path) -> np.ndarray:
    if not path.is_file():
        raise ArtifactError(f"{path.parent}: incomplete router directory (no {path.name})")
    return np.load(path, allow_pickle=False)


def _remove_tree(path: Path) -> None:
    for child in path.iterdir():
        child.unlink()
    path.rmdir()
