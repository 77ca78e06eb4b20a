"""Dynamic micro-batching: many concurrent callers, one batched call of a slow function.

A :class:`MicroBatcher` collects the items of concurrent :meth:`~MicroBatcher.submit` calls for up to
``max_wait_ms`` after the oldest waiting one arrived, or until ``max_batch`` items are waiting, runs the
batch function once in a worker thread (the event loop stays free), and hands every caller its own rows.

- Bounded: at most ``max_queued`` items wait; past that :meth:`submit` raises :class:`BatcherOverloaded`
  at once (a service answers RESOURCE_EXHAUSTED, the client backs off) instead of queueing without end.
- Cancellation-safe: a caller cancelled while waiting (client gone, deadline) is dropped from the queue and
  frees its room; one cancelled while its batch runs simply does not receive the result. Nobody else is
  affected.
- A failing batch fails exactly the callers in it, with the batch function's exception.
- A request is never split across batches, so its rows come from one call of the batch function.

Generic over the item and row types: the batch function takes a list of items and returns a sequence of
rows of the same length (a list, or a numpy array whose first axis is the item axis).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

log = logging.getLogger(__name__)

Item = TypeVar("Item")
Rows = TypeVar("Rows", bound=Sequence[Any])


class BatcherOverloaded(RuntimeError):
    """The queue is full: the caller should back off and retry."""


class BatcherClosed(RuntimeError):
    """The batcher has been closed (the service is shutting down)."""


@dataclass
class BatcherStats:
    """Running totals (for metrics and tests)."""

    batches: int = 0
    """Batch function calls made."""
    items: int = 0
    """Items processed in those calls."""
    requests: int = 0
    """Callers served (successfully or with the batch's error)."""
    rejected: int = 0
    """Callers refused because the queue was full."""
    cancelled: int = 0
    """Callers that went away before their result was ready."""
    largest_batch: int = 0


@dataclass(eq=False)
class _Request(Generic[Item]):
    items: list[Item]
    future: asyncio.Future
    arrived: float = field(default_factory=time.monotonic)
    dequeued: bool = False
    """True once it left the queue (picked up by a batch, or dropped as cancelled): it no longer counts."""


class MicroBatcher(Generic[Item, Rows]):
    """Batches concurrent calls of ``batch_fn`` (see the module docstring).

    Create it anywhere; it binds to the running event loop on first use. Call :meth:`close` when done.
    """

    def __init__(
        self,
        batch_fn: Callable[[list[Item]], Rows],
        *,
        max_batch: int = 64,
        max_wait_ms: float = 5.0,
        max_queued: int = 4096,
        name: str = "batcher",
        on_batch: Callable[[int, float], None] | None = None,
    ):
        """``on_batch(items, seconds)`` is called after each batch function call (metrics hook)."""
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        if max_queued < max_batch:
            raise ValueError(f"max_queued ({max_queued}) must be at least max_batch ({max_batch})")
        if max_wait_ms < 0:
            raise ValueError("max_wait_ms must be >= 0")
        self.batch_fn = batch_fn
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self.max_queued = max_queued
        self.name = name
        self.stats = BatcherStats()
        self._on_batch = on_batch
        self._pending: collections.deque[_Request[Item]] = collections.deque()
        self._queued_items = 0
        self._wakeup: asyncio.Event | None = None
        self._worker: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._closed = False

    @property
    def queued_items(self) -> int:
        """Items waiting for a batch (not counting the batch running now)."""
        return self._queued_items

    async def submit(self, items: Sequence[Item]) -> Rows:
        """The rows of ``items`` (in order), computed in some batch together with other callers' items."""
        items = list(items)
        if not items:
            raise ValueError("submit needs at least one item")
        if len(items) > self.max_batch:
            raise ValueError(f"{len(items)} items in one request; at most {self.max_batch}")
        if self._closed:
            raise BatcherClosed(f"{self.name} is closed")
        if self._queued_items + len(items) > self.max_queued:
            self.stats.rejected += 1
            raise BatcherOverloaded(
                f"{self.name} is overloaded: {self._queued_items} items queued (limit {self.max_queued}); retry later"
            )
        self._ensure_worker()
        request = _Request(items, asyncio.get_running_loop().create_future())
        self._pending.append(request)
        self._queued_items += len(items)
        assert self._wakeup is not None
        self._wakeup.set()
        try:
            return await request.future
        except asyncio.CancelledError:
            self.stats.cancelled += 1
            if not request.dequeued:  # still queued: give its room back now
                self._queued_items -= len(items)
                try:
                    self._pending.remove(request)
                except ValueError:
                    pass
            raise

    async def close(self) -> None:
        """Fail waiting callers with :class:`BatcherClosed`, stop the worker and its thread."""
        self._closed = True
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
            self._worker = None
        while self._pending:
            request = self._pending.popleft()
            if not request.future.done():
                request.future.set_exception(BatcherClosed(f"{self.name} closed before the request ran"))
        self._queued_items = 0
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    def _ensure_worker(self) -> None:
        if self._worker is None or self._worker.done():
            self._wakeup = asyncio.Event()
            self._executor = self._executor or ThreadPoolExecutor(max_workers=1, thread_name_prefix=self.name)
            self._worker = asyncio.get_running_loop().create_task(self._run(), name=f"{self.name}-worker")

    async def _run(self) -> None:
        assert self._wakeup is not None
        while True:
            if not self._pending:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            await self._wait_for_batch()
            batch = self._take_batch()
            if batch:
                await self._execute(batch)

    async def _wait_for_batch(self) -> None:
        """Wait until the oldest request has waited max_wait, or a full batch is queued."""
        assert self._wakeup is not None
        while self._pending and self._queued_items < self.max_batch:
            remaining = self._pending[0].arrived + self.max_wait - time.monotonic()
            if remaining <= 0:
                return
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), timeout=remaining)
            except TimeoutError:
                return

    def _take_batch(self) -> list[_Request[Item]]:
        batch: list[_Request[Item]] = []
        size = 0
        while self._pending:
            request = self._pending[0]
            if request.future.done():  # cancelled and not yet removed by its caller
                self._pending.popleft()
                self._queued_items -= len(request.items)
                request.dequeued = True
                continue
            if size + len(request.items) > self.max_batch:
                break
            self._pending.popleft()
            self._queued_items -= len(request.items)
            request.dequeued = True
            batch.append(request)
            size += len(request.items)
        return batch

    async def _execute(self, batch: list[_Request[Item]]) -> None:
        flat = [item for request in batch for item in request.items]
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        try:
            rows = await loop.run_in_executor(self._executor, self.batch_fn, flat)
            if len(rows) != len(flat):
                raise RuntimeError(f"batch function returned {len(rows)} rows for {len(flat)} items")
        except asyncio.CancelledError:
            for request in batch:
                if not request.future.done():
                    request.future.set_exception(BatcherClosed(f"{self.name} closed while the request ran"))
            raise
        except Exception as exc:  # noqa: BLE001 - the batch's callers get the error, the worker lives on
            log.warning("%s: batch of %d items failed: %s", self.name, len(flat), exc)
            for request in batch:
                if not request.future.done():
                    request.future.set_exception(exc)
            self.stats.requests += len(batch)
            return
        seconds = time.perf_counter() - started
        self.stats.batches += 1
        self.stats.items += len(flat)
        self.stats.requests += len(batch)
        self.stats.largest_batch = max(self.stats.largest_batch, len(flat))
        if self._on_batch is not None:
            self._on_batch(len(flat), seconds)
        offset = 0
        for request in batch:
            n = len(request.items)
            if not request.future.done():
                request.future.set_result(rows[offset : offset + n])
            offset += n
