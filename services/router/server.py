"""Start the Router service: ``await start_router_server(config)``, or ``avengers serve router``."""

from __future__ import annotations

import dataclasses
import logging
import os

from avengers.config.router_service import RouterServiceConfig
from avengers.rpc.server import GrpcServer, ServiceBinding, start_server
from avengers.services.router.query_embedding import LocalQueryEmbedder, QueryEmbedder, RemoteQueryEmbedder
from avengers.services.router.servicer import RouterServicer
from avengers.services.router.snapshots import ReloadResult, RouterSnapshot, SnapshotManager
from avengers.state.connection import RedisConnection
from avengers.state.feedback import FeedbackStore, create_feedback_store
from avengers.stores import CentroidStore, create_store
from avengers.v1 import router_pb2_grpc

log = logging.getLogger(__name__)

SERVICE_NAME = "avengers.v1.Router"


@dataclasses.dataclass
class RouterServer(GrpcServer):
    """The running Router service.

    ``await reload()`` checks the store now (besides the periodic poll) and returns a
    :class:`~avengers.services.router.snapshots.ReloadResult`; ``snapshots.current`` is the router served;
    ``stop(grace)`` lets in-flight calls finish, then ends polling and releases the embedder and store.
    """

    snapshots: SnapshotManager | None = None
    query_embedder: QueryEmbedder | None = None
    owned_store: CentroidStore | None = None
    feedback_store: FeedbackStore | None = None
    redis: RedisConnection | None = None

    async def reload(self, *, force: bool = False) -> ReloadResult:
        assert self.snapshots is not None
        return await self.snapshots.reload(force=force)

    async def stop(self, grace: float = 5.0) -> None:
        await super().stop(grace)
        if self.snapshots is not None:
            await self.snapshots.close()
        if self.query_embedder is not None:
            await self.query_embedder.close()
        if self.owned_store is not None:
            self.owned_store.close()
        if self.feedback_store is not None:
            await self.feedback_store.close()
        if self.redis is not None:
            await self.redis.close()


def feedback_store_for(
    config: RouterServiceConfig, feedback_store: FeedbackStore | None
) -> tuple[FeedbackStore | None, RedisConnection | None]:
    """The store the feedback tallies are read from (None when not learning from feedback); the Redis
    connection returned is owned by the server."""
    if not config.feedback.enabled or feedback_store is not None:
        return feedback_store, None
    if not config.feedback.redis.url:
        raise ValueError("router feedback learning needs Redis: set feedback.redis.url or $REDIS_URL")
    redis = RedisConnection(config.feedback.redis)
    return create_feedback_store(config.feedback.store, redis), redis


def query_embedder_for(config: RouterServiceConfig) -> QueryEmbedder:
    """The Embedder service at ``embedder_address`` / ``$AVENGERS_EMBEDDER_ADDR``, else an in-process model."""
    address = config.embedder_address or os.environ.get("AVENGERS_EMBEDDER_ADDR")
    if address:
        return RemoteQueryEmbedder(address, config.embed_timeout_seconds, config.server.max_message_bytes)
    return LocalQueryEmbedder(config.embedding, config.batching)


async def start_router_server(
    config: RouterServiceConfig | None = None,
    address: str | None = None,
    *,
    store: CentroidStore | None = None,
    feedback_store: FeedbackStore | None = None,
) -> RouterServer:
    """Load the store's active router and serve it, polling the store for new versions.

    ``address`` ("host:port", port 0 picks a free one) overrides ``config.server``; the default binds
    0.0.0.0:50052. ``store`` replaces the one built from ``config.store`` (the caller keeps ownership), and
    ``feedback_store`` the one built from ``config.feedback`` when it is enabled (likewise).
    The server starts even when the store is unreachable or has no active router: health then reports
    NOT_SERVING and Route answers UNAVAILABLE until a poll (or ``reload()``) loads one.
    """
    config = config or RouterServiceConfig()
    owned = None
    if store is None:
        store = owned = create_store(config.store)
    tallies, redis = feedback_store_for(config, feedback_store)
    owned_tallies = tallies if redis is not None else None
    query_embedder = query_embedder_for(config)
    running: RouterServer | None = None

    async def serving(snapshot: RouterSnapshot) -> None:
        if running is not None:
            await running.set_serving(True)

    snapshots = SnapshotManager(
        store, query_embedder, config.poll_interval_seconds, on_change=serving, feedback=config.feedback,
        feedback_store=tallies,
    )
    servicer = RouterServicer(snapshots, query_embedder, config.feedback)
    try:
        first = await snapshots.start()
        grpc_server = await start_server(
            [ServiceBinding(servicer, router_pb2_grpc.add_RouterServicer_to_server, SERVICE_NAME)],
            address or config.server.address,
            config=config.server,
        )
    except BaseException:
        await snapshots.close()
        await query_embedder.close()
        if owned is not None:
            owned.close()
        if owned_tallies is not None:
            await owned_tallies.close()
        if redis is not None:
            await redis.close()
        raise
    running = RouterServer(
        **{f.name: getattr(grpc_server, f.name) for f in dataclasses.fields(grpc_server)},
        snapshots=snapshots,
        query_embedder=query_embedder,
        owned_store=owned,
        feedback_store=owned_tallies,
        redis=redis,
    )
    if snapshots.current is None:
        await running.set_serving(False)
        log.warning("router service on port %d has no router yet (%s); NOT_SERVING until one loads", running.port, first.error)
    log.info("router service on port %d (store: %s, queries via %s)", running.port, store.describe(), query_embedder.description)
    return running
