"""``avengers up``: every service on localhost in one process — embedder, router (embedded Qdrant), voter,
model pool and gateway — with a fitted router published at start when none fits.

The default stack is real and offline: the model pool is two model families on llama.cpp (CPU),
SmolLM2-135M-Instruct and Gemma 3 270M (``avengers/data/default_pool.yaml``), and the router is fitted on
labels measured by running those two models on generated tasks with known answers
(``avengers/data/default_labels.jsonl``, made by ``avengers calibrate``).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from avengers.cli import CommandError

log = logging.getLogger(__name__)

SERVICES = ("gateway", "embedder", "router", "voter", "model_pool", "http")
DEFAULT_PORTS = {"gateway": 50050, "embedder": 50051, "router": 50052, "voter": 50053, "model_pool": 9000,
                 "http": 8080}


def parse_ports(spec: str) -> dict[str, int]:
    """"auto" (free ports), or "name=port,..." overriding the defaults ("model-pool" or "model_pool")."""
    if spec.strip() == "auto":
        return dict.fromkeys(SERVICES, 0)
    ports = dict(DEFAULT_PORTS)
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, sep, value = item.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or name not in ports or not value.strip().isdigit() or int(value) > 65535:
            raise CommandError(
                f"--ports: bad item {item!r}; expected NAME=PORT with NAME in {', '.join(SERVICES)}, or 'auto'"
            )
        ports[name] = int(value)
    return ports


def default_data_dir() -> Path:
    from avengers.core.embedding import default_cache_dir

    return default_cache_dir() / "up"


@dataclass
class RouterPlan:
    """Which router to serve, decided before any server starts."""

    version: str
    origin: str
    models: list[str] = field(default_factory=list)


def ensure_router(
    store_config: Any,
    embedder: Any,
    served: list[str] | None,
    router_dir: str | None,
    labels_path: str | None,
    k: int,
) -> RouterPlan:
    """Publish and activate the router to serve: ``router_dir`` if given; else the active one if it routes to
    served models with this embedder; else one fitted now on ``labels_path`` (default: the shipped labels)."""
    from avengers.config.clustering import ClusteringConfig
    from avengers.config.routing import ScoringConfig
    from avengers.core.artifact import RouterArtifact
    from avengers.core.fit import fit_router
    from avengers.core.labels import read_labels
    from avengers.data import data_path
    from avengers.stores import create_store

    def check(models: list[str], what: str) -> None:
        missing = sorted(set(models) - set(served)) if served is not None else []
        if missing:
            raise CommandError(
                f"{what} routes to {missing}, which the model pool does not serve ({served}); "
                "give --router DIR or --labels FILE made for this pool (see `avengers calibrate`)"
            )

    with create_store(store_config) as store:
        if router_dir:
            artifact = RouterArtifact.load(router_dir)
            check(artifact.models, f"router {router_dir}")
            if artifact.embedder_model != embedder.name or artifact.embedder_dimension != embedder.dimension:
                raise CommandError(
                    f"router {router_dir} was fitted with {artifact.embedder_model} ({artifact.embedder_dimension}d); "
                    f"this stack embeds with {embedder.name} ({embedder.dimension}d): pass --embedder to match"
                )
            return RouterPlan(store.publish_and_activate(artifact), f"published from {router_dir}", artifact.models)
        active = store.active_version()
        if active and not labels_path:
            artifact = store.load(active)
            fits = artifact.embedder_model == embedder.name and artifact.embedder_dimension == embedder.dimension
            if fits and (served is None or set(artifact.models) <= set(served)):
                return RouterPlan(active, "already active", artifact.models)
            log.info("the active router %s does not fit this pool/embedder; fitting one", active)
        labels = read_labels(labels_path or data_path("default_labels.jsonl"))
        check(labels.models, f"labels {labels.source}")
        artifact = fit_router(
            labels,
            embedder,
            ClusteringConfig(k=min(k, len(labels)), seed=0, n_init=10),
            ScoringConfig(smoothing=1.0),
        )
        version = store.publish_and_activate(artifact)
        return RouterPlan(version, f"fitted on {labels.source} (k={artifact.k})", artifact.models)


async def served_models(address: str, application: str | None) -> list[str] | None:
    """Models a remote pool serves (None when it cannot be asked now)."""
    from avengers.clients.ensemble import GrpcModelPoolClient, open_channel
    from avengers.core.ensemble import DependencyError

    channel = open_channel(address, 16 * 1024 * 1024)
    try:
        return await GrpcModelPoolClient(channel, address, application).list_models(timeout=10)
    except DependencyError as exc:
        log.warning("could not list the models of the pool (%s); not checking the router against it", exc)
        return None
    finally:
        await channel.close()


async def run_up(args: argparse.Namespace) -> int:
    from avengers.cli.pool import load_pool
    from avengers.config.embedder_service import EmbedderServiceConfig
    from avengers.config.embedding import EmbeddingConfig
    from avengers.config.gateway_service import DownstreamConfig, GatewayServiceConfig
    from avengers.config.http_service import HttpServiceConfig, UpstreamConfig
    from avengers.config.router_service import RouterServiceConfig
    from avengers.config.server import ServerConfig
    from avengers.config.state import RedisConfig
    from avengers.config.store import StoreConfig
    from avengers.config.voter_service import VoterServiceConfig
    from avengers.core.embedding import create_embedder
    from avengers.data import data_path
    from avengers.services.embedder.server import start_embedder_server
    from avengers.services.gateway.server import start_gateway_server
    from avengers.services.http.server import start_http_server
    from avengers.services.router.server import start_router_server
    from avengers.services.voter.server import start_voter_server

    ports = parse_ports(args.ports)
    host = args.host
    metrics_port = args.metrics_port

    def on_host(name: str, **fields: Any) -> ServerConfig:
        """The server section of a service of this stack: metrics on the stack's interface, not 0.0.0.0."""
        return ServerConfig(host=host, port=ports[name], metrics_port=metrics_port, **fields)

    data_dir = Path(args.data_dir).expanduser() if args.data_dir else default_data_dir()
    data_dir.mkdir(parents=True, exist_ok=True)

    pool_config = None
    if args.model_pool_addr:
        served = await served_models(args.model_pool_addr, args.application)
    else:
        pool_config = load_pool(args.pool or data_path("default_pool.yaml"))
        served = pool_config.model_names

    if args.embedder == "hashing":
        embedding = EmbeddingConfig(backend="hashing", dimension=args.hashing_dimension)
    else:  # minilm-onnx: the same model on ONNX Runtime, int8 (exported on first use); routers are interchangeable
        backend = "onnx" if args.embedder == "minilm-onnx" else "sentence-transformers"
        embedding = EmbeddingConfig(backend=backend, cache_dir=str(data_dir / "embeddings"))
    embedder = await asyncio.to_thread(create_embedder, embedding)
    store_config = StoreConfig(backend="qdrant", qdrant_url=None, qdrant_path=str(data_dir / "qdrant"))
    plan = await asyncio.to_thread(ensure_router, store_config, embedder, served, args.router, args.labels, args.k)

    started: list[tuple[str, Any]] = []
    addresses: dict[str, str] = {}

    async def launch(name: str, key: str, starting: Awaitable[Any]) -> Any:
        """Await a service's start, keep it for shutdown and note its address; a taken port is a clear error."""
        try:
            server = await starting
        except RuntimeError as exc:
            if "bind" not in str(exc).lower():
                raise
            raise CommandError(
                f"{name}: cannot bind {host}:{ports[key]} (in use? another `avengers up`?); "
                "choose ports with --ports auto or --ports NAME=PORT,..."
            ) from None
        started.append((name, server))
        addresses[key] = f"{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{server.port}"
        return server

    try:
        await launch(
            "embedder", "embedder",
            start_embedder_server(EmbedderServiceConfig(embedding=embedding, server=on_host("embedder")),
                                  f"{host}:{ports['embedder']}", embedder=embedder),
        )
        await launch(
            "router", "router",
            start_router_server(
                RouterServiceConfig(store=store_config, embedder_address=addresses["embedder"], poll_interval_seconds=5,
                                    server=on_host("router")),
                f"{host}:{ports['router']}",
            ),
        )
        await launch(
            "voter", "voter",
            start_voter_server(VoterServiceConfig(embedder_address=addresses["embedder"], server=on_host("voter")),
                               f"{host}:{ports['voter']}"),
        )
        if pool_config is not None:
            from avengers.services.model_pool.server import start_model_pool_server

            print(f"loading models {', '.join(pool_config.model_names)} ...", file=sys.stderr, flush=True)
            pool_server = pool_config.server.model_copy(update={"host": host, "metrics_port": metrics_port})
            pool_config = pool_config.model_copy(update={"server": pool_server})
            await launch("model pool", "model_pool", start_model_pool_server(pool_config, f"{host}:{ports['model_pool']}"))
        else:
            addresses["model_pool"] = args.model_pool_addr
        downstream = DownstreamConfig(
            embedder=addresses["embedder"],
            router=addresses["router"],
            voter=addresses["voter"],
            model_pool=addresses["model_pool"],
            model_pool_application=args.application,
        )
        redis_url = args.redis_url if args.redis_url is not None else os.environ.get("REDIS_URL") or None
        gateway = await launch(
            "gateway", "gateway",
            start_gateway_server(
                GatewayServiceConfig(downstream=downstream, redis=RedisConfig(url=redis_url or None),
                                     server=on_host("gateway")),
                f"{host}:{ports['gateway']}",
            ),
        )
        http = await launch(
            "HTTP API", "http",
            start_http_server(
                HttpServiceConfig(
                    server=on_host("http"),
                    gateway=UpstreamConfig(address=addresses["gateway"]),
                    model_pool={"address": addresses["model_pool"], "application": args.application},
                ),
                f"{host}:{ports['http']}",
            ),
        )
    except BaseException:
        await stop_all(started)
        raise

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):  # before the "ready" line: a signal right after it stops cleanly
        loop.add_signal_handler(sig, stop.set)
    pool_note = ", ".join(served or []) if pool_config is not None else f"remote, {', '.join(served or ['?'])}"
    print(
        "\n".join(
            [
                f"embedder    {addresses['embedder']}  ({embedder.name})",
                f"router      {addresses['router']}  (router {plan.version}, {plan.origin}; Qdrant at {store_config.qdrant_path})",
                f"voter       {addresses['voter']}",
                f"model pool  {addresses['model_pool']}  ({pool_note})",
                f"gateway     {addresses['gateway']}  (cache and feedback: {'redis' if redis_url else 'in process'})",
                f"http        {http.url}/v1  (OpenAI-compatible: model 'avengers' or a pool model)",
                f"metrics     {metrics_url(gateway, host)}",
                f'ready: avengers ask --addr {addresses["gateway"]} "What is 12 + 30?"   (Ctrl-C stops)',
            ]
        ),
        flush=True,
    )

    await stop.wait()
    log.info("shutting down (grace %.1fs)", args.grace)
    await http.stop(args.grace)  # the front first, then the rest in reverse start order
    await stop_all([entry for entry in started if entry[1] is not http], grace=args.grace)
    print("avengers up: stopped", flush=True)
    return 0


def metrics_url(server: Any, host: str) -> str:
    """Where the process's /metrics endpoint is (the services of ``up`` share one), or why there is none."""
    if server.metrics_port is None:
        return "off (--metrics-port 0, or the port was taken: see the log)"
    return f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{server.metrics_port}/metrics"


async def stop_all(started: list[tuple[str, Any]], grace: float = 2.0) -> None:
    """Stop servers in reverse start order; one failing to stop does not keep the others running."""
    for name, server in reversed(started):
        try:
            await server.stop(grace)
        except Exception:
            log.exception("stopping the %s failed", name)


def cmd_up(args: argparse.Namespace) -> int:
    if args.pool and args.model_pool_addr:
        raise CommandError("give --pool or --model-pool-addr, not both")
    return asyncio.run(run_up(args))


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "up",
        help="run every service on localhost (embedded Qdrant, default router) until Ctrl-C",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--pool", help="model pool YAML (default: the shipped pool, SmolLM2-135M and Gemma 3 270M on llama.cpp)")
    p.add_argument("--model-pool-addr", help="use a running model pool at host:port instead of starting one")
    p.add_argument("--application", default="model_pool", help="Ray Serve app name sent to the pool (default: %(default)s)")
    p.add_argument("--router", help="router directory to publish and serve (default: the active one, else fit)")
    p.add_argument("--labels", help="labels to fit the router on (default: the shipped measured labels)")
    p.add_argument("--k", type=int, default=4, help="clusters when fitting (default: %(default)s)")
    p.add_argument("--embedder", choices=["minilm", "minilm-onnx", "hashing"], default="minilm",
                   help="query embedder: the bundled all-MiniLM-L6-v2 (torch), the same on ONNX Runtime int8 "
                        "(several times faster on a CPU), or feature hashing (default: %(default)s)")
    p.add_argument("--hashing-dimension", type=int, default=384, help=argparse.SUPPRESS)
    p.add_argument("--data-dir", help="embedded Qdrant and caches (default: ~/.cache/avengers/up)")
    p.add_argument("--host", default="127.0.0.1", help="interface every service binds (default: %(default)s)")
    p.add_argument(
        "--ports", default="",
        help="'auto' for free ports, or NAME=PORT,... over the defaults gateway=50050, embedder=50051, "
             "router=50052, voter=50053, model-pool=9000, http=8080 (the OpenAI-compatible API)",
    )
    p.add_argument("--metrics-port", type=int,
                   help="port of the shared /metrics endpoint, on --host; 0: none (default: $AVENGERS_METRICS_PORT, "
                        "else 9090)")
    p.add_argument("--redis-url", help="Redis for the response cache and feedback (default: $REDIS_URL, else in process)")
    p.add_argument("--grace", type=float, default=5.0, help="seconds in-flight calls get at shutdown (default: %(default)s)")
    p.set_defaults(handler=cmd_up)
