"""Run gRPC services with health checking, reflection, size limits and graceful shutdown."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

log = logging.getLogger(__name__)

DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024


@dataclass
class ServiceBinding:
    """One servicer on a server: its instance, the generated ``add_*_to_server`` and its full name."""

    servicer: Any
    add_to_server: Callable[[Any, grpc.aio.Server], None]
    full_name: str
    """Proto full name, e.g. "avengers.v1.Embedder" (health and reflection use it)."""


@dataclass
class GrpcServer:
    """A started aio server, its health servicer and bound port."""

    server: grpc.aio.Server
    health: health.aio.HealthServicer
    port: int
    services: list[str] = field(default_factory=list)

    async def set_serving(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ["", *self.services]:
            await self.health.set(name, status)

    async def stop(self, grace: float = 5.0) -> None:
        """Report NOT_SERVING, let in-flight calls finish for ``grace`` seconds, then stop."""
        await self.set_serving(False)
        await self.server.stop(grace)


async def start_server(
    bindings: Sequence[ServiceBinding],
    address: str = "127.0.0.1:0",
    *,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
    credentials: grpc.ServerCredentials | None = None,
) -> GrpcServer:
    """Start a server on ``address`` ("host:0" picks a free port) with health and reflection."""
    server = grpc.aio.server(
        interceptors=list(interceptors),
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.so_reuseport", 0),
        ],
    )
    names = []
    for b in bindings:
        b.add_to_server(b.servicer, server)
        names.append(b.full_name)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection([*names, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
    port = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"could not bind {address}")
    await server.start()
    running = GrpcServer(server=server, health=health_servicer, port=port, services=names)
    await running.set_serving(True)
    log.info("serving %s on port %d", ", ".join(names), port)
    return running


async def serve_until_signal(
    running: GrpcServer, grace: float = 5.0, on_stop: Callable[[], Awaitable[None]] | None = None
) -> None:
    """Block until SIGINT/SIGTERM, then shut down gracefully."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down (grace %.1fs)", grace)
    await running.stop(grace)
    if on_stop is not None:
        await on_stop()
