"""The standalone model pool serving the real vLLM over gRPC: the statuses the gateway relies on (a prompt
over the context is INVALID_ARGUMENT, so no fallback; a dead engine is UNAVAILABLE, so fallback)."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from lane import MAX_MODEL_LEN, kill_engine_cores, require_vllm, vllm_model

require_vllm()

from avengers.config.model_pool import ModelPoolConfig
from avengers.services.model_pool.server import start_model_pool_server
from avengers.v1 import common_pb2, model_pool_pb2, model_pool_pb2_grpc

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
module_loop = pytest.mark.asyncio(loop_scope="module")


@pytest.fixture(scope="module")
async def pool():
    config = ModelPoolConfig.model_validate({"models": [vllm_model()], "limits": {"max_prompt_chars": 20000}})
    running = await start_model_pool_server(config, "127.0.0.1:0")
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
    yield model_pool_pb2_grpc.ModelPoolStub(channel)
    await channel.close()
    await running.stop(0)


def gen(prompt: str = "Name a colour.", **sampling) -> model_pool_pb2.GenerateRequest:
    return model_pool_pb2.GenerateRequest(
        model="smol-vllm", prompt=prompt, sampling=common_pb2.SamplingParams(**sampling)
    )


@module_loop
async def test_generate_ten_samples(pool):
    response = await pool.Generate(gen(n=10, seed=3, max_tokens=12), timeout=300)
    assert [s.index for s in response.samples] == list(range(10))
    assert all(s.model == "smol-vllm" and 1 <= s.completion_tokens <= 12 for s in response.samples)
    assert response.usage.prompt_tokens > 0
    assert response.usage.completion_tokens == sum(s.completion_tokens for s in response.samples)


@module_loop
async def test_stream(pool):
    whole = await pool.Generate(gen(n=2, seed=5, max_tokens=10), timeout=300)
    texts = {0: "", 1: ""}
    async for chunk in pool.GenerateStream(gen(n=2, seed=5, max_tokens=10), timeout=300):
        texts[chunk.index] += chunk.delta
    assert texts == {s.index: s.text for s in whole.samples}


@module_loop
async def test_greedy_n_samples(pool):
    response = await pool.Generate(gen(n=4, temperature=0.0, max_tokens=8), timeout=300)
    assert len(response.samples) == 4 and len({s.text for s in response.samples}) == 1


@module_loop
async def test_prompt_over_the_context_is_invalid_argument(pool):
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await pool.Generate(gen("word " * (MAX_MODEL_LEN + 50), max_tokens=4), timeout=300)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # was UNAVAILABLE: the gateway tried the next model
    assert "smol-vllm" in err.value.details() and f"context of {MAX_MODEL_LEN}" in err.value.details()


@module_loop
async def test_list_models(pool):
    listed = await pool.ListModels(model_pool_pb2.ListModelsRequest(), timeout=60)
    [model] = listed.models
    assert (model.name, model.backend, model.replicas) == ("smol-vllm", "vllm", 1)


@module_loop
async def test_dead_engine_is_unavailable(pool):
    assert kill_engine_cores() >= 1
    code = None
    for _ in range(120):  # until vLLM has noticed its core is gone
        try:
            await pool.Generate(gen(max_tokens=4), timeout=60)
        except grpc.aio.AioRpcError as exc:
            code, details = exc.code(), exc.details()
            break
        await asyncio.sleep(0.25)
    assert code == grpc.StatusCode.UNAVAILABLE and "engine died" in details
