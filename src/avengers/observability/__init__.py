"""Observability of the services: Prometheus metrics (:mod:`.metrics`) and OpenTelemetry tracing (:mod:`.tracing`).

Every server started with :func:`avengers.rpc.server.start_server` gets per-method request counts, latency
histograms and calls in flight; tracing is on once :func:`.tracing.configure_tracing` installed an exporter.
"""

from avengers.observability.metrics import counter, gauge, histogram, record_route, start_metrics_endpoint
from avengers.observability.tracing import client_interceptors, configure_tracing, tracing_enabled

__all__ = [
    "client_interceptors",
    "configure_tracing",
    "counter",
    "gauge",
    "histogram",
    "record_route",
    "start_metrics_endpoint",
    "tracing_enabled",
]
