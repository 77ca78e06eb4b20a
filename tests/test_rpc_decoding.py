"""Undecodable request bytes (invalid UTF-8 in a string field, truncated data) end as INVALID_ARGUMENT with a
one-line message, are counted in the request metrics, and leave the server serving."""

from __future__ import annotations

import grpc
import pytest

from avengers.config.model_pool import ModelPoolConfig
from avengers.observability.metrics import RPC_REQUESTS
from avengers.services.model_pool.server import start_model_pool_server
from avengers.v1 import model_pool_pb2, model_pool_pb2_grpc
from conftest import write_jsonl

module_loop = pytest.mark.asyncio(loop_scope="module")

SERVICE = "avengers.v1.ModelPool"
INVALID_UTF8 = b"\x0a\x02\xff\xfe"  # field 1 (model, a string) holding two bytes that are not UTF-8
TRUNCATED = b"\x0a\x05ab"  # field 1 announced as 5 bytes, 2 sent
BAD_WIRE_TYPE = b"\x0f"  # field 1 with wire type 7, which does not exist


@pytest.fixture(scope="module")
async def pool(tmp_path_factory):
    labels = tmp_path_factory.mktemp("decoding") / "labels.jsonl"
    write_jsonl(labels, [{"id": "t1", "dataset": "d", "split": "test", "query": "What is 6*7?", "scores": {"r": 1.0}}])
    config = ModelPoolConfig.model_validate(
        {"models": [{"name": "r", "backend": "replay", "replay": {"labels_path": str(labels)}}]}
    )
    running = await start_model_pool_server(config, "127.0.0.1:0")
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
    yield channel
    await channel.close()
    await running.stop(0)


def counted(method: str, code: str) -> float:
    return RPC_REQUESTS.labels(SERVICE, method, code)._value.get()


@pytest.mark.parametrize("payload", [INVALID_UTF8, TRUNCATED, BAD_WIRE_TYPE], ids=["utf8", "truncated", "wiretype"])
@module_loop
async def test_undecodable_unary_request_is_invalid_argument_and_counted(pool, payload, caplog):
    call = pool.unary_unary(f"/{SERVICE}/Generate")  # no serializer: the bytes go out as they are
    before = counted("Generate", "INVALID_ARGUMENT")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call(payload, timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = err.value.details()
    assert details.startswith("the request could not be decoded") and "\n" not in details
    assert "Traceback" not in details and "DecodeError" not in details
    assert counted("Generate", "INVALID_ARGUMENT") == before + 1
    assert "Traceback" not in caplog.text


@module_loop
async def test_undecodable_streaming_call_is_invalid_argument_and_counted(pool):
    call = pool.unary_stream(f"/{SERVICE}/GenerateStream")
    before = counted("GenerateStream", "INVALID_ARGUMENT")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        async for _ in call(TRUNCATED, timeout=10):
            pass
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith("the request could not be decoded")
    assert counted("GenerateStream", "INVALID_ARGUMENT") == before + 1


@module_loop
async def test_server_still_serves_after_undecodable_requests(pool):
    stub = model_pool_pb2_grpc.ModelPoolStub(pool)
    before = counted("Generate", "OK")
    response = await stub.Generate(model_pool_pb2.GenerateRequest(model="r", prompt="What is 6*7?"), timeout=10)
    assert len(response.samples) == 1
    assert counted("Generate", "OK") == before + 1
    listed = await stub.ListModels(model_pool_pb2.ListModelsRequest(), timeout=10)  # empty request: still fine
    assert [m.name for m in listed.models] == ["r"]
