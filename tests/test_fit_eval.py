"""Fit and evaluate on generated topic data: the router must find each topic's specialist."""

import json

import numpy as np
import pytest

from avengers.config import ClusteringConfig, EmbeddingConfig, RoutingConfig, ScoringConfig
from avengers.core.artifact import ArtifactError, RouterArtifact
from avengers.core.embedding import create_embedder
from avengers.core.fit import best_single_model, fit_router
from avengers.core.labels import read_labels
from avengers.tools.evaluation import evaluate
from conftest import STRONG


@pytest.fixture(scope="module")
def embedder():
    return create_embedder(EmbeddingConfig())  # the real all-MiniLM-L6-v2, offline


@pytest.fixture(scope="module")
def fitted(labels_dir, embedder):
    train = read_labels(labels_dir / "train.jsonl")
    return fit_router(train, embedder, ClusteringConfig(k=6), ScoringConfig(smoothing=1.0))


def test_router_routes_each_topic_to_its_specialist(fitted, labels_dir, embedder):
    test = read_labels(labels_dir / "test.jsonl")
    routed = fitted.router().route_batch(embedder.encode(test.queries), top_n=1)
    hits = [fitted.models[r.models[0]] == STRONG[row.dataset] for r, row in zip(routed, test.rows)]
    assert np.mean(hits) > 0.9


def test_evaluation_report(fitted, labels_dir, embedder):
    test = read_labels(labels_dir / "test.jsonl")
    report = evaluate(fitted, test, embedder.encode(test.queries))
    avg = report.average
    assert avg.rows == 90 and len(report.datasets) == 3
    assert avg.oracle >= avg.routed > avg.best_single
    assert avg.routed > 75  # specialists are right 90% of the time
    for r in report.datasets:
        assert r.dataset_best_model == STRONG[r.dataset]
        assert r.dataset_best >= r.best_single
    assert sum(report.routed_model_share.values()) == pytest.approx(1.0, abs=1e-3)
    assert "| **average** |" in report.table()
    json.dumps(report.to_dict())


def test_artifact_roundtrip_and_version(fitted, tmp_path):
    fitted.save(tmp_path / "r")
    loaded = RouterArtifact.load(tmp_path / "r")
    assert loaded.version == fitted.version and loaded.version.startswith("r-")
    assert loaded.models == fitted.models
    np.testing.assert_array_equal(loaded.centroids, fitted.centroids)
    np.testing.assert_array_equal(loaded.cluster_scores.scores, fitted.cluster_scores.scores)
    assert loaded.content_hash() == fitted.version
    meta = json.loads((tmp_path / "r" / "router.json").read_text())
    assert meta["embedder"] == {"model": "sentence-transformers/all-MiniLM-L6-v2", "dimension": 384}
    assert meta["fit_params"]["clustering"]["k"] == 6
    assert meta["stats"]["best_single_model"] == fitted.stats["best_single_model"]
    # saving again over an existing directory replaces it atomically
    fitted.save(tmp_path / "r")
    assert RouterArtifact.load(tmp_path / "r").version == fitted.version


def test_version_changes_with_parameters(labels_dir):
    train = read_labels(labels_dir / "train.jsonl")
    emb = create_embedder(EmbeddingConfig(backend="hashing", dimension=64))
    a = fit_router(train, emb, ClusteringConfig(k=3))
    b = fit_router(train, emb, ClusteringConfig(k=3))
    c = fit_router(train, emb, ClusteringConfig(k=4))
    assert a.version == b.version != c.version


def test_bad_router_directories(tmp_path, fitted):
    with pytest.raises(ArtifactError, match="no router.json"):
        RouterArtifact.load(tmp_path)
    fitted.save(tmp_path / "r")
    (tmp_path / "r" / "scores.npy").unlink()
    with pytest.raises(ArtifactError, match="no scores.npy"):
        RouterArtifact.load(tmp_path / "r")
    meta = fitted.metadata() | {"format_version": 99}
    with pytest.raises(ArtifactError, match="unsupported router format"):
        RouterArtifact.from_parts(
            meta,
            centroids=fitted.centroids,
            scores=fitted.cluster_scores.scores,
            counts=fitted.cluster_scores.counts,
            global_scores=fitted.cluster_scores.global_scores,
        )


def test_best_single_weighs_datasets_equally(tmp_path):
    from conftest import write_jsonl

    rows = [{"id": f"a{i}", "dataset": "big", "split": "t", "query": f"q{i}", "scores": {"x": 0.6, "y": 0.5}} for i in range(9)]
    rows.append({"id": "b", "dataset": "small", "split": "t", "query": "z", "scores": {"x": 0.0, "y": 1.0}})
    assert best_single_model(read_labels(write_jsonl(tmp_path / "l.jsonl", rows))) == "y"


def test_soft_routing_evaluates(fitted, labels_dir, embedder):
    test = read_labels(labels_dir / "test.jsonl")
    report = evaluate(fitted, test, embedder.encode(test.queries), RoutingConfig(strategy="soft", top_k=3, beta=9))
    assert report.strategy == "soft" and report.average.routed > 75
