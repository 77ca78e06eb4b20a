"""Wrap the behaviour of a gRPC method handler, whatever its kind, for aio server interceptors.

A server interceptor sees an ``RpcMethodHandler`` of one of four kinds (unary or streaming request and
response). :func:`wrap_handler` builds the same kind of handler whose behaviour runs inside an async context
manager made per call by ``around(context)``; the manager sees the call's exception, if any, on exit, and
:func:`status_of_call` tells the status the call ended with. :func:`refusing_handler` builds a handler of the
same kind that ends every call with one status (authentication refusals).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import grpc

Around = Callable[[grpc.aio.ServicerContext], AbstractAsyncContextManager[Any]]


def split_method(full_method: str) -> tuple[str, str]:
    """"/pkg.Service/Method" -> ("pkg.Service", "Method")."""
    service, _, method = full_method.lstrip("/").rpartition("/")
    return service or "unknown", method or full_method


def status_of_call(context: grpc.aio.ServicerContext, exc: BaseException | None) -> grpc.StatusCode:
    """The status a call ended with, given the exception its behaviour raised (None: it returned)."""
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code
    if exc is None or isinstance(exc, grpc.aio.AbortError):
        return grpc.StatusCode.OK if exc is None else grpc.StatusCode.UNKNOWN
    if isinstance(exc, (asyncio.CancelledError, GeneratorExit)):
        return grpc.StatusCode.CANCELLED
    return grpc.StatusCode.UNKNOWN


async def _result(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


def _unary_response(behavior: Callable, around: Around) -> Callable:
    async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> Any:
        async with around(context):
            return await _result(behavior(request, context))

    return wrapped


def _stream_response(behavior: Callable, around: Around) -> Callable:
    async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        async with around(context):
            produced = behavior(request, context)
            if inspect.isasyncgen(produced) or hasattr(produced, "__aiter__"):
                async for item in produced:
                    yield item
            else:  # a coroutine writing with context.write()
                await _result(produced)

    return wrapped


_KINDS = (
    ("unary_unary", _unary_response, grpc.unary_unary_rpc_method_handler),
    ("stream_unary", _unary_response, grpc.stream_unary_rpc_method_handler),
    ("unary_stream", _stream_response, grpc.unary_stream_rpc_method_handler),
    ("stream_stream", _stream_response, grpc.stream_stream_rpc_method_handler),
)


def wrap_handler(handler: grpc.RpcMethodHandler | None, around: Around) -> grpc.RpcMethodHandler | None:
    """``handler`` with its behaviour run inside ``around(context)``; None (unknown method) stays None."""
    if handler is None:
        return None
    for kind, wrap, make in _KINDS:
        behavior = getattr(handler, kind)
        if behavior is not None:
            return make(
                wrap(behavior, around),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
    return handler


def refusing_handler(
    handler: grpc.RpcMethodHandler | None, code: grpc.StatusCode, message: str
) -> grpc.RpcMethodHandler | None:
    """A handler of ``handler``'s kind ending every call with ``code`` and ``message`` (None stays None)."""
    if handler is None:
        return None

    async def refuse(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(code, message)

    async def refuse_stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        await context.abort(code, message)
        yield  # pragma: no cover - abort raises

    for kind, wrap, make in _KINDS:
        if getattr(handler, kind) is not None:
            behavior = refuse if wrap is _unary_response else refuse_stream
            return make(behavior, request_deserializer=None, response_serializer=handler.response_serializer)
    return handler


class HandlerCache:
    """Wrapped handlers, so an interceptor wraps each method's handler once, not on every call.

    ``get(method, handler, make_around)`` returns ``handler`` wrapped with ``make_around(method)``. Keyed by
    method and handler object: inner interceptors may hand out a few handlers per method (the service's, a
    cached refusal); the cache is bounded all the same.
    """

    MAX_ENTRIES = 1024

    def __init__(self) -> None:
        self._entries: dict[tuple[str, int], tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler | None]] = {}

    def get(
        self,
        method: str,
        handler: grpc.RpcMethodHandler | None,
        make_around: Callable[[str], Around],
    ) -> grpc.RpcMethodHandler | None:
        if handler is None:
            return None
        key = (method, id(handler))
        cached = self._entries.get(key)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = wrap_handler(handler, make_around(method))
        if len(self._entries) >= self.MAX_ENTRIES:
            self._entries.clear()
        self._entries[key] = (handler, wrapped)  # holding the handler keeps its id from being reused
        return wrapped
