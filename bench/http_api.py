"""What the OpenAI-compatible HTTP front costs on top of a gRPC Ask: the same requests, one at a time, to the
gateway over gRPC (avengers.client) and to the HTTP API (the official openai package), on one `avengers up`.

The stack is `avengers up` in a subprocess with replay models (no LLM: each sample is read from labels written
here) and the hashing embedder, so the time measured is the serving path itself: HTTP parsing and JSON, the
extra gRPC hop from the HTTP service to the gateway, and the gateway's route -> generate -> vote.

    .venv/bin/python bench/http_api.py --requests 200          # prints a Markdown table
    .venv/bin/python bench/http_api.py --requests 200 --json out.json

Each request has a distinct query (no_cache is set as well) and n=1 sample; both paths alternate request by
request so that drift in machine load touches both alike.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import queue
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

MODELS = ["alpha", "beta"]


def write_stack_files(root: Path, count: int) -> list[str]:
    rng = random.Random(0)
    rows, queries = [], []
    for i in range(count):
        a, b, c = (rng.randint(10, 999) for _ in range(3))
        query = f"Add the integers {a} plus {b} plus {c}: what total sum do you get? (#{i})"
        rows.append({"id": f"q{i}", "dataset": "arith", "split": "test", "query": query,
                     "scores": {"alpha": 1.0, "beta": 0.5}})
        queries.append(query)
    (root / "labels.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "pool.yaml").write_text(
        "models:\n" + "".join(f"  - name: {m}\n    backend: replay\n    replay: {{labels_path: labels.jsonl}}\n"
                              for m in MODELS)
    )
    return queries


class Up:
    def __init__(self, root: Path):
        env = {**os.environ, "AVENGERS_METRICS_PORT": "0", "OMP_NUM_THREADS": "1"}
        env.pop("REDIS_URL", None)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "avengers", "up", "--pool", str(root / "pool.yaml"), "--labels",
             str(root / "labels.jsonl"), "--embedder", "hashing", "--ports", "auto", "--data-dir", str(root / "up")],
            stdout=subprocess.PIPE, stderr=(root / "up.log").open("w"), text=True, env=env,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def addresses(self, timeout: float = 300) -> tuple[str, str]:
        grpc_address = http_url = None
        deadline = time.monotonic() + timeout
        while True:
            line = self.lines.get(timeout=max(1.0, deadline - time.monotonic()))
            if line is None:
                raise RuntimeError(f"avengers up exited ({self.process.wait()})")
            if line.startswith("http "):
                http_url = line.split()[1]
            if line.startswith("ready:"):
                grpc_address = line.split("--addr", 1)[1].split()[0]
                return grpc_address, http_url

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary(seconds: list[float]) -> dict[str, float]:
    ms = [s * 1000 for s in seconds]
    return {"mean_ms": statistics.fmean(ms), "p50_ms": percentile(ms, 0.5), "p95_ms": percentile(ms, 0.95),
            "p99_ms": percentile(ms, 0.99)}


def run(requests: int, warmup: int) -> dict:
    import openai

    from avengers.client import Client

    with tempfile.TemporaryDirectory(prefix="avengers-http-bench-") as tmp:
        root = Path(tmp)
        queries = write_stack_files(root, 2 * (requests + warmup))
        up = Up(root)
        try:
            grpc_address, http_url = up.addresses()
            http = openai.OpenAI(base_url=http_url, api_key="unused", max_retries=0, timeout=60)
            grpc_client = Client(grpc_address, timeout=60)
            times: dict[str, list[float]] = {"grpc": [], "http": []}
            for i in range(warmup + requests):
                for kind in ("grpc", "http"):
                    query = queries[2 * i + (kind == "http")]
                    started = time.perf_counter()
                    if kind == "grpc":
                        answer = grpc_client.ask(query, n=1, no_cache=True).answer
                    else:
                        answer = http.chat.completions.create(
                            model="avengers", messages=[{"role": "user", "content": query}], n=1,
                            extra_body={"no_cache": True},
                        ).model_extra["avengers"]["answer"]
                    elapsed = time.perf_counter() - started
                    if not answer:
                        raise RuntimeError(f"{kind}: no answer to {query!r}")
                    if i >= warmup:
                        times[kind].append(elapsed)
            grpc_client.close()
        finally:
            up.stop()
    result = {kind: summary(values) for kind, values in times.items()}
    result["overhead_p50_ms"] = result["http"]["p50_ms"] - result["grpc"]["p50_ms"]
    return result


def markdown(result: dict, args: argparse.Namespace) -> str:
    lines = [
        (f"`.venv/bin/python bench/http_api.py --requests {args.requests}` on {platform.machine()}, "
         f"{os.cpu_count()} CPUs, Python {platform.python_version()}; sequential, n=1, replay models, hashing embedder."),
        "",
        "| path | mean ms | p50 ms | p95 ms | p99 ms |",
        "|---|---|---|---|---|",
    ]
    for kind, label in (("grpc", "gRPC Ask (avengers.client)"), ("http", "HTTP /v1/chat/completions (openai)")):
        r = result[kind]
        lines.append(f"| {label} | {r['mean_ms']:.1f} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {r['p99_ms']:.1f} |")
    lines.append("")
    lines.append(f"HTTP front overhead at the median: {result['overhead_p50_ms']:.1f} ms.")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200, help="measured requests per path (default 200)")
    parser.add_argument("--warmup", type=int, default=20, help="unmeasured requests per path first (default 20)")
    parser.add_argument("--json", metavar="OUT", help="also write the numbers as JSON")
    args = parser.parse_args()
    result = run(args.requests, args.warmup)
    print(markdown(result, args))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
