import asyncio
import re

import numpy as np
import pytest

from avengers.config import EmbeddingConfig
from avengers.core.embedding import (
    CachedEmbedder,
    EmbeddingError,
    HashingEmbedder,
    create_embedder,
    length_groups,
    resolve_model_path,
)


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


# Texts of very different lengths (a few characters to past the model's 256-token window), with a duplicate,
# in no particular order: length bucketing sorts them, groups them and must put every row back in place.
VARIED_TEXTS = [
    "What is 2 + 2?",
    "Explain the difference between a list and a tuple in Python, with an example of when to prefer each. " * 3,
    "Hi",
    "A train leaves at 3 pm travelling 60 km/h; another leaves an hour later at 80 km/h. When does it catch up?",
    "Summarise the history of the Roman Empire from Augustus to the fall of the West. " * 20,  # > 256 tokens
    "Which planet is red?",
    "What is 2 + 2?",
    "Write a function that returns the nth Fibonacci number using memoisation, and state its complexity.",
    "Name three rivers of Europe.",
    "x" * 40,
]


@pytest.fixture(scope="module")
def one_per_pass():
    """The plain encode: one text per forward pass, so no padding at all."""
    return create_embedder(EmbeddingConfig(batch_size=1))


@pytest.fixture(scope="module")
def bucketed():
    """CPU default (batch_size None): texts sorted by length, each pass within batch_chars of padded text."""
    return create_embedder(EmbeddingConfig(batch_chars=400))


def forward_sizes(embedder, monkeypatch) -> list[int]:
    """Records the number of texts of each forward pass the embedder makes."""
    sizes: list[int] = []
    forward = embedder._forward

    def recording(texts, batch_size, show_progress=False):
        sizes.append(len(texts))
        return forward(texts, batch_size, show_progress)

    monkeypatch.setattr(embedder, "_forward", recording)
    return sizes


def test_length_bucketed_encoding_returns_the_rows_of_a_plain_encode(one_per_pass, bucketed, monkeypatch):
    sizes = forward_sizes(bucketed, monkeypatch)
    together = bucketed.encode(VARIED_TEXTS)
    # it really bucketed: several passes, short texts together, the long ones alone
    assert len(sizes) > 1 and max(sizes) > 1 and sum(sizes) == len(VARIED_TEXTS)
    alone = one_per_pass.encode(VARIED_TEXTS)
    assert together.shape == alone.shape == (len(VARIED_TEXTS), 384)
    np.testing.assert_allclose(together, alone, atol=1e-5)
    np.testing.assert_array_equal(together[0], together[6])  # the duplicate gets the same row
    # and each row is the text's own: the nearest plain row of every bucketed row is the same index
    nearest = (together @ alone.T).argmax(axis=1)
    assert [VARIED_TEXTS[i] for i in nearest] == VARIED_TEXTS


async def test_micro_batched_serving_returns_each_caller_its_own_rows(one_per_pass, bucketed):
    from avengers.config.embedder_service import BatchingConfig
    from avengers.serving.batched_embedder import BatchedEmbedder

    requests = [VARIED_TEXTS[0:3], VARIED_TEXTS[3:4], VARIED_TEXTS[4:8], VARIED_TEXTS[8:]]
    total = sum(map(len, requests))
    # a batch runs once max_batch texts are queued (or after max_wait): every request joins one model call
    serving = BatchedEmbedder(bucketed, BatchingConfig(max_batch=total, max_wait_ms=1000), max_text_chars=10_000)
    try:
        answers = await asyncio.gather(*(serving.embed(texts) for texts in requests))
    finally:
        await serving.close()
    assert serving.batcher.stats.batches == 1 and serving.batcher.stats.largest_batch == total
    for texts, rows in zip(requests, answers):
        np.testing.assert_allclose(rows, one_per_pass.encode(texts), atol=1e-5)


# ------------------------------------------------------------------ the cache, written as it goes; the progress bar


class InterruptedAfter(HashingEmbedder):
    """Feature hashing that stops like a Ctrl-C after ``chunks`` model calls, recording each call's texts."""

    def __init__(self, chunks: int | None):
        super().__init__(EmbeddingConfig(backend="hashing", dimension=32))
        self.calls: list[list[str]] = []
        self.chunks = chunks

    def _encode(self, texts):
        if self.chunks is not None and len(self.calls) == self.chunks:
            raise KeyboardInterrupt
        self.calls.append(list(texts))
        return super()._encode(texts)


def test_an_interrupted_encode_keeps_the_chunks_it_finished(tmp_path):
    texts = [f"query number {i} " + "word " * (i % 7) for i in range(50)]
    interrupted = CachedEmbedder(InterruptedAfter(chunks=2), tmp_path, chunk=8)
    with pytest.raises(KeyboardInterrupt):
        interrupted.encode(texts, show_progress=True)
    assert interrupted.cached_count() == 16  # two chunks of 8, each committed when done

    resumed = InterruptedAfter(chunks=None)
    full = CachedEmbedder(resumed, tmp_path, chunk=8).encode(texts)
    done_before = {t for call in interrupted.inner.calls for t in call}
    embedded_now = [t for call in resumed.calls for t in call]
    assert len(embedded_now) == 50 - 16 and not done_before & set(embedded_now)  # only the rest
    np.testing.assert_allclose(full, CachedEmbedder(InterruptedAfter(None), tmp_path / "fresh").encode(texts), atol=1e-6)


def test_progress_bar_shows_throughput(tmp_path, capsys):
    texts = [f"text {i} " * (1 + i % 5) for i in range(40)]
    CachedEmbedder(InterruptedAfter(None), tmp_path, chunk=10).encode(texts, show_progress=True)
    err = capsys.readouterr().err
    assert "embedding" in err and "40/40" in err
    assert re.search(r"\d+(\.\d+)?(k|M)?text/s", err), err  # texts per second, as it goes
    create_embedder(EmbeddingConfig(backend="hashing")).encode(texts, show_progress=True)  # uncached: same bar
    assert re.search(r"40/40 .*text/s", capsys.readouterr().err)


def test_cache_files_are_per_variant(tmp_path):
    """Vectors of another runtime, precision or truncation never mix in one cache file."""
    plain = CachedEmbedder(InterruptedAfter(None), tmp_path)

    class Truncating(InterruptedAfter):
        variant = "torch-max16"

    other = CachedEmbedder(Truncating(None), tmp_path)
    assert plain.name == other.name and plain.path != other.path
    assert plain.path.name == "hashing-32-32.sqlite" and other.path.name == "hashing-32@torch-max16-32.sqlite"


def test_length_groups_keep_each_pass_within_the_budget():
    lengths = [5, 100, 1, 30, 30, 2, 500, 7]
    groups = length_groups(lengths, budget=60)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    for group in groups:
        assert len(group) == 1 or len(group) * max(lengths[i] for i in group) <= 60
    assert [lengths[g[0]] for g in groups] == sorted(lengths[g[0]] for g in groups)  # shortest first
    assert length_groups([], 10) == []


def test_max_seq_tokens_truncates_what_the_model_reads(one_per_pass):
    head = "Which of these rivers is the longest in South America, and through which countries does it flow? "
    texts = [head + "Answer briefly. " * 30, head + "Explain at length with historical context. " * 30]
    truncated = create_embedder(EmbeddingConfig(batch_size=1, max_seq_tokens=16))
    assert truncated.variant == "torch-max16" and one_per_pass.variant == ""
    short = truncated.encode(texts)
    np.testing.assert_allclose(short[0], short[1], atol=1e-6)  # the same first 16 tokens: the same vector
    full = one_per_pass.encode(texts)
    assert full[0] @ full[1] < 0.99  # the full window tells them apart
