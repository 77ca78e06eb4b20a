"""The model pool a command samples from: one run in this process from a pool YAML, or one at an address."""

from __future__ import annotations

import argparse
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from avengers.config.model_pool import ModelPoolConfig


@asynccontextmanager
async def model_pool_for(args: argparse.Namespace, max_message_bytes: int = 64 * 1024 * 1024) -> AsyncIterator:
    """A :class:`~avengers.clients.ensemble.GrpcModelPoolClient` for ``--pool YAML`` (a standalone pool started here,
    stopped on exit) or ``--model-pool-addr HOST:PORT`` (with ``--application`` for Ray Serve)."""
    from avengers.clients.ensemble import GrpcModelPoolClient, open_channel

    server = None
    if args.pool:
        from avengers.services.model_pool.server import start_model_pool_server

        config = ModelPoolConfig.from_yaml(args.pool)
        print(f"starting the pool of {args.pool} ({', '.join(config.model_names)})", file=sys.stderr)
        server = await start_model_pool_server(config, "127.0.0.1:0")
        address, application = f"127.0.0.1:{server.port}", None
    else:
        address, application = args.model_pool_addr, args.application
    channel = open_channel(address, max_message_bytes)
    try:
        yield GrpcModelPoolClient(channel, address, application)
    finally:
        await channel.close()
        if server is not None:
            await server.stop(0)
