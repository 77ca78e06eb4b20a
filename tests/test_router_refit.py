"""A refit published while clients keep routing: no failed request, one version per answer, then only the new one.

The new version is published by the real command (`avengers publish`, another process) into the embedded
Qdrant directory the running router polls, as an operator would do.
"""

from __future__ import annotations

import asyncio
import sys

import grpc
from routing_data import fit_test_router, make_labels

from avengers.config.embedding import EmbeddingConfig
from avengers.config.router_service import RouterServiceConfig
from avengers.config.store import StoreConfig
from avengers.core.embedding import create_embedder
from avengers.services.router.server import start_router_server
from avengers.stores import create_store
from avengers.v1 import common_pb2, router_pb2, router_pb2_grpc

CLIENTS = 6
MAX_CALLS_PER_CLIENT = 5000  # bounds the test whatever happens
CALLS_AFTER_SWITCH = 300


async def run_clients(port: int, queries: list[str], stop: asyncio.Event, switched: asyncio.Event):
    """Route until ``stop``; returns per client the (started after the switch, version) of each answer,
    and every failure."""
    answers: list[list[tuple[bool, str]]] = [[] for _ in range(CLIENTS)]
    failures: list[str] = []

    async def client(i: int) -> None:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = router_pb2_grpc.RouterStub(channel)
            for n in range(MAX_CALLS_PER_CLIENT):
                if stop.is_set():
                    return
                after = switched.is_set()
                query = queries[(i * 7 + n) % len(queries)]
                try:
                    if n % 3 == 0:  # a third by embedding, the rest by text
                        request = router_pb2.RouteRequest(embedding=common_pb2.Vector(values=[1.0] * 64), top_n=2)
                    else:
                        request = router_pb2.RouteRequest(query=query, top_n=2)
                    response = await stub.Route(request, timeout=30)
                    answers[i].append((after, response.router_version))
                except grpc.aio.AioRpcError as exc:
                    failures.append(f"client {i} call {n}: {exc.code().name}: {exc.details()}")

    tasks = [asyncio.create_task(client(i)) for i in range(CLIENTS)]
    return tasks, answers, failures


async def wait_until(predicate, what: str, attempts: int = 600) -> None:
    for _ in range(attempts):  # bounded: about 60 s
        if predicate():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


async def test_refit_switches_atomically_under_load(tmp_path, monkeypatch):
    monkeypatch.delenv("AVENGERS_EMBEDDER_ADDR", raising=False)
    hashing = create_embedder(EmbeddingConfig(backend="hashing", dimension=64))
    store_config = StoreConfig(qdrant_path=str(tmp_path / "qdrant"))
    old = fit_test_router(hashing, k=3, seed=0)
    new = fit_test_router(hashing, k=5, seed=7, per_topic=20)
    assert old.version != new.version
    with create_store(store_config) as store:
        store.publish_and_activate(old)
    new.save(tmp_path / "refit")

    config = RouterServiceConfig(store=store_config, poll_interval_seconds=0.2)
    router = await start_router_server(config, "127.0.0.1:0")
    stop, switched = asyncio.Event(), asyncio.Event()
    tasks, answers, failures = await run_clients(router.port, make_labels(5, seed=9).queries, stop, switched)
    try:
        await wait_until(lambda: sum(map(len, answers)) >= 200, "traffic on the old version")

        publisher = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "avengers", "publish", "--router", str(tmp_path / "refit"),
            "--qdrant-path", str(tmp_path / "qdrant"),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await publisher.communicate()
        assert publisher.returncode == 0, err.decode()
        assert f"published and activated router {new.version}" in out.decode()

        await wait_until(lambda: router.snapshots.current.version == new.version, "the router to switch")
        switched.set()
        served_before = sum(map(len, answers))
        await wait_until(lambda: sum(map(len, answers)) >= served_before + CALLS_AFTER_SWITCH, "traffic after the switch")
    finally:
        stop.set()
        await asyncio.gather(*tasks)
        await router.stop(0)

    assert failures == []
    versions = [version for client in answers for _, version in client]
    assert set(versions) == {old.version, new.version}
    assert all(version == new.version for client in answers for after, version in client if after)
    for client in answers:  # a client never goes back to the old version once it has seen the new one
        seen = [version for _, version in client]
        first_new = seen.index(new.version)
        assert set(seen[first_new:]) == {new.version}


async def test_on_demand_reload_through_several_refits(tmp_path, monkeypatch):
    monkeypatch.delenv("AVENGERS_EMBEDDER_ADDR", raising=False)
    hashing = create_embedder(EmbeddingConfig(backend="hashing", dimension=64))
    store_config = StoreConfig(qdrant_path=str(tmp_path / "qdrant"))
    fits = [fit_test_router(hashing, k=k, seed=k) for k in (2, 3, 4, 5)]
    with create_store(store_config) as store:
        store.publish_and_activate(fits[0])
    router = await start_router_server(RouterServiceConfig(store=store_config, poll_interval_seconds=0), "127.0.0.1:0")
    stop, switched = asyncio.Event(), asyncio.Event()
    tasks, answers, failures = await run_clients(router.port, make_labels(3).queries, stop, switched)
    try:
        for artifact in fits[1:]:
            before = sum(map(len, answers))
            await wait_until(lambda before=before: sum(map(len, answers)) >= before + 50, "traffic")
            with create_store(store_config) as store:
                await asyncio.to_thread(store.publish_and_activate, artifact)
            result = await router.reload()
            assert result.changed and result.version == artifact.version and result.error is None
    finally:
        stop.set()
        await asyncio.gather(*tasks)
        await router.stop(0)
    assert failures == []
    order = [a.version for a in fits]
    for client in answers:  # versions only move forward
        indices = [order.index(version) for _, version in client]
        assert indices == sorted(indices)
    assert {version for client in answers for _, version in client} <= set(order)
