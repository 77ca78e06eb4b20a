"""Render the Ray Serve config (``serve run`` / ``serve deploy`` / KubeRay ``serveConfigV2``) of a pool.

The same :class:`~avengers.config.model_pool.ModelPoolConfig` the standalone server reads becomes one Ray
Serve application: its ``args`` ARE the whole pool config, inline (no file to mount), and its
``deployments`` list repeats each model's replicas and resources so operators see and can override them where
Ray Serve expects them. ``grpc_options`` registers the ModelPool servicer on Serve's gRPC proxy. No Ray
import here: rendering works wherever the package is installed.
"""

from __future__ import annotations

from typing import Any

import yaml

from avengers.config.model_pool import MODEL_POOL_SERVICER_FUNCTION, ModelPoolConfig

APP_IMPORT_PATH = "avengers.services.model_pool.app:build_app"
INGRESS_DEPLOYMENT = "ModelPoolIngress"


def ingress_options(config: ModelPoolConfig) -> dict[str, Any]:
    """Ray Serve options of the ingress deployment."""
    ingress = config.ingress
    return {
        "num_replicas": ingress.num_replicas,
        "max_ongoing_requests": ingress.max_ongoing_requests,
        "ray_actor_options": {"num_cpus": ingress.num_cpus},
    }


def model_deployment_options(config: ModelPoolConfig, name: str) -> dict[str, Any]:
    """Ray Serve options of one model's deployment."""
    model = config.model(name)
    return {
        "autoscaling_config": model.autoscaling.to_ray(),
        "max_ongoing_requests": model.max_ongoing_requests,
        "health_check_period_s": model.health_check_period_s,
        "health_check_timeout_s": model.health_check_timeout_s,
        "ray_actor_options": model.resources.to_ray(),
    }


def render_serve_config(config: ModelPoolConfig) -> dict[str, Any]:
    """The Ray Serve config (``ServeDeploySchema``) that runs this pool with its gRPC ingress."""
    if config.server.port == 0:
        raise ValueError("Ray Serve's gRPC proxy needs a fixed port: set server.port (default 9000)")
    grpc_options: dict[str, Any] = {
        "port": config.server.port,
        "grpc_servicer_functions": [MODEL_POOL_SERVICER_FUNCTION],
    }
    if config.grpc_request_timeout_s is not None:
        grpc_options["request_timeout_s"] = config.grpc_request_timeout_s
    deployments = [{"name": INGRESS_DEPLOYMENT, **ingress_options(config)}]
    deployments += [{"name": m.deployment_name, **model_deployment_options(config, m.name)} for m in config.models]
    return {
        "proxy_location": "EveryNode",
        "http_options": {"host": config.server.host, "port": config.http_port},
        "grpc_options": grpc_options,
        "applications": [
            {
                "name": config.app_name,
                "route_prefix": f"/{config.app_name}",
                "import_path": APP_IMPORT_PATH,
                "args": config.to_dict(),
                "deployments": deployments,
            }
        ],
    }


def render_serve_config_yaml(config: ModelPoolConfig) -> str:
    return yaml.safe_dump(render_serve_config(config), sort_keys=False)
