"""The embedder gRPC service."""
