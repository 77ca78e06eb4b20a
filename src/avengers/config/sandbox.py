"""Limits of the sandbox that runs untrusted candidate programs against tests."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from avengers.config.base import ConfigModel
from avengers.registry import registry

SANDBOXES = registry("sandbox backend", home="avengers.sandbox")
"""Sandbox backends by name; the built-in one is registered by :mod:`avengers.sandbox`."""


class SandboxConfig(ConfigModel):
    backend: SANDBOXES.name_field() = "subprocess"
    """Sandbox class from the registry in :mod:`avengers.sandbox`."""

    python: str | None = None
    """Interpreter that runs candidates (started as ``python -I -S``). None: the service's own interpreter,
    or, when the sandbox drops privileges and the sandbox user cannot read that one, the first of
    /usr/bin/python3, /usr/local/bin/python3 it can."""

    timeout_seconds: float = Field(default=5.0, gt=0.0)
    """Default time a test (and loading the program) may take, in seconds."""

    max_timeout_seconds: float = Field(default=60.0, gt=0.0)
    """Largest per-test timeout a caller may ask for."""

    startup_seconds: float = Field(default=5.0, gt=0.0)
    """Wall time on top of the per-test budget for starting the interpreter. The whole run is killed
    (process group and every process of the sandbox user) after startup + timeout * (tests + 1)."""

    memory_mb: int = Field(default=512, ge=64)
    """Address-space limit (RLIMIT_AS) of the candidate, in MiB; larger allocations raise MemoryError."""

    file_size_mb: int = Field(default=16, ge=1)
    """Largest file the candidate may write (RLIMIT_FSIZE), stdout and stderr included, in MiB."""

    max_processes: int = Field(default=16, ge=1)
    """Processes and threads the candidate may add (RLIMIT_NPROC, bounds fork bombs). The kernel enforces
    it only for unprivileged users: as root the sandbox runs candidates as a dedicated uid; as an
    unprivileged service user the limit is counted on top of the tasks that user already has."""

    max_open_files: int = Field(default=64, ge=16)
    """Open file descriptors (RLIMIT_NOFILE)."""

    nice: int = Field(default=10, ge=0, le=19)
    """Scheduling niceness of candidates, so that they yield the CPU to the service."""

    network_namespace: Literal["auto", "required", "off"] = "auto"
    """Run candidates in a fresh network namespace (only loopback, down). "auto": when the kernel allows
    (as root, or through an unprivileged user namespace); "required": refuse to run otherwise; "off": rely
    on the in-process socket guard only."""

    drop_privileges: bool = True
    """When the service runs as root: run each candidate as a dedicated unused uid (a slot of
    ``uid_base``..``uid_base + uid_slots - 1``), so that the kernel enforces the process limit and file
    permissions and every leftover process of that uid can be killed."""

    uid_base: int = Field(default=61000, ge=1000)
    """First uid of the sandbox slots (must not belong to real users)."""

    uid_slots: int = Field(default=64, ge=1, le=4096)
    """Number of sandbox uids; at most this many candidates run at once per host when dropping privileges."""

    work_root: str | None = None
    """Directory under which each run gets a fresh private temp dir (cwd and HOME). None: the system temp."""

    output_tail_chars: int = Field(default=2000, ge=0)
    """Characters kept from the end of the candidate's stdout and stderr."""

    max_parallel: int = Field(default=2, ge=1)
    """Candidates run at once by one process (the voter's sandbox slots, shared fairly between votes: a free
    slot goes to the waiting vote holding the fewest)."""

    request_budget_seconds: float | None = Field(default=60.0, gt=0.0)
    """Sandbox wall time one request (a vote) may use, from its first run: then its running candidates are
    killed and reported as timed out, and those not started yet as not run (the vote still answers). None:
    no budget beyond each run's own limit and the call's deadline."""

    @model_validator(mode="after")
    def _timeouts_ordered(self) -> SandboxConfig:
        if self.timeout_seconds > self.max_timeout_seconds:
            raise ValueError("timeout_seconds must not exceed max_timeout_seconds")
        return self
