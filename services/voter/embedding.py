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

import grpc
import numpy as np

from avengers.config.embedding import EmbeddingConfig
from avengers.core.embedding import Embedder, EmbeddingError, create_embedder
from avengers.rpc.errors import InvalidArgument, Unavailable
from avengers.rpc.security import open_channel
from avengers.v1 import embedder_pb2, embedder_pb2_grpc

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
    """The Embedder gRPC service at ``address``, called in batches of ``batch`` texts."""

    def __init__(
        self,
        address: str,
        loop: asyncio.AbstractEventLoop,
        timeout_seconds: float,
        batch: int,
        max_message_bytes: int = 16 * 1024 * 1024,
    ):
        self.address = address
        self.description = f"the Embedder service at {address}"
        self.timeout = timeout_seconds
        self.batch = batch
        self._loop = loop
        self._channel = open_channel(address, max_message_bytes=max_message_bytes)
        self._stub = embedder_pb2_grpc.EmbedderStub(self._channel)

    async def _embed_batch(self, texts: list[str]) -> np.ndarray:
        try:
            response = await self._stub.Embed(embedder_pb2.EmbedRequest(texts=texts), timeout=self.timeout)
        except grpc.aio.AioRpcError as exc:
            code, details = exc.code(), exc.details()
            if code == grpc.StatusCode.INVALID_ARGUMENT:
                raise InvalidArgument(f"free text rejected by {self.description}: {details}") from None
            raise Unavailable(f"{self.description} failed: {code.name}: {details}") from None
        if len(response.embeddings) != len(texts):
            raise Unavailable(
                f"{self.description} returned {len(response.embeddings)} vectors for {len(texts)} texts"
            )
        return np.array([row.values for row in response.embeddings], dtype=np.float32)

    def embed(self, texts: list[str]) -> np.ndarray:
        rows = []
        for start in range(0, len(texts), self.batch):
            call = self._embed_batch(texts[start : start + self.batch])
            future = asyncio.run_coroutine_threadsafe(call, self._loop)
            rows.append(future.result(timeout=self.timeout + 5))
        return np.concatenate(rows) if rows else np.zeros((0, 0), dtype=np.float32)

    async def close(self) -> None:
        await self._channel.close()
