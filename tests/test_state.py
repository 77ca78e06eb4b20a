"""The response cache and the feedback store: in process, and in a real redis-server (also when it dies)."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from redis_server import RedisServer

from avengers.config.state import CacheConfig, FeedbackConfig, RedisConfig
from avengers.state import (
    MemoryCache,
    MemoryFeedbackStore,
    RedisCache,
    RedisConnection,
    RedisFeedbackStore,
    RequestRecord,
    StateUnavailable,
    UnknownRequest,
    cache_key,
    connect_redis,
    create_cache,
    create_feedback_store,
)
from avengers.state.connection import redacted_url


@pytest.fixture(scope="module")
def redis_server():
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture
async def redis(redis_server):
    connection = RedisConnection(RedisConfig(url=redis_server.url, key_prefix=f"t-{uuid.uuid4().hex[:8]}:"))
    yield connection
    await connection.close()


def record(request_id: str = "req-1", models=("m1", "m2"), cluster: int = 4) -> RequestRecord:
    return RequestRecord(
        request_id=request_id, query_hash="abc", cluster=cluster, router_version="r-1", models=tuple(models),
        answer="42", task_type="math", created_at=1.0,
    )


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_cache_key_is_canonical():
    assert cache_key({"a": 1, "b": [1, 2]}) == cache_key({"b": [1, 2], "a": 1})
    assert cache_key({"a": 1}) != cache_key({"a": 2})


async def test_memory_cache_expires_and_evicts_least_recently_used():
    clock = FakeClock()
    cache = MemoryCache(CacheConfig(ttl_seconds=10, max_entries=2), clock=clock)
    await cache.set("a", b"1")
    await cache.set("b", b"2")
    assert await cache.get("a") == b"1"  # "a" is now the most recently used
    await cache.set("c", b"3")
    assert await cache.get("b") is None and await cache.get("a") == b"1" and len(cache) == 2
    clock.now += 11
    assert await cache.get("a") is None and await cache.get("c") is None


async def test_caches_skip_values_over_the_size_limit(redis):
    for cache in (MemoryCache(CacheConfig(max_value_bytes=4)), RedisCache(CacheConfig(max_value_bytes=4), redis)):
        await cache.set("big", b"12345")
        assert await cache.get("big") is None


async def test_redis_cache_round_trip_and_ttl(redis):
    cache = create_cache(CacheConfig(), redis)
    assert isinstance(cache, RedisCache)
    await cache.set("k", b"value")
    assert await cache.get("k") == b"value"
    assert await cache.get("other") is None
    ttl = await redis.client.pttl(redis.key("cache", "k"))
    assert 0 < ttl <= 3600 * 1000  # the configured TTL, in milliseconds
    await cache.set("short", b"v", ttl_seconds=0.05)
    assert 0 < await redis.client.pttl(redis.key("cache", "short")) <= 50  # Redis holds it for 50 ms at most
    for _ in range(1000):  # then Redis drops it (wait for that, however slow the machine)
        if await cache.get("short") is None:
            break
        await asyncio.sleep(0.01)
    assert await cache.get("short") is None


def test_factories_pick_memory_without_redis():
    assert isinstance(create_cache(CacheConfig()), MemoryCache)
    assert isinstance(create_feedback_store(FeedbackConfig()), MemoryFeedbackStore)
    assert connect_redis(RedisConfig(url=None)) is None
    assert create_cache(CacheConfig(backend="none")).name == "none"
    with pytest.raises(ValueError, match="needs a Redis connection"):
        create_cache(CacheConfig(backend="redis"))


def test_redis_url_comes_from_env(monkeypatch):
    monkeypatch.setenv("REDIS_URL", "redis://example:6379/1")
    assert RedisConfig().url == "redis://example:6379/1"
    monkeypatch.delenv("REDIS_URL")
    assert RedisConfig().url is None


def test_redacted_url_hides_the_password():
    assert redacted_url("redis://user:secret@host:6379/0") == "redis://user:***@host:6379/0"
    assert redacted_url("redis://:secret@host:6379") == "redis://:***@host:6379"
    assert redacted_url("redis://host:6379") == "redis://host:6379"


@pytest.fixture(params=["memory", "redis"])
async def store(request, redis):
    if request.param == "memory":
        return MemoryFeedbackStore(FeedbackConfig())
    return RedisFeedbackStore(FeedbackConfig(), redis)


async def test_feedback_is_logged_and_tallied(store):
    await store.remember(record("req-1"))
    await store.remember(record("req-2", models=("m1",)))
    assert (await store.request("req-1")).models == ("m1", "m2")
    assert await store.request("missing") is None

    entry = await store.add_feedback("req-1", 1.0, "right")
    assert entry.request.answer == "42" and entry.score == 1.0
    await store.add_feedback("req-2", 0.0)
    tallies = await store.tallies("r-1")
    assert tallies[(4, "m1")].count == 2 and tallies[(4, "m1")].total == pytest.approx(1.0)
    assert tallies[(4, "m2")].count == 1 and tallies[(4, "m2")].mean == pytest.approx(1.0)

    # feedback again on the same request replaces its score instead of counting twice
    await store.add_feedback("req-1", 0.5, "partly")
    tallies = await store.tallies("r-1")
    assert tallies[(4, "m1")].count == 2 and tallies[(4, "m1")].total == pytest.approx(0.5)

    recent = await store.recent_feedback(10)
    assert [(e.request.request_id, e.score, e.comment) for e in recent] == [
        ("req-1", 0.5, "partly"), ("req-2", 0.0, ""), ("req-1", 1.0, "right")
    ]
    assert await store.tallies("r-other") == {}


async def test_feedback_on_unknown_request_or_bad_score(store):
    with pytest.raises(UnknownRequest):
        await store.add_feedback("nope", 1.0)
    await store.remember(record("req-9"))
    for score in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="score"):
            await store.add_feedback("req-9", score)


async def test_request_records_expire():
    clock = FakeClock()
    store = MemoryFeedbackStore(FeedbackConfig(request_ttl_seconds=60), clock=clock)
    await store.remember(record("old"))
    clock.now += 61
    with pytest.raises(UnknownRequest):
        await store.add_feedback("old", 1.0)


async def test_redis_request_records_have_a_ttl(redis):
    store = RedisFeedbackStore(FeedbackConfig(request_ttl_seconds=120), redis)
    await store.remember(record("req-ttl"))
    assert 0 < await redis.client.pttl(redis.key("request", "req-ttl")) <= 120_000


async def test_concurrent_feedback_counts_each_request_once(redis):
    store = RedisFeedbackStore(FeedbackConfig(), redis)
    await store.remember(record("req-c", models=("m",)))
    await asyncio.gather(*(store.add_feedback("req-c", 1.0) for _ in range(10)))
    assert (await store.tallies("r-1"))[(4, "m")].count == 1


async def test_dead_redis_fails_fast_with_a_clear_error():
    server = RedisServer().start()
    connection = RedisConnection(RedisConfig(url=server.url, backoff_seconds=30))
    cache = RedisCache(CacheConfig(), connection)
    store = RedisFeedbackStore(FeedbackConfig(), connection)
    await cache.set("k", b"v")
    server.stop()
    try:
        with pytest.raises(StateUnavailable, match=f"redis at {server.url} is unavailable"):
            await cache.get("k")
        # within the backoff, operations fail at once without touching the socket
        with pytest.raises(StateUnavailable, match="retrying in"):
            await store.add_feedback("req", 1.0)
    finally:
        await connection.close()
