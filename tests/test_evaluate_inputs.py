"""Benchmark files as published (tiny copies the tests write), format detection, and generation that resumes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from avengers.config.evaluate import GenerationConfig
from avengers.core.ensemble import DependencyError, ModelPoolClient, Sample
from avengers.tools.calibration import generate_tasks, write_tasks
from avengers.tools.end_to_end.benchmarks import BenchmarkError, BenchmarkItem, detect_format, read_benchmark
from avengers.tools.end_to_end.generation import generate_samples


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_every_published_format_is_detected_and_read(tmp_path: Path):
    files = {
        "multiarith.json": (('[\n  {"iIndex": 3, "sQuestion": " Tom had 3 apples and got 4 more. How many? ",\n'
                            '   "lSolutions": [7.0]}\n]\n'), "mawps"),
        "svamp.json": (('[{"ID": "chal-1", "Body": "Each pack costs 76 dollars", "Question": "How much for 2 packs?",'
                       ' "Answer": 152.0}]'), "svamp"),
        "commonsenseqa_dev.jsonl": (json.dumps({"id": "c1", "answerKey": "B", "question": {"stem": "Where is a desk?",
                                    "choices": [{"label": "A", "text": "sea"}, {"label": "B", "text": "office"}]}})
                                    + "\n", "commonsenseqa"),
        "strategyqa.json": (('{"name": "strategyqa", "examples": [\n {"input": "Is ice cold?",\n'
                            '  "target_scores": {"Yes": 1, "No": 0}}]}'), "strategyqa"),
        "aqua_test.json": (json.dumps({"question": "2 + 2 = ?", "options": ["A)3", "B)4"], "correct": "B"}) + "\n",
                           "aqua"),
        "gsm8k_test.jsonl": (json.dumps({"question": "How many?", "answer": "2 + 2 = 4\n#### 1,004"}) + "\n", "gsm8k"),
        "humaneval.jsonl": (json.dumps({"task_id": "HumanEval/0", "prompt": "def add(a, b):\n", "entry_point": "add",
                                        "test": "def check(candidate):\n    assert candidate(1, 2) == 3\n",
                                        "canonical_solution": "    return a + b\n"}) + "\n", "humaneval"),
    }
    items: dict[str, BenchmarkItem] = {}
    for name, (text, fmt) in files.items():
        path = write(tmp_path / name, text)
        assert detect_format(path) == fmt
        [items[fmt]] = read_benchmark(path)
    assert items["mawps"] == BenchmarkItem("multiarith-3", "multiarith",
                                           "Tom had 3 apples and got 4 more. How many?", "7", "math")
    assert items["svamp"].query == "Each pack costs 76 dollars. How much for 2 packs?" and items["svamp"].answer == "152"
    assert items["commonsenseqa"].query == "Where is a desk?\nA. sea\nB. office"
    assert (items["strategyqa"].query, items["strategyqa"].answer) == ("Is ice cold?\nA. Yes\nB. No", "A")
    assert (items["aqua"].query, items["aqua"].answer, items["aqua"].dataset) == ("2 + 2 = ?\nA. 3\nB. 4", "B", "aqua")
    assert (items["gsm8k"].answer, items["gsm8k"].dataset) == ("1004", "gsm8k")
    code = items["humaneval"]
    assert code.task_type == "code" and code.entry_point == "add" and "check(candidate)" in code.tests[0]


def test_calibration_tasks_are_a_benchmark(tmp_path: Path):
    path = tmp_path / "tasks.jsonl"
    write_tasks(path, generate_tasks(8, seed=1))
    items = read_benchmark(path)
    assert detect_format(path) == "avengers" and len(items) == 8
    assert {i.task_type for i in items} == {"math", "multiple_choice"}
    assert len(read_benchmark(path, limit=3)) == 3


def test_bad_items_name_file_and_line(tmp_path: Path):
    array = write(tmp_path / "addsub.json", '[\n {"sQuestion": "a?", "lSolutions": ["1"]},\n\n {"sQuestion": "b?"}\n]')
    with pytest.raises(BenchmarkError, match=r"addsub.json:4: missing field\(s\) \['lSolutions'\]"):
        read_benchmark(array)
    lines = write(tmp_path / "csqa.jsonl", json.dumps({"answerKey": "Z", "question": {"stem": "s", "choices": [
        {"label": "A", "text": "x"}, {"label": "B", "text": "y"}]}}) + "\n")
    with pytest.raises(BenchmarkError, match=r"csqa.jsonl:1: answerKey 'Z' is not one of \['A', 'B'\]"):
        read_benchmark(lines)
    broken = write(tmp_path / "g.jsonl", '{"question": "q", "answer": "#### 3"}\n{"question": \n')
    with pytest.raises(BenchmarkError, match=r"g.jsonl:2: invalid JSON"):
        read_benchmark(broken)
    unknown = write(tmp_path / "u.jsonl", '{"prompt": "x"}\n')
    with pytest.raises(BenchmarkError, match=r"unknown benchmark format \(first item has keys \['prompt'\]\)"):
        read_benchmark(unknown)
    with pytest.raises(BenchmarkError, match="missing field"):
        read_benchmark(unknown, format="gsm8k")


class CountingPool(ModelPoolClient):
    """Answers "Answer: A"; fails once with ``fail_status`` on the item ``fail_on``."""

    def __init__(self, fail_on: str = "", fail_status: str = "UNAVAILABLE"):
        self.calls: list[tuple[str, str, int, float]] = []
        self.fail_on, self.fail_status = fail_on, fail_status

    async def generate(self, model, messages, sampling, *, task_id, request_id, timeout) -> list[Sample]:
        self.calls.append((model, task_id, sampling.n, sampling.temperature))
        if task_id == self.fail_on:
            self.fail_on = "" if self.fail_status == "UNAVAILABLE" else self.fail_on
            raise DependencyError("model pool", self.fail_status, "no")
        return [Sample(model, i, "Answer: A", completion_tokens=2) for i in range(sampling.n)]


ITEMS = [BenchmarkItem(f"i{k}", "d", f"Which?\nA. x\nB. y {k}", "A", "multiple_choice") for k in range(4)]


async def test_generation_records_greedy_and_sampled_and_resumes(tmp_path: Path):
    partial = tmp_path / "samples.jsonl.partial"
    config = GenerationConfig(n=3, seed=5)
    pool = CountingPool(fail_on="i2")
    with pytest.raises(DependencyError):
        await generate_samples(ITEMS, ["m"], pool, config, partial=partial, progress=False)
    assert ("m", "i0", 1, 0.0) in pool.calls and ("m", "i0", 3, 0.7) in pool.calls
    again = CountingPool()
    samples = await generate_samples(ITEMS, ["m"], again, config, partial=partial, progress=False)
    redone = {task for _, task, _, _ in again.calls}
    assert "i2" in redone and not redone & {"i0", "i1"}  # the answers before the failure were kept
    assert [s.id for s in samples] == [i.id for i in ITEMS for _ in range(4)]
    assert sum(s.greedy for s in samples) == 4 and all(s.tokens == 2 for s in samples)


async def test_a_request_the_model_refuses_is_recorded_as_an_abstaining_sample(tmp_path: Path):
    pool = CountingPool(fail_on="i1", fail_status="INVALID_ARGUMENT")
    samples = await generate_samples(ITEMS[:2], ["m"], pool, GenerationConfig(n=2), progress=False)
    failed = [s for s in samples if s.id == "i1"]
    assert len(failed) == 3 and all(s.text == "" and s.error.startswith("INVALID_ARGUMENT") for s in failed)
