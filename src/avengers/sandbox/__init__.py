"""Running untrusted candidate programs against tests, isolated from the host (the voter's code judge).

:func:`create_sandbox` builds the configured :class:`Sandbox` (``SandboxConfig.backend``); the only backend
is :class:`SubprocessSandbox` (a fresh ``python -I -S`` per candidate in its own network namespace, rlimits and a
dedicated uid). The result types live in :mod:`avengers.core.execution`, which the recipe's voter uses.
"""

from avengers.core.execution import CodeRunner, SandboxError, SandboxResult, TestOutcome, TestStatus
from avengers.sandbox.base import Sandbox, create_sandbox, register_sandbox
from avengers.sandbox.processes import kill_escaped_descendants, kill_user_processes
from avengers.sandbox.subprocess_sandbox import SubprocessSandbox

__all__ = [
    "CodeRunner",
    "Sandbox",
    "SandboxError",
    "SandboxResult",
    "SubprocessSandbox",
    "TestOutcome",
    "TestStatus",
    "create_sandbox",
    "kill_escaped_descendants",
    "kill_user_processes",
    "register_sandbox",
]
