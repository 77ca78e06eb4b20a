"""The model pool as a Ray Serve application: one autoscaled deployment per model behind a gRPC ingress.

* :class:`ModelDeployment` — one per configured model (deployment ``model-<name>``), with the model's
  ``autoscaling_config``, ``ray_actor_options`` ({num_gpus, num_cpus}) and ``max_ongoing_requests``. Each
  replica starts the model's engine once and serves ``generate`` / ``stream`` of engine requests.
* :class:`ModelPoolIngress` — implements the ModelPool gRPC contract on Ray Serve's gRPC proxy with the same
  :class:`~avengers.services.model_pool.servicer.ModelPoolServicer` the standalone server uses, dispatching by
  model name to the model deployments' handles.

Run it with the rendered Serve config (gRPC options included)::

    avengers pool serve-config --config pool.yaml > serve.yaml
    serve run serve.yaml            # or: serve deploy serve.yaml (running cluster), or KubeRay serveConfigV2
    avengers pool run --config pool.yaml   # the same, locally, in one command

``serve run avengers.services.model_pool.app:build_app config=pool.yaml`` also builds the app, but
``serve run`` of an import path starts no gRPC servicer: use the config file for gRPC clients.

gRPC clients send the metadata ``("application", "<app_name>")`` — ``("application", "model_pool")`` by
default — so Serve's proxy routes to this app.

A replica that dies mid-request: the in-flight call ends with UNAVAILABLE naming the model (the gateway then
falls back to the next-ranked model) and Ray Serve's controller starts a replacement replica.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
from ray import serve
from ray.exceptions import RayActorError, RayTaskError
from ray.serve.exceptions import DeploymentUnavailableError
from ray.serve.handle import DeploymentHandle

from avengers.config.model_pool import ModelConfig, ModelPoolConfig
from avengers.engines.base import (
    GenerationRequest,
    GenerationResult,
    SampleDelta,
    create_engine,
)
from avengers.rpc.errors import ServiceError, status_of
from avengers.services.model_pool.errors import engine_failure
from avengers.services.model_pool.serve_config import (
    INGRESS_DEPLOYMENT,
    ingress_options,
    model_deployment_options,
)
from avengers.services.model_pool.servicer import ModelPoolServicer, ModelTarget

log = logging.getLogger(__name__)

STATUS_CACHE_SECONDS = 2.0


@serve.deployment
class ModelDeployment:
    """One model's replica: its engine, started once."""

    async def __init__(self, model: dict[str, Any]):
        self.config = ModelConfig.model_validate(model)
        self.engine = create_engine(self.config)
        await self.engine.start()
        log.info("replica of model %r ready (%s)", self.config.name, self.config.backend)

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        return await self.engine.generate(request)

    async def stream(self, request: GenerationRequest) -> AsyncIterator[SampleDelta]:
        async for delta in self.engine.stream(request):
            yield delta

    async def check_health(self) -> None:
        await self.engine.check_health()

    async def __del__(self) -> None:
        engine = getattr(self, "engine", None)  # absent when __init__ failed
        if engine is not None:
            await engine.shutdown()


class ReplicaCounter:
    """Running replicas per deployment, from ``serve.status()`` (cached briefly; 0 when unknown)."""

    def __init__(self, app_name: str):
        self.app_name = app_name
        self._at = 0.0
        self._counts: dict[str, int] = {}
        self._lock = asyncio.Lock()

    async def running(self, deployment: str) -> int:
        async with self._lock:
            if time.monotonic() - self._at > STATUS_CACHE_SECONDS:
                try:
                    status = await asyncio.to_thread(serve.status)
                    app = status.applications[self.app_name]
                    self._counts = {
                        name: int(d.replica_states.get("RUNNING", 0)) for name, d in app.deployments.items()
                    }
                except Exception:
                    log.warning("serve.status() failed; reporting 0 replicas", exc_info=True)
                    self._counts = {}
                self._at = time.monotonic()
            return self._counts.get(deployment, 0)


class DeploymentTarget(ModelTarget):
    """A model served by its Ray Serve deployment; replica failures become UNAVAILABLE naming the model."""

    def __init__(self, config: ModelConfig, handle: DeploymentHandle, counter: ReplicaCounter):
        super().__init__(config)
        self.handle = handle
        self.counter = counter
        try:  # the engine's own description (e.g. the bundled GGUF path), without loading anything
            self._model_id = create_engine(config).model_id
        except Exception:  # noqa: BLE001 - a library missing on the ingress node is no reason to fail
            self._model_id = config.model_id

    @property
    def model_id(self) -> str:
        return self._model_id

    def status(self, exc: Exception) -> ServiceError:
        name = self.config.name
        cause = exc.cause if isinstance(exc, RayTaskError) and exc.cause is not None else exc
        if isinstance(cause, (RayActorError, DeploymentUnavailableError)):
            log.warning("model %r: replica failed: %s", name, cause)
            return ServiceError(
                f"model {name!r} is unavailable: its replica died or was unreachable mid-request "
                f"({type(cause).__name__}); Ray Serve is replacing it",
                grpc.StatusCode.UNAVAILABLE,
            )
        return engine_failure(name, cause)  # the engine's own error (raised in the replica), mapped by kind

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        try:
            return await self.handle.generate.remote(request)
        except Exception as exc:
            raise self.status(exc) from exc

    async def stream(self, request: GenerationRequest) -> AsyncIterator[SampleDelta]:
        try:
            async for delta in self.handle.options(stream=True).stream.remote(request):
                yield delta
        except Exception as exc:
            raise self.status(exc) from exc

    async def replicas(self) -> int:
        return await self.counter.running(self.config.deployment_name)


def _fail(grpc_context: Any, exc: Exception) -> None:
    """Put the status of ``exc`` on Ray Serve's gRPC context; the caller then re-raises."""
    code, message = status_of(exc)
    if grpc_context is not None:
        grpc_context.set_code(code)
        grpc_context.set_details(message)


@serve.deployment
class ModelPoolIngress:
    """The ModelPool gRPC contract on Ray Serve's gRPC proxy (method names match the proto service)."""

    def __init__(self, pool: dict[str, Any], handles: dict[str, DeploymentHandle]):
        config = ModelPoolConfig.model_validate(pool)
        counter = ReplicaCounter(config.app_name)
        self.servicer = ModelPoolServicer(
            config, {name: DeploymentTarget(config.model(name), handle, counter) for name, handle in handles.items()}
        )

    async def Generate(self, request, grpc_context=None):
        try:
            return await self.servicer.generate(request)
        except Exception as exc:
            _fail(grpc_context, exc)
            raise

    async def GenerateStream(self, request, grpc_context=None):
        try:
            async for chunk in self.servicer.stream(request):
                yield chunk
        except Exception as exc:
            _fail(grpc_context, exc)
            raise

    async def ListModels(self, request, grpc_context=None):
        try:
            return await self.servicer.list_models()
        except Exception as exc:
            _fail(grpc_context, exc)
            raise


def pool_application(config: ModelPoolConfig) -> serve.Application:
    """The bound Ray Serve application of a pool."""
    handles = {
        m.name: ModelDeployment.options(name=m.deployment_name, **model_deployment_options(config, m.name)).bind(
            m.to_dict()
        )
        for m in config.models
    }
    return ModelPoolIngress.options(name=INGRESS_DEPLOYMENT, **ingress_options(config)).bind(config.to_dict(), handles)


def pool_config_from_args(args: dict[str, Any]) -> ModelPoolConfig:
    """The pool config of ``build_app`` arguments: the config itself (a dict with ``models``, as the rendered
    Serve config and the Helm chart pass it), or ``config``: the path of a model-pool YAML."""
    if "config" in args and "models" not in args:
        return ModelPoolConfig.from_yaml(args["config"])
    return ModelPoolConfig.model_validate(args)


def build_app(args: dict[str, Any]) -> serve.Application:
    """Ray Serve application builder (``import_path: avengers.services.model_pool.app:build_app``).

    ``serve run avengers.services.model_pool.app:build_app config=pool.yaml`` or, in a Serve config,
    ``args:`` holding the pool config itself (``avengers pool serve-config`` renders that).
    """
    return pool_application(pool_config_from_args(args))
