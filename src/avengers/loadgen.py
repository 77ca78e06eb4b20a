"""Closed-loop gRPC load generator over grpc.aio: N clients, each sending its next request when the last ended.

    result = await run_load(LoadConfig(target="route", address="127.0.0.1:50052", concurrency=64), queries)
    print(result.summary())

Targets (:data:`TARGETS`, one class each behind :class:`LoadTarget`): ``embed`` (Embedder.Embed of one
text), ``route`` (Router.Route by query text, i.e. embed + route), ``ask`` (Gateway.Ask end to end; the
query's task id goes along so replay model pools answer from their recording).

Queries cycle through the list given (:func:`read_queries` reads a labels file or plain text lines;
:func:`generated_queries` makes varied ones). A warm-up phase runs first and is not measured. Every request
of the measured phase ends up counted: as OK with its latency, or under its status code.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from avengers.config.loadgen import LOAD_TARGETS, LoadConfig
from avengers.rpc.security import open_channel
from avengers.v1 import (
    common_pb2,
    embedder_pb2,
    embedder_pb2_grpc,
    gateway_pb2,
    gateway_pb2_grpc,
    router_pb2,
    router_pb2_grpc,
)

Metadata = Sequence[tuple[str, str]]


@dataclass(frozen=True)
class Query:
    text: str
    task_id: str = ""
    """Id from a labels file (replay backends answer by it); empty for plain text."""


def read_queries(path: str | Path) -> list[Query]:
    """Queries of a labels file (JSON lines with "query", and "id" kept as task id) or of plain text lines."""
    queries = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        if line.startswith("{"):
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{number}: not valid JSON: {exc.msg}") from None
            if not isinstance(row, dict) or not isinstance(row.get("query"), str) or not row["query"].strip():
                raise ValueError(f"{path}:{number}: a JSON line needs a non-empty string 'query'")
            queries.append(Query(row["query"], str(row.get("id", ""))))
        else:
            queries.append(Query(line))
    if not queries:
        raise ValueError(f"{path}: no queries")
    return queries


_TEMPLATES = (
    "What is {a} plus {b}? Give only the number.",
    "A train travels {a} km in {b} hours. What is its average speed?",
    "Write a Python function that returns the {a}th prime number.",
    "Which of these is a mammal? A) shark B) dolphin C) trout D) octopus (variant {a})",
    "Explain in one sentence why the sky is blue, for a {a}-year-old.",
    "Translate 'good morning number {a}' into French.",
    "Who wrote the novel that was published in {y} about a whale?",
    "Solve for x: {a}x + {b} = {c}.",
)


def generated_queries(count: int = 512, seed: int = 0) -> list[Query]:
    """``count`` different queries over several topics (math, code, choice, facts), reproducible by ``seed``."""
    rng = random.Random(seed)
    return [
        Query(
            rng.choice(_TEMPLATES).format(
                a=rng.randint(2, 999), b=rng.randint(2, 99), c=rng.randint(100, 9999), y=rng.randint(1800, 1950)
            )
        )
        for _ in range(count)
    ]


class LoadTarget(ABC):
    """One kind of request to send."""

    name: str
    service: str

    def __init__(self, channel: grpc.aio.Channel, config: LoadConfig):
        self.config = config

    @abstractmethod
    async def call(self, query: Query, timeout: float, metadata: Metadata | None) -> Any:
        """Send one request; raises AioRpcError on a non-OK status."""


TARGETS = LOAD_TARGETS


def register_target(cls: type[LoadTarget]) -> type[LoadTarget]:
    """Class decorator: the target named by the class's ``name``."""
    return TARGETS.register(cls.name)(cls)


@register_target
class EmbedTarget(LoadTarget):
    name, service = "embed", "avengers.v1.Embedder"

    def __init__(self, channel: grpc.aio.Channel, config: LoadConfig):
        super().__init__(channel, config)
        self.stub = embedder_pb2_grpc.EmbedderStub(channel)

    async def call(self, query: Query, timeout: float, metadata: Metadata | None) -> Any:
        return await self.stub.Embed(embedder_pb2.EmbedRequest(texts=[query.text]), timeout=timeout, metadata=metadata)


@register_target
class RouteTarget(LoadTarget):
    name, service = "route", "avengers.v1.Router"

    def __init__(self, channel: grpc.aio.Channel, config: LoadConfig):
        super().__init__(channel, config)
        self.stub = router_pb2_grpc.RouterStub(channel)

    async def call(self, query: Query, timeout: float, metadata: Metadata | None) -> Any:
        request = router_pb2.RouteRequest(query=query.text, top_n=self.config.top_n)
        return await self.stub.Route(request, timeout=timeout, metadata=metadata)


@register_target
class AskTarget(LoadTarget):
    name, service = "ask", "avengers.v1.Gateway"

    def __init__(self, channel: grpc.aio.Channel, config: LoadConfig):
        super().__init__(channel, config)
        self.stub = gateway_pb2_grpc.GatewayStub(channel)
        self.sampling = common_pb2.SamplingParams(n=config.n, max_tokens=config.max_tokens)

    async def call(self, query: Query, timeout: float, metadata: Metadata | None) -> Any:
        request = gateway_pb2.AskRequest(
            query=query.text, task_id=query.task_id, sampling=self.sampling, no_cache=self.config.no_cache
        )
        return await self.stub.Ask(request, timeout=timeout, metadata=metadata)


def create_target(channel: grpc.aio.Channel, config: LoadConfig) -> LoadTarget:
    return TARGETS.create(config.target, channel, config)


@dataclass
class LatencySummary:
    """Milliseconds, over the successful requests."""

    p50: float = 0.0
    p90: float = 0.0
    p99: float = 0.0
    max: float = 0.0
    mean: float = 0.0

    @classmethod
    def of(cls, seconds: Sequence[float]) -> LatencySummary:
        if not seconds:
            return cls()
        ms = np.asarray(seconds) * 1000.0
        p50, p90, p99 = np.percentile(ms, [50, 90, 99])
        return cls(float(p50), float(p90), float(p99), float(ms.max()), float(ms.mean()))


@dataclass
class LoadResult:
    target: str
    address: str
    concurrency: int
    elapsed_seconds: float
    """From the start of the measured phase to the end of its last request."""
    requests: int
    """Requests of the measured phase, all of them ended (OK or not)."""
    ok: int
    errors: dict[str, int] = field(default_factory=dict)
    """Status code name -> count."""
    error_examples: dict[str, str] = field(default_factory=dict)
    """Status code name -> the message of one such error."""
    latency_ms: LatencySummary = field(default_factory=LatencySummary)
    warmup_requests: int = 0

    @property
    def qps(self) -> float:
        """Successful requests per second."""
        return self.ok / self.elapsed_seconds if self.elapsed_seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "qps": self.qps}

    def summary(self) -> str:
        lat = self.latency_ms
        lines = [
            (
                f"{self.target} @ {self.address}: {self.concurrency} clients, {self.elapsed_seconds:.1f} s measured "
                f"({self.warmup_requests} warm-up requests not counted)"
            ),
            f"  requests    {self.requests} ({self.ok} ok, {self.requests - self.ok} failed)",
            f"  throughput  {self.qps:.1f} req/s",
            f"  latency ms  p50 {lat.p50:.2f}  p90 {lat.p90:.2f}  p99 {lat.p99:.2f}  max {lat.max:.2f}  mean {lat.mean:.2f}",
        ]
        for code, count in sorted(self.errors.items(), key=lambda kv: -kv[1]):
            lines.append(f"  {code:<22}{count}  e.g. {self.error_examples.get(code, '')[:160]}")
        return "\n".join(lines)


class _Run:
    """Shared state of the clients of one run."""

    def __init__(self, config: LoadConfig, queries: Sequence[Query], started: float):
        self.config = config
        self.queries = queries
        self.measure_from = started + config.warmup_seconds
        self.stop_at = self.measure_from + config.duration_seconds if config.duration_seconds else float("inf")
        self.next_query = 0
        self.claimed = 0
        self.warmup = 0
        self.latencies: list[float] = []
        self.errors: Counter[str] = Counter()
        self.examples: dict[str, str] = {}
        self.last_end = self.measure_from

    def next_request(self) -> tuple[Query, bool] | None:
        """The next query and whether it is measured; None once the run is over."""
        now = time.perf_counter()
        if now >= self.stop_at:
            return None
        measured = now >= self.measure_from
        if measured and self.config.requests is not None:
            if self.claimed >= self.config.requests:
                return None
            self.claimed += 1
        query = self.queries[self.next_query % len(self.queries)]
        self.next_query += 1
        return query, measured

    def record(self, measured: bool, seconds: float, code: grpc.StatusCode, details: str) -> None:
        if not measured:
            self.warmup += 1
            return
        self.last_end = max(self.last_end, time.perf_counter())
        if code == grpc.StatusCode.OK:
            self.latencies.append(seconds)
        else:
            self.errors[code.name] += 1
            self.examples.setdefault(code.name, details)


async def _client(run: _Run, target: LoadTarget, metadata: Metadata | None) -> None:
    timeout = run.config.timeout_seconds
    while (step := run.next_request()) is not None:
        query, measured = step
        started = time.perf_counter()
        try:
            await target.call(query, timeout, metadata)
            code, details = grpc.StatusCode.OK, ""
        except grpc.aio.AioRpcError as exc:
            code, details = exc.code(), exc.details() or ""
        except Exception as exc:  # noqa: BLE001 - a client-side failure is still an outcome to count
            code, details = grpc.StatusCode.UNKNOWN, f"client error: {type(exc).__name__}: {exc}"
        run.record(measured, time.perf_counter() - started, code, details)


async def run_load(
    config: LoadConfig,
    queries: Sequence[Query],
    *,
    channels: Sequence[grpc.aio.Channel] | None = None,
    metadata: Metadata | None = None,
) -> LoadResult:
    """Run the load test of ``config`` with ``queries`` (cycled). ``channels`` default to
    ``config.channels`` plaintext channels to ``config.address`` (opened and closed here)."""
    if not queries:
        raise ValueError("no queries to send")
    owned = [] if channels else [open_channel(config.address) for _ in range(config.channels)]
    channels = list(channels or owned)
    try:
        targets = [create_target(channel, config) for channel in channels]
        run = _Run(config, queries, time.perf_counter())
        await asyncio.gather(*(_client(run, targets[i % len(targets)], metadata) for i in range(config.concurrency)))
    finally:
        for channel in owned:
            await channel.close()
    ok = len(run.latencies)
    return LoadResult(
        target=config.target,
        address=config.address,
        concurrency=config.concurrency,
        elapsed_seconds=max(run.last_end - run.measure_from, 0.0),
        requests=ok + sum(run.errors.values()),
        ok=ok,
        errors=dict(run.errors),
        error_examples=run.examples,
        latency_ms=LatencySummary.of(run.latencies),
        warmup_requests=run.warmup,
    )
