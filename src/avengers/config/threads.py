"""How many CPU threads the numerical libraries of a process may use.

One number for every compute pool of the process: torch intra-op threads, ONNX Runtime intra-op threads,
OpenMP (scikit-learn's k-means, torch) and BLAS (numpy, via threadpoolctl). Applied by
:func:`avengers.threads.apply_thread_limits` at every process entry point (the ``avengers`` command, each
gRPC server start); read here by the embedders when they create their sessions.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field

from avengers.config.base import ConfigModel

THREADS_ENV = "AVENGERS_THREADS"
"""Environment variable naming the process's thread count (set by ``apply_thread_limits`` too, so that
libraries loaded later and child processes use the same number)."""


def usable_cpus() -> int:
    """CPUs this process may run on: the affinity mask, capped by a cgroup v2/v1 CPU quota (containers)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        cpus = os.cpu_count() or 1
    quota = _cgroup_cpu_quota()
    if quota is not None:
        cpus = min(cpus, max(1, int(quota + 0.5)))
    return max(1, cpus)


def _cgroup_cpu_quota() -> float | None:
    """CPUs granted by the cgroup CPU quota (e.g. a Kubernetes CPU limit), None when unlimited/unknown."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]  # cgroup v2: "max 100000"
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:  # cgroup v1
        quota_us = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        period_us = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        return None if quota_us <= 0 else quota_us / period_us
    except (OSError, ValueError):
        return None


def _positive_int(value: str | None) -> int | None:
    try:
        number = int(value) if value is not None else 0
    except ValueError:
        return None
    return number if number > 0 else None


class ThreadsConfig(ConfigModel):
    threads: int | None = Field(default=None, ge=1, le=1024)
    """Threads of every compute pool in the process (torch, ONNX Runtime, OpenMP, BLAS). None: the
    ``AVENGERS_THREADS`` environment variable, else ``OMP_NUM_THREADS``, else the CPUs the process may use
    (affinity mask and container CPU quota). More threads than usable CPUs make the pools wait on each other:
    on a 2-core machine shared with other work, 1 is often fastest for a process that shares its cores."""

    def resolved(self) -> int:
        """The thread count to use, and :meth:`source` says where it came from."""
        return self._resolve()[0]

    def source(self) -> str:
        """Where :meth:`resolved` took its number from: "config", "AVENGERS_THREADS", "OMP_NUM_THREADS"
        or "usable CPUs"."""
        return self._resolve()[1]

    def _resolve(self) -> tuple[int, str]:
        if self.threads is not None:
            return self.threads, "config"
        for name in (THREADS_ENV, "OMP_NUM_THREADS"):
            number = _positive_int(os.environ.get(name))
            if number is not None:
                return number, name
        return usable_cpus(), "usable CPUs"
