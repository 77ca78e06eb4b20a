"""The Router service: where its routers come from, how queries are embedded, how often it reloads."""

from __future__ import annotations

from pydantic import Field

from avengers.config.base import ConfigModel
from avengers.config.embedder_service import BatchingConfig
from avengers.config.embedding import EmbeddingConfig
from avengers.config.router_feedback import RouterFeedbackConfig
from avengers.config.server import ServerConfig
from avengers.config.store import StoreConfig

DEFAULT_ROUTER_PORT = 50052


class RouterServiceConfig(ConfigModel):
    server: ServerConfig = ServerConfig(port=DEFAULT_ROUTER_PORT)
    """Bind address, message limits and shutdown grace (default port 50052)."""

    store: StoreConfig = StoreConfig()
    """The centroid store the active router is loaded from."""

    poll_interval_seconds: float = Field(default=5.0, ge=0.0)
    """How often the active version is checked; a change is loaded and swapped in atomically. 0 disables
    polling (reloads then happen only on demand: SIGHUP under ``avengers serve``, or ``reload()``)."""

    embedder_address: str | None = None
    """host:port of the Embedder service used for query texts. None: ``$AVENGERS_EMBEDDER_ADDR``; when
    that is unset too, queries are embedded in process."""

    embed_timeout_seconds: float = Field(default=10.0, gt=0.0)
    """Deadline of one call to the Embedder service."""

    embedding: EmbeddingConfig | None = None
    """In-process embedder (no Embedder service). None: the embedder the active router was fitted with
    (a sentence-transformers model by name, or the hashing embedder of the fitted dimension)."""

    batching: BatchingConfig = BatchingConfig()
    """Micro-batching of the in-process embedder."""

    feedback: RouterFeedbackConfig = RouterFeedbackConfig()
    """Learning from feedback (off by default): live tallies update the served scores at every poll."""
