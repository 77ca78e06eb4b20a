"""The generic registry: registration, lookup, lazy homes, and config fields validated against it."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from avengers.config.base import ConfigModel
from avengers.config.clustering import ClusteringConfig
from avengers.core.clustering import Clusterer, centroids_from_labels, cluster, register_clusterer
from avengers.registry import Registry, registry


def test_register_get_create_and_unknown_names():
    shapes = Registry("shape")

    @shapes.register("square")
    class Square:
        def __init__(self, side: float):
            self.side = side

    assert shapes.names() == ["square"]
    assert Square.name == "square"
    assert shapes.create("square", 2.0).side == 2.0
    assert "square" in shapes and "circle" not in shapes
    with pytest.raises(ValueError, match=r"unknown shape 'circle'; known: \['square'\]"):
        shapes.get("circle")
    with pytest.raises(ValueError, match="registered twice"):
        shapes.register("square")(type("Other", (), {}))


def test_a_lazily_imported_module_registers_on_first_lookup():
    lazy = Registry("lazy thing", modules={"json-ish": "json"})  # a module that registers nothing
    assert lazy.names() == ["json-ish"]
    with pytest.raises(ValueError, match="unknown lazy thing 'json-ish'"):
        lazy.get("json-ish")  # imported, still not registered: a clear error, not a KeyError


def test_a_config_field_accepts_registered_names_only_and_lists_them_in_its_schema():
    colours = registry("test colour", aliases=["auto"])
    colours.register("red")(object)

    class Paint(ConfigModel):
        colour: colours.name_field() = "auto"
        """The colour."""

    assert Paint(colour="red").colour == "red"
    assert Paint().colour == "auto"
    with pytest.raises(ValidationError, match=r"unknown test colour 'blue'; known: \['auto', 'red'\]"):
        Paint(colour="blue")
    assert Paint.model_json_schema()["properties"]["colour"]["enum"] == ["auto", "red"]


def test_adding_a_clusterer_is_one_registration_and_the_config_accepts_it(tmp_path):
    """The issue's example: a new clusterer needs no edit of ClusteringConfig."""
    import numpy as np

    @register_clusterer("first-k-test")
    class FirstK(Clusterer):
        def _fit(self, x):
            labels = np.arange(len(x)) % self.config.k
            return centroids_from_labels(x, labels)

    config = ClusteringConfig(algorithm="first-k-test", k=2)
    result = cluster(np.eye(4, dtype=np.float32), config)
    assert result.centroids.shape == (2, 4)
    with pytest.raises(ValidationError, match="unknown clustering algorithm 'nope'"):
        ClusteringConfig(algorithm="nope")
