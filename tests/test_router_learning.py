"""Cost-aware routing (alpha) and learning from feedback, over real gRPC through the real services:
embedder (hashing), router (embedded Qdrant), voter, model pool (replay engines on labels written here),
gateway, and Redis (a redis-server started here). Feedback given with Gateway.Feedback moves the router's
choice at its next poll; `avengers refit --with-feedback` publishes a version with that feedback folded in."""

from __future__ import annotations

import asyncio
import random

import grpc
import pytest
from redis_server import RedisServer

from avengers.cli import main as cli_main
from avengers.config.clustering import ClusteringConfig
from avengers.config.embedder_service import EmbedderServiceConfig
from avengers.config.embedding import EmbeddingConfig
from avengers.config.gateway_service import GatewayServiceConfig
from avengers.config.model_pool import ModelPoolConfig
from avengers.config.router_feedback import RouterFeedbackConfig
from avengers.config.router_service import RouterServiceConfig
from avengers.config.state import RedisConfig
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
from avengers.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc, router_pb2, router_pb2_grpc
from conftest import write_jsonl

pytestmark = pytest.mark.asyncio(loop_scope="module")

HASHING = EmbeddingConfig(backend="hashing", dimension=64)
ROUTER_SCORES = {"strong": 0.9, "cheap": 0.6}  # what the router is fitted on
COSTS = {"strong": 10.0, "cheap": 1.0}
ROWS = 24


@pytest.fixture(scope="module")
def redis_server():
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("learning")
    rng = random.Random(3)
    rows = [{"id": f"sum-{i}", "dataset": "sums", "split": "test",
             "query": f"What is {rng.randint(10, 99)} plus {rng.randint(10, 99)}? (#{i})"} for i in range(ROWS)]
    write_jsonl(root / "routing.jsonl", [{**r, "scores": ROUTER_SCORES, "costs": COSTS} for r in rows])
    write_jsonl(root / "pool.jsonl", [{**r, "scores": {"strong": 1.0, "cheap": 1.0}} for r in rows])
    return root, [r["query"] for r in rows]


class Stack:
    def __init__(self, root, queries, router, addresses, version, prefix, redis_url):
        self.root, self.queries, self.router, self.addresses = root, queries, router, addresses
        self.version, self.prefix, self.redis_url = version, prefix, redis_url
        self.store_config = StoreConfig(qdrant_path=str(root / "qdrant"))


@pytest.fixture(scope="module")
async def stack(data, redis_server):
    root, queries = data
    labels = read_labels(root / "routing.jsonl")
    embedder = create_embedder(HASHING)
    artifact = fit_router_on_embeddings(labels, embedder.encode(labels.queries), embedder.name, ClusteringConfig(k=1))
    store_config = StoreConfig(qdrant_path=str(root / "qdrant"))
    with create_store(store_config) as store:
        store.publish_and_activate(artifact)
    prefix = f"learn-{random.randrange(10**9)}:"
    redis = RedisConfig(url=redis_server.url, key_prefix=prefix)
    pool_config = ModelPoolConfig.model_validate({"models": [
        {"name": name, "backend": "replay", "replay": {"labels_path": str(root / "pool.jsonl")}} for name in COSTS
    ]})
    servers = []
    try:
        servers.append(emb := await start_embedder_server(EmbedderServiceConfig(embedding=HASHING), "127.0.0.1:0"))
        embedder_addr = f"127.0.0.1:{emb.port}"
        servers.append(router := await start_router_server(
            RouterServiceConfig(store=store_config, embedder_address=embedder_addr, poll_interval_seconds=0,
                                feedback=RouterFeedbackConfig(enabled=True, redis=redis)),
            "127.0.0.1:0"))
        servers.append(voter := await start_voter_server(VoterServiceConfig(embedder_address=embedder_addr),
                                                         "127.0.0.1:0"))
        servers.append(pool := await start_model_pool_server(pool_config, "127.0.0.1:0"))
        addresses = {"embedder": embedder_addr, "router": f"127.0.0.1:{router.port}",
                     "voter": f"127.0.0.1:{voter.port}", "model_pool": f"127.0.0.1:{pool.port}"}
        servers.append(gateway := await start_gateway_server(
            GatewayServiceConfig.model_validate({"downstream": addresses, "redis": redis.to_dict()}), "127.0.0.1:0"))
        addresses["gateway"] = f"127.0.0.1:{gateway.port}"
        yield Stack(root, queries, router, addresses, artifact.version, prefix, redis_server.url)
    finally:
        for server in reversed(servers):
            await server.stop(0)


@pytest.fixture(scope="module")
async def clients(stack):
    gateway = grpc.aio.insecure_channel(stack.addresses["gateway"])
    router = grpc.aio.insecure_channel(stack.addresses["router"])
    yield gateway_pb2_grpc.GatewayStub(gateway), router_pb2_grpc.RouterStub(router)
    await gateway.close()
    await router.close()


async def ask(gateway, query: str, **fields) -> gateway_pb2.AskResponse:
    request = gateway_pb2.AskRequest(query=query, sampling=common_pb2.SamplingParams(n=1), no_cache=True, **fields)
    return await gateway.Ask(request, timeout=30)


async def test_alpha_over_route_and_ask(stack, clients):
    gateway, router = clients
    query = stack.queries[0]
    assert [m.model for m in (await router.Route(router_pb2.RouteRequest(query=query), timeout=30)).models] == [
        "strong", "cheap"]
    cheap = await router.Route(router_pb2.RouteRequest(query=query, alpha=1.0), timeout=30)
    assert [m.model for m in cheap.models] == ["cheap", "strong"] and cheap.alpha == 1.0
    # alpha 0.5: q~ = (1, 0), c~ = (1, 0) -> both 0.5; the tie goes to the higher global score (strong)
    half = await router.Route(router_pb2.RouteRequest(query=query, alpha=0.5), timeout=30)
    assert [m.model for m in half.models] == ["strong", "cheap"] and half.models[0].score == pytest.approx(0.5)

    assert list((await ask(gateway, query)).models) == ["strong"]
    assert list((await ask(gateway, query, alpha=0.0)).models) == ["strong"]
    assert list((await ask(gateway, query, alpha=1.0)).models) == ["cheap"]

    for bad in (1.5, -0.1, float("nan")):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await router.Route(router_pb2.RouteRequest(query=query, alpha=bad), timeout=30)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "alpha" in err.value.details()
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await ask(gateway, query, alpha=bad)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "alpha" in err.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await router.Route(router_pb2.RouteRequest(query=query, strategy=router_pb2.ROUTING_STRATEGY_KNN), timeout=30)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "knn" in err.value.details()


async def test_negative_feedback_moves_routing_away_at_the_next_poll_then_refit_keeps_it(stack, clients, capsys):
    gateway, router = clients
    info = await router.GetRouterInfo(router_pb2.GetRouterInfoRequest(), timeout=30)
    assert info.has_costs and info.feedback_observations == 0 and "soft" in info.strategies
    # prior 0.9 with weight 10: after n zeros the posterior is 9 / (10 + n), below cheap's 0.6 from n = 6
    for query in stack.queries[1:9]:
        answer = await ask(gateway, query)
        assert list(answer.models) == ["strong"]
        ok = await gateway.Feedback(gateway_pb2.FeedbackRequest(request_id=answer.request_id, score=0.0), timeout=30)
        assert ok.recorded
    assert list((await ask(gateway, stack.queries[9])).models) == ["strong"]  # not before the poll
    result = await stack.router.reload()  # what the poll does every poll_interval_seconds
    assert result.changed and result.version == stack.version
    routed = await router.Route(router_pb2.RouteRequest(query=stack.queries[10]), timeout=30)
    assert routed.router_version == stack.version
    assert [m.model for m in routed.models] == ["cheap", "strong"]
    assert routed.models[1].score == pytest.approx(9 / 18)
    assert list((await ask(gateway, stack.queries[11])).models) == ["cheap"]
    info = await router.GetRouterInfo(router_pb2.GetRouterInfoRequest(), timeout=30)
    assert info.feedback_observations == 8

    code = await asyncio.to_thread(  # the command as an operator runs it (its own event loop)
        cli_main, ["refit", "--with-feedback", "--qdrant-path", stack.store_config.qdrant_path,
                   "--redis-url", stack.redis_url, "--key-prefix", stack.prefix])
    assert code == 0
    assert "8 feedback observations on 1 of 1 clusters" in capsys.readouterr().out
    result = await stack.router.reload()
    assert result.changed and result.version != stack.version
    refit = await router.Route(router_pb2.RouteRequest(query=stack.queries[12]), timeout=30)
    assert refit.router_version == result.version and refit.models[0].model == "cheap"
    info = await router.GetRouterInfo(router_pb2.GetRouterInfoRequest(), timeout=30)
    assert info.feedback_observations == 8  # folded in; the new version has no live tallies yet


async def test_thompson_exploration_is_rate_limited_and_tries_the_other_model(stack):
    redis = RedisConfig(url=stack.redis_url, key_prefix=stack.prefix)

    async def first_models(rate: float) -> tuple[list[str], list[bool]]:
        config = RouterServiceConfig(
            store=stack.store_config, embedder_address=stack.addresses["embedder"], poll_interval_seconds=0,
            feedback=RouterFeedbackConfig(enabled=True, redis=redis, explore_rate=rate, seed=1),
        )
        server = await start_router_server(config, "127.0.0.1:0")
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
                stub = router_pb2_grpc.RouterStub(channel)
                answers = [await stub.Route(router_pb2.RouteRequest(query=q), timeout=30) for q in stack.queries * 2]
        finally:
            await server.stop(0)
        return [a.models[0].model for a in answers], [a.explored for a in answers]

    firsts, explored = await first_models(0.0)
    assert not any(explored) and len(set(firsts)) == 1  # no exploration: always the same choice
    firsts, explored = await first_models(1.0)
    assert all(explored) and set(firsts) == {"strong", "cheap"}  # draws from both posteriors win sometimes
