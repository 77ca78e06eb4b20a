"""Start the Embedder service: ``await start_embedder_server(config)``, or ``avengers serve embedder``."""

from __future__ import annotations

import asyncio
import dataclasses
import logging

from avengers.config.embedder_service import EmbedderServiceConfig
from avengers.core.embedding import Embedder, create_embedder
from avengers.rpc.server import GrpcServer, ServiceBinding, start_server
from avengers.services.embedder.servicer import EmbedderServicer
from avengers.serving.batched_embedder import BatchedEmbedder
from avengers.threads import apply_thread_limits
from avengers.v1 import embedder_pb2_grpc

log = logging.getLogger(__name__)

SERVICE_NAME = "avengers.v1.Embedder"


@dataclasses.dataclass
class EmbedderServer(GrpcServer):
    """The running Embedder service; ``stop()`` also ends its batcher after in-flight calls finish."""

    embedder: BatchedEmbedder | None = None

    async def stop(self, grace: float = 5.0) -> None:
        await super().stop(grace)
        if self.embedder is not None:
            await self.embedder.close()


async def start_embedder_server(
    config: EmbedderServiceConfig | None = None,
    address: str | None = None,
    *,
    embedder: Embedder | None = None,
) -> EmbedderServer:
    """Load the model, warm it up and serve it.

    ``address`` ("host:port", port 0 picks a free one) overrides ``config.server``; the default binds
    0.0.0.0:50051. ``embedder`` replaces the configured model (tests, embedding a custom backend).
    The result is a :class:`~avengers.rpc.server.GrpcServer` (``port``, ``stop(grace)``).
    """
    config = config or EmbedderServiceConfig()
    apply_thread_limits(announce=True)  # before the model loads its thread pools
    if embedder is None:
        embedder = await asyncio.to_thread(create_embedder, config.embedding)
    await asyncio.to_thread(embedder.encode, ["warm-up"])  # first call pays lazy initialisation
    batched = BatchedEmbedder(embedder, config.batching, config.embedding.max_text_chars)
    running = await start_server(
        [ServiceBinding(EmbedderServicer(batched), embedder_pb2_grpc.add_EmbedderServicer_to_server, SERVICE_NAME)],
        address or config.server.address,
        config=config.server,
    )
    variant = f", {embedder.variant}" if embedder.variant else ""
    log.info("embedder %s (dimension %d%s) on port %d", embedder.name, embedder.dimension, variant, running.port)
    return EmbedderServer(**{f.name: getattr(running, f.name) for f in dataclasses.fields(running)}, embedder=batched)
