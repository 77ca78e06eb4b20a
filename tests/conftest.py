"""Shared fixtures: small labelled data the tests make themselves (no external data)."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest

# Servers started by tests serve no /metrics endpoint unless a test asks for one (no fixed port 9090).
os.environ.setdefault("AVENGERS_METRICS_PORT", "0")

TOPICS = {
    "arithmetic": [
        "What is {a} plus {b}?",
        "Compute {a} times {b} and give the result.",
        "A shop sells {a} apples and {b} pears. How many fruits in total?",
        "Subtract {b} from {a}. What number remains?",
    ],
    "geography": [
        "Which river flows through the capital city number {a}?",
        "Name the mountain range that borders country {a} in the north.",
        "What is the largest lake in region {a} by surface area?",
        "Which ocean lies west of continent {a}?",
    ],
    "programming": [
        "Write a Python function that returns the {a}th Fibonacci number.",
        "Implement a function to reverse a linked list of {a} nodes in Python.",
        "def sort_items(xs):  # sort a list of {a} integers and return it",
        "Write code that parses a CSV file with {a} columns and sums each column.",
    ],
}
MODELS = ["org/math-7b", "org/geo-7b", "org/code-7b"]
STRONG = {"arithmetic": "org/math-7b", "geography": "org/geo-7b", "programming": "org/code-7b"}


def make_rows(n_per_topic: int, seed: int, split: str) -> list[dict]:
    """Rows where each topic's specialist model is right 90% of the time and the others 20%."""
    rng = random.Random(seed)
    rows = []
    for topic, templates in TOPICS.items():
        for i in range(n_per_topic):
            query = rng.choice(templates).format(a=rng.randint(2, 999), b=rng.randint(2, 999))
            scores = {m: float(rng.random() < (0.9 if STRONG[topic] == m else 0.2)) for m in MODELS}
            rows.append({"id": f"{topic}-{split}-{i}", "dataset": topic, "split": split, "query": query, "scores": scores})
    rng.shuffle(rows)
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="session")
def labels_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("labels")
    write_jsonl(d / "train.jsonl", make_rows(60, seed=1, split="train"))
    write_jsonl(d / "test.jsonl", make_rows(30, seed=2, split="test"))
    return d
