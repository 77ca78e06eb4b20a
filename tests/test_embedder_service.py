"""Embedder service over real gRPC: micro-batching across concurrent callers, limits, statuses."""

from __future__ import annotations

import asyncio
import threading

import grpc
import numpy as np
import pytest
from serve_process import start_serve, stop_serve

from avengers.config.embedder_service import BatchingConfig, EmbedderServiceConfig
from avengers.config.embedding import EmbeddingConfig
from avengers.core.embedding import Embedder, HashingEmbedder, create_embedder
from avengers.services.embedder.server import start_embedder_server
from avengers.serving.batching import BatcherClosed, BatcherOverloaded, MicroBatcher
from avengers.v1 import embedder_pb2, embedder_pb2_grpc

HASHING = EmbeddingConfig(backend="hashing", dimension=32, max_text_chars=200)


@pytest.fixture(scope="module")
def minilm():
    return create_embedder(EmbeddingConfig())


class GatedEmbedder(Embedder):
    """Another embedder (default: hashing), but each model call waits until the test opens the gate."""

    def __init__(self, inner: Embedder | None = None) -> None:
        self.inner = inner or HashingEmbedder(HASHING)
        self.gate = threading.Event()
        self.calls: list[int] = []

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def dimension(self) -> int:
        return self.inner.dimension

    def _encode(self, texts: list[str]) -> np.ndarray:
        if texts != ["warm-up"]:
            self.calls.append(len(texts))
            if not self.gate.wait(timeout=60):
                raise RuntimeError("gate never opened")
        return self.inner.encode(texts)


def config(**batching) -> EmbedderServiceConfig:
    return EmbedderServiceConfig(embedding=HASHING, batching=BatchingConfig(**batching))


async def call(port: int, texts: list[str], timeout: float = 30) -> embedder_pb2.EmbedResponse:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        return await embedder_pb2_grpc.EmbedderStub(channel).Embed(embedder_pb2.EmbedRequest(texts=texts), timeout=timeout)


def vectors(response: embedder_pb2.EmbedResponse) -> np.ndarray:
    return np.array([list(v.values) for v in response.embeddings], dtype=np.float32)


async def test_concurrent_callers_are_batched_and_get_their_own_vectors(minilm):
    embedder = GatedEmbedder(minilm)
    cfg = EmbedderServiceConfig(batching=BatchingConfig(max_batch=32, max_wait_ms=0))
    server = await start_embedder_server(cfg, "127.0.0.1:0", embedder=embedder)
    try:
        requests = [[f"request {i} text {j}: how do I sort a list of {i * j} numbers?" for j in range(1 + i % 3)] for i in range(12)]
        calls = [asyncio.create_task(call(server.port, texts)) for texts in requests]
        total = sum(map(len, requests))
        batcher = server.embedder.batcher
        # The first request's model call waits at the gate while the other eleven queue up behind it.
        while not (embedder.calls and embedder.calls[0] + batcher.queued_items == total):
            await asyncio.sleep(0.01)
        embedder.gate.set()
        responses = await asyncio.gather(*calls)
        assert embedder.calls == [embedder.calls[0], total - embedder.calls[0]]  # eleven requests, one model call
        assert batcher.stats.requests == 12 and batcher.stats.batches == 2
        for texts, response in zip(requests, responses):
            assert response.model == minilm.name and response.dimension == 384
            np.testing.assert_allclose(vectors(response), minilm.encode(texts), atol=2e-5)
            np.testing.assert_allclose(np.linalg.norm(vectors(response), axis=1), 1.0, atol=1e-5)
    finally:
        embedder.gate.set()
        await server.stop(0)


async def test_info_reports_model_and_limits():
    server = await start_embedder_server(config(max_batch=8), "127.0.0.1:0")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            info = await embedder_pb2_grpc.EmbedderStub(channel).GetEmbedderInfo(embedder_pb2.GetEmbedderInfoRequest())
        assert (info.model, info.dimension, info.max_batch, info.max_text_chars) == ("hashing-32", 32, 8, 200)
    finally:
        await server.stop(0)


@pytest.mark.parametrize(
    ("texts", "message"),
    [
        ([], "no texts"),
        (["fine", ""], "text 1 is empty"),
        (["   "], "text 0 is empty"),
        (["x" * 201], "201 characters"),
        (["t"] * 9, "at most 8"),
    ],
)
async def test_bad_input_is_invalid_argument(texts, message):
    server = await start_embedder_server(config(max_batch=8), "127.0.0.1:0")
    try:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call(server.port, texts)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert message in err.value.details()
        ok = await call(server.port, ["x" * 200] + ["t"] * 7)  # at the limits: accepted
        assert len(ok.embeddings) == 8
    finally:
        await server.stop(0)


async def test_full_queue_is_resource_exhausted_and_nothing_is_lost():
    embedder = GatedEmbedder()
    server = await start_embedder_server(config(max_batch=2, max_wait_ms=0, max_queued_texts=2), "127.0.0.1:0", embedder=embedder)
    try:
        running = asyncio.create_task(call(server.port, ["a", "b"]))  # taken by the model, blocked on the gate
        while not embedder.calls:
            await asyncio.sleep(0.01)
        queued = asyncio.create_task(call(server.port, ["c", "d"]))  # fills the queue
        while server.embedder.batcher.queued_items < 2:
            await asyncio.sleep(0.01)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call(server.port, ["e"])
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "overloaded" in err.value.details()
        embedder.gate.set()
        first, second = await running, await queued
        np.testing.assert_allclose(vectors(first), embedder.encode(["a", "b"]), atol=1e-6)
        np.testing.assert_allclose(vectors(second), embedder.encode(["c", "d"]), atol=1e-6)
        assert server.embedder.batcher.stats.rejected == 1
    finally:
        embedder.gate.set()
        await server.stop(0)


async def test_caller_that_gives_up_frees_its_place():
    embedder = GatedEmbedder()
    server = await start_embedder_server(config(max_batch=2, max_wait_ms=0, max_queued_texts=2), "127.0.0.1:0", embedder=embedder)
    try:
        running = asyncio.create_task(call(server.port, ["a"]))
        while not embedder.calls:
            await asyncio.sleep(0.01)
        with pytest.raises(grpc.aio.AioRpcError) as err:  # waits behind the blocked batch, then its deadline passes
            await call(server.port, ["b", "c"], timeout=0.3)
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        while server.embedder.batcher.queued_items:  # the server sees the cancellation and drops the request
            await asyncio.sleep(0.01)
        embedder.gate.set()
        assert len((await running).embeddings) == 1
        again = await call(server.port, ["b", "c"])
        assert len(again.embeddings) == 2
        assert embedder.calls == [1, 2], "the abandoned request must never reach the model"
    finally:
        embedder.gate.set()
        await server.stop(0)


async def test_graceful_stop_finishes_in_flight_calls():
    embedder = GatedEmbedder()
    server = await start_embedder_server(config(max_wait_ms=0), "127.0.0.1:0", embedder=embedder)
    in_flight = asyncio.create_task(call(server.port, ["still answered"]))
    while not embedder.calls:
        await asyncio.sleep(0.01)
    stopping = asyncio.create_task(server.stop(grace=10))
    await asyncio.sleep(0.1)
    embedder.gate.set()
    response = await in_flight
    await stopping
    assert len(response.embeddings) == 1


async def test_batcher_failure_reaches_only_the_callers_in_that_batch():
    def encode(items: list[str]) -> list[str]:
        if "boom" in items:
            raise RuntimeError("model failed")
        return [s.upper() for s in items]

    batcher: MicroBatcher[str, list[str]] = MicroBatcher(encode, max_batch=2, max_wait_ms=20, max_queued=8)
    results = await asyncio.gather(
        batcher.submit(["a"]), batcher.submit(["boom"]), batcher.submit(["c", "d"]), return_exceptions=True
    )
    assert isinstance(results[0], RuntimeError) and isinstance(results[1], RuntimeError)  # one batch: a + boom
    assert results[2] == ["C", "D"]
    assert await batcher.submit(["e"]) == ["E"]  # the worker lives on
    with pytest.raises(ValueError):
        await batcher.submit(["x", "y", "z"])  # larger than one batch
    await batcher.close()
    with pytest.raises(BatcherClosed):
        await batcher.submit(["f"])


async def test_batcher_queue_bound_counts_items():
    started, release = threading.Event(), threading.Event()

    def echo(xs: list[int]) -> list[int]:
        started.set()
        release.wait(10)
        return xs

    batcher: MicroBatcher[int, list[int]] = MicroBatcher(echo, max_batch=2, max_wait_ms=0, max_queued=3)
    first = asyncio.create_task(batcher.submit([1, 2]))
    while not started.is_set():  # taken by the worker: no longer queued
        await asyncio.sleep(0.01)
    queued = asyncio.create_task(batcher.submit([3, 4]))
    while batcher.queued_items < 2:
        await asyncio.sleep(0.01)
    with pytest.raises(BatcherOverloaded):
        await batcher.submit([5, 6])  # 2 queued + 2 > 3
    release.set()
    assert await first == [1, 2] and await queued == [3, 4]
    await batcher.close()


async def test_avengers_serve_embedder(tmp_path):
    (tmp_path / "embedder.yaml").write_text(
        "embedding:\n  backend: hashing\n  dimension: 32\nbatching:\n  max_batch: 4\n"
    )
    process, port = await start_serve(
        "embedder", "--port", "0", "--host", "127.0.0.1", "--config", str(tmp_path / "embedder.yaml")
    )
    try:
        response = await call(port, ["served by the command"])
        assert (response.model, response.dimension) == ("hashing-32", 32)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call(port, ["t"] * 5)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        assert await stop_serve(process) == 0
