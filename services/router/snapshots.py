"""The router the service answers with: an in-memory snapshot of the store's active version.

Requests read :attr:`SnapshotManager.current` once and route on that object, so a swap (one reference
assignment) never mixes two versions in one answer. A poll task checks the store's active version every
``poll_interval`` seconds; :meth:`SnapshotManager.reload` does the same on demand. A store that cannot be
reached, or a version that cannot be loaded, is logged and counted; requests keep the last snapshot.

Learning from feedback (``RouterFeedbackConfig.enabled``): every reload also reads the feedback tallies of the
served version; when they changed, a router over the same artifact with Beta-posterior cluster scores is
swapped in the same way (same version, new scores). Feedback that cannot be read keeps the last scores.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import numpy as np

from avengers.config.router_feedback import RouterFeedbackConfig
from avengers.core.artifact import RouterArtifact
from avengers.core.routing import Router
from avengers.observability.metrics import counter, gauge
from avengers.services.router.query_embedding import QueryEmbedder
from avengers.state.connection import StateError
from avengers.state.feedback import FeedbackStore, tally_matrices
from avengers.stores.base import CentroidStore, StoreError

log = logging.getLogger(__name__)

RELOADS = counter(
    "avengers_router_reloads",
    "Checks of the store's active router, by outcome "
    "(loaded, unchanged, no_active, store_error, rejected: its embedder does not match the one serving; "
    "feedback: new feedback scores swapped in, feedback_error: the tallies could not be read)",
    ["outcome"],
)
STORE_UP = gauge("avengers_router_store_up", "1 if the last check of the centroid store succeeded, else 0")
LOADED_AT = gauge("avengers_router_snapshot_loaded_timestamp_seconds", "When the serving router was loaded")


@dataclass(frozen=True)
class RouterSnapshot:
    """One loaded router version; immutable, shared by every request routed on it."""

    artifact: RouterArtifact
    router: Router
    loaded_at: float
    embedder_problem: str | None = None
    """Why query texts cannot be embedded for this router (embedder mismatch), or None."""
    feedback_counts: np.ndarray | None = None
    """(k, m) live feedback observations in the served scores (None: not learning from feedback)."""
    feedback_sums: np.ndarray | None = None
    """(k, m) their score sums."""

    @property
    def feedback_observations(self) -> int:
        """Feedback observations in the served scores (folded in by a refit plus live)."""
        folded = 0 if self.artifact.feedback_counts is None else self.artifact.feedback_counts.sum()
        live = 0 if self.feedback_counts is None else self.feedback_counts.sum()
        return int(folded + live)

    @property
    def version(self) -> str:
        return self.artifact.version


@dataclass(frozen=True)
class ReloadResult:
    version: str | None
    """Version served after the reload (None: none yet)."""
    changed: bool
    """A new snapshot was swapped in."""
    error: str | None = None
    """Why the store's active version is not served (store down, embedder mismatch), or None."""


class SnapshotManager:
    """Loads the store's active router and swaps it in (see the module docstring)."""

    def __init__(
        self,
        store: CentroidStore,
        query_embedder: QueryEmbedder,
        poll_interval: float,
        on_change: Callable[[RouterSnapshot], Awaitable[None]] | None = None,
        feedback: RouterFeedbackConfig | None = None,
        feedback_store: FeedbackStore | None = None,
    ):
        """``feedback_store``: where the tallies are read when ``feedback.enabled`` (the gateway's store)."""
        self.store = store
        self.feedback = feedback or RouterFeedbackConfig()
        self.feedback_store = feedback_store if self.feedback.enabled else None
        self.query_embedder = query_embedder
        self.poll_interval = poll_interval
        self.current: RouterSnapshot | None = None
        self.last_error: str | None = None
        self._on_change = on_change
        self._lock = asyncio.Lock()
        self._rejected: str | None = None
        self._poller: asyncio.Task | None = None

    async def start(self) -> ReloadResult:
        """Load the active router now, then keep polling (if ``poll_interval`` > 0)."""
        result = await self.reload()
        if self.poll_interval > 0 and self._poller is None:
            self._poller = asyncio.get_running_loop().create_task(self._poll(), name="router-snapshot-poll")
        return result

    async def close(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            try:
                await self._poller
            except asyncio.CancelledError:
                pass
            self._poller = None

    async def reload(self, *, force: bool = False) -> ReloadResult:
        """Check the store's active version and swap it in if it changed. Never raises for store trouble.

        ``force`` re-checks a version rejected earlier for its embedder (e.g. after the embedder changed).
        """
        async with self._lock:
            return await self._reload(force)

    async def _reload(self, force: bool) -> ReloadResult:
        served = self.current.version if self.current else None
        try:
            version = await asyncio.to_thread(self.store.active_version)
        except StoreError as exc:
            return self._failed("store_error", f"cannot check the active router in {self.store.describe()}: {exc}")
        STORE_UP.set(1)
        if version is None:
            return self._failed("no_active", f"no router is active in {self.store.describe()}")
        if version == served or (version == self._rejected and not force):
            RELOADS.labels("unchanged").inc()
            changed = await self._refresh_feedback() if version == served else False
            return ReloadResult(served, changed, self.last_error if version == self._rejected else None)
        try:
            artifact = await asyncio.to_thread(self.store.load, version)
        except (StoreError, ValueError) as exc:
            return self._failed("store_error", f"cannot load router {version} from {self.store.describe()}: {exc}")
        problem = await self.query_embedder.prepare(artifact.embedder_model, artifact.embedder_dimension)
        if problem and self.current is not None and self.current.embedder_problem is None:
            self._rejected = version
            return self._failed("rejected", f"router {version} not served, still serving {served}: {problem}")
        if problem:
            log.error("router %s: query texts cannot be routed: %s (precomputed embeddings still can)", version, problem)
        counts, sums = await self._tallies(artifact)
        router = await asyncio.to_thread(self._router, artifact, counts, sums)
        snapshot = RouterSnapshot(artifact, router, time.time(), problem, counts, sums)
        self.current = snapshot  # the swap: one reference assignment
        self._rejected = None
        self.last_error = None
        RELOADS.labels("loaded").inc()
        LOADED_AT.set(snapshot.loaded_at)
        log.info("serving router %s (%d clusters, %d models)%s", version, artifact.k, len(artifact.models),
                 f", replacing {served}" if served else "")
        if self._on_change is not None:
            await self._on_change(snapshot)
        return ReloadResult(version, True)

    def _router(self, artifact: RouterArtifact, counts: np.ndarray | None, sums: np.ndarray | None) -> Router:
        live = None if counts is None or sums is None else (counts, sums)
        return artifact.router(feedback=live, feedback_weight=self.feedback.prior_weight)

    async def _tallies(self, artifact: RouterArtifact) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Live feedback of ``artifact``'s version as (k, m) arrays; (None, None) when not learning or unreadable."""
        if self.feedback_store is None:
            return None, None
        try:
            tallies = await self.feedback_store.tallies(artifact.version)
        except StateError as exc:
            RELOADS.labels("feedback_error").inc()
            log.warning("cannot read the feedback of router %s: %s", artifact.version, exc)
            return None, None
        return tally_matrices(tallies, artifact.models, artifact.k)

    async def _refresh_feedback(self) -> bool:
        """Swap in new feedback scores for the served version if its tallies changed."""
        current = self.current
        if self.feedback_store is None or current is None:
            return False
        counts, sums = await self._tallies(current.artifact)
        if counts is None or sums is None:
            return False
        old_counts = current.feedback_counts if current.feedback_counts is not None else np.zeros_like(counts)
        old_sums = current.feedback_sums if current.feedback_sums is not None else np.zeros_like(sums)
        if np.array_equal(counts, old_counts) and np.array_equal(sums, old_sums):
            return False
        router = await asyncio.to_thread(self._router, current.artifact, counts, sums)
        if self.current is not current:  # a new version was swapped in meanwhile
            return False
        self.current = RouterSnapshot(current.artifact, router, time.time(), current.embedder_problem, counts, sums)
        RELOADS.labels("feedback").inc()
        log.info("router %s: %d live feedback observations in the served scores", current.version, int(counts.sum()))
        return True

    def _failed(self, outcome: str, message: str) -> ReloadResult:
        RELOADS.labels(outcome).inc()
        if outcome == "store_error":
            STORE_UP.set(0)
        served = self.current.version if self.current else None
        if message != self.last_error:  # log each new problem once, not on every poll
            log.warning("%s%s", message, f"; still serving router {served}" if served else "")
        self.last_error = message
        return ReloadResult(served, False, message)

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.poll_interval)
            try:
                await self.reload()
            except Exception:
                log.exception("router reload failed")
