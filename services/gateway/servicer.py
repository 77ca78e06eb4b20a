"""The Gateway servicer: validate an Ask, run the ensemble pipeline behind the response cache, remember the
request for feedback; record Feedback. The recipe itself lives in :mod:`avengers.core.ensemble`."""

from __future__ import annotations

import asyncio
import copy
import hashlib
import logging
import math
import time
import uuid

import grpc
from prometheus_client import Counter

from avengers.config.gateway_service import GatewayServiceConfig
from avengers.core.ensemble import (
    FALLBACK_STATUSES,
    Deadline,
    DeadlineExceeded,
    DependencyError,
    EnsembleAnswer,
    EnsemblePipeline,
    EnsembleQuery,
    ModelPoolClient,
    ModelsUnavailable,
    RouteResult,
    Sampling,
    create_strategy,
    strategy_names,
)
from avengers.core.tasks import infer_task_type
from avengers.observability.metrics import record_route
from avengers.rpc.enums import ENSEMBLE_STRATEGY, ROUTING_STRATEGY, TASK_TYPE, VOTE_METHOD
from avengers.rpc.errors import InvalidArgument, NotFound, ServiceError, Unavailable, grpc_errors, status_of
from avengers.state.cache import ResponseCache, cache_key
from avengers.state.connection import StateError
from avengers.state.feedback import FeedbackStore, RequestRecord, UnknownRequest
from avengers.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc, voter_pb2

log = logging.getLogger(__name__)

CACHE_LOOKUPS = Counter("avengers_gateway_cache_total", "Response cache lookups by result", ["result"])
FAILED_MODELS = Counter("avengers_gateway_failed_models_total", "Models skipped after a failed generation", ["model"])

MAX_COMMENT_CHARS = 4096
MAX_REQUEST_ID_CHARS = 128

# Statuses of a dependency that are passed on as they are; every other one becomes UNAVAILABLE.
_PASSED_ON = {
    "INVALID_ARGUMENT": grpc.StatusCode.INVALID_ARGUMENT,
    "DEADLINE_EXCEEDED": grpc.StatusCode.DEADLINE_EXCEEDED,
    "RESOURCE_EXHAUSTED": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "FAILED_PRECONDITION": grpc.StatusCode.FAILED_PRECONDITION,
}


def _finite_in(value: float, low: float, high: float, low_open: bool = False) -> bool:
    return math.isfinite(value) and (low < value if low_open else low <= value) and value <= high


def parse_ask(request: gateway_pb2.AskRequest, config: GatewayServiceConfig, request_id: str) -> EnsembleQuery:
    """The validated query with every default resolved; InvalidArgument names the offending field."""
    limits, defaults = config.limits, config.defaults
    query = request.query
    if not query.strip():
        raise InvalidArgument("query is empty")
    if len(query) > limits.max_query_chars:
        raise InvalidArgument(f"query is {len(query)} characters; the limit is {limits.max_query_chars}")
    s = request.sampling
    n = s.n or defaults.n
    if not 1 <= n <= limits.max_n:
        raise InvalidArgument(f"sampling.n={n} is outside [1, {limits.max_n}]")
    temperature = s.temperature if s.HasField("temperature") else defaults.temperature
    if not _finite_in(temperature, 0.0, 2.0):
        raise InvalidArgument(f"sampling.temperature={temperature} is outside [0, 2]")
    top_p = s.top_p if s.HasField("top_p") else None
    if top_p is not None and not _finite_in(top_p, 0.0, 1.0, low_open=True):
        raise InvalidArgument(f"sampling.top_p={top_p} is outside (0, 1]")
    if len(s.stop) > limits.max_stop_strings or any(not stop for stop in s.stop):
        raise InvalidArgument(f"sampling.stop: at most {limits.max_stop_strings} non-empty stop strings")
    threshold = request.switch_threshold if request.HasField("switch_threshold") else defaults.switch_threshold
    if not _finite_in(threshold, 0.0, 1.0, low_open=True):
        raise InvalidArgument(f"switch_threshold={threshold} is outside (0, 1]")
    tests = tuple(request.tests)
    if len(tests) > limits.max_tests or sum(len(t) for t in tests) > limits.max_tests_chars:
        raise InvalidArgument(
            f"tests: {len(tests)} tests of {sum(len(t) for t in tests)} characters; the limits are "
            f"{limits.max_tests} tests and {limits.max_tests_chars} characters"
        )
    if request.entry_point and not request.entry_point.isidentifier():
        raise InvalidArgument(f"entry_point {request.entry_point!r} is not a Python identifier")
    if len(request.task_id) > limits.max_task_id_chars:
        raise InvalidArgument(f"task_id longer than {limits.max_task_id_chars} characters")
    strategy = ENSEMBLE_STRATEGY.name(request.strategy) or defaults.strategy
    if strategy not in strategy_names():
        raise InvalidArgument(f"strategy {strategy!r} is not served; known: {strategy_names()}")
    top_k = request.top_k or defaults.top_k
    if top_k > limits.max_top_k:
        raise InvalidArgument(f"top_k={top_k} is above the limit of {limits.max_top_k} models")
    task_type = TASK_TYPE.name(request.task_type) or infer_task_type(
        query, tests=tests, entry_point=request.entry_point
    )
    return EnsembleQuery(
        query=query,
        task_type=task_type,
        sampling=Sampling(
            n=n,
            temperature=temperature,
            top_p=top_p,
            max_tokens=s.max_tokens or defaults.max_tokens,
            stop=tuple(s.stop),
            seed=s.seed if s.HasField("seed") else None,
        ),
        strategy=strategy,
        switch_threshold=threshold,
        routing=ROUTING_STRATEGY.name(request.routing),
        vote_method=VOTE_METHOD.name(request.vote_method),
        tests=tests,
        entry_point=request.entry_point,
        task_id=request.task_id,
        request_id=request_id,
        top_k=top_k,
        alpha=checked_alpha(request),
    )


def checked_alpha(request: gateway_pb2.AskRequest) -> float | None:
    """The request's routing cost weight (None: the router's default); INVALID_ARGUMENT outside [0, 1]."""
    if not request.HasField("alpha"):
        return None
    if not (math.isfinite(request.alpha) and 0.0 <= request.alpha <= 1.0):
        raise InvalidArgument(f"alpha must be in [0, 1], got {request.alpha}")
    return request.alpha


def response_cache_key(query: EnsembleQuery, router_version: str, instruction: str) -> str:
    """Everything the answer depends on: query, task, router version, sampling, strategy, routing, vote, tests."""
    fields = {
        "query": query.query,
        "task_type": query.task_type,
        "instruction": instruction,
        "router_version": router_version,
        "sampling": [query.sampling.n, round(query.sampling.temperature, 6), query.sampling.top_p,
                     query.sampling.max_tokens, list(query.sampling.stop), query.sampling.seed],
        "strategy": query.strategy,
        "switch_threshold": query.switch_threshold if query.strategy == "model_switch" else None,
        "models": create_strategy(query.strategy).models(query.top_k),
        "routing": query.routing,
        "alpha": query.alpha,
        "vote_method": query.vote_method,
        "tests": list(query.tests),
        "entry_point": query.entry_point,
        "task_id": query.task_id,
    }
    return cache_key(fields)


def ask_response(answer: EnsembleAnswer, request_id: str) -> gateway_pb2.AskResponse:
    vote = answer.vote.detail
    if not isinstance(vote, voter_pb2.VoteResponse):
        vote = voter_pb2.VoteResponse(
            answer=answer.vote.answer, text=answer.vote.text, agreement=answer.vote.agreement,
            switched=answer.vote.switched, task_type=TASK_TYPE.value(answer.task_type),
        )
    return gateway_pb2.AskResponse(
        request_id=request_id,
        answer=answer.answer,
        text=answer.text,
        models=answer.models,
        cluster=answer.cluster,
        router_version=answer.router_version,
        vote=vote,
        failed_models=answer.failed_models,
        cached=False,
        task_type=TASK_TYPE.value(answer.task_type),
        samples=[
            common_pb2.Sample(index=s.index, text=s.text, finish_reason=s.finish_reason,
                              completion_tokens=s.completion_tokens, model=s.model)
            for s in answer.samples
        ],
        usage=common_pb2.Usage(prompt_tokens=answer.prompt_tokens, completion_tokens=answer.completion_tokens),
    )


def service_error(exc: Exception) -> ServiceError:
    """The status a pipeline failure ends the call with, naming the dependency that failed."""
    if isinstance(exc, DependencyError):
        code = _PASSED_ON.get(exc.status, grpc.StatusCode.UNAVAILABLE)
        return ServiceError(f"{exc.dependency}: {exc.status}: {exc.message}", code)
    if isinstance(exc, ModelsUnavailable):
        return Unavailable(str(exc))
    if isinstance(exc, DeadlineExceeded):
        return ServiceError(str(exc), grpc.StatusCode.DEADLINE_EXCEEDED)
    raise TypeError(f"not a pipeline failure: {exc!r}")


class AskEvents:
    """Where one AskStream call's events go: the route decision, each sample as its Generate call returns,
    each model that failed. ``emit`` takes an :class:`gateway_pb2.AskEvent`."""

    def __init__(self, emit):
        self.emit = emit
        self._samples = 0
        self._failed: set[str] = set()

    def route(self, request_id: str, query: EnsembleQuery, route: RouteResult, cached: bool) -> None:
        self.emit(gateway_pb2.AskEvent(route=gateway_pb2.AskRoute(
            request_id=request_id,
            cluster=route.cluster,
            router_version=route.router_version,
            models=[common_pb2.ModelScore(model=m.name, score=m.score, rank=i) for i, m in enumerate(route.models)],
            task_type=TASK_TYPE.value(query.task_type),
            strategy=ENSEMBLE_STRATEGY.value(query.strategy),
            cached=cached,
        )))

    def samples(self, samples) -> None:
        for s in samples:
            self.emit(gateway_pb2.AskEvent(sample=common_pb2.Sample(
                index=self._samples, text=s.text, finish_reason=s.finish_reason,
                completion_tokens=s.completion_tokens, model=s.model,
            )))
            self._samples += 1

    def failed(self, model: str, reason: str) -> None:
        if model not in self._failed:
            self._failed.add(model)
            self.emit(gateway_pb2.AskEvent(model_failed=gateway_pb2.AskModelFailure(model=model, reason=reason)))

    def pipeline(self, pipeline: EnsemblePipeline) -> EnsemblePipeline:
        """A shallow copy of ``pipeline`` whose model pool client reports to these events."""
        reporting = copy.copy(pipeline)
        reporting.pool = _ReportingPool(pipeline.pool, self)
        return reporting


class _ReportingPool(ModelPoolClient):
    """The pipeline's model pool client, reporting each call's samples (or failure) to :class:`AskEvents`."""

    def __init__(self, inner: ModelPoolClient, events: AskEvents):
        self.inner = inner
        self.events = events

    async def generate(self, model, messages, sampling, **kwargs):
        try:
            samples = await self.inner.generate(model, messages, sampling, **kwargs)
        except DependencyError as exc:
            if exc.status in FALLBACK_STATUSES:
                self.events.failed(model, f"{exc.status} from {exc.dependency}: {exc.message}")
            raise
        self.events.samples(samples)
        return samples


class GatewayServicer(gateway_pb2_grpc.GatewayServicer):
    def __init__(
        self,
        config: GatewayServiceConfig,
        pipeline: EnsemblePipeline,
        cache: ResponseCache,
        feedback: FeedbackStore,
    ):
        self.config = config
        self.pipeline = pipeline
        self.cache = cache
        self.feedback = feedback

    @grpc_errors
    async def Ask(self, request: gateway_pb2.AskRequest, context: grpc.aio.ServicerContext) -> gateway_pb2.AskResponse:
        remaining = context.time_remaining()
        return await self.ask(request, Deadline(self.config.defaults.timeout_seconds if remaining is None else remaining))

    async def AskStream(self, request: gateway_pb2.AskRequest, context: grpc.aio.ServicerContext):
        """Ask, streamed as :class:`gateway_pb2.AskEvent` s: route, samples and failures as they happen, result."""
        remaining = context.time_remaining()
        deadline = Deadline(self.config.defaults.timeout_seconds if remaining is None else remaining)
        queue: asyncio.Queue = asyncio.Queue()
        done = object()
        task = asyncio.ensure_future(self.ask(request, deadline, AskEvents(queue.put_nowait)))
        task.add_done_callback(lambda _: queue.put_nowait(done))
        try:
            while (event := await queue.get()) is not done:
                yield event
            try:
                response = task.result()
            except Exception as exc:  # every error must become a status, as in Ask
                code, message = status_of(exc)
                if code == grpc.StatusCode.INTERNAL:
                    log.exception("AskStream failed")
                await context.abort(code, message)
            yield gateway_pb2.AskEvent(result=response)
        finally:
            if not task.done():  # the client went away: stop sampling for it
                task.cancel()

    async def ask(
        self, request: gateway_pb2.AskRequest, deadline: Deadline, events: AskEvents | None = None
    ) -> gateway_pb2.AskResponse:
        request_id = uuid.uuid4().hex
        query = parse_ask(request, self.config, request_id)
        pipeline = self.pipeline if events is None else events.pipeline(self.pipeline)
        try:
            route = await pipeline.route(query, deadline)
            key = None
            if not request.no_cache:
                instruction = self.config.instructions.get(query.task_type, "")
                key = response_cache_key(query, route.router_version, instruction)
                cached = await self._cache_get(key)
                if cached is not None:
                    cached.request_id = request_id
                    cached.cached = True
                    if events is not None:
                        events.route(request_id, query, route, cached=True)
                    await self._remember(query, cached)
                    return cached
            else:
                CACHE_LOOKUPS.labels("bypass").inc()
            if events is not None:
                events.route(request_id, query, route, cached=False)
            answer = await pipeline.answer(query, route, deadline)
        except (DependencyError, ModelsUnavailable, DeadlineExceeded) as exc:
            raise service_error(exc) from exc
        for model in answer.failed_models:
            FAILED_MODELS.labels(model).inc()
        if answer.models:
            record_route("gateway", answer.cluster, answer.models[0])
        response = ask_response(answer, request_id)
        if key is not None and not answer.failed_models:  # a fallback answer is not what the route would give
            await self._cache_set(key, response)
        await self._remember(query, response)
        return response

    async def _cache_get(self, key: str) -> gateway_pb2.AskResponse | None:
        try:
            data = await self.cache.get(key)
        except StateError as exc:
            CACHE_LOOKUPS.labels("error").inc()
            log.warning("response cache unavailable, answering without it: %s", exc)
            return None
        if data is None:
            CACHE_LOOKUPS.labels("miss").inc()
            return None
        try:
            response = gateway_pb2.AskResponse.FromString(data)
        except Exception:  # noqa: BLE001 - a corrupt entry is a miss
            CACHE_LOOKUPS.labels("error").inc()
            log.warning("undecodable response cache entry %s; ignoring it", key)
            return None
        CACHE_LOOKUPS.labels("hit").inc()
        return response

    async def _cache_set(self, key: str, response: gateway_pb2.AskResponse) -> None:
        stored = gateway_pb2.AskResponse()
        stored.CopyFrom(response)
        stored.request_id = ""
        try:
            await self.cache.set(key, stored.SerializeToString())
        except StateError as exc:
            log.warning("could not store the response in the cache: %s", exc)

    async def _remember(self, query: EnsembleQuery, response: gateway_pb2.AskResponse) -> None:
        record = RequestRecord(
            request_id=response.request_id,
            query_hash=hashlib.sha256(query.query.encode("utf-8")).hexdigest(),
            cluster=response.cluster,
            router_version=response.router_version,
            models=tuple(response.models),
            answer=response.answer,
            task_type=query.task_type,
            created_at=time.time(),
        )
        try:
            await self.feedback.remember(record)
        except StateError as exc:  # the answer matters more than the record; feedback on it will be NOT_FOUND
            log.warning("could not remember request %s for feedback: %s", response.request_id, exc)

    @grpc_errors
    async def Feedback(self, request: gateway_pb2.FeedbackRequest, context: grpc.aio.ServicerContext) -> gateway_pb2.FeedbackResponse:
        if not request.request_id.strip():
            raise InvalidArgument("request_id is empty")
        if len(request.request_id) > MAX_REQUEST_ID_CHARS:
            raise InvalidArgument(f"request_id longer than {MAX_REQUEST_ID_CHARS} characters")
        if not _finite_in(request.score, 0.0, 1.0):
            raise InvalidArgument(f"score={request.score} is outside [0, 1]")
        if len(request.comment) > MAX_COMMENT_CHARS:
            raise InvalidArgument(f"comment is {len(request.comment)} characters; the limit is {MAX_COMMENT_CHARS}")
        try:
            await self.feedback.add_feedback(request.request_id, request.score, request.comment)
        except UnknownRequest as exc:
            raise NotFound(str(exc)) from exc
        except StateError as exc:
            raise Unavailable(f"feedback store unavailable, feedback not recorded: {exc}") from exc
        return gateway_pb2.FeedbackResponse(recorded=True)
