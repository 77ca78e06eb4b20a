"""Replay engine: recorded answers, or answers synthesised from recorded correctness. No model, no GPU.

For offline evaluation of the whole serving path and for load tests. A request is looked up by its
``task_id``, else by its exact query text (the prompt, or the last user message); a request found in
neither file ends with NOT_FOUND.

Sources, per model (``replay.label_model``, default the model's name):

* **Outputs file** (JSONL, rows ``{"id" or "query", "model", "samples": [text, ...]}``): the recorded texts.
  Sample i of a request is ``samples[(offset + i) % len(samples)]`` with ``offset = seed % len(samples)``
  (seed: the request's, else ``replay.seed``), so n larger than the recording cycles through it.
* **Labels file** (the project's labels format, rows ``{id, dataset, split, query, scores{model: p}}``):
  correctness only, so answers are synthesised. Sample i is correct when
  ``u(task, model, seed, i) < p``, where ``u`` is a uniform draw in [0, 1) from SHA-256 of
  ``"{task}|{model}|{seed}|{i}"`` — deterministic per (task, model, seed), and over many seeds each sample
  is correct with probability exactly ``p`` (p=1: always, p=0: never).

  A correct sample carries the task's gold answer, the same for every model; a wrong sample carries one of
  three wrong answers of the task (chosen by the same kind of draw), never the gold one, so wrong samples
  of different models sometimes agree, as real models' mistakes do. Answers are formatted for the task type
  so the voter's extractors read them (:mod:`avengers.core.answers`):

  - multiple choice (``"Answer: C"``): the letters are the options found in the query ("A) ...",
    "(B) ...", "C. ..." at line starts, at least two), else A-D; the gold letter is picked from the task id.
  - math (``"The answer is \\boxed{417}."``): the gold is an integer in [0, 1000) from the task id; the
    wrong answers are gold+1, gold+2 and gold+3.

  The task type is ``replay.task_type``, or with "auto": multiple choice when the query lists options or
  its dataset name is a known multiple-choice benchmark, else math. :meth:`ReplayEngine.gold_answer`
  returns the gold answer of a task, for scoring.

The outputs file wins when both hold a task. Token counts are whitespace-separated words.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from avengers.config.model_pool import ModelConfig
from avengers.core.labels import read_labels
from avengers.core.tasks import option_letters as listed_option_letters
from avengers.engines.base import (
    Engine,
    EngineUnavailable,
    GeneratedSample,
    GenerationRequest,
    GenerationResult,
    UnknownTask,
    register_engine,
)

MULTIPLE_CHOICE_DATASETS = ("mmlu", "arc", "gpqa", "hellaswag", "winogrande", "commonsense", "openbookqa",
                            "piqa", "siqa", "medqa", "race", "truthfulqa", "agieval", "mc")
WRONG_ANSWERS_PER_TASK = 3


class OutputsError(ValueError):
    """A recorded-outputs file that cannot be used; the message names the row."""


def unit_draw(*parts: object) -> float:
    """A deterministic uniform number in [0, 1) from the parts."""
    digest = hashlib.sha256("|".join(str(p) for p in parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def option_letters(query: str) -> list[str]:
    """Distinct option letters of a multiple-choice query ([] when it lists fewer than two)."""
    letters = list(dict.fromkeys(listed_option_letters(query)))
    return letters if len(letters) >= 2 else []


@dataclass(frozen=True)
class ReplayTask:
    """What the replay engine knows about one task for its model."""

    task_id: str
    query: str
    dataset: str = ""
    score: float | None = None
    recorded: tuple[str, ...] = ()


def read_outputs(path: str | Path, model: str) -> list[dict]:
    """Rows of a recorded-outputs JSONL file for ``model``, validated."""
    path = Path(path)
    if not path.is_file():
        raise OutputsError(f"{path}: no such file")
    rows = []
    with path.open(encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise OutputsError(f"{path}:{line_no}: invalid JSON ({exc.msg})") from None
            if not isinstance(row, dict) or not isinstance(row.get("model"), str):
                raise OutputsError(f"{path}:{line_no}: expected an object with a string 'model'")
            if not isinstance(row.get("id", ""), str) or not isinstance(row.get("query", ""), str):
                raise OutputsError(f"{path}:{line_no}: 'id' and 'query' must be strings")
            if not row.get("id") and not row.get("query"):
                raise OutputsError(f"{path}:{line_no}: a row needs 'id' or 'query'")
            samples = row.get("samples")
            if not isinstance(samples, list) or not samples or not all(isinstance(s, str) for s in samples):
                raise OutputsError(f"{path}:{line_no}: 'samples' must be a non-empty list of strings")
            if row["model"] == model:
                rows.append(row)
    return rows


@register_engine("replay")
class ReplayEngine(Engine):
    """Answers from recorded outputs or recorded correctness; deterministic per (task, model, seed)."""

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        assert config.replay is not None  # guaranteed by ModelConfig validation
        self._options = config.replay
        self.label_model = self._options.label_model or config.name
        self._by_id: dict[str, ReplayTask] = {}
        self._by_query: dict[str, ReplayTask] = {}
        self._loaded = False

    @property
    def model_id(self) -> str:
        return self.config.model_id or " + ".join(p for p in (self._options.outputs_path, self._options.labels_path) if p)

    async def start(self) -> None:
        if not self._loaded:
            await asyncio.to_thread(self._load)

    def _load(self) -> None:
        by_id: dict[str, ReplayTask] = {}
        by_query: dict[str, ReplayTask] = {}
        if self._options.labels_path:
            labels = read_labels(self._options.labels_path)
            if self.label_model not in labels.models:
                raise ValueError(
                    f"model {self.name!r}: {labels.source} scores no model {self.label_model!r} "
                    f"(it has {labels.models})"
                )
            for row in labels.rows:
                task = ReplayTask(row.id, row.query, row.dataset, row.scores[self.label_model])
                by_id.setdefault(row.id, task)
                by_query.setdefault(row.query, task)
        if self._options.outputs_path:
            for row in read_outputs(self._options.outputs_path, self.label_model):
                known = by_id.get(row.get("id", "")) or by_query.get(row.get("query", ""))
                task = ReplayTask(
                    task_id=row.get("id") or (known.task_id if known else row["query"]),
                    query=row.get("query") or (known.query if known else ""),
                    dataset=known.dataset if known else "",
                    score=known.score if known else None,
                    recorded=tuple(row["samples"]),
                )
                by_id[task.task_id] = task
                if task.query:
                    by_query[task.query] = task
        if not by_id:
            raise ValueError(f"model {self.name!r}: the replay files hold no task for {self.label_model!r}")
        self._by_id, self._by_query, self._loaded = by_id, by_query, True

    @property
    def task_count(self) -> int:
        return len(self._by_id)

    def lookup(self, request: GenerationRequest) -> ReplayTask:
        """The task of a request: by task_id, else by exact query text."""
        if request.task_id and request.task_id in self._by_id:
            return self._by_id[request.task_id]
        task = self._by_query.get(request.query_text)
        if task is None:
            what = f"task_id {request.task_id!r} nor its query" if request.task_id else "its query text"
            raise UnknownTask(f"model {self.name!r} (replay) has no record of {what}")
        return task

    def task_type(self, task: ReplayTask) -> str:
        """"multiple_choice" or "math"."""
        if self._options.task_type != "auto":
            return self._options.task_type
        if option_letters(task.query):
            return "multiple_choice"
        dataset = task.dataset.lower()
        if any(name in re.split(r"[^a-z0-9]+", dataset) or dataset.startswith(name) for name in MULTIPLE_CHOICE_DATASETS):
            return "multiple_choice"
        return "math"

    def _choices(self, task: ReplayTask) -> tuple[str, list[str]]:
        """The gold answer and the wrong answers of a task."""
        if self.task_type(task) == "multiple_choice":
            letters = option_letters(task.query) or ["A", "B", "C", "D"]
            gold = letters[int(unit_draw(task.task_id, "gold") * len(letters))]
            return gold, [letter for letter in letters if letter != gold][:WRONG_ANSWERS_PER_TASK]
        gold_value = int(unit_draw(task.task_id, "gold") * 1000)
        return str(gold_value), [str(gold_value + k) for k in range(1, WRONG_ANSWERS_PER_TASK + 1)]

    def gold_answer(self, task_id: str) -> str:
        """The answer every correct synthesised sample of the task carries ("C", "417")."""
        task = self._by_id.get(task_id)
        if task is None:
            raise UnknownTask(f"model {self.name!r} (replay) has no task {task_id!r}")
        return self._choices(task)[0]

    def format_answer(self, task: ReplayTask, answer: str) -> str:
        if self.task_type(task) == "multiple_choice":
            return f"Answer: {answer}"
        return f"The answer is \\boxed{{{answer}}}."

    def synthesise(self, task: ReplayTask, seed: int, index: int) -> str:
        """Sample ``index`` of a task drawn from its recorded correctness."""
        if task.score is None:
            raise UnknownTask(f"model {self.name!r} (replay) has no score for task {task.task_id!r}")
        gold, wrong = self._choices(task)
        correct = unit_draw(task.task_id, self.label_model, seed, index) < task.score
        if correct:
            answer = gold
        else:
            answer = wrong[int(unit_draw(task.task_id, self.label_model, seed, index, "wrong") * len(wrong))]
        return self.format_answer(task, answer)

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        if not self._loaded:
            raise EngineUnavailable(f"model {self.name!r} is not loaded (engine not started)")
        task = self.lookup(request)
        if self._options.latency_s:
            await asyncio.sleep(self._options.latency_s)
        sampling = request.sampling
        seed = sampling.seed if sampling.seed is not None else self._options.seed
        samples = []
        for index in range(sampling.n):
            if task.recorded:
                text = task.recorded[(seed + index) % len(task.recorded)]
            else:
                text = self.synthesise(task, seed, index)
            words = text.split()
            finish = "stop"
            if len(words) > sampling.max_tokens:
                words, finish = words[: sampling.max_tokens], "length"
                text = " ".join(words)
            samples.append(GeneratedSample(index, text, finish, len(words)))
        result = GenerationResult(samples=samples, prompt_tokens=len(request.query_text.split()))
        self.stats.record(result)
        return result
