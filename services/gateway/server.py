"""Start the Gateway service: ``await start_gateway_server(config)``, or ``avengers serve gateway``."""

from __future__ import annotations

import dataclasses
import logging

import grpc

from avengers.clients.ensemble import (
    EmbeddingRouterClient,
    GrpcModelPoolClient,
    GrpcRouterClient,
    GrpcVoterClient,
    open_channel,
)
from avengers.config.gateway_service import GatewayServiceConfig
from avengers.core.ensemble import CallTimeouts, EnsemblePipeline
from avengers.rpc.server import GrpcServer, ServiceBinding, start_server
from avengers.services.gateway.servicer import GatewayServicer
from avengers.state import connect_redis, create_cache, create_feedback_store
from avengers.state.cache import ResponseCache
from avengers.state.connection import RedisConnection
from avengers.state.feedback import FeedbackStore
from avengers.v1 import gateway_pb2_grpc

log = logging.getLogger(__name__)

SERVICE_NAME = "avengers.v1.Gateway"


@dataclasses.dataclass
class GatewayServer(GrpcServer):
    """The running Gateway: ``stop(grace)`` lets in-flight calls finish, then closes channels and Redis."""

    servicer: GatewayServicer | None = None
    channels: list[grpc.aio.Channel] = dataclasses.field(default_factory=list)
    redis: RedisConnection | None = None

    async def stop(self, grace: float = 5.0) -> None:
        await super().stop(grace)
        for channel in self.channels:
            await channel.close()
        if self.servicer is not None:
            await self.servicer.cache.close()
            await self.servicer.feedback.close()
        if self.redis is not None:
            await self.redis.close()


def build_pipeline(config: GatewayServiceConfig) -> tuple[EnsemblePipeline, list[grpc.aio.Channel]]:
    """The ensemble pipeline over gRPC clients of the configured dependencies, and the channels it opened."""
    down, limit = config.downstream, config.server.max_message_bytes
    router_channel = open_channel(down.router, limit)
    pool_channel = open_channel(down.model_pool, limit)
    voter_channel = open_channel(down.voter, limit)
    channels = [router_channel, pool_channel, voter_channel]
    if down.route_by == "embedding":
        embedder_channel = open_channel(down.embedder, limit)
        channels.append(embedder_channel)
        router = EmbeddingRouterClient(router_channel, down.router, embedder_channel, down.embedder)
    else:
        router = GrpcRouterClient(router_channel, down.router)
    pipeline = EnsemblePipeline(
        router,
        GrpcModelPoolClient(pool_channel, down.model_pool, down.model_pool_application),
        GrpcVoterClient(voter_channel, down.voter),
        instructions=config.instructions,
        max_samples_per_call=config.max_samples_per_call,
        timeouts=CallTimeouts(
            route=config.timeouts.route_seconds,
            generate=config.timeouts.generate_seconds,
            vote=config.timeouts.vote_seconds,
        ),
    )
    return pipeline, channels


async def start_gateway_server(
    config: GatewayServiceConfig | None = None,
    address: str | None = None,
    *,
    cache: ResponseCache | None = None,
    feedback: FeedbackStore | None = None,
) -> GatewayServer:
    """Serve the Gateway on ``address`` ("host:port"; port 0 picks a free one), default ``config.server``
    (0.0.0.0:50050). Dependencies are reached lazily: the gateway starts even when they are down, and calls
    then end with UNAVAILABLE naming the one that is. ``cache``/``feedback`` replace the configured stores."""
    config = config or GatewayServiceConfig()
    pipeline, channels = build_pipeline(config)
    redis = connect_redis(config.redis) if cache is None or feedback is None else None
    servicer = GatewayServicer(
        config,
        pipeline,
        cache or create_cache(config.cache, redis),
        feedback or create_feedback_store(config.feedback, redis),
    )
    try:
        running = await start_server(
            [ServiceBinding(servicer, gateway_pb2_grpc.add_GatewayServicer_to_server, SERVICE_NAME)],
            address or config.server.address,
            config=config.server,
        )
    except BaseException:
        for channel in channels:
            await channel.close()
        if redis is not None:
            await redis.close()
        raise
    log.info(
        "gateway: router %s, model pool %s, voter %s; cache %s, feedback %s%s",
        config.downstream.router, config.downstream.model_pool, config.downstream.voter,
        servicer.cache.name, servicer.feedback.name, f" (redis {redis.url})" if redis else "",
    )
    fields = {f.name: getattr(running, f.name) for f in dataclasses.fields(GrpcServer)}
    return GatewayServer(**fields, servicer=servicer, channels=channels, redis=redis)
