"""Python client of the Avengers API: Ask, AskStream and Feedback at the Gateway, Route at the Router.

Synchronous::

    from avengers.client import Client

    with Client("127.0.0.1:50050") as client:
        response = client.ask("What is 12 * 7?", n=5, strategy="model_switch")
        print(response.answer, response.models)
        for event in client.ask_stream("Which is larger?\\nA. 3\\nB. 5"):
            print(event.WhichOneof("event"))
        client.feedback(response.request_id, score=1.0)

Asynchronous (same methods, awaited; ``ask_stream`` is an async iterator)::

    from avengers.client import AsyncClient

    async with AsyncClient("127.0.0.1:50050", token_env="AVENGERS_TOKEN", ca_file="ca.pem") as client:
        response = await client.ask("What is 12 * 7?")
        async for event in client.ask_stream("What is 12 * 7?"):
            ...

Connection security, as the servers' ``server:`` config expects it: ``tls=True`` (system roots) or
``ca_file`` for TLS, ``cert_file`` + ``key_file`` for mutual TLS, and a bearer token (``token``, or
``token_env`` naming the environment variable that holds it). Failed calls raise :class:`AvengersError`
with the gRPC status name and the server's message. Responses are the contract's messages
(``avengers.v1.gateway_pb2.AskResponse``, ``AskEvent``, ``FeedbackResponse``, ``router_pb2.RouteResponse``);
an AskResponse's ``usage`` has the answer's tokens (``prompt_tokens`` once per model pool engine call,
``completion_tokens`` over all samples).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Self

import grpc

from avengers.config.gateway_service import DEFAULT_GATEWAY_PORT, ROUTER_ADDR_ENV
from avengers.rpc.enums import ENSEMBLE_STRATEGY, ROUTING_STRATEGY, TASK_TYPE, VOTE_METHOD
from avengers.rpc.security import DEFAULT_MAX_MESSAGE_BYTES, auth_metadata, channel_credentials, open_channel
from avengers.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc, router_pb2, router_pb2_grpc

GATEWAY_ADDR_ENV = "AVENGERS_GATEWAY_ADDR"
DEFAULT_TIMEOUT_SECONDS = 300.0


def default_gateway_address() -> str:
    """``$AVENGERS_GATEWAY_ADDR``, else 127.0.0.1:50050."""
    return os.environ.get(GATEWAY_ADDR_ENV) or f"127.0.0.1:{DEFAULT_GATEWAY_PORT}"


class AvengersError(Exception):
    """A call that ended with a gRPC status other than OK: ``status`` ("INVALID_ARGUMENT", "UNAVAILABLE", ...),
    ``details`` (the server's message) and the ``address`` called."""

    def __init__(self, status: str, details: str, address: str):
        super().__init__(f"{address}: {status}: {details}")
        self.status = status
        self.details = details
        self.address = address


def _error(exc: grpc.RpcError, address: str) -> AvengersError:
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    details = exc.details() if hasattr(exc, "details") else str(exc)
    return AvengersError(code.name, details or code.name, address)


def _enum_name(value: str | None) -> str | None:
    """A name as given on a command line or in JSON ("model-switch", "MODEL_SWITCH") as the contract's."""
    return None if value in (None, "") else value.strip().lower().replace("-", "_")


def ask_request(
    query: str,
    *,
    n: int | None = None,
    strategy: str | None = None,
    switch_threshold: float | None = None,
    top_k: int | None = None,
    task_type: str | None = None,
    routing: str | None = None,
    vote: str | None = None,
    temperature: float | None = None,
    top_p: float | None = None,
    max_tokens: int | None = None,
    stop: Sequence[str] = (),
    seed: int | None = None,
    tests: Sequence[str] = (),
    entry_point: str | None = None,
    task_id: str | None = None,
    no_cache: bool = False,
    fields: Mapping[str, Any] | None = None,
) -> gateway_pb2.AskRequest:
    """The AskRequest for ``query``; None leaves a field to the gateway's default. Names are the contract's
    lower-case enum names ("self_consistency", "model_switch", "math", "nearest", "weighted"; "-" works for
    "_"); ValueError names an unknown one. ``top_k``: routed models sharing the samples under the top-k
    strategies ("top_k_vote", ...). ``fields`` sets further scalar AskRequest fields by name (fields the
    contract gains later, e.g. ``alpha``)."""

    def enum(proto, name: str | None) -> int:
        name = _enum_name(name)
        try:
            return proto.value(name)
        except ValueError:
            known = [v.name.removeprefix(proto.prefix).lower() for v in proto.enum.DESCRIPTOR.values[1:]]
            raise ValueError(f"{proto.field}: unknown value {name!r}; known: {', '.join(known)}") from None

    sampling = common_pb2.SamplingParams(n=n or 0, max_tokens=max_tokens or 0, stop=list(stop))
    if temperature is not None:
        sampling.temperature = temperature
    if top_p is not None:
        sampling.top_p = top_p
    if seed is not None:
        sampling.seed = seed
    request = gateway_pb2.AskRequest(
        query=query,
        task_type=enum(TASK_TYPE, task_type),
        sampling=sampling,
        strategy=enum(ENSEMBLE_STRATEGY, strategy),
        routing=enum(ROUTING_STRATEGY, routing),
        vote_method=enum(VOTE_METHOD, vote),
        tests=list(tests),
        entry_point=entry_point or "",
        no_cache=no_cache,
        task_id=task_id or "",
        top_k=top_k or 0,
    )
    if switch_threshold is not None:
        request.switch_threshold = switch_threshold
    for name, value in (fields or {}).items():
        try:
            setattr(request, name, value)
        except (AttributeError, TypeError, ValueError) as exc:
            raise ValueError(f"{name}: {exc}") from None
    return request


@dataclass(frozen=True)
class Security:
    """TLS and token options of a client (see the module docstring)."""

    tls: bool = False
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    token: str | None = None
    token_env: str | None = None

    def credentials(self) -> grpc.ChannelCredentials | None:
        if self.tls or self.ca_file or self.cert_file:
            return channel_credentials(self.ca_file, self.cert_file, self.key_file)
        return None

    def bearer(self) -> str | None:
        if self.token:
            return self.token
        if self.token_env:
            token = os.environ.get(self.token_env, "").strip()
            if not token:
                raise ValueError(f"token_env {self.token_env}: the variable is unset or empty")
            return token
        return None


class _Base:
    def __init__(
        self,
        address: str | None = None,
        *,
        router_address: str | None = None,
        tls: bool = False,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
        token: str | None = None,
        token_env: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ):
        self.address = address or default_gateway_address()
        self.router_address = router_address or os.environ.get(ROUTER_ADDR_ENV) or None
        self.security = Security(tls, ca_file, cert_file, key_file, token, token_env)
        self.timeout = timeout
        self.max_message_bytes = max_message_bytes
        self._token = self.security.bearer()  # read now: a missing token is a clear error before any call

    def _router_address(self) -> str:
        if not self.router_address:
            raise ValueError(f"route() needs router_address (or ${ROUTER_ADDR_ENV})")
        return self.router_address


class AsyncClient(_Base):
    """The API over grpc.aio; use ``async with`` or call :meth:`close`."""

    def __init__(self, address: str | None = None, **options: Any):
        super().__init__(address, **options)
        self._channels: dict[str, grpc.aio.Channel] = {}

    def _channel(self, address: str) -> grpc.aio.Channel:
        if address not in self._channels:
            self._channels[address] = open_channel(
                address,
                max_message_bytes=self.max_message_bytes,
                credentials=self.security.credentials(),
                token=self._token,
            )
        return self._channels[address]

    async def ask(self, query: str, *, timeout: float | None = None, **options: Any) -> gateway_pb2.AskResponse:
        """The ensemble's answer; ``options`` as :func:`ask_request` takes them."""
        stub = gateway_pb2_grpc.GatewayStub(self._channel(self.address))
        try:
            return await stub.Ask(ask_request(query, **options), timeout=timeout or self.timeout)
        except grpc.aio.AioRpcError as exc:
            raise _error(exc, self.address) from None

    async def ask_stream(
        self, query: str, *, timeout: float | None = None, **options: Any
    ) -> AsyncIterator[gateway_pb2.AskEvent]:
        """The events of one AskStream call: route, samples and model failures as they happen, result."""
        stub = gateway_pb2_grpc.GatewayStub(self._channel(self.address))
        call = stub.AskStream(ask_request(query, **options), timeout=timeout or self.timeout)
        try:
            async for event in call:
                yield event
        except grpc.aio.AioRpcError as exc:
            raise _error(exc, self.address) from None
        finally:
            call.cancel()

    async def feedback(
        self, request_id: str, score: float, comment: str = "", *, timeout: float | None = None
    ) -> gateway_pb2.FeedbackResponse:
        """Record how good the answer of ``request_id`` was (score in [0, 1], 1 = correct)."""
        stub = gateway_pb2_grpc.GatewayStub(self._channel(self.address))
        request = gateway_pb2.FeedbackRequest(request_id=request_id, score=score, comment=comment)
        try:
            return await stub.Feedback(request, timeout=timeout or self.timeout)
        except grpc.aio.AioRpcError as exc:
            raise _error(exc, self.address) from None

    async def route(
        self, query: str, *, top_n: int = 0, routing: str | None = None, timeout: float | None = None
    ) -> router_pb2.RouteResponse:
        """The router's decision for ``query`` (cluster, ranked models), at ``router_address``."""
        address = self._router_address()
        stub = router_pb2_grpc.RouterStub(self._channel(address))
        request = router_pb2.RouteRequest(query=query, top_n=top_n, strategy=ROUTING_STRATEGY.value(_enum_name(routing)))
        try:
            return await stub.Route(request, timeout=timeout or self.timeout)
        except grpc.aio.AioRpcError as exc:
            raise _error(exc, address) from None

    async def close(self) -> None:
        channels, self._channels = list(self._channels.values()), {}
        for channel in channels:
            await channel.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class Client(_Base):
    """The API over blocking gRPC; use ``with`` or call :meth:`close`."""

    def __init__(self, address: str | None = None, **options: Any):
        super().__init__(address, **options)
        self._channels: dict[str, grpc.Channel] = {}
        self._metadata: tuple[tuple[str, str], ...] | None = None
        if self._token and self.security.credentials() is None:
            self._metadata = auth_metadata(self._token)  # plaintext: gRPC sends call credentials over TLS only

    def _channel(self, address: str) -> grpc.Channel:
        if address not in self._channels:
            options = [
                ("grpc.max_receive_message_length", self.max_message_bytes),
                ("grpc.max_send_message_length", self.max_message_bytes),
            ]
            credentials = self.security.credentials()
            if credentials is None:
                self._channels[address] = grpc.insecure_channel(address, options=options)
            else:
                if self._token:
                    credentials = grpc.composite_channel_credentials(
                        credentials, grpc.access_token_call_credentials(self._token)
                    )
                self._channels[address] = grpc.secure_channel(address, credentials, options=options)
        return self._channels[address]

    def _call(self, address: str, method, request, timeout: float | None):
        try:
            return method(request, timeout=timeout or self.timeout, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise _error(exc, address) from None

    def ask(self, query: str, *, timeout: float | None = None, **options: Any) -> gateway_pb2.AskResponse:
        """The ensemble's answer; ``options`` as :func:`ask_request` takes them."""
        stub = gateway_pb2_grpc.GatewayStub(self._channel(self.address))
        return self._call(self.address, stub.Ask, ask_request(query, **options), timeout)

    def ask_stream(self, query: str, *, timeout: float | None = None, **options: Any) -> Iterator[gateway_pb2.AskEvent]:
        """The events of one AskStream call: route, samples and model failures as they happen, result."""
        stub = gateway_pb2_grpc.GatewayStub(self._channel(self.address))
        call = self._call(self.address, stub.AskStream, ask_request(query, **options), timeout)
        try:
            yield from call
        except grpc.RpcError as exc:
            raise _error(exc, self.address) from None
        finally:
            call.cancel()

    def feedback(
        self, request_id: str, score: float, comment: str = "", *, timeout: float | None = None
    ) -> gateway_pb2.FeedbackResponse:
        """Record how good the answer of ``request_id`` was (score in [0, 1], 1 = correct)."""
        stub = gateway_pb2_grpc.GatewayStub(self._channel(self.address))
        request = gateway_pb2.FeedbackRequest(request_id=request_id, score=score, comment=comment)
        return self._call(self.address, stub.Feedback, request, timeout)

    def route(
        self, query: str, *, top_n: int = 0, routing: str | None = None, timeout: float | None = None
    ) -> router_pb2.RouteResponse:
        """The router's decision for ``query`` (cluster, ranked models), at ``router_address``."""
        address = self._router_address()
        stub = router_pb2_grpc.RouterStub(self._channel(address))
        request = router_pb2.RouteRequest(query=query, top_n=top_n, strategy=ROUTING_STRATEGY.value(_enum_name(routing)))
        return self._call(address, stub.Route, request, timeout)

    def close(self) -> None:
        channels, self._channels = list(self._channels.values()), {}
        for channel in channels:
            channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
