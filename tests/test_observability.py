"""Metrics and tracing on real services over real gRPC: /metrics contents, status codes, one trace across services."""

from __future__ import annotations

import asyncio
import json
import socket
import urllib.request

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from routing_data import fit_test_router, make_labels

from avengers.config.embedder_service import EmbedderServiceConfig
from avengers.config.embedding import EmbeddingConfig
from avengers.config.gateway_service import GatewayServiceConfig
from avengers.config.model_pool import ModelPoolConfig
from avengers.config.router_service import RouterServiceConfig
from avengers.config.server import ServerConfig
from avengers.config.store import StoreConfig
from avengers.config.voter_service import VoterServiceConfig
from avengers.core.embedding import create_embedder
from avengers.observability import metrics
from avengers.observability.tracing import (
    client_interceptors,
    configure_tracing,
    disable_tracing,
    tracing_enabled,
)
from avengers.rpc.security import auth_metadata, open_channel
from avengers.services.embedder.server import start_embedder_server
from avengers.services.gateway.server import start_gateway_server
from avengers.services.model_pool.server import start_model_pool_server
from avengers.services.router.server import start_router_server
from avengers.services.voter.server import start_voter_server
from avengers.stores import create_store
from avengers.v1 import (
    common_pb2,
    embedder_pb2,
    embedder_pb2_grpc,
    gateway_pb2,
    gateway_pb2_grpc,
    router_pb2,
    router_pb2_grpc,
)
from conftest import free_port

EMBEDDER = "avengers.v1.Embedder"


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture(scope="module")
def hashing():
    return create_embedder(EmbeddingConfig(backend="hashing", dimension=32))


async def start_embedder(hashing, **server):
    config = EmbedderServiceConfig(server=ServerConfig(host="127.0.0.1", port=0, **server))
    return await start_embedder_server(config, embedder=hashing)


async def embed(channel, *texts: str, metadata=None):
    stub = embedder_pb2_grpc.EmbedderStub(channel)
    return await stub.Embed(embedder_pb2.EmbedRequest(texts=list(texts)), metadata=metadata, timeout=10)


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


# ------------------------------------------------------------------------------------------------- metrics


async def test_metrics_endpoint_counts_calls_by_status_and_times_them(hashing):
    port = free_port()
    ok = {"service": EMBEDDER, "method": "Embed", "code": "OK"}
    bad = {"service": EMBEDDER, "method": "Embed", "code": "INVALID_ARGUMENT"}
    timed = {"service": EMBEDDER, "method": "Embed"}
    before = (
        sample("avengers_grpc_requests_total", **ok),
        sample("avengers_grpc_requests_total", **bad),
        sample("avengers_grpc_request_seconds_count", **timed),
        sample("avengers_embedder_batch_texts_count"),
    )
    server = await start_embedder(hashing, metrics_port=port)
    try:
        assert server.metrics_port == port
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            await asyncio.gather(*(embed(channel, f"text {i}") for i in range(3)))
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await embed(channel, "   ")
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        scraped = await asyncio.to_thread(scrape, port)
    finally:
        await server.stop(0)

    def value(name, **labels):
        return scraped.get((name, tuple(sorted(labels.items()))), 0.0)

    assert value("avengers_grpc_requests_total", **ok) - before[0] == 3
    assert value("avengers_grpc_requests_total", **bad) - before[1] == 1
    assert value("avengers_grpc_request_seconds_count", **timed) - before[2] == 4
    assert value("avengers_grpc_request_seconds_bucket", le="+Inf", **timed) - before[2] == 4
    assert value("avengers_grpc_requests_in_flight", **timed) == 0
    assert value("avengers_embedder_batch_texts_count") - before[3] >= 1  # the batcher's own metric, same endpoint


async def test_services_in_one_process_share_the_endpoint_and_a_taken_port_is_not_fatal(hashing):
    port = free_port()
    first = await start_embedder(hashing, metrics_port=port)
    second = await start_embedder(hashing, metrics_port=port)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        third = await start_embedder(hashing, metrics_port=taken.getsockname()[1])
    try:
        assert first.metrics_port == second.metrics_port == port
        assert third.metrics_port is None  # logged; the service itself serves
        async with grpc.aio.insecure_channel(f"127.0.0.1:{third.port}") as channel:
            assert (await embed(channel, "still serving")).dimension == 32
    finally:
        for server in (first, second, third):
            await server.stop(0)


async def test_metrics_port_zero_serves_no_endpoint_and_env_sets_the_default(hashing, monkeypatch):
    server = await start_embedder(hashing, metrics_port=0)
    await server.stop(0)
    assert server.metrics_port is None
    monkeypatch.setenv(metrics.METRICS_PORT_ENV, "9311")
    assert metrics.metrics_port_from(None) == 9311
    assert metrics.metrics_port_from(0) == 0
    monkeypatch.delenv(metrics.METRICS_PORT_ENV)
    assert metrics.metrics_port_from(None) == metrics.DEFAULT_METRICS_PORT
    monkeypatch.setenv(metrics.METRICS_PORT_ENV, "http")
    with pytest.raises(ValueError, match="not a port number"):
        metrics.metrics_port_from(None)


async def test_refused_and_streaming_calls_are_counted(hashing, monkeypatch):
    monkeypatch.setenv("AVENGERS_TEST_TOKEN", "t0ken")
    server = await start_embedder(hashing, auth_token_env="AVENGERS_TEST_TOKEN")
    refused = {"service": EMBEDDER, "method": "Embed", "code": "UNAUTHENTICATED"}
    watched = {"service": "grpc.health.v1.Health", "method": "Watch", "code": "CANCELLED"}
    before = sample("avengers_grpc_requests_total", **refused), sample("avengers_grpc_requests_total", **watched)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            for _ in range(2):
                with pytest.raises(grpc.aio.AioRpcError):
                    await embed(channel, "no token")
            await embed(channel, "with token", metadata=auth_metadata("t0ken"))
            watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=EMBEDDER))
            first = await watch.read()
            assert first.status == health_pb2.HealthCheckResponse.SERVING
            watch.cancel()
        for _ in range(100):  # the server notices the cancellation asynchronously
            if sample("avengers_grpc_requests_total", **watched) > before[1]:
                break
            await asyncio.sleep(0.05)
    finally:
        await server.stop(0)
    assert sample("avengers_grpc_requests_total", **refused) - before[0] == 2
    assert sample("avengers_grpc_requests_total", **watched) - before[1] == 1


def test_metric_helpers_return_the_registered_metric_and_record_routes():
    a = metrics.counter("avengers_test_helper_things", "Things", ["kind"])
    assert metrics.counter("avengers_test_helper_things", "Things", ["kind"]) is a
    with pytest.raises(TypeError, match="already registered as a Counter"):
        metrics.gauge("avengers_test_helper_things", "Things")
    before = sample("avengers_routed_model_total", component="test", cluster="3", model="m-7b")
    metrics.record_route("test", 3, "m-7b")
    assert sample("avengers_routed_model_total", component="test", cluster="3", model="m-7b") - before == 1


# ------------------------------------------------------------------------------------------------- tracing


@pytest.fixture
def spans():
    """Tracing on with an in-memory exporter for one test; off again afterwards."""
    exporter = InMemorySpanExporter()
    assert configure_tracing("avengers-test", exporter)
    yield exporter
    disable_tracing()
    assert not tracing_enabled()


async def test_one_trace_spans_the_client_the_router_and_the_embedder(spans, hashing, tmp_path):
    store_config = StoreConfig(qdrant_path=str(tmp_path / "qdrant"))
    with create_store(store_config) as store:
        store.activate(store.publish(fit_test_router(hashing, k=3)))
    embedder = await start_embedder(hashing)
    router = await start_router_server(
        RouterServiceConfig(
            server=ServerConfig(host="127.0.0.1", port=0),
            store=store_config,
            poll_interval_seconds=0,
            embedder_address=f"127.0.0.1:{embedder.port}",
        )
    )
    try:
        async with open_channel(f"127.0.0.1:{router.port}") as channel:
            with trace.get_tracer("test").start_as_current_span("client request") as root:
                response = await router_pb2_grpc.RouterStub(channel).Route(
                    router_pb2.RouteRequest(query="What is 12 plus 30?"), timeout=30
                )
    finally:
        await router.stop(0)
        await embedder.stop(0)
    assert response.models
    trace_id = root.get_span_context().trace_id
    finished = [s for s in spans.get_finished_spans() if s.context.trace_id == trace_id]
    by_kind = {(s.kind, s.name): s for s in finished}
    client_route = by_kind[(SpanKind.CLIENT, "avengers.v1.Router/Route")]
    server_route = by_kind[(SpanKind.SERVER, "avengers.v1.Router/Route")]
    client_embed = by_kind[(SpanKind.CLIENT, "avengers.v1.Embedder/Embed")]
    server_embed = by_kind[(SpanKind.SERVER, "avengers.v1.Embedder/Embed")]
    # client -> router server -> router's embedder client -> embedder server: one trace, parent by parent.
    assert client_route.parent.span_id == root.get_span_context().span_id
    assert server_route.parent.span_id == client_route.context.span_id
    assert client_embed.parent.span_id == server_route.context.span_id
    assert server_embed.parent.span_id == client_embed.context.span_id
    assert server_route.attributes["rpc.grpc.status_code"] == 0
    assert server_embed.attributes["rpc.service"] == EMBEDDER
    model = response.models[0].model
    assert sample("avengers_routed_model_total", component="router", cluster=str(response.cluster), model=model) >= 1


async def test_one_trace_spans_an_ask_through_every_service(spans, hashing, tmp_path):
    labels = make_labels(per_topic=6)
    pool_labels = tmp_path / "pool.jsonl"
    pool_labels.write_text("".join(
        json.dumps({"id": r.id, "dataset": r.dataset, "split": "test", "query": r.query, "scores": r.scores}) + "\n"
        for r in labels.rows
    ))  # fmt: skip
    store_config = StoreConfig(qdrant_path=str(tmp_path / "qdrant"))
    with create_store(store_config) as store:
        store.activate(store.publish(fit_test_router(hashing, k=3)))
    loopback = ServerConfig(host="127.0.0.1", port=0)
    servers = []
    try:
        servers.append(embedder := await start_embedder(hashing))
        embedder_address = f"127.0.0.1:{embedder.port}"
        servers.append(router := await start_router_server(RouterServiceConfig(
            server=loopback, store=store_config, poll_interval_seconds=0, embedder_address=embedder_address
        )))  # fmt: skip
        servers.append(voter := await start_voter_server(VoterServiceConfig(server=loopback, embedder_address=embedder_address)))
        servers.append(pool := await start_model_pool_server(ModelPoolConfig.model_validate({
            "server": loopback.to_dict(),
            "models": [{"name": m, "backend": "replay", "replay": {"labels_path": str(pool_labels)}} for m in labels.models],
        })))  # fmt: skip
        servers.append(gateway := await start_gateway_server(GatewayServiceConfig.model_validate({
            "server": loopback.to_dict(), "redis": {"url": None},
            "downstream": {"embedder": embedder_address, "router": f"127.0.0.1:{router.port}",
                           "voter": f"127.0.0.1:{voter.port}", "model_pool": f"127.0.0.1:{pool.port}"},
        })))  # fmt: skip
        row = labels.rows[0]
        async with open_channel(f"127.0.0.1:{gateway.port}") as channel:
            with trace.get_tracer("test").start_as_current_span("client request") as root:
                response = await gateway_pb2_grpc.GatewayStub(channel).Ask(
                    gateway_pb2.AskRequest(query=row.query, task_id=row.id, sampling=common_pb2.SamplingParams(n=3)),
                    timeout=30,
                )
    finally:
        for server in reversed(servers):
            await server.stop(0)
    assert response.answer
    trace_id = root.get_span_context().trace_id
    in_trace = [s for s in spans.get_finished_spans() if s.context.trace_id == trace_id]
    servers_seen = {s.name for s in in_trace if s.kind == SpanKind.SERVER}
    assert servers_seen >= {
        "avengers.v1.Gateway/Ask", "avengers.v1.Router/Route", "avengers.v1.Embedder/Embed",
        "avengers.v1.ModelPool/Generate", "avengers.v1.Voter/Vote",
    }  # fmt: skip
    by_id = {s.context.span_id: s for s in in_trace}
    ask = next(s for s in in_trace if s.kind == SpanKind.SERVER and s.name == "avengers.v1.Gateway/Ask")
    for span in in_trace:  # every server span below the gateway's hangs under it, through a client span
        if span.kind == SpanKind.SERVER and span is not ask:
            ancestor = span
            while ancestor.parent is not None and ancestor.parent.span_id in by_id and ancestor is not ask:
                ancestor = by_id[ancestor.parent.span_id]
            assert ancestor is ask, span.name


async def test_failed_calls_mark_their_spans_as_errors_and_health_is_not_traced(spans, hashing):
    server = await start_embedder(hashing)
    try:
        async with open_channel(f"127.0.0.1:{server.port}") as channel:
            with pytest.raises(grpc.aio.AioRpcError):
                await embed(channel, "")
            await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    finally:
        await server.stop(0)
    finished = spans.get_finished_spans()
    failed = [s for s in finished if s.name == "avengers.v1.Embedder/Embed" and s.kind == SpanKind.SERVER]
    assert len(failed) == 1
    assert not failed[0].status.is_ok
    assert failed[0].status.description.startswith("INVALID_ARGUMENT")
    assert failed[0].attributes["rpc.grpc.status_code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert not [s for s in finished if s.kind == SpanKind.SERVER and s.name.startswith("grpc.health")]


async def test_servers_and_channels_made_while_tracing_is_off_trace_nothing(hashing):
    configure_tracing("avengers-test", InMemorySpanExporter())
    disable_tracing()  # the SDK provider stays installed (one per process), but nothing is exported any more
    assert configure_tracing(exporter="none") is False
    assert client_interceptors() == []
    server = await start_embedder(hashing)
    late = InMemorySpanExporter()
    try:
        async with open_channel(f"127.0.0.1:{server.port}") as channel:
            configure_tracing("avengers-test", late)  # on again, but this server and channel have no interceptors
            await embed(channel, "quiet")
    finally:
        await server.stop(0)
        disable_tracing()
    assert late.get_finished_spans() == ()
    with pytest.raises(ValueError, match="unknown tracing exporter"):
        configure_tracing(exporter="zipkin")
