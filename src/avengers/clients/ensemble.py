"""gRPC adapters of the ensemble's client interfaces (:mod:`avengers.core.ensemble`).

Each adapter turns a dependency's gRPC error into :class:`~avengers.core.ensemble.DependencyError` naming the
dependency and its status, so the pipeline can fall back and the gateway can say which service failed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import grpc

from avengers.clients.embedder import EmbedderClient
from avengers.core.ensemble import (
    Candidate,
    DependencyError,
    ModelPoolClient,
    RankedModel,
    RouterClient,
    RouteResult,
    Sample,
    Sampling,
    VoteOptions,
    VoteOutcome,
    VoterClient,
)
from avengers.rpc import security
from avengers.rpc.enums import ROUTING_STRATEGY, TASK_TYPE, VOTE_METHOD
from avengers.rpc.errors import ServiceError
from avengers.v1 import (
    common_pb2,
    model_pool_pb2,
    model_pool_pb2_grpc,
    router_pb2,
    router_pb2_grpc,
    voter_pb2,
    voter_pb2_grpc,
)

RECONNECT_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 250),
    ("grpc.min_reconnect_backoff_ms", 250),
    ("grpc.max_reconnect_backoff_ms", 1000),
)
"""gRPC's reconnect backoff for dependencies: 0.25 s, growing to at most 1 s between attempts. The default
(1 s, x1.6 per failed attempt, up to 120 s) grows with an outage: after an 18 s model pool outage the
gateway's next attempt came ~9 s after the pool was back (tests/test_reconnect.py). One connect a second to
a dependency that is down costs nothing next to Asks failing for seconds after it is back."""


def open_channel(address: str, max_message_bytes: int) -> grpc.aio.Channel:
    """A channel to ``address`` with the service's message size limits (and tracing, when on), reconnecting
    within about a second once the dependency is back (:data:`RECONNECT_OPTIONS`)."""
    return security.open_channel(address, max_message_bytes=max_message_bytes, options=RECONNECT_OPTIONS)


def dependency_error(dependency: str, address: str, exc: grpc.aio.AioRpcError) -> DependencyError:
    return DependencyError(f"{dependency} at {address}", exc.code().name, exc.details() or exc.code().name)


class GrpcRouterClient(RouterClient):
    """Router.Route with the query text (the router embeds it)."""

    def __init__(self, channel: grpc.aio.Channel, address: str):
        self.stub = router_pb2_grpc.RouterStub(channel)
        self.address = address

    async def route(
        self, query: str, *, top_n: int, strategy: str | None, timeout: float, alpha: float | None = None
    ) -> RouteResult:
        return await self._route(router_pb2.RouteRequest(query=query), top_n, strategy, timeout, alpha)

    async def _route(
        self,
        request: router_pb2.RouteRequest,
        top_n: int,
        strategy: str | None,
        timeout: float,
        alpha: float | None = None,
    ) -> RouteResult:
        request.top_n = top_n
        request.strategy = ROUTING_STRATEGY.value(strategy)
        if alpha is not None:
            request.alpha = alpha
        try:
            response = await self.stub.Route(request, timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            raise dependency_error("router", self.address, exc) from exc
        return RouteResult(
            cluster=response.cluster,
            router_version=response.router_version,
            models=tuple(RankedModel(m.model, m.score) for m in sorted(response.models, key=lambda m: m.rank)),
        )


class EmbeddingRouterClient(GrpcRouterClient):
    """Embedder.Embed first, then Router.Route with the vector (``route_by: embedding``)."""

    def __init__(self, channel: grpc.aio.Channel, address: str, embedder_channel: grpc.aio.Channel, embedder_address: str):
        super().__init__(channel, address)
        self.embedder = EmbedderClient(embedder_address, channel=embedder_channel)
        self.embedder_address = embedder_address

    async def route(
        self, query: str, *, top_n: int, strategy: str | None, timeout: float, alpha: float | None = None
    ) -> RouteResult:
        try:
            embedded = await self.embedder.embed([query], timeout=timeout)
        except ServiceError as exc:
            raise DependencyError(f"embedder at {self.embedder_address}", exc.code.name, str(exc)) from exc
        vector = embedded.vectors[0]
        request = router_pb2.RouteRequest(embedding=common_pb2.Vector(values=vector.tolist()))
        return await self._route(request, top_n, strategy, timeout, alpha)


class GrpcModelPoolClient(ModelPoolClient):
    """ModelPool.Generate (and GenerateStream), with the Ray Serve "application" metadata when configured."""

    def __init__(self, channel: grpc.aio.Channel, address: str, application: str | None):
        self.stub = model_pool_pb2_grpc.ModelPoolStub(channel)
        self.address = address
        self.metadata = (("application", application),) if application else None

    async def generate(
        self,
        model: str,
        messages: Sequence[tuple[str, str]],
        sampling: Sampling,
        *,
        task_id: str,
        request_id: str,
        timeout: float,
    ) -> list[Sample]:
        request = self._request(model, messages, sampling, task_id=task_id, request_id=request_id)
        try:
            response = await self.stub.Generate(request, timeout=timeout, metadata=self.metadata)
        except grpc.aio.AioRpcError as exc:
            raise dependency_error("model pool", self.address, exc) from exc
        prompt_tokens = response.usage.prompt_tokens  # one prefill for the call: on its first sample only
        return [
            Sample(model=model, index=s.index, text=s.text, finish_reason=s.finish_reason,
                   completion_tokens=s.completion_tokens, prompt_tokens=prompt_tokens if i == 0 else 0)
            for i, s in enumerate(response.samples)
        ]

    async def generate_stream(
        self,
        model: str,
        messages: Sequence[tuple[str, str]],
        sampling: Sampling,
        *,
        task_id: str,
        request_id: str,
        timeout: float,
    ) -> AsyncIterator[model_pool_pb2.GenerateChunk]:
        """ModelPool.GenerateStream: the text deltas of every sample as the engine produces them (token by token
        on the llama_cpp, vLLM and OpenAI-compatible backends; a whole sample per chunk on replay and on an
        OpenAI-compatible backend with ``split_n``). A sample's last chunk has its finish_reason,
        completion_tokens and the request's prompt_tokens. Raises DependencyError."""
        request = self._request(model, messages, sampling, task_id=task_id, request_id=request_id)
        call = self.stub.GenerateStream(request, timeout=timeout, metadata=self.metadata)
        try:
            async for chunk in call:
                yield chunk
        except grpc.aio.AioRpcError as exc:
            raise dependency_error("model pool", self.address, exc) from exc
        finally:
            call.cancel()  # the caller stopped reading: the pool stops generating

    @staticmethod
    def _request(
        model: str, messages: Sequence[tuple[str, str]], sampling: Sampling, *, task_id: str, request_id: str
    ) -> model_pool_pb2.GenerateRequest:
        params = common_pb2.SamplingParams(
            n=sampling.n, temperature=sampling.temperature, max_tokens=sampling.max_tokens, stop=sampling.stop
        )
        if sampling.top_p is not None:
            params.top_p = sampling.top_p
        if sampling.seed is not None:
            params.seed = sampling.seed
        return model_pool_pb2.GenerateRequest(
            model=model,
            messages=[model_pool_pb2.ChatMessage(role=role, content=content) for role, content in messages],
            sampling=params,
            request_id=request_id,
            task_id=task_id,
        )

    async def list_models(self, timeout: float = 30.0) -> list[str]:
        """Names of the models the pool serves (DependencyError when it cannot be asked)."""
        try:
            response = await self.stub.ListModels(
                model_pool_pb2.ListModelsRequest(), timeout=timeout, metadata=self.metadata
            )
        except grpc.aio.AioRpcError as exc:
            raise dependency_error("model pool", self.address, exc) from exc
        return [m.name for m in response.models]

    async def prices(self, timeout: float = 30.0) -> dict[str, float]:
        """Price per million generated tokens of each model whose pool config sets one (ListModels)."""
        try:
            response = await self.stub.ListModels(
                model_pool_pb2.ListModelsRequest(), timeout=timeout, metadata=self.metadata
            )
        except grpc.aio.AioRpcError as exc:
            raise dependency_error("model pool", self.address, exc) from exc
        return {m.name: m.price_per_million_tokens for m in response.models if m.HasField("price_per_million_tokens")}


class GrpcVoterClient(VoterClient):
    """Voter.Vote; the full VoteResponse is kept as the outcome's ``detail``."""

    def __init__(self, channel: grpc.aio.Channel, address: str):
        self.stub = voter_pb2_grpc.VoterStub(channel)
        self.address = address

    async def vote(
        self, task_type: str, candidates: Sequence[Candidate], options: VoteOptions, *, timeout: float
    ) -> VoteOutcome:
        request = voter_pb2.VoteRequest(
            task_type=TASK_TYPE.value(task_type),
            candidates=[voter_pb2.Candidate(text=c.text, model=c.model, weight=c.weight) for c in candidates],
            method=VOTE_METHOD.value(options.method),
            tests=options.tests,
            entry_point=options.entry_point,
            switch_threshold=options.switch_threshold,
        )
        try:
            response = await self.stub.Vote(request, timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            raise dependency_error("voter", self.address, exc) from exc
        return VoteOutcome(
            answer=response.answer,
            text=response.text,
            agreement=response.agreement,
            switched=response.switched,
            detail=response,
        )
