"""The standalone model pool over real gRPC: generate, stream, list, and clear statuses for bad input."""

from __future__ import annotations

import ast
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

import avengers.engines
from avengers.config.model_pool import ModelPoolConfig
from avengers.engines import (
    Engine,
    EngineDead,
    EngineMisconfigured,
    EngineNotInstalled,
    EngineTimeout,
    EngineUnavailable,
    InvalidRequest,
    NotServed,
    PromptTooLong,
    UnknownTask,
    create_engine,
)
from avengers.rpc.server import ServiceBinding, start_server
from avengers.services.model_pool.server import ModelPoolServer, start_model_pool_server
from avengers.services.model_pool.servicer import EngineTarget, ModelPoolServicer
from avengers.v1 import common_pb2, model_pool_pb2, model_pool_pb2_grpc
from conftest import write_jsonl

# Async tests share the module-scoped fixtures' event loop.
module_loop = pytest.mark.asyncio(loop_scope="module")


@pytest.fixture(scope="module")
def labels_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("pool") / "labels.jsonl"
    rows = [
        {"id": "t1", "dataset": "gsm8k", "split": "test", "query": "What is 6*7?", "scores": {"replay-7b": 1.0}},
        {"id": "t2", "dataset": "mmlu", "split": "test", "query": "Pick A or B.", "scores": {"replay-7b": 0.0}},
    ]
    write_jsonl(path, rows)
    return str(path)


def pool_config(labels: str) -> ModelPoolConfig:
    return ModelPoolConfig.model_validate(
        {
            "models": [
                {
                    "name": "smollm2",
                    "backend": "llama_cpp",
                    "sampling": {"max_tokens": 8, "temperature": 0.8},
                    "max_n": 8,
                    "max_tokens_limit": 64,
                    "resources": {"num_cpus": 1},
                },
                {"name": "replay-7b", "backend": "replay", "replay": {"labels_path": labels}},
            ],
            "limits": {"max_prompt_chars": 2000, "max_stop_strings": 2},
        }
    )


@pytest.fixture(scope="module")
async def pool(labels_file):
    running = await start_model_pool_server(pool_config(labels_file), "127.0.0.1:0")
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
    yield running, model_pool_pb2_grpc.ModelPoolStub(channel), channel
    await channel.close()
    await running.stop(0)


def gen(model="smollm2", prompt="Say hello.", **sampling) -> model_pool_pb2.GenerateRequest:
    return model_pool_pb2.GenerateRequest(model=model, prompt=prompt, sampling=common_pb2.SamplingParams(**sampling))


@module_loop
async def test_generate_n_samples_from_llama_cpp(pool):
    running, stub, _ = pool
    response = await stub.Generate(gen(n=3, seed=5, max_tokens=6))
    assert response.model == "smollm2" and response.request_id
    assert [s.index for s in response.samples] == [0, 1, 2]
    assert all(s.model == "smollm2" and s.text and 1 <= s.completion_tokens <= 6 for s in response.samples)
    assert response.usage.prompt_tokens > 0
    assert response.usage.completion_tokens == sum(s.completion_tokens for s in response.samples)
    assert running.engines["smollm2"].stats.prefills >= 1
    # Model defaults fill unset parameters: n=0 -> 1 sample, max_tokens=0 -> 8.
    default = await stub.Generate(model_pool_pb2.GenerateRequest(model="smollm2", prompt="Hi", request_id="mine"))
    assert len(default.samples) == 1 and default.samples[0].completion_tokens <= 8
    assert default.request_id == "mine"


@module_loop
async def test_generate_with_chat_messages(pool):
    _, stub, _ = pool
    request = model_pool_pb2.GenerateRequest(
        model="smollm2",
        messages=[
            model_pool_pb2.ChatMessage(role="system", content="You are terse."),
            model_pool_pb2.ChatMessage(role="user", content="Name a fruit."),
        ],
        sampling=common_pb2.SamplingParams(n=2, temperature=0.0, max_tokens=6),
    )
    response = await stub.Generate(request)
    assert response.samples[0].text == response.samples[1].text  # greedy


@module_loop
async def test_generate_replay_by_task_and_query(pool):
    _, stub, _ = pool
    by_task = await stub.Generate(
        model_pool_pb2.GenerateRequest(
            model="replay-7b", prompt="anything", task_id="t1", sampling=common_pb2.SamplingParams(n=4)
        )
    )
    assert len({s.text for s in by_task.samples}) == 1 and "\\boxed{" in by_task.samples[0].text
    by_query = await stub.Generate(gen("replay-7b", "Pick A or B.", n=2, seed=3))
    assert all(s.text.startswith("Answer: ") for s in by_query.samples)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Generate(gen("replay-7b", "Never recorded"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND and "replay-7b" in err.value.details()


@module_loop
async def test_stream(pool):
    _, stub, _ = pool
    whole = await stub.Generate(gen(n=2, seed=9, max_tokens=6))
    texts, finishes = {0: "", 1: ""}, {}
    async for chunk in stub.GenerateStream(gen(n=2, seed=9, max_tokens=6)):
        assert chunk.model == "smollm2"
        texts[chunk.index] += chunk.delta
        if chunk.finish_reason:
            finishes[chunk.index] = (chunk.finish_reason, chunk.completion_tokens, chunk.prompt_tokens)
    assert texts == {s.index: s.text for s in whole.samples}
    usage = whole.usage.prompt_tokens  # a sample's last chunk has its tokens and the request's prompt tokens
    assert finishes == {s.index: (s.finish_reason, s.completion_tokens, usage) for s in whole.samples}
    replay_chunks = [c async for c in stub.GenerateStream(gen("replay-7b", "What is 6*7?", n=2))]
    assert [(c.index, c.finish_reason) for c in replay_chunks] == [(0, "stop"), (1, "stop")]


@module_loop
async def test_stream_errors_are_statuses(pool):
    _, stub, _ = pool
    with pytest.raises(grpc.aio.AioRpcError) as err:
        async for _ in stub.GenerateStream(gen("nope")):
            pass
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as err:
        async for _ in stub.GenerateStream(gen(n=99)):
            pass
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


@module_loop
async def test_list_models_and_health(pool):
    running, stub, channel = pool
    listed = await stub.ListModels(model_pool_pb2.ListModelsRequest())
    models = {m.name: m for m in listed.models}
    assert set(models) == {"smollm2", "replay-7b"}
    assert models["smollm2"].backend == "llama_cpp" and models["smollm2"].model_id.endswith(".gguf")
    assert models["replay-7b"].backend == "replay" and models["smollm2"].replicas == 1
    health = health_pb2_grpc.HealthStub(channel)
    status = await health.Check(health_pb2.HealthCheckRequest(service="avengers.v1.ModelPool"))
    assert status.status == health_pb2.HealthCheckResponse.SERVING
    assert isinstance(running, ModelPoolServer)


@pytest.mark.parametrize(
    ("request_", "code", "fragment"),
    [
        (gen("ghost"), grpc.StatusCode.NOT_FOUND, "unknown model 'ghost'"),
        (gen(""), grpc.StatusCode.INVALID_ARGUMENT, "model is required"),
        (gen(prompt="   "), grpc.StatusCode.INVALID_ARGUMENT, "empty prompt"),
        (gen(prompt="x" * 2001), grpc.StatusCode.INVALID_ARGUMENT, "2001 characters"),
        (gen(n=9), grpc.StatusCode.INVALID_ARGUMENT, "n=9 is outside [1, 8]"),
        (gen(temperature=2.5), grpc.StatusCode.INVALID_ARGUMENT, "temperature"),
        (gen(temperature=-0.1), grpc.StatusCode.INVALID_ARGUMENT, "temperature"),
        (gen(top_p=0.0), grpc.StatusCode.INVALID_ARGUMENT, "top_p"),
        (gen(top_p=1.5), grpc.StatusCode.INVALID_ARGUMENT, "top_p"),
        (gen(max_tokens=65), grpc.StatusCode.INVALID_ARGUMENT, "max_tokens=65 exceeds the limit of 64"),
        (gen(stop=["a", "b", "c"]), grpc.StatusCode.INVALID_ARGUMENT, "stop strings"),
        (gen(stop=[""]), grpc.StatusCode.INVALID_ARGUMENT, "stop strings"),
        (
            model_pool_pb2.GenerateRequest(
                model="smollm2", messages=[model_pool_pb2.ChatMessage(role="robot", content="hi")]
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "roles",
        ),
        (
            model_pool_pb2.GenerateRequest(
                model="smollm2", messages=[model_pool_pb2.ChatMessage(role="system", content="only system")]
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "no user message",
        ),
    ],
)
@module_loop
async def test_bad_requests_get_clear_statuses(pool, request_, code, fragment):
    _, stub, _ = pool
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Generate(request_)
    assert err.value.code() == code
    assert fragment in err.value.details()


@module_loop
async def test_server_survives_bad_requests(pool):
    _, stub, _ = pool
    ok = await stub.Generate(gen("replay-7b", "What is 6*7?"))
    assert len(ok.samples) == 1


@module_loop
async def test_start_fails_cleanly_on_a_broken_model(labels_file):
    config = ModelPoolConfig.model_validate(
        {
            "models": [
                {"name": "good", "backend": "replay", "replay": {"labels_path": labels_file, "label_model": "replay-7b"}},
                {"name": "broken", "backend": "llama_cpp", "model_id": "/no/such.gguf"},
            ]
        }
    )
    with pytest.raises(RuntimeError, match="model 'broken' failed to start"):
        await start_model_pool_server(config, "127.0.0.1:0")


class CrashingEngine(Engine):
    """An engine whose library blows up mid-request (e.g. a segfault-adjacent RuntimeError)."""

    async def generate(self, request):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")


@module_loop
async def test_engine_crash_mid_request_is_unavailable_naming_the_model(labels_file):
    config = pool_config(labels_file)
    crashing = CrashingEngine(config.model("replay-7b"))
    healthy = create_engine(config.model("smollm2"))
    await healthy.start()
    servicer = ModelPoolServicer(config, {"replay-7b": EngineTarget(crashing), "smollm2": EngineTarget(healthy)})
    running = await start_server(
        [ServiceBinding(servicer, model_pool_pb2_grpc.add_ModelPoolServicer_to_server, "avengers.v1.ModelPool")],
        "127.0.0.1:0",
    )
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = model_pool_pb2_grpc.ModelPoolStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.Generate(gen("replay-7b", "What is 6*7?"))
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "model 'replay-7b' failed" in err.value.details() and "CUDA error" in err.value.details()
            with pytest.raises(grpc.aio.AioRpcError) as err:
                async for _ in stub.GenerateStream(gen("replay-7b", "What is 6*7?")):
                    pass
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            ok = await stub.Generate(gen("smollm2", "Hi", max_tokens=2))  # the other model is unaffected
            assert len(ok.samples) == 1
    finally:
        await running.stop(0)
        await healthy.shutdown()


class FailingEngine(Engine):
    """An engine failing every call with one given engine error (as a backend would)."""

    def __init__(self, config, error):
        super().__init__(config)
        self.error = error

    async def generate(self, request):
        raise self.error


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (PromptTooLong("prompt of 9000 tokens; context is 8192"), grpc.StatusCode.INVALID_ARGUMENT),
        (InvalidRequest("n must be 1 here"), grpc.StatusCode.INVALID_ARGUMENT),
        (UnknownTask("no record of task 't9'"), grpc.StatusCode.NOT_FOUND),
        (NotServed("server does not serve 'x'"), grpc.StatusCode.NOT_FOUND),
        (EngineUnavailable("server down"), grpc.StatusCode.UNAVAILABLE),
        (EngineDead("engine core died"), grpc.StatusCode.UNAVAILABLE),
        (EngineTimeout("server timed out"), grpc.StatusCode.DEADLINE_EXCEEDED),
        (EngineMisconfigured("API key unset"), grpc.StatusCode.FAILED_PRECONDITION),
        (EngineNotInstalled("no vLLM"), grpc.StatusCode.FAILED_PRECONDITION),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, Exception) else None,
)
@module_loop
async def test_engine_errors_map_to_statuses_at_the_servicer(labels_file, error, code):
    config = pool_config(labels_file)
    servicer = ModelPoolServicer(
        config,
        {
            "replay-7b": EngineTarget(FailingEngine(config.model("replay-7b"), error)),
            "smollm2": EngineTarget(FailingEngine(config.model("smollm2"), error)),
        },
    )
    running = await start_server(
        [ServiceBinding(servicer, model_pool_pb2_grpc.add_ModelPoolServicer_to_server, "avengers.v1.ModelPool")],
        "127.0.0.1:0",
    )
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = model_pool_pb2_grpc.ModelPoolStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.Generate(gen("replay-7b", "What is 6*7?"))
            assert (err.value.code(), err.value.details()) == (code, str(error))
            with pytest.raises(grpc.aio.AioRpcError) as err:  # streams map the same way
                async for _ in stub.GenerateStream(gen("smollm2", "Hi")):
                    pass
            assert (err.value.code(), err.value.details()) == (code, str(error))
    finally:
        await running.stop(0)


def test_engines_are_transport_neutral():
    """No engine module knows gRPC: statuses are chosen by the model pool (services/model_pool/errors.py)."""
    engines_dir = Path(avengers.engines.__file__).parent
    for module in sorted(engines_dir.glob("*.py")):
        tree = ast.parse(module.read_text())
        imported = {
            name
            for node in ast.walk(tree)
            if isinstance(node, (ast.Import, ast.ImportFrom))
            for name in ([a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""])
        }
        assert not {n for n in imported if n.split(".")[0] == "grpc" or n.startswith("avengers.rpc")}, module.name
