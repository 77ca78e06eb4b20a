"""Start the Voter service: ``await start_voter_server(config)``, or ``python -m avengers.services.voter.server``."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
from concurrent.futures import ThreadPoolExecutor

from avengers.config.voter_service import VoterServiceConfig
from avengers.core.answers import warm_up
from avengers.rpc.server import GrpcServer, ServiceBinding, serve_until_signal, start_server
from avengers.sandbox import Sandbox, create_sandbox
from avengers.sandbox.scheduling import FairSlots
from avengers.services.voter.embedding import LocalTextEmbedder, RemoteTextEmbedder, TextEmbedder
from avengers.services.voter.servicer import VoterServicer
from avengers.v1 import voter_pb2_grpc

log = logging.getLogger(__name__)

SERVICE_NAME = "avengers.v1.Voter"
EMBEDDER_ADDR_ENV = "AVENGERS_EMBEDDER_ADDR"


@dataclasses.dataclass
class VoterServer(GrpcServer):
    """The running Voter service; ``stop(grace)`` lets in-flight votes finish, then releases its pools."""

    embedder: TextEmbedder | None = None
    pools: list[ThreadPoolExecutor] = dataclasses.field(default_factory=list)

    async def stop(self, grace: float = 5.0) -> None:
        await super().stop(grace)
        for pool in self.pools:
            await asyncio.to_thread(pool.shutdown, wait=True, cancel_futures=True)
        if self.embedder is not None:
            await self.embedder.close()


def text_embedder_for(config: VoterServiceConfig) -> TextEmbedder:
    """The Embedder service at ``embedder_address`` / ``$AVENGERS_EMBEDDER_ADDR``, else an in-process model."""
    address = config.embedder_address or os.environ.get(EMBEDDER_ADDR_ENV)
    if address:
        return RemoteTextEmbedder(
            address,
            asyncio.get_running_loop(),
            config.embed_timeout_seconds,
            config.embed_batch,
            config.server.max_message_bytes,
        )
    return LocalTextEmbedder(config.embedding)


async def start_voter_server(
    config: VoterServiceConfig | None = None,
    address: str | None = None,
    *,
    embedder: TextEmbedder | None = None,
    sandbox: Sandbox | None = None,
) -> VoterServer:
    """Serve Voter.Vote.

    ``address`` ("host:port", port 0 picks a free one) overrides ``config.server``; the default binds
    0.0.0.0:50053. ``embedder`` and ``sandbox`` replace the configured ones (tests, custom backends).
    The in-process embedding model, when used, loads on the first free-text vote.
    """
    config = config or VoterServiceConfig()
    await asyncio.to_thread(warm_up)
    embedder = embedder or text_embedder_for(config)
    sandbox = sandbox or await asyncio.to_thread(create_sandbox, config.sandbox)
    vote_pool = ThreadPoolExecutor(config.limits.max_concurrent_votes, thread_name_prefix="voter-vote")
    servicer = VoterServicer(config, embedder, sandbox, vote_pool, FairSlots(config.sandbox.max_parallel))
    try:
        running = await start_server(
            [ServiceBinding(servicer, voter_pb2_grpc.add_VoterServicer_to_server, SERVICE_NAME)],
            address or config.server.address,
            config=config.server,
        )
    except BaseException:
        vote_pool.shutdown(wait=False)
        await embedder.close()
        raise
    log.info(
        "voter on port %d (free text via %s, sandbox %s)",
        running.port,
        embedder.description,
        config.sandbox.backend,
    )
    return VoterServer(
        **{f.name: getattr(running, f.name) for f in dataclasses.fields(running)},
        embedder=embedder,
        pools=[vote_pool],
    )


async def serve(config: VoterServiceConfig, address: str | None = None) -> None:
    """Run the Voter until SIGINT/SIGTERM, then stop gracefully."""
    running = await start_voter_server(config, address)
    await serve_until_signal(running, grace=config.server.grace_seconds)


def main(argv: list[str] | None = None) -> None:
    """``python -m avengers.services.voter.server [--config FILE] [--port N]`` (``avengers serve voter`` wires
    the same :func:`start_voter_server`)."""
    parser = argparse.ArgumentParser(description="Run the Avengers Voter service.")
    parser.add_argument("--config", help="YAML file of a VoterServiceConfig")
    parser.add_argument("--port", type=int, help="port to bind (default: the config's, 50053)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = VoterServiceConfig.from_yaml(args.config) if args.config else VoterServiceConfig()
    address = f"{config.server.host}:{args.port}" if args.port is not None else None
    asyncio.run(serve(config, address))


if __name__ == "__main__":
    main()
