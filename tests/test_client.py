"""avengers.client (sync and async) and Gateway.AskStream over real gRPC, in front of a real stack
(tests/ensemble_stack.py), plus the ``avengers ask`` / ``avengers feedback`` commands built on the client."""

from __future__ import annotations

import asyncio
import json
import os
import sys

import pytest
from certs import TestCA
from ensemble_stack import running_stack

from avengers.client import AsyncClient, AvengersError, Client, ask_request
from avengers.config.gateway_service import GatewayServiceConfig
from avengers.services.gateway.server import start_gateway_server

pytestmark = pytest.mark.asyncio(loop_scope="module")

TOKEN_ENV = "AVENGERS_TEST_CLIENT_TOKEN"
TOKEN = "client-test-token"


@pytest.fixture(scope="module")
async def stack(tmp_path_factory):
    async with running_stack(tmp_path_factory.mktemp("client")) as running:
        yield running


@pytest.fixture(scope="module")
async def guarded(stack, tmp_path_factory):
    """A second gateway over the same services, with TLS and token auth; yields (address, CA file)."""
    ca = TestCA(tmp_path_factory.mktemp("pki"), "client-test-ca")
    server_cert = ca.issue("gateway")
    os.environ[TOKEN_ENV] = TOKEN
    config = GatewayServiceConfig.model_validate({
        "downstream": {k: v for k, v in stack.addresses.items() if k != "gateway"},
        "redis": {"url": None},
        "server": {"tls_cert_file": str(server_cert.cert), "tls_key_file": str(server_cert.key),
                   "auth_token_env": TOKEN_ENV},
    })
    gateway = await start_gateway_server(config, "127.0.0.1:0")
    yield f"localhost:{gateway.port}", str(ca.cert_file)
    await gateway.stop(0)
    os.environ.pop(TOKEN_ENV, None)


def kinds(events) -> list[str]:
    return [e.WhichOneof("event") for e in events]


async def test_ask_stream_sends_the_route_then_failures_and_samples_then_the_answer(stack):
    query = stack.queries["arith"][0]
    async with AsyncClient(stack.gateway_address) as client:
        events = [e async for e in client.ask_stream(query, n=3, no_cache=True)]
    assert kinds(events)[0] == "route" and kinds(events)[-1] == "result"
    route, result = events[0].route, events[-1].result
    assert [m.model for m in route.models] == ["flaky", "alpha", "beta"] and not route.cached
    assert route.request_id == result.request_id and route.cluster == result.cluster
    assert [e.model_failed.model for e in events if e.HasField("model_failed")] == ["flaky"]
    samples = [e.sample for e in events if e.HasField("sample")]
    assert [s.index for s in samples] == [0, 1, 2] and {s.model for s in samples} == {"alpha"}
    assert sorted(s.text for s in samples) == sorted(s.text for s in result.samples)
    assert result.answer == stack.gold(query) and list(result.failed_models) == ["flaky"]


async def test_ask_stream_of_a_cached_answer_is_the_route_then_the_answer(stack):
    query = stack.queries["choice"][0]
    async with AsyncClient(stack.gateway_address) as client:
        first = await client.ask(query, n=2)
        events = [e async for e in client.ask_stream(query, n=2)]
    assert kinds(events) == ["route", "result"]
    assert events[0].route.cached and events[1].result.cached
    assert events[1].result.answer == first.answer == stack.gold(query)


async def test_bad_requests_end_with_the_gateway_status(stack):
    async with AsyncClient(stack.gateway_address) as client:
        with pytest.raises(AvengersError) as empty:
            [e async for e in client.ask_stream("   ")]
        assert empty.value.status == "INVALID_ARGUMENT" and "query is empty" in empty.value.details
        with pytest.raises(AvengersError) as unknown:
            await client.feedback("no-such-request", 1.0)
        assert unknown.value.status == "NOT_FOUND"
    with pytest.raises(ValueError, match="strategy: unknown value 'bogus'"):
        ask_request("q", strategy="bogus")
    with pytest.raises(ValueError, match="route"):
        await AsyncClient(stack.gateway_address).route("q")


async def test_sync_client_asks_streams_records_feedback_and_routes(stack):
    query = stack.queries["choice"][1]

    def run() -> tuple:
        with Client(stack.gateway_address, router_address=stack.addresses["router"]) as client:
            response = client.ask(query, n=2, strategy="model-switch", no_cache=True)
            events = list(client.ask_stream(query, n=2, no_cache=True))
            recorded = client.feedback(response.request_id, 1.0, "right")
            route = client.route(query, top_n=2)
        return response, events, recorded, route

    response, events, recorded, route = await asyncio.to_thread(run)
    assert response.answer == stack.gold(query)
    assert kinds(events)[0] == "route" and kinds(events)[-1] == "result"
    assert recorded.recorded
    assert [m.model for m in route.models] == ["beta", "alpha"] and route.router_version


async def test_tls_and_token_options(guarded, stack):
    address, ca_file = guarded
    query = stack.queries["arith"][1]
    async with AsyncClient(address, ca_file=ca_file, token_env=TOKEN_ENV) as client:
        assert (await client.ask(query, n=1)).answer == stack.gold(query)
    async with AsyncClient(address, ca_file=ca_file) as client:
        with pytest.raises(AvengersError) as refused:
            await client.ask(query, n=1)
        assert refused.value.status == "UNAUTHENTICATED"

    def sync_ask() -> str:
        with Client(address, ca_file=ca_file, token=TOKEN) as client:
            return next(e for e in client.ask_stream(query, n=1) if e.HasField("result")).result.answer

    assert await asyncio.to_thread(sync_ask) == stack.gold(query)
    with pytest.raises(ValueError, match="unset or empty"):
        Client(address, token_env="AVENGERS_TEST_NO_SUCH_VARIABLE")


async def avengers(*args: str, env: dict | None = None) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "avengers", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=120)
    return process.returncode, out.decode(), err.decode()


async def test_ask_json_prints_zero_values(stack):
    code, out, err = await avengers("ask", stack.queries["arith"][2], "--addr", stack.gateway_address, "--n", "2",
                                    "--json", "--no-cache")
    assert code == 0, err
    response = json.loads(out)
    assert response["samples"][0]["index"] == 0  # dropped by protobuf's JSON before
    assert response["cached"] is False and "cluster" in response and response["vote"]["abstained"] == 0
    assert response["usage"]["prompt_tokens"] > 0 and response["usage"]["completion_tokens"] > 0


async def test_ask_stream_shows_route_failures_samples_and_answer(stack):
    query = stack.queries["arith"][3]
    code, out, err = await avengers("ask", query, "--addr", stack.gateway_address, "--n", "2", "--stream",
                                    "--no-cache")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("route:    cluster") and "flaky" in lines[0]
    assert any(line.startswith("failed:   flaky") for line in lines)
    assert sum(line.startswith("sample:   #") for line in lines) == 2
    assert f"answer:   {stack.gold(query)}" in lines
    assert any(line.startswith("tokens:   ") and line.endswith(" completion") for line in lines)


async def test_ask_and_feedback_take_tls_and_token_options(guarded, stack):
    address, ca_file = guarded
    env = {TOKEN_ENV: TOKEN}
    code, out, err = await avengers("ask", stack.queries["choice"][2], "--addr", address, "--n", "1", "--json",
                                    "--tls-ca", ca_file, "--token-env", TOKEN_ENV, env=env)
    assert code == 0, err
    request_id = json.loads(out)["request_id"]
    code, out, err = await avengers("feedback", request_id, "--score", "1", "--addr", address,
                                    "--tls-ca", ca_file, "--token-env", TOKEN_ENV, env=env)
    assert code == 0 and "feedback recorded" in out, err
    code, out, err = await avengers("feedback", request_id, "--score", "1", "--addr", address, "--tls-ca", ca_file)
    assert code == 2 and "UNAUTHENTICATED" in err


async def test_feedback_help_names_the_address_variable():
    code, out, _ = await avengers("feedback", "--help")
    assert code == 0 and "$AVENGERS_GATEWAY_ADDR" in out and "--token-env" in out
