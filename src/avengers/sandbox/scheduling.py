"""Sharing the sandbox between requests: fair slots, a time budget per request, and cancellation.

A vote with code candidates runs each candidate in the sandbox. Without care one request could hold every
slot: its candidates queue ahead of everyone else's, keep running after its caller gave up, and each may run
for ``startup + timeout * (tests + 1)`` seconds (minutes with a 60 s per-test timeout). Three votes of
looping candidates once made an ordinary code vote wait 240 s. Here:

* :class:`FairSlots` — the host's ``max_parallel`` sandbox slots, handed out fairly: a free slot goes to the
  waiting request that holds the fewest slots (ties: the one that asked first), so a request with many
  candidates cannot starve a request with one.
* :class:`SandboxRequest` — one request's view of the sandbox (a :class:`~avengers.core.execution.CodeRunner`
  for the code judge): it waits for a fair slot, and kills its runs when the request is cancelled, when the
  call's deadline passes (:class:`TimeoutError`: the vote is abandoned), or when the request has used its
  budget of sandbox wall time (``SandboxConfig.request_budget_seconds``, counted from its first run): the
  run is then reported as timed out and candidates not started yet as not run, so the vote still answers
  with the candidates that behaved.
"""

from __future__ import annotations

import inspect
import itertools
import threading
import time
from collections.abc import Callable, Sequence

from avengers.core.execution import SandboxResult, TestOutcome
from avengers.sandbox.base import Sandbox

POLL_SECONDS = 0.05
"""How often a waiting or running candidate checks whether its request was cancelled or ran out of time."""


class FairSlots:
    """``slots`` concurrent sandbox runs shared by requests; a free slot goes to the waiting request holding
    the fewest (then to the earliest waiter)."""

    def __init__(self, slots: int):
        if slots < 1:
            raise ValueError("at least one sandbox slot is needed")
        self.slots = slots
        self._free = slots
        self._held: dict[object, int] = {}
        self._waiting: dict[int, object] = {}  # ticket -> owner, in arrival order
        self._tickets = itertools.count()
        self._cond = threading.Condition()

    def acquire(self, owner: object, give_up: Callable[[], bool] = lambda: False) -> bool:
        """Wait for a slot for ``owner``; False (no slot taken) once ``give_up()`` returns True."""
        with self._cond:
            ticket = next(self._tickets)
            self._waiting[ticket] = owner
            try:
                while not (self._free > 0 and self._next_ticket() == ticket):
                    if give_up():
                        return False
                    self._cond.wait(POLL_SECONDS)
                self._free -= 1
                self._held[owner] = self._held.get(owner, 0) + 1
                return True
            finally:
                del self._waiting[ticket]
                self._cond.notify_all()

    def release(self, owner: object) -> None:
        with self._cond:
            left = self._held[owner] - 1
            if left:
                self._held[owner] = left
            else:
                del self._held[owner]
            self._free += 1
            self._cond.notify_all()

    def held(self, owner: object) -> int:
        with self._cond:
            return self._held.get(owner, 0)

    def _next_ticket(self) -> int:
        return min(self._waiting, key=lambda t: (self._held.get(self._waiting[t], 0), t))


class SandboxRequest:
    """One request's use of a shared sandbox (see the module docstring); implements ``CodeRunner``."""

    def __init__(
        self,
        sandbox: Sandbox,
        slots: FairSlots,
        *,
        deadline: float | None = None,
        budget_seconds: float | None = None,
        cancelled: threading.Event | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.sandbox = sandbox
        self.slots = slots
        self.deadline = deadline
        """``clock()`` time after which the caller no longer waits: runs are killed, the vote abandoned."""
        self.budget_seconds = budget_seconds
        self.cancelled = cancelled or threading.Event()
        self.clock = clock
        self._budget_end: float | None = None
        self._lock = threading.Lock()
        self._takes_stop = "stop" in inspect.signature(sandbox.run).parameters

    def abandoned(self) -> bool:
        """The caller went away or its deadline passed."""
        return self.cancelled.is_set() or (self.deadline is not None and self.clock() >= self.deadline)

    def should_stop(self) -> bool:
        """A running candidate is killed once this is true."""
        return self.abandoned() or self.out_of_budget()

    def out_of_budget(self) -> bool:
        return self._budget_end is not None and self.clock() >= self._budget_end

    def _start_budget(self) -> None:
        with self._lock:
            if self._budget_end is None and self.budget_seconds is not None:
                self._budget_end = self.clock() + self.budget_seconds

    def _abandon(self) -> TimeoutError:
        if self.cancelled.is_set():
            return TimeoutError("the vote was cancelled; its sandbox runs were stopped")
        return TimeoutError("the vote's deadline passed before every code candidate could run")

    def run(
        self,
        program: str,
        tests: Sequence[str] = (),
        entry_point: str | None = None,
        timeout_seconds: float | None = None,
    ) -> SandboxResult:
        if self.abandoned():
            raise self._abandon()
        if self.out_of_budget():
            return self._not_run(tests)
        if not self.slots.acquire(self, give_up=self.should_stop):
            if self.abandoned():
                raise self._abandon()
            return self._not_run(tests)
        try:
            self._start_budget()
            if self._takes_stop:
                result = self.sandbox.run(program, tests, entry_point, timeout_seconds, stop=self.should_stop)
            else:  # a sandbox without early stop: it ends at its own wall limit
                result = self.sandbox.run(program, tests, entry_point, timeout_seconds)
        finally:
            self.slots.release(self)
        if self.abandoned():
            raise self._abandon()
        return result

    def _not_run(self, tests: Sequence[str]) -> SandboxResult:
        reason = f"not run: the vote used its sandbox budget of {self.budget_seconds:g} s"
        return SandboxResult(
            passed=False,
            tests=[TestOutcome(i, "not_run", reason) for i in range(len(tests))],
            error=reason,
        )
