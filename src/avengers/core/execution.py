"""What the code judge needs from a sandbox: the run's result types and the runner interface.

The voter groups code candidates by the tuple of tests they pass (:mod:`avengers.core.voting`); the runs
themselves happen in a sandbox that implements :class:`CodeRunner` (:mod:`avengers.sandbox`), injected by
the caller, so the recipe does not depend on how isolation is done.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

TestStatus = Literal["passed", "failed", "error", "timeout", "not_run"]

MESSAGE_CHARS = 500
"""Longest per-test message kept (exception type and text)."""


@dataclass(frozen=True)
class TestOutcome:
    """How one test went."""

    index: int
    status: TestStatus
    message: str = ""

    @property
    def passed(self) -> bool:
        return self.status == "passed"


@dataclass
class SandboxResult:
    """Outcome of running one program against its tests."""

    passed: bool
    """The program loaded, every test passed and nothing timed out."""
    tests: list[TestOutcome]
    stdout: str = ""
    """Tail of the candidate's stdout."""
    stderr: str = ""
    """Tail of the candidate's stderr."""
    timed_out: bool = False
    """The run hit its wall limit and was killed."""
    error: str | None = None
    """Why the program did not load or the run failed as a whole (None when it loaded and ended normally)."""
    exit_code: int | None = None
    network_isolated: bool = False
    """The candidate ran in its own network namespace."""
    privileges_dropped: bool = False
    """The candidate ran as a dedicated unprivileged uid."""
    duration_seconds: float = 0.0

    @property
    def outcomes(self) -> tuple[bool, ...]:
        """Pass/fail of each test: the candidate's behaviour, for grouping."""
        return tuple(t.passed for t in self.tests)

    @property
    def tests_passed(self) -> int:
        return sum(self.outcomes)


class SandboxError(RuntimeError):
    """The sandbox cannot run at all here (a required isolation is unavailable, no free sandbox uid)."""



class CodeRunner(Protocol):
    """Runs an untrusted program and its tests in isolation (implemented by :class:`avengers.sandbox.Sandbox`)."""

    def run(
        self,
        program: str,
        tests: Sequence[str] = (),
        entry_point: str | None = None,
        timeout_seconds: float | None = None,
    ) -> SandboxResult:
        """Load ``program``, then run each test in a copy of its namespace."""
