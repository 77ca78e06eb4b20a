"""Centroid stores (embedded Qdrant, directory) and the publish / routers commands."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from qdrant_client import QdrantClient
from routing_data import fit_test_router

from avengers.cli import main
from avengers.config.embedding import EmbeddingConfig
from avengers.config.routing import RoutingConfig
from avengers.config.store import StoreConfig
from avengers.core.embedding import create_embedder
from avengers.stores import (
    NoActiveRouter,
    StoreConflict,
    StoreUnavailable,
    VersionNotFound,
    create_store,
)
from avengers.stores.qdrant import METADATA_POINT_ID, QdrantCentroidStore
from conftest import closed_port

HASHING = create_embedder(EmbeddingConfig(backend="hashing", dimension=48))


@pytest.fixture(scope="module")
def routers():
    """Two different fits (so two versions); the second with soft routing as its default."""
    first = fit_test_router(HASHING, k=3, seed=0)
    second = fit_test_router(HASHING, k=4, seed=1)
    second.routing = RoutingConfig(strategy="soft", top_k=2, beta=5.0, top_n=2)
    assert first.version != second.version
    return first, second


@pytest.fixture(params=["qdrant-path", "qdrant-memory", "directory"])
def store_config(request, tmp_path):
    if request.param == "qdrant-path":
        return StoreConfig(qdrant_path=str(tmp_path / "qdrant"))
    if request.param == "qdrant-memory":
        return StoreConfig(qdrant_path=":memory:")
    return StoreConfig(backend="directory", directory=str(tmp_path / "routers"))


def assert_same_router(loaded, original):
    assert loaded.version == original.version
    assert loaded.models == original.models
    assert (loaded.embedder_model, loaded.embedder_dimension) == (original.embedder_model, original.embedder_dimension)
    np.testing.assert_array_equal(loaded.centroids, original.centroids)
    np.testing.assert_array_equal(loaded.cluster_scores.scores, original.cluster_scores.scores)
    np.testing.assert_array_equal(loaded.cluster_scores.counts, original.cluster_scores.counts)
    np.testing.assert_array_equal(loaded.cluster_scores.global_scores, original.cluster_scores.global_scores)
    assert loaded.fit_params == original.fit_params
    assert loaded.routing == original.routing
    assert loaded.created_at == original.created_at
    assert loaded.content_hash() == original.version


def test_publish_activate_load_list_delete(store_config, routers):
    first, second = routers
    with create_store(store_config) as store:
        assert store.active_version() is None
        assert store.list_versions() == []
        with pytest.raises(NoActiveRouter):
            store.load_active()

        assert store.publish(first) == first.version
        assert store.publish(first) == first.version  # idempotent
        assert store.active_version() is None  # publishing does not activate
        store.activate(first.version)
        assert store.active_version() == first.version
        assert_same_router(store.load_active(), first)

        store.publish(second)
        assert store.active_version() == first.version
        store.activate(second.version)
        assert store.active_version() == second.version
        assert_same_router(store.load_active(), second)
        query = HASHING.encode(["Who was the king of France in 1500?"])[0]
        assert store.load_active().router().route(query) == second.router().route(query)

        listed = store.list_versions()
        assert listed == sorted(listed, key=lambda r: (r.created_at, r.version), reverse=True)  # newest first
        assert {r.version: r.active for r in listed} == {first.version: False, second.version: True}
        info = {r.version: r for r in listed}[second.version]
        assert (info.num_clusters, info.models, info.dimension) == (4, second.models, 48)

        with pytest.raises(StoreConflict):
            store.delete(second.version)
        store.delete(first.version)
        assert [r.version for r in store.list_versions()] == [second.version]
        with pytest.raises(VersionNotFound):
            store.load(first.version)
        with pytest.raises(VersionNotFound):
            store.activate(first.version)
        with pytest.raises(VersionNotFound):
            store.delete(first.version)
        store.delete(second.version, force=True)
        assert store.active_version() is None and store.list_versions() == []


@pytest.mark.parametrize("bad", ["", "../escape", "a/b", "has space", "x" * 200])
def test_malformed_versions_are_not_found(store_config, bad):
    with create_store(store_config) as store:
        for operation in (store.activate, store.load, store.delete):
            with pytest.raises(VersionNotFound):
                operation(bad)


def test_embedded_store_persists_across_clients(tmp_path, routers):
    first, _ = routers
    config = StoreConfig(qdrant_path=str(tmp_path / "q"))
    with create_store(config) as store:
        store.publish_and_activate(first)
    with create_store(config) as other:  # a new process would see the same
        assert other.active_version() == first.version
        assert_same_router(other.load_active(), first)


def test_qdrant_layout_points_payloads_and_alias(tmp_path, routers):
    first, second = routers
    path = tmp_path / "q"
    with QdrantCentroidStore(StoreConfig(qdrant_path=str(path))) as store:
        store.publish_and_activate(first)
        store.publish(second)
        store.activate(second.version)
    client = QdrantClient(path=str(path))
    try:
        aliases = {a.alias_name: a.collection_name for a in client.get_aliases().aliases}
        assert aliases == {"avengers_router_active": f"avengers_router_{second.version}"}
        name = f"avengers_router_{first.version}"
        point = client.retrieve(name, ids=[1], with_vectors=True)[0]
        np.testing.assert_allclose(point.vector, first.centroids[1], rtol=1e-6)
        assert point.payload["kind"] == "centroid" and point.payload["count"] == int(first.cluster_scores.counts[1])
        assert point.payload["scores"] == dict(zip(first.models, first.cluster_scores.scores[1].tolist()))
        meta = client.retrieve(name, ids=[METADATA_POINT_ID])[0].payload
        assert meta["metadata"]["version"] == first.version and meta["metadata"]["num_clusters"] == 3
        # the default selector is hknn: its calibration queries travel in one chunk point (embedded Qdrant)
        calibration = len(first.selector_states["hknn"]["points"])
        assert client.count(name).count == 3 + 1 + 1
        chunk = client.retrieve(name, ids=[3])[0].payload
        assert chunk["kind"] == "calibration_chunk" and (chunk["start"], chunk["rows"]) == (0, calibration)
        assert meta["selector_states"]["hknn"]["points"] == {"calibration_points": True}
        assert meta["selector_states"]["hknn"]["group_means"]["shape"] == [3, 3]
    finally:
        client.close()


def test_interrupted_publish_is_ignored_then_replaced(tmp_path, routers):
    first, _ = routers
    path = tmp_path / "q"
    with QdrantCentroidStore(StoreConfig(qdrant_path=str(path))) as store:
        store.publish(first)
    client = QdrantClient(path=str(path))
    client.delete(f"avengers_router_{first.version}", points_selector=[METADATA_POINT_ID])  # as if cut short
    client.close()
    with QdrantCentroidStore(StoreConfig(qdrant_path=str(path))) as store:
        assert store.list_versions() == []
        with pytest.raises(VersionNotFound):
            store.activate(first.version)
        store.publish_and_activate(first)
        assert_same_router(store.load_active(), first)


def test_embedded_directory_held_by_another_client_is_unavailable(tmp_path, routers):
    path = tmp_path / "q"
    holder = QdrantClient(path=str(path))
    try:
        store = create_store(StoreConfig(qdrant_path=str(path), embedded_lock_wait_seconds=0.2))
        with pytest.raises(StoreUnavailable, match="held by another process.*QDRANT_URL"):
            store.publish(routers[0])
    finally:
        holder.close()
    store.publish(routers[0])  # released: works


def test_unreachable_qdrant_server_is_unavailable(routers):
    port = closed_port()
    store = create_store(StoreConfig(qdrant_url=f"http://127.0.0.1:{port}", timeout_seconds=2))
    with pytest.raises(StoreUnavailable, match=f"Qdrant at http://127.0.0.1:{port}"):
        store.active_version()
    with pytest.raises(StoreUnavailable):
        store.publish(routers[0])


def test_location_order(monkeypatch, tmp_path):
    monkeypatch.setenv("QDRANT_URL", "http://qdrant.invalid:6333")
    assert QdrantCentroidStore(StoreConfig()).url == "http://qdrant.invalid:6333"
    explicit = QdrantCentroidStore(StoreConfig(qdrant_path=str(tmp_path)))
    assert explicit.url is None and explicit.path == str(tmp_path)
    monkeypatch.delenv("QDRANT_URL")
    monkeypatch.setenv("AVENGERS_QDRANT_PATH", str(tmp_path / "env"))
    assert QdrantCentroidStore(StoreConfig()).path == str(tmp_path / "env")


def test_api_key_from_file_wins(monkeypatch, tmp_path):
    from avengers.stores.qdrant import resolve_api_key

    monkeypatch.setenv("QDRANT_API_KEY", "from-env")
    assert resolve_api_key(StoreConfig()) == "from-env"
    key_file = tmp_path / "key"
    key_file.write_text("from-file\n")
    assert resolve_api_key(StoreConfig(qdrant_api_key_file=str(key_file))) == "from-file"


def test_cli_publish_list_activate_delete(tmp_path, routers, capsys):
    first, second = routers
    first.save(tmp_path / "first")
    second.save(tmp_path / "second")
    where = ["--qdrant-path", str(tmp_path / "q")]

    assert main(["publish", "--router", str(tmp_path / "first"), *where]) == 0
    assert f"published and activated router {first.version}" in capsys.readouterr().out
    assert main(["publish", "--router", str(tmp_path / "second"), "--no-activate", *where]) == 0
    assert f"avengers routers activate {second.version}" in capsys.readouterr().out

    assert main(["routers", "list", "--json", *where]) == 0
    listed = {r["version"]: r["active"] for r in json.loads(capsys.readouterr().out)}
    assert listed == {first.version: True, second.version: False}

    assert main(["routers", "activate", second.version, *where]) == 0
    assert main(["routers", "list", *where]) == 0
    table = capsys.readouterr().out
    assert f"* {second.version}" in table and f"  {first.version}" in table

    assert main(["routers", "delete", second.version, *where]) == 2
    assert "is active" in capsys.readouterr().err
    assert main(["routers", "activate", "r-000000000000", *where]) == 2
    assert "not published" in capsys.readouterr().err
    assert main(["routers", "delete", first.version, *where]) == 0
    assert main(["publish", "--router", str(tmp_path / "missing"), *where]) == 2
    assert "not a router directory" in capsys.readouterr().err


def test_cli_directory_store(tmp_path, routers, capsys):
    first, _ = routers
    first.save(tmp_path / "first")
    where = ["--store-dir", str(tmp_path / "store")]
    assert main(["publish", "--router", str(tmp_path / "first"), *where]) == 0
    assert create_store(StoreConfig(backend="directory", directory=str(tmp_path / "store"))).active_version() == first.version


def test_prune_keeps_the_newest_and_the_active(store_config, routers):
    first, second = routers
    third = fit_test_router(HASHING, k=2, seed=2)
    with create_store(store_config) as store:
        for artifact in (first, second, third):
            store.publish(artifact)
        store.activate(first.version)
        listed = [r.version for r in store.list_versions()]
        deleted = store.prune(1)
        assert first.version not in deleted and set(deleted) == set(listed[1:]) - {first.version}
        assert {r.version for r in store.list_versions()} == {listed[0], first.version}
        with pytest.raises(ValueError):
            store.prune(0)


def test_cli_publish_keep(tmp_path, routers, capsys):
    first, second = (dataclasses.replace(r, created_at=f"2026-01-0{i}T00:00:00+00:00") for i, r in enumerate(routers, 1))
    first.save(tmp_path / "first")
    second.save(tmp_path / "second")
    where = ["--store-dir", str(tmp_path / "store")]
    assert main(["publish", "--router", str(tmp_path / "first"), *where]) == 0
    assert main(["publish", "--router", str(tmp_path / "second"), "--keep", "1", *where]) == 0
    assert f"deleted old router {first.version}" in capsys.readouterr().out
    store = create_store(StoreConfig(backend="directory", directory=str(tmp_path / "store")))
    assert [r.version for r in store.list_versions()] == [second.version]


def test_qdrant_server_layout_has_one_point_per_calibration_query(routers):
    """On a Qdrant server the kNN calibration queries are points Qdrant can search (same arrays back)."""
    from avengers.stores.qdrant import (
        artifact_from_payloads,
        calibration_points,
        centroid_points,
        metadata_point,
    )

    first, _ = routers
    points = calibration_points(first)
    embeddings = first.selector_states["hknn"]["points"]
    assert [p.id for p in points] == list(range(first.k, first.k + len(embeddings)))
    assert points[5].payload == {
        "kind": "calibration", "index": 5,
        "scores": dict(zip(first.models, first.selector_states["hknn"]["point_scores"][5].tolist())),
    }
    np.testing.assert_allclose(points[5].vector, embeddings[5], rtol=1e-6)
    back = artifact_from_payloads(metadata_point(first).payload, centroid_points(first) + points, source="test")
    assert_same_router(back, first)
    for name, state in first.selector_states.items():
        for key, array in state.items():
            np.testing.assert_allclose(back.selector_states[name][key], array, rtol=1e-6)

