"""Map domain errors to gRPC status codes, so every bad input ends in a clear status, never a crash."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

import grpc

log = logging.getLogger(__name__)


class ServiceError(Exception):
    """An error with the gRPC status it should end the call with."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str, code: grpc.StatusCode | None = None):
        super().__init__(message)
        if code is not None:
            self.code = code


class InvalidArgument(ServiceError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(ServiceError):
    code = grpc.StatusCode.NOT_FOUND


class Unavailable(ServiceError):
    code = grpc.StatusCode.UNAVAILABLE


class FailedPrecondition(ServiceError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class ResourceExhausted(ServiceError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


def status_of(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status a handler's exception maps to."""
    if isinstance(exc, ServiceError):
        return exc.code, str(exc)
    if isinstance(exc, grpc.aio.AioRpcError):  # a dependency's status, passed on with its origin
        code = exc.code()
        if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.DEADLINE_EXCEEDED):
            return code, exc.details() or code.name
        return grpc.StatusCode.UNAVAILABLE, f"dependency failed: {code.name}: {exc.details()}"
    if isinstance(exc, (ValueError, KeyError)):
        return grpc.StatusCode.INVALID_ARGUMENT, str(exc)
    if isinstance(exc, TimeoutError):
        return grpc.StatusCode.DEADLINE_EXCEEDED, str(exc) or "deadline exceeded"
    if isinstance(exc, ConnectionError):
        return grpc.StatusCode.UNAVAILABLE, str(exc) or "dependency unavailable"
    return grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}: {exc}"


def grpc_errors(method: Callable[..., Any]) -> Callable[..., Any]:
    """Decorator for async unary servicer methods: exceptions become statuses with a message."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await method(self, request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:  # every error must become a status
            code, message = status_of(exc)
            if code == grpc.StatusCode.INTERNAL:
                log.exception("%s failed", method.__qualname__)
            await context.abort(code, message)

    return wrapper
