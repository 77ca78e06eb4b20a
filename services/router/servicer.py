"""Router gRPC servicer: query text or embedding -> ranked models, on the current router snapshot."""

from __future__ import annotations

import json
import math
from typing import Any

import grpc
import numpy as np

from avengers.observability.metrics import record_route
from avengers.rpc.errors import FailedPrecondition, InvalidArgument, Unavailable, grpc_errors
from avengers.services.router.query_embedding import QueryEmbedder, mismatch_message
from avengers.services.router.snapshots import RouterSnapshot, SnapshotManager
from avengers.v1 import common_pb2, router_pb2, router_pb2_grpc

STRATEGIES = {
    router_pb2.ROUTING_STRATEGY_UNSPECIFIED: None,
    router_pb2.ROUTING_STRATEGY_NEAREST: "nearest",
    router_pb2.ROUTING_STRATEGY_SOFT: "soft",
}
STRATEGY_ENUM = {"nearest": router_pb2.ROUTING_STRATEGY_NEAREST, "soft": router_pb2.ROUTING_STRATEGY_SOFT}


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
    def __init__(self, snapshots: SnapshotManager, query_embedder: QueryEmbedder):
        self.snapshots = snapshots
        self.query_embedder = query_embedder

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
        if request.strategy not in STRATEGIES:
            raise InvalidArgument(f"unknown routing strategy {request.strategy}")
        strategy = STRATEGIES[request.strategy] or artifact.routing.strategy
        num_models = len(artifact.models)
        if request.top_n > num_models:
            raise InvalidArgument(f"top_n={request.top_n} but the router has {num_models} models (0 means all)")
        if request.top_k > artifact.k:
            raise InvalidArgument(f"top_k={request.top_k} but the router has {artifact.k} clusters")
        beta = request.beta if request.HasField("beta") else None
        if beta is not None and not (math.isfinite(beta) and beta >= 0):
            raise InvalidArgument(f"beta must be a finite number >= 0, got {beta}")
        embedding = await self._embedding(request, snapshot)
        result = snapshot.router.route(
            embedding, strategy=strategy, top_n=request.top_n or num_models, top_k=request.top_k or None, beta=beta
        )
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
            strategy=STRATEGY_ENUM[strategy],
        )

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
        artifact = self._snapshot().artifact
        return router_pb2.RouterInfo(
            router_version=artifact.version,
            models=artifact.models,
            num_clusters=artifact.k,
            embedder_model=artifact.embedder_model,
            dimension=artifact.embedder_dimension,
            fit_params=flatten({**artifact.fit_params, "routing": artifact.routing.to_dict()}),
            created_at=artifact.created_at,
        )
