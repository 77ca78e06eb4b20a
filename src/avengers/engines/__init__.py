"""Generation engines behind one small async interface (vLLM, OpenAI-compatible HTTP, llama.cpp, replay).

Backends are imported on first use by :func:`create_engine`, so optional libraries stay optional.
"""

from avengers.engines.base import (
    ChatTurn,
    Engine,
    EngineStats,
    GeneratedSample,
    GenerationRequest,
    GenerationResult,
    SampleDelta,
    SamplingSpec,
    available_engines,
    create_engine,
    register_engine,
)
from avengers.engines.errors import (
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

__all__ = [
    "ChatTurn",
    "Engine",
    "EngineDead",
    "EngineError",
    "EngineMisconfigured",
    "EngineNotInstalled",
    "EngineStats",
    "EngineTimeout",
    "EngineUnavailable",
    "GeneratedSample",
    "GenerationRequest",
    "GenerationResult",
    "InvalidRequest",
    "NotServed",
    "PromptTooLong",
    "SampleDelta",
    "SamplingSpec",
    "UnknownTask",
    "available_engines",
    "create_engine",
    "register_engine",
]
