"""Calibration: measure each model of a pool on tasks with known answers and write the labels a router is
fitted on.

A **tasks file** is JSONL with rows ``{"id", "dataset", "task_type", "query", "answer"}`` (``task_type`` one of
:data:`avengers.core.answers.TASK_TYPES`, ``answer`` the gold answer as the voter's extractor would read it).
:func:`generate_tasks` makes such tasks programmatically — arithmetic word problems, bare arithmetic, and
multiple-choice questions about categories and numbers — so calibration needs no external data.

:func:`measure` asks every model for ``samples`` answers to each task (with the same chat messages the gateway
sends, :func:`avengers.core.tasks.task_messages`), extracts each answer with the voter's extractor for the
task type (:mod:`avengers.core.answers`) and scores the model on the task as the share of samples whose
answer equals the gold one. The result is a labels set (:mod:`avengers.core.labels`); with a price for every
model, each row also has ``costs``: the model's mean generated tokens over its samples x its price
(:mod:`avengers.tools.costs`).
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from avengers.core.answers import TASK_TYPES, create_extractor
from avengers.core.ensemble import ModelPoolClient, Sampling
from avengers.core.labels import LabeledQuery, LabelSet
from avengers.core.tasks import task_messages
from avengers.tools.costs import query_cost


class TasksError(ValueError):
    """A tasks file that cannot be used; the message names the row."""


@dataclass(frozen=True)
class CalibrationTask:
    id: str
    dataset: str
    task_type: str
    query: str
    answer: str
    """Gold answer (a number for math, a letter for multiple choice)."""


# --------------------------------------------------------------------------------------------------------
# Task generation

_NAMES = ["Ava", "Ben", "Chloe", "Diego", "Emma", "Farid", "Grace", "Hugo", "Ines", "Jonas", "Kira", "Liam"]
_ITEMS = ["apple", "book", "marble", "pencil", "sticker", "cookie", "shell", "coin", "card", "balloon"]
_CATEGORIES = {
    "fruit": ["apple", "banana", "cherry", "grape", "mango", "orange", "pear", "peach"],
    "animal": ["dog", "cat", "horse", "lion", "tiger", "rabbit", "cow", "sheep"],
    "colour": ["red", "blue", "green", "yellow", "purple", "brown"],
    "vehicle": ["car", "bus", "bicycle", "train", "truck", "boat"],
    "musical instrument": ["piano", "guitar", "violin", "drum", "flute", "trumpet"],
    "country": ["France", "Japan", "Brazil", "Canada", "Kenya", "India"],
}
LETTERS = "ABCD"


def _word_problem(rng: random.Random) -> tuple[str, int]:
    name, item = rng.choice(_NAMES), rng.choice(_ITEMS)
    kind = rng.randrange(3)
    if kind == 0:
        a, b = rng.randint(2, 40), rng.randint(2, 40)
        return f"{name} has {a} {item}s and gets {b} more. How many {item}s does {name} have now?", a + b
    if kind == 1:
        a = rng.randint(10, 60)
        b = rng.randint(1, a - 1)
        return f"{name} had {a} {item}s and gave {b} of them away. How many {item}s are left?", a - b
    a, b = rng.randint(2, 9), rng.randint(2, 9)
    return f"There are {a} bags with {b} {item}s in each bag. How many {item}s are there in total?", a * b


def _bare_arithmetic(rng: random.Random) -> tuple[str, int]:
    kind = rng.randrange(3)
    if kind == 0:
        a, b = rng.randint(1, 99), rng.randint(1, 99)
        return f"What is {a} + {b}?", a + b
    if kind == 1:
        a = rng.randint(10, 99)
        b = rng.randint(1, a)
        return f"What is {a} - {b}?", a - b
    a, b = rng.randint(2, 12), rng.randint(2, 12)
    return f"What is {a} * {b}?", a * b


def _options(rng: random.Random, right: str, wrong: Sequence[str]) -> tuple[str, str]:
    """Four lettered option lines with ``right`` at a random place, and its letter."""
    options = [right, *wrong]
    rng.shuffle(options)
    lines = "\n".join(f"{letter}. {option}" for letter, option in zip(LETTERS, options))
    return lines, LETTERS[options.index(right)]


def _category_question(rng: random.Random) -> tuple[str, str]:
    category = rng.choice(sorted(_CATEGORIES))
    right = rng.choice(_CATEGORIES[category])
    others = [w for c, words in _CATEGORIES.items() if c != category for w in words]
    lines, letter = _options(rng, right, rng.sample(others, 3))
    return f"Which of the following is a {category}?\n{lines}", letter


def _number_question(rng: random.Random) -> tuple[str, str]:
    numbers = rng.sample(range(1, 100), 4)
    largest = rng.random() < 0.5
    right = max(numbers) if largest else min(numbers)
    lines, letter = _options(rng, str(right), [str(n) for n in numbers if n != right])
    return f"Which number is the {'largest' if largest else 'smallest'}?\n{lines}", letter


TASK_FAMILIES: dict[str, tuple[str, Callable[[random.Random], tuple[str, object]]]] = {
    "word-problems": ("math", _word_problem),
    "arithmetic": ("math", _bare_arithmetic),
    "categories": ("multiple_choice", _category_question),
    "compare-numbers": ("multiple_choice", _number_question),
}
"""dataset name -> (task type, generator of (query, gold answer))."""


def generate_tasks(count: int, seed: int = 0) -> list[CalibrationTask]:
    """``count`` distinct tasks, the families taking turns; deterministic per seed."""
    if count < 1:
        raise ValueError("count must be >= 1")
    rng = random.Random(seed)
    tasks: list[CalibrationTask] = []
    seen: set[str] = set()
    families = list(TASK_FAMILIES.items())
    attempts = 0
    while len(tasks) < count:
        attempts += 1
        if attempts > count * 100:
            raise ValueError(f"could not generate {count} distinct tasks")
        dataset, (task_type, make) = families[len(tasks) % len(families)]
        query, answer = make(rng)
        if query in seen:
            continue
        seen.add(query)
        tasks.append(CalibrationTask(f"{dataset}-{len(tasks):04d}", dataset, task_type, query, str(answer)))
    return tasks


def write_tasks(path: str | Path, tasks: Sequence[CalibrationTask]) -> None:
    with Path(path).open("w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(asdict(task), ensure_ascii=False) + "\n" for task in tasks)


def read_tasks(path: str | Path) -> list[CalibrationTask]:
    """Read and validate a tasks file; the first bad row raises TasksError naming it."""
    path = Path(path)
    if not path.is_file():
        raise TasksError(f"{path}: no such file")
    tasks, ids = [], set()
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{line_no}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise TasksError(f"{where}: invalid JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise TasksError(f"{where}: expected a JSON object")
        missing = [f for f in ("id", "dataset", "task_type", "query", "answer") if not isinstance(row.get(f), str)]
        if missing:
            raise TasksError(f"{where}: fields {missing} must be strings")
        if row["task_type"] not in TASK_TYPES or row["task_type"] in ("code", "free_text"):
            raise TasksError(f"{where}: task_type must be 'math' or 'multiple_choice', got {row['task_type']!r}")
        if not row["query"].strip() or not row["answer"].strip():
            raise TasksError(f"{where}: empty query or answer")
        if row["id"] in ids:
            raise TasksError(f"{where}: duplicate id {row['id']!r}")
        ids.add(row["id"])
        tasks.append(CalibrationTask(**{f: row[f] for f in ("id", "dataset", "task_type", "query", "answer")}))
    if not tasks:
        raise TasksError(f"{path}: no tasks")
    return tasks


# --------------------------------------------------------------------------------------------------------
# Measuring


def score_texts(task: CalibrationTask, texts: Sequence[str]) -> float:
    """Share of ``texts`` whose extracted answer equals the task's gold answer (the voter's normalisation)."""
    if not texts:
        return 0.0
    extractor = create_extractor(task.task_type)
    gold = extractor.normalise(task.answer)
    return sum(1 for text in texts if gold is not None and extractor.key(text) == gold) / len(texts)


async def measure(
    tasks: Sequence[CalibrationTask],
    models: Sequence[str],
    pool: ModelPoolClient,
    sampling: Sampling,
    *,
    instructions: Mapping[str, str] | None = None,
    timeout_seconds: float = 600.0,
    progress: Callable[[str, int], None] | None = None,
    prices: Mapping[str, float] | None = None,
) -> LabelSet:
    """Every model answers every task ``sampling.n`` times; scores are the share of right answers.

    ``prices`` (per million generated tokens, one for every model): each row gets ``costs``, the model's mean
    generated tokens on the task x its price. Models run concurrently (one request at a time each, as CPU
    engines serve); ``progress(model, done)`` is called after each task.
    """
    if not models:
        raise ValueError("no models to calibrate")
    if prices is not None and (unpriced := [m for m in models if m not in prices]):
        raise ValueError(f"no price for models {unpriced}")
    scores: dict[str, list[float]] = {}
    costs: dict[str, list[float]] = {}

    async def run(model: str) -> None:
        out = scores[model] = []
        spent = costs[model] = []
        for i, task in enumerate(tasks):
            samples = await pool.generate(
                model,
                task_messages(task.query, task.task_type, instructions),
                sampling,
                task_id=task.id,
                request_id=f"calibrate-{task.id}",
                timeout=timeout_seconds,
            )
            out.append(score_texts(task, [s.text for s in samples]))
            if prices is not None:
                spent.append(query_cost([s.completion_tokens for s in samples], prices[model]))
            if progress is not None:
                progress(model, i + 1)

    await asyncio.gather(*(run(m) for m in models))
    rows = [
        LabeledQuery(
            task.id, task.dataset, "calibration", task.query, {m: round(scores[m][i], 4) for m in models},
            costs=None if prices is None else {m: costs[m][i] for m in models},
        )
        for i, task in enumerate(tasks)
    ]
    return LabelSet(rows=rows, models=list(models))
