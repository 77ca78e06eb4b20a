"""Transport security and auth on real servers over real gRPC: TLS, mutual TLS, bearer tokens, size limits."""

from __future__ import annotations

import json

import grpc
import pydantic
import pytest
from certs import TestCA
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from avengers.config.embedder_service import EmbedderServiceConfig
from avengers.config.embedding import EmbeddingConfig
from avengers.config.gateway_service import GatewayServiceConfig
from avengers.config.model_pool import ModelPoolConfig
from avengers.config.router_service import RouterServiceConfig
from avengers.config.server import ServerConfig
from avengers.config.store import StoreConfig
from avengers.config.voter_service import VoterServiceConfig
from avengers.core.embedding import create_embedder
from avengers.rpc.security import TokenAuthInterceptor, auth_metadata, channel_credentials, open_channel
from avengers.services.embedder.server import start_embedder_server
from avengers.services.gateway.server import start_gateway_server
from avengers.services.model_pool.server import start_model_pool_server
from avengers.services.router.server import start_router_server
from avengers.services.voter.server import start_voter_server
from avengers.v1 import (
    embedder_pb2,
    embedder_pb2_grpc,
    gateway_pb2,
    gateway_pb2_grpc,
    model_pool_pb2,
    model_pool_pb2_grpc,
    router_pb2,
    router_pb2_grpc,
    voter_pb2,
    voter_pb2_grpc,
)

TOKEN_ENV = "AVENGERS_TEST_GATEWAY_TOKEN"
NOWHERE = "127.0.0.1:1"  # dependencies nobody listens on: the gateway and router start without them


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    directory = tmp_path_factory.mktemp("pki")
    ca = TestCA(directory, "test-ca")
    other = TestCA(directory, "other-ca")
    return {
        "ca": ca,
        "server": ca.issue("server"),
        "client": ca.issue("client", client=True),
        "stranger": other.issue("stranger", client=True),
    }


@pytest.fixture(scope="module")
def hashing():
    return create_embedder(EmbeddingConfig(backend="hashing", dimension=32))


async def start_embedder(hashing, **server):
    config = EmbedderServiceConfig(server=ServerConfig(host="127.0.0.1", port=0, **server))
    return await start_embedder_server(config, embedder=hashing)


async def embed(channel: grpc.aio.Channel, text: str = "hello") -> embedder_pb2.EmbedResponse:
    stub = embedder_pb2_grpc.EmbedderStub(channel)
    return await stub.Embed(embedder_pb2.EmbedRequest(texts=[text]), timeout=10)


async def status_of(awaitable) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await awaitable
    return err.value.code(), err.value.details() or ""


# ------------------------------------------------------------------------------------------------------ TLS


async def test_tls_server_serves_clients_trusting_its_ca(pki, hashing):
    server = await start_embedder(hashing, tls_cert_file=str(pki["server"].cert), tls_key_file=str(pki["server"].key))
    try:
        address = f"127.0.0.1:{server.port}"
        async with open_channel(address, credentials=channel_credentials(pki["ca"].cert_file)) as channel:
            response = await embed(channel)
            assert response.dimension == 32
        # A client that does not trust the CA, and a plaintext client, get no service.
        async with open_channel(address, credentials=channel_credentials(pki["ca"].cert_file.with_name("other-ca.pem"))) as channel:
            code, _ = await status_of(embed(channel))
            assert code == grpc.StatusCode.UNAVAILABLE
        async with grpc.aio.insecure_channel(address) as channel:
            code, _ = await status_of(embed(channel))
            assert code == grpc.StatusCode.UNAVAILABLE
    finally:
        await server.stop(0)


async def test_mutual_tls_refuses_clients_without_a_certificate_from_its_ca(pki, hashing):
    server = await start_embedder(
        hashing,
        tls_cert_file=str(pki["server"].cert),
        tls_key_file=str(pki["server"].key),
        tls_client_ca_file=str(pki["ca"].cert_file),
    )
    try:
        address = f"127.0.0.1:{server.port}"
        ca = pki["ca"].cert_file
        with_cert = channel_credentials(ca, pki["client"].cert, pki["client"].key)
        async with open_channel(address, credentials=with_cert) as channel:
            assert (await embed(channel)).dimension == 32
        for credentials in (
            channel_credentials(ca),  # no client certificate
            channel_credentials(ca, pki["stranger"].cert, pki["stranger"].key),  # signed by another CA
        ):
            async with open_channel(address, credentials=credentials) as channel:
                code, _ = await status_of(embed(channel))
                assert code == grpc.StatusCode.UNAVAILABLE
    finally:
        await server.stop(0)


def test_tls_settings_are_checked_when_the_config_is_made(pki):
    with pytest.raises(pydantic.ValidationError, match="go together"):
        ServerConfig(tls_cert_file=str(pki["server"].cert))
    with pytest.raises(pydantic.ValidationError, match="needs tls_cert_file"):
        ServerConfig(tls_client_ca_file=str(pki["ca"].cert_file))
    with pytest.raises(ValueError, match="go together"):
        channel_credentials(pki["ca"].cert_file, cert_file=pki["client"].cert)


async def test_missing_or_non_pem_certificate_files_fail_the_start_with_the_path(pki, hashing, tmp_path):
    with pytest.raises(FileNotFoundError, match="TLS certificate file not found: .*nope.pem"):
        await start_embedder(hashing, tls_cert_file=str(tmp_path / "nope.pem"), tls_key_file=str(pki["server"].key))
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate")
    with pytest.raises(ValueError, match="is not PEM"):
        await start_embedder(hashing, tls_cert_file=str(garbage), tls_key_file=str(pki["server"].key))


# ----------------------------------------------------------------------------------------------- token auth


@pytest.fixture
async def guarded_gateway(monkeypatch):
    """A gateway requiring one of two bearer tokens (a rotation); its dependencies are down."""
    monkeypatch.setenv(TOKEN_ENV, "old-token, new-token")
    config = GatewayServiceConfig.model_validate(
        {
            "server": {"host": "127.0.0.1", "port": 0, "auth_token_env": TOKEN_ENV},
            "downstream": {"embedder": NOWHERE, "router": NOWHERE, "voter": NOWHERE, "model_pool": NOWHERE},
            "redis": {"url": None},
        }
    )
    server = await start_gateway_server(config)
    yield f"127.0.0.1:{server.port}"
    await server.stop(0)


async def ask(channel: grpc.aio.Channel, metadata=None, query: str = "") -> gateway_pb2.AskResponse:
    stub = gateway_pb2_grpc.GatewayStub(channel)
    return await stub.Ask(gateway_pb2.AskRequest(query=query), metadata=metadata, timeout=10)


async def test_token_auth_refuses_calls_without_the_right_token(guarded_gateway):
    async with grpc.aio.insecure_channel(guarded_gateway) as channel:
        cases = {
            None: TokenAuthInterceptor.MISSING,
            (("authorization", "Bearer wrong-token"),): TokenAuthInterceptor.INVALID,
            (("authorization", "Bearer old-token-and-more"),): TokenAuthInterceptor.INVALID,
            (("authorization", "Basic b2xkLXRva2Vu"),): TokenAuthInterceptor.MALFORMED,
            (("authorization", "Bearer "),): TokenAuthInterceptor.MALFORMED,
        }
        for metadata, message in cases.items():
            code, details = await status_of(ask(channel, metadata))
            assert (code, details) == (grpc.StatusCode.UNAUTHENTICATED, message), metadata


async def test_token_auth_lets_every_current_token_through(guarded_gateway):
    async with grpc.aio.insecure_channel(guarded_gateway) as channel:
        for token in ("old-token", "new-token"):
            # Past auth, the empty query is the gateway's own INVALID_ARGUMENT.
            code, details = await status_of(ask(channel, auth_metadata(token)))
            assert code == grpc.StatusCode.INVALID_ARGUMENT and "query is empty" in details
    async with open_channel(guarded_gateway, token="new-token") as channel:  # the channel adds the token
        code, _ = await status_of(ask(channel))
        assert code == grpc.StatusCode.INVALID_ARGUMENT


async def test_health_is_exempt_from_auth_and_reflection_is_not(guarded_gateway):
    async with grpc.aio.insecure_channel(guarded_gateway) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        response = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
        assert response.status == health_pb2.HealthCheckResponse.SERVING
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        call = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10)
        code, details = await status_of(call.read())
        assert (code, details) == (grpc.StatusCode.UNAUTHENTICATED, TokenAuthInterceptor.MISSING)
    async with open_channel(guarded_gateway, token="old-token") as channel:  # streaming calls carry it too
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        call = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10)
        response = await call.read()
        assert "avengers.v1.Gateway" in [s.name for s in response.list_services_response.service]


async def test_token_travels_as_call_credentials_over_tls(pki, hashing, monkeypatch):
    monkeypatch.setenv(TOKEN_ENV, "s3cret")
    server = await start_embedder(
        hashing, tls_cert_file=str(pki["server"].cert), tls_key_file=str(pki["server"].key), auth_token_env=TOKEN_ENV
    )
    try:
        address, credentials = f"127.0.0.1:{server.port}", channel_credentials(pki["ca"].cert_file)
        async with open_channel(address, credentials=credentials, token="s3cret") as channel:
            assert (await embed(channel)).dimension == 32
        async with open_channel(address, credentials=credentials) as channel:
            code, _ = await status_of(embed(channel))
            assert code == grpc.StatusCode.UNAUTHENTICATED
    finally:
        await server.stop(0)


async def test_auth_configured_without_a_token_refuses_to_start(hashing, monkeypatch):
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    with pytest.raises(ValueError, match=f"\\${TOKEN_ENV} is unset or empty"):
        await start_embedder(hashing, auth_token_env=TOKEN_ENV)
    monkeypatch.setenv(TOKEN_ENV, " , ")
    with pytest.raises(ValueError, match="unset or empty"):
        await start_embedder(hashing, auth_token_env=TOKEN_ENV)


# ------------------------------------------------------------------------------------------ request sizes

LIMIT = 4096
BIG = "x" * (2 * LIMIT)


def small_server(**extra) -> dict:
    return {"host": "127.0.0.1", "port": 0, "max_message_bytes": LIMIT, **extra}


async def assert_too_large(port: int, call) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        code, details = await status_of(call(channel))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, details
        # The service is still there for requests within the limit.
        health = health_pb2_grpc.HealthStub(channel)
        assert (await health.Check(health_pb2.HealthCheckRequest(), timeout=10)).status in (
            health_pb2.HealthCheckResponse.SERVING,
            health_pb2.HealthCheckResponse.NOT_SERVING,
        )


async def test_oversized_request_to_the_embedder_is_resource_exhausted(hashing):
    server = await start_embedder_server(EmbedderServiceConfig(server=small_server()), embedder=hashing)
    try:
        await assert_too_large(server.port, lambda ch: embed(ch, BIG))
    finally:
        await server.stop(0)


async def test_oversized_request_to_the_router_is_resource_exhausted(tmp_path):
    config = RouterServiceConfig(
        server=small_server(), store=StoreConfig(qdrant_path=str(tmp_path / "qdrant")), embedder_address=NOWHERE
    )
    server = await start_router_server(config)
    try:
        stub = lambda ch: router_pb2_grpc.RouterStub(ch).Route(router_pb2.RouteRequest(query=BIG), timeout=10)
        await assert_too_large(server.port, stub)
    finally:
        await server.stop(0)


async def test_oversized_request_to_the_voter_is_resource_exhausted():
    server = await start_voter_server(VoterServiceConfig(server=small_server(), embedder_address=NOWHERE))
    try:
        request = voter_pb2.VoteRequest(candidates=[voter_pb2.Candidate(text=BIG, model="m")])
        await assert_too_large(server.port, lambda ch: voter_pb2_grpc.VoterStub(ch).Vote(request, timeout=10))
    finally:
        await server.stop(0)


async def test_oversized_request_to_the_model_pool_is_resource_exhausted(tmp_path):
    labels = tmp_path / "labels.jsonl"
    labels.write_text(json.dumps({"id": "1", "dataset": "d", "split": "test", "query": "q", "scores": {"replay-7b": 1.0}}) + "\n")
    config = ModelPoolConfig.model_validate(
        {
            "server": small_server(),
            "models": [{"name": "replay-7b", "backend": "replay", "replay": {"labels_path": str(labels)}}],
        }
    )
    server = await start_model_pool_server(config)
    try:
        request = model_pool_pb2.GenerateRequest(model="replay-7b", prompt=BIG)
        await assert_too_large(server.port, lambda ch: model_pool_pb2_grpc.ModelPoolStub(ch).Generate(request, timeout=10))
    finally:
        await server.stop(0)


async def test_oversized_request_to_the_gateway_is_resource_exhausted():
    config = GatewayServiceConfig.model_validate(
        {
            "server": small_server(),
            "downstream": {"embedder": NOWHERE, "router": NOWHERE, "voter": NOWHERE, "model_pool": NOWHERE},
            "redis": {"url": None},
        }
    )
    server = await start_gateway_server(config)
    try:
        await assert_too_large(server.port, lambda ch: ask(ch, query=BIG))
    finally:
        await server.stop(0)
