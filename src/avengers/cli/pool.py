"""``avengers pool``: the model pool on Ray Serve — render its Serve config, or run it locally.

* ``avengers pool serve-config --config pool.yaml`` prints the Ray Serve config (for ``serve run``,
  ``serve deploy`` or KubeRay's ``serveConfigV2``) of a model-pool YAML.
* ``avengers pool run --config pool.yaml`` starts Ray (or joins ``--address``), Ray Serve with the pool's gRPC
  ingress, and serves until Ctrl-C.

The standalone server without Ray is ``avengers serve model-pool``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from avengers.config.model_pool import MODEL_POOL_SERVICER_FUNCTION, ModelPoolConfig


def load_pool(path: str | None) -> ModelPoolConfig:
    if path is None:
        return ModelPoolConfig()
    if not Path(path).is_file():
        raise FileNotFoundError(f"model-pool config {path!r} not found")
    return ModelPoolConfig.from_yaml(path)


def cmd_serve_config(args: argparse.Namespace) -> int:
    from avengers.services.model_pool.serve_config import render_serve_config_yaml

    config = load_pool(args.config)
    if args.grpc_port is not None:
        config = config.model_copy(update={"server": config.server.model_copy(update={"port": args.grpc_port})})
    text = render_serve_config_yaml(config)
    if args.output:
        Path(args.output).write_text(text)
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def start_pool_on_ray(config: ModelPoolConfig, address: str | None = None, num_cpus: float | None = None) -> None:
    """Start (or join) Ray and Ray Serve with the pool's gRPC ingress, and deploy the pool application."""
    import ray
    from ray import serve
    from ray.serve.config import gRPCOptions

    from avengers.services.model_pool.app import pool_application

    if not ray.is_initialized():
        ray.init(address=address, num_cpus=None if address else num_cpus, namespace="serve")
    serve.start(
        http_options={"host": config.server.host, "port": config.http_port},
        grpc_options=gRPCOptions(
            port=config.server.port,
            grpc_servicer_functions=[MODEL_POOL_SERVICER_FUNCTION],
            request_timeout_s=config.grpc_request_timeout_s,
        ),
    )
    serve.run(pool_application(config), name=config.app_name, route_prefix=f"/{config.app_name}")


def cmd_run(args: argparse.Namespace) -> int:
    config = load_pool(args.config)
    if args.port is not None:
        config = config.model_copy(update={"server": config.server.model_copy(update={"port": args.port})})
    start_pool_on_ray(config, args.address, args.num_cpus)
    print(
        f"model pool {config.app_name!r} on Ray Serve: gRPC port {config.server.port}, models "
        f"{', '.join(config.model_names)}; clients send metadata ('application', {config.app_name!r}). Ctrl-C stops.",
        flush=True,
    )
    from ray import serve

    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        serve.shutdown()
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    pool = sub.add_parser("pool", help="the model pool on Ray Serve (serve config, local run)")
    actions = pool.add_subparsers(dest="pool_command", required=True, metavar="ACTION")

    p = actions.add_parser("serve-config", help="print the Ray Serve config of a model-pool YAML")
    p.add_argument("--config", help="model-pool YAML (default: the built-in SmolLM2 pool)")
    p.add_argument("--grpc-port", type=int, help="override server.port (Serve's gRPC proxy)")
    p.add_argument("--output", "-o", help="write to this file instead of stdout")
    p.set_defaults(handler=cmd_serve_config)

    p = actions.add_parser("run", help="run the pool on Ray Serve locally (or on --address) until Ctrl-C")
    p.add_argument("--config", help="model-pool YAML (default: the built-in SmolLM2 pool)")
    p.add_argument("--port", type=int, help="gRPC port (default: the config's server.port, 9000)")
    p.add_argument("--address", help="Ray cluster to join (default: start a local one)")
    p.add_argument("--num-cpus", type=float, help="CPUs of the local Ray instance (default: all)")
    p.set_defaults(handler=cmd_run)
