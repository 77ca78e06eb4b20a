"""The Gateway over real gRPC, in front of the real services: embedder (hashing), router (embedded Qdrant,
a router fitted here), voter, standalone model pool (replay engines from labels written here, plus a model
whose server is down), and Redis (a redis-server started here)."""

from __future__ import annotations

import random

import grpc
import pytest
from redis_server import RedisServer

from avengers.config.clustering import ClusteringConfig
from avengers.config.embedder_service import EmbedderServiceConfig
from avengers.config.embedding import EmbeddingConfig
from avengers.config.gateway_service import GatewayServiceConfig
from avengers.config.model_pool import ModelPoolConfig
from avengers.config.router_service import RouterServiceConfig
from avengers.config.state import FeedbackConfig, RedisConfig
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
from avengers.state import RedisConnection, RedisFeedbackStore
from avengers.stores import create_store
from avengers.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc
from conftest import closed_port, write_jsonl

pytestmark = pytest.mark.asyncio(loop_scope="module")

HASHING = EmbeddingConfig(backend="hashing", dimension=512)
ROUTED = ["flaky", "alpha", "beta", "slow"]
# What the router believes (fitted scores per topic) ...
ROUTER_SCORES = {
    "arith": {"flaky": 1.0, "alpha": 0.9, "beta": 0.2, "slow": 0.0},  # flaky first: its server is down
    "choice": {"beta": 1.0, "alpha": 0.6, "flaky": 0.1, "slow": 0.0},
    "geometry": {"slow": 1.0, "alpha": 0.8, "beta": 0.1, "flaky": 0.0},  # slow first: 2 s per request
}
# ... and what the replayed models really do (probability that a sample is right).
POOL_SCORES = {"arith": {"alpha": 1.0, "beta": 0.0}, "choice": {"alpha": 0.0, "beta": 1.0},
               "geometry": {"alpha": 1.0, "beta": 0.0}}
SLOW_SECONDS = 2.0


def topic_query(topic: str, rng: random.Random) -> str:
    a, b, c, d = (rng.randint(10, 999) for _ in range(4))
    if topic == "arith":
        return f"Add the integers {a} plus {b} plus {c}: what total sum do you get?"
    if topic == "choice":
        return f"Which option names a colour?\nA. table {a}\nB. green {b}\nC. river {c}\nD. seven {d}"
    return f"A rectangle garden measures {a} metres by {b} metres. Find its area in square metres."


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("gateway")
    rng = random.Random(7)
    routing_rows, pool_rows = [], []
    for topic, router_scores in ROUTER_SCORES.items():
        for i in range(12):
            row = {"id": f"{topic}-{i}", "dataset": topic, "split": "test", "query": topic_query(topic, rng)}
            routing_rows.append({**row, "scores": router_scores})
            pool_rows.append({**row, "scores": POOL_SCORES[topic]})
    # The model-switch case: the router trusts beta on this task, but beta is always wrong here.
    switch = {"id": "choice-switch", "dataset": "choice", "split": "test", "query": topic_query("choice", rng)}
    routing_rows.append({**switch, "scores": ROUTER_SCORES["choice"]})
    pool_rows.append({**switch, "scores": {"alpha": 1.0, "beta": 0.0}})
    for name, rows in (("routing.jsonl", routing_rows), ("pool.jsonl", pool_rows)):
        write_jsonl(root / name, rows)
    return root, {r["id"]: r["query"] for r in pool_rows}


@pytest.fixture(scope="module")
async def stack(data):
    root, _ = data
    labels = read_labels(root / "routing.jsonl")
    embedder = create_embedder(HASHING)
    artifact = fit_router_on_embeddings(
        labels, embedder.encode(labels.queries), embedder.name, ClusteringConfig(k=3, seed=0, n_init=5)
    )
    store_config = StoreConfig(qdrant_path=str(root / "qdrant"))
    with create_store(store_config) as store:
        store.publish_and_activate(artifact)

    pool_labels = str(root / "pool.jsonl")
    pool_config = ModelPoolConfig.model_validate({"models": [
        {"name": "alpha", "backend": "replay", "replay": {"labels_path": pool_labels}},
        {"name": "beta", "backend": "replay", "replay": {"labels_path": pool_labels}},
        {"name": "slow", "backend": "replay",
         "replay": {"labels_path": pool_labels, "label_model": "alpha", "latency_s": SLOW_SECONDS}},
        {"name": "flaky", "backend": "openai",
         "openai": {"base_url": f"http://127.0.0.1:{closed_port()}/v1", "connect_timeout_s": 1.0}},
    ]})
    servers = []
    try:
        servers.append(embedder_server := await start_embedder_server(EmbedderServiceConfig(embedding=HASHING), "127.0.0.1:0"))
        embedder_addr = f"127.0.0.1:{embedder_server.port}"
        servers.append(router := await start_router_server(
            RouterServiceConfig(store=store_config, embedder_address=embedder_addr, poll_interval_seconds=0),
            "127.0.0.1:0"))
        servers.append(voter := await start_voter_server(VoterServiceConfig(embedder_address=embedder_addr),
                                                         "127.0.0.1:0"))
        servers.append(pool := await start_model_pool_server(pool_config, "127.0.0.1:0"))
        addresses = {
            "embedder": embedder_addr,
            "router": f"127.0.0.1:{router.port}",
            "voter": f"127.0.0.1:{voter.port}",
            "model_pool": f"127.0.0.1:{pool.port}",
        }
        yield Stack(addresses, pool, artifact.version)
    finally:
        for server in reversed(servers):
            await server.stop(0)


class Stack:
    def __init__(self, addresses: dict[str, str], pool, router_version: str):
        self.addresses = addresses
        self.pool = pool
        self.router_version = router_version

    def gold(self, task_id: str) -> str:
        return self.pool.engines["alpha"].gold_answer(task_id)

    def config(self, redis_url: str | None = None, **overrides) -> GatewayServiceConfig:
        downstream = {**self.addresses, **overrides.pop("downstream", {})}
        return GatewayServiceConfig.model_validate(
            {"downstream": downstream, "redis": {"url": redis_url, "key_prefix": f"gw-{random.randrange(10**9)}:"},
             **overrides}
        )


class Client:
    """A started gateway and a stub to it."""

    def __init__(self, server):
        self.server = server
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
        self.stub = gateway_pb2_grpc.GatewayStub(self.channel)

    async def ask(self, query: str, timeout: float = 30, **fields) -> gateway_pb2.AskResponse:
        return await self.stub.Ask(gateway_pb2.AskRequest(query=query, **fields), timeout=timeout)

    async def close(self) -> None:
        await self.channel.close()
        await self.server.stop(0)


async def start_client(config: GatewayServiceConfig) -> Client:
    return Client(await start_gateway_server(config, "127.0.0.1:0"))


@pytest.fixture(scope="module")
async def gateway(stack):
    client = await start_client(stack.config())
    yield client
    await client.close()


@pytest.fixture(scope="module")
def redis_server():
    server = RedisServer().start()
    yield server
    server.stop()


async def test_self_consistency_answers_with_the_best_routed_model(stack, gateway, data):
    _, queries = data
    response = await gateway.ask(queries["choice-1"], sampling=common_pb2.SamplingParams(n=6))
    assert response.answer == stack.gold("choice-1")
    assert list(response.models) == ["beta"] and not response.failed_models and not response.cached
    assert response.task_type == common_pb2.TASK_TYPE_MULTIPLE_CHOICE  # inferred from the options
    assert len(response.samples) == 6 and {s.model for s in response.samples} == {"beta"}
    assert response.router_version == stack.router_version and response.request_id
    assert response.vote.agreement == 1.0 and response.vote.counts[0].votes == 6
    assert response.text.strip().endswith(stack.gold("choice-1"))


async def test_defaults_are_ten_samples(gateway, data):
    response = await gateway.ask(data[1]["choice-2"])
    assert len(response.samples) == 10


async def test_model_switch_samples_both_models_and_keeps_the_confident_first(stack, gateway, data):
    response = await gateway.ask(
        data[1]["choice-3"], strategy=gateway_pb2.ENSEMBLE_STRATEGY_MODEL_SWITCH,
        sampling=common_pb2.SamplingParams(n=10),
    )
    assert sorted({(s.model, sum(t.model == s.model for t in response.samples)) for s in response.samples}) == [
        ("alpha", 5), ("beta", 5)]
    assert not response.vote.switched and list(response.models) == ["beta"]
    assert response.answer == stack.gold("choice-3")


async def test_model_switch_switches_when_the_first_model_disagrees(stack, gateway, data):
    response = await gateway.ask(
        data[1]["choice-switch"], strategy=gateway_pb2.ENSEMBLE_STRATEGY_MODEL_SWITCH, switch_threshold=1.0,
        sampling=common_pb2.SamplingParams(n=10, seed=3),
    )
    assert response.vote.switched and list(response.models) == ["beta", "alpha"]
    assert response.answer == stack.gold("choice-switch")  # alpha's 5 right answers outvote beta's scattered ones


async def test_fallback_when_the_best_model_is_down(stack, gateway, data):
    response = await gateway.ask(data[1]["arith-1"], sampling=common_pb2.SamplingParams(n=4))
    assert list(response.failed_models) == ["flaky"]
    assert list(response.models) == ["alpha"] and response.answer == stack.gold("arith-1")
    assert response.task_type == common_pb2.TASK_TYPE_MATH


async def test_fallback_when_a_model_exceeds_its_call_timeout(stack, data):
    client = await start_client(stack.config(timeouts={"generate_seconds": SLOW_SECONDS / 4}))
    try:
        response = await client.ask(data[1]["geometry-1"], sampling=common_pb2.SamplingParams(n=3))
    finally:
        await client.close()
    assert list(response.failed_models) == ["slow"] and list(response.models) == ["alpha"]
    assert response.answer == stack.gold("geometry-1")


async def test_all_models_failing_is_unavailable_listing_them(gateway):
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await gateway.ask("Add the integers 1 plus 2 plus 3: what total sum do you get?")  # replay knows it not
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    for model in ROUTED:
        assert model in info.value.details()
    assert "no record" in info.value.details() and "cannot reach" in info.value.details()


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        ({"query": ""}, "query is empty"),
        ({"query": "   \n\t"}, "query is empty"),
        ({"query": "x" * 40_000}, "characters"),
        ({"sampling": common_pb2.SamplingParams(n=65)}, "sampling.n"),
        ({"sampling": common_pb2.SamplingParams(temperature=2.5)}, "temperature"),
        ({"sampling": common_pb2.SamplingParams(temperature=-0.1)}, "temperature"),
        ({"sampling": common_pb2.SamplingParams(top_p=0.0)}, "top_p"),
        ({"sampling": common_pb2.SamplingParams(top_p=1.5)}, "top_p"),
        ({"switch_threshold": 0.0}, "switch_threshold"),
        ({"switch_threshold": 1.2}, "switch_threshold"),
        ({"tests": ["assert f(1) == 1\n" * 5000]}, "tests"),
        ({"tests": ["assert True"] * 100}, "tests"),
        ({"entry_point": "not an identifier"}, "entry_point"),
        ({"task_type": 42}, "task_type"),
        ({"strategy": 9}, "strategy"),
    ],
)
async def test_bad_input_is_invalid_argument(gateway, fields, needle):
    request = gateway_pb2.AskRequest(**{"query": "What is 2 plus 2?", **fields})
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await gateway.stub.Ask(request, timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert needle in info.value.details()


@pytest.mark.parametrize("down", ["router", "voter", "model_pool"])
async def test_a_dependency_down_is_unavailable_naming_it(stack, data, down):
    address = f"127.0.0.1:{closed_port()}"
    client = await start_client(stack.config(downstream={down: address}))
    try:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await client.ask(data[1]["choice-4"], timeout=20, sampling=common_pb2.SamplingParams(n=2))
    finally:
        await client.close()
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert address in info.value.details()
    if down == "model_pool":  # one failure for all models, said once
        assert info.value.details().startswith("no routed model could answer (beta, alpha, flaky, slow: ")
        assert info.value.details().count("model pool at") == 1


async def test_route_by_embedding_gives_the_same_route(stack, data):
    client = await start_client(stack.config(downstream={"route_by": "embedding"}))
    try:
        response = await client.ask(data[1]["choice-5"], sampling=common_pb2.SamplingParams(n=2))
    finally:
        await client.close()
    assert list(response.models) == ["beta"] and response.answer == stack.gold("choice-5")


async def test_client_deadline_is_propagated(gateway, data):
    # The slow model needs 2 s; the call has 0.5 s: DEADLINE_EXCEEDED, not a hang or a fallback.
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await gateway.ask(data[1]["geometry-2"], timeout=0.5, no_cache=True)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await gateway.ask(data[1]["choice-6"], timeout=0.001)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


async def test_in_process_cache_without_redis(gateway, data):
    query = data[1]["choice-7"]
    first = await gateway.ask(query, sampling=common_pb2.SamplingParams(n=3))
    second = await gateway.ask(query, sampling=common_pb2.SamplingParams(n=3))
    assert not first.cached and second.cached
    assert second.answer == first.answer and second.request_id != first.request_id
    assert list(second.samples) == list(first.samples)
    other = await gateway.ask(query, sampling=common_pb2.SamplingParams(n=4))  # other params: other key
    assert not other.cached
    bypass = await gateway.ask(query, sampling=common_pb2.SamplingParams(n=3), no_cache=True)
    assert not bypass.cached


async def test_fallback_answers_are_not_cached(gateway, data):
    query = data[1]["arith-2"]
    first = await gateway.ask(query, sampling=common_pb2.SamplingParams(n=2))
    second = await gateway.ask(query, sampling=common_pb2.SamplingParams(n=2))
    assert first.failed_models and not second.cached


async def test_redis_cache_and_feedback(stack, data, redis_server):
    config = stack.config(redis_url=redis_server.url)
    client = await start_client(config)
    connection = RedisConnection(RedisConfig(url=redis_server.url, key_prefix=config.redis.key_prefix))
    try:
        query = data[1]["choice-8"]
        first = await client.ask(query, sampling=common_pb2.SamplingParams(n=3))
        second = await client.ask(query, sampling=common_pb2.SamplingParams(n=3))
        assert not first.cached and second.cached and second.answer == first.answer
        assert await connection.client.keys(connection.key("cache", "*"))

        ok = await client.stub.Feedback(gateway_pb2.FeedbackRequest(request_id=first.request_id, score=1.0,
                                                                     comment="right"))
        assert ok.recorded
        await client.stub.Feedback(gateway_pb2.FeedbackRequest(request_id=second.request_id, score=0.0))
        store = RedisFeedbackStore(FeedbackConfig(), connection)
        entries = await store.recent_feedback()
        assert [(e.request.request_id, e.score, e.comment) for e in entries] == [
            (second.request_id, 0.0, ""), (first.request_id, 1.0, "right")]
        assert entries[0].request.answer == first.answer and entries[0].request.models == ("beta",)
        tally = (await store.tallies(stack.router_version))[(first.cluster, "beta")]
        assert tally.count == 2 and tally.total == 1.0

        for request, code in [
            (gateway_pb2.FeedbackRequest(request_id="no-such-request", score=1.0), grpc.StatusCode.NOT_FOUND),
            (gateway_pb2.FeedbackRequest(request_id=first.request_id, score=1.5), grpc.StatusCode.INVALID_ARGUMENT),
            (gateway_pb2.FeedbackRequest(request_id=first.request_id, score=-1), grpc.StatusCode.INVALID_ARGUMENT),
            (gateway_pb2.FeedbackRequest(request_id="", score=1.0), grpc.StatusCode.INVALID_ARGUMENT),
        ]:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await client.stub.Feedback(request, timeout=10)
            assert info.value.code() == code and info.value.details()
    finally:
        await connection.close()
        await client.close()


async def test_redis_down_mid_run(stack, data):
    redis = RedisServer().start()
    client = await start_client(stack.config(redis_url=redis.url))
    try:
        query = data[1]["choice-9"]
        first = await client.ask(query, sampling=common_pb2.SamplingParams(n=3))
        redis.stop()
        # The cache is bypassed: the answer is computed again, not an error.
        again = await client.ask(query, sampling=common_pb2.SamplingParams(n=3))
        assert not again.cached and again.answer == first.answer
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await client.stub.Feedback(gateway_pb2.FeedbackRequest(request_id=first.request_id, score=1.0), timeout=10)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "redis" in info.value.details() and "feedback" in info.value.details()
    finally:
        await client.close()
        redis.stop()
