"""The OpenAI-compatible HTTP service: its listener, where the Gateway (and the model pool) are, request limits."""

from __future__ import annotations

import os

from pydantic import Field, model_validator

from avengers.config.base import ConfigModel
from avengers.config.gateway_service import DEFAULT_GATEWAY_PORT, MODEL_POOL_ADDR_ENV
from avengers.config.model_pool import DEFAULT_APP_NAME
from avengers.config.server import ServerConfig

DEFAULT_HTTP_PORT = 8080
GATEWAY_ADDR_ENV = "AVENGERS_GATEWAY_ADDR"
ENSEMBLE_MODEL = "avengers"


class UpstreamConfig(ConfigModel):
    """How the HTTP service reaches one gRPC service (the Gateway, or the model pool for direct calls)."""

    address: str
    """host:port of the service."""

    tls: bool = False
    """Connect with TLS (system roots unless ``tls_ca_file``)."""

    tls_ca_file: str | None = None
    """PEM CA bundle that signed the service's certificate (implies TLS)."""

    tls_cert_file: str | None = None
    """PEM client certificate, for mutual TLS (implies TLS; needs ``tls_key_file``)."""

    tls_key_file: str | None = None
    """PEM key of ``tls_cert_file``."""

    token_env: str | None = None
    """Environment variable holding the bearer token to send to the service (never the token itself)."""

    @model_validator(mode="after")
    def _client_pair(self) -> UpstreamConfig:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file go together: set both or neither")
        return self


class ModelPoolUpstreamConfig(UpstreamConfig):
    """The model pool, for calls that name one pool model instead of the ensemble."""

    application: str | None = DEFAULT_APP_NAME
    """Sent as the "application" metadata key (Ray Serve picks the app by it); None sends none."""


class HttpLimits(ConfigModel):
    """Bounds of an HTTP request; the Gateway applies its own limits (query size, n, ...) on top."""

    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    """Largest request body; larger ones end with 413 and an OpenAI-style JSON error."""

    max_concurrent_requests: int = Field(default=256, ge=0)
    """Requests handled at once; more end with 429 at once (0: no limit)."""

    timeout_seconds: float = Field(default=300.0, gt=0.0)
    """Deadline of one request toward the Gateway; past it the request ends with 504."""

    max_direct_samples: int = Field(default=16, ge=1, le=64)
    """Most choices (``n``) of a direct call to one pool model."""


class HttpServiceConfig(ConfigModel):
    server: ServerConfig = ServerConfig(port=DEFAULT_HTTP_PORT)
    """Bind address (default port 8080), TLS / mutual TLS, bearer-token auth (``auth_token_env``; ``/health``
    is exempt), the /metrics endpoint and shutdown grace, as for the gRPC services."""

    gateway: UpstreamConfig = Field(
        default_factory=lambda: UpstreamConfig(
            address=os.environ.get(GATEWAY_ADDR_ENV) or f"127.0.0.1:{DEFAULT_GATEWAY_PORT}"
        )
    )
    """The Gateway every ensemble call goes to. Default address: ``$AVENGERS_GATEWAY_ADDR``, else 127.0.0.1:50050."""

    model_pool: ModelPoolUpstreamConfig | None = Field(
        default_factory=lambda: (
            ModelPoolUpstreamConfig(address=os.environ[MODEL_POOL_ADDR_ENV])
            if os.environ.get(MODEL_POOL_ADDR_ENV) else None
        )
    )
    """The model pool, for direct calls to one pool model (``model`` = its name) and for listing the pool's
    models in ``GET /v1/models``. Unset (and no ``$AVENGERS_MODEL_POOL_ADDR``): only the ensemble is served."""

    ensemble_model: str = ENSEMBLE_MODEL
    """The model name that means "the routed ensemble"."""

    limits: HttpLimits = HttpLimits()
    """Body size, concurrency and deadline."""
