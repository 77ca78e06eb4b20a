"""The model pool on Ray Serve, on CPU: two real models (llama.cpp SmolLM2 and replay) behind the gRPC ingress,
a replica killed mid-request, and the rendered Serve config."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import grpc
import pytest
import yaml

from avengers.cli import main as cli_main
from avengers.config.model_pool import MODEL_POOL_SERVICER_FUNCTION, ModelPoolConfig
from avengers.services.model_pool.serve_config import render_serve_config
from avengers.v1 import common_pb2, model_pool_pb2, model_pool_pb2_grpc
from conftest import free_port, write_jsonl

pytestmark = pytest.mark.slow
# Async tests share the module-scoped fixtures' event loop.
module_loop = pytest.mark.asyncio(loop_scope="module")

APP = "model_pool"
METADATA = (("application", APP),)


def pool_config(labels: str, grpc_port: int) -> ModelPoolConfig:
    return ModelPoolConfig.model_validate(
        {
            "app_name": APP,
            "server": {"host": "127.0.0.1", "port": grpc_port},
            "models": [
                {
                    "name": "smollm2",
                    "backend": "llama_cpp",
                    "llama_cpp": {"n_ctx": 512, "n_threads": 1},
                    "sampling": {"max_tokens": 8},
                    "resources": {"num_cpus": 1},
                    "autoscaling": {"min_replicas": 1, "max_replicas": 1},
                },
                {
                    "name": "replay-7b",
                    "backend": "replay",
                    "replay": {"labels_path": labels},
                    "resources": {"num_cpus": 0.25},
                },
                {
                    # The same records served slowly, to have a request in flight when its replica is killed.
                    "name": "replay-slow",
                    "backend": "replay",
                    "replay": {"labels_path": labels, "label_model": "replay-7b", "latency_s": 3.0},
                    "resources": {"num_cpus": 0.25},
                    "health_check_period_s": 1.0,
                },
            ],
            "ingress": {"num_cpus": 0.1},
        }
    )


@pytest.fixture(scope="module")
def labels_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("ray-pool") / "labels.jsonl"
    rows = [
        {"id": "t1", "dataset": "gsm8k", "split": "test", "query": "What is 6*7?", "scores": {"replay-7b": 1.0}},
        {"id": "t2", "dataset": "mmlu", "split": "test", "query": "Pick one.\nA) x\nB) y", "scores": {"replay-7b": 0.0}},
    ]
    write_jsonl(path, rows)
    return str(path)


@pytest.fixture(scope="module")
def ray_pool(labels_file):
    ray = pytest.importorskip("ray")
    from ray import serve

    from avengers.cli.pool import start_pool_on_ray

    config = pool_config(labels_file, free_port())
    config = config.model_copy(update={"http_port": free_port()})
    # Ray waits 30 s for its GCS server by default; a loaded 2-core CI machine can need more.
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


def gen(model: str, prompt: str, **sampling) -> model_pool_pb2.GenerateRequest:
    return model_pool_pb2.GenerateRequest(model=model, prompt=prompt, sampling=common_pb2.SamplingParams(**sampling))


@module_loop
async def test_generate_through_the_grpc_ingress(stub):
    smol = await stub.Generate(gen("smollm2", "Say hello.", n=3, seed=4, max_tokens=6), metadata=METADATA, timeout=120)
    assert smol.model == "smollm2" and [s.index for s in smol.samples] == [0, 1, 2]
    assert all(s.text and 1 <= s.completion_tokens <= 6 for s in smol.samples)
    assert smol.usage.prompt_tokens > 0
    replay = await stub.Generate(gen("replay-7b", "What is 6*7?", n=4), metadata=METADATA, timeout=60)
    assert len({s.text for s in replay.samples}) == 1 and "\\boxed{" in replay.samples[0].text
    wrong = await stub.Generate(
        model_pool_pb2.GenerateRequest(model="replay-7b", prompt="?", task_id="t2", sampling=common_pb2.SamplingParams(n=2)),
        metadata=METADATA,
        timeout=60,
    )
    assert all(s.text in ("Answer: A", "Answer: B") for s in wrong.samples)


@module_loop
async def test_stream_through_the_grpc_ingress(stub):
    whole = await stub.Generate(gen("smollm2", "Name a colour.", n=2, seed=8, max_tokens=6), metadata=METADATA, timeout=120)
    texts, finishes = {0: "", 1: ""}, {}
    async for chunk in stub.GenerateStream(
        gen("smollm2", "Name a colour.", n=2, seed=8, max_tokens=6), metadata=METADATA, timeout=120
    ):
        texts[chunk.index] += chunk.delta
        if chunk.finish_reason:
            finishes[chunk.index] = chunk.finish_reason
    assert texts == {s.index: s.text for s in whole.samples}
    assert finishes == {s.index: s.finish_reason for s in whole.samples}


@module_loop
async def test_list_models_counts_replicas(stub):
    listed = await stub.ListModels(model_pool_pb2.ListModelsRequest(), metadata=METADATA, timeout=60)
    models = {m.name: m for m in listed.models}
    assert set(models) == {"smollm2", "replay-7b", "replay-slow"}
    assert models["smollm2"].backend == "llama_cpp" and models["smollm2"].model_id.endswith(".gguf")
    assert models["replay-7b"].replicas == 1


@module_loop
async def test_statuses_through_the_ingress(stub):
    cases = [
        (gen("ghost", "hi"), grpc.StatusCode.NOT_FOUND, "unknown model 'ghost'"),
        (gen("smollm2", "hi", n=99), grpc.StatusCode.INVALID_ARGUMENT, "n=99"),
        (gen("smollm2", "hi", top_p=0.0), grpc.StatusCode.INVALID_ARGUMENT, "top_p"),
        (gen("replay-7b", "never recorded"), grpc.StatusCode.NOT_FOUND, "no record"),  # raised inside the replica
    ]
    for request, code, fragment in cases:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Generate(request, metadata=METADATA, timeout=60)
        assert err.value.code() == code and fragment in err.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        async for _ in stub.GenerateStream(gen("ghost", "hi"), metadata=METADATA, timeout=60):
            pass
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def replica_actors(deployment: str) -> list[str]:
    import ray

    return sorted(
        a["name"]
        for a in ray.util.list_named_actors(all_namespaces=True)
        if a["name"].startswith("SERVE_REPLICA::") and f"#{deployment}#" in a["name"]
    )


@module_loop
async def test_killed_replica_fails_in_flight_call_with_unavailable_then_recovers(stub, ray_pool):
    import ray

    request = gen("replay-slow", "What is 6*7?", n=2)
    await stub.Generate(request, metadata=METADATA, timeout=60)  # the replica is up
    (before,) = replica_actors("model-replay-slow")
    in_flight = asyncio.ensure_future(stub.Generate(request, metadata=METADATA, timeout=60))
    await asyncio.sleep(1.0)  # inside the replica's 3 s of simulated latency
    ray.kill(ray.get_actor(before, namespace="serve"), no_restart=False)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await in_flight
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "replay-slow" in err.value.details()
    # Ray Serve replaces the replica; calls succeed again (bounded wait).
    deadline = time.monotonic() + 120
    while True:
        try:
            response = await stub.Generate(request, metadata=METADATA, timeout=60)
            break
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.UNAVAILABLE, exc.details()
            assert time.monotonic() < deadline, "the replica was not replaced in time"
            await asyncio.sleep(1.0)
    assert len(response.samples) == 2
    # Other models were never affected.
    other = await stub.Generate(gen("replay-7b", "What is 6*7?"), metadata=METADATA, timeout=60)
    assert len(other.samples) == 1


# -- the rendered Serve config (no cluster needed) ---------------------------------------------------------


def test_serve_config_is_valid_for_ray_serve(labels_file):
    from ray.serve.schema import ServeDeploySchema

    config = pool_config(labels_file, 9000)
    rendered = render_serve_config(config)
    schema = ServeDeploySchema.model_validate(rendered)
    assert rendered["grpc_options"] == {"port": 9000, "grpc_servicer_functions": [MODEL_POOL_SERVICER_FUNCTION]}
    (app,) = schema.applications
    assert app.name == APP and app.import_path == "avengers.services.model_pool.app:build_app"
    assert ModelPoolConfig.model_validate(app.args) == config  # the args ARE the pool config
    deployments = {d.name: d for d in app.deployments}
    assert set(deployments) == {"ModelPoolIngress", "model-smollm2", "model-replay-7b", "model-replay-slow"}
    smol = deployments["model-smollm2"]
    assert smol.autoscaling_config["min_replicas"] == 1 and smol.ray_actor_options.num_cpus == 1
    assert deployments["model-replay-slow"].health_check_period_s == 1.0
    with pytest.raises(ValueError, match="fixed port"):
        render_serve_config(pool_config(labels_file, 0))


def test_build_app_from_a_config_path_and_inline(tmp_path, labels_file):
    from avengers.services.model_pool.app import build_app, pool_config_from_args

    config = pool_config(labels_file, 9000)
    path = tmp_path / "pool.yaml"
    path.write_text(yaml.safe_dump(config.to_dict()))
    assert pool_config_from_args({"config": str(path)}) == config
    assert pool_config_from_args(config.to_dict()) == config
    app = build_app({"config": str(path)})
    assert type(app).__name__ == "Application"


def test_cli_serve_config(tmp_path, labels_file, capsys):
    path = tmp_path / "pool.yaml"
    path.write_text(yaml.safe_dump(pool_config(labels_file, 9000).to_dict()))
    assert cli_main(["pool", "serve-config", "--config", str(path), "--grpc-port", "9100"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["grpc_options"]["port"] == 9100
    assert [m["name"] for m in printed["applications"][0]["args"]["models"]] == ["smollm2", "replay-7b", "replay-slow"]
    assert cli_main(["pool", "serve-config", "--config", str(tmp_path / "missing.yaml")]) == 2


@pytest.mark.parametrize("example", ["cpu", "gpu"])
def test_example_configs_render(example):
    from ray.serve.schema import ServeDeploySchema

    config = ModelPoolConfig.from_yaml(Path(__file__).parent.parent / "examples" / "model_pool" / f"{example}.yaml")
    ServeDeploySchema.model_validate(render_serve_config(config))
    backends = {m.backend for m in config.models}
    assert backends == ({"llama_cpp", "replay"} if example == "cpu" else {"vllm"})
