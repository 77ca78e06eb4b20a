"""The Embedder service: which model it serves and how concurrent calls are batched."""

from __future__ import annotations

from pydantic import Field, model_validator

from avengers.config.base import ConfigModel
from avengers.config.embedding import EmbeddingConfig
from avengers.config.server import ServerConfig

DEFAULT_EMBEDDER_PORT = 50051


class BatchingConfig(ConfigModel):
    """Dynamic micro-batching of concurrent embedding calls (:class:`avengers.serving.batching.MicroBatcher`)."""

    max_batch: int = Field(default=64, ge=1, le=4096)
    """Largest number of texts in one request, and in one model call (requests are combined up to it)."""

    max_wait_ms: float = Field(default=0.0, ge=0.0, le=1000.0)
    """How long the oldest waiting request may wait for others to join its batch, in milliseconds.
    0 (the default) runs whatever is queued as soon as the model is free: under load the requests that
    arrive during one model call form the next batch anyway, while with a wait every request of light traffic
    would wait the full time for nobody."""

    max_queued_texts: int = Field(default=4096, ge=1)
    """Texts allowed to wait for the model; requests beyond it end at once with RESOURCE_EXHAUSTED."""

    @model_validator(mode="after")
    def _queue_holds_a_batch(self) -> BatchingConfig:
        if self.max_queued_texts < self.max_batch:
            raise ValueError(f"max_queued_texts ({self.max_queued_texts}) must be >= max_batch ({self.max_batch})")
        return self


class EmbedderServiceConfig(ConfigModel):
    server: ServerConfig = ServerConfig(port=DEFAULT_EMBEDDER_PORT)
    """Bind address, message limits and shutdown grace (default port 50051)."""

    embedding: EmbeddingConfig = EmbeddingConfig()
    """The model served (default: the bundled all-MiniLM-L6-v2 on CPU); ``max_text_chars`` bounds each text."""

    batching: BatchingConfig = BatchingConfig()
    """Micro-batching of concurrent calls, per-request size limit and queue bound."""
