"""An embedder behind a micro-batcher, with the request checks every caller gets.

Used by the Embedder service and by the Router service when it embeds queries in process.
"""

from __future__ import annotations

import numpy as np

from avengers.config.embedder_service import BatchingConfig
from avengers.core.embedding import Embedder, EmbeddingError
from avengers.observability.metrics import counter, histogram
from avengers.rpc.errors import ResourceExhausted, Unavailable
from avengers.serving.batching import BatcherClosed, BatcherOverloaded, MicroBatcher

BATCH_SIZE = histogram(
    "avengers_embedder_batch_texts",
    "Texts per model call of the micro-batcher",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096),
)
BATCH_SECONDS = histogram("avengers_embedder_batch_seconds", "Duration of one batched model call")
REJECTED = counter("avengers_embedder_rejected", "Embedding requests refused because the queue was full")


def check_texts(texts: list[str], max_batch: int, max_text_chars: int) -> list[str]:
    """The texts, if they can be embedded; else EmbeddingError naming the first problem."""
    if not texts:
        raise EmbeddingError("no texts to embed: send at least one")
    if len(texts) > max_batch:
        raise EmbeddingError(f"{len(texts)} texts in one request; at most {max_batch}")
    for i, text in enumerate(texts):
        if not text.strip():
            raise EmbeddingError(f"text {i} is empty")
        if len(text) > max_text_chars:
            raise EmbeddingError(f"text {i} has {len(text)} characters; at most {max_text_chars}")
    return texts


class BatchedEmbedder:
    """Validates texts and embeds them in micro-batches shared by concurrent callers."""

    def __init__(self, embedder: Embedder, batching: BatchingConfig, max_text_chars: int, name: str = "embedder"):
        self.embedder = embedder
        self.batching = batching
        self.max_text_chars = max_text_chars
        self.batcher: MicroBatcher[str, np.ndarray] = MicroBatcher(
            embedder.encode,
            max_batch=batching.max_batch,
            max_wait_ms=batching.max_wait_ms,
            max_queued=batching.max_queued_texts,
            name=name,
            on_batch=self._observe,
        )

    @property
    def name(self) -> str:
        return self.embedder.name

    @property
    def dimension(self) -> int:
        return self.embedder.dimension

    async def embed(self, texts: list[str]) -> np.ndarray:
        """(len(texts), dimension) unit-norm rows. EmbeddingError (INVALID_ARGUMENT) for bad texts,
        ResourceExhausted when the queue is full, Unavailable while shutting down."""
        check_texts(texts, self.batching.max_batch, self.max_text_chars)
        try:
            return await self.batcher.submit(texts)
        except BatcherOverloaded as exc:
            REJECTED.inc()
            raise ResourceExhausted(str(exc)) from None
        except BatcherClosed as exc:
            raise Unavailable(f"{exc}: the service is shutting down") from None

    async def close(self) -> None:
        await self.batcher.close()

    @staticmethod
    def _observe(texts: int, seconds: float) -> None:
        BATCH_SIZE.observe(texts)
        BATCH_SECONDS.observe(seconds)
