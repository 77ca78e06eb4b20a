"""The Ray Serve model pool with a replica running the real vLLM: generate, stream and the statuses through
Ray Serve's gRPC ingress (engine errors raised inside the replica cross Ray and map at the ingress)."""

from __future__ import annotations

import os
import socket

import grpc
import pytest
from lane import MAX_MODEL_LEN, require_vllm, vllm_model

require_vllm()

from avengers.config.model_pool import ModelPoolConfig
from avengers.v1 import common_pb2, model_pool_pb2, model_pool_pb2_grpc

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]
module_loop = pytest.mark.asyncio(loop_scope="module")

APP = "model_pool"
METADATA = (("application", APP),)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_pool():
    import ray
    from ray import serve

    from avengers.cli.pool import start_pool_on_ray

    config = ModelPoolConfig.model_validate(
        {
            "app_name": APP,
            "server": {"host": "127.0.0.1", "port": free_port()},
            "http_port": free_port(),
            "models": [vllm_model(resources={"num_cpus": 1}, autoscaling={"min_replicas": 1, "max_replicas": 1})],
            "limits": {"max_prompt_chars": 20000},
            "ingress": {"num_cpus": 0.1},
        }
    )
    os.environ.setdefault("RAY_gcs_server_port_wait_time_s", "120")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, namespace="serve")
    try:
        start_pool_on_ray(config)
        yield config
    finally:
        serve.shutdown()
        ray.shutdown()


@pytest.fixture(scope="module")
async def stub(ray_pool):
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{ray_pool.server.port}")
    yield model_pool_pb2_grpc.ModelPoolStub(channel)
    await channel.close()


def gen(prompt: str = "Name a colour.", **sampling) -> model_pool_pb2.GenerateRequest:
    return model_pool_pb2.GenerateRequest(
        model="smol-vllm", prompt=prompt, sampling=common_pb2.SamplingParams(**sampling)
    )


@module_loop
async def test_generate_ten_samples_through_ray_serve(stub):
    response = await stub.Generate(gen(n=10, seed=3, max_tokens=12), metadata=METADATA, timeout=300)
    assert [s.index for s in response.samples] == list(range(10))
    assert all(1 <= s.completion_tokens <= 12 for s in response.samples) and response.usage.prompt_tokens > 0


@module_loop
async def test_stream_through_ray_serve(stub):
    whole = await stub.Generate(gen(n=2, seed=5, max_tokens=10), metadata=METADATA, timeout=300)
    texts = {0: "", 1: ""}
    async for chunk in stub.GenerateStream(gen(n=2, seed=5, max_tokens=10), metadata=METADATA, timeout=300):
        texts[chunk.index] += chunk.delta
    assert texts == {s.index: s.text for s in whole.samples}


@module_loop
async def test_greedy_n_samples_through_ray_serve(stub):
    response = await stub.Generate(gen(n=3, temperature=0.0, max_tokens=8), metadata=METADATA, timeout=300)
    assert len(response.samples) == 3 and len({s.text for s in response.samples}) == 1


@module_loop
async def test_prompt_over_the_context_is_invalid_argument_through_ray_serve(stub):
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Generate(gen("word " * (MAX_MODEL_LEN + 50), max_tokens=4), metadata=METADATA, timeout=300)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"context of {MAX_MODEL_LEN}" in err.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        async for _ in stub.GenerateStream(gen("word " * (MAX_MODEL_LEN + 50), max_tokens=4), metadata=METADATA, timeout=300):
            pass
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


@module_loop
async def test_list_models_through_ray_serve(stub):
    listed = await stub.ListModels(model_pool_pb2.ListModelsRequest(), metadata=METADATA, timeout=60)
    [model] = listed.models
    assert (model.name, model.backend) == ("smol-vllm", "vllm") and model.model_id.endswith("smollm2-135m-hf")
