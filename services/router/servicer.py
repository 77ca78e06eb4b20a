"""Router gRPC servicer: query text or embedding -> ranked models, on the current router snapshot."""

from __future__ import annotations

import json
import math
from typing import Any

import grpc
import numpy as np

from avengers.config.router_feedback import RouterFeedbackConfig
from avengers.core.routing import RouteResult
from avengers.core.scoring import thompson_table
from avengers.observability.metrics import record_route
from avengers.rpc.enums import ROUTING_STRATEGY, ProtoEnum
from avengers.rpc.errors import FailedPrecondition, InvalidArgument, Unavailable, grpc_errors
from avengers.services.router.query_embedding import QueryEmbedder, mismatch_message
from avengers.services.router.snapshots import RouterSnapshot, SnapshotManager
from avengers.v1 import common_pb2, router_pb2, router_pb2_grpc

CENTROID_DISTANCE = ProtoEnum(router_pb2.CentroidDistance, "CENTROID_DISTANCE_", "distance")


def flatten(params: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested parameters as "a.b" -> string (lists and other values as JSON)."""
    flat: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        elif isinstance(value, str):
            flat[name] = value
        else:
            flat[name] = json.dumps(value)
    return flat


def checked_embedding(values: Any, dimension: int) -> np.ndarray:
    """A client's embedding as a unit vector; InvalidArgument for a wrong size, non-finite or zero vector."""
    vector = np.asarray(values, dtype=np.float32)
    if vector.shape != (dimension,):
        raise InvalidArgument(f"embedding has dimension {vector.size}; the router expects {dimension}")
    if not np.isfinite(vector).all():
        raise InvalidArgument("embedding has non-finite values (NaN or infinity)")
    norm = float(np.linalg.norm(vector))
    if norm == 0.0:
        raise InvalidArgument("embedding is the zero vector")
    return vector / norm


class RouterServicer(router_pb2_grpc.RouterServicer):
    def __init__(
        self, snapshots: SnapshotManager, query_embedder: QueryEmbedder, feedback: RouterFeedbackConfig | None = None
    ):
        self.snapshots = snapshots
        self.query_embedder = query_embedder
        self.feedback = feedback or RouterFeedbackConfig()
        self._rng = np.random.default_rng(self.feedback.seed)

    def _snapshot(self) -> RouterSnapshot:
        snapshot = self.snapshots.current
        if snapshot is None:
            reason = self.snapshots.last_error or "no router loaded yet"
            raise Unavailable(f"no router to route with: {reason}")
        return snapshot

    @grpc_errors
    async def Route(self, request: router_pb2.RouteRequest, context: grpc.aio.ServicerContext) -> router_pb2.RouteResponse:
        snapshot = self._snapshot()  # one read: the whole answer comes from this version
        artifact = snapshot.artifact
        try:
            requested = ROUTING_STRATEGY.name(request.strategy)
            distance = CENTROID_DISTANCE.name(request.distance)
        except ValueError as exc:
            raise InvalidArgument(str(exc)) from None
        strategy = requested or artifact.routing.strategy
        if strategy not in snapshot.router.selectors:
            raise FailedPrecondition(
                f"router {snapshot.version} was not fitted with the {strategy!r} selector; it routes with "
                f"{', '.join(snapshot.router.strategies)} (fit with --selectors {strategy})"
            )
        num_models = len(artifact.models)
        if request.top_n > num_models:
            raise InvalidArgument(f"top_n={request.top_n} but the router has {num_models} models (0 means all)")
        if request.top_k > artifact.k:
            raise InvalidArgument(f"top_k={request.top_k} but the router has {artifact.k} clusters")
        beta = request.beta if request.HasField("beta") else None
        if beta is not None and not (math.isfinite(beta) and beta >= 0):
            raise InvalidArgument(f"beta must be a finite number >= 0, got {beta}")
        alpha = request.alpha if request.HasField("alpha") else None
        if alpha is not None and not (math.isfinite(alpha) and 0.0 <= alpha <= 1.0):
            raise InvalidArgument(f"alpha must be in [0, 1], got {alpha}")
        effective_alpha = artifact.routing.alpha if alpha is None else alpha
        if effective_alpha > 0 and snapshot.router.costs is None:
            raise FailedPrecondition(
                f"alpha={effective_alpha:g} needs model costs and router {snapshot.version} was fitted without any "
                "(add 'costs' to the calibration labels)"
            )
        embedding = await self._embedding(request, snapshot)
        options = {
            "strategy": strategy,
            "top_n": request.top_n or num_models,
            "top_k": request.top_k or None,
            "beta": beta,
            "alpha": effective_alpha,
            "distance": distance,
        }
        result = snapshot.router.route(embedding, **options)
        explored = self._explore(snapshot, result)
        if explored is not None:
            result = explored.route(embedding, **options)
        record_route("router", result.cluster, artifact.models[result.models[0]])
        return router_pb2.RouteResponse(
            cluster=result.cluster,
            distance=result.distance,
            models=[
                common_pb2.ModelScore(model=artifact.models[m], score=s, rank=rank)
                for rank, (m, s) in enumerate(zip(result.models, result.scores))
            ],
            router_version=snapshot.version,
            clusters=[
                router_pb2.ClusterDistance(cluster=c, distance=d, weight=w)
                for c, d, w in zip(result.clusters, result.distances, result.weights)
            ],
            strategy=ROUTING_STRATEGY.value(result.strategy),
            alpha=effective_alpha,
            explored=explored is not None,
        )

    def _explore(self, snapshot: RouterSnapshot, result: RouteResult):  # -> Router | None
        """A router whose nearest-cluster scores are Thompson draws (arXiv 1707.02038) for the models with few
        feedback observations there, on ``explore_rate`` of the calls; None when this call does not explore."""
        rate = self.feedback.explore_rate
        counts, sums = snapshot.feedback_counts, snapshot.feedback_sums
        if rate <= 0 or counts is None or sums is None or self._rng.random() >= rate:
            return None
        c = result.cluster
        artifact = snapshot.artifact
        seen = counts[c : c + 1] + (0 if artifact.feedback_counts is None else artifact.feedback_counts[c : c + 1])
        total = sums[c : c + 1] + (0 if artifact.feedback_sums is None else artifact.feedback_sums[c : c + 1])
        few = seen[0] < self.feedback.explore_max_observations  # folded-in (refit) and live observations
        if not few.any():
            return None
        router = snapshot.router
        weight = self.feedback.prior_weight if self.feedback.prior_weight is not None else artifact.feedback_weight
        draw = thompson_table(self._rng, router.cluster_scores.scores[c : c + 1], weight, seen, total)[0]
        table = router.table.copy()
        table[c, few] = draw[few]
        return router.with_table(table)

    async def _embedding(self, request: router_pb2.RouteRequest, snapshot: RouterSnapshot) -> np.ndarray:
        artifact = snapshot.artifact
        which = request.WhichOneof("input")
        if which == "embedding":
            return checked_embedding(request.embedding.values, artifact.embedder_dimension)
        if which != "query" or not request.query.strip():
            raise InvalidArgument("empty request: set a non-empty query or an embedding")
        if snapshot.embedder_problem:
            raise FailedPrecondition(snapshot.embedder_problem)
        embedded = await self.query_embedder.embed(request.query, artifact.embedder_model, artifact.embedder_dimension)
        if embedded.model != artifact.embedder_model or embedded.vector.shape != (artifact.embedder_dimension,):
            raise FailedPrecondition(
                mismatch_message(
                    artifact.embedder_model,
                    artifact.embedder_dimension,
                    embedded.model,
                    embedded.vector.size,
                    self.query_embedder.description,
                )
            )
        return embedded.vector

    @grpc_errors
    async def GetRouterInfo(
        self, request: router_pb2.GetRouterInfoRequest, context: grpc.aio.ServicerContext
    ) -> router_pb2.RouterInfo:
        snapshot = self._snapshot()
        artifact = snapshot.artifact
        return router_pb2.RouterInfo(
            router_version=artifact.version,
            models=artifact.models,
            num_clusters=artifact.k,
            embedder_model=artifact.embedder_model,
            dimension=artifact.embedder_dimension,
            fit_params=flatten({**artifact.fit_params, "routing": artifact.routing.to_dict()}),
            created_at=artifact.created_at,
            strategies=snapshot.router.strategies,
            has_costs=artifact.costs is not None,
            feedback_observations=snapshot.feedback_observations,
        )
