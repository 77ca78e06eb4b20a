"""Typed configuration, one module per concern; every model loads from Python, a dict or YAML."""

from avengers.config.base import ConfigModel
from avengers.config.clustering import ClusteringConfig
from avengers.config.embedding import EmbeddingConfig
from avengers.config.routing import RoutingConfig, ScoringConfig

__all__ = ["ClusteringConfig", "ConfigModel", "EmbeddingConfig", "RoutingConfig", "ScoringConfig"]
