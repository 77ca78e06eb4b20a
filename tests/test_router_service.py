"""Router service over real gRPC, on routers published to embedded Qdrant."""

from __future__ import annotations

import asyncio
import contextlib
import signal

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from qdrant_client import QdrantClient
from routing_data import fit_test_router
from serve_process import start_serve, stop_serve

from avengers.config.embedding import EmbeddingConfig
from avengers.config.router_service import RouterServiceConfig
from avengers.config.store import StoreConfig
from avengers.core.embedding import create_embedder
from avengers.services.embedder.server import start_embedder_server
from avengers.services.router.server import start_router_server
from avengers.stores import create_store
from avengers.v1 import common_pb2, router_pb2, router_pb2_grpc
from conftest import closed_port

NEAREST, SOFT = router_pb2.ROUTING_STRATEGY_NEAREST, router_pb2.ROUTING_STRATEGY_SOFT
QUERIES = {
    "model-math": "What is 17 plus 25?",
    "model-code": "Write a Python function that reverses a linked list.",
    "model-history": "Who was the king of England in the year 1200?",
}


@pytest.fixture(scope="module")
def minilm():
    return create_embedder(EmbeddingConfig())


@pytest.fixture(scope="module")
def hashing():
    return create_embedder(EmbeddingConfig(backend="hashing", dimension=64))


@pytest.fixture(scope="module")
def minilm_router(minilm):
    return fit_test_router(minilm, k=4)  # one cluster per topic, plus one for a kind of code question


@pytest.fixture(scope="module")
def hashing_router(hashing):
    return fit_test_router(hashing, k=3)


def store_config(tmp_path, **extra) -> StoreConfig:
    return StoreConfig(qdrant_path=str(tmp_path / "qdrant"), **extra)


def publish(tmp_path, artifact, activate: bool = True) -> str:
    with create_store(store_config(tmp_path)) as store:
        version = store.publish(artifact)
        if activate:
            store.activate(version)
        return version


def router_config(tmp_path, embedder_address: str | None = None, **store_extra) -> RouterServiceConfig:
    return RouterServiceConfig(
        store=store_config(tmp_path, **store_extra), poll_interval_seconds=0, embedder_address=embedder_address
    )


class Client:
    def __init__(self, port: int):
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        self.stub = router_pb2_grpc.RouterStub(self.channel)

    async def route(self, **fields) -> router_pb2.RouteResponse:
        return await self.stub.Route(router_pb2.RouteRequest(**fields), timeout=30)

    async def info(self) -> router_pb2.RouterInfo:
        return await self.stub.GetRouterInfo(router_pb2.GetRouterInfoRequest(), timeout=30)

    async def health(self) -> int:
        stub = health_pb2_grpc.HealthStub(self.channel)
        response = await stub.Check(health_pb2.HealthCheckRequest(service="avengers.v1.Router"), timeout=10)
        return response.status

    async def status_of(self, **fields) -> tuple[grpc.StatusCode, str]:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await self.route(**fields)
        return err.value.code(), err.value.details()


@contextlib.asynccontextmanager
async def serving_router(config: RouterServiceConfig):
    """A router service on a free port and a client for it; both closed on exit."""
    router = await start_router_server(config, "127.0.0.1:0")
    client = Client(router.port)
    try:
        yield router, client
    finally:
        await client.channel.close()
        await router.stop(0)


@pytest.fixture
async def minilm_stack(tmp_path, minilm, minilm_router, monkeypatch):
    """Embedder service (MiniLM) + router service reading the published MiniLM router."""
    publish(tmp_path, minilm_router)
    embedder = await start_embedder_server(address="127.0.0.1:0", embedder=minilm)
    async with serving_router(router_config(tmp_path, f"127.0.0.1:{embedder.port}")) as stack:
        yield stack
    await embedder.stop(0)


def best_model(artifact, embedder, query: str) -> str:
    """What routing ``query`` in process gives (the hashing embedder is too weak to expect the specialist)."""
    return artifact.models[artifact.router().route(embedder.encode([query])[0]).models[0]]


def vector(values) -> common_pb2.Vector:
    return common_pb2.Vector(values=np.asarray(values, dtype=np.float32).tolist())


async def test_route_by_query_picks_the_specialist(minilm_stack, minilm_router):
    _, client = minilm_stack
    for best, query in QUERIES.items():
        response = await client.route(query=query, strategy=NEAREST)
        assert response.router_version == minilm_router.version
        assert response.models[0].model == best and response.models[0].rank == 0
        assert [m.rank for m in response.models] == [0, 1, 2]  # top_n 0: all models
        assert response.strategy == NEAREST
        assert len(response.clusters) == 1 and response.clusters[0].cluster == response.cluster
        assert response.clusters[0].weight == 1.0


async def test_route_by_embedding_matches_query(minilm_stack, minilm):
    _, client = minilm_stack
    query = QUERIES["model-code"]
    by_query = await client.route(query=query, top_n=2)
    by_embedding = await client.route(embedding=vector(minilm.encode([query])[0]), top_n=2)
    assert by_embedding.cluster == by_query.cluster
    assert [m.model for m in by_embedding.models] == [m.model for m in by_query.models]
    assert len(by_embedding.models) == 2
    assert by_embedding.distance == pytest.approx(by_query.distance, abs=1e-4)
    unnormalised = await client.route(embedding=vector(3.0 * minilm.encode([query])[0]), top_n=2)
    assert unnormalised.cluster == by_query.cluster  # scaled to unit norm


async def test_soft_versus_nearest(minilm_stack, minilm, minilm_router):
    _, client = minilm_stack
    query = QUERIES["model-history"]
    embedding = minilm.encode([query])[0]
    soft = await client.route(query=query, strategy=SOFT, top_k=3, beta=4.0)
    assert soft.strategy == SOFT
    assert len(soft.clusters) == 3
    assert sum(c.weight for c in soft.clusters) == pytest.approx(1.0)
    assert [c.distance for c in soft.clusters] == sorted(c.distance for c in soft.clusters)
    expected = minilm_router.router().route(embedding, strategy="soft", top_k=3, beta=4.0, top_n=3)
    assert [m.model for m in soft.models] == [minilm_router.models[i] for i in expected.models]
    assert [m.score for m in soft.models] == pytest.approx(expected.scores, rel=1e-4)
    nearest = await client.route(query=query, strategy=NEAREST)
    assert nearest.cluster == soft.cluster
    assert [m.score for m in nearest.models] == pytest.approx(
        minilm_router.cluster_scores.scores[nearest.cluster][[minilm_router.models.index(m.model) for m in nearest.models]]
    )
    default = await client.route(query=query, top_n=3)  # unspecified: as fitted (the study's default, hknn)
    assert default.strategy == router_pb2.ROUTING_STRATEGY_HKNN and default.cluster == nearest.cluster
    expected = minilm_router.router().route(embedding, top_n=3)
    assert [m.model for m in default.models] == [minilm_router.models[i] for i in expected.models]
    assert [m.score for m in default.models] == pytest.approx(expected.scores, rel=1e-4)


async def test_router_info(minilm_stack, minilm_router):
    _, client = minilm_stack
    info = await client.info()
    assert info.router_version == minilm_router.version
    assert list(info.models) == minilm_router.models
    assert info.num_clusters == 4
    assert (info.embedder_model, info.dimension) == ("sentence-transformers/all-MiniLM-L6-v2", 384)
    assert info.fit_params["clustering.k"] == "4" and info.fit_params["clustering.algorithm"] == "kmeans"
    assert info.fit_params["routing.strategy"] == "hknn"
    assert list(info.strategies) == ["hknn", "nearest", "soft"] and not info.has_costs
    assert info.created_at == minilm_router.created_at
    assert await client.health() == health_pb2.HealthCheckResponse.SERVING


async def test_bad_input_is_invalid_argument(minilm_stack, minilm):
    _, client = minilm_stack
    good = minilm.encode(["hello"])[0]
    cases = [
        ({}, "set a non-empty query or an embedding"),
        ({"query": ""}, "non-empty query"),
        ({"query": "   "}, "non-empty query"),
        ({"query": "x" * 9000}, "9000 characters"),
        ({"embedding": vector(good[:100])}, "dimension 100"),
        ({"embedding": vector(np.r_[good[:-1], np.nan])}, "non-finite"),
        ({"embedding": vector(np.r_[good[:-1], np.inf])}, "non-finite"),
        ({"embedding": vector(np.zeros(384))}, "zero vector"),
        ({"query": "hi", "top_k": 5, "strategy": SOFT}, "top_k=5"),
        ({"query": "hi", "top_n": 4}, "top_n=4"),
        ({"query": "hi", "beta": -1.0, "strategy": SOFT}, "beta"),
        ({"query": "hi", "beta": float("nan"), "strategy": SOFT}, "beta"),
        ({"query": "hi", "beta": float("inf"), "strategy": SOFT}, "beta"),
        ({"query": "hi", "strategy": 99}, "unknown value 99"),
    ]
    for fields, message in cases:
        code, details = await client.status_of(**fields)
        assert code == grpc.StatusCode.INVALID_ARGUMENT, (fields, details)
        assert message in details, (fields, details)
    assert (await client.route(query="hi", top_k=4, top_n=3, beta=0.0, strategy=SOFT)).models  # the limits are fine


async def test_embedder_down_is_unavailable_but_embeddings_still_route(tmp_path, minilm, minilm_router):
    publish(tmp_path, minilm_router)
    async with serving_router(router_config(tmp_path, f"127.0.0.1:{closed_port()}")) as (_, client):
        code, details = await client.status_of(query=QUERIES["model-math"])
        assert code == grpc.StatusCode.UNAVAILABLE and "Embedder service" in details
        response = await client.route(embedding=vector(minilm.encode([QUERIES["model-math"]])[0]))
        assert response.models[0].model == "model-math"


async def test_store_unavailable_keeps_serving_last_snapshot(tmp_path, hashing, hashing_router, monkeypatch):
    monkeypatch.delenv("AVENGERS_EMBEDDER_ADDR", raising=False)
    publish(tmp_path, hashing_router)
    async with serving_router(router_config(tmp_path, embedded_lock_wait_seconds=0.2)) as (router, client):
        holder = QdrantClient(path=str(tmp_path / "qdrant"))  # another process holds the embedded store
        try:
            result = await router.reload()
            assert result.version == hashing_router.version and not result.changed
            assert "held by another process" in result.error
            response = await client.route(query=QUERIES["model-math"])  # in-process hashing embedder
            assert response.router_version == hashing_router.version
            assert response.models[0].model == best_model(hashing_router, hashing, QUERIES["model-math"])
            assert (await client.info()).router_version == hashing_router.version
            assert await client.health() == health_pb2.HealthCheckResponse.SERVING
        finally:
            holder.close()
        result = await router.reload()
        assert result.error is None and result.version == hashing_router.version


async def test_no_router_at_start_then_recovers(tmp_path, hashing, hashing_router, monkeypatch):
    monkeypatch.delenv("AVENGERS_EMBEDDER_ADDR", raising=False)
    async with serving_router(router_config(tmp_path)) as (router, client):  # empty store: nothing active
        assert await client.health() == health_pb2.HealthCheckResponse.NOT_SERVING
        code, details = await client.status_of(query="anything")
        assert code == grpc.StatusCode.UNAVAILABLE and "no router is active" in details
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await client.info()
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        publish(tmp_path, hashing_router)
        result = await router.reload()
        assert result.changed and result.version == hashing_router.version
        assert await client.health() == health_pb2.HealthCheckResponse.SERVING
        response = await client.route(query=QUERIES["model-code"])
        assert response.models[0].model == best_model(hashing_router, hashing, QUERIES["model-code"])


async def test_unreachable_qdrant_server_at_start():
    dead = RouterServiceConfig(store=StoreConfig(qdrant_url=f"http://127.0.0.1:{closed_port()}", timeout_seconds=2))
    async with serving_router(dead) as (_, client):
        assert await client.health() == health_pb2.HealthCheckResponse.NOT_SERVING
        code, details = await client.status_of(query="anything")
        assert code == grpc.StatusCode.UNAVAILABLE and "cannot check the active router" in details


async def test_embedder_mismatch(tmp_path, minilm, minilm_router, hashing_router):
    """A router fitted with another embedder than the one served: its queries fail clearly, and a new
    version whose embedder does not match is not swapped in over a working one."""
    publish(tmp_path, hashing_router)
    embedder = await start_embedder_server(address="127.0.0.1:0", embedder=minilm)
    try:
        async with serving_router(router_config(tmp_path, f"127.0.0.1:{embedder.port}")) as (router, client):
            code, details = await client.status_of(query=QUERIES["model-math"])
            assert code == grpc.StatusCode.FAILED_PRECONDITION and "hashing-64" in details and "all-MiniLM" in details
            assert (await client.route(embedding=vector(np.ones(64)))).router_version == hashing_router.version

            publish(tmp_path, minilm_router)
            assert (await router.reload()).version == minilm_router.version  # matches the embedder: swapped in
            assert (await client.route(query=QUERIES["model-math"])).models[0].model == "model-math"

            publish(tmp_path, hashing_router)  # back to a mismatching one: refused, the working one stays
            result = await router.reload()
            assert result.version == minilm_router.version and "not served" in result.error
            response = await client.route(query=QUERIES["model-math"])
            assert response.router_version == minilm_router.version
    finally:
        await embedder.stop(0)


async def wait_for_version(client: Client, version: str) -> None:
    for _ in range(300):  # bounded: about 30 s at most
        if (await client.info()).router_version == version:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"the router never served {version}")


async def test_polling_picks_up_a_new_version(tmp_path, hashing, hashing_router, monkeypatch):
    monkeypatch.delenv("AVENGERS_EMBEDDER_ADDR", raising=False)
    publish(tmp_path, hashing_router)
    config = router_config(tmp_path).model_copy(update={"poll_interval_seconds": 0.1})
    async with serving_router(config) as (_, client):
        newer = fit_test_router(hashing, k=4, seed=3)
        publish(tmp_path, newer)
        await wait_for_version(client, newer.version)
        assert (await client.route(query="Solve for x: 3x + 2 = 11")).router_version == newer.version


async def test_avengers_serve_router_reloads_on_sighup(tmp_path, hashing, hashing_router, monkeypatch):
    monkeypatch.delenv("AVENGERS_EMBEDDER_ADDR", raising=False)
    publish(tmp_path, hashing_router)
    (tmp_path / "router.yaml").write_text(
        f"router:\n  store:\n    qdrant_path: {tmp_path / 'qdrant'}\n  poll_interval_seconds: 0\n"
    )
    process, port = await start_serve(
        "router", "--port", "0", "--host", "127.0.0.1", "--config", str(tmp_path / "router.yaml"), "--config-key", "router"
    )
    client = Client(port)
    try:
        assert (await client.info()).router_version == hashing_router.version
        newer = fit_test_router(hashing, k=2, seed=5)
        publish(tmp_path, newer)  # the serving process lets go of the embedded store between reloads
        assert (await client.info()).router_version == hashing_router.version  # no polling: still the old one
        process.send_signal(signal.SIGHUP)
        await wait_for_version(client, newer.version)
        assert (await client.route(query="What is 2 plus 2?")).router_version == newer.version
    finally:
        await client.channel.close()
        assert await stop_serve(process) == 0
