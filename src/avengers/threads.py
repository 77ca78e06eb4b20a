"""Thread control in one place: every compute pool of the process gets the same, bounded number of threads.

Left alone, each library sizes its own pool to every core of the machine: torch's intra-op pool, OpenMP
(torch, scikit-learn's k-means), OpenBLAS (numpy) and ONNX Runtime. On a small machine shared with other
work these pools oversubscribe the cores and spin-wait on each other: ``avengers fit`` stalled for more than
5 minutes with the defaults where ``OMP_NUM_THREADS=1`` took 71 s. :func:`apply_thread_limits` sets them all:

- the environment (``AVENGERS_THREADS``, ``OMP_NUM_THREADS``, ``MKL_NUM_THREADS``, ``OPENBLAS_NUM_THREADS``,
  ...) for libraries loaded later and for child processes;
- ``OMP_WAIT_POLICY=PASSIVE`` unless set: OpenMP threads sleep instead of spinning while they wait. On a machine
  whose cores other processes also use, spinning threads burn the CPU the others need: torch MiniLM with 2
  threads spent 55-67 ms of CPU per RouterDC query and encoded 15-18 queries/s with the default (spinning)
  waits, against 29-30 ms and 33-34 queries/s with PASSIVE (``bench/embedding_threads.py``, load average 3 on
  2 cores). OpenMP reads it when it loads, so it is set before torch or scikit-learn are imported;
- threadpoolctl limits for the OpenMP/BLAS libraries already loaded;
- ``torch.set_num_threads`` when torch is loaded;
- the ONNX embedder reads the number when created (:class:`avengers.config.threads.ThreadsConfig`): that many
  one-thread passes at once.

It is called by the ``avengers`` command (``--threads N``) and by every gRPC server start; the number comes
from, in order: the argument, ``AVENGERS_THREADS``, ``OMP_NUM_THREADS``, the CPUs the process may use.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass, field

from avengers.config.threads import THREADS_ENV, ThreadsConfig, usable_cpus

log = logging.getLogger(__name__)

THREAD_ENV_VARS = (
    THREADS_ENV,
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)
"""Variables set to the thread count (read by OpenMP and the BLAS libraries when they load)."""

_applied: int | None = None


@dataclass(frozen=True)
class ThreadSettings:
    """What :func:`apply_thread_limits` applied, and what the libraries report now."""

    threads: int
    source: str
    """"argument", "AVENGERS_THREADS", "OMP_NUM_THREADS" or "usable CPUs"."""
    usable_cpus: int
    torch_threads: int | None
    """``torch.get_num_threads()``; None when torch is not loaded in this process."""
    pools: dict[str, int] = field(default_factory=dict)
    """threadpoolctl's view: thread count of each loaded OpenMP/BLAS library, by file name."""
    wait_policy: str = ""
    """``OMP_WAIT_POLICY`` of the process (PASSIVE unless set otherwise)."""

    def describe(self) -> str:
        pools = ", ".join(f"{name} {n}" for name, n in sorted(self.pools.items()))
        torch = "" if self.torch_threads is None else f", torch {self.torch_threads}"
        return (
            f"{self.threads} thread(s) per compute pool (from {self.source}; {self.usable_cpus} usable CPU(s)"
            f"{torch}{', ' + pools if pools else ''}; OpenMP wait policy {self.wait_policy or 'default'})"
        )


def apply_thread_limits(threads: int | None = None, *, announce: bool = False) -> ThreadSettings:
    """Bound every compute pool of this process to ``threads`` (None: ``AVENGERS_THREADS``, then
    ``OMP_NUM_THREADS``, then the usable CPUs). Idempotent; logs the setting when it changes (at INFO with
    ``announce``, as servers do at start, else at DEBUG)."""
    global _applied
    config = ThreadsConfig(threads=threads)
    count = config.resolved()
    source = "argument" if threads is not None else config.source()
    for name in THREAD_ENV_VARS:
        os.environ[name] = str(count)
    # HF tokenizers' own pool (rayon) otherwise uses every core, and warns after a fork.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # Waiting OpenMP threads sleep rather than spin (read when OpenMP loads: see the module docstring).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=count)  # OpenMP and BLAS libraries loaded so far (torch's libgomp, OpenBLAS)
    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() != count:
        torch.set_num_threads(count)
    settings = current_thread_settings(count, source)
    if _applied != count:
        log.log(logging.INFO if announce else logging.DEBUG, "threads: %s", settings.describe())
        _applied = count
    return settings


def current_thread_settings(threads: int | None = None, source: str | None = None) -> ThreadSettings:
    """The process's thread settings as the libraries report them (for logs, tests and benchmarks)."""
    from threadpoolctl import threadpool_info

    config = ThreadsConfig()
    torch = sys.modules.get("torch")
    return ThreadSettings(
        threads=threads if threads is not None else config.resolved(),
        source=source or config.source(),
        usable_cpus=usable_cpus(),
        torch_threads=torch.get_num_threads() if torch is not None else None,
        pools={os.path.basename(info["filepath"]): int(info["num_threads"]) for info in threadpool_info()},
        wait_policy=os.environ.get("OMP_WAIT_POLICY", ""),
    )
