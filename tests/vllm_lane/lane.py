"""Shared by the real-vLLM lane: where the converted model is, the vLLM settings for a small CPU machine, and
the skip (or, in CI's lane, the failure) when the vLLM environment is absent.

The lane runs in the venv built by ``scripts/setup_vllm.sh`` (``.ci/run`` calls it and then this directory's
tests); in the main venv these tests are skipped, since vLLM is not installed there.
"""

from __future__ import annotations

import importlib.util
import os
import signal
from pathlib import Path

import pytest

MODEL_DIR = Path(
    os.environ.get("AVENGERS_VLLM_MODEL") or Path.home() / ".cache/avengers/models/smollm2-135m-hf"
)
REQUIRED = os.environ.get("AVENGERS_VLLM_LANE") == "1"
"""Set by .ci/run's vLLM lane: a missing vLLM or model is then an error, not a skip."""

MAX_MODEL_LEN = 512

# A small KV cache (GiB) and one thread each: the 2 cores and the memory are shared with the rest of CI.
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")


def require_vllm() -> None:
    """Skip the calling test module unless vLLM and the converted model are there (fail in the CI lane)."""
    problem = None
    if importlib.util.find_spec("vllm") is None or importlib.util.find_spec("vllm.engine") is None:
        problem = "vLLM is not installed in this venv (the lane's venv comes from scripts/setup_vllm.sh)"
    if problem is None and not (MODEL_DIR / "config.json").is_file():
        problem = f"no converted model at {MODEL_DIR} (scripts/setup_vllm.sh makes it)"
    if problem is None:
        return
    if REQUIRED:
        pytest.fail(problem, pytrace=False)
    pytest.skip(problem, allow_module_level=True)


def vllm_model(name: str = "smol-vllm", **extra) -> dict:
    """A pool model served by the project's vLLM engine from the converted SmolLM2-135M checkpoint."""
    return {
        "name": name,
        "backend": "vllm",
        "model_id": str(MODEL_DIR),
        "vllm": {"max_model_len": MAX_MODEL_LEN, "dtype": "float32", "enforce_eager": True},
        "sampling": {"max_tokens": 16, "temperature": 0.8},
        "max_n": 16,
        "max_tokens_limit": 400,
        **extra,
    }


def engine_core_processes() -> list:
    """vLLM's engine core processes under this one (psutil comes with vLLM)."""
    import psutil

    return [
        p
        for p in psutil.Process().children(recursive=True)
        if "EngineCore" in p.name() or any("EngineCore" in part for part in _cmdline(p))
    ]


def kill_engine_cores() -> int:
    """SIGKILL every vLLM engine core under this process (a crash, as far as vLLM can tell); how many."""
    cores = engine_core_processes()
    for p in cores:
        os.kill(p.pid, signal.SIGKILL)
    return len(cores)


def _cmdline(p) -> list[str]:
    try:
        return p.cmdline()
    except Exception:  # noqa: BLE001 - a process that just exited
        return []
