"""Options every gRPC server shares."""

from __future__ import annotations

from pydantic import Field

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

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"
