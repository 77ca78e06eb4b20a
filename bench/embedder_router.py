"""Embedder micro-batching and Router latency, over real gRPC on localhost.

    .venv/bin/python bench/embedder_router.py [--requests 400] [--clients 16]

Embedder: one text per request from ``--clients`` concurrent clients, MiniLM on CPU, for several batching
settings (max_batch 1 = no batching). Router: Route by precomputed embedding (routing only) and by query
text (through the Embedder service), nearest and soft. Prints a Markdown table per part.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import grpc
import numpy as np

from avengers.config.embedder_service import BatchingConfig, EmbedderServiceConfig
from avengers.config.embedding import EmbeddingConfig
from avengers.config.router_service import RouterServiceConfig
from avengers.config.store import StoreConfig
from avengers.core.embedding import create_embedder
from avengers.services.embedder.server import start_embedder_server
from avengers.services.router.server import start_router_server
from avengers.stores import create_store
from avengers.v1 import common_pb2, embedder_pb2, embedder_pb2_grpc, router_pb2, router_pb2_grpc

TOPICS = ["the derivative of a polynomial", "a Python function to sort", "the fall of the Roman Empire", "a recipe for bread"]


def texts(n: int) -> list[str]:
    return [f"Question {i}: tell me about {TOPICS[i % len(TOPICS)]} number {i * 7919 % 1000}" for i in range(n)]


async def load(calls: list, clients: int) -> tuple[float, list[float]]:
    """Run the awaitable factories with ``clients`` workers; (wall seconds, per-call latencies)."""
    queue = list(reversed(calls))
    latencies: list[float] = []

    async def worker() -> None:
        while queue:
            call = queue.pop()
            started = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    return time.perf_counter() - started, latencies


def row(name: str, wall: float, latencies: list[float]) -> str:
    ms = sorted(1000 * x for x in latencies)
    p99 = ms[min(len(ms) - 1, int(0.99 * len(ms)))]
    return f"| {name} | {len(ms) / wall:,.0f} | {statistics.median(ms):.1f} | {p99:.1f} |"


async def bench_embedder(embedder, requests: int, clients: int) -> None:
    print(f"\nEmbed, 1 text per request, {clients} concurrent clients, {requests} requests\n")
    print("| batching | requests/s | p50 ms | p99 ms |\n|---|---|---|---|")
    for max_batch, wait in [(1, 0.0), (64, 0.0), (64, 2.0), (64, 5.0)]:
        config = EmbedderServiceConfig(batching=BatchingConfig(max_batch=max_batch, max_wait_ms=wait))
        server = await start_embedder_server(config, "127.0.0.1:0", embedder=embedder)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = embedder_pb2_grpc.EmbedderStub(channel)
            calls = [lambda t=t, stub=stub: stub.Embed(embedder_pb2.EmbedRequest(texts=[t])) for t in texts(requests)]
            await load(calls[:clients], clients)  # warm-up
            wall, latencies = await load(calls, clients)
        stats = server.embedder.batcher.stats
        print(row(f"max_batch {max_batch}, max_wait {wait:g} ms (mean batch {stats.items / stats.batches:.1f})", wall, latencies))
        await server.stop(0)


async def bench_router(embedder, requests: int, clients: int) -> None:
    from avengers.config.clustering import ClusteringConfig
    from avengers.core.fit import fit_router_on_embeddings
    from avengers.core.labels import LabeledQuery, LabelSet

    calibration = texts(512)
    models = [f"model-{i}" for i in range(8)]
    rng = np.random.default_rng(0)
    rows = [LabeledQuery(str(i), "bench", "train", q, {m: float(rng.random() < 0.5) for m in models}) for i, q in enumerate(calibration)]
    artifact = fit_router_on_embeddings(
        LabelSet(rows=rows, models=models), embedder.encode(calibration), embedder.name, ClusteringConfig(k=64, n_init=2)
    )
    with tempfile.TemporaryDirectory() as tmp:
        store_config = StoreConfig(qdrant_path=str(Path(tmp) / "qdrant"))
        with create_store(store_config) as store:
            store.publish_and_activate(artifact)
        embedder_server = await start_embedder_server(address="127.0.0.1:0", embedder=embedder)
        router = await start_router_server(
            RouterServiceConfig(store=store_config, embedder_address=f"127.0.0.1:{embedder_server.port}"), "127.0.0.1:0"
        )
        print(f"\nRoute, K=64 clusters x 8 models, {clients} concurrent clients, {requests} requests\n")
        print("| input, strategy | requests/s | p50 ms | p99 ms |\n|---|---|---|---|")
        queries = texts(requests)
        vectors = embedder.encode(queries)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{router.port}") as channel:
            stub = router_pb2_grpc.RouterStub(channel)
            soft = router_pb2.ROUTING_STRATEGY_SOFT
            cases = {
                "embedding, nearest": [router_pb2.RouteRequest(embedding=common_pb2.Vector(values=v.tolist())) for v in vectors],
                "embedding, soft (top_k 3)": [
                    router_pb2.RouteRequest(embedding=common_pb2.Vector(values=v.tolist()), strategy=soft, top_k=3) for v in vectors
                ],
                "query text via the Embedder service, nearest": [router_pb2.RouteRequest(query=q) for q in queries],
            }
            for name, reqs in cases.items():
                calls = [lambda r=r: stub.Route(r) for r in reqs]
                await load(calls[:clients], clients)
                print(row(name, *await load(calls, clients)))
        await router.stop(0)
        await embedder_server.stop(0)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--clients", type=int, default=16)
    args = parser.parse_args()
    embedder = create_embedder(EmbeddingConfig())
    await bench_embedder(embedder, args.requests, args.clients)
    await bench_router(embedder, args.requests, args.clients)


if __name__ == "__main__":
    asyncio.run(main())
