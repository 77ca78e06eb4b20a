"""Benchmarks with gold answers, read as published: the format is detected from the file (or forced by name).

Every reader yields :class:`BenchmarkItem` rows: ``id``, ``dataset``, ``query`` (what the models are asked,
options lettered on their own lines for multiple choice), ``answer`` (gold: a number for math, a letter for
multiple choice), ``task_type`` and, for code, ``tests`` + ``entry_point``.

=================  ===========================================================  =================================
format             files                                                        read as
=================  ===========================================================  =================================
``avengers``       the project's benchmark format (JSONL: id, dataset, query,   as is; also the output of
                   answer, task_type [, tests, entry_point, split])             ``avengers calibrate-tasks``
``mawps``          MultiArith, AddSub, SingleEq (JSON array: sQuestion,         math; dataset = the file's stem
                   lSolutions)
``svamp``          SVAMP (JSON array: Body, Question, Answer)                   math, "Body Question"
``commonsenseqa``  CommonsenseQA (JSONL: question.stem, question.choices,       multiple choice A–E
                   answerKey)
``strategyqa``     StrategyQA, BIG-bench task (JSON: examples[].input,          multiple choice "A. Yes / B. No"
                   target_scores)
``aqua``           AQuA-RAT (JSONL: question, options ["A)..."], correct)       multiple choice A–E
``gsm8k``          GSM8K (JSONL: question, answer "... #### 72")                math, the number after ####
``humaneval``      HumanEval (JSONL: task_id, prompt, test, entry_point)        code, graded by the tests
=================  ===========================================================  =================================

A bad row stops with one :class:`BenchmarkError` naming ``file:line`` (JSON arrays too: the line where the
element starts).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from avengers.config.tasks import CODE, MATH, MULTIPLE_CHOICE, TASK_TYPES
from avengers.tools.end_to_end.samples import SPLITS, open_text


class BenchmarkError(ValueError):
    """A benchmark file that cannot be read; the message names the file and line."""


@dataclass(frozen=True)
class BenchmarkItem:
    id: str
    dataset: str
    query: str
    answer: str
    task_type: str
    tests: tuple[str, ...] = ()
    entry_point: str = ""
    split: str | None = None


Element = tuple[Any, str]
"""A decoded JSON value and where it starts (``file:line``)."""


# --------------------------------------------------------------------------------------------------------
# Reading JSON Lines and JSON arrays with line numbers


def _jsonl(path: Path) -> Iterator[Element]:
    with open_text(path) as fh:
        for line_no, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            where = f"{path}:{line_no}"
            try:
                yield json.loads(line), where
            except json.JSONDecodeError as exc:
                raise BenchmarkError(f"{where}: invalid JSON ({exc.msg})") from None


def _array_elements(path: Path, text: str, start: int) -> Iterator[Element]:
    """Elements of the JSON array opening at ``text[start] == "["``, each with the line it starts on."""
    decoder = json.JSONDecoder()
    position, line = start + 1, text.count("\n", 0, start) + 1
    counted = start

    def where(at: int) -> str:
        nonlocal line, counted
        line += text.count("\n", counted, at)
        counted = at
        return f"{path}:{line}"

    expect_value = True
    while True:
        while position < len(text) and text[position] in " \t\r\n":
            position += 1
        if position >= len(text):
            raise BenchmarkError(f"{where(position)}: the JSON array is not closed")
        char = text[position]
        if char == "]":
            return
        if char == "," and not expect_value:
            position += 1
            expect_value = True
            continue
        if not expect_value:
            raise BenchmarkError(f"{where(position)}: invalid JSON (expected ',' or ']')")
        try:
            value, end = decoder.raw_decode(text, position)
        except json.JSONDecodeError as exc:
            raise BenchmarkError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg})") from None
        yield value, where(position)
        position, expect_value = end, False


def _json_document(path: Path) -> tuple[str, Any]:
    with open_text(path) as fh:
        text = fh.read()
    try:
        return text, json.loads(text)
    except json.JSONDecodeError as exc:
        raise BenchmarkError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg})") from None


def _array(path: Path) -> Iterator[Element]:
    text, document = _json_document(path)
    if not isinstance(document, list):
        raise BenchmarkError(f"{path}:1: expected a JSON array of items")
    yield from _array_elements(path, text, text.index("["))


def _need(obj: Any, where: str, *fields: str) -> dict:
    if not isinstance(obj, dict):
        raise BenchmarkError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    missing = [f for f in fields if f not in obj]
    if missing:
        raise BenchmarkError(f"{where}: missing field(s) {missing}")
    return obj


def _text(value: Any, where: str, name: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise BenchmarkError(f"{where}: {name} must be a non-empty string, got {value!r}")
    return value.strip()


def _number(value: Any, where: str, name: str) -> str:
    """A gold number as text: 39.0 -> "39", "1,000" -> "1000"."""
    if isinstance(value, bool):
        raise BenchmarkError(f"{where}: {name} must be a number, got {value!r}")
    if isinstance(value, (int, float)):
        return str(int(value)) if float(value).is_integer() else repr(float(value))
    if isinstance(value, str) and re.fullmatch(r"\s*-?[\d,]*\.?\d+\s*", value):
        text = value.strip().replace(",", "")
        return str(int(float(text))) if float(text).is_integer() else text
    raise BenchmarkError(f"{where}: {name} must be a number, got {value!r}")


def lettered(question: str, options: list[tuple[str, str]]) -> str:
    """A multiple-choice query: the question, then one "X. option" line per option."""
    return question.strip() + "\n" + "\n".join(f"{letter}. {text.strip()}" for letter, text in options)


# --------------------------------------------------------------------------------------------------------
# Readers


Reader = Callable[[Path], Iterator[BenchmarkItem]]
READERS: dict[str, Reader] = {}


def reader(name: str) -> Callable[[Reader], Reader]:
    def wrap(function: Reader) -> Reader:
        READERS[name] = function
        return function

    return wrap


@reader("avengers")
def read_native(path: Path) -> Iterator[BenchmarkItem]:
    for obj, where in _jsonl(path):
        obj = _need(obj, where, "id", "query", "answer", "task_type")
        task_type = obj["task_type"]
        if task_type not in TASK_TYPES:
            raise BenchmarkError(f"{where}: task_type {task_type!r} is not one of {list(TASK_TYPES)}")
        tests = obj.get("tests", [])
        if not isinstance(tests, list) or not all(isinstance(t, str) for t in tests):
            raise BenchmarkError(f"{where}: tests must be a list of strings")
        if task_type == CODE and not tests:
            raise BenchmarkError(f"{where}: a code item needs 'tests'")
        entry_point = obj.get("entry_point", "")
        if not isinstance(entry_point, str) or (entry_point and not entry_point.isidentifier()):
            raise BenchmarkError(f"{where}: entry_point must be a Python identifier, got {entry_point!r}")
        split = obj.get("split")
        if split is not None and split not in SPLITS:
            raise BenchmarkError(f"{where}: split must be one of {list(SPLITS)}, got {split!r}")
        answer = obj["answer"]
        if not isinstance(answer, str) or (task_type != CODE and not answer.strip()):
            raise BenchmarkError(f"{where}: answer must be a non-empty string, got {answer!r}")
        yield BenchmarkItem(
            id=_text(obj["id"], where, "id"),
            dataset=_text(obj.get("dataset", path.stem), where, "dataset"),
            query=_text(obj["query"], where, "query"),
            answer=answer.strip(),
            task_type=task_type,
            tests=tuple(tests),
            entry_point=entry_point,
            split=split,
        )


@reader("mawps")
def read_mawps(path: Path) -> Iterator[BenchmarkItem]:
    """MultiArith / AddSub / SingleEq: sQuestion, lSolutions[0]."""
    dataset = path.name.split(".")[0]
    for i, (obj, where) in enumerate(_array(path)):
        obj = _need(obj, where, "sQuestion", "lSolutions")
        solutions = obj["lSolutions"]
        if not isinstance(solutions, list) or not solutions:
            raise BenchmarkError(f"{where}: lSolutions must be a non-empty list")
        yield BenchmarkItem(
            id=f"{dataset}-{obj.get('iIndex', i)}",
            dataset=dataset,
            query=" ".join(_text(obj["sQuestion"], where, "sQuestion").split()),
            answer=_number(solutions[0], where, "lSolutions[0]"),
            task_type=MATH,
        )


@reader("svamp")
def read_svamp(path: Path) -> Iterator[BenchmarkItem]:
    dataset = path.name.split(".")[0]
    for i, (obj, where) in enumerate(_array(path)):
        obj = _need(obj, where, "Body", "Question", "Answer")
        body = _text(obj["Body"], where, "Body").rstrip()
        question = _text(obj["Question"], where, "Question")
        yield BenchmarkItem(
            id=f"{dataset}-{obj.get('ID', i)}",
            dataset=dataset,
            query=f"{body}{'' if body.endswith(('.', '?', '!')) else '.'} {question}",
            answer=_number(obj["Answer"], where, "Answer"),
            task_type=MATH,
        )


@reader("commonsenseqa")
def read_commonsenseqa(path: Path) -> Iterator[BenchmarkItem]:
    for i, (obj, where) in enumerate(_jsonl(path)):
        obj = _need(obj, where, "question", "answerKey")
        question = _need(obj["question"], where, "stem", "choices")
        choices = question["choices"]
        if not isinstance(choices, list) or len(choices) < 2:
            raise BenchmarkError(f"{where}: question.choices must list at least two options")
        options = []
        for choice in choices:
            choice = _need(choice, where, "label", "text")
            options.append((_text(choice["label"], where, "choice label"), _text(choice["text"], where, "choice")))
        letters = [letter for letter, _ in options]
        if obj["answerKey"] not in letters:
            raise BenchmarkError(f"{where}: answerKey {obj['answerKey']!r} is not one of {letters}")
        yield BenchmarkItem(
            id=str(obj.get("id", f"commonsenseqa-{i}")),
            dataset="commonsenseqa",
            query=lettered(_text(question["stem"], where, "question.stem"), options),
            answer=obj["answerKey"],
            task_type=MULTIPLE_CHOICE,
        )


@reader("strategyqa")
def read_strategyqa(path: Path) -> Iterator[BenchmarkItem]:
    """BIG-bench task JSON: examples[] with input and target_scores {"Yes": 0/1, "No": 0/1}."""
    text, document = _json_document(path)
    if not isinstance(document, dict) or not isinstance(document.get("examples"), list):
        raise BenchmarkError(f"{path}:1: expected a BIG-bench task object with an 'examples' list")
    key = re.search(r'"examples"\s*:\s*\[', text)
    assert key is not None  # the document has the key
    dataset = str(document.get("name") or path.name.split(".")[0])
    for i, (obj, where) in enumerate(_array_elements(path, text, key.end() - 1)):
        obj = _need(obj, where, "input", "target_scores")
        scores = obj["target_scores"]
        if not isinstance(scores, dict) or not scores:
            raise BenchmarkError(f"{where}: target_scores must be an object of option -> 0/1")
        options = list(scores)
        right = [o for o in options if scores[o] == 1]
        if len(right) != 1:
            raise BenchmarkError(f"{where}: target_scores must mark exactly one option with 1, got {scores}")
        letters = "ABCDEFGHIJ"[: len(options)]
        yield BenchmarkItem(
            id=f"{dataset}-{i}",
            dataset=dataset,
            query=lettered(_text(obj["input"], where, "input"), list(zip(letters, options))),
            answer=letters[options.index(right[0])],
            task_type=MULTIPLE_CHOICE,
        )


_AQUA_OPTION = re.compile(r"\s*\(?([A-J])\s*\)\s*(.*)", re.DOTALL)


@reader("aqua")
def read_aqua(path: Path) -> Iterator[BenchmarkItem]:
    dataset = path.name.split(".")[0].removesuffix("_test")
    for i, (obj, where) in enumerate(_jsonl(path)):
        obj = _need(obj, where, "question", "options", "correct")
        options = []
        for option in obj["options"] if isinstance(obj["options"], list) else []:
            match = _AQUA_OPTION.fullmatch(option) if isinstance(option, str) else None
            if not match:
                raise BenchmarkError(f"{where}: option {option!r} is not 'A)...'")
            options.append((match.group(1), match.group(2)))
        if len(options) < 2:
            raise BenchmarkError(f"{where}: options must list at least two 'A)...' options")
        if obj["correct"] not in [letter for letter, _ in options]:
            raise BenchmarkError(f"{where}: correct {obj['correct']!r} is not an option letter")
        yield BenchmarkItem(
            id=f"{dataset}-{i}",
            dataset=dataset,
            query=lettered(_text(obj["question"], where, "question"), options),
            answer=obj["correct"],
            task_type=MULTIPLE_CHOICE,
        )


@reader("gsm8k")
def read_gsm8k(path: Path) -> Iterator[BenchmarkItem]:
    dataset = path.name.split(".")[0].removesuffix("_test")
    for i, (obj, where) in enumerate(_jsonl(path)):
        obj = _need(obj, where, "question", "answer")
        solution = _text(obj["answer"], where, "answer")
        if "####" not in solution:
            raise BenchmarkError(f"{where}: answer has no '#### <number>' line")
        yield BenchmarkItem(
            id=f"{dataset}-{i}",
            dataset=dataset,
            query=_text(obj["question"], where, "question"),
            answer=_number(solution.rsplit("####", 1)[1].strip(), where, "the number after ####"),
            task_type=MATH,
        )


@reader("humaneval")
def read_humaneval(path: Path) -> Iterator[BenchmarkItem]:
    for obj, where in _jsonl(path):
        obj = _need(obj, where, "task_id", "prompt", "test", "entry_point")
        entry_point = _text(obj["entry_point"], where, "entry_point")
        if not entry_point.isidentifier():
            raise BenchmarkError(f"{where}: entry_point {entry_point!r} is not a Python identifier")
        yield BenchmarkItem(
            id=_text(obj["task_id"], where, "task_id"),
            dataset="humaneval",
            query=_text(obj["prompt"], where, "prompt"),
            answer="",
            task_type=CODE,
            tests=(_text(obj["test"], where, "test"),),
            entry_point=entry_point,
        )


# --------------------------------------------------------------------------------------------------------
# Detection


def _keys_format(keys: set[str], obj: dict) -> str | None:
    if {"id", "query", "answer", "task_type"} <= keys:
        return "avengers"
    if {"sQuestion", "lSolutions"} <= keys:
        return "mawps"
    if {"Body", "Question", "Answer"} <= keys:
        return "svamp"
    if {"answerKey", "question"} <= keys and isinstance(obj.get("question"), dict):
        return "commonsenseqa"
    if {"question", "options", "correct"} <= keys:
        return "aqua"
    if {"task_id", "prompt", "test", "entry_point"} <= keys:
        return "humaneval"
    if {"question", "answer"} <= keys and "####" in str(obj.get("answer")):
        return "gsm8k"
    return None


def detect_format(path: str | Path) -> str:
    """The format of a benchmark file, from its first item."""
    path = Path(path)
    if not path.is_file():
        raise BenchmarkError(f"{path}: no such file")
    with open_text(path) as fh:
        head = fh.read(1 << 16)
    stripped = head.lstrip()
    first_line = stripped.split("\n", 1)[0]
    candidate: Any = None
    try:
        candidate = json.loads(first_line)
    except json.JSONDecodeError:
        pass
    if isinstance(candidate, dict):
        found = _keys_format(set(candidate), candidate)
        if found:
            return found
        keys = sorted(candidate)
    else:
        _, document = _json_document(path)
        if isinstance(document, dict) and isinstance(document.get("examples"), list):
            first = document["examples"][0] if document["examples"] else {}
            if isinstance(first, dict) and "target_scores" in first:
                return "strategyqa"
        if isinstance(document, list) and document and isinstance(document[0], dict):
            found = _keys_format(set(document[0]), document[0])
            if found:
                return found
            keys = sorted(document[0])
        else:
            keys = sorted(document) if isinstance(document, dict) else []
    raise BenchmarkError(
        f"{path}: unknown benchmark format (first item has keys {keys}); known formats: {sorted(READERS)} "
        "(--format NAME forces one)"
    )


def read_benchmark(path: str | Path, format: str | None = None, limit: int = 0) -> list[BenchmarkItem]:
    """The items of a benchmark file (the first ``limit`` when > 0), its format detected unless given."""
    path = Path(path)
    if not path.is_file():
        raise BenchmarkError(f"{path}: no such file")
    name = format or detect_format(path)
    if name not in READERS:
        raise BenchmarkError(f"unknown benchmark format {name!r}; known: {sorted(READERS)}")
    items: list[BenchmarkItem] = []
    seen: set[str] = set()
    for item in READERS[name](path):
        if item.id in seen:
            raise BenchmarkError(f"{path}: duplicate id {item.id!r}")
        seen.add(item.id)
        items.append(item)
        if limit and len(items) >= limit:
            break
    if not items:
        raise BenchmarkError(f"{path}: no items")
    return items


def read_benchmarks(paths: list[str], format: str | None = None, limit: int = 0) -> list[BenchmarkItem]:
    """Items of several files; ids must be distinct across files."""
    items: list[BenchmarkItem] = []
    origin: dict[str, str] = {}
    for path in paths:
        for item in read_benchmark(path, format, limit):
            if item.id in origin:
                raise BenchmarkError(f"{path}: id {item.id!r} is also in {origin[item.id]}")
            origin[item.id] = path
            items.append(item)
    return items
