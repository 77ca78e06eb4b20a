"""Thread control in one place: where the number comes from, and that every pool of a process gets it (run in
fresh processes: the settings are process-wide)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from avengers.config.embedding import EmbeddingConfig
from avengers.config.threads import ThreadsConfig, usable_cpus
from avengers.core.embedding import model_threads

PROCESS_WIDE = ("AVENGERS_THREADS", "OMP_WAIT_POLICY")


def run_python(code: str, **env: str) -> dict:
    """Run ``code`` in a fresh interpreter (environment without thread variables, plus ``env``); its last
    stdout line is JSON."""
    clean = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS") and k not in PROCESS_WIDE}
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env={**clean, **env},
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_number_comes_from_config_then_environment_then_cpus(monkeypatch):
    for name in ("AVENGERS_THREADS", "OMP_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    assert ThreadsConfig().resolved() == usable_cpus() >= 1 and ThreadsConfig().source() == "usable CPUs"
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert (ThreadsConfig().resolved(), ThreadsConfig().source()) == (3, "OMP_NUM_THREADS")
    monkeypatch.setenv("AVENGERS_THREADS", "5")
    assert (ThreadsConfig().resolved(), ThreadsConfig().source()) == (5, "AVENGERS_THREADS")
    assert (ThreadsConfig(threads=7).resolved(), ThreadsConfig(threads=7).source()) == (7, "config")
    monkeypatch.setenv("AVENGERS_THREADS", "not a number")
    assert ThreadsConfig().resolved() == 3  # ignored, the next source answers
    # an embedder's own setting wins over the process's
    assert model_threads(EmbeddingConfig()) == 3 and model_threads(EmbeddingConfig(threads=2)) == 2


def test_usable_cpus_respects_the_affinity_mask():
    assert usable_cpus() <= len(os.sched_getaffinity(0))


def test_apply_bounds_torch_openmp_blas_sklearn_and_onnx_runtime():
    settings = run_python(
        """
        import json, os
        import numpy, torch, sklearn.cluster  # their OpenMP and BLAS pools are loaded before the limit
        from avengers.threads import apply_thread_limits
        from avengers.config.embedding import EmbeddingConfig
        from avengers.core.embedding import model_threads
        s = apply_thread_limits(1)
        from threadpoolctl import threadpool_info
        print(json.dumps({
            "threads": s.threads, "source": s.source, "torch": torch.get_num_threads(), "reported": s.torch_threads,
            "pools": {i["filepath"]: i["num_threads"] for i in threadpool_info()},
            "env": {k: os.environ.get(k) for k in ("AVENGERS_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")},
            "wait": s.wait_policy,
            "onnx": model_threads(EmbeddingConfig(backend="onnx")),
        }))
        """
    )
    assert settings["threads"] == 1 and settings["source"] == "argument"
    assert settings["torch"] == settings["reported"] == 1
    libraries = " ".join(settings["pools"])
    assert "libgomp" in libraries and "openblas" in libraries  # torch's / sklearn's OpenMP and numpy's BLAS
    assert set(settings["pools"].values()) == {1}
    assert set(settings["env"].values()) == {"1"}  # for libraries loaded later and child processes
    assert settings["onnx"] == 1  # the ONNX embedder runs that many passes at once
    assert settings["wait"] == "PASSIVE"  # waiting OpenMP threads sleep (set before torch loads: next test)


def test_libraries_loaded_after_the_limit_start_bounded():
    settings = run_python(
        """
        import json
        from avengers.threads import apply_thread_limits
        apply_thread_limits(1)
        import os, torch, sklearn.cluster
        from threadpoolctl import threadpool_info
        print(json.dumps({"torch": torch.get_num_threads(), "pools": [i["num_threads"] for i in threadpool_info()],
                          "wait": os.environ["OMP_WAIT_POLICY"]}))
        """
    )
    assert settings["torch"] == 1 and set(settings["pools"]) == {1} and settings["wait"] == "PASSIVE"


def test_an_explicit_openmp_wait_policy_is_kept():
    settings = run_python(
        """
        import json, os
        from avengers.threads import apply_thread_limits
        print(json.dumps({"wait": apply_thread_limits(1).wait_policy}))
        """,
        OMP_WAIT_POLICY="ACTIVE",
    )
    assert settings["wait"] == "ACTIVE"


def test_every_grpc_server_start_applies_the_process_setting():
    settings = run_python(
        """
        import asyncio, json, torch
        torch.set_num_threads(2)
        from avengers.rpc.server import start_server

        async def main():
            running = await start_server([], "127.0.0.1:0")
            await running.stop(0)

        asyncio.run(main())
        print(json.dumps({"torch": torch.get_num_threads()}))
        """,
        AVENGERS_THREADS="1",
    )
    assert settings["torch"] == 1


@pytest.mark.parametrize(("flag", "env", "expected"), [(["--threads", "1"], {}, "1 thread(s) per compute pool (from argument"),
                                                      ([], {"AVENGERS_THREADS": "1"}, "from AVENGERS_THREADS")])
def test_the_command_applies_threads_before_running(tmp_path, flag, env, expected):
    clean = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS") and k not in PROCESS_WIDE}
    labels = tmp_path / "labels.jsonl"
    rows = [{"id": f"q{i}", "dataset": "d", "split": "train", "query": f"question {i}", "scores": {"m": 1.0, "n": 0.0}}
            for i in range(8)]
    labels.write_text("".join(json.dumps(r) + "\n" for r in rows))
    done = subprocess.run(
        [sys.executable, "-m", "avengers", "-v", *flag, "fit", "--labels", str(labels), "--k", "2",
         "--embedder-backend", "hashing", "--no-cache", "--out", str(tmp_path / "router")],
        env={**clean, **env}, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert expected in done.stderr
