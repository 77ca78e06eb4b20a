"""OpenTelemetry tracing across the services: one trace from the gateway to embedder, router, model pool, voter.

- :func:`configure_tracing` installs the SDK tracer provider with an exporter: ``"none"`` (default: no
  tracing, no cost), ``"console"``, ``"otlp"`` (needs ``opentelemetry-exporter-otlp``; it reads the standard
  ``OTEL_EXPORTER_OTLP_*`` variables), or a ``SpanExporter`` object (tests). Unset, the standard
  ``OTEL_TRACES_EXPORTER`` variable decides. Nothing here needs the network unless OTLP is chosen.
- :class:`TracingServerInterceptor` (installed by ``start_server`` when tracing is on) continues the caller's
  trace from the W3C ``traceparent`` metadata and makes a SERVER span per call, current while the handler runs.
- :func:`client_interceptors` (passed to channels, see :func:`avengers.rpc.security.open_channel`) makes a
  CLIENT span per outgoing call and injects ``traceparent`` into its metadata.

Health checks and reflection are not traced (probes would flood the traces).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import grpc
from opentelemetry import propagate, trace
from opentelemetry.propagators.textmap import Getter, Setter
from opentelemetry.trace import SpanKind, Status, StatusCode

from avengers.observability.interception import HandlerCache, split_method, status_of_call

log = logging.getLogger(__name__)

TRACES_EXPORTER_ENV = "OTEL_TRACES_EXPORTER"
SERVICE_NAME_ENV = "OTEL_SERVICE_NAME"
EXPORTERS = ("none", "console", "otlp")
UNTRACED_SERVICES = frozenset(
    {"grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection", "grpc.reflection.v1.ServerReflection"}
)

_tracer = trace.get_tracer("avengers")
_lock = threading.Lock()
_installed: set[str] = set()
_fanout: Any = None
"""The span processor this module adds to the SDK provider once; exporters are added to and removed from it."""


def _span_fanout() -> Any:
    """The processor forwarding spans to the exporters configured here (created on first use)."""
    from opentelemetry.sdk.trace import SpanProcessor

    global _fanout
    if _fanout is None:

        class Fanout(SpanProcessor):
            def __init__(self) -> None:
                self.processors: list[SpanProcessor] = []

            def on_start(self, span, parent_context=None) -> None:
                for processor in self.processors:
                    processor.on_start(span, parent_context=parent_context)

            def on_end(self, span) -> None:
                for processor in self.processors:
                    processor.on_end(span)

            def shutdown(self) -> None:
                for processor in self.processors:
                    processor.shutdown()

            def force_flush(self, timeout_millis: int = 30000) -> bool:
                return all(processor.force_flush(timeout_millis) for processor in self.processors)

        _fanout = Fanout()
    return _fanout


def _ours_installed(provider: Any) -> bool:
    return _fanout is not None and _fanout in provider._active_span_processor._span_processors


def tracing_enabled() -> bool:
    """True while spans go somewhere: an exporter configured here, or a provider the application installed."""
    from opentelemetry.sdk.trace import TracerProvider

    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        return False
    return bool(_fanout.processors) if _ours_installed(provider) else True


def disable_tracing() -> None:
    """Flush and drop the exporters configured here; servers and channels created afterwards are untraced."""
    with _lock:
        if _fanout is not None:
            processors, _fanout.processors = _fanout.processors, []
            for processor in processors:
                processor.shutdown()
        _installed.clear()


def _named_exporter(name: str) -> Any | None:
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    if name == "otlp":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        except ImportError:
            try:
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            except ImportError:
                log.warning("tracing exporter 'otlp' needs opentelemetry-exporter-otlp; tracing stays off")
                return None
        return OTLPSpanExporter()
    raise ValueError(f"unknown tracing exporter {name!r}; known: {', '.join(EXPORTERS)}")


def configure_tracing(service_name: str | None = None, exporter: Any = None) -> bool:
    """Turn tracing on with ``exporter`` (see the module docstring); whether tracing is on afterwards.

    Idempotent per named exporter. The tracer provider is process-wide (OpenTelemetry allows one): a second
    call adds its exporter to the provider already installed, whose ``service.name`` stays the first one.
    :func:`disable_tracing` removes the exporters again.
    """
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    if exporter is None:
        exporter = os.environ.get(TRACES_EXPORTER_ENV, "none")
    with _lock:
        if isinstance(exporter, str):
            name = exporter.strip().lower() or "none"
            if name == "none" or name in _installed:
                return tracing_enabled()
            span_exporter = _named_exporter(name)
            if span_exporter is None:
                return tracing_enabled()
            processor = BatchSpanProcessor(span_exporter)
            _installed.add(name)
        else:
            processor = SimpleSpanProcessor(exporter)
        provider = trace.get_tracer_provider()
        if not isinstance(provider, TracerProvider):
            service = service_name or os.environ.get(SERVICE_NAME_ENV) or "avengers"
            provider = TracerProvider(resource=Resource.create({"service.name": service}))
            trace.set_tracer_provider(provider)
        fanout = _span_fanout()
        if not _ours_installed(provider):
            provider.add_span_processor(fanout)
        fanout.processors.append(processor)
    log.info("tracing on (exporter %s)", exporter if isinstance(exporter, str) else type(exporter).__name__)
    return True


class _MetadataGetter(Getter):
    """Reads propagation headers from gRPC invocation metadata (a sequence of key/value pairs)."""

    def get(self, carrier: Any, key: str) -> list[str] | None:
        values = [v for k, v in carrier if k == key]
        return [v if isinstance(v, str) else v.decode() for v in values] or None

    def keys(self, carrier: Any) -> list[str]:
        return [k for k, _ in carrier]


class _ListSetter(Setter):
    def set(self, carrier: list, key: str, value: str) -> None:
        carrier.append((key, value))


_GETTER = _MetadataGetter()
_SETTER = _ListSetter()


def _rpc_attributes(service: str, method: str) -> dict[str, str]:
    return {"rpc.system": "grpc", "rpc.service": service, "rpc.method": method}


def _record_status(span: trace.Span, code: grpc.StatusCode, details: str | None) -> None:
    span.set_attribute("rpc.grpc.status_code", code.value[0])
    if code != grpc.StatusCode.OK:
        span.set_status(Status(StatusCode.ERROR, f"{code.name}: {details or ''}".rstrip(": ")))


class TracingServerInterceptor(grpc.aio.ServerInterceptor):
    """A SERVER span per call, child of the caller's span when its metadata carries ``traceparent``."""

    def __init__(self) -> None:
        self._wrapped = HandlerCache()

    async def intercept_service(self, continuation, handler_call_details: grpc.HandlerCallDetails):
        handler = await continuation(handler_call_details)
        if split_method(handler_call_details.method)[0] in UNTRACED_SERVICES:
            return handler
        return self._wrapped.get(handler_call_details.method, handler, self._traced)

    @staticmethod
    def _traced(full_method: str):
        service, method = split_method(full_method)
        name, attributes = f"{service}/{method}", _rpc_attributes(service, method)

        @asynccontextmanager
        async def traced(context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
            parent = propagate.extract(tuple(context.invocation_metadata() or ()), getter=_GETTER)
            with _tracer.start_as_current_span(
                name, context=parent, kind=SpanKind.SERVER, attributes=attributes,
                record_exception=False, set_status_on_exception=False,
            ) as span:
                error: BaseException | None = None
                try:
                    yield
                except BaseException as exc:
                    error = exc
                    raise
                finally:
                    _record_status(span, status_of_call(context, error), context.details())

        return traced


def _with_trace_context(details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
    carrier: list[tuple[str, str]] = []
    propagate.inject(carrier, setter=_SETTER)
    if not carrier:
        return details
    metadata = grpc.aio.Metadata.from_tuple(tuple(details.metadata or ()) + tuple(carrier))
    return details._replace(metadata=metadata)


def _method_name(details: grpc.aio.ClientCallDetails) -> str:
    method = details.method
    return method.decode() if isinstance(method, bytes) else method


class _UnaryUnaryTracing(grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation, client_call_details, request):
        service, method = split_method(_method_name(client_call_details))
        with _tracer.start_as_current_span(
            f"{service}/{method}", kind=SpanKind.CLIENT, attributes=_rpc_attributes(service, method),
            record_exception=False, set_status_on_exception=False,
        ) as span:
            call = await continuation(_with_trace_context(client_call_details), request)
            try:
                await call
            except grpc.aio.AioRpcError as exc:
                _record_status(span, exc.code(), exc.details())
            else:
                _record_status(span, grpc.StatusCode.OK, None)
            return call


class _UnaryStreamTracing(grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation, client_call_details, request):
        return await continuation(_with_trace_context(client_call_details), request)


class _StreamUnaryTracing(grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(self, continuation, client_call_details, request_iterator):
        return await continuation(_with_trace_context(client_call_details), request_iterator)


class _StreamStreamTracing(grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(self, continuation, client_call_details, request_iterator):
        return await continuation(_with_trace_context(client_call_details), request_iterator)


def client_interceptors() -> list[grpc.aio.ClientInterceptor]:
    """Interceptors for a new channel: trace context out with every call, a CLIENT span per unary call.

    Empty while tracing is off (interceptors cost time on every call); call :func:`configure_tracing` before
    opening channels.
    """
    if not tracing_enabled():
        return []
    return [_UnaryUnaryTracing(), _UnaryStreamTracing(), _StreamUnaryTracing(), _StreamStreamTracing()]
