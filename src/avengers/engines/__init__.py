"""Generation engines behind one small async interface (vLLM, OpenAI-compatible HTTP, llama.cpp, replay).

Backends are imported on first use by :func:`create_engine`, so optional libraries stay optional.
"""

from avengers.engines.base import (
    ChatTurn,
    Engine,
    EngineNotInstalled,
    EngineStats,
    EngineTimeout,
    EngineUnavailable,
    GeneratedSample,
    GenerationRequest,
    GenerationResult,
    PromptTooLong,
    SampleDelta,
    SamplingSpec,
    UnknownTask,
    available_engines,
    create_engine,
    register_engine,
)

__all__ = [
    "ChatTurn",
    "Engine",
    "EngineNotInstalled",
    "EngineStats",
    "EngineTimeout",
    "EngineUnavailable",
    "GeneratedSample",
    "GenerationRequest",
    "GenerationResult",
    "PromptTooLong",
    "SampleDelta",
    "SamplingSpec",
    "UnknownTask",
    "available_engines",
    "create_engine",
    "register_engine",
]
