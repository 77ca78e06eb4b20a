"""Avengers: many small open LLMs behind one gRPC API (embed, cluster, route, sample, vote)."""

__version__ = "0.1.0"
