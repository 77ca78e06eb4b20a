"""The public facade: every name in ``avengers.__all__`` resolves, importing avengers loads no heavy library,
and the documented offline example runs."""

from __future__ import annotations

import subprocess
import sys

import avengers


def test_every_public_name_resolves():
    for name in avengers.__all__:
        assert getattr(avengers, name) is not None, name


def test_import_avengers_is_light():
    code = "import sys, avengers; print(sorted(m for m in ('torch', 'sklearn', 'grpc') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_fit_route_vote_through_the_facade(labels_dir, tmp_path):
    labels = avengers.read_labels(labels_dir / "train.jsonl")
    embedder = avengers.create_embedder(avengers.EmbeddingConfig(backend="hashing", dimension=256))
    router = avengers.fit_router(labels, embedder, avengers.ClusteringConfig(k=3))
    router.save(tmp_path / "router")
    loaded = avengers.RouterArtifact.load(tmp_path / "router")
    ranked = loaded.router().route(embedder.encode(["A shop sells 12 apples and 7 pears. How many fruits in total?"])[0])
    assert loaded.models[ranked.models[0]] == "org/math-7b"
    result = avengers.vote("math", ["so Answer: 84", "Answer: 84", "Answer: 72"])
    assert result.answer == "84"
