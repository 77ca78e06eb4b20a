"""A real Avengers stack for client-facing tests: embedder (hashing), router (embedded Qdrant, fitted here),
voter, standalone model pool and gateway, all over real gRPC on loopback.

The pool holds replay models answering from labels written here ("alpha" right on arithmetic, "beta" right
on multiple choice) and "flaky", an OpenAI-compatible engine whose server is down. The router ranks flaky
first on arithmetic, so an arithmetic Ask shows a fallback (flaky fails, alpha answers).
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

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
from conftest import closed_port, write_jsonl

HASHING = EmbeddingConfig(backend="hashing", dimension=512)
ROUTER_SCORES = {
    "arith": {"flaky": 1.0, "alpha": 0.9, "beta": 0.2},
    "choice": {"beta": 1.0, "alpha": 0.6, "flaky": 0.1},
}
POOL_SCORES = {"arith": {"alpha": 1.0, "beta": 0.0}, "choice": {"alpha": 0.0, "beta": 1.0}}
SLOW_SECONDS = 3.0


def topic_query(topic: str, rng: random.Random) -> str:
    a, b, c, d = (rng.randint(10, 999) for _ in range(4))
    if topic == "arith":
        return f"Add the integers {a} plus {b} plus {c}: what total sum do you get?"
    return f"Which option names a colour?\nA. table {a}\nB. green {b}\nC. river {c}\nD. seven {d}"


@dataclass
class Stack:
    addresses: dict[str, str]
    queries: dict[str, list[str]]
    """Queries by topic ("arith", "choice"), each known to the replay models."""
    pool: object
    gateway: object

    @property
    def gateway_address(self) -> str:
        return self.addresses["gateway"]

    def gold(self, query: str) -> str:
        """The replayed models' right answer to ``query``."""
        return self.pool.engines["alpha"].gold_answer(self._ids[query])

    _ids: dict[str, str] = None  # type: ignore[assignment]


@contextlib.asynccontextmanager
async def running_stack(root: Path, gateway_config: dict | None = None) -> AsyncIterator[Stack]:
    rng = random.Random(11)
    routing_rows, pool_rows, queries, ids = [], [], {t: [] for t in ROUTER_SCORES}, {}
    for topic, router_scores in ROUTER_SCORES.items():
        for i in range(10):
            query = topic_query(topic, rng)
            row = {"id": f"{topic}-{i}", "dataset": topic, "split": "test", "query": query}
            routing_rows.append({**row, "scores": router_scores})
            pool_rows.append({**row, "scores": POOL_SCORES[topic]})
            queries[topic].append(query)
            ids[query] = row["id"]
    write_jsonl(root / "routing.jsonl", routing_rows)
    write_jsonl(root / "pool.jsonl", pool_rows)

    labels = read_labels(root / "routing.jsonl")
    embedder = create_embedder(HASHING)
    artifact = fit_router_on_embeddings(
        labels, embedder.encode(labels.queries), embedder.name, ClusteringConfig(k=2, seed=0, n_init=5)
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
        embedder_server = await start_embedder_server(EmbedderServiceConfig(embedding=HASHING), "127.0.0.1:0")
        servers.append(embedder_server)
        embedder_address = f"127.0.0.1:{embedder_server.port}"
        router = await start_router_server(
            RouterServiceConfig(store=store_config, embedder_address=embedder_address, poll_interval_seconds=0),
            "127.0.0.1:0",
        )
        servers.append(router)
        voter = await start_voter_server(VoterServiceConfig(embedder_address=embedder_address), "127.0.0.1:0")
        servers.append(voter)
        pool = await start_model_pool_server(pool_config, "127.0.0.1:0")
        servers.append(pool)
        addresses = {
            "embedder": embedder_address,
            "router": f"127.0.0.1:{router.port}",
            "voter": f"127.0.0.1:{voter.port}",
            "model_pool": f"127.0.0.1:{pool.port}",
        }
        config = GatewayServiceConfig.model_validate(
            {"downstream": dict(addresses), "redis": {"url": None}, **(gateway_config or {})}
        )
        gateway = await start_gateway_server(config, "127.0.0.1:0")
        servers.append(gateway)
        addresses["gateway"] = f"127.0.0.1:{gateway.port}"
        stack = Stack(addresses, queries, pool, gateway)
        stack._ids = ids
        yield stack
    finally:
        for server in reversed(servers):
            await server.stop(0)
