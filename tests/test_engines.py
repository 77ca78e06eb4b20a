"""Engines: llama.cpp really generating from SmolLM2, replay semantics, OpenAI-compatible HTTP against a local
fake server, and vLLM against a fake at the vLLM API boundary."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace
from typing import ClassVar

import pytest
import pytest_asyncio
from aiohttp import web

import conftest
from avengers.config.model_pool import ModelConfig
from avengers.core.answers import create_extractor
from avengers.engines import (
    ChatTurn,
    EngineDead,
    EngineMisconfigured,
    EngineNotInstalled,
    EngineTimeout,
    EngineUnavailable,
    GenerationRequest,
    InvalidRequest,
    NotServed,
    PromptTooLong,
    SamplingSpec,
    UnknownTask,
    available_engines,
    create_engine,
)
from avengers.engines.base import StopScanner
from avengers.engines.replay import ReplayEngine, unit_draw
from avengers.engines.vllm import VLLMEngine
from conftest import closed_port

# Async tests share the module-scoped fixtures' event loop.
module_loop = pytest.mark.asyncio(loop_scope="module")


def request(prompt: str = "What is 2+3?", **sampling) -> GenerationRequest:
    return GenerationRequest(sampling=SamplingSpec(**sampling), prompt=prompt)


def test_registry_knows_every_backend():
    assert available_engines() == ["llama_cpp", "openai", "replay", "vllm"]
    with pytest.raises(ValueError, match="unknown engine backend"):
        from avengers.engines.base import engine_class

        engine_class("tgi")


def test_stop_scanner_holds_back_possible_stop_prefixes():
    scanner = StopScanner(("STOP",))
    out = [scanner.push(p) for p in ["hel", "lo S", "TO", "P and more"]]
    assert "".join(out) == "hello "
    assert scanner.stopped and scanner.text == "hello "
    plain = StopScanner(())
    assert plain.push("abc") == "abc" and plain.flush() == ""


# -- llama.cpp --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def smol():
    engine = create_engine(ModelConfig(name="smol", backend="llama_cpp", resources={"num_cpus": 1}))
    await engine.start()
    yield engine
    await engine.shutdown()


@module_loop
async def test_llama_cpp_generates_n_samples_with_one_prefill(smol):
    before = smol.stats.prefills
    result = await smol.generate(request(n=3, max_tokens=8, temperature=1.0, seed=11))
    assert [s.index for s in result.samples] == [0, 1, 2]
    assert smol.stats.prefills == before + 1
    assert result.prompt_tokens > 10  # chat template + question
    for s in result.samples:
        assert s.text.strip()
        assert 1 <= s.completion_tokens <= 8
        assert s.finish_reason in ("stop", "length")
    assert result.completion_tokens == sum(s.completion_tokens for s in result.samples)


@module_loop
async def test_llama_cpp_reused_prefill_equals_fresh_prefill(smol):
    # Sample i of a request uses seed + i on the shared prefill; a fresh request with that seed must match.
    shared = await smol.generate(request(n=3, max_tokens=10, temperature=1.0, seed=40))
    for i in range(3):
        fresh = await smol.generate(request(n=1, max_tokens=10, temperature=1.0, seed=40 + i))
        assert fresh.samples[0].text == shared.samples[i].text


@module_loop
async def test_llama_cpp_stream_matches_generate(smol):
    req = request(prompt="Name a colour.", n=2, max_tokens=12, temperature=0.9, seed=3)
    whole = await smol.generate(req)
    texts, finishes = {0: "", 1: ""}, {}
    async for delta in smol.stream(req):
        assert not finishes.get(delta.index), "no delta after a sample's last one"
        texts[delta.index] += delta.text
        if delta.finish_reason:
            finishes[delta.index] = (delta.finish_reason, delta.completion_tokens, delta.prompt_tokens)
    assert texts == {s.index: s.text for s in whole.samples}
    assert finishes == {s.index: (s.finish_reason, s.completion_tokens, whole.prompt_tokens) for s in whole.samples}


@module_loop
async def test_llama_cpp_greedy_chat_and_stop_strings(smol):
    chat = GenerationRequest(
        sampling=SamplingSpec(n=2, temperature=0.0, max_tokens=16),
        messages=(ChatTurn("system", "Answer briefly."), ChatTurn("user", "Count from one to ten in words.")),
    )
    greedy = await smol.generate(chat)
    text = greedy.samples[0].text
    assert greedy.samples[1].text == text  # temperature 0 is greedy: same text for every sample
    assert len(text) > 8
    stop = text[4:7]
    cut = await smol.generate(
        GenerationRequest(sampling=SamplingSpec(n=1, temperature=0.0, max_tokens=16, stop=(stop,)), messages=chat.messages)
    )
    assert cut.samples[0].text == text[: text.find(stop)]
    assert cut.samples[0].finish_reason == "stop"


@module_loop
async def test_llama_cpp_prompt_longer_than_context_is_refused():
    engine = create_engine(ModelConfig(name="tiny-ctx", backend="llama_cpp", llama_cpp={"n_ctx": 64}))
    await engine.start()
    try:
        with pytest.raises(PromptTooLong, match="64-token context"):
            await engine.generate(request(prompt="word " * 200, max_tokens=4))
        ok = await engine.generate(request(prompt="Hi", max_tokens=4, seed=1))
        assert ok.samples[0].completion_tokens >= 1
    finally:
        await engine.shutdown()


@module_loop
async def test_llama_cpp_missing_gguf_is_a_clear_error():
    engine = create_engine(ModelConfig(name="ghost", backend="llama_cpp", model_id="/nonexistent/model.gguf"))
    with pytest.raises(EngineNotInstalled, match="not found"):
        await engine.start()


# -- replay -----------------------------------------------------------------------------------------------


def write_jsonl(path, rows) -> str:
    return str(conftest.write_jsonl(path, rows))


@pytest.fixture
def replay_files(tmp_path):
    labels = write_jsonl(
        tmp_path / "labels.jsonl",
        [
            {"id": "m1", "dataset": "gsm8k", "split": "test", "query": "What is 17*3?", "scores": {"a": 1.0, "b": 0.0}},
            {"id": "m2", "dataset": "gsm8k", "split": "test", "query": "Half of 10?", "scores": {"a": 0.3, "b": 0.5}},
            {
                "id": "q1",
                "dataset": "arc_challenge",
                "split": "test",
                "query": "Which is a gas?",
                "scores": {"a": 0.0, "b": 1.0},
            },
            {
                "id": "q2",
                "dataset": "misc",
                "split": "test",
                "query": "Pick one.\nA) red\nB) blue\nC) green",
                "scores": {"a": 1.0, "b": 0.0},
            },
        ],
    )
    outputs = write_jsonl(
        tmp_path / "outputs.jsonl",
        [
            {"id": "m2", "model": "a", "samples": ["five", "5", "\\boxed{5}"]},
            {"query": "Free question?", "model": "a", "samples": ["recorded answer"]},
            {"id": "m2", "model": "b", "samples": ["not for a"]},
        ],
    )
    return labels, outputs


async def replay_engine(name: str, labels=None, outputs=None, **options) -> ReplayEngine:
    engine = create_engine(
        ModelConfig(name=name, backend="replay", replay={"labels_path": labels, "outputs_path": outputs, **options})
    )
    await engine.start()
    return engine


@module_loop
async def test_replay_probability_one_and_zero(replay_files):
    labels, _ = replay_files
    a = await replay_engine("a", labels)
    b = await replay_engine("b", labels)
    gold = a.gold_answer("m1")
    assert gold == b.gold_answer("m1") and gold.isdigit()
    math = create_extractor("math")
    always = await a.generate(GenerationRequest(SamplingSpec(n=10, seed=5), prompt="What is 17*3?", task_id="m1"))
    assert {math.key(s.text) for s in always.samples} == {math.key(gold)}
    assert always.samples[0].text == f"The answer is \\boxed{{{gold}}}."
    never = await b.generate(GenerationRequest(SamplingSpec(n=10, seed=5), prompt="What is 17*3?", task_id="m1"))
    wrong = {math.key(s.text) for s in never.samples}
    assert math.key(gold) not in wrong and 1 <= len(wrong) <= 3


@module_loop
async def test_replay_correct_with_the_recorded_probability_and_deterministic(replay_files):
    labels, _ = replay_files
    b = await replay_engine("b", labels)
    task = b.lookup(GenerationRequest(SamplingSpec(), task_id="m2"))
    gold = b.gold_answer("m2")
    # Over many seeds, the share of correct samples is p = 0.5 (hash draws: exact, not flaky).
    draws = [b.synthesise(task, seed, i) for seed in range(400) for i in range(5)]
    share = sum(gold in d for d in draws) / len(draws)
    assert abs(share - 0.5) < 0.04
    assert all(d.count(gold) == 0 or f"{{{gold}}}" in d for d in draws)
    # The same (task, model, seed) gives the same samples; another seed other samples.
    r1 = await b.generate(GenerationRequest(SamplingSpec(n=8, seed=1), prompt="Half of 10?"))
    r2 = await b.generate(GenerationRequest(SamplingSpec(n=8, seed=1), prompt="Half of 10?"))
    r3 = await b.generate(GenerationRequest(SamplingSpec(n=8, seed=2), prompt="Half of 10?"))
    assert [s.text for s in r1.samples] == [s.text for s in r2.samples]
    assert [s.text for s in r1.samples] != [s.text for s in r3.samples]
    correct = [unit_draw("m2", "b", 1, i) < 0.5 for i in range(8)]
    assert [gold in s.text for s in r1.samples] == correct


@module_loop
async def test_replay_multiple_choice_formats(replay_files):
    labels, _ = replay_files
    a = await replay_engine("a", labels)
    b = await replay_engine("b", labels)
    mc = create_extractor("multiple_choice")
    # Options listed in the query: the gold is one of them.
    gold = a.gold_answer("q2")
    assert gold in "ABC"
    out = await a.generate(GenerationRequest(SamplingSpec(n=3, seed=0), prompt="x", task_id="q2"))
    assert [s.text for s in out.samples] == [f"Answer: {gold}"] * 3
    assert mc.key(out.samples[0].text) == mc.key(gold)
    wrong = await b.generate(GenerationRequest(SamplingSpec(n=6, seed=0), prompt="x", task_id="q2"))
    assert all(mc.extract(s.text) in set("ABC") - {gold} for s in wrong.samples)
    # A multiple-choice dataset without listed options: letters A-D.
    arc = await b.generate(GenerationRequest(SamplingSpec(n=2, seed=0), prompt="Which is a gas?"))
    assert arc.samples[0].text == f"Answer: {b.gold_answer('q1')}" and b.gold_answer("q1") in "ABCD"


@module_loop
async def test_replay_recorded_outputs_win_and_cycle(replay_files):
    labels, outputs = replay_files
    a = await replay_engine("a", labels, outputs)
    out = await a.generate(GenerationRequest(SamplingSpec(n=5, seed=1), prompt="?", task_id="m2"))
    assert [s.text for s in out.samples] == ["5", "\\boxed{5}", "five", "5", "\\boxed{5}"]
    free = await a.generate(GenerationRequest(SamplingSpec(n=1, seed=0), prompt="Free question?"))
    assert free.samples[0].text == "recorded answer"
    limited = await a.generate(GenerationRequest(SamplingSpec(n=1, seed=0, max_tokens=1), prompt="Free question?"))
    assert limited.samples[0].text == "recorded" and limited.samples[0].finish_reason == "length"
    only_outputs = await replay_engine("a", None, outputs)
    assert only_outputs.task_count == 2


@module_loop
async def test_replay_unknown_and_bad_config(replay_files, tmp_path):
    labels, _ = replay_files
    a = await replay_engine("a", labels)
    with pytest.raises(UnknownTask, match="no record"):
        await a.generate(GenerationRequest(SamplingSpec(), prompt="never seen", task_id="zzz"))
    assert isinstance(UnknownTask("x"), NotServed)
    by_query = await a.generate(GenerationRequest(SamplingSpec(), prompt="What is 17*3?", task_id="not-an-id"))
    assert by_query.samples[0].text.endswith(f"{{{a.gold_answer('m1')}}}.")
    with pytest.raises(ValueError, match="scores no model 'c'"):
        await replay_engine("c", labels)
    with pytest.raises(ValueError, match="labels_path and/or outputs_path"):
        ModelConfig(name="r", backend="replay", replay={})
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"model": "a", "samples": []}\n')
    with pytest.raises(ValueError, match="bad.jsonl:1"):
        await replay_engine("a", None, str(bad))


# -- OpenAI-compatible HTTP -------------------------------------------------------------------------------


class FakeOpenAIServer:
    """A tiny OpenAI-compatible server: answers sample i as '<model> says <i>'."""

    def __init__(self):
        self.bodies: list[dict] = []
        self.headers: list[dict] = []
        self.fail_next = 0
        self.ignore_n = False

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.bodies.append(body)
        self.headers.append(dict(request.headers))
        if self.fail_next:
            self.fail_next -= 1
            return web.json_response({"error": {"message": "overloaded"}}, status=503)
        if body["model"] == "missing":
            return web.json_response({"error": {"message": "model 'missing' does not exist"}}, status=404)
        if body.get("max_tokens", 0) > 1000:
            return web.json_response({"error": {"message": "max_tokens too large"}}, status=400)
        chat = request.path.endswith("/chat/completions")
        n = 1 if self.ignore_n else body.get("n", 1)
        texts = [f"{body['model']} says {i}" for i in range(n)]
        if body.get("stream"):
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            for i, text in enumerate(texts):
                for word in text.split(" "):
                    piece = {"index": i, "delta": {"content": word + " "}} if chat else {"index": i, "text": word + " "}
                    await response.write(f"data: {json.dumps({'choices': [piece]})}\n\n".encode())
            for i in range(n):
                end = {"index": i, "delta": {}, "finish_reason": "stop"} if chat else {"index": i, "text": "", "finish_reason": "stop"}
                await response.write(f"data: {json.dumps({'choices': [end]})}\n\n".encode())
            if (body.get("stream_options") or {}).get("include_usage"):
                usage = {"prompt_tokens": 7, "completion_tokens": 3 * n}
                await response.write(f"data: {json.dumps({'choices': [], 'usage': usage})}\n\n".encode())
            await response.write(b"data: [DONE]\n\n")
            return response
        choices = [
            {"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": "stop"}
            if chat
            else {"index": i, "text": t, "finish_reason": "length"}
            for i, t in enumerate(texts)
        ]
        return web.json_response({"choices": choices, "usage": {"prompt_tokens": 7, "completion_tokens": 3 * n}})


@pytest_asyncio.fixture(loop_scope="module")
async def fake_openai():
    fake = FakeOpenAIServer()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", fake.handle)
    app.router.add_post("/v1/completions", fake.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    fake.base_url = f"http://127.0.0.1:{port}/v1"
    yield fake
    await runner.cleanup()


async def openai_engine(base_url: str, **options):
    model_id = options.pop("model_id", "served-7b")
    engine = create_engine(
        ModelConfig(name="remote", backend="openai", model_id=model_id, openai={"base_url": base_url, **options})
    )
    await engine.start()
    return engine


@module_loop
async def test_openai_chat_sends_n_in_one_request(fake_openai, monkeypatch):
    monkeypatch.setenv("POOL_TEST_KEY", "sk-test")
    engine = await openai_engine(fake_openai.base_url, api_key_env="POOL_TEST_KEY")
    try:
        result = await engine.generate(request(n=3, temperature=0.5, top_p=0.9, max_tokens=20, seed=4, stop=("\n",)))
        assert [s.text for s in result.samples] == [f"served-7b says {i}" for i in range(3)]
        assert result.prompt_tokens == 7 and result.completion_tokens == 9
        assert len(fake_openai.bodies) == 1
        body = fake_openai.bodies[0]
        assert body["n"] == 3 and body["seed"] == 4 and body["stop"] == ["\n"] and body["top_p"] == 0.9
        assert body["messages"] == [{"role": "user", "content": "What is 2+3?"}]
        assert fake_openai.headers[0]["Authorization"] == "Bearer sk-test"
    finally:
        await engine.shutdown()


@module_loop
async def test_openai_completions_and_split_n(fake_openai):
    engine = await openai_engine(fake_openai.base_url, api="completions", split_n=True)
    try:
        result = await engine.generate(request(n=3, seed=10))
        # Each of the 3 requests asked for n=1 with its own seed.
        assert sorted(b["seed"] for b in fake_openai.bodies) == [10, 11, 12]
        assert all(b["n"] == 1 and b["prompt"] == "What is 2+3?" for b in fake_openai.bodies)
        assert [s.index for s in result.samples] == [0, 1, 2]
        assert {s.finish_reason for s in result.samples} == {"length"}
        assert engine.stats.prefills == 3
    finally:
        await engine.shutdown()


@module_loop
async def test_openai_stream(fake_openai):
    engine = await openai_engine(fake_openai.base_url)
    try:
        texts, finish = {0: "", 1: ""}, {}
        async for delta in engine.stream(request(n=2)):
            texts[delta.index] += delta.text
            if delta.finish_reason:
                finish[delta.index] = (delta.finish_reason, delta.completion_tokens, delta.prompt_tokens)
        assert texts == {0: "served-7b says 0 ", 1: "served-7b says 1 "}
        # each sample's last delta waited for the usage event after the choices, to carry the prompt tokens
        assert finish == {0: ("stop", 3, 7), 1: ("stop", 3, 7)}
        assert (engine.stats.prompt_tokens, engine.stats.completion_tokens, engine.stats.samples) == (7, 6, 2)
        assert fake_openai.bodies[0]["stream"] is True
    finally:
        await engine.shutdown()


@module_loop
async def test_openai_errors_map_to_statuses(fake_openai):
    engine = await openai_engine(fake_openai.base_url, model_id="missing")
    with pytest.raises(NotServed, match="does not exist"):
        await engine.generate(request())
    await engine.shutdown()

    engine = await openai_engine(fake_openai.base_url)
    try:
        with pytest.raises(InvalidRequest, match="max_tokens too large"):
            await engine.generate(request(max_tokens=2000))
        fake_openai.fail_next = 1
        with pytest.raises(EngineUnavailable, match="HTTP 503"):  # retries are off by default
            await engine.generate(request())
        fake_openai.ignore_n = True
        with pytest.raises(EngineUnavailable, match="split_n"):
            await engine.generate(request(n=2))
    finally:
        await engine.shutdown()

    fake_openai.ignore_n = False
    retrying = await openai_engine(fake_openai.base_url, max_retries=2)
    try:
        fake_openai.fail_next = 2
        sent = len(fake_openai.bodies)
        result = await retrying.generate(request(n=1))
        assert result.samples[0].text == "served-7b says 0"
        assert len(fake_openai.bodies) - sent == 3
    finally:
        await retrying.shutdown()

    dead = await openai_engine(f"http://127.0.0.1:{closed_port()}/v1")
    try:
        with pytest.raises(EngineUnavailable, match="cannot reach"):
            await dead.generate(request())
    finally:
        await dead.shutdown()


@module_loop
async def test_openai_missing_api_key_env(fake_openai, monkeypatch):
    monkeypatch.delenv("POOL_TEST_ABSENT", raising=False)
    with pytest.raises(EngineMisconfigured, match="POOL_TEST_ABSENT"):
        await openai_engine(fake_openai.base_url, api_key_env="POOL_TEST_ABSENT")


@module_loop
async def test_openai_timeout_is_deadline_exceeded():
    async def slow(request):
        await asyncio.Event().wait()  # never answers: the client's 0.3 s timeout always ends the call
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", slow)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    engine = await openai_engine(f"http://127.0.0.1:{port}/v1", timeout_s=0.3)
    try:
        with pytest.raises(EngineTimeout, match="timed out"):
            await engine.generate(request())
    finally:
        await engine.shutdown()
        await runner.cleanup()


# -- vLLM, with a fake at the vLLM API boundary (tests/vllm_lane/ runs the real vLLM) ----------------------------


class FakeSamplingParams:
    """Validates like vLLM 0.32: greedy sampling with n > 1 is refused on construction."""

    def __init__(self, **kwargs):
        if kwargs.get("temperature") == 0 and kwargs.get("n", 1) > 1:
            raise FakeValidationError(f"n must be 1 when using greedy sampling, got {kwargs['n']}.")
        self.__dict__.update(kwargs)


class FakeClientError(Exception):
    """vLLM's VLLMClientError: a request error that is not a ValueError."""


class FakeValidationError(FakeClientError):
    pass


class FakeServerError(Exception):
    pass


class FakeEngineDeadError(FakeServerError):
    """vLLM's EngineDeadError: neither RuntimeError nor ConnectionError."""


class FakeTokenizer:
    """One token per whitespace-separated word; marks where special tokens were added."""

    chat_template = "fake"

    def apply_chat_template(self, messages, tokenize, add_generation_prompt):
        assert tokenize is False and add_generation_prompt is True
        return "".join(f"<{m['role']}> {m['content']} " for m in messages) + "<assistant>"

    def encode(self, text, add_special_tokens):
        return ([0] if add_special_tokens else []) + [len(word) for word in text.split()]


class FakeAsyncLLM:
    """Mimics vLLM's AsyncLLM: one generate() call yields RequestOutputs with n completions."""

    instances: ClassVar[list[FakeAsyncLLM]] = []

    def __init__(self, args):
        self.args = args
        self.calls: list[tuple[dict, FakeSamplingParams, str]] = []
        self.aborted: list[str] = []
        self.block = False
        self.blocked = asyncio.Event()
        """Set once a generate() call is held by ``block`` (vLLM is working on it)."""
        self.fail_with: Exception | None = None
        self.model_config = SimpleNamespace(max_model_len=args.get("max_model_len"))
        FakeAsyncLLM.instances.append(self)

    @classmethod
    def from_engine_args(cls, args):
        return cls(args)

    async def get_tokenizer(self):
        return FakeTokenizer()

    async def generate(self, prompt, params, request_id):
        self.calls.append((prompt, params, request_id))
        if self.fail_with is not None:
            raise self.fail_with
        if self.block:
            self.blocked.set()
            await asyncio.Event().wait()  # until cancelled

        def completion(i, text, finish):
            return SimpleNamespace(index=i, text=text, token_ids=[0] * len(text.split()), finish_reason=finish)

        if params.output_kind == "DELTA":
            for word in ("alpha", "beta"):
                yield SimpleNamespace(
                    finished=False, outputs=[completion(i, f"{word}{i} ", None) for i in range(params.n)]
                )
            yield SimpleNamespace(finished=True, outputs=[completion(i, "", "stop") for i in range(params.n)])
            return
        yield SimpleNamespace(
            finished=True,
            outputs=[completion(i, f"sample {i} text", "length" if i else "stop") for i in reversed(range(params.n))],
        )

    async def abort(self, request_id):
        self.aborted.append(request_id)

    async def check_health(self):
        if isinstance(self.fail_with, FakeEngineDeadError):
            raise self.fail_with

    def shutdown(self):
        self.shut = True


FAKE_VLLM = SimpleNamespace(
    AsyncLLM=FakeAsyncLLM,
    AsyncEngineArgs=lambda **kw: kw,
    SamplingParams=FakeSamplingParams,
    RequestOutputKind=SimpleNamespace(DELTA="DELTA", FINAL_ONLY="FINAL_ONLY"),
    tokens_input=lambda ids, prompt=None: {"type": "token", "prompt_token_ids": ids, "prompt": prompt},
    ClientError=FakeClientError,
    NotFoundError=type("FakeNotFoundError", (FakeClientError,), {}),
    ServerError=FakeServerError,
    EngineDeadError=FakeEngineDeadError,
)


async def fake_vllm_engine(max_model_len: int = 4096):
    config = ModelConfig(
        name="qwen-7b",
        backend="vllm",
        model_id="Qwen/Qwen2.5-7B-Instruct",
        vllm={"max_model_len": max_model_len, "engine_args": {"enable_prefix_caching": True}},
    )
    engine = VLLMEngine(config, api=FAKE_VLLM)
    await engine.start()
    return engine, FakeAsyncLLM.instances[-1]


@module_loop
async def test_vllm_n_samples_in_one_engine_request():
    engine, llm = await fake_vllm_engine()
    assert llm.args["model"] == "Qwen/Qwen2.5-7B-Instruct" and llm.args["max_model_len"] == 4096
    assert llm.args["enable_prefix_caching"] is True and llm.args["served_model_name"] == "qwen-7b"
    chat = GenerationRequest(
        sampling=SamplingSpec(n=4, temperature=0.3, top_p=0.8, max_tokens=64, seed=9),
        messages=(ChatTurn("system", "Be brief."), ChatTurn("user", "Hi")),
        request_id="req-1",
    )
    result = await engine.generate(chat)
    assert len(llm.calls) == 1
    prompt, params, request_id = llm.calls[0]
    # Token ids, not a raw string: the template's text tokenized without adding special tokens again.
    assert prompt == {
        "type": "token",
        "prompt": "<system> Be brief. <user> Hi <assistant>",
        "prompt_token_ids": [8, 2, 6, 6, 2, 11],
    }
    assert request_id == "req-1"
    assert (params.n, params.temperature, params.top_p, params.max_tokens, params.seed) == (4, 0.3, 0.8, 64, 9)
    assert params.output_kind == "FINAL_ONLY" and params.stop is None
    assert [s.text for s in result.samples] == [f"sample {i} text" for i in range(4)]
    assert [s.finish_reason for s in result.samples] == ["stop", "length", "length", "length"]
    assert result.prompt_tokens == 6 and result.completion_tokens == 12
    assert llm.aborted == [] and engine.stats.prefills == 1
    await engine.check_health()
    await engine.shutdown()
    assert llm.shut


@module_loop
async def test_vllm_plain_prompt_without_template_gets_special_tokens():
    engine, llm = await fake_vllm_engine()
    engine._tokenizer.chat_template = None
    await engine.generate(request("What is 2+3?", n=1))
    assert llm.calls[0][0]["prompt_token_ids"] == [0, 4, 2, 4]  # [0]: the special token the tokenizer adds


@module_loop
async def test_vllm_stream_counts_tokens_and_aborts_on_cancel():
    engine, llm = await fake_vllm_engine()
    deltas = [d async for d in engine.stream(request(n=2, stop=("###",)))]
    assert llm.calls[0][1].output_kind == "DELTA" and llm.calls[0][1].stop == ["###"]
    text = {i: "".join(d.text for d in deltas if d.index == i) for i in (0, 1)}
    assert text == {0: "alpha0 beta0 ", 1: "alpha1 beta1 "}
    assert [(d.index, d.finish_reason, d.completion_tokens, d.prompt_tokens) for d in deltas if d.finish_reason] == [
        (0, "stop", 2, 5), (1, "stop", 2, 5)]
    stats = engine.stats
    assert (stats.requests, stats.prefills, stats.samples, stats.completion_tokens) == (1, 1, 2, 4)
    assert stats.prompt_tokens == 5  # "<user> What is 2+3? <assistant>": 5 fake tokens

    llm.block = True
    task = asyncio.ensure_future(engine.generate(GenerationRequest(SamplingSpec(), prompt="hi", request_id="gone")))
    await asyncio.wait_for(llm.blocked.wait(), timeout=30)  # vLLM has the request
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert "gone" in llm.aborted  # the caller went away: vLLM stops working on it
    await engine.shutdown()


@module_loop
async def test_vllm_greedy_n_samples_are_one_sequence():
    engine, llm = await fake_vllm_engine()
    result = await engine.generate(request(n=3, temperature=0.0))
    assert llm.calls[-1][1].n == 1  # vLLM refuses n > 1 with greedy sampling; it is one sequence anyway
    assert [(s.index, s.text) for s in result.samples] == [(0, "sample 0 text"), (1, "sample 0 text"), (2, "sample 0 text")]
    assert engine.stats.samples == 3 and engine.stats.prefills == 1
    deltas = [d async for d in engine.stream(request(n=3, temperature=0.0))]
    text = {i: "".join(d.text for d in deltas if d.index == i) for i in range(3)}
    assert text == {0: "alpha0 beta0 ", 1: "alpha0 beta0 ", 2: "alpha0 beta0 "}
    assert sorted(d.index for d in deltas if d.finish_reason) == [0, 1, 2]
    await engine.shutdown()


@module_loop
async def test_vllm_errors_become_engine_errors():
    engine, llm = await fake_vllm_engine(max_model_len=16)
    with pytest.raises(PromptTooLong, match="17 tokens, longer than its context of 16"):  # refused before vLLM
        await engine.generate(request(prompt=" ".join(["word"] * 15)))
    assert llm.calls == []

    llm.fail_with = ValueError("The decoder prompt is longer than the maximum model length")  # older vLLM
    with pytest.raises(PromptTooLong, match="maximum model length"):
        await engine.generate(request())
    llm.fail_with = FakeValidationError("The decoder prompt (length 9) is longer than the maximum model length of 8")
    with pytest.raises(PromptTooLong, match="maximum model length"):  # vLLM 0.32: not a ValueError
        await engine.generate(request())
    llm.fail_with = FakeValidationError("top_k must be -1 or at least 1")
    with pytest.raises(InvalidRequest, match="top_k"):
        await engine.generate(request())
    llm.fail_with = FakeServerError("scheduler hiccup")
    with pytest.raises(EngineUnavailable, match="scheduler hiccup"):
        await engine.generate(request())
    await engine.check_health()  # a failed request is not a dead engine

    llm.fail_with = FakeEngineDeadError("EngineCore encountered an issue")
    with pytest.raises(EngineDead, match="engine died"):
        async for _ in engine.stream(request()):
            pass
    with pytest.raises(EngineDead):  # and stays dead: health fails, so Ray Serve replaces the replica
        await engine.check_health()
    calls = len(llm.calls)
    with pytest.raises(EngineDead):
        await engine.generate(request())
    assert len(llm.calls) == calls  # not sent to a dead engine
    await engine.shutdown()


@module_loop
async def test_vllm_not_installed_is_failed_precondition():
    try:
        import vllm  # noqa: F401

        pytest.skip("vLLM is installed on this machine")
    except ImportError:
        pass
    engine = create_engine(ModelConfig(name="q", backend="vllm", model_id="Qwen/Qwen2.5-7B-Instruct"))
    with pytest.raises(EngineNotInstalled, match="setup_vllm.sh"):
        await engine.start()
    with pytest.raises(ValueError, match="needs model_id"):
        ModelConfig(name="q", backend="vllm")


def test_an_engine_is_named_after_its_model_not_its_backend(tmp_path):
    outputs = tmp_path / "outputs.jsonl"
    outputs.write_text('{"model": "m", "query": "q", "samples": ["a"]}\n')
    engine = create_engine(ModelConfig(name="my-model", backend="replay", replay={"outputs_path": str(outputs)}))
    assert (engine.name, engine.backend) == ("my-model", "replay")
