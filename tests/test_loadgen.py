"""The load generator against real services over real gRPC: counts, errors by status, queries, the CLI."""

from __future__ import annotations

import asyncio
import json
import sys

import pydantic
import pytest

from avengers.config.embedder_service import EmbedderServiceConfig
from avengers.config.embedding import EmbeddingConfig
from avengers.config.gateway_service import GatewayServiceConfig
from avengers.config.loadgen import LoadConfig
from avengers.config.router_service import RouterServiceConfig
from avengers.config.server import ServerConfig
from avengers.config.store import StoreConfig
from avengers.core.embedding import create_embedder
from avengers.loadgen import Query, generated_queries, read_queries, run_load
from avengers.services.embedder.server import start_embedder_server
from avengers.services.gateway.server import start_gateway_server
from avengers.services.router.server import start_router_server

NOWHERE = "127.0.0.1:1"
LOOPBACK = ServerConfig(host="127.0.0.1", port=0)


@pytest.fixture
async def embedder():
    hashing = create_embedder(EmbeddingConfig(backend="hashing", dimension=32))
    server = await start_embedder_server(EmbedderServiceConfig(server=LOOPBACK), embedder=hashing)
    yield f"127.0.0.1:{server.port}"
    await server.stop(0)


async def test_a_request_count_run_sends_exactly_that_many(embedder):
    config = LoadConfig(
        target="embed", address=embedder, concurrency=8, duration_seconds=None, requests=50, warmup_seconds=0.2
    )
    result = await run_load(config, generated_queries(20))
    assert (result.requests, result.ok, result.errors) == (50, 50, {})
    lat = result.latency_ms
    assert 0 < lat.p50 <= lat.p90 <= lat.p99 <= lat.max
    assert result.qps > 0
    assert result.to_dict()["qps"] == result.qps
    assert "50 ok, 0 failed" in result.summary()


async def test_a_timed_run_ends_by_itself_and_counts_every_request(embedder):
    config = LoadConfig(target="embed", address=embedder, concurrency=4, duration_seconds=0.5, warmup_seconds=0)
    result = await run_load(config, [Query("only one query, cycled")])
    assert result.requests == result.ok > 0
    assert result.elapsed_seconds > 0


async def test_failures_are_counted_by_status_with_an_example(tmp_path, embedder):
    # A router with no router published answers UNAVAILABLE; bad queries (whitespace) INVALID_ARGUMENT.
    router = await start_router_server(
        RouterServiceConfig(
            server=LOOPBACK, store=StoreConfig(qdrant_path=str(tmp_path / "q")), embedder_address=embedder
        )
    )
    try:
        config = LoadConfig(
            target="route", address=f"127.0.0.1:{router.port}", concurrency=3, duration_seconds=None,
            requests=12, warmup_seconds=0,
        )  # fmt: skip
        result = await run_load(config, generated_queries(5))
    finally:
        await router.stop(0)
    assert (result.requests, result.ok) == (12, 0)
    assert result.errors == {"UNAVAILABLE": 12}
    assert "no router" in result.error_examples["UNAVAILABLE"]
    assert result.latency_ms.p50 == 0.0
    assert "UNAVAILABLE" in result.summary()


async def test_ask_against_a_gateway_whose_dependencies_are_down_is_all_unavailable():
    config = GatewayServiceConfig.model_validate(
        {
            "server": {"host": "127.0.0.1", "port": 0},
            "downstream": {"embedder": NOWHERE, "router": NOWHERE, "voter": NOWHERE, "model_pool": NOWHERE},
            "redis": {"url": None},
        }
    )
    gateway = await start_gateway_server(config)
    try:
        load = LoadConfig(
            target="ask", address=f"127.0.0.1:{gateway.port}", concurrency=2, duration_seconds=None, requests=6,
            warmup_seconds=0, timeout_seconds=10,
        )  # fmt: skip
        result = await run_load(load, [Query("What is 2 plus 2?", "task-1")])
    finally:
        await gateway.stop(0)
    assert result.requests == 6 and result.ok == 0
    assert set(result.errors) == {"UNAVAILABLE"}
    assert "router" in result.error_examples["UNAVAILABLE"]


async def test_nothing_listening_is_unavailable_not_a_crash():
    config = LoadConfig(target="embed", address=NOWHERE, concurrency=2, duration_seconds=None, requests=4,
                        warmup_seconds=0, timeout_seconds=5)  # fmt: skip
    result = await run_load(config, generated_queries(3))
    assert result.errors == {"UNAVAILABLE": 4}


def test_queries_from_a_labels_file_or_text_lines(tmp_path):
    labels = tmp_path / "labels.jsonl"
    labels.write_text(
        json.dumps({"id": "gsm-1", "query": "What is 6*7?", "scores": {}}) + "\n\n"
        + json.dumps({"id": 7, "query": "Pick A or B."}) + "\n"
    )  # fmt: skip
    assert read_queries(labels) == [Query("What is 6*7?", "gsm-1"), Query("Pick A or B.", "7")]
    text = tmp_path / "queries.txt"
    text.write_text("first question\n  second question  \n\n")
    assert read_queries(text) == [Query("first question"), Query("second question")]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"query": "ok"}\n{"id": 1}\n')
    with pytest.raises(ValueError, match="bad.jsonl:2: a JSON line needs a non-empty string 'query'"):
        read_queries(bad)
    bad.write_text('{"query": \n')
    with pytest.raises(ValueError, match="bad.jsonl:1: not valid JSON"):
        read_queries(bad)
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(ValueError, match="no queries"):
        read_queries(tmp_path / "empty.txt")
    assert len({q.text for q in generated_queries(100)}) > 90


def test_a_load_test_must_end():
    with pytest.raises(pydantic.ValidationError, match="needs duration_seconds or requests"):
        LoadConfig(duration_seconds=None, requests=None)


async def run_cli(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "avengers", "bench", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), timeout=120)
    return process.returncode, out.decode(), err.decode()


async def test_cli_prints_the_summary_and_writes_json(embedder, tmp_path):
    queries = tmp_path / "q.txt"
    queries.write_text("alpha\nbeta\ngamma\n")
    out = tmp_path / "result.json"
    code, stdout, stderr = await run_cli(
        "--target", "embed", "--addr", embedder, "-c", "4", "--requests", "30", "--warmup", "0",
        "--queries", str(queries), "--json", str(out), "--max-errors", "0",
    )  # fmt: skip
    assert code == 0, stderr
    assert "30 ok, 0 failed" in stdout and "throughput" in stdout and "p99" in stdout
    report = json.loads(out.read_text())
    assert report["config"]["target"] == "embed" and report["config"]["concurrency"] == 4
    assert report["result"]["ok"] == 30 and report["result"]["qps"] > 0


async def test_cli_exits_1_past_max_errors_and_2_on_bad_options(tmp_path):
    code, stdout, _ = await run_cli("--target", "embed", "--addr", NOWHERE, "--requests", "3", "--warmup", "0",
                                    "--timeout", "5", "--max-errors", "0")  # fmt: skip
    assert code == 1 and "UNAVAILABLE" in stdout
    code, _, stderr = await run_cli("--target", "embed", "--concurrency", "0", "--requests", "3")
    assert code == 2 and "concurrency" in stderr
    code, _, stderr = await run_cli("--target", "embed", "--requests", "3", "--queries", str(tmp_path / "none.txt"))
    assert code == 2 and "queries file not found" in stderr
