"""Standalone model pool: the ModelPool servicer over in-process engines on a plain grpc.aio server, no Ray.

For ``avengers up`` on a laptop, for ``avengers serve model-pool``, and for tests. Every model gets one engine
in this process; the Ray Serve application (:mod:`avengers.services.model_pool.app`) is the scaled variant of
the same servicer.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field, fields

from avengers.config.model_pool import ModelPoolConfig
from avengers.engines.base import Engine, create_engine
from avengers.rpc.server import GrpcServer, ServiceBinding, serve_until_signal, start_server
from avengers.services.model_pool.servicer import EngineTarget, ModelPoolServicer
from avengers.v1 import model_pool_pb2_grpc

log = logging.getLogger(__name__)

SERVICE_NAME = "avengers.v1.ModelPool"


@dataclass
class ModelPoolServer(GrpcServer):
    """A running standalone pool: the gRPC server and the engines it owns (shut down by :meth:`stop`)."""

    engines: dict[str, Engine] = field(default_factory=dict)

    async def stop(self, grace: float = 5.0) -> None:
        await super().stop(grace)
        await shutdown_engines(self.engines.values())


async def shutdown_engines(engines) -> None:
    for engine in engines:
        try:
            await engine.shutdown()
        except Exception:
            log.exception("shutting down model %r failed", engine.name)


async def start_engines(config: ModelPoolConfig) -> dict[str, Engine]:
    """Create and start one engine per model; if one fails, the started ones are shut down again."""
    engines = {m.name: create_engine(m) for m in config.models}
    results = await asyncio.gather(*(e.start() for e in engines.values()), return_exceptions=True)
    failures = [(name, r) for name, r in zip(engines, results) if isinstance(r, BaseException)]
    if failures:
        await shutdown_engines(e for name, e in engines.items() if name not in dict(failures))
        name, exc = failures[0]
        raise RuntimeError(f"model {name!r} failed to start: {type(exc).__name__}: {exc}") from exc
    return engines


async def start_model_pool_server(config: ModelPoolConfig | None = None, address: str | None = None) -> GrpcServer:
    """Start every model's engine and serve the ModelPool contract on ``address``.

    ``address`` defaults to ``config.server.address`` (0.0.0.0:9000); "127.0.0.1:0" picks a free port (read
    it from ``.port``). ``config.server`` also brings TLS, bearer-token auth and /metrics when set. The
    returned server's ``stop()`` also shuts the engines down. No config: the default pool (SmolLM2 on CPU).
    """
    config = config or ModelPoolConfig()
    engines = await start_engines(config)
    try:
        servicer = ModelPoolServicer(config, {name: EngineTarget(e) for name, e in engines.items()})
        running = await start_server(
            [ServiceBinding(servicer, model_pool_pb2_grpc.add_ModelPoolServicer_to_server, SERVICE_NAME)],
            address or config.server.address,
            config=config.server,
        )
    except BaseException:
        await shutdown_engines(engines.values())
        raise
    log.info("model pool serving %s on port %d", ", ".join(engines), running.port)
    return ModelPoolServer(**{f.name: getattr(running, f.name) for f in fields(running)}, engines=engines)


async def serve_model_pool(config: ModelPoolConfig, address: str | None = None) -> None:
    """Run the standalone pool until SIGINT/SIGTERM, then stop gracefully."""
    running = await start_model_pool_server(config, address)
    await serve_until_signal(running, grace=config.server.grace_seconds)
