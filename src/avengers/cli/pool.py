"""``avengers pool``: the model pool on Ray Serve — render its Serve config, or run it locally.

* ``avengers pool serve-config --config pool.yaml`` prints the Ray Serve config (for ``serve run``,
  ``serve deploy`` or KubeRay's ``serveConfigV2``) of a model-pool YAML.
* ``avengers pool run --config pool.yaml`` starts Ray (or joins ``--address``), Ray Serve with the pool's gRPC
  ingress, and serves until Ctrl-C or SIGTERM; then it shuts Serve down and stops the Ray processes it started.

Relative file paths in a pool YAML (replay ``labels_path`` / ``outputs_path``, a llama.cpp ``model_id`` GGUF
file) are relative to the YAML file, so a config works from any directory; ``serve-config`` writes them
absolute. The standalone server without Ray is ``avengers serve model-pool``.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from avengers.config.model_pool import MODEL_POOL_SERVICER_FUNCTION, ModelPoolConfig


def _anchored(value: str | None, base: Path) -> str | None:
    """``value`` made absolute against ``base`` when it is a relative path; a path that only exists relative
    to the working directory (configs written before paths were anchored to their file) is kept working."""
    if not value or Path(value).expanduser().is_absolute():
        return value
    beside = base / value
    if not beside.exists() and Path(value).exists():
        return str(Path(value).resolve())
    return str(beside.resolve())


def anchor_paths(config: ModelPoolConfig, base: Path) -> ModelPoolConfig:
    """The pool with its relative file paths resolved against ``base`` (the YAML file's directory)."""
    models = []
    for model in config.models:
        update = {}
        if model.backend == "replay":
            update["replay"] = model.replay.model_copy(update={
                "labels_path": _anchored(model.replay.labels_path, base),
                "outputs_path": _anchored(model.replay.outputs_path, base),
            })
        elif model.backend == "llama_cpp" and model.model_id.endswith(".gguf"):
            update["model_id"] = _anchored(model.model_id, base)
        models.append(model.model_copy(update=update) if update else model)
    return config.model_copy(update={"models": models})


def load_pool(path: str | Path | None) -> ModelPoolConfig:
    """A model-pool YAML (None: the built-in SmolLM2 pool), its relative paths anchored to the file."""
    if path is None:
        return ModelPoolConfig()
    if not Path(path).is_file():
        raise FileNotFoundError(f"model-pool config {str(path)!r} not found")
    return anchor_paths(ModelPoolConfig.from_yaml(path), Path(path).resolve().parent)


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


def start_pool_on_ray(
    config: ModelPoolConfig,
    address: str | None = None,
    num_cpus: float | None = None,
    *,
    dashboard: bool = True,
    dashboard_port: int | None = None,
) -> None:
    """Start (or join) Ray and Ray Serve with the pool's gRPC ingress, and deploy the pool application.
    ``dashboard``/``dashboard_port`` apply to a Ray instance started here (default port 8265)."""
    import ray
    from ray import serve
    from ray.serve.config import gRPCOptions

    from avengers.services.model_pool.app import pool_application

    if not ray.is_initialized():
        local = {} if address else {
            "num_cpus": num_cpus,
            "include_dashboard": dashboard,
            **({"dashboard_port": dashboard_port} if dashboard_port is not None else {}),
        }
        ray.init(address=address, namespace="serve", **local)
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
    if args.http_port is not None:
        config = config.model_copy(update={"http_port": args.http_port})
    if args.host is not None:
        config = config.model_copy(update={"server": config.server.model_copy(update={"host": args.host})})
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    import ray
    from ray import serve

    try:
        start_pool_on_ray(config, args.address, args.num_cpus, dashboard=not args.no_dashboard,
                          dashboard_port=args.dashboard_port)
        for sig in previous:  # ray.init installs its own SIGTERM handler (it logs and dies): ours again
            signal.signal(sig, lambda *_: stop.set())
        if not stop.is_set():
            print(
                f"model pool {config.app_name!r} on Ray Serve: gRPC port {config.server.port}, HTTP port "
                f"{config.http_port}, models {', '.join(config.model_names)}; clients send metadata "
                f"('application', {config.app_name!r}). Ctrl-C or SIGTERM stops.",
                flush=True,
            )
            stop.wait()
        print("stopping: Ray Serve, then the Ray processes started here", file=sys.stderr, flush=True)
    finally:
        try:
            if ray.is_initialized():
                serve.shutdown()
        finally:
            ray.shutdown()  # stops the GCS, raylet and agents this process started (not a joined cluster)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    pool = sub.add_parser("pool", help="the model pool on Ray Serve (serve config, local run)")
    actions = pool.add_subparsers(dest="pool_command", required=True, metavar="ACTION")

    p = actions.add_parser("serve-config", help="print the Ray Serve config of a model-pool YAML")
    p.add_argument("--config", help="model-pool YAML (default: the built-in SmolLM2 pool)")
    p.add_argument("--grpc-port", type=int, help="override server.port, Serve's gRPC proxy (default: the config's)")
    p.add_argument("--output", "-o", help="write to this file (default: stdout)")
    p.set_defaults(handler=cmd_serve_config)

    p = actions.add_parser("run", help="run the pool on Ray Serve locally (or on --address) until Ctrl-C/SIGTERM")
    p.add_argument("--config", help="model-pool YAML (default: the built-in SmolLM2 pool)")
    p.add_argument("--port", type=int, help="gRPC port (default: the config's server.port, 9000)")
    p.add_argument("--http-port", type=int, help="Ray Serve's HTTP proxy port (default: the config's http_port, 8000)")
    p.add_argument("--host", help="interface of the gRPC and HTTP proxies (default: the config's server.host, 0.0.0.0)")
    p.add_argument("--dashboard-port", type=int, help="Ray dashboard port of a local Ray instance (default: 8265)")
    p.add_argument("--no-dashboard", action="store_true", help="start a local Ray instance without its dashboard")
    p.add_argument("--address", help="Ray cluster to join (default: start a local one)")
    p.add_argument("--num-cpus", type=float, help="CPUs of the local Ray instance (default: all)")
    p.set_defaults(handler=cmd_run)
