"""The recorded-samples format: every sample of every model on a benchmark, one JSON object a line.

Fields of a row (one sample of one model on one query):

====================  ========  ===========================================================================
field                 required  meaning
====================  ========  ===========================================================================
``id``                yes       query id (str), the same on every row of the query
``dataset``           yes       dataset (str); accuracy is reported per dataset and averaged over datasets
``query``             yes       the query as the models saw it (str)
``answer``            yes       gold answer (str): a number for math, a letter for multiple choice ("" for
                                code, which is graded by ``tests``)
``task_type``         yes       "math", "multiple_choice", "code" or "free_text" (yes/no is multiple choice)
``model``             yes       model name (str)
``text``              yes       the model's raw output (str); the answer is extracted from it by the voter's
                                extractor, so extraction is part of what is measured
``tokens``            no        generated tokens (int >= 0); absent: estimated as whitespace-separated words
                                and the report says the counts are estimates
``split``             no        "calibration" or "test": where present it decides the query's split
``tests``             no        code: test programs (list of str; asserts or HumanEval ``check(candidate)``)
``entry_point``       no        code: the function under test (str)
``greedy``            no        true for the one-sample baseline drawn greedily (temperature 0)
``seconds``           no        generation wall time attributed to this sample (float >= 0)
``error``             no        why generation failed (the sample then has empty text and abstains)
====================  ========  ===========================================================================

Any number of samples per (query, model), one included; every model must have at least one sample of every
query. Rows of one id must agree on dataset, query, answer, task_type, split, tests and entry_point. Reading
is strict: the first bad row raises :class:`SamplesError` naming ``file:line``. Files may be gzip-compressed
(``.gz``). Writing is atomic (a temporary file renamed into place), so a file is never half-written.
"""

from __future__ import annotations

import gzip
import io
import json
import math
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from avengers.config.tasks import CODE, TASK_TYPES

SPLITS = ("calibration", "test")
SAMPLES_FILE = "samples.jsonl"
"""Name of the recording inside an ``avengers evaluate --out`` directory."""


class SamplesError(ValueError):
    """A recorded-samples file that cannot be used; the message names the file and line."""


@dataclass(frozen=True)
class RecordedSample:
    """One row of the recorded-samples format."""

    id: str
    dataset: str
    query: str
    answer: str
    task_type: str
    model: str
    text: str
    tokens: int | None = None
    """None: not recorded (estimated from the words of ``text`` where a count is needed)."""
    split: str | None = None
    tests: tuple[str, ...] = ()
    entry_point: str = ""
    greedy: bool = False
    seconds: float | None = None
    error: str = ""

    @property
    def token_count(self) -> int:
        """Recorded tokens, else the whitespace-separated words of the text."""
        return self.tokens if self.tokens is not None else len(self.text.split())

    def to_json(self) -> dict[str, Any]:
        """The row as written (optional fields only when set)."""
        row: dict[str, Any] = {
            "id": self.id,
            "dataset": self.dataset,
            "query": self.query,
            "answer": self.answer,
            "task_type": self.task_type,
            "model": self.model,
            "text": self.text,
        }
        if self.tokens is not None:
            row["tokens"] = self.tokens
        if self.split is not None:
            row["split"] = self.split
        if self.tests:
            row["tests"] = list(self.tests)
        if self.entry_point:
            row["entry_point"] = self.entry_point
        if self.greedy:
            row["greedy"] = True
        if self.seconds is not None:
            row["seconds"] = round(self.seconds, 4)
        if self.error:
            row["error"] = self.error
        return row


_REQUIRED = ("id", "dataset", "query", "answer", "task_type", "model", "text")


def parse_sample(obj: object, where: str) -> RecordedSample:
    """Validate one decoded row; SamplesError names ``where`` (file:line) and the field."""
    if not isinstance(obj, dict):
        raise SamplesError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    for name in _REQUIRED:
        if name not in obj:
            raise SamplesError(f"{where}: missing field {name!r}")
        if not isinstance(obj[name], str):
            raise SamplesError(f"{where}: field {name!r} must be a string, got {type(obj[name]).__name__}")
    if not obj["id"].strip():
        raise SamplesError(f"{where}: empty id")
    if not obj["query"].strip():
        raise SamplesError(f"{where}: empty query")
    if not obj["model"].strip():
        raise SamplesError(f"{where}: empty model")
    if obj["task_type"] not in TASK_TYPES:
        raise SamplesError(f"{where}: task_type {obj['task_type']!r} is not one of {list(TASK_TYPES)}")
    tokens = obj.get("tokens")
    if tokens is not None and (isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 0):
        raise SamplesError(f"{where}: tokens must be an integer >= 0, got {tokens!r}")
    split = obj.get("split")
    if split is not None and split not in SPLITS:
        raise SamplesError(f"{where}: split must be one of {list(SPLITS)}, got {split!r}")
    tests = obj.get("tests", [])
    if not isinstance(tests, list) or not all(isinstance(t, str) for t in tests):
        raise SamplesError(f"{where}: tests must be a list of strings")
    entry_point = obj.get("entry_point", "")
    if not isinstance(entry_point, str) or (entry_point and not entry_point.isidentifier()):
        raise SamplesError(f"{where}: entry_point must be a Python identifier, got {entry_point!r}")
    if obj["task_type"] == CODE and not tests:
        raise SamplesError(f"{where}: a code query needs 'tests' to be graded")
    if obj["task_type"] != CODE and not obj["answer"].strip():
        raise SamplesError(f"{where}: empty gold answer")
    greedy = obj.get("greedy", False)
    if not isinstance(greedy, bool):
        raise SamplesError(f"{where}: greedy must be true or false")
    seconds = obj.get("seconds")
    if seconds is not None and (
        isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(seconds) or seconds < 0
    ):
        raise SamplesError(f"{where}: seconds must be a number >= 0, got {seconds!r}")
    error = obj.get("error", "")
    if not isinstance(error, str):
        raise SamplesError(f"{where}: error must be a string")
    return RecordedSample(
        id=obj["id"],
        dataset=obj["dataset"],
        query=obj["query"],
        answer=obj["answer"],
        task_type=obj["task_type"],
        model=obj["model"],
        text=obj["text"],
        tokens=tokens,
        split=split,
        tests=tuple(tests),
        entry_point=entry_point,
        greedy=greedy,
        seconds=None if seconds is None else float(seconds),
        error=error,
    )


def samples_path(path: str | Path) -> Path:
    """The recording of ``path``: the file itself, or ``DIR/samples.jsonl`` of an evaluate directory."""
    path = Path(path)
    if path.is_dir():
        path = path / SAMPLES_FILE
    if not path.is_file():
        raise SamplesError(f"{path}: no such file")
    return path


def open_text(path: Path) -> IO[str]:
    """A text reader of a plain or gzip-compressed file."""
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    return path.open("r", encoding="utf-8")


def iter_samples(path: str | Path) -> Iterator[tuple[RecordedSample, str]]:
    """Each row of a recorded-samples file with its ``file:line``."""
    path = samples_path(path)
    with open_text(path) as fh:
        for line_no, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            where = f"{path}:{line_no}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise SamplesError(f"{where}: invalid JSON ({exc.msg})") from None
            except UnicodeDecodeError:
                raise SamplesError(f"{where}: not UTF-8 text") from None
            yield parse_sample(obj, where), where


# --------------------------------------------------------------------------------------------------------
# The recording: samples grouped by query and model


@dataclass
class RecordedQuery:
    """What every row of one id shares."""

    id: str
    dataset: str
    query: str
    answer: str
    task_type: str
    split: str | None = None
    tests: tuple[str, ...] = ()
    entry_point: str = ""


@dataclass
class Recording:
    """Samples by query and model: ``samples[i][model]`` lists the samples of query ``i`` in recorded order."""

    queries: list[RecordedQuery]
    models: list[str]
    """Models in order of first appearance."""
    samples: list[dict[str, list[RecordedSample]]]
    source: str = "<memory>"
    tokens_recorded: bool = True
    """False when some sample has no token count (its count is then estimated from its words)."""

    def __len__(self) -> int:
        return len(self.queries)

    def rows(self) -> Iterator[RecordedSample]:
        """Every sample, query by query, models in order."""
        for per_model in self.samples:
            for model in self.models:
                yield from per_model.get(model, [])

    def samples_per_model(self) -> int:
        """Fewest sampled (non-greedy) samples any model has on any query (greedy ones counted when a model
        has only those)."""
        fewest = None
        for per_model in self.samples:
            for draws in per_model.values():
                sampled = sum(1 for s in draws if not s.greedy) or len(draws)
                fewest = sampled if fewest is None else min(fewest, sampled)
        return fewest or 0


_SHARED = ("dataset", "query", "answer", "task_type", "split", "tests", "entry_point")


@dataclass
class RecordingBuilder:
    """Collects samples, checking that rows of one id agree and, at the end, that every model answered every
    query."""

    source: str = "<memory>"
    _index: dict[str, int] = field(default_factory=dict)
    _first_at: dict[str, str] = field(default_factory=dict)
    _queries: list[RecordedQuery] = field(default_factory=list)
    _samples: list[dict[str, list[RecordedSample]]] = field(default_factory=list)
    _models: dict[str, None] = field(default_factory=dict)
    _tokens_recorded: bool = True

    def add(self, sample: RecordedSample, where: str) -> None:
        index = self._index.get(sample.id)
        if index is None:
            index = self._index[sample.id] = len(self._queries)
            self._first_at[sample.id] = where
            self._queries.append(RecordedQuery(**{"id": sample.id, **{f: getattr(sample, f) for f in _SHARED}}))
            self._samples.append({})
        known = self._queries[index]
        for name in _SHARED:
            if getattr(sample, name) != getattr(known, name):
                raise SamplesError(
                    f"{where}: id {sample.id!r} has another {name} than on {self._first_at[sample.id]}"
                )
        # One copy of the query text for all rows of the id.
        stored = RecordedSample(**{**sample.__dict__, "query": known.query})
        self._samples[index].setdefault(sample.model, []).append(stored)
        self._models.setdefault(sample.model)
        if sample.tokens is None:
            self._tokens_recorded = False

    def build(self) -> Recording:
        if not self._queries:
            raise SamplesError(f"{self.source}: no samples")
        models = list(self._models)
        for query, per_model in zip(self._queries, self._samples):
            missing = [m for m in models if m not in per_model]
            if missing:
                raise SamplesError(
                    f"{self._first_at[query.id]}: id {query.id!r} has no sample of model(s) {missing}; every "
                    "model needs at least one sample of every query"
                )
        return Recording(self._queries, models, self._samples, self.source, self._tokens_recorded)


def read_recording(path: str | Path) -> Recording:
    """Read and validate a recorded-samples file (or ``DIR/samples.jsonl``)."""
    builder = RecordingBuilder(source=str(samples_path(path)))
    for sample, where in iter_samples(path):
        builder.add(sample, where)
    return builder.build()


def recording_of(samples: Iterable[RecordedSample], source: str = "<memory>") -> Recording:
    """A recording of samples in memory (rows named by their position)."""
    builder = RecordingBuilder(source=source)
    for i, sample in enumerate(samples, start=1):
        builder.add(sample, f"{source}: sample {i}")
    return builder.build()


# --------------------------------------------------------------------------------------------------------
# Atomic writing


def write_atomically(path: str | Path, write: Callable[[IO[str]], None]) -> Path:
    """Write a text file through a temporary sibling renamed into place: never half-written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            write(fh)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_bytes_atomically(path: str | Path, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def sample_line(sample: RecordedSample) -> str:
    return json.dumps(sample.to_json(), ensure_ascii=False) + "\n"


def write_samples(path: str | Path, samples: Iterable[RecordedSample]) -> Path:
    """Write samples in the recorded-samples format, atomically."""
    return write_atomically(path, lambda fh: fh.writelines(sample_line(s) for s in samples))
