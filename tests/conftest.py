"""Shared fixtures: small labelled data the tests make themselves (no external data)."""

from __future__ import annotations

import json
import os
import random
import socket
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


# ------------------------------------------------------------------------------------------------- ports
# Prefer port 0 wherever a server can bind it and report the port (start_server does: ``server.port``). The
# old helper bound port 0, closed the socket and handed the number out: anything (another test, another
# process's outgoing connection) could take it before the server bound it.


def _ports_outside_the_ephemeral_range() -> range:
    """Ports the kernel never hands out by itself (bind to 0, outgoing connections)."""
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999
    return range(max(1024, low - 10000), low) if low - 1024 >= 2000 else range(high + 1, 65536)


_handed_out: set[int] = set()


def free_port() -> int:
    """A loopback TCP port for a server that must be told its port in advance: restarted on the same port, a
    subprocess, Ray, redis-server, a metrics endpoint. Chosen at random outside the kernel's ephemeral range
    (so no bind to port 0 and no outgoing connection of any process is given it meanwhile), checked free by
    binding it, and handed out once per test process."""
    ports = _ports_outside_the_ephemeral_range()
    rng = random.Random()
    for _ in range(1000):
        port = rng.choice(ports)
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free port in {ports}")


_reserved: list[socket.socket] = []


def closed_port() -> int:
    """A loopback port on which nothing listens, for the rest of the test session: bound without ``listen()``,
    so connecting to it is refused at once and no other process can take it meanwhile."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    _reserved.append(s)
    return s.getsockname()[1]
