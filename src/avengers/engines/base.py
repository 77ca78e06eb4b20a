"""The engine interface: one async class per backend, n samples per request, a registry and a factory.

An :class:`Engine` turns one :class:`GenerationRequest` (a prompt or chat messages plus resolved sampling
parameters with ``n`` samples) into one :class:`GenerationResult`, prefilling the prompt once for all n
samples where the backend allows it. Engines are built by name with :func:`create_engine` from a
:class:`~avengers.config.model_pool.ModelConfig`; backend modules are imported only when used, so a
machine without vLLM can still import and run every other backend.

Errors an engine raises are transport-neutral (:mod:`avengers.engines.errors`, re-exported here): the
model pool maps them to gRPC statuses at its servicer (:mod:`avengers.services.model_pool.errors`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from avengers.config.model_pool import ENGINES, ModelConfig
from avengers.engines.errors import (  # noqa: F401 - re-exported: engines import their errors from here
    EngineDead,
    EngineError,
    EngineMisconfigured,
    EngineNotInstalled,
    EngineTimeout,
    EngineUnavailable,
    InvalidRequest,
    NotServed,
    PromptTooLong,
    UnknownTask,
)


@dataclass(frozen=True)
class ChatTurn:
    """One chat message."""

    role: str
    content: str


@dataclass(frozen=True)
class SamplingSpec:
    """Sampling parameters with every default resolved."""

    n: int = 1
    temperature: float = 0.7
    top_p: float = 1.0
    max_tokens: int = 256
    stop: tuple[str, ...] = ()
    seed: int | None = None


@dataclass(frozen=True)
class GenerationRequest:
    """n samples for one prompt. Either ``prompt`` or ``messages`` is set (messages win)."""

    sampling: SamplingSpec
    prompt: str = ""
    messages: tuple[ChatTurn, ...] = ()
    request_id: str = ""
    task_id: str = ""

    def chat(self) -> list[dict[str, str]]:
        """The conversation as OpenAI-style message dicts (a plain prompt becomes one user message)."""
        if self.messages:
            return [{"role": m.role, "content": m.content} for m in self.messages]
        return [{"role": "user", "content": self.prompt}]

    @property
    def query_text(self) -> str:
        """The user's question: the prompt, or the content of the last user message."""
        if not self.messages:
            return self.prompt
        users = [m.content for m in self.messages if m.role == "user"]
        return users[-1] if users else self.messages[-1].content


@dataclass
class GeneratedSample:
    index: int
    text: str
    finish_reason: str
    """"stop" (end of sequence or a stop string), "length" (max_tokens or context), "error"."""
    completion_tokens: int


@dataclass
class GenerationResult:
    samples: list[GeneratedSample]
    prompt_tokens: int

    @property
    def completion_tokens(self) -> int:
        return sum(s.completion_tokens for s in self.samples)


@dataclass(frozen=True)
class SampleDelta:
    """New text of one sample; the sample's last delta carries its finish_reason."""

    index: int
    text: str
    finish_reason: str = ""
    completion_tokens: int = 0
    """Tokens of the sample so far (set on the last delta)."""
    prompt_tokens: int = 0
    """Prompt tokens of the request (set on each sample's last delta, the same number on each: the n samples
    share one prefill)."""


@dataclass
class EngineStats:
    """Counters an engine keeps; ``prefills`` counts prompt evaluations (one per request when done right)."""

    requests: int = 0
    prefills: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    samples: int = 0

    def record(self, result: GenerationResult, prefills: int = 1) -> None:
        self.record_counts(result.prompt_tokens, result.completion_tokens, len(result.samples), prefills)

    def record_counts(self, prompt_tokens: int, completion_tokens: int, samples: int, prefills: int = 1) -> None:
        """One finished request (streams count themselves with this: they have no GenerationResult)."""
        self.requests += 1
        self.prefills += prefills
        self.prompt_tokens += prompt_tokens
        self.completion_tokens += completion_tokens
        self.samples += samples


class Engine(ABC):
    """One model behind an async interface. Call :meth:`start` before use and :meth:`shutdown` after."""

    backend: str = ""
    """Registry name, set by :func:`register_engine`."""

    def __init__(self, config: ModelConfig):
        self.config = config
        self.stats = EngineStats()

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def model_id(self) -> str:
        """Engine-specific model id or path, as reported by ListModels."""
        return self.config.model_id

    async def start(self) -> None:
        """Load the model or open connections. Default: nothing to do."""

    @abstractmethod
    async def generate(self, request: GenerationRequest) -> GenerationResult:
        """All ``request.sampling.n`` samples of one request, in index order."""

    async def stream(self, request: GenerationRequest) -> AsyncIterator[SampleDelta]:
        """Text deltas of every sample as they are produced. Default: each whole sample as one delta."""
        result = await self.generate(request)
        for s in result.samples:
            yield SampleDelta(s.index, s.text, s.finish_reason, s.completion_tokens, result.prompt_tokens)

    async def check_health(self) -> None:
        """Raise if the engine cannot serve (Ray Serve then restarts the replica). Default: healthy."""

    async def shutdown(self) -> None:
        """Free the model and connections. Default: nothing to do."""


EngineFactory = Callable[[ModelConfig], Engine]


def register_engine(name: str) -> Callable[[type[Engine]], type[Engine]]:
    """Class decorator: make an engine class available as backend ``name`` (``ModelConfig.backend``)."""

    def wrap(cls: type[Engine]) -> type[Engine]:
        cls.backend = name
        ENGINES.register(name)(cls)
        # The registry names a class by setting ``cls.name``; an engine's ``name`` is its model's (the
        # property above), so drop that attribute again: the backend name is ``cls.backend``.
        if vars(cls).get("name") == name:
            del cls.name
        return cls

    return wrap


def available_engines() -> list[str]:
    """Backend names that can be configured (their libraries may still be missing)."""
    return ENGINES.names()


def engine_class(backend: str) -> EngineFactory:
    """The engine class of ``backend`` (its module is imported now; ValueError for an unknown name)."""
    return ENGINES.get(backend)


def create_engine(config: ModelConfig) -> Engine:
    """A new, not yet started engine for ``config.backend``."""
    return engine_class(config.backend)(config)


@dataclass
class StopScanner:
    """Finds stop strings in streamed text and holds back any tail that could still become one.

    Feed it text with :meth:`push`; it returns the text safe to emit. ``stopped`` turns True when a stop
    string appears (the stop string itself is dropped); :meth:`flush` returns the held-back tail at the end.
    """

    stop: tuple[str, ...]
    text: str = ""
    emitted: int = 0
    stopped: bool = False
    _hold: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self._hold = max((len(s) for s in self.stop), default=1) - 1

    def push(self, piece: str) -> str:
        if self.stopped:
            return ""
        start = max(0, len(self.text) - self._hold)
        self.text += piece
        cut = min((i for i in (self.text.find(s, start) for s in self.stop if s) if i >= 0), default=-1)
        if cut >= 0:
            self.text = self.text[:cut]
            self.stopped = True
            return self._take(len(self.text))
        return self._take(max(self.emitted, len(self.text) - self._hold))

    def flush(self) -> str:
        return self._take(len(self.text))

    def _take(self, upto: int) -> str:
        out = self.text[self.emitted : upto]
        self.emitted = max(self.emitted, upto)
        return out
