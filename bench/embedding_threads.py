"""How the embedders use threads on a shared CPU: the measurements behind `avengers.threads` and the ONNX
embedder's one-thread passes.

    .venv/bin/python bench/embedding_threads.py [--queries 256] [--rounds 2]

Each setting runs in a fresh process (OpenMP reads its wait policy when it loads), encodes the same RouterDC test
queries in calls of 64, and reports queries/s (wall) and process CPU ms per query, with the machine's load:

- torch MiniLM: 1 thread; 2 threads with OpenMP's default (spinning) waits; 2 threads with OMP_WAIT_POLICY=PASSIVE;
- ONNX int8: one text per pass on one thread (the default); 2 intra-op threads per pass; two one-thread passes at
  once (threads=2, the default on 2 CPUs); length-bucketed passes of several texts (batch_chars as torch).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
from pathlib import Path

ROUTERDC = Path(__file__).resolve().parents[2] / "shared" / "data" / "routerdc"

SETTINGS = {
    "torch, 1 thread": ({"OMP_WAIT_POLICY": "PASSIVE"}, {"threads": 1}, "torch"),
    "torch, 2 threads, spinning waits (OpenMP default)": ({"OMP_WAIT_POLICY": "ACTIVE"}, {"threads": 2}, "torch"),
    "torch, 2 threads, OMP_WAIT_POLICY=PASSIVE": ({"OMP_WAIT_POLICY": "PASSIVE"}, {"threads": 2}, "torch"),
    "onnx int8, one text per pass, 1 thread": ({}, {"threads": 1}, "onnx"),
    "onnx int8, 2 intra-op threads per pass": ({}, {"threads": 1, "intra_op": 2}, "onnx"),
    "onnx int8, two one-thread passes at once": ({}, {"threads": 2}, "onnx"),
    "onnx int8, length-bucketed passes, 1 thread": ({}, {"threads": 1, "bucketed": True}, "onnx"),
}

CHILD = r"""
import json, os, sys, time
setting = json.loads(sys.argv[1]); queries = json.loads(sys.argv[2])
from avengers.threads import apply_thread_limits
apply_thread_limits(setting["threads"])
from avengers.config.embedding import EmbeddingConfig
from avengers.core.embedding import create_embedder, length_groups
if setting["kind"] == "torch":
    embedder = create_embedder(EmbeddingConfig())
    encode = embedder.encode
else:
    embedder = create_embedder(EmbeddingConfig(backend="onnx"))
    session = embedder._session_
    if setting.get("intra_op"):
        import onnxruntime as ort
        options = ort.SessionOptions()
        options.intra_op_num_threads = setting["intra_op"]
        options.inter_op_num_threads = 1
        session.session = ort.InferenceSession(str(embedder.directory / "model.onnx"), options,
                                               providers=["CPUExecutionProvider"])
    if setting.get("bucketed"):
        def encode(texts):
            encodings = session.tokenize(texts)
            for group in length_groups([len(e.ids) for e in encodings], 4096 // 4):
                session.run([encodings[i] for i in group])
    else:
        encode = embedder.encode
encode(queries[:8])
wall, cpu = time.perf_counter(), time.process_time()
for i in range(0, len(queries), 64):
    encode(queries[i : i + 64])
wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
print(json.dumps({"qps": len(queries) / wall, "cpu_ms": 1000 * cpu / len(queries), "load": os.getloadavg()[0]}))
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--queries", type=int, default=256)
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()
    rows = [json.loads(line)["query"] for line in (ROUTERDC / "test.jsonl").open()]
    queries = random.Random(2).sample(rows, args.queries)
    clean = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "AVENGERS_THREADS", "OMP_NUM_THREADS")}
    print("| setting | round | queries/s | CPU ms/query | load average |\n|---|---:|---:|---:|---:|", flush=True)
    for r in range(1, args.rounds + 1):
        for name, (env, setting, kind) in SETTINGS.items():
            done = subprocess.run(
                [sys.executable, "-c", CHILD, json.dumps({**setting, "kind": kind}), json.dumps(queries)],
                env={**clean, **env}, capture_output=True, text=True, check=True,
            )  # fmt: skip
            m = json.loads(done.stdout.strip().splitlines()[-1])
            print(f"| {name} | {r} | {m['qps']:.1f} | {m['cpu_ms']:.1f} | {m['load']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
