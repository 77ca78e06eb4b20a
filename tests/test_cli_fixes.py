"""One test per rough edge a new user hit (issue: HTTP front and rough edges): help texts, model-pool configs
with relative paths outside the repository root, `pool serve-config`, `pool run` on SIGTERM, Health/List,
`avengers serve http`. (`ask --json`, `ask --stream`, `feedback` options: tests/test_client.py; `avengers up`
serving HTTP and binding /metrics on its host: tests/test_up.py.)"""

from __future__ import annotations

import argparse
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import grpc
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from avengers.cli import build_parser
from avengers.cli.pool import load_pool
from conftest import write_jsonl

ROOT = Path(__file__).resolve().parents[1]
AVENGERS = [sys.executable, "-m", "avengers"]


def all_parsers(parser: argparse.ArgumentParser, path: str = "avengers"):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from all_parsers(child, f"{path} {name}")


def test_help_texts_have_no_developer_notes_or_double_backticks_and_state_defaults():
    for path, parser in all_parsers(build_parser()):
        text = parser.format_help()
        assert "``" not in text, path
        assert "register(" not in text and "subcommand lives in its own module" not in text, path
        for action in parser._actions:
            if not action.option_strings or action.help == argparse.SUPPRESS or action.required:
                continue
            if action.default not in (None, False, argparse.SUPPRESS) and not isinstance(
                action, argparse._StoreConstAction
            ):
                assert "default" in (action.help or ""), f"{path} {action.option_strings[-1]}"


@pytest.fixture
def replay_pool(tmp_path) -> Path:
    """A pool YAML whose replay labels path is relative to the YAML's directory."""
    conf = tmp_path / "conf"
    conf.mkdir()
    write_jsonl(conf / "labels.jsonl", [
        {"id": "t1", "dataset": "d", "split": "test", "query": "What is 1 + 2?", "scores": {"m": 1.0}},
    ])
    (conf / "pool.yaml").write_text("models:\n  - name: m\n    backend: replay\n    replay:\n      labels_path: labels.jsonl\n")
    return conf / "pool.yaml"


def test_the_shipped_cpu_example_loads_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    pool = load_pool(ROOT / "examples" / "model_pool" / "cpu.yaml")
    replay = next(m for m in pool.models if m.backend == "replay")
    assert Path(replay.replay.labels_path).is_absolute() and Path(replay.replay.labels_path).is_file()


def test_pool_serve_config_writes_absolute_paths(replay_pool, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = subprocess.run([*AVENGERS, "pool", "serve-config", "--config", str(replay_pool)], cwd=elsewhere,
                            check=False, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    rendered = yaml.safe_load(result.stdout)
    args = rendered["applications"][0]["args"]
    path = args["models"][0]["replay"]["labels_path"]
    assert path == str(replay_pool.parent / "labels.jsonl")


class Running:
    """A command in the background whose stdout lines arrive on a queue."""

    def __init__(self, args: list[str], cwd: Path, env: dict | None = None):
        self.process = subprocess.Popen([*AVENGERS, *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True, env={**os.environ, **(env or {})})
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def wait_for(self, needle: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no {needle!r} line within {timeout}s") from None
            if line is None:
                raise AssertionError(f"exited ({self.process.wait()}) before {needle!r}: {self.process.stderr.read()}")
            if needle in line:
                return line

    def terminate(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=120)
        finally:
            if self.process.poll() is None:
                self.process.kill()


def test_serve_model_pool_with_a_relative_labels_path_outside_the_repository(replay_pool, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    server = Running(["serve", "model-pool", "--config", str(replay_pool), "--port", "0", "--host", "127.0.0.1"],
                     elsewhere)
    try:
        line = server.wait_for("serving on", 120)
        assert line.startswith("avengers model-pool serving on 127.0.0.1:")
    finally:
        assert server.terminate() == 0


def test_serve_http_prints_its_url(tmp_path):
    server = Running(["serve", "http", "--port", "0", "--host", "127.0.0.1"], tmp_path)
    try:
        line = server.wait_for("serving on", 120)
        url = line.split("(", 1)[1].rstrip(")")
        import httpx

        assert httpx.get(f"{url}/health", timeout=10).json() == {"status": "ok"}
    finally:
        assert server.terminate() == 0


async def test_health_list_answers_every_service_without_an_error_log(caplog):
    from avengers.config.voter_service import VoterServiceConfig
    from avengers.services.voter.server import start_voter_server

    server = await start_voter_server(VoterServiceConfig(), "127.0.0.1:0")
    try:
        with caplog.at_level(logging.ERROR):
            async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
                reply = await health_pb2_grpc.HealthStub(channel).List(health_pb2.HealthListRequest(), timeout=10)
        assert reply.statuses["avengers.v1.Voter"].status == health_pb2.HealthCheckResponse.SERVING
        assert "" in reply.statuses
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    finally:
        await server.stop(0)


def processes_with(marker: str) -> list[int]:
    """Pids of processes whose environment holds ``marker`` (every process a command started inherits it)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if marker.encode() in (proc / "environ").read_bytes():
                found.append(int(proc.name))
        except OSError:
            continue
    return found


@pytest.mark.slow
def test_pool_run_stops_the_ray_processes_it_started_on_sigterm(replay_pool, tmp_path):
    marker = f"AVENGERS_TEST_RUN={uuid.uuid4().hex}"
    name, value = marker.split("=")
    ports = [str(p) for p in free_ports(2)]
    small = replay_pool.parent / "small.yaml"  # fits a 2-CPU Ray instance: a quarter CPU per replica
    small.write_text(replay_pool.read_text() + "    resources: {num_cpus: 0.25}\ningress: {num_cpus: 0.1}\n")
    run = Running(["pool", "run", "--config", str(small), "--port", ports[0], "--http-port", ports[1],
                   "--no-dashboard", "--num-cpus", "2"], tmp_path, env={name: value, "RAY_USAGE_STATS_ENABLED": "0"})
    try:
        line = run.wait_for("on Ray Serve", 300)
        assert f"gRPC port {ports[0]}, HTTP port {ports[1]}" in line
        assert len(processes_with(marker)) > 1  # the driver and the Ray processes it started
    finally:
        code = run.terminate()
    assert code == 0
    deadline = time.monotonic() + 60
    while processes_with(marker) and time.monotonic() < deadline:  # bounded wait for the processes to exit
        time.sleep(1)
    left = processes_with(marker)
    assert not left, [Path(f"/proc/{pid}/cmdline").read_bytes()[:120] for pid in left]


def free_ports(count: int) -> list[int]:
    import socket

    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


async def test_with_auth_on_reflection_works_with_the_token_as_helm_md_says(monkeypatch):
    """HELM.md's health check with auth on: grpcurl finds Health by reflection, which needs the token."""
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    from avengers.config.voter_service import VoterServiceConfig
    from avengers.services.voter.server import start_voter_server

    monkeypatch.setenv("AVENGERS_TEST_REFLECTION_TOKEN", "t0ken")
    config = VoterServiceConfig.model_validate({"server": {"auth_token_env": "AVENGERS_TEST_REFLECTION_TOKEN"}})
    server = await start_voter_server(config, "127.0.0.1:0")
    request = reflection_pb2.ServerReflectionRequest(list_services="")

    async def services(metadata=None) -> list[str]:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = reflection_pb2_grpc.ServerReflectionStub(channel)
            replies = [r async for r in stub.ServerReflectionInfo(iter([request]), metadata=metadata, timeout=10)]
        return [s.name for s in replies[0].list_services_response.service]

    try:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await services()
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "grpc.health.v1.Health" in await services((("authorization", "Bearer t0ken"),))
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:  # the probe's own call
            reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        await server.stop(0)


def test_readme_names_only_files_that_exist():
    import re

    readme = (ROOT / "README.md").read_text()
    for path in set(re.findall(r"\b(?:examples|docs|helm|scripts)/[\w./-]+\w", readme)):
        assert (ROOT / path).exists(), path
    assert "--pool pool.yaml" not in readme  # a file that does not exist; POOL.yaml is named by example
