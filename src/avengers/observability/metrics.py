"""Prometheus metrics of every gRPC service, and the helpers modules use for their own metrics.

- :class:`MetricsInterceptor` (installed by :func:`avengers.rpc.server.start_server`) counts calls by
  service, method and status code, times them in a histogram and tracks calls in flight.
- :func:`start_metrics_endpoint` serves the process's registry on ``http://HOST:PORT/metrics``, once per
  process and port (several services in one process share it); 0 disables it.
- :func:`counter`, :func:`histogram`, :func:`gauge` create a metric, or return the one already registered
  under that name (a module imported twice, or two services in one process, must not fail).
- :func:`record_route` counts the model chosen per cluster (router and gateway).

Every metric name starts with ``avengers_``; see docs/OPERATIONS.md for the list.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import grpc
from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server

from avengers.observability.interception import HandlerCache, split_method, status_of_call

log = logging.getLogger(__name__)

DEFAULT_METRICS_PORT = 9090
METRICS_PORT_ENV = "AVENGERS_METRICS_PORT"

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
"""Seconds; from a cached answer (~1 ms) to a long generation (minutes)."""

Metric = TypeVar("Metric", Counter, Gauge, Histogram)
_lock = threading.Lock()
_metrics: dict[str, Any] = {}


def _get_or_create(kind: type[Metric], name: str, documentation: str, labels: Sequence[str], **kwargs: Any) -> Metric:
    with _lock:
        existing = _metrics.get(name)
        if existing is None:
            try:
                existing = kind(name, documentation, list(labels), **kwargs)
            except ValueError:  # registered by another copy of the defining module
                existing = REGISTRY._names_to_collectors.get(name)
                if existing is None:
                    raise
            _metrics[name] = existing
    if not isinstance(existing, kind):
        raise TypeError(f"metric {name!r} is already registered as a {type(existing).__name__}")
    return existing


def counter(name: str, documentation: str, labels: Sequence[str] = ()) -> Counter:
    """The counter ``name`` (``_total`` is appended on export), created on first use."""
    return _get_or_create(Counter, name, documentation, labels)


def gauge(name: str, documentation: str, labels: Sequence[str] = ()) -> Gauge:
    """The gauge ``name``, created on first use."""
    return _get_or_create(Gauge, name, documentation, labels)


def histogram(
    name: str, documentation: str, labels: Sequence[str] = (), buckets: Sequence[float] = LATENCY_BUCKETS
) -> Histogram:
    """The histogram ``name`` with ``buckets``, created on first use."""
    return _get_or_create(Histogram, name, documentation, labels, buckets=tuple(buckets))


RPC_REQUESTS = counter(
    "avengers_grpc_requests", "gRPC calls handled, by service, method and status code", ["service", "method", "code"]
)
RPC_SECONDS = histogram("avengers_grpc_request_seconds", "Time to handle a gRPC call", ["service", "method"])
RPC_IN_FLIGHT = gauge("avengers_grpc_requests_in_flight", "gRPC calls being handled", ["service", "method"])
ROUTED = counter(
    "avengers_routed_model",
    "Queries routed, by the cluster they fell in and the model ranked first (or answering)",
    ["component", "cluster", "model"],
)


def record_route(component: str, cluster: int | str, model: str) -> None:
    """Count one query of ``cluster`` sent to ``model`` by ``component`` ("router", "gateway")."""
    ROUTED.labels(component, str(cluster), model).inc()


class MetricsInterceptor(grpc.aio.ServerInterceptor):
    """Counts, times and tracks in flight every call of the server it is installed on."""

    def __init__(self) -> None:
        self._wrapped = HandlerCache()

    async def intercept_service(self, continuation, handler_call_details: grpc.HandlerCallDetails):
        handler = await continuation(handler_call_details)
        return self._wrapped.get(handler_call_details.method, handler, self._measure)

    @staticmethod
    def _measure(full_method: str):
        service, method = split_method(full_method)
        seconds = RPC_SECONDS.labels(service, method)
        in_flight = RPC_IN_FLIGHT.labels(service, method)

        @asynccontextmanager
        async def measured(context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
            started = time.perf_counter()
            in_flight.inc()
            error: BaseException | None = None
            try:
                yield
            except BaseException as exc:
                error = exc
                raise
            finally:
                in_flight.dec()
                seconds.observe(time.perf_counter() - started)
                RPC_REQUESTS.labels(service, method, status_of_call(context, error).name).inc()

        return measured


_endpoints: dict[tuple[str, int], int] = {}


def metrics_port_from(configured: int | None) -> int:
    """The metrics port to use: ``configured``, else ``$AVENGERS_METRICS_PORT``, else 9090 (0: none)."""
    if configured is not None:
        return configured
    value = os.environ.get(METRICS_PORT_ENV, "").strip()
    if not value:
        return DEFAULT_METRICS_PORT
    try:
        port = int(value)
    except ValueError:
        raise ValueError(f"{METRICS_PORT_ENV}={value!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"{METRICS_PORT_ENV}={port} is outside 0..65535")
    return port


def start_metrics_endpoint(port: int, host: str = "0.0.0.0") -> int | None:
    """Serve ``/metrics`` on ``host:port`` (once per process and address); the port served, or None.

    0 disables the endpoint. A port already taken by another process is logged, not fatal: the service
    works without its endpoint rather than not at all.
    """
    if port == 0:
        return None
    with _lock:
        if (host, port) in _endpoints:
            return _endpoints[(host, port)]
        try:
            start_http_server(port, addr=host)
        except OSError as exc:
            log.warning("metrics endpoint not started: %s:%d: %s", host, port, exc)
            return None
        _endpoints[(host, port)] = port
    log.info("metrics on http://%s:%d/metrics", host, port)
    return port
