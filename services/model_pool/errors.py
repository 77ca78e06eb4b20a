"""Engine errors -> gRPC statuses, in one place, for the standalone servicer and the Ray Serve ingress alike.

Engines stay transport-neutral (:mod:`avengers.engines.errors`); the model pool decides the status here:

* InvalidRequest (PromptTooLong, ...) -> INVALID_ARGUMENT: the gateway ends the call, no fallback.
* NotServed (UnknownTask, ...) -> NOT_FOUND.
* EngineUnavailable (EngineDead, ...) -> UNAVAILABLE: the gateway falls back to the next-ranked model.
* EngineTimeout -> DEADLINE_EXCEEDED.
* EngineMisconfigured (EngineNotInstalled, ...) -> FAILED_PRECONDITION.
* anything else an engine lets escape -> UNAVAILABLE naming the model (logged): a crashed engine is a reason
  to try another model, not to fail the whole Ask.
"""

from __future__ import annotations

import logging

import grpc

from avengers.engines.errors import (
    EngineError,
    EngineMisconfigured,
    EngineTimeout,
    EngineUnavailable,
    InvalidRequest,
    NotServed,
)
from avengers.rpc.errors import ServiceError

log = logging.getLogger(__name__)

ENGINE_STATUS: dict[type[EngineError], grpc.StatusCode] = {
    InvalidRequest: grpc.StatusCode.INVALID_ARGUMENT,
    NotServed: grpc.StatusCode.NOT_FOUND,
    EngineUnavailable: grpc.StatusCode.UNAVAILABLE,
    EngineTimeout: grpc.StatusCode.DEADLINE_EXCEEDED,
    EngineMisconfigured: grpc.StatusCode.FAILED_PRECONDITION,
}
"""Status of each kind of engine error (the nearest listed base class wins)."""


def engine_status(exc: EngineError) -> grpc.StatusCode:
    """The status of an engine error: that of its nearest kind in :data:`ENGINE_STATUS` (else UNAVAILABLE)."""
    for kind in type(exc).__mro__:
        if kind in ENGINE_STATUS:
            return ENGINE_STATUS[kind]
    return grpc.StatusCode.UNAVAILABLE


def engine_failure(model: str, exc: BaseException) -> ServiceError:
    """The status of an engine call that failed: ServiceErrors pass, engine errors map by kind, anything
    else becomes UNAVAILABLE naming the model."""
    if isinstance(exc, ServiceError):
        return exc
    if isinstance(exc, EngineError):
        return ServiceError(str(exc), engine_status(exc))
    log.error("model %r failed: %s: %s", model, type(exc).__name__, exc)
    return ServiceError(f"model {model!r} failed: {type(exc).__name__}: {exc}", grpc.StatusCode.UNAVAILABLE)
