"""The client of the Embedder service: the one way every caller embeds texts over gRPC.

Errors are mapped once, here, to :class:`avengers.rpc.errors.ServiceError` subclasses carrying the status the
caller should end with: the service's INVALID_ARGUMENT (a text it refuses), RESOURCE_EXHAUSTED (overloaded) and
DEADLINE_EXCEEDED pass on; anything else — and an answer with the wrong number of vectors — is UNAVAILABLE.
Every message names the service and its address.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import grpc
import numpy as np

from avengers.rpc.errors import InvalidArgument, ResourceExhausted, ServiceError, Unavailable
from avengers.rpc.security import open_channel
from avengers.v1 import embedder_pb2, embedder_pb2_grpc

DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class EmbedderInfo:
    """The model an Embedder service serves."""

    model: str
    dimension: int


@dataclass(frozen=True)
class Embeddings:
    """Vectors of a batch of texts, in the order of the texts."""

    vectors: np.ndarray
    """(len(texts), dimension) float32, unit-norm rows."""
    model: str
    """The embedder that produced them."""
    dimension: int


class EmbedderClient:
    """The Embedder gRPC service at ``address`` (the channel opens on first use; TLS/token from the environment)."""

    def __init__(
        self,
        address: str,
        *,
        timeout_seconds: float = 10.0,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        channel: grpc.aio.Channel | None = None,
    ):
        self.address = address
        self.timeout = timeout_seconds
        self.description = f"the Embedder service at {address}"
        self._max_message_bytes = max_message_bytes
        self._channel = channel
        self._stub = embedder_pb2_grpc.EmbedderStub(channel) if channel is not None else None

    def _client(self) -> embedder_pb2_grpc.EmbedderStub:
        if self._stub is None:
            self._channel = open_channel(self.address, max_message_bytes=self._max_message_bytes)
            self._stub = embedder_pb2_grpc.EmbedderStub(self._channel)
        return self._stub

    def error(self, exc: grpc.aio.AioRpcError, timeout: float) -> ServiceError:
        """The project error for a failed call (see the module docstring)."""
        code, details = exc.code(), exc.details() or exc.code().name
        if code == grpc.StatusCode.INVALID_ARGUMENT:
            return InvalidArgument(f"text rejected by {self.description}: {details}")
        if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
            return ResourceExhausted(f"{self.description} is overloaded: {details}")
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return ServiceError(f"{self.description} did not answer within {timeout:g}s", code)
        return Unavailable(f"{self.description} is unavailable: {code.name}: {details}")

    async def info(self, timeout: float | None = None) -> EmbedderInfo:
        """The model the service serves."""
        timeout = self.timeout if timeout is None else timeout
        try:
            response = await self._client().GetEmbedderInfo(embedder_pb2.GetEmbedderInfoRequest(), timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            raise self.error(exc, timeout) from None
        return EmbedderInfo(response.model, int(response.dimension))

    async def embed(self, texts: Sequence[str], timeout: float | None = None) -> Embeddings:
        """Vectors of ``texts`` in one call (UNAVAILABLE when the service answers with another count)."""
        timeout = self.timeout if timeout is None else timeout
        try:
            response = await self._client().Embed(embedder_pb2.EmbedRequest(texts=list(texts)), timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            raise self.error(exc, timeout) from None
        if len(response.embeddings) != len(texts):
            raise Unavailable(f"{self.description} returned {len(response.embeddings)} vectors for {len(texts)} texts")
        if not texts:
            return Embeddings(np.zeros((0, int(response.dimension)), np.float32), response.model, int(response.dimension))
        vectors = np.array([row.values for row in response.embeddings], dtype=np.float32)
        return Embeddings(vectors, response.model, int(response.dimension))

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
        self._channel = self._stub = None
