"""Map domain errors to gRPC status codes, so every bad input ends in a clear status, never a crash."""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import AsyncIterator, Callable
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


class UndecodableRequest:
    """Stands in for a request message whose bytes did not parse (invalid UTF-8 in a string, truncated or
    malformed data); the handler then ends the call with INVALID_ARGUMENT instead of running."""

    __slots__ = ("message",)

    def __init__(self, message: str):
        self.message = message


def _tolerant(deserialize: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def parse(data: bytes) -> Any:
        try:
            return deserialize(data)
        except Exception as exc:  # noqa: BLE001 - protobuf's DecodeError, or whatever a deserializer raises
            return UndecodableRequest(f"the request could not be decoded: {exc}".rstrip(": "))

    return parse


async def _refuse(request: UndecodableRequest, context: grpc.aio.ServicerContext) -> None:
    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)


def _checked_unary(behavior: Callable) -> Callable:
    async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
        if isinstance(request, UndecodableRequest):
            await _refuse(request, context)
        result = behavior(request, context)
        return await result if inspect.isawaitable(result) else result

    return call


def _checked_unary_stream(behavior: Callable) -> Callable:
    async def call(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        if isinstance(request, UndecodableRequest):
            await _refuse(request, context)
        produced = behavior(request, context)
        if hasattr(produced, "__aiter__"):
            async for item in produced:
                yield item
        elif inspect.isawaitable(produced):  # a coroutine writing with context.write()
            await produced

    return call


def _checked_requests(behavior: Callable, streaming_response: bool) -> Callable:
    async def requests(iterator: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        async for request in iterator:
            if isinstance(request, UndecodableRequest):
                await _refuse(request, context)
            yield request

    if streaming_response:
        return _checked_unary_stream(lambda it, context: behavior(requests(it, context), context))
    return _checked_unary(lambda it, context: behavior(requests(it, context), context))


_CHECKED_KINDS = (
    ("unary_unary", _checked_unary, grpc.unary_unary_rpc_method_handler),
    ("unary_stream", _checked_unary_stream, grpc.unary_stream_rpc_method_handler),
    ("stream_unary", lambda b: _checked_requests(b, False), grpc.stream_unary_rpc_method_handler),
    ("stream_stream", lambda b: _checked_requests(b, True), grpc.stream_stream_rpc_method_handler),
)


class UndecodableRequestInterceptor(grpc.aio.ServerInterceptor):
    """Undecodable request bytes end the call with INVALID_ARGUMENT and a one-line message.

    Without it grpc.aio ends such calls with UNKNOWN, the deserializer's exception text and a server-side
    traceback, before any interceptor's wrapped behaviour runs (so they were missing from the request
    metrics). Installed innermost by :func:`avengers.rpc.server.start_server`: the deserializer returns an
    :class:`UndecodableRequest` marker and the behaviour refuses it, so the metrics and tracing interceptors
    around it see an ordinary INVALID_ARGUMENT call.
    """

    def __init__(self) -> None:
        self._handlers: dict[tuple[str, int], tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(self, continuation, handler_call_details: grpc.HandlerCallDetails):
        handler = await continuation(handler_call_details)
        if handler is None or handler.request_deserializer is None:
            return handler
        key = (handler_call_details.method, id(handler))
        cached = self._handlers.get(key)
        if cached is None or cached[0] is not handler:
            if len(self._handlers) >= 1024:
                self._handlers.clear()
            cached = self._handlers[key] = (handler, self._checked(handler))
        return cached[1]

    @staticmethod
    def _checked(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        for kind, check, make in _CHECKED_KINDS:
            behavior = getattr(handler, kind)
            if behavior is not None:
                return make(
                    check(behavior),
                    request_deserializer=_tolerant(handler.request_deserializer),
                    response_serializer=handler.response_serializer,
                )
        return handler
