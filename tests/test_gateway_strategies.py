"""Every ensemble strategy ``avengers evaluate`` measures is served by Ask, over real gRPC: embedder (hashing),
router (embedded Qdrant, fitted here), voter, standalone model pool (replay engines with recorded outputs
written here) and gateway; ``avengers ask --strategy ... --k K`` on top.

By construction, four models are routed in the order m1 > m2 > m3 > m4 (routing scores 0.98, 0.6, 0.3, 0.1 on
every query) and always answer: m1 "A" (wrong), m2 and m3 "B" (right), m4 "C". So the best model alone says A;
a majority of the top 3 says B (2 votes to 1); weighted by routing score the top 3 say A (0.98 > 0.6 + 0.3);
weighted by log-odds log(3p / (1 - p)) (4 options) they say A (4.99 > 1.50 + 0.25); the top 4 by majority
say B.
"""

from __future__ import annotations

import asyncio
import json

import grpc
import pytest

from avengers.cli import main
from avengers.config.clustering import ClusteringConfig
from avengers.config.embedder_service import EmbedderServiceConfig
from avengers.config.embedding import EmbeddingConfig
from avengers.config.gateway_service import GatewayServiceConfig
from avengers.config.model_pool import ModelPoolConfig
from avengers.config.router_service import RouterServiceConfig
from avengers.config.store import StoreConfig
from avengers.config.voter_service import VoterServiceConfig
from avengers.core.embedding import create_embedder
from avengers.core.ensemble import strategy_names
from avengers.core.fit import fit_router_on_embeddings
from avengers.core.labels import read_labels
from avengers.rpc.enums import ENSEMBLE_STRATEGY
from avengers.services.embedder.server import start_embedder_server
from avengers.services.gateway.server import start_gateway_server
from avengers.services.model_pool.server import start_model_pool_server
from avengers.services.router.server import start_router_server
from avengers.services.voter.server import start_voter_server
from avengers.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc
from conftest import write_jsonl

pytestmark = pytest.mark.asyncio(loop_scope="module")

HASHING = EmbeddingConfig(backend="hashing", dimension=256)
SCORES = {"m1": 0.98, "m2": 0.6, "m3": 0.3, "m4": 0.1}
ANSWERS = {"m1": "A", "m2": "B", "m3": "B", "m4": "C"}
COLOURS = ["green", "red", "blue", "yellow", "purple", "orange"]


def question(i: int) -> str:
    return f"Which of these is the colour {COLOURS[i]}?\nA. a table\nB. {COLOURS[i]}\nC. a river\nD. seven"


async def test_every_served_strategy_has_a_contract_value():
    assert sorted(ENSEMBLE_STRATEGY.names()) == strategy_names()
    assert {"top_k_vote", "score_weighted_vote", "log_odds_vote"} <= set(strategy_names())


@pytest.fixture(scope="module")
async def gateway(tmp_path_factory):
    root = tmp_path_factory.mktemp("strategies")
    rows = [{"id": f"q{i}", "dataset": "colours", "split": "calibration", "query": question(i), "scores": SCORES}
            for i in range(len(COLOURS))]
    write_jsonl(root / "labels.jsonl", rows)
    write_jsonl(root / "outputs.jsonl", [
        {"query": question(i), "model": model, "samples": [f"The answer is {letter}."]}
        for i in range(len(COLOURS)) for model, letter in ANSWERS.items()
    ])
    labels = read_labels(root / "labels.jsonl")
    embedder = create_embedder(HASHING)
    artifact = fit_router_on_embeddings(
        labels, embedder.encode(labels.queries), embedder.name, ClusteringConfig(k=2, seed=0, n_init=2)
    )
    store_config = StoreConfig(qdrant_path=str(root / "qdrant"))
    from avengers.stores import create_store

    with create_store(store_config) as store:
        store.publish_and_activate(artifact)
    pool_config = ModelPoolConfig.model_validate({"models": [
        {"name": model, "backend": "replay", "replay": {"outputs_path": str(root / "outputs.jsonl")}}
        for model in SCORES
    ]})
    servers = []
    try:
        servers.append(embedder_server := await start_embedder_server(
            EmbedderServiceConfig(embedding=HASHING), "127.0.0.1:0"))
        embedder_addr = f"127.0.0.1:{embedder_server.port}"
        servers.append(router := await start_router_server(
            RouterServiceConfig(store=store_config, embedder_address=embedder_addr, poll_interval_seconds=0),
            "127.0.0.1:0"))
        servers.append(voter := await start_voter_server(
            VoterServiceConfig(embedder_address=embedder_addr), "127.0.0.1:0"))
        servers.append(pool := await start_model_pool_server(pool_config, "127.0.0.1:0"))
        config = GatewayServiceConfig.model_validate({"downstream": {
            "embedder": embedder_addr, "router": f"127.0.0.1:{router.port}",
            "voter": f"127.0.0.1:{voter.port}", "model_pool": f"127.0.0.1:{pool.port}",
        }, "limits": {"max_top_k": 4}})
        servers.append(gateway_server := await start_gateway_server(config, "127.0.0.1:0"))
        address = f"127.0.0.1:{gateway_server.port}"
        async with grpc.aio.insecure_channel(address) as channel:
            yield address, gateway_pb2_grpc.GatewayStub(channel)
    finally:
        for server in reversed(servers):
            await server.stop(0)


async def ask(stub, i: int, strategy: str, n: int, top_k: int = 0) -> gateway_pb2.AskResponse:
    return await stub.Ask(gateway_pb2.AskRequest(
        query=question(i), strategy=ENSEMBLE_STRATEGY.value(strategy), top_k=top_k,
        sampling=common_pb2.SamplingParams(n=n, seed=0),
    ), timeout=30)


def per_model(response: gateway_pb2.AskResponse) -> dict[str, int]:
    counts: dict[str, int] = {}
    for s in response.samples:
        counts[s.model] = counts.get(s.model, 0) + 1
    return counts


async def test_top_k_vote_unites_the_top_k_routed_models(gateway):
    _, stub = gateway
    best_alone = await ask(stub, 0, "self_consistency", n=3)
    assert best_alone.answer == "A" and list(best_alone.models) == ["m1"]

    top3 = await ask(stub, 0, "top_k_vote", n=3, top_k=3)
    assert top3.answer == "B"
    assert list(top3.models) == ["m1", "m2", "m3"] and per_model(top3) == {"m1": 1, "m2": 1, "m3": 1}
    assert top3.vote.counts[0].answer == "B" and top3.vote.counts[0].votes == 2

    top4 = await ask(stub, 0, "top_k_vote", n=8, top_k=4)
    assert top4.answer == "B" and per_model(top4) == {"m1": 2, "m2": 2, "m3": 2, "m4": 2}


async def test_k_is_per_request_and_part_of_the_cache_key(gateway):
    _, stub = gateway
    top1 = await ask(stub, 1, "top_k_vote", n=3, top_k=1)
    assert top1.answer == "A" and list(top1.models) == ["m1"] and not top1.cached
    top3 = await ask(stub, 1, "top_k_vote", n=3, top_k=3)
    assert top3.answer == "B" and not top3.cached
    again = await ask(stub, 1, "top_k_vote", n=3, top_k=3)
    assert again.cached and again.answer == "B"


async def test_default_k_is_three(gateway):
    _, stub = gateway
    response = await ask(stub, 2, "top_k_vote", n=5)
    assert list(response.models) == ["m1", "m2", "m3"] and response.answer == "B"
    assert per_model(response) == {"m1": 2, "m2": 2, "m3": 1}  # the better models take the remainder


async def test_weighted_strategies_follow_the_routing_scores(gateway):
    _, stub = gateway
    majority = await ask(stub, 3, "top_k_vote", n=3, top_k=3)
    by_score = await ask(stub, 3, "score_weighted_vote", n=3, top_k=3)
    by_log_odds = await ask(stub, 3, "log_odds_vote", n=3, top_k=3)
    assert (majority.answer, by_score.answer, by_log_odds.answer) == ("B", "A", "A")
    assert list(by_score.models) == list(by_log_odds.models) == ["m1", "m2", "m3"]
    weights = {c.answer: c.weight for c in by_score.vote.counts}
    assert weights["A"] == pytest.approx(0.98, abs=1e-6) and weights["B"] == pytest.approx(0.9, abs=1e-6)


async def test_top_k_above_the_limit_is_invalid_argument(gateway):
    _, stub = gateway
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await ask(stub, 4, "top_k_vote", n=6, top_k=5)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "top_k=5" in info.value.details()


async def test_avengers_ask_strategy_and_k(gateway, capsys):
    address, _ = gateway
    argv = ["ask", question(5), "--addr", address, "--strategy", "top-k-vote", "--k", "3", "--n", "3", "--json"]
    assert await asyncio.to_thread(main, argv) == 0
    response = json.loads(capsys.readouterr().out)
    assert response["answer"] == "B" and response["models"] == ["m1", "m2", "m3"]
