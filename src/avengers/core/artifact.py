"""The versioned router artifact: everything needed to route, saved as a directory.

Layout of a router directory::

    router.json    metadata: format, version, models, embedder, fit parameters, statistics
    centroids.npy  (k, d) float32
    scores.npy     (k, m) float64 per-cluster model scores
    counts.npy     (k,) calibration queries per cluster
    global.npy     (m,) each model's global mean score
    costs.npy      (k, m) mean cost of each model on each cluster (only when the labels had costs)
    feedback_counts.npy, feedback_sums.npy
                   (k, m) feedback folded in by ``avengers refit --with-feedback`` (only then)
    selector-<name>.npz
                   the fitted state of each learned selector (knn, logistic, mf, shrinkage)

The version is a content hash, so two fits with the same inputs and parameters share a version and any
change (data, K, seed, algorithm, smoothing, embedder, selectors, costs, feedback) gives a new one.
Format 1 (no selectors, costs or feedback) is still read.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from avengers.config.routing import RoutingConfig, SelectorsConfig
from avengers.core.routing import Router, build_selectors
from avengers.core.scoring import ClusterScores, posterior_table

FORMAT = "avengers-router"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
DEFAULT_FEEDBACK_WEIGHT = 10.0
"""Pseudo-observations behind the calibration score when feedback updates it (Beta prior weight)."""


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
    selector_states: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    """Fitted state of each learned selector, by name (:mod:`avengers.core.selectors`)."""
    costs: np.ndarray | None = None
    """(k, m) mean cost of each model on each cluster, or None (no costs: alpha must stay 0)."""
    feedback_counts: np.ndarray | None = None
    """(k, m) feedback observations folded in by a refit (None: none)."""
    feedback_sums: np.ndarray | None = None
    """(k, m) sum of their scores."""
    feedback_weight: float = DEFAULT_FEEDBACK_WEIGHT
    """Prior weight of the calibration scores against the folded-in feedback."""

    def __post_init__(self) -> None:
        self.centroids = np.asarray(self.centroids, dtype=np.float32)
        k, d = self.centroids.shape
        if d != self.embedder_dimension:
            raise ArtifactError(f"centroids have dimension {d}, embedder {self.embedder_dimension}")
        if self.cluster_scores.scores.shape != (k, len(self.models)):
            raise ArtifactError(
                f"scores shape {self.cluster_scores.scores.shape} does not match {k} clusters x {len(self.models)} models"
            )
        shape = (k, len(self.models))
        for name in ("costs", "feedback_counts", "feedback_sums"):
            value = getattr(self, name)
            if value is not None:
                value = np.asarray(value, dtype=np.float64)
                if value.shape != shape:
                    raise ArtifactError(f"{name} shape {value.shape} does not match {shape}")
                setattr(self, name, value)
        if (self.feedback_counts is None) != (self.feedback_sums is None):
            raise ArtifactError("feedback counts and sums go together")
        if not self.version:
            self.version = self.content_hash()

    @property
    def k(self) -> int:
        return int(self.centroids.shape[0])

    @property
    def selectors_config(self) -> SelectorsConfig:
        return SelectorsConfig.model_validate(self.fit_params.get("selectors", {}))

    @property
    def strategies(self) -> list[str]:
        """Every selector this router can route with."""
        return sorted({"nearest", "soft", *self.selector_states})

    def content_hash(self) -> str:
        h = hashlib.sha256()
        h.update(json.dumps([self.models, self.embedder_model, self.fit_params], sort_keys=True).encode())
        for arr in (self.centroids, self.cluster_scores.scores, self.cluster_scores.counts):
            h.update(np.ascontiguousarray(arr).tobytes())
        extras = {"costs": self.costs, "feedback_counts": self.feedback_counts, "feedback_sums": self.feedback_sums}
        for name, state in sorted(self.selector_states.items()):
            extras.update({f"{name}.{key}": value for key, value in state.items()})
        for name, arr in sorted(extras.items()):
            if arr is not None:
                h.update(name.encode())
                h.update(np.ascontiguousarray(arr).tobytes())
        if self.feedback_counts is not None:
            h.update(repr(self.feedback_weight).encode())
        return "r-" + h.hexdigest()[:12]

    def router(
        self,
        routing: RoutingConfig | None = None,
        *,
        feedback: tuple[np.ndarray, np.ndarray] | None = None,
        feedback_weight: float | None = None,
    ) -> Router:
        """A router over this artifact. ``feedback``: live (counts, sums) per (cluster, model) on top of any
        folded in by a refit; the cluster scores become their Beta posteriors (prior weight
        ``feedback_weight``, default the artifact's)."""
        counts, sums = self.feedback_counts, self.feedback_sums
        if feedback is not None:
            live_counts, live_sums = (np.asarray(a, dtype=np.float64) for a in feedback)
            counts = live_counts if counts is None else counts + live_counts
            sums = live_sums if sums is None else sums + live_sums
        table = None
        if counts is not None and sums is not None and counts.any():
            weight = self.feedback_weight if feedback_weight is None else feedback_weight
            table = posterior_table(self.cluster_scores.scores, weight, counts, sums)
        selectors = build_selectors(list(self.selector_states), self.selector_states, self.selectors_config)
        return Router(
            self.centroids, self.cluster_scores, routing or self.routing, selectors=selectors, costs=self.costs, table=table
        )

    def with_feedback(self, counts: np.ndarray, sums: np.ndarray, weight: float | None = None) -> RouterArtifact:
        """A new version with feedback (k, m) counts and sums folded in (added to any folded in before);
        routers built from it score clusters by the Beta posteriors (prior weight ``weight``)."""
        counts = np.asarray(counts, dtype=np.float64)
        sums = np.asarray(sums, dtype=np.float64)
        shape = self.cluster_scores.scores.shape
        if counts.shape != shape or sums.shape != shape:
            raise ArtifactError(f"feedback shapes {counts.shape}/{sums.shape} do not match {shape}")
        return replace(
            self,
            feedback_counts=counts if self.feedback_counts is None else self.feedback_counts + counts,
            feedback_sums=sums if self.feedback_sums is None else self.feedback_sums + sums,
            feedback_weight=self.feedback_weight if weight is None else float(weight),
            stats={**self.stats, "refit_from": self.version},
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
            version="",
        )

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
            "selectors": sorted(self.selector_states),
            "has_costs": self.costs is not None,
            "feedback": None
            if self.feedback_counts is None
            else {"weight": self.feedback_weight, "observations": int(self.feedback_counts.sum())},
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
        for name in ("costs", "feedback_counts", "feedback_sums"):
            if getattr(self, name) is not None:
                np.save(tmp / f"{name}.npy", getattr(self, name))
        for name, state in self.selector_states.items():
            np.savez(tmp / f"selector-{name}.npz", **state)
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
        optional = {
            name: _load_array(directory / f"{name}.npy") if (directory / f"{name}.npy").is_file() else None
            for name in ("costs", "feedback_counts", "feedback_sums")
        }
        states = {}
        for name in meta.get("selectors", []):
            path = directory / f"selector-{name}.npz"
            if not path.is_file():
                raise ArtifactError(f"{directory}: incomplete router directory (no {path.name})")
            with np.load(path, allow_pickle=False) as npz:
                states[name] = {key: npz[key] for key in npz.files}
        return cls.from_parts(
            meta,
            centroids=_load_array(directory / "centroids.npy"),
            scores=_load_array(directory / "scores.npy"),
            counts=_load_array(directory / "counts.npy"),
            global_scores=_load_array(directory / "global.npy"),
            selector_states=states,
            **optional,
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
        costs: np.ndarray | None = None,
        feedback_counts: np.ndarray | None = None,
        feedback_sums: np.ndarray | None = None,
        selector_states: dict[str, dict[str, np.ndarray]] | None = None,
    ) -> RouterArtifact:
        """Rebuild from metadata and arrays (used by the file and Qdrant stores)."""
        if meta.get("format") != FORMAT or meta.get("format_version") not in READABLE_VERSIONS:
            raise ArtifactError(
                f"unsupported router format {meta.get('format')!r} v{meta.get('format_version')!r}; "
                f"this build reads {FORMAT} v{'/'.join(map(str, READABLE_VERSIONS))}"
            )
        missing = sorted(set(meta.get("selectors", [])) - set(selector_states or {}))
        if missing:
            raise ArtifactError(f"router {meta.get('version')}: no saved state for selectors {missing}")
        feedback = meta.get("feedback") or {}
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
            selector_states=dict(selector_states or {}),
            costs=costs,
            feedback_counts=feedback_counts,
            feedback_sums=feedback_sums,
            feedback_weight=float(feedback.get("weight", DEFAULT_FEEDBACK_WEIGHT)),
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
