"""The OpenAI-compatible HTTP API over the Gateway (Starlette; served by uvicorn in :mod:`.server`).

Routes:

- ``POST /v1/chat/completions`` and ``POST /v1/completions`` (``stream: true``: server-sent events). Model
  ``avengers`` (``ensemble_model``) is the routed ensemble: the request becomes one Gateway Ask (AskStream
  when streamed) and the answer is ONE choice, the voted one; ``n`` is the number of samples voted on, not of
  choices. Any other model name is a direct call to that pool model (n choices, no routing, no vote).
- ``GET /v1/models`` (the ensemble and each pool model), ``GET /v1/models/{model}``.
- ``GET /health`` (the process is up; no auth) and ``GET /ready`` (the Gateway answers health checks).

Ensemble options travel as extra body fields (the OpenAI SDK's ``extra_body``): ``strategy``,
``switch_threshold``, ``top_k`` (routed models sharing the samples under the top-k strategies; not token
top-k sampling), ``task_type``, ``routing``, ``vote``, ``tests``, ``entry_point``, ``task_id``, ``no_cache``,
and any further AskRequest field the contract has (e.g. ``alpha``). A response's ``model`` names the model(s)
whose samples were voted on ("a+b"); ``usage.completion_tokens`` sums every sample's tokens and
``usage.prompt_tokens`` counts the prompt once per model pool engine call (n samples of one call share one
prefill), each model with its own tokenizer and chat template; the extra ``avengers`` object carries request
id, answer, cluster, router version, votes, agreement, failed models and whether it was cached. A streamed
direct call streams the model's tokens as the engine produces them (ModelPool.GenerateStream). Errors are
OpenAI-style ``{"error": {"message", "type", "param", "code"}}`` with 400 (bad input), 401 (token), 404
(unknown model), 413 (body too large), 429 (too many requests), 503 (a dependency is down), 504 (deadline).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from avengers.client import AsyncClient, AvengersError, ask_request
from avengers.clients.ensemble import GrpcModelPoolClient
from avengers.config.http_service import HttpServiceConfig
from avengers.core.ensemble import DependencyError, Sampling
from avengers.observability.metrics import counter, histogram
from avengers.rpc.enums import ENSEMBLE_STRATEGY, TASK_TYPE
from avengers.rpc.security import TokenAuthInterceptor
from avengers.v1 import gateway_pb2

log = logging.getLogger(__name__)

HTTP_REQUESTS = counter("avengers_http_requests", "HTTP API requests, by route and status", ["route", "status"])
HTTP_SECONDS = histogram("avengers_http_request_seconds", "Time to answer an HTTP API request", ["route"])

# gRPC status of a Gateway/pool call -> (HTTP status, OpenAI error type).
STATUS_TO_HTTP = {
    "INVALID_ARGUMENT": (400, "invalid_request_error"),
    "OUT_OF_RANGE": (400, "invalid_request_error"),
    "NOT_FOUND": (404, "not_found_error"),
    "PERMISSION_DENIED": (403, "permission_error"),
    "RESOURCE_EXHAUSTED": (429, "rate_limit_error"),
    "UNAVAILABLE": (503, "service_unavailable"),
    "FAILED_PRECONDITION": (503, "service_unavailable"),
    "DEADLINE_EXCEEDED": (504, "timeout"),
    "UNIMPLEMENTED": (501, "not_implemented"),
    "UNAUTHENTICATED": (502, "upstream_error"),  # the gateway refused OUR credentials: a deployment problem
}
FINISH_REASONS = {"stop", "length", "content_filter", "tool_calls"}
ENSEMBLE_FIELDS = ("strategy", "switch_threshold", "top_k", "task_type", "routing", "vote", "tests", "entry_point",
                   "task_id", "no_cache")


class ApiError(Exception):
    """Ends a request with ``status`` and an OpenAI-style error body."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status = status
        self.type = type_
        self.param = param
        self.code = code

    def body(self) -> dict[str, Any]:
        return {"error": {"message": str(self), "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status)


def upstream_error(exc: AvengersError | DependencyError) -> ApiError:
    status = exc.status
    message = str(exc)
    http_status, type_ = STATUS_TO_HTTP.get(status, (502, "upstream_error"))
    return ApiError(http_status, message, type_, code=status.lower())


# --------------------------------------------------------------------------------------------- requests


class _Body(BaseModel):
    """Fields every OpenAI SDK sends that the ensemble uses; other OpenAI fields are accepted and ignored."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    n: int | None = Field(default=None, ge=1, le=64)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = Field(default=None, ge=0)
    # Ensemble options (extra_body)
    strategy: str | None = None
    switch_threshold: float | None = None
    top_k: int | None = Field(default=None, ge=1, le=64, strict=True)
    """Routed models that share the n samples (top_k_vote, score_weighted_vote, log_odds_vote); the gateway's
    ``limits.max_top_k`` caps it."""
    task_type: str | None = None
    routing: str | None = None
    vote: str | None = None
    tests: list[str] = Field(default_factory=list)
    entry_point: str | None = None
    task_id: str | None = None
    no_cache: bool = False

    @property
    def stops(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    @property
    def token_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    @property
    def include_usage(self) -> bool:
        return bool((self.stream_options or {}).get("include_usage"))


class _TextPart(BaseModel):
    type: Literal["text"]
    text: str


class _Message(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[_TextPart] | None = None

    @property
    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""


class ChatBody(_Body):
    messages: list[_Message] = Field(min_length=1)

    def query(self) -> str:
        """The Gateway's query: the last user message; earlier turns (if any) go before it as a transcript."""
        if self.messages[-1].role != "user":
            raise ApiError(400, "the last message must be the user's", param="messages")
        last = self.messages[-1].text
        if len(self.messages) == 1:
            return last
        history = "\n\n".join(f"{m.role}: {m.text}" for m in self.messages[:-1])
        return f"{history}\n\nuser: {last}"

    def chat(self) -> list[tuple[str, str]]:
        return [("system" if m.role == "developer" else m.role, m.text) for m in self.messages]


class CompletionBody(_Body):
    prompt: str | list[str]

    def query(self) -> str:
        if isinstance(self.prompt, list):
            if len(self.prompt) != 1:
                raise ApiError(400, "prompt: give one prompt per request", param="prompt")
            return self.prompt[0]
        return self.prompt

    def chat(self) -> list[tuple[str, str]]:
        return [("user", self.query())]


def _validation_error(exc: pydantic.ValidationError) -> ApiError:
    first = exc.errors()[0]
    param = ".".join(str(p) for p in first["loc"]) or None
    return ApiError(400, f"{param or 'body'}: {first['msg']}", param=param)


# --------------------------------------------------------------------------------------------- responses


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def _ensemble_usage(response: gateway_pb2.AskResponse) -> dict[str, int]:
    """The Gateway's usage: the prompt once per engine call, completion tokens summed over samples."""
    return _usage(response.usage.prompt_tokens, sum(s.completion_tokens for s in response.samples))


def _reason(finish_reason: str) -> str:
    """A pool finish reason as OpenAI's (the pool's "error" and unknown reasons become "stop")."""
    return finish_reason if finish_reason in FINISH_REASONS else "stop"


def _finish_reason(response: gateway_pb2.AskResponse) -> str:
    counts = response.vote.counts
    if counts and counts[0].candidate_indices:
        index = counts[0].candidate_indices[0]
        if index < len(response.samples):
            reason = response.samples[index].finish_reason
            return reason if reason in FINISH_REASONS else "stop"
    return "stop"


def ensemble_summary(response: gateway_pb2.AskResponse) -> dict[str, Any]:
    vote = response.vote
    return {
        "request_id": response.request_id,
        "answer": response.answer,
        "models": list(response.models),
        "cluster": response.cluster,
        "router_version": response.router_version,
        "task_type": TASK_TYPE.name(response.task_type),
        "agreement": vote.agreement,
        "switched": vote.switched,
        "votes": [{"answer": c.answer, "votes": c.votes} for c in vote.counts],
        "abstained": vote.abstained,
        "failed_models": list(response.failed_models),
        "cached": response.cached,
        "samples": len(response.samples),
    }


def route_summary(route: gateway_pb2.AskRoute) -> dict[str, Any]:
    return {
        "event": "route",
        "request_id": route.request_id,
        "cluster": route.cluster,
        "router_version": route.router_version,
        "models": [{"model": m.model, "score": m.score} for m in route.models],
        "task_type": TASK_TYPE.name(route.task_type),
        "strategy": ENSEMBLE_STRATEGY.name(route.strategy),
        "cached": route.cached,
    }


class Shape:
    """How one endpoint writes a completion: chat (``message`` / ``delta``) or text (``text``)."""

    def __init__(self, chat: bool):
        self.chat = chat
        self.object = "chat.completion" if chat else "text_completion"
        self.chunk_object = "chat.completion.chunk" if chat else "text_completion"
        self.prefix = "chatcmpl-" if chat else "cmpl-"

    def choice(self, index: int, text: str, finish_reason: str) -> dict[str, Any]:
        if self.chat:
            return {"index": index, "message": {"role": "assistant", "content": text}, "logprobs": None,
                    "finish_reason": finish_reason}
        return {"index": index, "text": text, "logprobs": None, "finish_reason": finish_reason}

    def delta(self, index: int, text: str | None, finish_reason: str | None, first: bool = False) -> dict[str, Any]:
        if self.chat:
            delta: dict[str, Any] = {"role": "assistant"} if first else {}
            if text is not None:
                delta["content"] = text
            return {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return {"index": index, "text": text or "", "logprobs": None, "finish_reason": finish_reason}

    def completion(self, id_: str, model: str, choices: list[dict], usage: dict, **extra: Any) -> dict[str, Any]:
        return {"id": self.prefix + id_, "object": self.object, "created": int(time.time()), "model": model,
                "choices": choices, "usage": usage, **extra}

    def chunk(self, id_: str, created: int, model: str, choices: list[dict], **extra: Any) -> dict[str, Any]:
        return {"id": self.prefix + id_, "object": self.chunk_object, "created": created, "model": model,
                "choices": choices, **extra}


def sse(data: dict[str, Any] | str) -> bytes:
    text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return f"data: {text}\n\n".encode()


DONE = sse("[DONE]")
"""The last event of every stream."""


# --------------------------------------------------------------------------------------------- the app


class HttpApi:
    """The handlers, over one Gateway client and (optionally) one model pool client."""

    def __init__(self, config: HttpServiceConfig, gateway: AsyncClient, pool: GrpcModelPoolClient | None,
                 tokens: tuple[str, ...] = ()):
        self.config = config
        self.gateway = gateway
        self.pool = pool
        self.auth = TokenAuthInterceptor(tokens) if tokens else None
        self.in_flight = 0
        self._pool_models: tuple[float, list[str]] | None = None

    # -- plumbing

    def _authorize(self, request: Request) -> None:
        if self.auth is None:
            return
        header = request.headers.get("authorization")
        problem = self.auth.problem([("authorization", header)] if header is not None else [])
        if problem is not None:
            raise ApiError(401, problem, "authentication_error", code="invalid_api_key")

    async def _json(self, request: Request) -> dict[str, Any]:
        limit = self.config.limits.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise ApiError(413, f"request body is {declared} bytes; the limit is {limit}", code="body_too_large")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise ApiError(413, f"request body is over the limit of {limit} bytes", code="body_too_large")
        try:
            data = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ApiError(400, f"the body is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ApiError(400, "the body must be a JSON object")
        return data

    def endpoint(self, name: str, handler, *, auth: bool = True, limited: bool = False):
        """``handler`` with auth, the concurrency limit, metrics and every error as an OpenAI-style body."""

        async def wrapped(request: Request) -> Response:
            started = time.perf_counter()
            taken = False
            try:
                if auth:
                    self._authorize(request)
                if limited:
                    cap = self.config.limits.max_concurrent_requests
                    if cap and self.in_flight >= cap:
                        raise ApiError(429, f"{self.in_flight} requests in flight; the limit is {cap}",
                                       "rate_limit_error", code="too_many_requests")
                    self.in_flight += 1
                    taken = True
                response = await handler(request)
            except ApiError as exc:
                response = exc.response()
            except (AvengersError, DependencyError) as exc:
                response = upstream_error(exc).response()
            except Exception as exc:  # every error is a JSON answer, never a dropped connection
                log.exception("%s failed", name)
                response = ApiError(500, f"internal error: {type(exc).__name__}: {exc}", "server_error").response()
            except BaseException:  # cancelled
                if taken:
                    self.in_flight -= 1
                raise
            if taken:
                if isinstance(response, StreamingResponse):
                    response.body_iterator = self._releasing(response.body_iterator)
                else:
                    self.in_flight -= 1
            HTTP_REQUESTS.labels(name, str(response.status_code)).inc()
            HTTP_SECONDS.labels(name).observe(time.perf_counter() - started)
            return response

        return wrapped

    async def _releasing(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """A stream that gives its concurrency slot back before its last event, or when it is cut short."""
        released = False
        try:
            async for chunk in chunks:
                if chunk == DONE and not released:
                    released = True
                    self.in_flight -= 1
                yield chunk
        finally:
            if not released:
                self.in_flight -= 1

    # -- models

    async def pool_models(self) -> list[str]:
        """The pool's models (cached for 30 s); [] without a pool or when it cannot be asked."""
        if self.pool is None:
            return []
        now = time.monotonic()
        if self._pool_models is not None and now - self._pool_models[0] < 30.0:
            return self._pool_models[1]
        try:
            names = await self.pool.list_models(timeout=10)
        except DependencyError as exc:
            log.warning("could not list the pool's models: %s", exc)
            return self._pool_models[1] if self._pool_models else []
        self._pool_models = (now, names)
        return names

    def _model_card(self, name: str, owner: str) -> dict[str, Any]:
        return {"id": name, "object": "model", "created": 0, "owned_by": owner}

    async def list_models(self, request: Request) -> Response:
        cards = [self._model_card(self.config.ensemble_model, "avengers")]
        cards += [self._model_card(m, "avengers-pool") for m in await self.pool_models()]
        return JSONResponse({"object": "list", "data": cards})

    async def get_model(self, request: Request) -> Response:
        name = request.path_params["model"]
        if name == self.config.ensemble_model:
            return JSONResponse(self._model_card(name, "avengers"))
        if name in await self.pool_models():
            return JSONResponse(self._model_card(name, "avengers-pool"))
        raise self._unknown_model(name, await self.pool_models())

    def _unknown_model(self, name: str, pool: list[str]) -> ApiError:
        served = ", ".join([self.config.ensemble_model, *pool])
        return ApiError(404, f"model {name!r} does not exist; served: {served}", param="model",
                        code="model_not_found")

    # -- health

    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def ready(self, request: Request) -> Response:
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        stub = health_pb2_grpc.HealthStub(self.gateway._channel(self.gateway.address))
        try:
            reply = await stub.Check(health_pb2.HealthCheckRequest(service="avengers.v1.Gateway"), timeout=5)
            serving = reply.status == health_pb2.HealthCheckResponse.SERVING
        except Exception as exc:  # noqa: BLE001 - any failure means not ready
            log.debug("gateway health check failed: %s", exc)
            serving = False
        body = {"status": "ok" if serving else "unavailable", "gateway": self.gateway.address}
        return JSONResponse(body, status_code=200 if serving else 503)

    # -- completions

    async def chat_completions(self, request: Request) -> Response:
        return await self._complete(request, ChatBody, Shape(chat=True))

    async def completions(self, request: Request) -> Response:
        return await self._complete(request, CompletionBody, Shape(chat=False))

    async def _complete(self, request: Request, kind: type[_Body], shape: Shape) -> Response:
        data = await self._json(request)
        try:
            body = kind.model_validate(data)
        except pydantic.ValidationError as exc:
            raise _validation_error(exc) from None
        if body.model != self.config.ensemble_model:
            pool = await self.pool_models()
            if body.model not in pool:
                raise self._unknown_model(body.model, pool)
            return await self._direct(body, shape)
        options = self._ask_options(body)
        if body.stream:
            return await self._ensemble_stream(body, shape, options)
        response = await self.gateway.ask(body.query(), timeout=self.config.limits.timeout_seconds, **options)
        return JSONResponse(shape.completion(
            response.request_id,
            "+".join(response.models) or self.config.ensemble_model,
            [shape.choice(0, response.text or response.answer, _finish_reason(response))],
            _ensemble_usage(response),
            avengers=ensemble_summary(response),
        ))

    def _ask_options(self, body: _Body) -> dict[str, Any]:
        options: dict[str, Any] = {
            "n": body.n, "temperature": body.temperature, "top_p": body.top_p, "max_tokens": body.token_limit,
            "stop": body.stops, "seed": body.seed,
        }
        options.update({name: getattr(body, name) for name in ENSEMBLE_FIELDS})
        known = gateway_pb2.AskRequest.DESCRIPTOR.fields_by_name
        fields = {name: value for name, value in (body.model_extra or {}).items()  # later fields, e.g. alpha
                  if name in known and name not in ("query", "sampling")}
        if fields:
            options["fields"] = fields
        try:
            ask_request(body.query(), **options)  # bad enum names and values are a 400 here, before any call
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None
        return options

    async def _ensemble_stream(self, body: _Body, shape: Shape, options: dict[str, Any]) -> Response:
        events = self.gateway.ask_stream(body.query(), timeout=self.config.limits.timeout_seconds, **options)
        first = await events.__anext__()  # errors before the first event are a plain HTTP error
        created = int(time.time())
        model = self.config.ensemble_model
        include_usage = body.include_usage

        async def stream() -> AsyncIterator[bytes]:
            event = first
            id_ = uuid.uuid4().hex
            try:
                while True:
                    kind = event.WhichOneof("event")
                    if kind == "route":
                        id_ = event.route.request_id or id_
                        yield sse(shape.chunk(id_, created, model, [shape.delta(0, "", None, first=True)],
                                              avengers=route_summary(event.route)))
                    elif kind == "sample":
                        s = event.sample
                        yield sse(shape.chunk(id_, created, model, [shape.delta(0, None, None)], avengers={
                            "event": "sample", "model": s.model, "index": s.index, "text": s.text,
                            "finish_reason": s.finish_reason, "completion_tokens": s.completion_tokens}))
                    elif kind == "model_failed":
                        yield sse(shape.chunk(id_, created, model, [shape.delta(0, None, None)], avengers={
                            "event": "model_failed", "model": event.model_failed.model,
                            "reason": event.model_failed.reason}))
                    elif kind == "result":
                        r = event.result
                        answered = "+".join(r.models) or model
                        yield sse(shape.chunk(id_, created, answered, [shape.delta(0, r.text or r.answer, None)]))
                        yield sse(shape.chunk(id_, created, answered, [shape.delta(0, None, _finish_reason(r))],
                                              avengers={"event": "result", **ensemble_summary(r)}))
                        if include_usage:
                            yield sse(shape.chunk(id_, created, answered, [],
                                                  usage=_ensemble_usage(r)))
                    try:
                        event = await events.__anext__()
                    except StopAsyncIteration:
                        break
            except AvengersError as exc:  # after the 200 is sent: the error goes in the stream
                yield sse(upstream_error(exc).body())
            finally:
                await events.aclose()
            yield DONE

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def _direct(self, body: _Body, shape: Shape) -> Response:
        """One pool model, no routing or vote: n choices."""
        n = body.n or 1
        if n > self.config.limits.max_direct_samples:
            raise ApiError(400, f"n={n}: a direct call returns at most {self.config.limits.max_direct_samples} "
                                "choices", param="n")
        assert self.pool is not None
        sampling = Sampling(
            n=n, temperature=1.0 if body.temperature is None else body.temperature, top_p=body.top_p,
            max_tokens=body.token_limit or 0, stop=tuple(body.stops), seed=body.seed,
        )
        id_ = uuid.uuid4().hex
        if body.stream:
            return await self._direct_stream(body, shape, sampling, id_)
        samples = await self.pool.generate(body.model, body.chat(), sampling, task_id=body.task_id or "",
                                           request_id=id_, timeout=self.config.limits.timeout_seconds)
        usage = _usage(sum(s.prompt_tokens for s in samples), sum(s.completion_tokens for s in samples))
        choices = [shape.choice(i, s.text, _reason(s.finish_reason)) for i, s in enumerate(samples)]
        return JSONResponse(shape.completion(id_, body.model, choices, usage))

    async def _direct_stream(self, body: _Body, shape: Shape, sampling: Sampling, id_: str) -> Response:
        """One pool model's tokens as the engine produces them (ModelPool.GenerateStream), the n choices
        interleaved by index; each choice ends with its finish_reason."""
        assert self.pool is not None
        chunks = self.pool.generate_stream(body.model, body.chat(), sampling, task_id=body.task_id or "",
                                           request_id=id_, timeout=self.config.limits.timeout_seconds)
        try:
            first = await anext(chunks, None)  # errors before the first chunk are a plain HTTP error
        except BaseException:
            await chunks.aclose()
            raise
        created = int(time.time())

        async def stream() -> AsyncIterator[bytes]:
            started: set[int] = set()
            prompt_tokens = completion_tokens = 0
            chunk = first
            try:
                while chunk is not None:
                    index = chunk.index
                    if chunk.delta or index not in started:
                        yield sse(shape.chunk(id_, created, body.model,
                                              [shape.delta(index, chunk.delta, None, first=index not in started)]))
                        started.add(index)
                    if chunk.finish_reason:
                        completion_tokens += chunk.completion_tokens
                        prompt_tokens = max(prompt_tokens, chunk.prompt_tokens)  # the same on every sample
                        yield sse(shape.chunk(id_, created, body.model,
                                              [shape.delta(index, None, _reason(chunk.finish_reason))]))
                    chunk = await anext(chunks, None)
                if body.include_usage:
                    yield sse(shape.chunk(id_, created, body.model, [],
                                          usage=_usage(prompt_tokens, completion_tokens)))
            except DependencyError as exc:  # after the 200 is sent: the error goes in the stream
                yield sse(upstream_error(exc).body())
            finally:
                await chunks.aclose()
            yield DONE

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def _not_found(request: Request, exc: Exception) -> Response:
    return ApiError(404, f"no route {request.method} {request.url.path}", code="not_found").response()


async def _method_not_allowed(request: Request, exc: Exception) -> Response:
    return ApiError(405, f"{request.method} is not allowed on {request.url.path}", code="method_not_allowed").response()


def create_app(api: HttpApi) -> Starlette:
    routes = [
        Route("/health", api.endpoint("health", api.health, auth=False), methods=["GET"]),
        Route("/ready", api.endpoint("ready", api.ready, auth=False), methods=["GET"]),
        Route("/v1/models", api.endpoint("models", api.list_models), methods=["GET"]),
        Route("/v1/models/{model:path}", api.endpoint("models", api.get_model), methods=["GET"]),
        Route("/v1/chat/completions", api.endpoint("chat_completions", api.chat_completions, limited=True),
              methods=["POST"]),
        Route("/v1/completions", api.endpoint("completions", api.completions, limited=True), methods=["POST"]),
    ]
    return Starlette(routes=routes, exception_handlers={404: _not_found, 405: _method_not_allowed})
