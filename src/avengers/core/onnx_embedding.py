"""The "onnx" embedder: a sentence-transformers model on ONNX Runtime, int8-quantized by default.

On first use the local model (never downloaded) is exported once and kept under ``EmbeddingConfig.onnx_dir``
(default ``~/.cache/avengers/onnx``), one directory per model, precision and export recipe:

1. ``torch.onnx.export`` of the whole sentence-transformers pipeline (transformer, pooling, normalisation),
   traced with eager attention on a padded batch so that padding masks are part of the graph;
2. ONNX Runtime's transformer optimizer fuses embedding+LayerNorm, attention, bias+GELU and skip+LayerNorm
   (BERT-like models; other graphs are kept as exported);
3. ``onnx_precision: int8``: dynamic quantization (``onnxruntime.quantization.quantize_dynamic``) — weights int8
   per output channel, activations quantized per call from their observed range, no calibration data. Per-tensor
   weights lose too much here (mean cosine to torch 0.954 on RouterDC queries against 0.994 per channel);
4. a check before the export is kept: the vectors of probe texts against torch's (cosine >= 0.9999 for fp32,
   >= 0.97 for int8), and ``export.json`` recording the source model's fingerprint and the file's SHA-256.

At load the record and the file's hash are checked, and a missing, partly written or corrupt export is rebuilt
with a log line saying why. Each pass reads one text on one thread; ``threads`` passes run at once (see
:class:`OnnxSession`). Concurrent processes (embedder, router and voter starting together) take a file lock,
so one exports and the others load its result. Serving needs only onnxruntime and tokenizers: torch is imported
to export, never to embed.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import re
import shutil
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from avengers.config.embedding import EmbeddingConfig
from avengers.core.embedding import (
    Embedder,
    EmbeddingError,
    default_cache_dir,
    model_threads,
    offline_environment,
    register_embedder,
    resolve_model_path,
)

log = logging.getLogger(__name__)

EXPORT_RECIPE = 1
"""Version of the export steps above: a change makes every process re-export once (a new directory)."""

MODEL_FILE = "model.onnx"
RECORD_FILE = "export.json"
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
"""Model inputs the runtime can feed (from the tokenizer's encodings)."""

MIN_PROBE_COSINE = {"fp32": 0.9999, "int8": 0.97}
PROBE_TEXTS = [
    "What is 12 * 7?",
    "Which of the following is a prime number?\nA. 21\nB. 27\nC. 29\nD. 33",
    "Write a Python function that returns the n-th Fibonacci number using memoisation.",
    "Summarise the causes of the First World War in three sentences, naming the alliances involved. " * 4,
    "a",
]


def onnx_root(config: EmbeddingConfig) -> Path:
    return Path(config.onnx_dir).expanduser() if config.onnx_dir else default_cache_dir() / "onnx"


def model_fingerprint(model_path: str) -> str:
    """12 hex digits naming the model's files (path, size, modification time): a changed model re-exports."""
    digest = hashlib.sha256()
    root = Path(model_path)
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        stat = path.stat()
        digest.update(f"{path.relative_to(root)}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:12]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def export_dir(config: EmbeddingConfig, model_path: str) -> Path:
    """Where the export of ``config.model`` at ``config.onnx_precision`` lives."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", config.model.rstrip("/").rsplit("/", 1)[-1])
    return (
        onnx_root(config) / f"{stem}-{model_fingerprint(model_path)}-{config.onnx_precision}-r{EXPORT_RECIPE}"
    )


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock between processes (flock), held while the block runs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def read_record(directory: Path, fingerprint: str, precision: str) -> tuple[dict[str, Any] | None, str]:
    """The export's record if the export in ``directory`` is complete and intact, else (None, why not)."""
    record_path, model_path = directory / RECORD_FILE, directory / MODEL_FILE
    if not directory.exists():
        return None, "missing"
    if not record_path.is_file():
        return None, f"incomplete: no {RECORD_FILE}"
    try:
        record = json.loads(record_path.read_text())
    except (OSError, ValueError) as exc:
        return None, f"corrupt: {RECORD_FILE} is unreadable ({exc})"
    expected = {"fingerprint": fingerprint, "precision": precision, "recipe": EXPORT_RECIPE}
    if any(record.get(k) != v for k, v in expected.items()):
        return None, f"stale: {RECORD_FILE} records another model, precision or recipe than {expected}"
    if not model_path.is_file():
        return None, f"incomplete: no {MODEL_FILE}"
    if file_sha256(model_path) != record.get("sha256"):
        return None, f"corrupt: {MODEL_FILE} does not match the SHA-256 recorded at export"
    return record, ""


def export_model(model_path: str, target: Path, precision: str, fingerprint: str) -> dict[str, Any]:
    """Export, optimise, quantize (int8) and check the model; write ``target`` (replaced as a whole)."""
    with quiet_onnxruntime_logs():
        return _export_model(model_path, target, precision, fingerprint)


def _export_model(model_path: str, target: Path, precision: str, fingerprint: str) -> dict[str, Any]:
    offline_environment()
    import torch
    from sentence_transformers import SentenceTransformer

    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        try:  # eager attention exports as plain ops that the optimizer recognises and fuses
            model = SentenceTransformer(
                model_path, device="cpu", model_kwargs={"attn_implementation": "eager"}
            )
        except (TypeError, ValueError):
            model = SentenceTransformer(model_path, device="cpu")
        model.eval()
        # two texts of different lengths: the traced graph applies the padding mask
        preprocess = (
            getattr(model, "preprocess", None) or model.tokenize
        )  # sentence-transformers < 6: tokenize
        sample = preprocess(["a", "a longer text, so that the first one is padded"])
        names = [n for n in INPUTS if n in sample]
        others = {k: v for k, v in sample.items() if not isinstance(v, torch.Tensor)}
        unknown = sorted(k for k, v in sample.items() if isinstance(v, torch.Tensor) and k not in INPUTS)
        if "input_ids" not in names or unknown:
            raise EmbeddingError(
                f"the ONNX backend feeds {', '.join(INPUTS)}; model {model_path} takes {sorted(sample)}"
            )

        class Pipeline(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = model

            def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
                return self.model({**others, **dict(zip(names, tensors))})["sentence_embedding"]

        exported = work / "exported.onnx"
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer and deprecation notes of the TorchScript exporter
            torch.onnx.export(
                Pipeline().eval(),
                tuple(sample[n] for n in names),
                str(exported),
                input_names=names,
                output_names=["sentence_embedding"],
                dynamic_axes={
                    **{n: {0: "batch", 1: "tokens"} for n in names},
                    "sentence_embedding": {0: "batch"},
                },
                opset_version=17,
                dynamo=False,
            )
        graph = _fuse(exported, work / "fused.onnx", model)
        if precision == "int8":
            from onnxruntime.quantization import QuantType, quantize_dynamic

            quantize_dynamic(
                str(graph),
                str(work / MODEL_FILE),
                per_channel=True,
                weight_type=QuantType.QInt8,
                extra_options={
                    "DefaultTensorType": 1
                },  # FLOAT, for tensors of fused ops shape inference skips
            )
        else:
            graph.rename(work / MODEL_FILE)
        for leftover in work.iterdir():
            if leftover.name != MODEL_FILE:
                leftover.unlink()
        tokenizer_file = Path(model_path) / "tokenizer.json"
        if not tokenizer_file.is_file():
            raise EmbeddingError(f"the ONNX backend needs a fast tokenizer file, {tokenizer_file}")
        record = {
            "model_path": model_path,
            "fingerprint": fingerprint,
            "precision": precision,
            "recipe": EXPORT_RECIPE,
            "inputs": names,
            "dimension": int(model.get_embedding_dimension()),
            "max_seq_length": int(model.max_seq_length),
            "pad_token_id": int(model.tokenizer.pad_token_id or 0),
            "torch": torch.__version__,
            "onnxruntime": __import__("onnxruntime").__version__,
            "sha256": file_sha256(work / MODEL_FILE),
        }
        # the export must give torch's vectors (within the precision's tolerance) through the serving path
        probe = OnnxSession(work / MODEL_FILE, record, tokenizer_file, max_tokens=None)
        reference = model.encode(
            PROBE_TEXTS,
            batch_size=1,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        cosine = np.sum(probe.embed(PROBE_TEXTS) * reference, axis=1)
        record["probe_min_cosine"] = round(float(cosine.min()), 6)
        if cosine.min() < MIN_PROBE_COSINE[precision]:
            raise EmbeddingError(
                f"the {precision} ONNX export of {model_path} does not reproduce the model: cosine to torch "
                f"{cosine.min():.4f} < {MIN_PROBE_COSINE[precision]} on a probe text"
            )
        record["export_seconds"] = round(time.perf_counter() - started, 1)
        (work / RECORD_FILE).write_text(json.dumps(record, indent=2) + "\n")
        work.chmod(0o755)
        if target.exists():
            shutil.rmtree(target)
        work.rename(target)
        return record
    finally:
        shutil.rmtree(work, ignore_errors=True)


@contextmanager
def quiet_onnxruntime_logs() -> Iterator[None]:
    """ONNX Runtime's optimizer and quantizer log every fused node and tensor at INFO (the quantizer on the
    root logger): keep their warnings and errors only while exporting."""
    names = ("onnx_model", "onnx_model_bert", "fusion_base", "fusion_utils", "onnxruntime")
    levels = {name: logging.getLogger(name).level for name in names}

    def not_quantizer_chatter(record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR or "onnxruntime" not in record.pathname

    for name in names:
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.root.addFilter(not_quantizer_chatter)
    try:
        yield
    finally:
        logging.root.removeFilter(not_quantizer_chatter)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def _fuse(exported: Path, fused: Path, model: Any) -> Path:
    """ONNX Runtime's transformer fusions for BERT-like graphs; the exported graph unchanged otherwise."""
    config = getattr(getattr(model[0], "auto_model", None), "config", None)
    if config is None or getattr(config, "model_type", "") not in {
        "bert",
        "roberta",
        "xlm-roberta",
        "distilbert",
    }:
        return exported
    try:
        from onnxruntime.transformers.optimizer import optimize_model

        optimized = optimize_model(
            str(exported),
            model_type="bert",
            num_heads=int(config.num_attention_heads),
            hidden_size=int(config.hidden_size),
            opt_level=0,
        )
        optimized.save_model_to_file(str(fused))
    except Exception as exc:  # noqa: BLE001 - an unfused graph is slower, not wrong
        log.warning("ONNX transformer fusions failed (%s); keeping the plain export", exc)
        return exported
    return fused


class OnnxSession:
    """An ONNX Runtime session and the model's fast tokenizer: texts in, pooled vectors out.

    Each pass runs on the calling thread alone (no intra-op pool): a pass over one query is too small to share
    well, and on a loaded machine intra-op threads spin waiting for each other — on RouterDC queries two
    intra-op threads gave less than half the rate of one at twice the CPU per query (``bench/embedding_threads.py``).
    :class:`OnnxEmbedder` runs several one-thread passes at once instead.
    """

    def __init__(
        self, model_file: Path, record: dict[str, Any], tokenizer_file: Path, max_tokens: int | None
    ):
        import onnxruntime as ort
        from tokenizers import Tokenizer

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # errors only
        self.session = ort.InferenceSession(str(model_file), options, providers=["CPUExecutionProvider"])
        self.inputs = list(record["inputs"])
        self.pad_id = int(record["pad_token_id"])
        self.max_tokens = min(max_tokens or record["max_seq_length"], record["max_seq_length"])
        self.tokenizer = Tokenizer.from_file(str(tokenizer_file))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length=self.max_tokens)

    def tokenize(self, texts: list[str]) -> list[Any]:
        return self.tokenizer.encode_batch(texts)

    def run(self, encodings: list[Any]) -> np.ndarray:
        """One forward pass over ``encodings`` padded to the longest."""
        width = max(len(e.ids) for e in encodings)
        shape = (len(encodings), width)
        arrays = {
            "input_ids": np.full(shape, self.pad_id, dtype=np.int64),
            "attention_mask": np.zeros(shape, dtype=np.int64),
            "token_type_ids": np.zeros(shape, dtype=np.int64),
        }
        for row, e in enumerate(encodings):
            n = len(e.ids)
            arrays["input_ids"][row, :n] = e.ids
            arrays["attention_mask"][row, :n] = e.attention_mask
            arrays["token_type_ids"][row, :n] = e.type_ids
        return self.session.run(None, {name: arrays[name] for name in self.inputs})[0]

    def embed(self, texts: list[str]) -> np.ndarray:
        """One text per pass (the probe check)."""
        return np.concatenate([self.run(self.tokenize([t])) for t in texts])


@register_embedder("onnx")
class OnnxEmbedder(Embedder):
    """A sentence-transformers model exported to ONNX Runtime (int8 by default), exported on first use."""

    def __init__(self, config: EmbeddingConfig):
        offline_environment()
        if config.device != "cpu":
            raise EmbeddingError(
                f"the ONNX backend runs on the CPU; device {config.device!r} needs the torch backend"
            )
        self._config = config
        model_path = resolve_model_path(config.model)
        self.directory = export_dir(config, model_path)
        fingerprint = model_fingerprint(model_path)
        with file_lock(self.directory.with_name(self.directory.name + ".lock")):
            record, why = read_record(self.directory, fingerprint, config.onnx_precision)
            session = None
            if record is not None:
                try:
                    session = self._session(record, model_path)
                except Exception as exc:  # noqa: BLE001 - ONNX Runtime reports a bad file many ways
                    record, why = None, f"corrupt: ONNX Runtime cannot load it ({exc})"
            if record is None:
                if why == "missing":
                    log.info(
                        "exporting %s to ONNX (%s) into %s: once, about a minute",
                        config.model,
                        config.onnx_precision,
                        self.directory,
                    )
                else:
                    log.warning(
                        "the ONNX export %s is %s; rebuilding it from %s", self.directory, why, model_path
                    )
                record = export_model(model_path, self.directory, config.onnx_precision, fingerprint)
                log.info(
                    "ONNX export of %s ready in %.0f s: %s",
                    config.model,
                    record["export_seconds"],
                    self.directory,
                )
        self.record = record
        self._session_ = session or self._session(record, model_path)
        self._lock = threading.Lock()
        self.workers = model_threads(config)
        """Passes run at once, each on one thread (see :class:`OnnxSession`)."""
        self._pool = (
            ThreadPoolExecutor(self.workers, thread_name_prefix="onnx-embedder") if self.workers > 1 else None
        )

    def _session(self, record: dict[str, Any], model_path: str) -> OnnxSession:
        return OnnxSession(
            self.directory / MODEL_FILE,
            record,
            Path(model_path) / "tokenizer.json",
            max_tokens=self._config.max_seq_tokens,
        )

    @property
    def name(self) -> str:
        return self._config.model

    @property
    def dimension(self) -> int:
        return int(self.record["dimension"])

    @property
    def variant(self) -> str:
        truncated = (
            self._config.max_seq_tokens is not None
            and self._session_.max_tokens < self.record["max_seq_length"]
        )
        # the recipe too: another export recipe gives other vectors, which must not be read from the old cache
        precision = f"onnx-{self._config.onnx_precision}-r{EXPORT_RECIPE}"
        return precision + (f"-max{self._session_.max_tokens}" if truncated else "")

    @property
    def max_tokens(self) -> int:
        """Tokens of a text the model reads (longer texts are truncated)."""
        return self._session_.max_tokens

    def _encode(self, texts: list[str]) -> np.ndarray:
        session = self._session_
        encodings = session.tokenize(texts)
        # One text per pass by default: on RouterDC queries it costs less CPU than length-bucketed passes
        # (bench/embedding_threads.py), and int8 vectors then never depend on the other texts of a call
        # (dynamic quantization scales activations per pass, padding included).
        size = self._config.batch_size or 1
        groups = [list(range(i, min(i + size, len(texts)))) for i in range(0, len(texts), size)]
        out = np.empty((len(texts), self.dimension), dtype=np.float32)

        def run(share: list[list[int]]) -> None:
            for group in share:
                out[group] = session.run([encodings[i] for i in group])

        with self._lock:  # one call at a time: concurrent calls would oversubscribe the cores
            if self._pool is None or len(groups) == 1:
                run(groups)
            else:  # each worker takes every n-th pass
                list(self._pool.map(run, [groups[w :: self.workers] for w in range(self.workers)]))
        return out
