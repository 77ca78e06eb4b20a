"""The "onnx" embedder: exported offline from the bundled MiniLM on first use, kept, checked, rebuilt when broken,
and giving torch's vectors (fp32: to float precision; int8: within a cosine tolerance) on texts made here."""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest

from avengers.config import EmbeddingConfig
from avengers.core.embedding import CachedEmbedder, EmbeddingError, create_embedder
from avengers.core.onnx_embedding import (
    MODEL_FILE,
    RECORD_FILE,
    model_fingerprint,
    read_record,
    resolve_model_path,
)

TEXTS = [
    "What is 17 times 23?",
    "Which of the following is a noble gas?\nA. Oxygen\nB. Argon\nC. Nitrogen\nD. Sodium",
    "Write a Python function that checks whether a string is a palindrome, ignoring case and spaces.",
    "Hi",
    "Summarise the main causes of the French Revolution and its effects on Europe. " * 12,  # past 256 tokens
    (
        "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
        "How many clips did Natalia sell altogether in April and May?"
    ),
    "What is 17 times 23?",  # a duplicate
    "翻译成英文：今天天气很好。",
]


@pytest.fixture(scope="module")
def torch_vectors():
    return create_embedder(EmbeddingConfig(batch_size=1)).encode(TEXTS)


@pytest.fixture(scope="module")
def onnx_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("onnx")


@pytest.fixture(scope="module")
def exports(onnx_dir):
    """Both precisions, exported once for the module; the log of the first export."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record)

    handler = Keep(level=logging.INFO)
    logger = logging.getLogger("avengers.core.onnx_embedding")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        int8 = create_embedder(EmbeddingConfig(backend="onnx", onnx_dir=str(onnx_dir)))
        fp32 = create_embedder(EmbeddingConfig(backend="onnx", onnx_precision="fp32", onnx_dir=str(onnx_dir)))
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    return {"int8": int8, "fp32": fp32, "log": [r.getMessage() for r in records]}


def test_first_use_exports_offline_and_says_so(exports, onnx_dir):
    assert any("exporting sentence-transformers/all-MiniLM-L6-v2 to ONNX (int8)" in m for m in exports["log"])
    directory = exports["int8"].directory
    assert directory.parent == onnx_dir and (directory / MODEL_FILE).is_file()
    record = json.loads((directory / RECORD_FILE).read_text())
    assert record["precision"] == "int8" and record["dimension"] == 384 and record["probe_min_cosine"] >= 0.97
    # the next process loads the kept export: no second export
    again = create_embedder(EmbeddingConfig(backend="onnx", onnx_dir=str(onnx_dir)))
    assert again.record == exports["int8"].record


def test_fp32_export_gives_torchs_vectors(exports, torch_vectors):
    vectors = exports["fp32"].encode(TEXTS)
    assert vectors.dtype == np.float32 and vectors.shape == (len(TEXTS), 384)
    np.testing.assert_allclose(vectors, torch_vectors, atol=1e-5)


def test_int8_export_is_close_to_torch_with_the_same_contract(exports, torch_vectors):
    embedder = exports["int8"]
    vectors = embedder.encode(TEXTS)
    assert vectors.dtype == np.float32 and vectors.shape == (len(TEXTS), 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    cosine = np.sum(vectors * torch_vectors, axis=1)
    assert cosine.min() >= 0.96 and cosine.mean() >= 0.98, cosine
    np.testing.assert_array_equal(vectors[0], vectors[6])
    # it still ranks like the model: the arithmetic question is nearer the word problem than the greeting
    assert vectors[0] @ vectors[5] > vectors[0] @ vectors[3]
    assert embedder.encode([]).shape == (0, 384)
    # a text's vector does not depend on the other texts of the call (one text per pass: the activation
    # scales of dynamic quantization are per pass), so micro-batched serving gives every caller the same vector
    one_by_one = np.concatenate([embedder.encode([t]) for t in TEXTS])
    np.testing.assert_array_equal(vectors, one_by_one)


def test_parallel_passes_give_the_same_vectors(exports, onnx_dir):
    two = create_embedder(EmbeddingConfig(backend="onnx", onnx_dir=str(onnx_dir), threads=2))
    assert two.workers == 2
    np.testing.assert_array_equal(two.encode(TEXTS), exports["int8"].encode(TEXTS))


def test_routers_are_interchangeable_but_caches_are_not(exports, tmp_path):
    torch_model = create_embedder(EmbeddingConfig(batch_size=1))
    int8, fp32 = exports["int8"], exports["fp32"]
    assert int8.name == fp32.name == torch_model.name  # a router fitted with one serves queries of the other
    assert (int8.variant, fp32.variant, torch_model.variant) == ("onnx-int8-r1", "onnx-fp32-r1", "")
    paths = {CachedEmbedder(e, tmp_path).path for e in (int8, fp32, torch_model)}
    assert len(paths) == 3


def test_max_seq_tokens_matches_torch_truncation(exports, onnx_dir):
    config = {"batch_size": 1, "max_seq_tokens": 24}
    onnx = create_embedder(EmbeddingConfig(backend="onnx", onnx_precision="fp32", onnx_dir=str(onnx_dir), **config))
    torch_model = create_embedder(EmbeddingConfig(**config))
    assert onnx.max_tokens == 24 and onnx.variant == "onnx-fp32-r1-max24"
    np.testing.assert_allclose(onnx.encode(TEXTS), torch_model.encode(TEXTS), atol=1e-5)
    long_text = TEXTS[4]
    assert onnx.encode([long_text])[0] @ exports["fp32"].encode([long_text])[0] < 0.999


def test_read_record_names_what_is_wrong(exports, tmp_path):
    source = exports["fp32"].directory
    fingerprint = model_fingerprint(resolve_model_path("all-MiniLM-L6-v2"))
    assert read_record(source, fingerprint, "fp32")[1] == ""
    assert read_record(tmp_path / "nothing", fingerprint, "fp32") == (None, "missing")
    assert "stale" in read_record(source, fingerprint, "int8")[1]
    partial = tmp_path / "partial"
    partial.mkdir()
    shutil.copy(source / MODEL_FILE, partial / MODEL_FILE)
    assert read_record(partial, fingerprint, "fp32")[1] == f"incomplete: no {RECORD_FILE}"
    (partial / RECORD_FILE).write_text("{not json")
    assert read_record(partial, fingerprint, "fp32")[1].startswith("corrupt: export.json is unreadable")


def test_a_corrupt_export_is_rebuilt_with_a_clear_message(exports, tmp_path, caplog):
    onnx_dir = tmp_path / "onnx"
    shutil.copytree(exports["fp32"].directory.parent, onnx_dir)
    directory = onnx_dir / exports["fp32"].directory.name
    data = bytearray((directory / MODEL_FILE).read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = b"\0" * 64  # damaged in the middle: the size is unchanged
    (directory / MODEL_FILE).write_bytes(bytes(data))

    with caplog.at_level(logging.WARNING, logger="avengers.core.onnx_embedding"):
        rebuilt = create_embedder(EmbeddingConfig(backend="onnx", onnx_precision="fp32", onnx_dir=str(onnx_dir)))
    [message] = [r.getMessage() for r in caplog.records if r.name == "avengers.core.onnx_embedding"]
    assert f"the ONNX export {directory} is corrupt: {MODEL_FILE} does not match the SHA-256" in message
    assert "rebuilding it from" in message
    np.testing.assert_allclose(rebuilt.encode(TEXTS[:3]), exports["fp32"].encode(TEXTS[:3]), atol=1e-6)
    assert read_record(directory, rebuilt.record["fingerprint"], "fp32")[1] == ""


def test_onnx_backend_refuses_a_gpu_device():
    with pytest.raises(EmbeddingError, match="runs on the CPU"):
        create_embedder(EmbeddingConfig(backend="onnx", device="cuda"))
