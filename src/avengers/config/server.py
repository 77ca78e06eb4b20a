"""Options every gRPC server shares."""

from __future__ import annotations

from pydantic import Field, model_validator

from avengers.config.base import ConfigModel


class ServerConfig(ConfigModel):
    host: str = "0.0.0.0"
    """Interface to bind ("127.0.0.1" for loopback only)."""

    port: int = Field(default=0, ge=0, le=65535)
    """Port to bind; 0 picks a free one (tests). Each service documents its default."""

    max_message_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    """Largest gRPC message accepted or sent; larger requests end with RESOURCE_EXHAUSTED."""

    grace_seconds: float = Field(default=10.0, ge=0.0)
    """On shutdown: time in-flight calls get to finish after health turns NOT_SERVING."""

    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    """Port of the Prometheus ``/metrics`` HTTP endpoint (on ``host``); 0 disables it. Unset: the
    ``AVENGERS_METRICS_PORT`` environment variable, else 9090. Services in one process share one endpoint."""

    tls_cert_file: str | None = None
    """PEM certificate chain of this server; with ``tls_key_file`` the server accepts TLS only."""

    tls_key_file: str | None = None
    """PEM private key of ``tls_cert_file``."""

    tls_client_ca_file: str | None = None
    """PEM CA bundle for mutual TLS: clients must present a certificate signed by it (needs ``tls_cert_file``)."""

    auth_token_env: str | None = None
    """Name of the environment variable holding the bearer token(s) clients must send as ``authorization:
    Bearer <token>`` (several, comma-separated, during a rotation). Unset: no token auth. Health checks are exempt."""

    @model_validator(mode="after")
    def _tls_files_complete(self) -> ServerConfig:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file go together: set both or neither")
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise ValueError("tls_client_ca_file (mutual TLS) needs tls_cert_file and tls_key_file")
        return self

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"
