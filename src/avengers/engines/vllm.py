"""GPU engine: vLLM's async engine in-process (``AsyncLLM``, or ``AsyncLLMEngine`` on older vLLM).

n samples are ONE engine request with ``SamplingParams(n=...)``: vLLM prefills the prompt once and forks the
KV cache for the n sequences. The prompt is rendered with the model's chat template through the engine's
tokenizer (a tokenizer without a template gets the plain prompt).

vLLM is imported only in :meth:`VLLMEngine.start`, so this module imports everywhere; on a machine without
vLLM, starting the engine ends with FAILED_PRECONDITION. Install on GPU nodes with
``pip install 'avengers[vllm]'`` (see docs/MODEL_POOL.md). Everything vLLM-specific goes through one
object, :func:`import_vllm`'s namespace (``AsyncLLM``, ``AsyncEngineArgs``, ``SamplingParams``,
``RequestOutputKind``), which tests replace with a fake at exactly that boundary.
"""

from __future__ import annotations

import inspect
import uuid
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

from avengers.config.model_pool import ModelConfig
from avengers.engines.base import (
    Engine,
    EngineNotInstalled,
    EngineUnavailable,
    GeneratedSample,
    GenerationRequest,
    GenerationResult,
    PromptTooLong,
    SampleDelta,
    register_engine,
)


def import_vllm() -> SimpleNamespace:
    """The parts of vLLM this engine uses; FAILED_PRECONDITION when vLLM is not installed."""
    try:
        from vllm import SamplingParams
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.sampling_params import RequestOutputKind
    except ImportError as exc:
        raise EngineNotInstalled(
            "the vllm backend needs vLLM on a GPU node: pip install 'avengers[vllm]' (see docs/MODEL_POOL.md)"
        ) from exc
    try:
        from vllm.v1.engine.async_llm import AsyncLLM
    except ImportError:  # vLLM before the V1 engine
        from vllm import AsyncLLMEngine as AsyncLLM
    return SimpleNamespace(
        AsyncLLM=AsyncLLM,
        AsyncEngineArgs=AsyncEngineArgs,
        SamplingParams=SamplingParams,
        RequestOutputKind=RequestOutputKind,
    )


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


@register_engine("vllm")
class VLLMEngine(Engine):
    """vLLM in the replica's process; one request per Generate call, n samples inside it."""

    def __init__(self, config: ModelConfig, api: SimpleNamespace | None = None):
        super().__init__(config)
        self._options = config.vllm
        self._api = api
        self._engine: Any = None
        self._tokenizer: Any = None

    def engine_args(self) -> dict[str, Any]:
        """Keyword arguments of ``AsyncEngineArgs``."""
        o = self._options
        args: dict[str, Any] = {
            "model": self.config.model_id,
            "served_model_name": self.config.name,
            "tensor_parallel_size": o.tensor_parallel_size,
            "dtype": o.dtype,
            "gpu_memory_utilization": o.gpu_memory_utilization,
            "enforce_eager": o.enforce_eager,
            "trust_remote_code": o.trust_remote_code,
        }
        for name in ("max_model_len", "quantization", "download_dir"):
            if getattr(o, name) is not None:
                args[name] = getattr(o, name)
        if o.tensor_parallel_size > 1:
            # Inside a Ray Serve replica that already holds the GPUs: shard with worker processes on them,
            # not with further Ray actors (which would wait for GPUs the replica has taken).
            args["distributed_executor_backend"] = "mp"
        return {**args, **o.engine_args}

    async def start(self) -> None:
        if self._engine is not None:
            return
        if self._api is None:
            self._api = import_vllm()
        self._engine = self._api.AsyncLLM.from_engine_args(self._api.AsyncEngineArgs(**self.engine_args()))
        self._tokenizer = await _maybe_await(self._engine.get_tokenizer())

    async def shutdown(self) -> None:
        engine, self._engine = self._engine, None
        if engine is None:
            return
        stop = getattr(engine, "shutdown", None) or getattr(engine, "shutdown_background_loop", None)
        if stop is not None:
            await _maybe_await(stop())

    async def check_health(self) -> None:
        if self._engine is None:
            raise EngineUnavailable(f"model {self.name!r} is not loaded")
        await _maybe_await(self._engine.check_health())

    def prompt_text(self, request: GenerationRequest) -> str:
        """The prompt after the model's chat template (plain prompt when the tokenizer has none)."""
        tokenizer = self._tokenizer
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            return request.prompt or "\n\n".join(m["content"] for m in request.chat())
        return tokenizer.apply_chat_template(request.chat(), tokenize=False, add_generation_prompt=True)

    def sampling_params(self, request: GenerationRequest, stream: bool) -> Any:
        s = request.sampling
        kind = self._api.RequestOutputKind
        return self._api.SamplingParams(
            n=s.n,
            temperature=s.temperature,
            top_p=s.top_p,
            max_tokens=s.max_tokens,
            stop=list(s.stop) or None,
            seed=s.seed,
            output_kind=kind.DELTA if stream else kind.FINAL_ONLY,
        )

    async def _outputs(self, request: GenerationRequest, stream: bool) -> AsyncIterator[Any]:
        """The engine's RequestOutputs of one request; aborts it if the caller goes away."""
        if self._engine is None:
            raise EngineUnavailable(f"model {self.name!r} is not loaded (engine not started or shut down)")
        request_id = request.request_id or uuid.uuid4().hex
        params = self.sampling_params(request, stream)
        finished = False
        try:
            async for output in self._engine.generate(self.prompt_text(request), params, request_id):
                finished = bool(getattr(output, "finished", False))
                yield output
        except ValueError as exc:  # vLLM's refusal of the input, e.g. a prompt longer than max_model_len
            raise PromptTooLong(f"model {self.name!r} refused the request: {exc}") from exc
        except (RuntimeError, ConnectionError) as exc:  # EngineDeadError and friends
            raise EngineUnavailable(f"model {self.name!r}: engine failed: {type(exc).__name__}: {exc}") from exc
        finally:
            if not finished and self._engine is not None:
                await _maybe_await(self._engine.abort(request_id))

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        latest: dict[int, Any] = {}
        prompt_tokens = 0
        async for output in self._outputs(request, stream=False):
            prompt_tokens = len(getattr(output, "prompt_token_ids", None) or []) or prompt_tokens
            for completion in output.outputs:
                latest[completion.index] = completion
        samples = [
            GeneratedSample(
                index=i,
                text=c.text,
                finish_reason=c.finish_reason or "stop",
                completion_tokens=len(c.token_ids),
            )
            for i, c in sorted(latest.items())
        ]
        if len(samples) != request.sampling.n:
            raise EngineUnavailable(
                f"model {self.name!r}: engine returned {len(samples)} of {request.sampling.n} samples"
            )
        result = GenerationResult(samples=samples, prompt_tokens=prompt_tokens)
        self.stats.record(result)
        return result

    async def stream(self, request: GenerationRequest) -> AsyncIterator[SampleDelta]:
        tokens = [0] * request.sampling.n
        async for output in self._outputs(request, stream=True):
            for c in output.outputs:
                tokens[c.index] += len(c.token_ids)
                finish = c.finish_reason or ""
                if c.text or finish:
                    yield SampleDelta(c.index, c.text, finish, tokens[c.index] if finish else 0)
        self.stats.requests += 1
        self.stats.prefills += 1
