"""Run gRPC services with health checking, reflection, size limits, metrics, tracing, TLS/auth and graceful
shutdown."""

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

from avengers.config.server import ServerConfig
from avengers.observability.metrics import MetricsInterceptor, metrics_port_from, start_metrics_endpoint
from avengers.observability.tracing import TracingServerInterceptor, configure_tracing, tracing_enabled
from avengers.rpc.errors import UndecodableRequestInterceptor
from avengers.rpc.security import ServerSecurity, server_security
from avengers.threads import apply_thread_limits

log = logging.getLogger(__name__)

DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024


class HealthServicer(health.aio.HealthServicer):
    """grpc's aio health servicer, plus ``List`` (every service's status), which it leaves unimplemented
    (each call logged an ERROR traceback and ended UNKNOWN/UNIMPLEMENTED)."""

    async def List(self, request: health_pb2.HealthListRequest, context) -> health_pb2.HealthListResponse:
        return health_pb2.HealthListResponse(
            statuses={name: health_pb2.HealthCheckResponse(status=status) for name, status in self._server_status.items()}
        )


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
    metrics_port: int | None = None
    """Port of this process's /metrics endpoint, None if it serves none."""

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
    max_message_bytes: int | None = None,
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
    credentials: grpc.ServerCredentials | None = None,
    config: ServerConfig | None = None,
) -> GrpcServer:
    """Start a server on ``address`` ("host:0" picks a free port) with health and reflection.

    Every server counts and times its calls (Prometheus) and traces them once tracing is configured;
    undecodable request bytes end as INVALID_ARGUMENT (counted like any call), not UNKNOWN.
    ``config`` (the service's :class:`~avengers.config.server.ServerConfig`) adds what it asks for: TLS or
    mutual TLS, bearer-token auth, the /metrics endpoint, and the message size limit unless
    ``max_message_bytes`` is given. Explicit ``credentials`` win over the config's TLS files.
    """
    apply_thread_limits(announce=True)  # every service process: bounded torch/ONNX Runtime/OpenMP/BLAS pools
    if max_message_bytes is None:
        max_message_bytes = config.max_message_bytes if config is not None else DEFAULT_MAX_MESSAGE_BYTES
    security = server_security(config) if config is not None else ServerSecurity()
    metrics_port = None
    if config is not None:
        configure_tracing()  # from OTEL_TRACES_EXPORTER; nothing unless an exporter is named
        metrics_port = start_metrics_endpoint(metrics_port_from(config.metrics_port), config.host)
    chain: list[grpc.aio.ServerInterceptor] = [MetricsInterceptor()]
    if tracing_enabled():
        chain.append(TracingServerInterceptor())
    chain += [*security.interceptors, *interceptors, UndecodableRequestInterceptor()]
    server = grpc.aio.server(
        interceptors=chain,
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
    health_servicer = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection([*names, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
    described = "TLS (given credentials)" if credentials else security.description
    credentials = credentials or security.credentials
    port = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"could not bind {address}")
    await server.start()
    running = GrpcServer(server=server, health=health_servicer, port=port, services=names, metrics_port=metrics_port)
    await running.set_serving(True)
    log.info("serving %s on port %d (%s)", ", ".join(names), port, described)
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
