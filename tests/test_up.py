"""``avengers up`` in a subprocess with the shipped default stack (SmolLM2 on llama.cpp, the router fitted
on the shipped measured labels), one ``avengers ask`` through it, then SIGTERM and a clean exit."""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from avengers.config.model_pool import ModelPoolConfig
from avengers.core.labels import read_labels
from avengers.data import data_path
from conftest import free_port

AVENGERS = [sys.executable, "-m", "avengers"]
START_TIMEOUT = 300


def env_without_state() -> dict[str, str]:
    env = dict(os.environ)
    for name in ("REDIS_URL", "AVENGERS_GATEWAY_ADDR", "AVENGERS_EMBEDDER_ADDR", "QDRANT_URL"):
        env.pop(name, None)
    return env


class Up:
    """A running ``avengers up``; its stdout lines arrive on a queue."""

    def __init__(self, args: list[str], log: Path):
        self.log = log.open("w")
        self.process = subprocess.Popen(
            [*AVENGERS, "up", *args], stdout=subprocess.PIPE, stderr=self.log, text=True, env=env_without_state()
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.output: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def wait_for(self, prefix: str, timeout: float) -> str:
        while True:
            try:
                line = self.lines.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"no {prefix!r} line within {timeout}s; output so far: {self.output}") from None
            if line is None:
                raise AssertionError(f"avengers up exited ({self.process.wait()}) before {prefix!r}: {self.output}")
            self.output.append(line)
            if line.startswith(prefix):
                return line

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=60)
        finally:
            if self.process.poll() is None:
                self.process.kill()
            self.log.close()


def test_shipped_defaults_are_consistent():
    pool = ModelPoolConfig.from_yaml(data_path("default_pool.yaml"))
    labels = read_labels(data_path("default_labels.jsonl"))
    assert pool.model_names == labels.models and len(pool.model_names) >= 2
    assert all(m.backend == "llama_cpp" for m in pool.models)
    templates = {m.llama_cpp.chat_template for m in pool.models}
    assert len(templates) == len(pool.models)  # the models genuinely differ
    assert 100 <= len(labels) <= 200 and len(set(labels.datasets)) >= 3
    # measured, so not constant: each model is right on some tasks and wrong on others
    for model in labels.models:
        scores = {row.scores[model] for row in labels.rows}
        assert len(scores) > 1


def listening_addresses(port: int) -> set[str]:
    """Local addresses with a listening TCP socket on ``port`` (from /proc/net/tcp, hex: 0100007F = 127.0.0.1)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, port_hex = local.split(":")
        if state == "0A" and int(port_hex, 16) == port:
            found.add(".".join(str(int(address[i:i + 2], 16)) for i in (6, 4, 2, 0)))
    return found


def test_up_then_ask_then_sigterm(tmp_path):
    import openai

    metrics_port = free_port()
    up = Up(["--ports", "auto", "--metrics-port", str(metrics_port), "--data-dir", str(tmp_path / "up")],
            tmp_path / "up.log")
    try:
        ready = up.wait_for("ready:", START_TIMEOUT)
        address = ready.split("--addr", 1)[1].split()[0]
        http_url = next(line for line in up.output if line.startswith("http ")).split()[1]
        metrics = next(line for line in up.output if line.startswith("metrics "))
        assert f"http://127.0.0.1:{metrics_port}/metrics" in metrics
        assert listening_addresses(metrics_port) == {"127.0.0.1"}  # not 0.0.0.0: the stack binds loopback only
        asked = subprocess.run(
            [*AVENGERS, "ask", "What is 12 + 30?", "--addr", address, "--n", "2", "--max-tokens", "12", "--json"],
            check=False, capture_output=True, text=True, timeout=300, env=env_without_state(),
        )
        assert asked.returncode == 0, asked.stderr
        response = json.loads(asked.stdout)
        pool = ModelPoolConfig.from_yaml(data_path("default_pool.yaml")).model_names
        assert response["models"] and set(response["models"]) <= set(pool)
        assert response["task_type"] == "TASK_TYPE_MATH" and response["router_version"]
        assert len(response["samples"]) == 2 and all(s["model"] in pool for s in response["samples"])
        assert "vote" in response and response["request_id"]

        readable = subprocess.run(
            [*AVENGERS, "ask", "Which of the following is a fruit?\nA. car\nB. pear\nC. dog\nD. red", "--addr",
             address, "--n", "2", "--max-tokens", "8", "--strategy", "model-switch"],
            check=False, capture_output=True, text=True, timeout=300, env=env_without_state(),
        )
        assert readable.returncode == 0, readable.stderr
        assert "models:" in readable.stdout and "cluster:" in readable.stdout and "votes:" in readable.stdout

        client = openai.OpenAI(base_url=http_url, api_key="unused", max_retries=0, timeout=300)
        assert client.models.list().data[0].id == "avengers"
        completion = client.chat.completions.create(
            model="avengers", messages=[{"role": "user", "content": "What is 12 + 30?"}], n=2, max_tokens=12
        )
        assert set(completion.model_extra["avengers"]["models"]) <= set(pool)
    finally:
        code = up.stop()
    assert code == 0, (tmp_path / "up.log").read_text()[-3000:]
    assert any("stopped" in line for line in [*up.output, *iter_rest(up)])


def iter_rest(up: Up) -> list[str]:
    rest = []
    while True:
        try:
            line = up.lines.get(timeout=5)
        except queue.Empty:
            return rest
        if line is None:
            return rest
        rest.append(line)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--ports", "gateway=notaport"], "--ports"),
        (["--ports", "htp=8080"], "http"),  # the error lists the names, http among them
        (["--pool", "{pool}", "--embedder", "hashing", "--ports", "auto"], "does not serve"),
    ],
)
def test_up_refuses_bad_setups_with_a_clear_error(tmp_path, args, needle):
    labels = tmp_path / "replay-labels.jsonl"
    labels.write_text(json.dumps({"id": "t", "dataset": "d", "split": "s", "query": "q?", "scores": {"other": 1.0}}) + "\n")
    pool = tmp_path / "pool.yaml"
    pool.write_text(f"models:\n  - name: other\n    backend: replay\n    replay: {{labels_path: {labels}}}\n")
    args = [a.replace("{pool}", str(pool)) for a in args]
    result = subprocess.run(
        [*AVENGERS, "up", "--data-dir", str(tmp_path / "up"), *args],
        check=False, capture_output=True, text=True, timeout=300, env=env_without_state(),
    )
    assert result.returncode == 2, result.stderr
    assert needle in result.stderr


def test_up_says_which_port_is_taken(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [*AVENGERS, "up", "--data-dir", str(tmp_path / "up"), "--embedder", "hashing",
             "--ports", f"embedder={port},router=0,voter=0,model-pool=0,gateway=0"],
            check=False, capture_output=True, text=True, timeout=300, env=env_without_state(),
        )
    assert result.returncode == 2, result.stderr
    assert f"embedder: cannot bind 127.0.0.1:{port}" in result.stderr and "--ports" in result.stderr
