"""Embedder gRPC servicer: validated texts in, L2-normalised vectors out, micro-batched across calls."""

from __future__ import annotations

import grpc

from avengers.rpc.errors import grpc_errors
from avengers.serving.batched_embedder import BatchedEmbedder
from avengers.v1 import common_pb2, embedder_pb2, embedder_pb2_grpc


class EmbedderServicer(embedder_pb2_grpc.EmbedderServicer):
    def __init__(self, embedder: BatchedEmbedder):
        self.embedder = embedder

    @grpc_errors
    async def Embed(
        self, request: embedder_pb2.EmbedRequest, context: grpc.aio.ServicerContext
    ) -> embedder_pb2.EmbedResponse:
        rows = await self.embedder.embed(list(request.texts))
        return embedder_pb2.EmbedResponse(
            embeddings=[common_pb2.Vector(values=row.tolist()) for row in rows],
            model=self.embedder.name,
            dimension=self.embedder.dimension,
        )

    @grpc_errors
    async def GetEmbedderInfo(
        self, request: embedder_pb2.GetEmbedderInfoRequest, context: grpc.aio.ServicerContext
    ) -> embedder_pb2.EmbedderInfo:
        return embedder_pb2.EmbedderInfo(
            model=self.embedder.name,
            dimension=self.embedder.dimension,
            max_batch=self.embedder.batching.max_batch,
            max_text_chars=self.embedder.max_text_chars,
        )
