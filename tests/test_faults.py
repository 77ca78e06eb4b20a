"""Faults under load, on the real services over loopback gRPC: every request ends with an answer or a clear
status (never a hang, never INTERNAL), and the system recovers once the fault is gone.

- a model replica dies: the gateway falls back to the next model, no Ask fails;
- the model pool process is killed: Asks end UNAVAILABLE naming it, then recover when it is back;
- Redis stops: Ask keeps answering (without cache and feedback), and uses the cache again once Redis is back;
- the Qdrant store becomes unavailable: the router keeps serving its last snapshot;
- the embedder restarts: routes during the restart end UNAVAILABLE naming the Embedder, then recover.

Loads are bounded (a few seconds, a few clients) and go to 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import random
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY
from qdrant_client import QdrantClient
from redis_server import RedisServer

from avengers.config.clustering import ClusteringConfig
from avengers.config.embedder_service import EmbedderServiceConfig
from avengers.config.embedding import EmbeddingConfig
from avengers.config.gateway_service import GatewayServiceConfig
from avengers.config.loadgen import LoadConfig
from avengers.config.model_pool import ModelPoolConfig
from avengers.config.router_service import RouterServiceConfig
from avengers.config.store import StoreConfig
from avengers.config.voter_service import VoterServiceConfig
from avengers.core.embedding import create_embedder
from avengers.core.fit import fit_router_on_embeddings
from avengers.core.labels import read_labels
from avengers.loadgen import LoadResult, Query, run_load
from avengers.services.embedder.server import start_embedder_server
from avengers.services.gateway.server import start_gateway_server
from avengers.services.model_pool.server import start_model_pool_server
from avengers.services.router.server import start_router_server
from avengers.services.voter.server import start_voter_server
from avengers.stores import create_store
from avengers.v1 import gateway_pb2, gateway_pb2_grpc, router_pb2, router_pb2_grpc
from conftest import free_port, write_jsonl

pytestmark = pytest.mark.asyncio(loop_scope="module")

HASHING = EmbeddingConfig(backend="hashing", dimension=256)
REPLICA, BACKUP = "replica-7b", "backup-7b"
LOOPBACK = {"host": "127.0.0.1", "port": 0}
LOAD_SECONDS = 3.0
FAULT_AFTER = 1.0
RECOVERY_SECONDS = 45.0


class FakeReplica:
    """An OpenAI-compatible chat server on a fixed loopback port, standing for one model replica (a vLLM
    server): answers every request with n copies of one answer; :meth:`kill` drops it and its connections."""

    def __init__(self, answer: str = "The answer is \\boxed{7}."):
        self.port = free_port()
        self.answer = answer
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()
        self.requests = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def kill(self) -> None:
        """Like a crashed process: the port closes and open connections are reset."""
        assert self.server is not None
        self.server.close()
        for writer in list(self.writers):
            writer.transport.abort()
        self.writers.clear()
        self.server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    (int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")),
                    0,
                )  # fmt: skip
                request = json.loads(await reader.readexactly(length)) if length else {}
                self.requests += 1
                n = int(request.get("n") or 1)
                body = json.dumps({
                    "choices": [{"index": i, "message": {"role": "assistant", "content": self.answer},
                                 "finish_reason": "stop"} for i in range(n)],
                    "usage": {"prompt_tokens": 10, "completion_tokens": 5 * n},
                }).encode()  # fmt: skip
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    + f"Content-Length: {len(body)}\r\n\r\n".encode() + body
                )  # fmt: skip
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.writers.discard(writer)
            writer.close()


class Stack:
    """Embedder, router, voter and model pool in this process; the gateway per test."""

    def __init__(self, root: Path, queries: list[Query], replica: FakeReplica):
        self.root = root
        self.queries = queries
        self.replica = replica
        self.servers: dict = {}
        self.store_config = StoreConfig(qdrant_path=str(root / "qdrant"), embedded_lock_wait_seconds=0.2)
        self.pool_config = ModelPoolConfig.model_validate({
            "server": LOOPBACK,
            "models": [
                {"name": REPLICA, "backend": "openai",
                 "openai": {"base_url": replica.base_url, "connect_timeout_s": 1.0, "timeout_s": 10.0}},
                {"name": BACKUP, "backend": "replay", "replay": {"labels_path": str(root / "pool.jsonl")}},
            ],
        })  # fmt: skip

    def address(self, name: str) -> str:
        return f"127.0.0.1:{self.servers[name].port}"

    def gateway_config(self, **overrides) -> GatewayServiceConfig:
        downstream = {name: self.address(name) for name in ("embedder", "router", "voter", "model_pool")}
        downstream.update(overrides.pop("downstream", {}))
        return GatewayServiceConfig.model_validate({
            "server": LOOPBACK, "downstream": downstream, "redis": {"url": None},
            "timeouts": {"generate_seconds": 10.0}, **overrides,
        })  # fmt: skip


@pytest.fixture(scope="module")
async def stack(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    rng = random.Random(3)
    rows = [
        {"id": f"sum-{i}", "dataset": "arith", "split": "test",
         "query": f"What is {rng.randint(10, 999)} plus {rng.randint(10, 999)}? Give the total."}
        for i in range(40)
    ]  # fmt: skip
    # The router ranks the replica first everywhere and the backup second; the backup is always right.
    write_jsonl(root / "routing.jsonl", [{**r, "scores": {REPLICA: 1.0, BACKUP: 0.8}} for r in rows])
    write_jsonl(root / "pool.jsonl", [{**r, "scores": {BACKUP: 1.0}} for r in rows])
    labels = read_labels(root / "routing.jsonl")
    embedder = create_embedder(HASHING)
    artifact = fit_router_on_embeddings(labels, embedder.encode(labels.queries), embedder.name, ClusteringConfig(k=2, n_init=2))
    replica = FakeReplica()
    await replica.start()
    stack = Stack(root, [Query(r["query"], r["id"]) for r in rows], replica)
    with create_store(stack.store_config) as store:
        store.publish_and_activate(artifact)
    servers = stack.servers
    try:
        servers["embedder"] = await start_embedder_server(EmbedderServiceConfig(server=LOOPBACK, embedding=HASHING))
        servers["router"] = await start_router_server(RouterServiceConfig(
            server=LOOPBACK, store=stack.store_config, embedder_address=stack.address("embedder"), poll_interval_seconds=0.2,
        ))  # fmt: skip
        servers["voter"] = await start_voter_server(
            VoterServiceConfig(server=LOOPBACK, embedder_address=stack.address("embedder"))
        )
        servers["model_pool"] = await start_model_pool_server(stack.pool_config)
        yield stack
    finally:
        for name, server in reversed(list(servers.items())):
            try:
                await asyncio.wait_for(server.stop(0), 30)
            except TimeoutError:
                print(f"stopping the {name} took over 30 s:\n{task_stacks()}")
        if replica.server is not None:
            await replica.kill()


async def under_load(config: LoadConfig, queries: list[Query], *faults: tuple[float, Callable[[], Awaitable]]) -> LoadResult:
    """Run the load and, meanwhile, each fault at its time (seconds after the start)."""

    async def inject(at: float, fault: Callable[[], Awaitable]) -> None:
        await asyncio.sleep(at)
        await fault()

    try:
        async with asyncio.timeout(60):  # the load lasts seconds; a hang must fail, and say where
            result, *_ = await asyncio.gather(run_load(config, queries), *(inject(at, fault) for at, fault in faults))
    except TimeoutError:
        pytest.fail(f"the load did not end (a call or a fault hung):\n{task_stacks()}")
    return result


def task_stacks() -> str:
    out = io.StringIO()
    for task in asyncio.all_tasks():
        task.print_stack(limit=8, file=out)
    return out.getvalue()


def load(target: str, address: str, **extra) -> LoadConfig:
    settings = {"concurrency": 6, "duration_seconds": LOAD_SECONDS, "warmup_seconds": 0, "timeout_seconds": 15, "n": 3}
    return LoadConfig(target=target, address=address, **{**settings, **extra})


def assert_accounted(result: LoadResult, allowed: set[str]) -> None:
    """Every request ended OK or with an allowed status that says why; none hung past its deadline."""
    assert result.requests == result.ok + sum(result.errors.values()) > 0
    assert set(result.errors) <= allowed, result.error_examples
    for code, message in result.error_examples.items():
        assert message.strip(), f"{code} without a message"


def server_counts(method: str) -> dict[str, float]:
    service, name = method.lstrip("/").split("/")
    counts = {}
    for metric in REGISTRY.collect():
        for s in metric.samples:
            if s.name == "avengers_grpc_requests_total" and s.labels["service"] == service and s.labels["method"] == name:
                counts[s.labels["code"]] = s.value
    return counts


def delta(after: dict[str, float], before: dict[str, float]) -> dict[str, int]:
    return {code: int(after[code] - before.get(code, 0)) for code in after if after[code] - before.get(code, 0)}


async def served_since(method: str, before: dict[str, float], sent: int) -> dict[str, int]:
    """Calls of ``method`` the server counted since ``before``, once it has counted all ``sent`` of them: the
    server records a call after its response is on the wire, so the last few may still be uncounted when the
    client has already read them."""

    with contextlib.suppress(TimeoutError):  # not all counted in time: the caller's comparison shows the gap
        async with asyncio.timeout(10):
            while sum(delta(server_counts(method), before).values()) < sent:
                await asyncio.sleep(0.05)
    return delta(server_counts(method), before)


async def eventually(probe: Callable[[], Awaitable[bool]], seconds: float = RECOVERY_SECONDS) -> None:
    """Wait until ``probe()`` is true (the system recovered), at most ``seconds``."""
    try:
        async with asyncio.timeout(seconds):
            while not await probe():
                await asyncio.sleep(0.2)
    except TimeoutError:
        pytest.fail(f"no recovery within {seconds:g} s:\n{task_stacks()}")


class Gateway:
    def __init__(self, server):
        self.server = server
        self.address = f"127.0.0.1:{server.port}"
        self.channel = grpc.aio.insecure_channel(self.address)
        self.stub = gateway_pb2_grpc.GatewayStub(self.channel)

    async def ask(self, query: Query, **fields) -> gateway_pb2.AskResponse:
        return await self.stub.Ask(gateway_pb2.AskRequest(query=query.text, task_id=query.task_id, **fields), timeout=15)

    async def answers(self, query: Query, **fields) -> gateway_pb2.AskResponse | None:
        try:
            return await self.ask(query, **fields)
        except grpc.aio.AioRpcError:
            return None

    async def close(self) -> None:
        await self.channel.close()
        await self.server.stop(0)


async def open_gateway(config: GatewayServiceConfig) -> Gateway:
    return Gateway(await start_gateway_server(config))


# ------------------------------------------------------------------------------------------------ model pool


async def test_a_dying_model_replica_is_replaced_by_the_next_model_and_no_ask_fails(stack):
    gateway = await open_gateway(stack.gateway_config())
    try:
        first = await gateway.ask(stack.queries[0], no_cache=True)
        assert list(first.models) == [REPLICA] and not first.failed_models
        before = server_counts("/avengers.v1.Gateway/Ask")
        result = await under_load(load("ask", gateway.address), stack.queries, (FAULT_AFTER, stack.replica.kill))
        served = await served_since("/avengers.v1.Gateway/Ask", before, result.ok + sum(result.errors.values()))
        assert_accounted(result, allowed=set())  # in flight or after the crash: every Ask answered
        assert served == {"OK": result.requests}  # the gateway saw exactly the requests the clients sent
        fallback = await gateway.ask(stack.queries[1], no_cache=True)
        assert list(fallback.models) == [BACKUP] and list(fallback.failed_models) == [REPLICA]

        await stack.replica.start()  # the replica is back: routed to it again
        await eventually(lambda: _served_by(gateway, stack.queries[2], REPLICA))
    finally:
        await gateway.close()


async def _served_by(gateway: Gateway, query: Query, model: str) -> bool:
    response = await gateway.answers(query, no_cache=True)
    return response is not None and list(response.models) == [model]


async def _start_pool_process(config: ModelPoolConfig, port: int, root: Path) -> asyncio.subprocess.Process:
    config_file = root / "pool.yaml"
    config_file.write_text(yaml.safe_dump(config.to_dict()))
    script = (
        "import asyncio, sys\n"
        "from avengers.config.model_pool import ModelPoolConfig\n"
        "from avengers.services.model_pool.server import serve_model_pool\n"
        "asyncio.run(serve_model_pool(ModelPoolConfig.from_yaml(sys.argv[1]), sys.argv[2]))\n"
    )
    with (root / "pool.log").open("ab") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", script, str(config_file), f"127.0.0.1:{port}",
            stdout=asyncio.subprocess.DEVNULL, stderr=log,
        )  # fmt: skip

    async def serving() -> bool:
        assert process.returncode is None, (root / "pool.log").read_text()[-2000:]
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                response = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
                return response.status == health_pb2.HealthCheckResponse.SERVING
        except grpc.aio.AioRpcError:
            return False

    await eventually(serving, 120)
    return process


async def test_killing_the_model_pool_ends_asks_unavailable_then_they_recover(stack):
    port = free_port()
    pool = await _start_pool_process(stack.pool_config, port, stack.root)
    gateway = await open_gateway(stack.gateway_config(downstream={"model_pool": f"127.0.0.1:{port}"}))
    try:
        assert (await gateway.ask(stack.queries[0], no_cache=True)).answer

        async def kill() -> None:
            pool.kill()  # SIGKILL: no graceful stop
            await pool.wait()

        before = server_counts("/avengers.v1.Gateway/Ask")
        result = await under_load(load("ask", gateway.address), stack.queries, (FAULT_AFTER, kill))
        served = await served_since("/avengers.v1.Gateway/Ask", before, result.ok + sum(result.errors.values()))
        assert_accounted(result, allowed={"UNAVAILABLE"})
        assert result.ok > 0 and result.errors.get("UNAVAILABLE", 0) > 0
        assert "from model pool at" in result.error_examples["UNAVAILABLE"]
        assert served == {"OK": result.ok, "UNAVAILABLE": result.errors["UNAVAILABLE"]}

        pool = await _start_pool_process(stack.pool_config, port, stack.root)
        await eventually(lambda: _answered(gateway, stack.queries[3]))
    finally:
        await gateway.close()
        if pool.returncode is None:
            pool.terminate()
            await asyncio.wait_for(pool.wait(), 30)


async def _answered(gateway: Gateway, query: Query) -> bool:
    return await gateway.answers(query, no_cache=True) is not None


# ----------------------------------------------------------------------------------------------------- Redis


async def test_redis_stopping_under_load_does_not_stop_ask_and_the_cache_returns(stack):
    redis = RedisServer().start()
    config = stack.gateway_config(redis={"url": redis.url, "backoff_seconds": 0.5, "key_prefix": "faults:"})
    gateway = await open_gateway(config)
    try:
        warm = await gateway.ask(stack.queries[5])
        assert (await gateway.ask(stack.queries[5])).cached and not warm.cached

        async def stop_redis() -> None:
            await asyncio.to_thread(redis.stop)

        result = await under_load(load("ask", gateway.address, no_cache=False), stack.queries, (FAULT_AFTER, stop_redis))
        assert_accounted(result, allowed=set())
        assert not (await gateway.ask(stack.queries[6])).cached  # answered without the cache

        redis.start()  # same port: the gateway reconnects after its backoff and caches again

        async def cached_again() -> bool:
            await gateway.answers(stack.queries[7])
            response = await gateway.answers(stack.queries[7])
            return response is not None and response.cached

        await eventually(cached_again)
    finally:
        await gateway.close()
        redis.stop()


# ---------------------------------------------------------------------------------------------------- Qdrant


def sample(name: str) -> float | None:
    return REGISTRY.get_sample_value(name)


async def test_router_keeps_serving_its_last_snapshot_while_qdrant_is_unavailable(stack):
    router = stack.servers["router"]
    version = router.snapshots.current.version
    holder: list[QdrantClient] = []

    async def take_the_store_away() -> None:  # another process holds the embedded store: every check fails
        async with asyncio.timeout(10):
            while not holder:  # the router's poll may hold the directory for a moment
                try:
                    holder.append(await asyncio.to_thread(QdrantClient, path=stack.store_config.qdrant_path))
                except RuntimeError:
                    await asyncio.sleep(0.05)

    gateway = await open_gateway(stack.gateway_config())
    try:
        route_load = under_load(load("route", stack.address("router")), stack.queries, (0.5, take_the_store_away))
        ask_load = run_load(load("ask", gateway.address), stack.queries)
        routes, asks = await asyncio.gather(route_load, ask_load)
        assert_accounted(routes, allowed=set())
        assert_accounted(asks, allowed=set())
        await asyncio.sleep(0.5)  # at least one more poll with the store gone
        assert "held by another process" in (router.snapshots.last_error or "")
        assert sample("avengers_router_store_up") == 0
        assert router.snapshots.current.version == version
        async with grpc.aio.insecure_channel(stack.address("router")) as channel:
            response = await router_pb2_grpc.RouterStub(channel).Route(
                router_pb2.RouteRequest(query=stack.queries[0].text), timeout=10
            )
            assert response.router_version == version
    finally:
        await gateway.close()
        for client in holder:
            client.close()

    async def store_back() -> bool:
        return (await router.reload()).error is None

    await eventually(store_back)
    assert sample("avengers_router_store_up") == 1


# -------------------------------------------------------------------------------------------------- embedder


async def test_routes_during_an_embedder_restart_end_unavailable_then_recover(stack):
    port = stack.servers["embedder"].port

    async def stop() -> None:
        await stack.servers["embedder"].stop(0)

    async def start_again() -> None:
        stack.servers["embedder"] = await start_embedder_server(
            EmbedderServiceConfig(server=LOOPBACK, embedding=HASHING), f"127.0.0.1:{port}"
        )

    result = await under_load(
        load("route", stack.address("router"), duration_seconds=4.0), stack.queries, (FAULT_AFTER, stop), (2.0, start_again)
    )
    assert_accounted(result, allowed={"UNAVAILABLE"})
    assert result.ok > 0 and result.errors.get("UNAVAILABLE", 0) > 0
    assert "Embedder service" in result.error_examples["UNAVAILABLE"]

    async def routes() -> bool:
        async with grpc.aio.insecure_channel(stack.address("router")) as channel:
            try:
                await router_pb2_grpc.RouterStub(channel).Route(
                    router_pb2.RouteRequest(query=stack.queries[1].text), timeout=5
                )
                return True
            except grpc.aio.AioRpcError:
                return False

    await eventually(routes)
