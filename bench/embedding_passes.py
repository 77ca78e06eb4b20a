"""In-process encoding of real queries by forward-pass layout, and torch threads when the cores are shared.

    .venv/bin/python bench/embedding_passes.py [--labels ../shared/data/routerdc/test.jsonl] [--queries 320]
        [--repeats 3] [--neighbours 2] [--json runs/embedding_passes.json]

all-MiniLM-L6-v2 on the CPU (the default embedder). Backs the embedding numbers of docs/BENCHMARKS.md:

1. Queries per second over the same queries, encoded three ways: one text per forward pass (``batch_size``
   1: no padding), passes of 64 texts (``batch_size`` 64: each pass pads to its longest text; the previous
   default), and length-bucketed passes (``batch_size`` None, ``batch_chars`` 4096: the default on CPU). On a
   random sample of the evaluation queries and on the shortest ones. Median of ``--repeats`` runs, the three
   ways alternating.
2. The largest absolute difference between the rows of the bucketed (and the 64-text) encode and the rows of
   the one-text-per-pass encode: the same vectors, up to float rounding.
3. The latency of encoding one query at a time with 1 and with 2 torch threads: with the machine as it is, and
   with ``--neighbours`` busy processes (a Python loop each) competing for the cores, as other services do on
   a shared node. p50, p90 and max over the sample.

Prints Markdown tables; ``--json`` keeps the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from avengers.config.embedding import EmbeddingConfig
from avengers.core.embedding import create_embedder
from avengers.core.labels import read_labels


def queries_of(path: Path, count: int, seed: int) -> dict[str, list[str]]:
    texts = [row.query for row in read_labels(path).rows]
    rng = random.Random(seed)
    return {"sample": rng.sample(texts, count), "shortest": sorted(texts, key=len)[:count]}


def token_counts(embedder, texts: list[str]) -> dict[str, float]:
    """Tokens per text as the model sees them (its tokenizer, special tokens included, before truncation)."""
    tokenizer = embedder._model.tokenizer
    counts = sorted(len(tokenizer(text)["input_ids"]) for text in texts)
    return {"mean": statistics.mean(counts), "p90": counts[int(0.9 * (len(counts) - 1))], "max": counts[-1],
            "window": embedder._model.max_seq_length}  # fmt: skip


def encode_seconds(embedder, texts: list[str]) -> tuple[float, np.ndarray]:
    started = time.perf_counter()
    rows = embedder.encode(texts)
    return time.perf_counter() - started, rows


def layouts(queries: list[str], embedders: dict, repeats: int) -> dict[str, dict]:
    """queries/s of each layout (median over repeats) and the max difference from one text per pass."""
    seconds: dict[str, list[float]] = {name: [] for name in embedders}
    rows: dict[str, np.ndarray] = {}
    for repeat in range(repeats):
        order = list(embedders) if repeat % 2 == 0 else list(reversed(embedders))
        for name in order:
            elapsed, rows[name] = encode_seconds(embedders[name], queries)
            seconds[name].append(elapsed)
    return {
        name: {
            "queries_per_second": len(queries) / statistics.median(seconds[name]),
            "max_abs_difference": float(np.abs(rows[name] - rows["one per pass"]).max()),
        }
        for name in embedders
    }


def single_latencies(embedder, queries: list[str], threads: int) -> dict[str, float]:
    import torch

    torch.set_num_threads(threads)
    embedder.encode(queries[:5])  # warm-up at this thread count
    ms = []
    for query in queries:
        started = time.perf_counter()
        embedder.encode([query])
        ms.append(1000 * (time.perf_counter() - started))
    ms.sort()
    return {"p50": ms[len(ms) // 2], "p90": ms[int(0.9 * (len(ms) - 1))], "max": ms[-1]}


def busy_neighbours(count: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", type=Path, default=Path("../shared/data/routerdc/test.jsonl"))
    parser.add_argument("--queries", type=int, default=320)
    parser.add_argument("--single-queries", type=int, default=100, help="queries encoded one at a time (part 3; 0: skip)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--neighbours", type=int, default=2, help="busy processes for part 3 (0: skip)")
    parser.add_argument("--threads", type=int, help="torch threads for part 1 (default: torch's, the cores)")
    parser.add_argument(
        "--wait-policy", choices=["PASSIVE", "ACTIVE"],
        help="OMP_WAIT_POLICY for this run (default: as set, else OpenMP's own: threads spin while they wait); "
        "the services set PASSIVE (avengers.threads)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.wait_policy:
        os.environ["OMP_WAIT_POLICY"] = args.wait_policy  # read when OpenMP loads: before torch is imported

    import torch

    sets = queries_of(args.labels, max(args.queries, args.single_queries), args.seed)
    embedders = {
        "one per pass": create_embedder(EmbeddingConfig(batch_size=1)),
        "passes of 64": create_embedder(EmbeddingConfig(batch_size=64)),
        "length-bucketed (batch_chars 4096)": create_embedder(EmbeddingConfig()),
    }
    machine = {
        "cpus": os.cpu_count(),
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "load_average_at_start": os.getloadavg()[0],
        "default_torch_threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "unset"),
    }
    results: dict = {"machine": machine, "command": " ".join(["python", *sys.argv]), "layouts": {}, "threads": {}}

    machine["part_1_threads"] = args.threads or machine["default_torch_threads"]
    torch.set_num_threads(machine["part_1_threads"])
    for set_name, queries in sets.items() if args.queries else ():
        results["layouts"][set_name] = {
            "mean_chars": statistics.mean(map(len, queries)),
            "tokens": token_counts(embedders["one per pass"], queries),
            "by_layout": layouts(queries, embedders, args.repeats),
        }

    plain, single = embedders["one per pass"], sets["sample"][: args.single_queries]
    conditions = [("as is", 0)] + ([(f"{args.neighbours} busy neighbours", args.neighbours)] if args.neighbours else [])
    conditions = conditions if args.single_queries else []
    for condition, count in conditions:
        neighbours = busy_neighbours(count)
        try:
            results["threads"][condition] = {threads: single_latencies(plain, single, threads) for threads in (1, 2)}
        finally:
            for process in neighbours:
                process.kill()
                process.wait()

    print(f"Machine: {machine['cpus']} cores ({machine['cpu']}), torch {machine['torch']}, Python {machine['python']}, "
          f"load average at start {machine['load_average_at_start']:.2f}; OMP_WAIT_POLICY {machine['omp_wait_policy']}; "
          f"all-MiniLM-L6-v2 on CPU, "
          f"{machine['part_1_threads']} torch threads for the forward-pass layouts.\n")  # fmt: skip
    if results["layouts"]:
        print("| queries | forward passes | queries/s | max abs difference from one per pass |\n|---|---|---|---|")
    for set_name, entry in results["layouts"].items():
        tokens = entry["tokens"]
        for name, r in entry["by_layout"].items():
            label = (f"{set_name} ({args.queries}, mean {entry['mean_chars']:.0f} chars; tokens mean {tokens['mean']:.0f}, "
                     f"p90 {tokens['p90']}, max {tokens['max']}, window {tokens['window']})")  # fmt: skip
            print(f"| {label} | {name} | {r['queries_per_second']:.1f} | {r['max_abs_difference']:.1e} |")
    if results["threads"]:
        print("\n| condition | torch threads | p50 ms | p90 ms | max ms |\n|---|---|---|---|---|")
    for condition, by_threads in results["threads"].items():
        for threads, r in by_threads.items():
            print(f"| {condition} | {threads} | {r['p50']:.1f} | {r['p90']:.1f} | {r['max']:.1f} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
