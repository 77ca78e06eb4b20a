"""How the Voter embeds free-text candidates for the medoid: the Embedder service, or a model in process.

Votes run in worker threads (the core library is synchronous), so both embedders expose a blocking
``embed(texts) -> (n, d) unit-norm matrix`` that is safe to call from those threads. The remote one
hands each call to the event loop that owns its gRPC channel and waits for the answer.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from abc import ABC, abstractmethod

import numpy as np

from avengers.clients.embedder import EmbedderClient
from avengers.config.embedding import EmbeddingConfig
from avengers.core.embedding import Embedder, EmbeddingError, create_embedder
from avengers.rpc.errors import InvalidArgument, Unavailable

log = logging.getLogger(__name__)


class TextEmbedder(ABC):
    """Blocking text embedding for votes computed in worker threads."""

    description: str = "text embedder"

    @abstractmethod
    def embed(self, texts: list[str]) -> np.ndarray:
        """(len(texts), dimension) float32 matrix with unit-norm rows."""

    async def close(self) -> None:
        """Release channels and models."""


class LocalTextEmbedder(TextEmbedder):
    """A model in this process, loaded on first use (so a service that never sees free text never loads it)."""

    def __init__(self, config: EmbeddingConfig, embedder: Embedder | None = None):
        self.config = config
        self.description = f"the in-process embedder ({config.backend})"
        self._embedder = embedder
        self._lock = threading.Lock()

    def _model(self) -> Embedder:
        if self._embedder is None:
            with self._lock:
                if self._embedder is None:
                    try:
                        self._embedder = create_embedder(self.config)
                    except EmbeddingError as exc:
                        raise Unavailable(f"{self.description} cannot be loaded: {exc}") from None
                    log.info("voter: in-process embedder %s loaded", self._embedder.name)
        return self._embedder

    def embed(self, texts: list[str]) -> np.ndarray:
        model = self._model()
        try:
            return model.encode(texts)
        except EmbeddingError as exc:
            raise InvalidArgument(f"free text cannot be embedded: {exc}") from None


class RemoteTextEmbedder(TextEmbedder):
    """The Embedder gRPC service at ``address`` (:class:`avengers.clients.EmbedderClient`), in batches of ``batch``."""

    def __init__(
        self,
        address: str,
        loop: asyncio.AbstractEventLoop,
        timeout_seconds: float,
        batch: int,
        max_message_bytes: int = 16 * 1024 * 1024,
    ):
        self.address = address
        self.timeout = timeout_seconds
        self.batch = batch
        self._loop = loop
        self.client = EmbedderClient(address, timeout_seconds=timeout_seconds, max_message_bytes=max_message_bytes)
        self.description = self.client.description

    def embed(self, texts: list[str]) -> np.ndarray:
        rows = []
        for start in range(0, len(texts), self.batch):
            call = self.client.embed(texts[start : start + self.batch])
            future = asyncio.run_coroutine_threadsafe(call, self._loop)
            rows.append(future.result(timeout=self.timeout + 5).vectors)
        return np.concatenate(rows) if rows else np.zeros((0, 0), dtype=np.float32)

    async def close(self) -> None:
        await self.client.close()
