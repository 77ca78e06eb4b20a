"""What can go wrong in an engine, transport-neutral: no gRPC (or HTTP) status here.

Engines raise these; whoever serves them picks the status. The model pool maps each kind to a gRPC status at
its servicer and Ray Serve ingress (:mod:`avengers.services.model_pool.errors`), the way Ray Serve LLM keeps
its engines free of transport concerns and maps errors at the ingress. The kinds differ in what the caller
should do next:

* :class:`InvalidRequest` — the request itself is wrong for this model (prompt longer than its context,
  messages its chat template refuses, sampling parameters it cannot serve): retrying elsewhere will not help.
* :class:`NotServed` — the engine or the server behind it has no such thing (model, recorded task).
* :class:`EngineUnavailable` — this engine cannot serve now (not loaded, its server down, it died): another
  model or replica may. :class:`EngineDead` when it will not recover without a restart.
* :class:`EngineTimeout` — the engine or its server did not answer in time.
* :class:`EngineMisconfigured` — it can never serve as configured (library missing, API key unset).
"""

from __future__ import annotations


class EngineError(Exception):
    """Base of the errors engines raise on purpose; anything else escaping an engine is a bug or a crash."""


class InvalidRequest(EngineError):
    """The request is wrong for this model; the same request would fail again."""


class PromptTooLong(InvalidRequest):
    """The prompt does not fit the model's context window."""


class NotServed(EngineError):
    """The engine (or the server behind it) does not have what was asked for."""


class UnknownTask(NotServed):
    """The replay backend has no record of the requested task or query."""


class EngineUnavailable(EngineError):
    """The engine (or the server behind it) cannot serve right now; another model may."""


class EngineDead(EngineUnavailable):
    """The engine died and will not serve again until it is restarted (health checks fail)."""


class EngineTimeout(EngineError):
    """The engine (or the server behind it) did not answer in time."""


class EngineMisconfigured(EngineError):
    """The engine cannot serve as configured (e.g. a required environment variable is unset)."""


class EngineNotInstalled(EngineMisconfigured):
    """The backend's library is not installed on this machine (e.g. vLLM or llama-cpp-python)."""
