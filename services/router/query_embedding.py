"""How the Router turns a query text into an embedding: the Embedder service, or a model in process.

Every call names the embedder the serving router was fitted with, so a router version and the embedder
used for its queries always change together: an in-process embedder keeps one model per fitted
embedder, and a remote one reports the model that answered, which the servicer checks.
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from avengers.clients.embedder import EmbedderClient
from avengers.config.embedder_service import BatchingConfig
from avengers.config.embedding import EmbeddingConfig
from avengers.core.embedding import EmbeddingError, create_embedder
from avengers.rpc.errors import ServiceError, Unavailable
from avengers.serving.batched_embedder import BatchedEmbedder

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EmbeddedQuery:
    vector: np.ndarray
    """(dimension,) float32, unit norm."""
    model: str
    """Embedder that produced it."""
    dimension: int


def mismatch_message(router_model: str, router_dimension: int, model: str, dimension: int, where: str) -> str:
    return (
        f"the active router was fitted with embedder {router_model!r} (dimension {router_dimension}) but "
        f"{where} serves {model!r} (dimension {dimension}); serve the router's embedder or refit the router"
    )


class QueryEmbedder(ABC):
    """Embeds query texts for routers fitted with a given embedder."""

    description: str = "query embedder"

    @abstractmethod
    async def prepare(self, model: str, dimension: int) -> str | None:
        """Get ready for a router fitted with ``model``/``dimension``: None when it can be served (or cannot
        be told now), else a message saying why queries for that router cannot be embedded."""

    @abstractmethod
    async def embed(self, text: str, model: str, dimension: int) -> EmbeddedQuery:
        """Embed one query for a router fitted with ``model``/``dimension``."""

    async def close(self) -> None:
        """Release channels and models."""


class RemoteQueryEmbedder(QueryEmbedder):
    """The Embedder gRPC service at ``address`` (:class:`avengers.clients.EmbedderClient`)."""

    def __init__(self, address: str, timeout_seconds: float, max_message_bytes: int = 16 * 1024 * 1024):
        self.address = address
        self.timeout = timeout_seconds
        self.client = EmbedderClient(address, timeout_seconds=timeout_seconds, max_message_bytes=max_message_bytes)
        self.description = self.client.description

    async def prepare(self, model: str, dimension: int) -> str | None:
        try:
            info = await self.client.info()
        except ServiceError as exc:
            log.warning("cannot check the embedder of %s: %s", self.description, exc)
            return None
        if info.model != model or info.dimension != dimension:
            return mismatch_message(model, dimension, info.model, info.dimension, self.description)
        return None

    async def embed(self, text: str, model: str, dimension: int) -> EmbeddedQuery:
        embedded = await self.client.embed([text])
        return EmbeddedQuery(embedded.vectors[0], embedded.model, embedded.dimension)

    async def close(self) -> None:
        await self.client.close()


def embedding_config_for(model: str, dimension: int) -> EmbeddingConfig:
    """The in-process embedder a router fitted with ``model`` needs: hashing-<d>, or a sentence-transformers
    model by name or local path."""
    if model == f"hashing-{dimension}":
        return EmbeddingConfig(backend="hashing", dimension=dimension)
    return EmbeddingConfig(model=model)


class LocalQueryEmbedder(QueryEmbedder):
    """Models loaded in this process, micro-batched.

    With ``config`` set, that one model serves every router (a router fitted with another embedder gets a
    mismatch). Without, the model each router was fitted with is loaded when the router is prepared.
    """

    def __init__(self, config: EmbeddingConfig | None, batching: BatchingConfig):
        self.config = config
        self.batching = batching
        self.description = "the in-process embedder"
        self._models: dict[EmbeddingConfig, BatchedEmbedder] = {}
        self._lock = asyncio.Lock()

    async def _model(self, config: EmbeddingConfig) -> BatchedEmbedder:
        served = self._models.get(config)
        if served is not None:  # fast path: no lock, so loading another model never stalls queries
            return served
        async with self._lock:
            if config not in self._models:
                embedder = await asyncio.to_thread(create_embedder, config)
                await asyncio.to_thread(embedder.encode, ["warm-up"])
                self._models[config] = BatchedEmbedder(embedder, self.batching, config.max_text_chars, name="router-embedder")
                log.info("in-process embedder %s (dimension %d) loaded", embedder.name, embedder.dimension)
            return self._models[config]

    async def prepare(self, model: str, dimension: int) -> str | None:
        try:
            served = await self._model(self.config or embedding_config_for(model, dimension))
        except EmbeddingError as exc:
            return f"the in-process embedder for {model!r} cannot be loaded: {exc}"
        if served.name != model or served.dimension != dimension:
            return mismatch_message(model, dimension, served.name, served.dimension, self.description)
        return None

    async def embed(self, text: str, model: str, dimension: int) -> EmbeddedQuery:
        try:
            served = await self._model(self.config or embedding_config_for(model, dimension))
        except EmbeddingError as exc:
            raise Unavailable(f"the in-process embedder for {model!r} cannot be loaded: {exc}") from None
        rows = await served.embed([text])
        return EmbeddedQuery(rows[0], served.name, served.dimension)

    async def close(self) -> None:
        for served in self._models.values():
            await served.close()
        self._models.clear()
