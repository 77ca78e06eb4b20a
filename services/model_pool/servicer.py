"""The ModelPool gRPC contract over a name -> target map (in-process engines, or Ray Serve deployments).

:class:`ModelPoolServicer` validates each request against the pool's limits and the model's config, fills in
the model's sampling defaults, and forwards ONE :class:`~avengers.engines.GenerationRequest` with n samples
to the model's :class:`ModelTarget`. Statuses:

* NOT_FOUND: unknown model (the message lists the served ones); the replay backend's unknown task.
* INVALID_ARGUMENT: no model, empty or oversized prompt, bad chat roles, n outside [1, max_n], temperature
  outside [0, 2], top_p outside (0, 1], max_tokens over the model's limit, too many or too long stop strings.
* UNAVAILABLE: the model's engine or replica failed, or died mid-request (the message names the model) — the
  gateway's cue to fall back to the next-ranked model.
* Engine errors map by kind (:mod:`avengers.services.model_pool.errors`): e.g. a prompt longer than the
  model's context is INVALID_ARGUMENT, an engine that timed out DEADLINE_EXCEEDED.

The transport-neutral methods (:meth:`~ModelPoolServicer.generate`, :meth:`~ModelPoolServicer.stream`,
:meth:`~ModelPoolServicer.list_models`) raise :class:`~avengers.rpc.errors.ServiceError`; the grpc.aio
methods (``Generate``, ...) turn that into the call's status, and the Ray Serve ingress does the same on its
gRPC context.
"""

from __future__ import annotations

import logging
import math
import uuid
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Mapping

import grpc

from avengers.config.model_pool import ModelConfig, ModelPoolConfig
from avengers.engines.base import (
    ChatTurn,
    Engine,
    GenerationRequest,
    GenerationResult,
    SampleDelta,
    SamplingSpec,
)
from avengers.rpc.errors import InvalidArgument, NotFound, ServiceError, grpc_errors, status_of
from avengers.services.model_pool.errors import engine_failure
from avengers.v1 import common_pb2, model_pool_pb2, model_pool_pb2_grpc

log = logging.getLogger(__name__)

CHAT_ROLES = frozenset({"system", "user", "assistant"})
MAX_REQUEST_ID_CHARS = 256


class ModelTarget(ABC):
    """Where one model's requests go: an engine in this process, or a Ray Serve deployment."""

    def __init__(self, config: ModelConfig):
        self.config = config

    @property
    def model_id(self) -> str:
        return self.config.model_id

    @abstractmethod
    async def generate(self, request: GenerationRequest) -> GenerationResult:
        """All n samples; failures raise a ServiceError (:func:`engine_failure`)."""

    @abstractmethod
    def stream(self, request: GenerationRequest) -> AsyncIterator[SampleDelta]:
        """Deltas of every sample, with the same error rules."""

    @abstractmethod
    async def replicas(self) -> int:
        """Replicas currently serving the model."""


class EngineTarget(ModelTarget):
    """An engine started in this process (the standalone server, and each Ray model replica)."""

    def __init__(self, engine: Engine):
        super().__init__(engine.config)
        self.engine = engine

    @property
    def model_id(self) -> str:
        return self.engine.model_id

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        try:
            return await self.engine.generate(request)
        except ServiceError:
            raise
        except Exception as exc:
            raise engine_failure(self.config.name, exc) from exc

    async def stream(self, request: GenerationRequest) -> AsyncIterator[SampleDelta]:
        try:
            async for delta in self.engine.stream(request):
                yield delta
        except ServiceError:
            raise
        except Exception as exc:
            raise engine_failure(self.config.name, exc) from exc

    async def replicas(self) -> int:
        return 1


class ModelPoolServicer(model_pool_pb2_grpc.ModelPoolServicer):
    """Validation, defaults and dispatch by model name."""

    def __init__(self, config: ModelPoolConfig, targets: Mapping[str, ModelTarget]):
        missing = sorted(set(config.model_names) - set(targets))
        if missing:
            raise ValueError(f"no target for models {missing}")
        self.config = config
        self.targets = dict(targets)

    # -- validation ----------------------------------------------------------------------------------

    def target(self, model: str) -> ModelTarget:
        if not model:
            raise InvalidArgument("model is required")
        try:
            return self.targets[model]
        except KeyError:
            raise NotFound(f"unknown model {model!r}; served: {sorted(self.targets)}") from None

    def engine_request(self, request: model_pool_pb2.GenerateRequest, model: ModelConfig) -> GenerationRequest:
        """The validated engine request, with the model's defaults for unset sampling parameters."""
        limits = self.config.limits
        messages = tuple(ChatTurn(m.role, m.content) for m in request.messages)
        if len(messages) > limits.max_messages:
            raise InvalidArgument(f"{len(messages)} messages; at most {limits.max_messages} are accepted")
        bad_roles = sorted({m.role for m in messages} - CHAT_ROLES)
        if bad_roles:
            raise InvalidArgument(f"message roles {bad_roles} are not one of {sorted(CHAT_ROLES)}")
        if messages:
            if not any(m.content.strip() for m in messages if m.role == "user"):
                raise InvalidArgument("empty prompt: no user message has content")
            chars = sum(len(m.content) for m in messages)
        else:
            if not request.prompt.strip():
                raise InvalidArgument("empty prompt: set prompt or messages")
            chars = len(request.prompt)
        if chars > limits.max_prompt_chars:
            raise InvalidArgument(f"prompt is {chars} characters; the limit is {limits.max_prompt_chars}")
        if len(request.request_id) > MAX_REQUEST_ID_CHARS:
            raise InvalidArgument(f"request_id longer than {MAX_REQUEST_ID_CHARS} characters")
        return GenerationRequest(
            sampling=self.sampling(request.sampling, model),
            prompt=request.prompt,
            messages=messages,
            request_id=request.request_id or uuid.uuid4().hex,
            task_id=request.task_id,
        )

    def sampling(self, params: common_pb2.SamplingParams, model: ModelConfig) -> SamplingSpec:
        defaults, limits = model.sampling, self.config.limits
        n = params.n or defaults.n
        if not 1 <= n <= model.max_n:
            raise InvalidArgument(f"n={n} is outside [1, {model.max_n}] for model {model.name!r}")
        temperature = params.temperature if params.HasField("temperature") else defaults.temperature
        if not (math.isfinite(temperature) and 0.0 <= temperature <= 2.0):
            raise InvalidArgument(f"temperature={temperature} is outside [0, 2]")
        top_p = params.top_p if params.HasField("top_p") else defaults.top_p
        if not (math.isfinite(top_p) and 0.0 < top_p <= 1.0):
            raise InvalidArgument(f"top_p={top_p} is outside (0, 1]")
        max_tokens = params.max_tokens or defaults.max_tokens
        if max_tokens > model.max_tokens_limit:
            raise InvalidArgument(
                f"max_tokens={max_tokens} exceeds the limit of {model.max_tokens_limit} for model {model.name!r}"
            )
        stop = tuple(params.stop) if params.stop else tuple(defaults.stop)
        if len(stop) > limits.max_stop_strings:
            raise InvalidArgument(f"{len(stop)} stop strings; at most {limits.max_stop_strings} are accepted")
        if any(not s or len(s) > limits.max_stop_chars for s in stop):
            raise InvalidArgument(f"stop strings must be 1..{limits.max_stop_chars} characters")
        return SamplingSpec(
            n=n,
            temperature=float(temperature),
            top_p=float(top_p),
            max_tokens=max_tokens,
            stop=stop,
            seed=params.seed if params.HasField("seed") else None,
        )

    # -- transport-neutral calls ---------------------------------------------------------------------

    async def generate(self, request: model_pool_pb2.GenerateRequest) -> model_pool_pb2.GenerateResponse:
        target = self.target(request.model)
        engine_request = self.engine_request(request, target.config)
        result = await target.generate(engine_request)
        name = target.config.name
        return model_pool_pb2.GenerateResponse(
            model=name,
            samples=[
                common_pb2.Sample(
                    index=s.index,
                    text=s.text,
                    finish_reason=s.finish_reason,
                    completion_tokens=s.completion_tokens,
                    model=name,
                )
                for s in result.samples
            ],
            usage=common_pb2.Usage(prompt_tokens=result.prompt_tokens, completion_tokens=result.completion_tokens),
            request_id=engine_request.request_id,
        )

    async def stream(self, request: model_pool_pb2.GenerateRequest) -> AsyncIterator[model_pool_pb2.GenerateChunk]:
        target = self.target(request.model)
        engine_request = self.engine_request(request, target.config)
        name = target.config.name
        async for delta in target.stream(engine_request):
            yield model_pool_pb2.GenerateChunk(
                index=delta.index, delta=delta.text, finish_reason=delta.finish_reason, model=name,
                completion_tokens=delta.completion_tokens, prompt_tokens=delta.prompt_tokens,
            )

    async def list_models(self) -> model_pool_pb2.ListModelsResponse:
        models = []
        for name, target in self.targets.items():
            models.append(
                model_pool_pb2.ModelInfo(
                    name=name,
                    backend=target.config.backend,
                    model_id=target.model_id,
                    replicas=await target.replicas(),
                    price_per_million_tokens=target.config.price_per_million_tokens,
                )
            )
        return model_pool_pb2.ListModelsResponse(models=models)

    # -- grpc.aio ------------------------------------------------------------------------------------

    @grpc_errors
    async def Generate(self, request, context):
        return await self.generate(request)

    async def GenerateStream(self, request, context):
        try:
            async for chunk in self.stream(request):
                yield chunk
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            code, message = status_of(exc)
            if code == grpc.StatusCode.INTERNAL:
                log.exception("GenerateStream failed")
            await context.abort(code, message)

    @grpc_errors
    async def ListModels(self, request, context):
        return await self.list_models()
