"""The feedback store: what each answered request was, the feedback given on it, and running tallies.

The gateway :meth:`~FeedbackStore.remember`\\ s every answered request (query hash, cluster, router version,
models, answer) for ``request_ttl_seconds``. Feedback on a remembered request is appended to a log and added
to per-(router_version, cluster, model) tallies of scores, from which online outcomes can later re-score the
clusters of a router. A request's latest feedback wins: giving feedback again replaces its score in the
tallies instead of counting twice.

Redis layout (``<p>`` is the key prefix)::

    <p>request:<request_id>           hash: the request record (+ score, comment once feedback came), TTL
    <p>feedback                       stream: one entry per feedback, trimmed to about stream_max_len
    <p>tally:<router_version>:count   hash: "<cluster>|<model>" -> number of requests with feedback
    <p>tally:<router_version>:sum     hash: "<cluster>|<model>" -> sum of their latest scores
"""

from __future__ import annotations

import json
import math
import time
from abc import ABC, abstractmethod
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import numpy as np

from avengers.config.state import FEEDBACK_BACKENDS, FeedbackConfig
from avengers.state.connection import RedisConnection, StateError
from avengers.state.registry import create_backend


class UnknownRequest(StateError, LookupError):
    """No request with this id is remembered (never answered here, or expired)."""


@dataclass(frozen=True)
class RequestRecord:
    """What the gateway answered for one request."""

    request_id: str
    query_hash: str
    cluster: int
    router_version: str
    models: tuple[str, ...]
    """Models whose samples were voted on, best first."""
    answer: str
    task_type: str
    created_at: float
    """Unix time of the answer."""

    def to_fields(self) -> dict[str, str]:
        data = asdict(self)
        data["models"] = json.dumps(list(self.models))
        return {k: str(v) for k, v in data.items()}

    @classmethod
    def from_fields(cls, fields: dict[str, str]) -> RequestRecord:
        return cls(
            request_id=fields["request_id"],
            query_hash=fields["query_hash"],
            cluster=int(fields["cluster"]),
            router_version=fields["router_version"],
            models=tuple(json.loads(fields["models"])),
            answer=fields["answer"],
            task_type=fields["task_type"],
            created_at=float(fields["created_at"]),
        )


@dataclass(frozen=True)
class FeedbackEntry:
    request: RequestRecord
    score: float
    comment: str
    received_at: float

    def to_fields(self) -> dict[str, str]:
        return {**self.request.to_fields(), "score": repr(self.score), "comment": self.comment,
                "received_at": repr(self.received_at)}

    @classmethod
    def from_fields(cls, fields: dict[str, str]) -> FeedbackEntry:
        return cls(
            request=RequestRecord.from_fields(fields),
            score=float(fields["score"]),
            comment=fields["comment"],
            received_at=float(fields["received_at"]),
        )


@dataclass(frozen=True)
class ScoreTally:
    """Feedback on one (router_version, cluster, model)."""

    count: int
    total: float

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else math.nan


def tally_field(cluster: int, model: str) -> str:
    return f"{cluster}|{model}"


def parse_tally_field(text: str) -> tuple[int, str]:
    cluster, model = text.split("|", 1)
    return int(cluster), model


def tally_matrices(
    tallies: dict[tuple[int, str], ScoreTally], models: list[str], num_clusters: int
) -> tuple[np.ndarray, np.ndarray]:
    """(k, m) feedback counts and score sums of a router's clusters and models (what the router learns from);
    tallies of other models or clusters (another router's layout) are ignored."""
    column = {model: j for j, model in enumerate(models)}
    counts = np.zeros((num_clusters, len(models)))
    sums = np.zeros((num_clusters, len(models)))
    for (cluster, model), tally in tallies.items():
        j = column.get(model)
        if j is not None and 0 <= cluster < num_clusters:
            counts[cluster, j] += tally.count
            sums[cluster, j] += tally.total
    return counts, sums


def check_score(score: float) -> float:
    if not isinstance(score, (int, float)) or math.isnan(score) or not 0.0 <= score <= 1.0:
        raise ValueError(f"score must be in [0, 1], got {score}")
    return float(score)


class FeedbackStore(ABC):
    name: ClassVar[str]

    def __init__(self, config: FeedbackConfig):
        self.config = config

    @abstractmethod
    async def remember(self, record: RequestRecord) -> None:
        """Keep ``record`` for ``request_ttl_seconds`` so feedback can refer to it."""

    @abstractmethod
    async def request(self, request_id: str) -> RequestRecord | None:
        """The remembered request, or None."""

    @abstractmethod
    async def add_feedback(self, request_id: str, score: float, comment: str = "") -> FeedbackEntry:
        """Log feedback on a remembered request and update the tallies; UnknownRequest when not remembered."""

    @abstractmethod
    async def recent_feedback(self, limit: int = 100) -> list[FeedbackEntry]:
        """The latest feedback entries, newest first."""

    @abstractmethod
    async def tallies(self, router_version: str) -> dict[tuple[int, str], ScoreTally]:
        """Feedback tallies of one router version by (cluster, model)."""

    async def close(self) -> None:
        """Release connections."""


FEEDBACK_STORES = FEEDBACK_BACKENDS
register_feedback_store = FEEDBACK_STORES.register


@register_feedback_store("memory")
class MemoryFeedbackStore(FeedbackStore):
    """Everything in this process (lost on restart; each gateway replica sees only its own requests)."""

    def __init__(
        self, config: FeedbackConfig, redis: RedisConnection | None = None, clock: Callable[[], float] = time.time
    ):
        super().__init__(config)
        self._clock = clock
        self._requests: OrderedDict[str, tuple[float, RequestRecord]] = OrderedDict()
        self._scores: dict[str, float] = {}
        self._log: deque[FeedbackEntry] = deque(maxlen=config.stream_max_len)
        self._tallies: dict[str, dict[tuple[int, str], ScoreTally]] = {}

    async def remember(self, record: RequestRecord) -> None:
        self._requests[record.request_id] = (self._clock() + self.config.request_ttl_seconds, record)
        self._requests.move_to_end(record.request_id)
        while len(self._requests) > self.config.memory_max_requests:
            evicted, _ = self._requests.popitem(last=False)
            self._scores.pop(evicted, None)

    async def request(self, request_id: str) -> RequestRecord | None:
        entry = self._requests.get(request_id)
        if entry is None:
            return None
        if entry[0] <= self._clock():
            del self._requests[request_id]
            self._scores.pop(request_id, None)
            return None
        return entry[1]

    async def add_feedback(self, request_id: str, score: float, comment: str = "") -> FeedbackEntry:
        score = check_score(score)
        record = await self.request(request_id)
        if record is None:
            raise UnknownRequest(f"unknown request_id {request_id!r} (never answered here, or expired)")
        previous = self._scores.get(request_id)
        self._scores[request_id] = score
        tallies = self._tallies.setdefault(record.router_version, {})
        for model in record.models:
            key = (record.cluster, model)
            old = tallies.get(key, ScoreTally(0, 0.0))
            if previous is None:
                tallies[key] = ScoreTally(old.count + 1, old.total + score)
            else:
                tallies[key] = ScoreTally(old.count, old.total + score - previous)
        entry = FeedbackEntry(record, score, comment, self._clock())
        self._log.append(entry)
        return entry

    async def recent_feedback(self, limit: int = 100) -> list[FeedbackEntry]:
        return list(reversed(self._log))[:limit]

    async def tallies(self, router_version: str) -> dict[tuple[int, str], ScoreTally]:
        return dict(self._tallies.get(router_version, {}))


def _decode(fields: dict[Any, Any]) -> dict[str, str]:
    return {
        (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
        for k, v in fields.items()
    }


@register_feedback_store("redis")
class RedisFeedbackStore(FeedbackStore):
    """Request records, the feedback stream and the tallies in Redis (shared by every gateway replica)."""

    def __init__(self, config: FeedbackConfig, redis: RedisConnection | None = None):
        super().__init__(config)
        if redis is None:
            raise ValueError("the redis feedback store needs a Redis connection (set REDIS_URL)")
        self.redis = redis

    def _request_key(self, request_id: str) -> str:
        return self.redis.key("request", request_id)

    def _tally_keys(self, router_version: str) -> tuple[str, str]:
        return self.redis.key("tally", router_version, "count"), self.redis.key("tally", router_version, "sum")

    async def remember(self, record: RequestRecord) -> None:
        key = self._request_key(record.request_id)
        ttl_ms = max(1, int(self.config.request_ttl_seconds * 1000))

        async def write(r: Any) -> None:
            async with r.pipeline(transaction=True) as pipe:
                pipe.hset(key, mapping=record.to_fields())
                pipe.pexpire(key, ttl_ms)
                await pipe.execute()

        await self.redis.run("feedback", "remember", write)

    async def request(self, request_id: str) -> RequestRecord | None:
        fields = await self.redis.run("feedback", "request", lambda r: r.hgetall(self._request_key(request_id)))
        return RequestRecord.from_fields(_decode(fields)) if fields else None

    async def add_feedback(self, request_id: str, score: float, comment: str = "") -> FeedbackEntry:
        import redis.exceptions

        score = check_score(score)
        key = self._request_key(request_id)

        async def transact(r: Any) -> FeedbackEntry | None:
            async with r.pipeline(transaction=True) as pipe:
                while True:
                    try:
                        await pipe.watch(key)
                        fields = _decode(await pipe.hgetall(key))
                        if not fields:
                            await pipe.unwatch()
                            return None
                        record = RequestRecord.from_fields(fields)
                        previous = float(fields["score"]) if "score" in fields else None
                        entry = FeedbackEntry(record, score, comment, time.time())
                        count_key, sum_key = self._tally_keys(record.router_version)
                        pipe.multi()
                        pipe.hset(key, mapping={"score": repr(score), "comment": comment})
                        for model in record.models:
                            field = tally_field(record.cluster, model)
                            if previous is None:
                                pipe.hincrby(count_key, field, 1)
                            pipe.hincrbyfloat(sum_key, field, score - (previous or 0.0))
                        pipe.xadd(
                            self.redis.key("feedback"),
                            entry.to_fields(),
                            maxlen=self.config.stream_max_len,
                            approximate=True,
                        )
                        await pipe.execute()
                        return entry
                    except redis.exceptions.WatchError:
                        continue  # the record changed under us (concurrent feedback): read it again

        entry = await self.redis.run("feedback", "add_feedback", transact)
        if entry is None:
            raise UnknownRequest(f"unknown request_id {request_id!r} (never answered here, or expired)")
        return entry

    async def recent_feedback(self, limit: int = 100) -> list[FeedbackEntry]:
        rows = await self.redis.run(
            "feedback", "recent_feedback", lambda r: r.xrevrange(self.redis.key("feedback"), count=limit)
        )
        return [FeedbackEntry.from_fields(_decode(fields)) for _, fields in rows]

    async def tallies(self, router_version: str) -> dict[tuple[int, str], ScoreTally]:
        count_key, sum_key = self._tally_keys(router_version)

        async def read(r: Any) -> tuple[dict[Any, Any], dict[Any, Any]]:
            async with r.pipeline(transaction=False) as pipe:
                pipe.hgetall(count_key)
                pipe.hgetall(sum_key)
                counts, sums = await pipe.execute()
            return counts, sums

        counts, sums = await self.redis.run("feedback", "tallies", read)
        counts, sums = _decode(counts), _decode(sums)
        return {
            parse_tally_field(field): ScoreTally(int(count), float(sums.get(field, 0.0)))
            for field, count in counts.items()
        }


def create_feedback_store(config: FeedbackConfig, redis: RedisConnection | None = None) -> FeedbackStore:
    """The configured store; "auto" is redis when a connection is given, else memory."""
    return create_backend(FEEDBACK_STORES, config.backend, config, redis)
