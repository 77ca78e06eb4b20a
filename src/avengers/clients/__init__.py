"""One gRPC client per service, shared by every caller (services, CLI, tools): one channel setup, one error mapping.

- :mod:`.embedder` — :class:`EmbedderClient` (Embed, GetEmbedderInfo), used by the router, the voter and the
  gateway;
- :mod:`.ensemble` — the gateway's adapters of the ensemble interfaces (:mod:`avengers.core.ensemble`) for the
  Router, ModelPool and Voter services.

Services never import each other: they reach one another through these clients.
"""

from avengers.clients.embedder import EmbedderClient, EmbedderInfo, Embeddings

__all__ = ["EmbedderClient", "EmbedderInfo", "Embeddings"]
