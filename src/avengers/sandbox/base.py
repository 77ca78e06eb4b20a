"""The sandbox interface and its registry: :class:`Sandbox` implements :class:`avengers.core.execution.CodeRunner`."""

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

from avengers.config.sandbox import SANDBOXES, SandboxConfig
from avengers.core.execution import SandboxResult


class Sandbox(ABC):
    """Runs an untrusted program and its tests in isolation."""

    @abstractmethod
    def run(
        self,
        program: str,
        tests: Sequence[str] = (),
        entry_point: str | None = None,
        timeout_seconds: float | None = None,
        stop: Callable[[], bool] | None = None,
    ) -> SandboxResult:
        """Load ``program``, then run each test in a copy of its namespace.

        A test is Python code: plain asserts, or (HumanEval style) a ``check(candidate)`` function
        that is called with the program's ``entry_point``. ``timeout_seconds`` bounds loading the
        program and each test (default: the config's). ``stop`` is polled while the run goes on; once it
        returns True the run is killed as at its wall limit (the result says it timed out).
        """


SandboxFactory = Callable[[SandboxConfig], Sandbox]
register_sandbox = SANDBOXES.register
"""Class decorator: make a sandbox available as ``SandboxConfig.backend``."""


def create_sandbox(config: SandboxConfig | None = None) -> Sandbox:
    """Build the configured sandbox."""
    config = config or SandboxConfig()
    return SANDBOXES.create(config.backend, config)

