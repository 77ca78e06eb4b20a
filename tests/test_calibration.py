"""Calibration: generated tasks, scoring with the voter's extraction, measuring a pool, the CLI end to end."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from avengers.core.ensemble import ModelPoolClient, Sample, Sampling
from avengers.core.labels import read_labels
from avengers.data import data_path
from avengers.tools.calibration import (
    TasksError,
    generate_tasks,
    measure,
    read_tasks,
    score_texts,
    write_tasks,
)


def test_generated_tasks_are_deterministic_distinct_and_answerable(tmp_path):
    tasks = generate_tasks(40, seed=3)
    assert tasks == generate_tasks(40, seed=3) and tasks != generate_tasks(40, seed=4)
    assert len({t.query for t in tasks}) == 40 and len({t.dataset for t in tasks}) == 4
    for task in tasks:
        if task.task_type == "math":
            assert task.answer.lstrip("-").isdigit()
        else:
            assert task.answer in "ABCD" and f"\n{task.answer}. " in task.query
    write_tasks(tmp_path / "t.jsonl", tasks)
    assert read_tasks(tmp_path / "t.jsonl") == tasks


def test_word_problems_have_the_right_answers():
    for task in generate_tasks(60, seed=1):
        if task.dataset == "arithmetic":
            a, op, b = task.query.removeprefix("What is ").rstrip("?").split()
            assert int(task.answer) == {"+": int(a) + int(b), "-": int(a) - int(b), "*": int(a) * int(b)}[op]


@pytest.mark.parametrize(
    ("row", "needle"),
    [
        ("not json", "invalid JSON"),
        (json.dumps({"id": "a", "dataset": "d", "task_type": "poetry", "query": "q", "answer": "1"}), "task_type"),
        (json.dumps({"id": "a", "dataset": "d", "task_type": "math", "query": "q"}), "must be strings"),
        (json.dumps({"id": "a", "dataset": "d", "task_type": "math", "query": " ", "answer": "1"}), "empty"),
    ],
)
def test_bad_tasks_files_name_the_row(tmp_path, row, needle):
    path = tmp_path / "bad.jsonl"
    path.write_text(row + "\n")
    with pytest.raises(TasksError, match=needle) as info:
        read_tasks(path)
    assert f"{path}:1" in str(info.value)


def test_scores_use_the_voters_extraction():
    math_task, choice_task = generate_tasks(4, seed=0)[1], generate_tasks(4, seed=0)[2]
    assert score_texts(math_task, [f"Answer: {math_task.answer}", "I think 0.5", f"\\boxed{{{math_task.answer}}}"]) == 2 / 3
    assert score_texts(choice_task, [f"The answer is {choice_task.answer}.", "no idea"]) == 0.5
    assert score_texts(choice_task, []) == 0.0


class EchoPool(ModelPoolClient):
    """"good" always answers right (it peeks at the gold via the task id), "bad" never does."""

    def __init__(self, gold: dict[str, str]):
        self.gold = gold
        self.messages: list = []

    async def generate(self, model, messages, sampling, *, task_id, request_id, timeout):
        self.messages.append(list(messages))
        text = f"Answer: {self.gold[task_id]}" if model == "good" else "Answer: 999999"
        return [Sample(model, i, text) for i in range(sampling.n)]


async def test_measure_writes_labels_per_model():
    tasks = generate_tasks(8, seed=0)
    pool = EchoPool({t.id: t.answer for t in tasks})
    progress = []
    labels = await measure(tasks, ["good", "bad"], pool, Sampling(n=2, temperature=0.7),
                           progress=lambda m, done: progress.append((m, done)))
    assert labels.models == ["good", "bad"] and len(labels) == 8
    assert all(r.scores == {"good": 1.0, "bad": 0.0} for r in labels.rows)
    assert [r.id for r in labels.rows] == [t.id for t in tasks]
    assert ("good", 8) in progress and ("bad", 8) in progress
    # the gateway's prompts: the task's instruction, then the query
    assert pool.messages[0][0][0] == "system" and pool.messages[0][1] == ("user", tasks[0].query)


def test_calibrate_cli_on_the_default_pool(tmp_path):
    """Two tasks, one short sample per model from the real default pool (SmolLM2, Gemma 3): a labels file
    ``avengers fit`` reads."""
    out = tmp_path / "labels.jsonl"
    result = subprocess.run(
        [sys.executable, "-m", "avengers", "calibrate", "--pool", str(data_path("default_pool.yaml")),
         "--tasks", str(data_path("calibration_tasks.jsonl")), "--out", str(out), "--limit", "2",
         "--samples", "1", "--max-tokens", "6"],
        check=False, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    labels = read_labels(out)
    assert labels.models == ["smollm2-135m", "gemma3-270m"] and len(labels) == 2
    assert "labelled tasks" in result.stdout
