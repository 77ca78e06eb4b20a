"""Serving infrastructure shared by the services: dynamic micro-batching and the batched query embedder."""
