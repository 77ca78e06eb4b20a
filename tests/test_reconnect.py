"""Reconnection after an outage (issue 13): once Redis or the model pool is back, the gateway uses it again
within seconds — not after a backoff that grew with the outage (gRPC's reconnect backoff reached 7-11 s; each
stale pooled Redis connection failed once and restarted a 5 s fail-fast window: 10-28 s).

A fault test, not a benchmark: after the dependency is back, Asks are polled every 0.1 s and must succeed
within RESUME_BOUND_SECONDS (target 3 s; the bound leaves room for a loaded CI machine); the measured time is
printed. Everything is on 127.0.0.1; the outages are a few seconds long and the loops are bounded.
"""

from __future__ import annotations

import asyncio
import random
import time

import grpc
import pytest
from redis_server import RedisServer

from avengers.config.clustering import ClusteringConfig
from avengers.config.embedder_service import EmbedderServiceConfig
from avengers.config.embedding import EmbeddingConfig
from avengers.config.gateway_service import GatewayServiceConfig
from avengers.config.model_pool import ModelPoolConfig
from avengers.config.router_service import RouterServiceConfig
from avengers.config.store import StoreConfig
from avengers.config.voter_service import VoterServiceConfig
from avengers.core.embedding import create_embedder
from avengers.core.fit import fit_router_on_embeddings
from avengers.core.labels import read_labels
from avengers.services.embedder.server import start_embedder_server
from avengers.services.gateway.server import start_gateway_server
from avengers.services.model_pool.server import start_model_pool_server
from avengers.services.router.server import start_router_server
from avengers.services.voter.server import start_voter_server
from avengers.stores import create_store
from avengers.v1 import gateway_pb2, gateway_pb2_grpc
from conftest import free_port, write_jsonl

pytestmark = pytest.mark.asyncio(loop_scope="module")

HASHING = EmbeddingConfig(backend="hashing", dimension=256)
MODEL = "replay-7b"
RESUME_BOUND_SECONDS = 5.0
"""Asks must work again this soon after the dependency is back (target: 3 s)."""
POOL_OUTAGE_SECONDS = 18.0
"""Long enough for gRPC's default reconnect backoff (1 s, x1.6 per failed attempt) to reach ~10 s: with it,
the next attempt came 6-10 s after the pool's return."""
REDIS_OUTAGE_SECONDS = 3.0


@pytest.fixture(scope="module")
async def stack(tmp_path_factory):
    """Embedder, router, voter and a model pool (on a port it can come back on) in this process."""
    root = tmp_path_factory.mktemp("reconnect")
    rng = random.Random(5)
    rows = [
        {"id": f"sum-{i}", "dataset": "arith", "split": "test",
         "query": f"What is {rng.randint(10, 999)} plus {rng.randint(10, 999)}? Give the total."}
        for i in range(200)
    ]  # fmt: skip
    write_jsonl(root / "labels.jsonl", [{**r, "scores": {MODEL: 1.0}} for r in rows])
    labels = read_labels(root / "labels.jsonl")
    embedder = create_embedder(HASHING)
    artifact = fit_router_on_embeddings(labels, embedder.encode(labels.queries), embedder.name, ClusteringConfig(k=2, n_init=2))
    store_config = StoreConfig(qdrant_path=str(root / "qdrant"))
    with create_store(store_config) as store:
        store.publish_and_activate(artifact)
    pool_config = ModelPoolConfig.model_validate(
        {"models": [{"name": MODEL, "backend": "replay", "replay": {"labels_path": str(root / "labels.jsonl")}}]}
    )
    servers = {}
    try:
        servers["embedder"] = await start_embedder_server(EmbedderServiceConfig(embedding=HASHING), "127.0.0.1:0")
        embedder_address = f"127.0.0.1:{servers['embedder'].port}"
        servers["router"] = await start_router_server(
            RouterServiceConfig(store=store_config, embedder_address=embedder_address, poll_interval_seconds=0),
            "127.0.0.1:0",
        )
        servers["voter"] = await start_voter_server(VoterServiceConfig(embedder_address=embedder_address), "127.0.0.1:0")
        pool_address = f"127.0.0.1:{free_port()}"
        servers["model_pool"] = await start_model_pool_server(pool_config, pool_address)
        yield {
            "servers": servers,
            "queries": [r["query"] for r in rows],
            "pool_config": pool_config,
            "downstream": {
                "embedder": embedder_address,
                "router": f"127.0.0.1:{servers['router'].port}",
                "voter": f"127.0.0.1:{servers['voter'].port}",
                "model_pool": pool_address,
            },
        }
    finally:
        for server in reversed(list(servers.values())):
            await server.stop(0)


class Gateway:
    def __init__(self, server):
        self.server = server
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
        self.stub = gateway_pb2_grpc.GatewayStub(self.channel)

    async def answers(self, query: str, **fields) -> gateway_pb2.AskResponse | None:
        try:
            return await self.stub.Ask(gateway_pb2.AskRequest(query=query, **fields), timeout=10)
        except grpc.aio.AioRpcError:
            return None

    async def close(self) -> None:
        await self.channel.close()
        await self.server.stop(0)


async def open_gateway(stack, **config) -> Gateway:
    settings = {"downstream": stack["downstream"], "redis": {"url": None}, **config}
    return Gateway(await start_gateway_server(GatewayServiceConfig.model_validate(settings), "127.0.0.1:0"))


async def seconds_until(probe, cap: float) -> float | None:
    """Seconds until ``probe()`` first returns true, polled every 0.1 s; None if not within ``cap``."""
    start = time.monotonic()
    while time.monotonic() - start < cap:
        if await probe():
            return time.monotonic() - start
        await asyncio.sleep(0.1)
    return None


async def test_asks_resume_soon_after_the_model_pool_is_back(stack):
    gateway = await open_gateway(stack)
    queries = iter(stack["queries"])
    try:
        assert await gateway.answers(next(queries), no_cache=True) is not None
        await stack["servers"]["model_pool"].stop(0)
        down_since = time.monotonic()
        while time.monotonic() - down_since < POOL_OUTAGE_SECONDS:  # clients keep asking meanwhile
            assert await gateway.answers(next(queries), no_cache=True) is None
            await asyncio.sleep(1.0)

        stack["servers"]["model_pool"] = await start_model_pool_server(
            stack["pool_config"], stack["downstream"]["model_pool"]
        )
        query = next(queries)
        resumed = await seconds_until(lambda: _answered(gateway, query), cap=60)
        print(f"\nAsks resumed {resumed} s after the model pool was back (outage {POOL_OUTAGE_SECONDS:g} s)")
        assert resumed is not None, "Asks never resumed after the model pool came back"
        assert resumed <= RESUME_BOUND_SECONDS
    finally:
        await gateway.close()


async def _answered(gateway: Gateway, query: str) -> bool:
    return await gateway.answers(query, no_cache=True) is not None


async def test_the_cache_is_used_again_soon_after_redis_is_back(stack):
    redis = RedisServer().start()
    gateway = await open_gateway(stack, redis={"url": redis.url, "key_prefix": "reconnect:"})  # default backoff
    queries = iter(stack["queries"][10:])
    try:
        # Several Asks at once: the gateway's Redis pool holds several connections, all stale after a restart.
        await asyncio.gather(*(gateway.answers(next(queries)) for _ in range(8)))
        warm = next(queries)
        await gateway.answers(warm)
        assert (await gateway.answers(warm)).cached

        await asyncio.to_thread(redis.stop)
        down_since = time.monotonic()
        while time.monotonic() - down_since < REDIS_OUTAGE_SECONDS:  # answered without the cache meanwhile
            responses = await asyncio.gather(*(gateway.answers(next(queries)) for _ in range(4)))
            assert all(r is not None and not r.cached for r in responses)
            await asyncio.sleep(0.5)

        await asyncio.to_thread(redis.start)  # same port, empty
        probe = next(queries)

        async def cached() -> bool:
            response = await gateway.answers(probe)
            return response is not None and response.cached

        resumed = await seconds_until(cached, cap=60)
        print(f"\nthe cache answered again {resumed} s after Redis was back")
        assert resumed is not None, "the gateway never used Redis again"
        assert resumed <= RESUME_BOUND_SECONDS
    finally:
        await gateway.close()
        redis.stop()
