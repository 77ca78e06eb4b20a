"""``avengers serve NAME``: run one gRPC service in the foreground until SIGINT/SIGTERM.

Services are listed in :data:`SERVICES`, by import path so that serving one never imports another's
dependencies. A service needs a config class (a ConfigModel with a ``server: ServerConfig`` field) and
``async def start_<name>_server(config, address=None) -> GrpcServer``; adding one is one line in the table.
If the started server has ``reload()`` (the router), SIGHUP calls it.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from avengers.cli import CommandError
from avengers.config.base import ConfigModel
from avengers.observability.tracing import configure_tracing

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServiceEntry:
    config: str
    """"module:Class" of the service's config."""
    start: str
    """"module:function" that starts it: ``async (config, address=None) -> GrpcServer``."""
    help: str


SERVICES: dict[str, ServiceEntry] = {
    "embedder": ServiceEntry(
        "avengers.config.embedder_service:EmbedderServiceConfig",
        "avengers.services.embedder.server:start_embedder_server",
        "sentence embeddings, micro-batched (port 50051)",
    ),
    "router": ServiceEntry(
        "avengers.config.router_service:RouterServiceConfig",
        "avengers.services.router.server:start_router_server",
        "query -> cluster -> ranked models, from the centroid store (port 50052)",
    ),
    "gateway": ServiceEntry("avengers.config.gateway_service:GatewayServiceConfig", "avengers.services.gateway.server:start_gateway_server", "Ask/Feedback: embed -> route -> generate -> vote, response cache (port 50050)"),
    "model-pool": ServiceEntry("avengers.config.model_pool:ModelPoolConfig", "avengers.services.model_pool.server:start_model_pool_server", "n samples per request from configured models, engines in-process, no Ray (port 9000)"),
    "voter": ServiceEntry("avengers.config.voter_service:VoterServiceConfig", "avengers.services.voter.server:start_voter_server", "candidates -> one answer: extraction per task type, majority/weighted vote, model switch, code sandbox (port 50053)"),
    "http": ServiceEntry(
        "avengers.config.http_service:HttpServiceConfig",
        "avengers.services.http.server:start_http_server",
        "OpenAI-compatible HTTP API over the gateway: /v1/chat/completions, /v1/completions, /v1/models (port 8080)",
    ),
}


def resolve(path: str) -> Any:
    """The object at "module:attribute"."""
    module, _, attribute = path.partition(":")
    return getattr(importlib.import_module(module), attribute)


def load_config(entry: ServiceEntry, args: argparse.Namespace) -> ConfigModel:
    config_class: type[ConfigModel] = resolve(entry.config)
    config = config_class.from_yaml(args.config, key=args.config_key) if args.config else config_class()
    if args.config and hasattr(config, "models"):  # a model pool: its file paths are relative to the YAML
        from avengers.cli.pool import anchor_paths

        config = anchor_paths(config, Path(args.config).resolve().parent)
    server_update = {name: value for name, value in (("port", args.port), ("host", args.host)) if value is not None}
    if server_update:
        server = config.server.model_validate({**config.server.to_dict(), **server_update})
        config = config.model_copy(update={"server": server})
    return config


async def run_service(name: str, config: ConfigModel) -> None:
    configure_tracing(f"avengers-{name}")  # before the service opens its channels (OTEL_TRACES_EXPORTER)
    running = await resolve(SERVICES[name].start)(config)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):  # before the "serving" line: a signal right after it stops cleanly
        loop.add_signal_handler(sig, stop.set)
    url = getattr(running, "url", None)
    print(f"avengers {name} serving on {config.server.host}:{running.port}" + (f" ({url})" if url else ""), flush=True)
    reload = getattr(running, "reload", None)
    if reload is not None:
        reloads: set[asyncio.Task] = set()  # strong references until done

        def on_sighup() -> None:
            log.info("SIGHUP: reloading")
            task = loop.create_task(reload())
            reloads.add(task)
            task.add_done_callback(reloads.discard)

        loop.add_signal_handler(signal.SIGHUP, on_sighup)
    await stop.wait()
    log.info("shutting down (grace %.1fs)", config.server.grace_seconds)
    await running.stop(config.server.grace_seconds)


def cmd_serve(args: argparse.Namespace) -> int:
    entry = SERVICES[args.service]
    try:
        config = load_config(entry, args)
    except FileNotFoundError as exc:
        raise CommandError(f"config file not found: {exc.filename}") from None
    asyncio.run(run_service(args.service, config))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="run one gRPC service",
        description="\n".join(f"{name}: {entry.help}" for name, entry in SERVICES.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("service", choices=list(SERVICES), help="service to run")
    p.add_argument("--port", type=int, help="port to bind (default: the service's; 0 picks a free one)")
    p.add_argument("--host", help="interface to bind (default: 0.0.0.0)")
    p.add_argument("--config", metavar="YAML", help="the service's config file (default: built-in defaults)")
    p.add_argument("--config-key", metavar="KEY",
                   help="section of --config holding this service's config (default: the whole file)")
    p.set_defaults(handler=cmd_serve)
