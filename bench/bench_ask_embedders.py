"""Ask end to end at 64 clients with each query embedder, side by side in ONE run (`bench/bench_pipeline.py`'s
services and load phase, one stack per embedder).

    .venv/bin/python bench/bench_ask_embedders.py [--variants onnx-int8,hashing] [--rounds 2] [--duration 20] \
        [--clients 64] [--embedder-threads 1] [--json runs/ask_embedders.json] [--write-docs docs/BENCHMARKS.md]

For each variant: a router fitted (K=``--k``) on the RouterDC train queries embedded by that embedder (through the
embedding cache), published to a fresh embedded Qdrant; the five services started as separate processes (embedder
with that embedder, router embedding queries through it, voter, model pool replaying the evaluation labels, gateway);
``--warmup`` seconds of unmeasured Ask load, then ``--duration`` seconds measured at ``--clients`` clients (n=5
samples, self-consistency, response cache bypassed), with the CPU time each process spent per Ask; the stack is
stopped before the next variant starts. Rounds alternate the order of the variants, so the machine's other load
falls on each alike; the report lists every round and each variant's median.

Variants: "onnx-int8" (MiniLM on ONNX Runtime, int8), "onnx-int8-max128" (the same reading at most 128 tokens),
"torch-fp32" (MiniLM in torch), "hashing" (feature hashing: no model, the cost of the path alone).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import random
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_pipeline  # the services and the load phase

DOCS_MARK = "<!-- bench_ask_embedders:{edge} -->"
TARGET_QPS = 100.0
VARIANTS: dict[str, dict[str, Any]] = {
    "onnx-int8": {"backend": "onnx"},
    "onnx-int8-max128": {"backend": "onnx", "max_seq_tokens": 128},
    "torch-fp32": {},
    "hashing": {"backend": "hashing", "dimension": 384},
}


async def one_stack(name: str, args, train, eval_path: Path, evaluation, queries, warmup, workdir: Path) -> dict[str, Any]:
    from avengers.config.clustering import ClusteringConfig
    from avengers.config.embedding import EmbeddingConfig
    from avengers.config.loadgen import LoadConfig
    from avengers.config.routing import CLUSTER_SELECTORS, RoutingConfig, SelectorsConfig
    from avengers.config.store import StoreConfig
    from avengers.core.embedding import create_embedder, default_cache_dir
    from avengers.core.fit import fit_router_on_embeddings
    from avengers.stores import create_store

    embedding = VARIANTS[name]
    cached = create_embedder(EmbeddingConfig(**embedding, cache_dir=str(default_cache_dir() / "embeddings")))
    learned = [] if args.strategy in CLUSTER_SELECTORS else [args.strategy]
    artifact = fit_router_on_embeddings(
        train, cached.encode(train.queries, show_progress=True), cached.name, ClusteringConfig(k=args.k, n_init=2),
        routing=RoutingConfig(strategy=args.strategy), selectors=SelectorsConfig(fit=learned),
    )  # fmt: skip
    del cached
    store_config = StoreConfig(qdrant_path=str(workdir / f"qdrant-{name}"))
    with create_store(store_config) as store:
        store.activate(store.publish(artifact))
    batching = {"max_batch": 64, "max_wait_ms": 0.0, "max_queued_texts": 8192}
    services: dict[str, bench_pipeline.Service] = {}
    started: list[bench_pipeline.Service] = []
    try:
        for service, config in (
            ("embedder", {"batching": batching, "embedding": {**embedding, "threads": args.embedder_threads}}),
            ("router", {"store": store_config.to_dict(), "poll_interval_seconds": 0}),
            ("voter", {}),
            ("model_pool", {"models": [{"name": m, "backend": "replay", "max_n": 64,
                                        "replay": {"labels_path": str(eval_path), "label_model": m}}
                                       for m in evaluation.models]}),
        ):  # fmt: skip
            if service in ("router", "voter"):
                config = {**config, "embedder_address": services["embedder"].address}
            services[service] = await bench_pipeline.start_service(service, config, workdir)
            started.append(services[service])
        gateway = {
            "downstream": {
                "embedder": services["embedder"].address,
                "router": services["router"].address,
                "voter": services["voter"].address,
                "model_pool": services["model_pool"].address,
            }
        }
        services["gateway"] = await bench_pipeline.start_service("gateway", gateway, workdir)
        started.append(services["gateway"])
        load = LoadConfig(
            target="ask", address=services["gateway"].address, concurrency=args.clients, n=args.ask_samples,
            duration_seconds=args.duration, warmup_seconds=args.warmup, timeout_seconds=60.0,
        )  # fmt: skip
        load_average = os.getloadavg()[0]
        result = await bench_pipeline.run_phase(f"ask, {name}", load, queries, services, None, warmup)
        return {**result, "variant": name, "load_average_at_start": load_average}
    finally:
        await bench_pipeline.stop_services(started)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    from avengers.core.labels import read_labels
    from avengers.loadgen import Query
    from avengers.threads import apply_thread_limits

    workdir = Path(tempfile.mkdtemp(prefix="bench-ask-embedders-"))
    apply_thread_limits()  # this process (the load generator) too, as every service does at start
    train_path, eval_path, data = bench_pipeline.data_files(argparse.Namespace(train=None, eval=None, generated=False), workdir)
    train, evaluation = read_labels(train_path), read_labels(eval_path)
    rows = random.Random(0).sample(evaluation.rows, min(args.max_queries, len(evaluation.rows)))
    queries = [Query(r.query, r.id) for r in rows]
    warmup = bench_pipeline.cycled(queries, len(queries) // 2, len(queries))
    results: dict[str, Any] = {
        "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "machine": {**bench_pipeline.machine(), "threads": apply_thread_limits().describe()},
        "data": data, "queries": len(queries), "clients": args.clients, "duration": args.duration,
        "warmup": args.warmup, "ask_samples": args.ask_samples, "k": args.k, "embedder_threads": args.embedder_threads,
        "strategy": args.strategy,
        "rounds": [],
    }  # fmt: skip
    for r in range(args.rounds):
        order = args.variants if r % 2 == 0 else list(reversed(args.variants))
        this = {}
        for name in order:
            this[name] = await one_stack(name, args, train, eval_path, evaluation, queries, warmup, workdir)
        results["rounds"].append(this)
    results["median"] = {
        name: {
            "qps": statistics.median(rnd[name]["qps"] for rnd in results["rounds"]),
            "p50": statistics.median(rnd[name]["latency_ms"]["p50"] for rnd in results["rounds"]),
            "p99": statistics.median(rnd[name]["latency_ms"]["p99"] for rnd in results["rounds"]),
            "errors": sum(rnd[name]["requests"] - rnd[name]["ok"] for rnd in results["rounds"]),
            "embedder_cpu_ms": statistics.median(rnd[name]["cpu_ms_per_request"]["embedder"] for rnd in results["rounds"]),
            "total_cpu_ms": statistics.median(sum(rnd[name]["cpu_ms_per_request"].values()) for rnd in results["rounds"]),
        }
        for name in args.variants
    }
    results["load_average_at_end"] = os.getloadavg()
    return results


def markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    lines = [
        DOCS_MARK.format(edge="start"),
        "## Ask at 64 clients: the real embedder against hashing, in one run (`bench/bench_ask_embedders.py`)",
        "",
        f"Run {results['date']} with `{results['command']}`.",
        "",
        (
            f"Machine: {m['cpus']} cores ({m['cpu_model']}), no GPU, Python {m['python']}; every process: {m['threads']}. Shared with "
            f"other sessions' work: 1-minute load average {m['load_average_at_start'][0]:.1f} at the start, "
            f"{results['load_average_at_end'][0]:.1f} at the end (each run's is in the table): absolute rates are what "
            "this share of 2 cores gave, not what 2 idle cores give."
        ),
        "",
        (
            f"Each stack: the five services as separate processes (embedder with {results['embedder_threads']} "
            f"thread(s), micro-batching max_batch 64, max_wait 0; router K={results['k']} ({results.get('strategy', 'nearest')} "
            f"routing) fitted on {results['data']} train with the same embedder, queries embedded through the embedder "
            "service; voter; model pool replaying "
            f"the test labels; gateway); Ask with n={results['ask_samples']}, self-consistency, cache bypassed, "
            f"{results['clients']} clients, {results['warmup']:g} s warm-up then {results['duration']:g} s measured, "
            f"cycling {results['queries']} test queries."
        ),
        "",
        "| round | embedder | load avg at start | Ask/s | p50 ms | p99 ms | errors | embedder CPU ms/Ask | all processes CPU ms/Ask |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for i, rnd in enumerate(results["rounds"], 1):
        for name, r in rnd.items():
            cpu = r["cpu_ms_per_request"]
            lines.append(
                f"| {i} | {name} | {r['load_average_at_start']:.1f} | {r['qps']:.1f} | {r['latency_ms']['p50']:.0f} | "
                f"{r['latency_ms']['p99']:.0f} | {r['requests'] - r['ok']} | {cpu.get('embedder', 0):.1f} | "
                f"{sum(cpu.values()):.1f} |"
            )
    lines += ["", "| embedder | median Ask/s | errors (all rounds) | target >= 100/s, 0 errors |", "|---|---:|---:|---|"]
    for name, r in results["median"].items():
        if name == "hashing":
            verdict = "n/a (no model)"
        else:
            verdict = "met" if r["qps"] >= TARGET_QPS and r["errors"] == 0 else "**missed**"
        lines.append(f"| {name} | {r['qps']:.1f} | {r['errors']} | {verdict} |")
    if results.get("notes"):
        lines += ["", results["notes"]]
    lines += ["", DOCS_MARK.format(edge="end")]
    return "\n".join(lines)


def write_docs(path: Path, section: str) -> None:
    """Replace this benchmark's section of ``path`` (between its markers), or append it."""
    start, end = DOCS_MARK.format(edge="start"), DOCS_MARK.format(edge="end")
    text = path.read_text()
    if start in text and end in text:
        head, rest = text.split(start, 1)
        text = head + section + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variants", default="onnx-int8,hashing", help="comma-separated, of: " + ", ".join(VARIANTS))
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--duration", type=float, default=20.0, help="measured seconds per stack")
    p.add_argument("--warmup", type=float, default=5.0, help="unmeasured seconds per stack")
    p.add_argument("--clients", type=int, default=64)
    p.add_argument("--ask-samples", type=int, default=5)
    p.add_argument("--k", type=int, default=64)
    p.add_argument(
        "--strategy", default="nearest", help="the routers' default routing (nearest: the paper's rule, as in bench_pipeline)"
    )
    p.add_argument("--max-queries", type=int, default=2000)
    p.add_argument("--embedder-threads", type=int, default=1, help="threads of the embedder service's model")
    p.add_argument("--json", help="write all results as JSON")
    p.add_argument("--write-docs", help="replace (or append) this benchmark's section in the given Markdown file")
    p.add_argument("--notes", help="a paragraph added under the tables")
    p.add_argument("--render", metavar="JSON", help="no run: report the results saved by --json")
    args = p.parse_args()
    args.variants = [v for v in args.variants.split(",") if v]
    if unknown := [v for v in args.variants if v not in VARIANTS]:
        p.error(f"unknown variants {unknown}; known: {list(VARIANTS)}")
    return args


if __name__ == "__main__":
    arguments = parse_args()
    if arguments.render:
        outcome = json.loads(Path(arguments.render).read_text())
    else:
        outcome = asyncio.run(main(arguments))
        outcome["command"] = "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])
    if arguments.notes:
        outcome["notes"] = arguments.notes
    if arguments.json:
        Path(arguments.json).parent.mkdir(parents=True, exist_ok=True)
        Path(arguments.json).write_text(json.dumps(outcome, indent=2, default=str) + "\n")
    report = markdown(outcome)
    if arguments.write_docs:
        write_docs(Path(arguments.write_docs), report)
    print(report)
