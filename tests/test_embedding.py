import numpy as np
import pytest

from avengers.config import EmbeddingConfig
from avengers.core.embedding import CachedEmbedder, EmbeddingError, create_embedder, resolve_model_path


def test_minilm_offline_unit_norm_and_semantics():
    emb = create_embedder(EmbeddingConfig())
    assert emb.dimension == 384
    x = emb.encode(["How do I add two numbers?", "What is the sum of 3 and 4?", "Poems about the sea"])
    assert x.dtype == np.float32 and x.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    assert x[0] @ x[1] > x[0] @ x[2]
    assert emb.encode([]).shape == (0, 384)


def test_hashing_embedder_is_deterministic():
    emb = create_embedder(EmbeddingConfig(backend="hashing", dimension=128))
    a, b = emb.encode(["same text", "same text"]), emb.encode(["same text"])
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)


def test_disk_cache_reuses_vectors(tmp_path):
    calls = []

    class Counting(type(create_embedder(EmbeddingConfig(backend="hashing")))):
        def _encode(self, texts):
            calls.append(list(texts))
            return super()._encode(texts)

    inner = Counting(EmbeddingConfig(backend="hashing", dimension=32))
    cached = CachedEmbedder(inner, tmp_path)
    first = cached.encode(["a b", "c d", "a b"])
    second = CachedEmbedder(inner, tmp_path).encode(["c d", "e f"])  # a new process would see the same file
    assert calls == [["a b", "c d"], ["e f"]]
    np.testing.assert_array_equal(first[1], second[0])
    np.testing.assert_array_equal(first[0], first[2])


def test_no_download_for_unknown_models():
    with pytest.raises(EmbeddingError, match="never downloaded"):
        resolve_model_path("some-org/some-model")
