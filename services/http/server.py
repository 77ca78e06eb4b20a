"""Start the OpenAI-compatible HTTP service: ``await start_http_server(config)``, or ``avengers serve http``.

uvicorn serves the Starlette app of :mod:`.app` inside the caller's event loop (``avengers up`` runs it next
to the gRPC services); the Gateway is reached over gRPC with :class:`avengers.client.AsyncClient`, the model
pool (direct calls to one model) with the model pool's gRPC client.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import ssl
from dataclasses import dataclass, field

import grpc
import uvicorn

from avengers.client import AsyncClient
from avengers.clients.ensemble import GrpcModelPoolClient
from avengers.config.http_service import HttpServiceConfig, UpstreamConfig
from avengers.observability.metrics import metrics_port_from, start_metrics_endpoint
from avengers.rpc.security import channel_credentials, open_channel, tokens_from_env
from avengers.services.http.app import HttpApi, create_app

log = logging.getLogger(__name__)


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the process's owner (``avengers serve``/``up``) stops it."""

    @contextlib.contextmanager
    def capture_signals(self):
        yield


@dataclass
class HttpServer:
    """The running HTTP service; ``stop(grace)`` lets in-flight requests finish, then closes its channels."""

    server: uvicorn.Server
    task: asyncio.Task
    port: int
    scheme: str
    host: str
    gateway: AsyncClient
    channels: list[grpc.aio.Channel] = field(default_factory=list)
    metrics_port: int | None = None

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"{self.scheme}://{host}:{self.port}"

    async def stop(self, grace: float = 5.0) -> None:
        self.server.config.timeout_graceful_shutdown = max(grace, 0.5)  # 0 makes uvicorn log an error
        self.server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(self.task), timeout=grace + 5.0)
        except TimeoutError:
            self.task.cancel()
        await self.gateway.close()
        for channel in self.channels:
            await channel.close()


def _upstream_options(upstream: UpstreamConfig) -> dict:
    return {
        "tls": upstream.tls,
        "ca_file": upstream.tls_ca_file,
        "cert_file": upstream.tls_cert_file,
        "key_file": upstream.tls_key_file,
        "token_env": upstream.token_env,
    }


def _pool_channel(config: HttpServiceConfig) -> grpc.aio.Channel:
    pool = config.model_pool
    assert pool is not None
    credentials = None
    if pool.tls or pool.tls_ca_file or pool.tls_cert_file:
        credentials = channel_credentials(pool.tls_ca_file, pool.tls_cert_file, pool.tls_key_file)
    token = None
    if pool.token_env:
        token = os.environ.get(pool.token_env, "").strip()
        if not token:
            raise ValueError(f"model_pool.token_env {pool.token_env}: the variable is unset or empty")
    return open_channel(pool.address, max_message_bytes=config.server.max_message_bytes, credentials=credentials,
                        token=token)


def _bind(address: str) -> socket.socket:
    host, _, port = address.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio turns Nagle's algorithm off (TCP_NODELAY) only on sockets whose proto says
    # TCP, and a response written in two parts otherwise waits for the client's delayed ACK (~40 ms a request).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, int(port)))
    except OSError as exc:
        sock.close()
        raise RuntimeError(f"could not bind {address}: {exc}") from None
    sock.set_inheritable(True)
    return sock


async def start_http_server(config: HttpServiceConfig | None = None, address: str | None = None) -> HttpServer:
    """Serve the HTTP API on ``address`` ("host:port"; port 0 picks a free one), default ``config.server``
    (0.0.0.0:8080). The Gateway is reached lazily: the service starts when it is down, and calls then end
    with 503. Token auth (``server.auth_token_env``) and TLS files are read now, so mistakes fail at start."""
    config = config or HttpServiceConfig()
    server_config = config.server
    tokens = tokens_from_env(server_config.auth_token_env) if server_config.auth_token_env else ()
    gateway = AsyncClient(config.gateway.address, max_message_bytes=server_config.max_message_bytes,
                          timeout=config.limits.timeout_seconds, **_upstream_options(config.gateway))
    channels: list[grpc.aio.Channel] = []
    pool = None
    if config.model_pool is not None:
        channels.append(_pool_channel(config))
        pool = GrpcModelPoolClient(channels[0], config.model_pool.address, config.model_pool.application)
    api = HttpApi(config, gateway, pool, tokens)
    tls = bool(server_config.tls_cert_file)
    uvicorn_config = uvicorn.Config(
        create_app(api),
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=server_config.grace_seconds,
        ssl_certfile=server_config.tls_cert_file,
        ssl_keyfile=server_config.tls_key_file,
        ssl_ca_certs=server_config.tls_client_ca_file,
        ssl_cert_reqs=ssl.CERT_REQUIRED if server_config.tls_client_ca_file else ssl.CERT_NONE,
    )
    sock = _bind(address or server_config.address)
    server = _Server(uvicorn_config)
    task = asyncio.ensure_future(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():  # failed at start (e.g. unreadable TLS files)
            sock.close()
            await gateway.close()
            for channel in channels:
                await channel.close()
            exc = task.exception()
            raise RuntimeError(f"the HTTP service did not start: {exc or 'uvicorn exited'}")
        await asyncio.sleep(0.02)
    port = sock.getsockname()[1]
    metrics_port = start_metrics_endpoint(metrics_port_from(server_config.metrics_port), server_config.host)
    log.info(
        "serving the OpenAI-compatible HTTP API on %s:%d (%s, %s); gateway %s, model pool %s",
        server_config.host if address is None else address.rpartition(":")[0], port, "TLS" if tls else "plaintext",
        f"bearer token from ${server_config.auth_token_env}" if tokens else "no auth",
        config.gateway.address, config.model_pool.address if config.model_pool else "none (ensemble only)",
    )
    host = (address or server_config.address).rpartition(":")[0].strip("[]")
    return HttpServer(server, task, port, "https" if tls else "http", host, gateway, channels, metrics_port)
